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

log = logging.getLogger(__name__)

#: Engines a recipe may name (those PyTorch knows on some platform).
ENGINES = ("fbgemm", "x86", "qnnpack", "onednn")
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
    """fbgemm/x86 accumulate u8*s8 pairs in int16 (vpmaddubsw): 7-bit activations avoid overflow."""
    return engine in ("fbgemm", "x86")


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
