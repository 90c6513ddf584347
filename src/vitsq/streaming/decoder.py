"""The waveform decoders (HiFi-GAN for VITS, multi-band iSTFT for VITS2), chunk by chunk.

:class:`StreamingDecoder` wraps a model's ``dec`` (FP32, with polyphase upsampling, or with
``torch.ao`` INT8 layers) and runs it on consecutive chunks of latent frames, carrying each
convolution's cache, each residual branch's pending frames and the iSTFT / PQMF overlap in a
flat list of state tensors. The chunks' outputs, concatenated, are the whole-sentence decoder
output: every convolution computes each output sample once, from the same inputs.

``step(z, states, flush)``: ``z`` [1, C, n] the next latent frames (n >= 1, or 0 when
flushing); ``flush`` 1 on the sentence's last call. Each call returns the samples that are
final; the decoder's look-ahead (:attr:`StreamingDecoder.lag_frames`) means the first call must
bring more than that many frames to emit anything (the driver, :mod:`vitsq.streaming.run`,
plans chunks so every call emits audio).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitsq.errors import UnsupportedError
from vitsq.models.modules import LRELU_SLOPE, ResBlock1, ResBlock2
from vitsq.models.polyphase import PolyphasePQMFSynthesis
from vitsq.streaming.ops import States, StreamConv, StreamConvTranspose, add_aligned, align, stream_upsampler


class _Cursor:
    """Reads consecutive states from the flat list and collects the new ones."""

    def __init__(self, states: States) -> None:
        self.states, self.pos, self.out = states, 0, []

    def take(self, n: int) -> States:
        got = self.states[self.pos : self.pos + n]
        self.pos += n
        return got

    def put(self, new: States) -> None:
        self.out.extend(new)


class _StreamResBlock(nn.Module):
    """ResBlock1/ResBlock2: convolutions with leaky ReLU and residual sums, each residual input
    held back until its branch catches up."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        if isinstance(block, ResBlock1):
            self.pairs = [[StreamConv.of(c1), StreamConv.of(c2)] for c1, c2 in zip(block.convs1, block.convs2)]
        elif isinstance(block, ResBlock2):
            self.pairs = [[StreamConv.of(c)] for c in block.convs]
        else:
            raise UnsupportedError(f"cannot stream a {type(block).__name__} residual block")
        self.channels = self.pairs[0][0].in_channels

    @property
    def lag(self) -> int:
        return sum(c.lag for pair in self.pairs for c in pair)

    def init(self, x: torch.Tensor) -> States:
        out: States = []
        for pair in self.pairs:
            for c in pair:
                out += c.init(x)
            out.append(x.new_zeros(x.shape[0], self.channels, 0))  # pending residual frames
        return out

    def step(self, x: torch.Tensor, cur: _Cursor, flush: Any) -> torch.Tensor:
        for pair in self.pairs:
            y = x
            for c in pair:
                y, st = c.step(y, cur.take(1), flush, LRELU_SLOPE)
                cur.put(st)
            (pending,) = cur.take(1)
            x, pending = add_aligned(y, x, pending)
            cur.put([pending])
        return x


