"""The VITS flow (prior sample -> decoder input), chunk by chunk, and the flow + decoder pair.

Piper's VITS flow is frame-local: coupling layers whose WaveNets are stacks of non-causal
convolutions, so it streams like the decoder, carrying each convolution's cache and each
residual's pending frames (its look-ahead: ``(kernel - 1) / 2`` frames per WaveNet layer). The
VITS2 flow has attention over all frames and runs once per sentence
(:meth:`vitsq.models.vits.VITS.latent`); :class:`StreamingVocoder` picks what streams.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitsq.errors import UnsupportedError
from vitsq.models.modules import Flip, ResidualCouplingLayer
from vitsq.streaming.decoder import StreamingDecoder, _Cursor
from vitsq.streaming.ops import States, StreamConv, add_aligned, align


class _StreamCoupling(nn.Module):
    """One mean-only coupling layer in the generation direction: ``x1 - post(WN(pre(x0)))``."""

    def __init__(self, layer: ResidualCouplingLayer) -> None:
        super().__init__()
        if hasattr(layer, "pre_transformer"):
            raise UnsupportedError("a coupling layer with a transformer (VITS2) cannot stream: it sees every frame")
        self.layer = layer
        wn = layer.enc
        self.hidden, self.n_layers = wn.hidden_channels, wn.n_layers
        self.convs = [StreamConv.of(c) for c in wn.in_layers]
        self.half = layer.half_channels

    @property
    def lag(self) -> int:
        return sum(c.lag for c in self.convs)

    def init(self, x: torch.Tensor) -> States:
        b = x.shape[0]
        out: States = []
        for i, c in enumerate(self.convs):
            out += c.init(x)
            if i < self.n_layers - 1:
                out.append(x.new_zeros(b, self.hidden, 0))  # the residual input, ahead of its branch
            if i > 0:
                out.append(x.new_zeros(b, self.hidden, 0))  # the skip sum so far, ahead of this skip
        return out + [x.new_zeros(b, self.half, 0), x.new_zeros(b, self.half, 0)]  # x0, x1 ahead of the mean

    def step(self, x: torch.Tensor, cur: _Cursor, flush: Any, g: torch.Tensor | None) -> torch.Tensor:
        wn, h = self.layer.enc, self.hidden
        x0, x1 = torch.split(x, [self.half, self.half], 1)
        cond = wn.cond_layer(g) if g is not None and hasattr(wn, "cond_layer") else None  # [B, 2H*L, 1]
        y = self.layer.pre(x0)  # [B, H, n]
        total: torch.Tensor | None = None
        for i, conv in enumerate(self.convs):
            x_in, st = conv.step(y, cur.take(1), flush)
            cur.put(st)
            if cond is not None:
                x_in = x_in + cond[:, i * 2 * h : (i + 1) * 2 * h, :]
            acts = torch.tanh(x_in[:, :h]) * torch.sigmoid(x_in[:, h:])
            res_skip = wn.res_skip_layers[i](acts)
            skip = res_skip
            if i < self.n_layers - 1:
                (pending,) = cur.take(1)
                y, pending = add_aligned(res_skip[:, :h], y, pending)
                cur.put([pending])
                skip = res_skip[:, h:]
            if total is None:
                total = skip
            else:
                (pending,) = cur.take(1)
                total, pending = add_aligned(skip, total, pending)
                cur.put([pending])
        m = self.layer.post(total)  # [B, C/2, n - lag]
        (p0,) = cur.take(1)
        x0, p0 = align(x0, p0, m)
        (p1,) = cur.take(1)
        x1, p1 = align(x1, p1, m)
        cur.put([p0, p1])
        return torch.cat([x0, x1 - m], 1)


class StreamingFlow(nn.Module):
    """A VITS model's flow, run chunk by chunk (prior sample z_p [B, C, n] -> z)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.steps: list[Any] = []
        for flow in reversed(model.flow.flows):  # generation runs the flows backwards
            if isinstance(flow, Flip):
                self.steps.append(None)
            elif isinstance(flow, ResidualCouplingLayer):
                self.steps.append(_StreamCoupling(flow))
            else:
                raise UnsupportedError(f"cannot stream a {type(flow).__name__} flow")

    @property
    def lag_frames(self) -> int:
        return sum(s.lag for s in self.steps if s is not None)

    def init_states(self, z_p: torch.Tensor) -> States:
        x = z_p[:, :, :0]
        return [t for s in self.steps if s is not None for t in s.init(x)]

    def step(self, z_p: torch.Tensor, cur: _Cursor, flush: Any, g: torch.Tensor | None = None) -> torch.Tensor:
        x = z_p
        for s in self.steps:
            x = torch.flip(x, [1]) if s is None else s.step(x, cur, flush, g)
        return x


class StreamingVocoder(nn.Module):
    """What runs chunk by chunk after a sentence's :meth:`~vitsq.models.vits.VITS.latent`: the
    flow too for VITS (input ``z_p``, :attr:`takes_prior` True), the decoder alone for VITS2
    (input ``z``). Same interface as :class:`~vitsq.streaming.decoder.StreamingDecoder`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder = StreamingDecoder(model)
        try:
            self.flow: StreamingFlow | None = StreamingFlow(model)
        except UnsupportedError:
            self.flow = None
        self.takes_prior = self.flow is not None

    @property
    def lag_frames(self) -> int:
        return self.decoder.lag_frames + (self.flow.lag_frames if self.flow is not None else 0)

    def init_states(self, z: torch.Tensor) -> States:
        flow = self.flow.init_states(z) if self.flow is not None else []
        return flow + self.decoder.init_states(z)

    def step(self, z: torch.Tensor, states: States, flush: Any = 0,
             g: torch.Tensor | None = None) -> tuple[torch.Tensor, States]:
        if self.flow is None:
            return self.decoder.step(z, states, flush, g)
        cur = _Cursor(states)
        z = self.flow.step(z, cur, flush, g)
        audio, dec_states = self.decoder.step(z, states[cur.pos :], flush, g)
        return audio, cur.out + dec_states
