"""Streaming building blocks: convolutions that carry their state from one chunk to the next.

A "same"-padded convolution over a whole sentence equals, chunk by chunk, a padding-free
("valid") convolution over ``[cache, new frames]`` where the cache holds the last ``span - 1``
input frames. Nothing is computed twice, and every output sample sees exactly the inputs it sees
in the whole-sentence run, so INT8 layers give the same integers.

Every op here has the same interface::

    init(x) -> states            # the states before the first chunk (x: any tensor of the dtype)
    step(x, states, flush) -> (y, states)

``flush`` is an int, 0 or 1 (1 on the last call of a sentence: the op then appends the zero
padding the whole-sentence run has after the last frame and emits everything it still holds).
It may be the traced size of a tensor, so the same code exports with a dynamic flush.
The start of a sentence is carried by the *shape* of the initial states (a convolution's first
cache holds only its left zero padding; a crop still to do is a tensor of that many frames), so
no op branches on "is this the first chunk" and the states have the same meaning in every call.

Shapes: ``x`` [B, C, n] frames of the op's input rate; states are [B, C, k] tensors. ``init``
takes any tensor of the batch size, dtype and device wanted (its channels and length are not
used: each op knows its own channel count).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from vitsq.errors import UnsupportedError

States = list[torch.Tensor]


# =========================================================================== valid convolutions
def _quantized_types() -> tuple[type, type]:
    from torch.ao.nn.quantized import Conv1d as QConv1d
    from torch.ao.nn.quantized import ConvTranspose1d as QConvTranspose1d

    return QConv1d, QConvTranspose1d


def conv_geometry(module: nn.Module) -> dict[str, Any]:
    """kernel, stride, padding, dilation of a (possibly INT8-wrapped) 1-D (transposed) conv."""
    inner = getattr(module, "module", module)  # torch.ao QuantWrapper keeps the layer in .module
    return {"kernel": int(inner.kernel_size[0]), "stride": int(inner.stride[0]),
            "padding": int(inner.padding[0]), "dilation": int(inner.dilation[0]),
            "output_padding": int(getattr(inner, "output_padding", (0,))[0]), "groups": int(inner.groups)}


def valid_conv(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` (``nn.Conv1d``/``nn.ConvTranspose1d``, or a ``torch.ao`` ``QuantWrapper`` of
    their INT8 versions) as a function computing it with no padding."""
    from torch.ao.quantization import QuantWrapper

    if isinstance(module, QuantWrapper):
        inner = module.module
        if not isinstance(inner, _quantized_types()[0]):
            raise UnsupportedError(f"cannot stream a quantized {type(inner).__name__} layer this way")
        # The layer runs as it is, padding included, and the outputs whose window reaches into its
        # padding are dropped: repacked without padding, fbgemm's INT8 conv rounded some outputs
        # differently (1 LSB), which the rest of the decoder amplifies.
        pad = int(inner.padding[0])
        span = int(inner.dilation[0]) * (int(inner.kernel_size[0]) - 1) + 1
        return lambda x: module(x)[:, :, pad : x.shape[-1] + pad - span + 1]
    if type(module) is nn.Conv1d:
        if module.padding_mode != "zeros":
            raise UnsupportedError(f"cannot stream a Conv1d with padding_mode={module.padding_mode!r}")
        return lambda x: F.conv1d(x, module.weight, module.bias, module.stride, 0, module.dilation, module.groups)
    if type(module) is nn.ConvTranspose1d:
        return lambda x: F.conv_transpose1d(x, module.weight, module.bias, module.stride, 0, 0,
                                            module.groups, module.dilation)
    raise UnsupportedError(f"cannot stream a {type(module).__name__} layer (streaming supports Conv1d and "
                           "ConvTranspose1d, float or torch.ao INT8)")


def _zeros(x: torch.Tensor, frames: Any) -> torch.Tensor:
    return x.new_zeros(x.shape[0], x.shape[1], frames)