class _StreamStage(nn.Module):
    """One upsampling stage: leaky ReLU, upsampler, then the mean of the residual blocks (the
    faster branches wait for the slowest)."""

    def __init__(self, up: nn.Module, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.up = stream_upsampler(up)
        self.blocks = [_StreamResBlock(b) for b in blocks]
        self.slowest = max(range(len(self.blocks)), key=lambda j: self.blocks[j].lag)

    def init(self, x: torch.Tensor) -> States:
        out = self.up.init(x)
        for b in self.blocks:
            out += b.init(x)
        for j, b in enumerate(self.blocks):
            if j != self.slowest:
                out.append(x.new_zeros(x.shape[0], b.channels, 0))  # pending frames of a faster branch
        return out

    def step(self, x: torch.Tensor, cur: _Cursor, flush: Any) -> torch.Tensor:
        x, st = self.up.step(x, cur.take(self.up.n_states), flush, LRELU_SLOPE)
        cur.put(st)
        outs = [b.step(x, cur, flush) for b in self.blocks]
        pendings = [None if j == self.slowest else cur.take(1)[0] for j in range(len(self.blocks))]
        aligned = []
        for j, (y, pending) in enumerate(zip(outs, pendings)):
            if j != self.slowest:
                y, pending = align(y, pending, outs[self.slowest])
                cur.put([pending])
            aligned.append(y)
        # summed in the whole-sentence decoder's order (float sums are not associative): the same
        # sums, and in INT8 the same intermediate sums to quantize
        total = aligned[0]
        for y in aligned[1:]:
            total = total + y
        return total / len(self.blocks)


class StreamingDecoder(nn.Module):
    """A VITS/VITS2 model's decoder, run chunk by chunk (see the module docstring).

    ``model``: a :class:`~vitsq.models.vits.VITS` or :class:`~vitsq.models.vits2.VITS2` (FP32,
    polyphase or ``torch.ao`` INT8 layers). States are per batch; ``init_states(z)`` gives the
    states before a sentence's first chunk for a batch shaped like ``z``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        dec = model.dec
        self.kind = "mb_istft" if hasattr(dec, "istft") else "hifigan"
        self.conv_pre = StreamConv.of(dec.conv_pre)
        self.cond = getattr(dec, "cond", None)
        k = dec.num_kernels
        self.stages = [_StreamStage(up, list(dec.resblocks[i * k : (i + 1) * k])) for i, up in enumerate(dec.ups)]
        if self.kind == "hifigan":
            self.post = StreamConv.of(dec.conv_post)
        else:
            self.post = StreamConv.of(dec.subband_conv_post)
            self.subbands, self.n_bins = dec.subbands, dec.n_bins
            ist = dec.istft
            self.hop = ist.hop
            self.istft = StreamConvTranspose(lambda s: F.conv_transpose1d(s, ist.basis, stride=ist.hop),
                                             ist.n_fft, ist.hop, ist.n_fft // 2, int(ist.basis.shape[0]), 1)
            self.envelope = StreamConvTranspose(lambda w: F.conv_transpose1d(w, ist.window_sq, stride=ist.hop),
                                                ist.n_fft, ist.hop, ist.n_fft // 2, 1, 1)
            pq = dec.pqmf
            if isinstance(pq, PolyphasePQMFSynthesis):  # one convolution at the sub-band rate, interleaved
                self.pqmf_up = None
                self.pqmf = StreamConv(lambda s: F.conv1d(s, pq.weight), int(pq.weight.shape[-1]), pq.pad_left,
                                       pq.subbands)
            else:  # zero-stuffing upsampler, then the filter at the full rate
                self.pqmf_up = StreamConvTranspose(lambda s: F.conv_transpose1d(s, pq.updown, stride=pq.subbands),
                                                   pq.subbands, pq.subbands, 0, pq.subbands, pq.subbands)
                self.pqmf = StreamConv(lambda s: F.conv1d(s, pq.filters), int(pq.filters.shape[-1]), pq.pad,
                                       pq.subbands)
        self.upsample = math.prod(int(u) for u in dec.upsample_rates)
        self.in_channels = int(getattr(dec.conv_pre, "module", dec.conv_pre).in_channels)

    # ------------------------------------------------------------------ geometry
    @property
    def lag_frames(self) -> int:
        """Latent frames of look-ahead: output up to frame ``t`` needs input frames up to
        ``t + lag_frames`` (rounded up over every layer)."""
        lag = float(self.conv_pre.lag)
        rate = 1
        for st in self.stages:
            up = st.up
            rate *= int(up.stride)
            lag += (up.padding + max(b.lag for b in st.blocks)) / rate
        lag += self.post.lag / rate
        if self.kind == "mb_istft":
            pqmf_rate = rate * self.hop * (1 if self.pqmf_up is None else self.subbands)
            lag += (1 + self.istft.padding / self.hop) / rate + self.pqmf.lag / pqmf_rate
        return math.ceil(lag) + 1

    # ------------------------------------------------------------------ states
    def init_states(self, z: torch.Tensor) -> States:
        """The states before the first chunk, for a batch like ``z`` [B, C, *]."""
        x = z[:, :, :0]
        out = self.conv_pre.init(x)
        for st in self.stages:
            out += st.init(x)
        if self.kind == "hifigan":
            return out + self.post.init(x)
        b = x.shape[0]
        out.append(x.new_zeros(b, 1, 1))  # first call: reflect-pad one frame at the start
        out += self.post.init(x)
        out += self.istft.init(x.new_zeros(b * self.subbands, 1, 0))
        out += self.envelope.init(x.new_zeros(1, 1, 0))
        if self.pqmf_up is not None:
            out += self.pqmf_up.init(x)
        return out + self.pqmf.init(x)

    # ------------------------------------------------------------------ one chunk
    def step(self, z: torch.Tensor, states: States, flush: Any = 0,
             g: torch.Tensor | None = None) -> tuple[torch.Tensor, States]:
        """z [B, C, n] -> (audio [B, 1, samples ready], new states)."""
        cur = _Cursor(states)
        x, st = self.conv_pre.step(z, cur.take(1), flush)
        cur.put(st)
        if g is not None and self.cond is not None:
            x = x + self.cond(g)
        for stage in self.stages:
            x = stage.step(x, cur, flush)
        if self.kind == "hifigan":  # leaky ReLU of the default slope 0.01, as the whole-sentence decoder
            x, st = self.post.step(x, cur.take(1), flush, 0.01)
            cur.put(st)
            return torch.tanh(x), cur.out
        return self._mb_istft(F.leaky_relu(x), cur, flush), cur.out

    def _mb_istft(self, x: torch.Tensor, cur: _Cursor, flush: Any) -> torch.Tensor:
        (first,) = cur.take(1)
        f = first.shape[-1]
        x = torch.cat([x[:, :, 1 : 1 + f], x], -1)  # the whole-sentence reflect pad, on the first call
        cur.put([first[:, :, :0]])
        x, st = self.post.step(x, cur.take(1), flush)  # [B, S * (n_fft + 2), t]
        cur.put(st)
        b, _, t = x.shape
        x = x.reshape(b, self.subbands, -1, t)
        magnitude = torch.exp(x[:, :, : self.n_bins]).reshape(b * self.subbands, self.n_bins, t)
        phase = (math.pi * torch.sin(x[:, :, self.n_bins :])).reshape(b * self.subbands, self.n_bins, t)
        spec = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], 1)  # [B*S, 2F, t]
        y, st = self.istft.step(spec, cur.take(2), flush)  # [B*S, 1, samples]
        cur.put(st)
        env, st = self.envelope.step(spec.new_ones(1, 1, t), cur.take(2), flush)
        cur.put(st)
        y = (y / env).reshape(b, self.subbands, -1)  # [B, S, L]
        if self.pqmf_up is None:
            y, st = self.pqmf.step(y, cur.take(1), flush)  # [B, S phases, L]
            cur.put(st)
            return PolyphasePQMFSynthesis.interleave(y)
        y, st = self.pqmf_up.step(y, cur.take(2), flush)
        cur.put(st)
        y, st = self.pqmf.step(y, cur.take(1), flush)
        cur.put(st)
        return y
