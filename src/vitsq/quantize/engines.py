"""Quantized CPU engines of ``torch.ao`` and a numerics probe for every engine/layer pair.

Eager INT8 layers run on one of PyTorch's quantized engines (``fbgemm``, ``x86``, ``qnnpack``,
``onednn``). Their kernels differ, and not all of them are right: measured here with torch 2.13
(CPU, x86-64), a per-tensor INT8 ``ConvTranspose1d`` gives ~140 % relative error on the ``x86``
and ``onednn`` engines while ``fbgemm`` and ``qnnpack`` give 1-3 %, and every engine gives
1-3 % on Conv1d (plain, dilated, depthwise) and Linear. So we never trust a pair: before a
layer is quantized, :func:`probe_layer` quantizes a copy of it (same type and hyper-parameters,
its own weights) on random input and measures the relative error against the float layer; a
layer whose engine gets it wrong (:data:`BROKEN_RELATIVE_ERROR`) stays float and the coverage
report says why. Packed INT8 weights are engine-specific, so the engine used at calibration is
stored in the artifact and enforced at load.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from vitsq.errors import UnsupportedError
from vitsq.quantize.recipes import ENGINES

log = logging.getLogger(__name__)

#: Relative error (||y_q - y|| / ||y||) above which an engine/layer pair counts as broken. INT8
#: with 7-8 bit activations measures 1-3 % on random data; a broken kernel measures ~100 %+.
BROKEN_RELATIVE_ERROR = 0.25
#: Layer types the eager recipe wraps with QuantStub/DeQuantStub.
QUANTIZABLE = (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)


def available_engines() -> list[str]:
    """Quantized engines this PyTorch build can run here (``none`` excluded)."""
    return [e for e in torch.backends.quantized.supported_engines if e != "none"]


def default_engine() -> str:
    """``fbgemm`` where available (x86-64), else ``qnnpack`` (ARM), else the first available."""
    avail = available_engines()
    for e in ("fbgemm", "qnnpack"):
        if e in avail:
            return e
    if not avail:
        raise UnsupportedError("this PyTorch build has no quantized engine: eager INT8 cannot run here")
    return avail[0]


def check_engine(engine: str) -> str:
    """Return ``engine`` if it is known and runs on this machine, else raise UnsupportedError."""
    if engine not in ENGINES:
        raise UnsupportedError(f"unknown quantized engine {engine!r}: valid engines are {', '.join(ENGINES)}")
    avail = available_engines()
    if engine not in avail:
        raise UnsupportedError(f"quantized engine {engine!r} is not available on this machine; "
                               f"available here: {', '.join(avail) or 'none'}")
    return engine


@contextlib.contextmanager
def use_engine(engine: str) -> Iterator[None]:
    """Set ``torch.backends.quantized.engine`` for the block and restore the previous one."""
    check_engine(engine)
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def reduce_range(engine: str) -> bool:
    """Whether activations must be 7-bit on ``engine`` here (measured, see :func:`full_range_ok`).

    fbgemm/x86 on CPUs without VNNI add u8*s8 pairs in int16 (vpmaddubsw), which saturates
    with 8-bit activations, hence torch's blanket ``reduce_range=True`` for them. That costs one
    bit (2x the rounding noise) on every activation of every layer, which was the largest single
    error source of all-layer eager INT8 on joe (log-mel L1 to FP32 1.56 -> 1.25 with full range,
    per-channel, 6 held-out sentences). So we probe: 8-bit unless the kernel saturates.
    """
    if engine not in ("fbgemm", "x86"):
        return False
    return not full_range_ok(engine)


_FULL_RANGE_CACHE: dict[str, bool] = {}


def full_range_ok(engine: str) -> bool:
    """True if ``engine``'s INT8 Conv1d/Linear are exact with full 8-bit activations on this CPU.

    Worst case for int16 pair saturation: all-positive inputs reaching u8 255 and weights at
    +-127 of the same sign in adjacent pairs. The result is compared with the float op on the
    dequantized input and weights (so only kernel error is left, plus output rounding, ~1 %);
    a saturating kernel is off by tens of percent. Cached per engine for the process.
    """
    if engine in _FULL_RANGE_CACHE:
        return _FULL_RANGE_CACHE[engine]
    import torch.ao.quantization as tq

    ok = True
    gen = torch.Generator().manual_seed(0)
    with use_engine(engine), torch.no_grad(), _quiet():
        for layer in (nn.Conv1d(64, 64, 3, padding=1), nn.Linear(64, 64)):
            w = torch.ones_like(layer.weight)
            w[..., ::2] = torch.sign(torch.randn(w[..., ::2].shape, generator=gen))
            layer.weight.copy_(w)
            layer.bias.zero_()
            shape = (1, 32, 64) if isinstance(layer, nn.Linear) else (1, 64, 32)
            x = 4 * torch.rand(shape, generator=gen)
            wrapped = tq.QuantWrapper(layer).eval()
            wrapped.qconfig = tq.QConfig(
                activation=tq.MinMaxObserver.with_args(reduce_range=False),
                weight=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))
            try:
                tq.prepare(wrapped, inplace=True)
                wrapped(x)
                tq.convert(wrapped, inplace=True)
                y = wrapped(x)
                xq = wrapped.quant(x).dequantize()
                wq = wrapped.module.weight().dequantize()
                ref = (nn.functional.linear(xq, wq) if isinstance(layer, nn.Linear)
                       else nn.functional.conv1d(xq, wq, padding=1))
                rel = float((y - ref).norm() / ref.norm().clamp_min(1e-12))
            except (RuntimeError, AssertionError, NotImplementedError):
                rel = float("inf")
            ok = ok and rel <= 0.05
    if not ok:
        log.info("engine %s saturates with 8-bit activations on this CPU: using 7-bit (reduce_range)", engine)
    _FULL_RANGE_CACHE[engine] = ok
    return ok


def supports_per_channel(module: nn.Module) -> bool:
    """torch.ao refuses per-channel weight observers on ConvTranspose (per-tensor there)."""
    return not isinstance(module, nn.ConvTranspose1d)


@dataclass(frozen=True)
class ProbeResult:
    """Numerics of one engine/layer pair on random data."""

    engine: str
    layer_type: str
    signature: tuple
    relative_error: float  # ||y_int8 - y_float|| / ||y_float||
    error: str | None = None  # the exception text if the pair does not run at all

    @property
    def ok(self) -> bool:
        return self.error is None and self.relative_error <= BROKEN_RELATIVE_ERROR


def layer_signature(module: nn.Module) -> tuple:
    """Type and hyper-parameters that decide which kernel runs (weights excluded)."""
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        return (type(module).__name__, module.in_channels, module.out_channels, module.kernel_size,
                module.stride, module.padding, module.dilation, module.groups, module.bias is not None,
                getattr(module, "output_padding", None))
    if isinstance(module, nn.Linear):
        return ("Linear", module.in_features, module.out_features, module.bias is not None)
    raise TypeError(f"not a quantizable layer: {type(module).__name__}")


_PROBE_CACHE: dict[tuple, ProbeResult] = {}


def probe_layer(module: nn.Module, engine: str, per_channel: bool = False, seed: int = 0,
                use_cache: bool = True) -> ProbeResult:
    """Quantize a copy of ``module`` (MinMax observers) on ``engine`` and measure its error.

    The input is standard normal noise [2, C_in, 48] (Linear: [2, 48, in_features]); the copy is
    calibrated on that same input, so the only error left is INT8 rounding plus any kernel bug.
    Results are cached per (engine, signature, per_channel) for the process.
    """
    import torch.ao.quantization as tq

    check_engine(engine)
    per_channel = per_channel and supports_per_channel(module)
    sig = layer_signature(module)
    key = (engine, sig, per_channel)
    if use_cache and key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    gen = torch.Generator().manual_seed(seed)
    if isinstance(module, nn.Linear):
        x = torch.randn(2, 48, module.in_features, generator=gen)  # [B, T, F]
    else:
        x = torch.randn(2, module.in_channels, 48, generator=gen)  # [B, C, T]
    layer = copy.deepcopy(module).float().eval()
    with torch.no_grad():
        y_ref = layer(x)
    if per_channel:
        wobs = tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    else:
        wobs = tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    qc = tq.QConfig(activation=tq.MinMaxObserver.with_args(reduce_range=reduce_range(engine)), weight=wobs)
    wrapped = tq.QuantWrapper(layer).eval()
    wrapped.qconfig = qc
    error = None
    rel = float("inf")
    try:
        with use_engine(engine), torch.no_grad(), _quiet():
            tq.prepare(wrapped, inplace=True)
            wrapped(x)
            tq.convert(wrapped, inplace=True)
            y = wrapped(x)
        rel = float((y - y_ref).norm() / y_ref.norm().clamp_min(1e-12))
    except (RuntimeError, AssertionError, NotImplementedError) as exc:
        error = str(exc).splitlines()[0][:200]
    result = ProbeResult(engine, sig[0], sig, rel, error)
    if not result.ok:
        log.warning("engine %s: INT8 %s %s is wrong on this machine (relative error %s) -> kept float",
                    engine, sig[0], sig[1:], error or f"{rel:.1%}")
    _PROBE_CACHE[key] = result
    return result


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.ao's eager API emits deprecation and observer warnings on every call: not ours to show."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