def _tracing() -> bool:
    """Whether the code is being traced for export (ONNX, torch.export): then only plain tensor
    ops on symbolic sizes, no branches on sizes and no ``out=`` writes."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


def buffer(cache: torch.Tensor, x: torch.Tensor, right: Any, slope: float | None = None) -> torch.Tensor:
    """``[cache, act(x), zeros(right)]`` along time, ``act`` a leaky ReLU of ``slope`` (None: none).

    Eagerly the activation writes straight into the buffer: the same work as the activation
    alone, where activation + ``torch.cat`` copied every frame once more (16 % of a streamed
    decode, profiled).
    """
    if _tracing():
        if slope is not None:
            x = F.leaky_relu(x, slope)
        return torch.cat([cache, x, _zeros(x, right)], -1)
    k, n = cache.shape[-1], x.shape[-1]
    buf = x.new_empty(x.shape[0], x.shape[1], k + n + right)
    buf[:, :, :k] = cache
    if slope is None:
        buf[:, :, k : k + n] = x
    else:
        torch.ops.aten.leaky_relu.out(x, slope, out=buf[:, :, k : k + n])
    if right:
        buf[:, :, k + n :] = 0
    return buf


def add_aligned(branch: torch.Tensor, ahead: torch.Tensor, pending: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``branch + ahead`` where ``ahead`` (a residual input) runs ``pending``'s length ahead of
    ``branch`` (computed from it): returns the sum over ``branch``'s frames and the new pending
    frames. Same values as :func:`align` then ``+``, without concatenating the residual."""
    if _tracing():
        ahead, pending = align(ahead, pending, branch)
        return branch + ahead, pending
    lag, n = pending.shape[-1], branch.shape[-1]
    if n < lag:
        return branch + pending[:, :, :n], torch.cat([pending[:, :, n:], ahead], -1)
    out = torch.empty_like(branch)
    torch.add(branch[:, :, :lag], pending, out=out[:, :, :lag])
    torch.add(branch[:, :, lag:], ahead[:, :, : n - lag], out=out[:, :, lag:])
    return out, ahead[:, :, n - lag :].clone()


def _length(x: torch.Tensor) -> Any:
    return x.shape[-1]


# =========================================================================== ops
class StreamConv(nn.Module):
    """A stride-1 convolution with "same"-style padding ``(left, right)`` over the sentence.

    Lag: ``right`` frames (an output frame needs ``right`` frames after it). The cache starts as
    the ``left`` zero frames of the padding and then holds the last ``span - 1`` inputs.
    """

    def __init__(self, conv: Callable[[torch.Tensor], torch.Tensor], span: int, left: int, in_channels: int) -> None:
        super().__init__()
        if left < 0 or left > span - 1:
            raise UnsupportedError(f"cannot stream a convolution with left padding {left} and span {span}")
        self.conv = conv
        self.span = span
        self.left = left
        self.right = span - 1 - left
        self.in_channels = in_channels

    @classmethod
    def of(cls, module: nn.Module) -> "StreamConv":
        g = conv_geometry(module)
        if g["stride"] != 1:
            raise UnsupportedError(f"StreamConv takes stride-1 convolutions, got stride {g['stride']}")
        span = g["dilation"] * (g["kernel"] - 1) + 1
        inner = getattr(module, "module", module)
        return cls(valid_conv(module), span, g["padding"], int(inner.in_channels))

    @property
    def lag(self) -> int:
        return self.right

    n_states = 1

    def init(self, x: torch.Tensor) -> States:
        return [x.new_zeros(x.shape[0], self.in_channels, self.left)]

    def step(self, x: torch.Tensor, states: States, flush: Any,
             slope: float | None = None) -> tuple[torch.Tensor, States]:
        """``slope``: apply a leaky ReLU of that slope to ``x`` first (fused into the buffer)."""
        (cache,) = states
        buf = buffer(cache, x, self.right * flush, slope)  # [B, C, k + n (+ right)]
        y = self.conv(buf)  # [B, C', len(buf) - span + 1]
        keep = self.span - 1
        return y, [buf[:, :, _length(buf) - keep:] if keep else buf[:, :, :0]]


