"""The HiFi-GAN upsampler computed on [B, C, 1, T] with 2-D convolutions, for XNNPACK.

XNNPACK runs convolutions channels-last. ExecuTorch's XNNPACK lowering turns each 1-D
convolution into unsqueeze -> 2-D convolution -> squeeze, and its layout pass needs the
tensors around a reshape in channels-first order, so every convolution of a 1-D decoder gets a
transpose into channels-last and one back out. In joe's INT8 decoder program those transposes
took about as long as the float convolutions they surround (ExecuTorch's ETDump, 1 thread).
With the whole upsampler in 4-D there is no reshape between its convolutions: the element-wise
ops between them (leaky ReLU, residual sums, the resblock average) keep the channels-last
layout, and the program transposes once on the way in and once on the way out.

:func:`with_2d_layout` is an export-time copy; the model, its parameter names and its state
dict are untouched, and module names inside the decoder stay as they were (so ``keep_float``
entries such as ``dec.conv_post`` or ``dec.resblocks.6`` still name the same layers). Same
function up to float summation order (tested against the 1-D decoder).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def conv_as_2d(layer: nn.Module) -> nn.Module:
    """``Conv1d``/``ConvTranspose1d`` -> the same layer as a 2-D one over [B, C, 1, T]
    (kernel [1, k], weights ``unsqueeze(2)``); any other module is returned as it is."""
    if isinstance(layer, nn.Conv1d):
        out = nn.Conv2d(layer.in_channels, layer.out_channels, (1, layer.kernel_size[0]), stride=(1, layer.stride[0]),
                        padding=(0, layer.padding[0]), dilation=(1, layer.dilation[0]), groups=layer.groups,
                        bias=layer.bias is not None, padding_mode=layer.padding_mode)
    elif isinstance(layer, nn.ConvTranspose1d):
        out = nn.ConvTranspose2d(layer.in_channels, layer.out_channels, (1, layer.kernel_size[0]),
                                 stride=(1, layer.stride[0]), padding=(0, layer.padding[0]),
                                 output_padding=(0, layer.output_padding[0]), groups=layer.groups,
                                 bias=layer.bias is not None, dilation=(1, layer.dilation[0]))
    else:
        return layer
    with torch.no_grad():
        out.weight.copy_(layer.weight.detach().unsqueeze(2))  # [O, I, 1, k] / [I, O, 1, k]
        if layer.bias is not None:
            out.bias.copy_(layer.bias.detach())
    return out.train(layer.training)


def _convert(module: nn.Module, names: tuple[str, ...] | None = None) -> None:
    """Replace every 1-D convolution under ``module`` (in place; only under its children
    ``names`` when given) by :func:`conv_as_2d`."""
    for name, child in module.named_children():
        if names is not None and name not in names:
            continue
        new = conv_as_2d(child)
        if new is not child:
            setattr(module, name, new)
        else:
            _convert(child)


def with_2d_layout(dec: nn.Module) -> nn.Module:
    """A copy of the HiFi-GAN-family decoder ``dec`` whose upsampler (``conv_pre``, ``cond``,
    ``ups``, ``resblocks``) is 2-D, and so is a plain HiFi-GAN's ``conv_post``; run it with
    :func:`decode_2d`. Module names are unchanged (``keep_float`` names the same layers); ``dec``
    itself is untouched.
    """
    if not hasattr(dec, "upsample") or not hasattr(dec, "tail"):
        raise ValueError(f"{type(dec).__name__} is not a HiFi-GAN-family decoder (no upsample/tail)")
    out = copy.deepcopy(dec)
    names = ("conv_pre", "cond", "ups", "resblocks") + (("conv_post",) if getattr(dec, "tail_runs_2d", False) else ())
    _convert(out, names)
    return out


def decode_2d(dec: nn.Module, z: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
    """z [B, C, T] (+ g [B, gin, 1]) -> the decoder's first output [B, 1, T * hop], through a
    :func:`with_2d_layout` copy: the upsampler on [B, C, 1, T]; a plain HiFi-GAN's tail too, a
    multi-band decoder's tail (sub-band projection, iSTFT, PQMF) on its features back in 3-D."""
    h, _ = dec.upsample(z.unsqueeze(2), None if g is None else g.unsqueeze(2))  # [B, ch, 1, T']
    if getattr(dec, "tail_runs_2d", False):
        return dec.tail(h, None).squeeze(2)
    out = dec.tail(h.squeeze(2), None)
    return out[0] if isinstance(out, tuple) else out
