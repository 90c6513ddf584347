"""Transposed convolutions rewritten as ordinary convolutions (polyphase form), for INT8 runtimes.

A stride-``s`` ``ConvTranspose1d`` computes each output phase ``r = t mod s`` from its own subset of
kernel taps: output ``t = m*s + r`` is a plain correlation of the input around ``m`` with the
taps ``j = q*s + (r + p) mod s``. Stacking the ``s`` phases as output channels gives one
``Conv1d`` with ``s * C_out`` channels and ``~k/s`` taps, whose output is interleaved back in
time. Same function, different kernel: ONNX Runtime's CPU provider has an INT8 ``QLinearConv``
but no INT8 ``ConvTranspose``, so HiFi-GAN's upsampling layers ran in float until rewritten this
way: 6 % of the Vosk decoder's multiply-adds, but 14 % of its ONNX Runtime INT8 run time, and
22 % of joe's (profiled, 1 thread).

The multi-band decoder's PQMF synthesis (a zero-stuffing upsampler and a full-rate filter) gets
the same treatment (:class:`PolyphasePQMFSynthesis`): its filter then runs at the sub-band rate.

The rewrite is an export-time copy (:func:`with_polyphase_upsampling`); the model, its parameter
names and its state dict are untouched. Exactness is tested against ``ConvTranspose1d`` and the
PQMF module.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class PolyphaseConvTranspose1d(nn.Module):
    """``ConvTranspose1d`` (groups 1, dilation 1) computed as ``Conv1d`` + phase interleave.

    x [B, C_in, T] -> [B, C_out, (T-1)*s - 2p + k + output_padding], equal to the source layer
    up to float rounding. ``self.conv`` holds the phase-stacked weights [s*C_out, C_in, L].
    """

    def __init__(self, layer: nn.ConvTranspose1d) -> None:
        super().__init__()
        if layer.groups != 1 or layer.dilation[0] != 1 or layer.padding_mode != "zeros":
            raise ValueError("polyphase rewrite supports ConvTranspose1d with groups=1, dilation=1, zero padding; "
                             f"got groups={layer.groups}, dilation={layer.dilation}, padding_mode={layer.padding_mode!r}")
        c_in, c_out, k = layer.weight.shape
        s, p, op = layer.stride[0], layer.padding[0], layer.output_padding[0]
        self.stride, self.c_out = s, c_out
        # phase r: taps j = q*s + b_r for q in [0, Q_r), reading input m + u with u = a_r - q
        phases = []
        for r in range(s):
            a, b = divmod(r + p, s)
            n_taps = max(0, math.ceil((k - b) / s))
            phases.append((a, b, n_taps))
        u_max = max(a for a, _, n in phases if n) if any(n for *_, n in phases) else 0
        u_min = min(a - n + 1 for a, _, n in phases if n) if any(n for *_, n in phases) else 0
        taps = u_max - u_min + 1
        w = layer.weight.detach()  # [C_in, C_out, k]
        stacked = torch.zeros(s, c_out, c_in, taps, dtype=w.dtype)  # [s, C_out, C_in, L]
        for r, (a, b, n) in enumerate(phases):
            for q in range(n):
                u = a - q
                stacked[r, :, :, u - u_min] = w[:, :, q * s + b].t()
        self.conv = nn.Conv1d(c_in, s * c_out, taps, bias=layer.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(stacked.reshape(s * c_out, c_in, taps))
            if layer.bias is not None:
                self.conv.bias.copy_(layer.bias.detach().repeat(s))
        # output frames m in [0, T + extra): extra is constant for given (k, s, p, output_padding)
        out_minus = -2 * p + k + op - s  # T_out = T*s + out_minus
        extra = math.ceil(out_minus / s)  # M = T + extra phase frames
        self.pad_left = -u_min
        self.pad_right = extra + taps - 1 - self.pad_left
        self.crop = (extra * s) - out_minus  # interleaved samples beyond T_out, dropped at the end

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C_in, T]
        pl, pr = self.pad_left, self.pad_right
        if pl < 0:
            x = x[:, :, -pl:]
            pl = 0
        if pr < 0:
            x = x[:, :, : x.shape[-1] + pr]
            pr = 0
        y = self.conv(F.pad(x, [pl, pr]))  # [B, s*C_out, M], channel r*C_out + c = phase r of c
        b, _, m = y.shape
        # interleave time-major, [B, M, s*C_out] -> [B, M*s, C_out] (t = m*s + r): in ONNX this is
        # Transpose-Reshape-Transpose, whose outer transposes cancel against ONNX Runtime's
        # channels-last INT8 convolutions around it (measured: 29 fewer transposes in joe's decoder)
        y = y.transpose(1, 2).reshape(b, m * self.stride, self.c_out).transpose(1, 2)  # [B, C_out, M*s]
        return y[:, :, : y.shape[-1] - self.crop] if self.crop else y


class PolyphasePQMFSynthesis(nn.Module):
    """:class:`~vitsq.models.vits2.PQMFSynthesis` (zero-stuffing upsampler, then the synthesis
    filter at the full rate) computed at the sub-band rate.

    Output sample ``n = q*S + p`` only meets the stuffed samples that are not zero: it is
    ``S * sum_k sum_j h_k[j*S + pad - p] * x_k[q + j]``. So one ``Conv1d`` of ``S`` phases
    (output channels) over the ``S`` sub-bands with ``~(taps + 1) / S`` taps, interleaved in
    time, gives the same signal: a quarter of the multiply-adds at 4 sub-bands, and no
    full-rate buffer of zeros. ``weight`` [S phases, S sub-bands, L taps].
    """

    def __init__(self, pqmf: nn.Module) -> None:
        super().__init__()
        filters = pqmf.filters.detach()[0]  # [S, taps + 1]
        s, n_coef = filters.shape
        if int(pqmf.subbands) != s:
            raise ValueError(f"PQMF with {pqmf.subbands} sub-bands but {s} filters")
        pad = int(pqmf.pad)
        gain = float(pqmf.updown[0, 0, 0])  # what the zero-stuffing upsampler multiplies by
        # phase p reads offset j of the sub-band signals with coefficient index t = j*S + pad - p
        j_lo = min(math.ceil((p - pad) / s) for p in range(s))
        j_hi = max(math.floor((n_coef - 1 - pad + p) / s) for p in range(s))
        weight = torch.zeros(s, s, j_hi - j_lo + 1, dtype=filters.dtype)  # [phase, sub-band, tap]
        for p in range(s):
            for j in range(j_lo, j_hi + 1):
                t = j * s + pad - p
                if 0 <= t < n_coef:
                    weight[p, :, j - j_lo] = gain * filters[:, t]
        self.subbands = s
        self.pad_left, self.pad_right = -j_lo, j_hi
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, L]
        y = F.conv1d(F.pad(x, [self.pad_left, self.pad_right]), self.weight)  # [B, S phases, L]
        return self.interleave(y)

    @staticmethod
    def interleave(y: torch.Tensor) -> torch.Tensor:
        """Phases [B, S, L] -> signal [B, 1, L*S] (sample q*S + p is phase p at q)."""
        b, s, n = y.shape
        return y.transpose(1, 2).reshape(b, 1, n * s)


def with_polyphase_upsampling(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose decoder upsampling layers (``dec.ups.*``) are polyphase,
    and so is a multi-band decoder's PQMF synthesis (``dec.pqmf``).

    Node names keep their prefix (``/dec/ups.2/conv/Conv`` in ONNX), so keep-float lists that
    name ``dec.ups.2`` or ``dec.pqmf`` still apply. Returns the copy; ``model`` is unchanged.
    """
    out = copy.deepcopy(model)
    dec = getattr(out, "dec", None)
    ups = getattr(dec, "ups", None)
    if ups is None:
        raise ValueError(f"{type(model).__name__} has no dec.ups upsampling layers to rewrite")
    for i, layer in enumerate(ups):
        if isinstance(layer, nn.ConvTranspose1d):
            ups[i] = PolyphaseConvTranspose1d(layer)
    pqmf = getattr(dec, "pqmf", None)
    if pqmf is not None and not isinstance(pqmf, PolyphasePQMFSynthesis):
        dec.pqmf = PolyphasePQMFSynthesis(pqmf)
    return out