class StreamConvTranspose(nn.Module):
    """A stride-``s`` transposed convolution with ``padding`` p cropped off both ends.

    The uncropped output sample ``U`` receives input frames ``m`` with ``m*s <= U < m*s + k``; once
    frames ``< M`` have arrived, samples ``< M*s`` are final. The cache holds the last
    ``ceil(k/s) - 1`` frames (zeros before the start: they add nothing). The first ``p`` samples
    are dropped (a state of ``p`` frames that empties after the first call), and the flush emits
    the tail ``k - s - p`` samples after the last frame's ``s``.
    """

    def __init__(self, conv: Callable[[torch.Tensor], torch.Tensor], kernel: int, stride: int, padding: int,
                 in_channels: int, out_channels: int, conv_padding: int = 0) -> None:
        super().__init__()
        self.conv = conv
        self.kernel, self.stride, self.padding = kernel, stride, padding
        # ``conv`` may crop padding of its own (a module called as is): its sample u is our U = u + conv_padding
        self.conv_padding = conv_padding
        self.cache = -(-kernel // stride) - 1
        self.tail = kernel - stride - padding
        if self.tail < 0 or self.cache * stride < conv_padding:
            raise UnsupportedError(f"cannot stream a transposed convolution with kernel {kernel}, stride {stride}, "
                                   f"padding {padding}")
        self.in_channels, self.out_channels = in_channels, out_channels

    @classmethod
    def of(cls, module: nn.Module) -> "StreamConvTranspose":
        """``module`` is called as it is: the INT8 transposed convolutions of ``torch.ao`` give other
        integers when repacked without their padding, so the padded layer runs and the offset is
        accounted for."""
        g = conv_geometry(module)
        if g["dilation"] != 1 or g["output_padding"] != 0 or g["groups"] != 1:
            raise UnsupportedError("streaming supports transposed convolutions with dilation 1, groups 1 and no "
                                   "output padding")
        inner = getattr(module, "module", module)
        return cls(module, g["kernel"], g["stride"], g["padding"], int(inner.in_channels), int(inner.out_channels),
                   conv_padding=g["padding"])

    n_states = 2

    def init(self, x: torch.Tensor) -> States:
        b = x.shape[0]
        return [x.new_zeros(b, self.in_channels, self.cache), x.new_zeros(b, 1, self.padding)]

    def step(self, x: torch.Tensor, states: States, flush: Any,
             slope: float | None = None) -> tuple[torch.Tensor, States]:
        cache, skip = states
        n = _length(x)
        buf = buffer(cache, x, 0, slope)  # [B, C, c + n]
        y = self.conv(buf)  # [B, C', (c + n - 1) * s + k - 2 * conv_padding]
        start = self.cache * self.stride + _length(skip) - self.conv_padding
        end = (self.cache + n) * self.stride + self.tail * flush - self.conv_padding
        return y[:, :, start:end], [buf[:, :, _length(buf) - self.cache:], skip[:, :, :0]]


class StreamPolyphase(nn.Module):
    """:class:`~vitsq.models.polyphase.PolyphaseConvTranspose1d` chunk by chunk: its phase
    convolution streams as a :class:`StreamConv` (padding ``pad_left``/``pad_right``); the
    interleave is frame-local; the final ``crop`` samples are dropped on flush."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        g = conv_geometry(layer.conv)
        span = g["kernel"]
        if layer.pad_left < 0 or layer.pad_right < 0:
            raise UnsupportedError("cannot stream a polyphase upsampler with negative padding")
        inner = getattr(layer.conv, "module", layer.conv)
        self.conv = StreamConv(valid_conv(layer.conv), span, layer.pad_left, int(inner.in_channels))
        self.stride, self.c_out, self.crop = layer.stride, layer.c_out, layer.crop
        self.in_channels = self.conv.in_channels
        self.padding = self.conv.right * self.stride  # look-ahead in output samples

    n_states = 1

    def init(self, x: torch.Tensor) -> States:
        return self.conv.init(x)

    def step(self, x: torch.Tensor, states: States, flush: Any,
             slope: float | None = None) -> tuple[torch.Tensor, States]:
        y, states = self.conv.step(x, states, flush, slope)  # [B, s * C_out, m]
        b, m = y.shape[0], _length(y)
        y = y.reshape(b, self.stride, self.c_out, m).permute(0, 2, 3, 1).reshape(b, self.c_out, m * self.stride)
        return y[:, :, : _length(y) - self.crop * flush], states


def stream_upsampler(layer: nn.Module) -> nn.Module:
    """The streaming op for one of a decoder's ``ups`` layers (transposed or polyphase)."""
    from vitsq.models.polyphase import PolyphaseConvTranspose1d

    if isinstance(layer, PolyphaseConvTranspose1d):
        return StreamPolyphase(layer)
    return StreamConvTranspose.of(layer)


def align(ahead: torch.Tensor, pending: torch.Tensor, behind: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Line ``ahead`` (a stream that has emitted more frames, e.g. a residual input) up with
    ``behind`` (the branch computed from it): returns ``ahead``'s frames matching ``behind``'s and
    the frames still pending (state [B, C, lag])."""
    buf = torch.cat([pending, ahead], -1)
    n = _length(behind)
    return buf[:, :, :n], buf[:, :, n:]
