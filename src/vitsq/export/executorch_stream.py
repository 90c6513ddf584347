"""Streaming ExecuTorch methods: ``decoder.pte`` also holds ``flow`` and ``step_first/next/last``.

``encoder.pte`` + ``decoder.pte`` (:mod:`vitsq.export.executorch`) synthesize a sentence per call
(``decoder.pte``'s ``forward``: flow + decoder). For streaming, an artifact exported with
``streaming=True`` has more methods in ``decoder.pte`` -- one program, so every weight the
methods share (the flow's, the decoder's) is stored once, and a reader that only knows
``forward`` reads the artifact as before:

* ``flow`` -- the reverse flow, once per sentence (the VITS2 flow attends over all frames):
  ``z_p`` [1, C, T_y], ``y_mask`` [1, 1, T_y], ``sid`` [1] -> ``z`` [1, C, T_y] (masked), the
  decoder input, computed by the same flow graph (FP32, or the same INT8 stage) as ``forward``.
* :class:`~vitsq.streaming.decoder.StreamingDecoder` as three methods, through
  :class:`DecoderStepProgram`:

  - ``step_first``: ``z`` [1, C, n], ``sid`` -> ``audio`` [1, 1, m], ``state_0`` ...
    ``state_{k-1}``; the states before the first chunk are built inside (their *lengths* carry
    the start of a sentence, e.g. a convolution's left zero padding), ``n`` > ``lag_frames``;
  - ``step_next``: ``z``, ``sid``, the states -> ``audio`` and the new states (same shapes:
    every state has its steady length after the first call);
  - ``step_last``: ``z``, ``sid``, the states -> ``audio`` (the rest of the sentence: flush).

  Three methods instead of one with a ``flush`` input and states of varying length: traced
  sizes of 0 or 1 (an empty pending residual, a one-frame crop, flush itself) make
  ``torch.export`` specialize or add guards, while each method here has one dynamic size, the
  chunk length ``n`` in ``[1, max_chunk]`` (``[lag + 1, max_chunk]`` for ``step_first``). The
  runtime splits a longer chunk into several calls (exact: chunking is exact).

INT8 (pt2e). The step program computes every INT8 operation of ``decoder.pte`` with the same
integers: it runs the same quantized decoder stage, mirrored (:class:`MirroredQuantization`).
Each convolution and multiplication of the converted decoder graph is a *site* with its INT8
weight, its input and output quantization parameters; while the step wrapper is traced, a
``TorchFunctionMode`` puts the i-th site's quantize/dequantize pairs and INT8 weight around the
i-th convolution (multiplication) the streaming decoder calls -- the streaming decoder calls its
layers in the whole decoder's order. A convolution's input is quantized on the concatenation of
its cache and the new frames, which holds the same numbers the whole decoder quantizes, so each
output integer comes from the same input integers and weights. A leaky ReLU between two INT8
layers is quantized right after it, as in the decoder graph, so XNNPACK lowers it alike.
Every quantize node of the decoder graph must be explained by a site (an input, an output, or a
view of an output), else the recipe is refused for streaming. The mirror is checked eagerly on a
sentence against the converted decoder before export (:func:`check_mirror`), and the written
methods are checked against ``forward`` by the export (:func:`vitsq.export.executorch.check_streaming`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vitsq.errors import UnsupportedError

log = logging.getLogger(__name__)

STEP_ROLES = ("first", "next", "last")  # the step methods, named step_<role> in decoder.pte
#: Latent frames per step call the programs are planned for (a chunk of the default schedule
#: is at most 128 frames plus the look-ahead; longer chunks run as several calls).
DEFAULT_MAX_CHUNK = 256

QParams = tuple  # (scale, zero_point, quant_min, quant_max, dtype) of a per-tensor quantization


# =========================================================================== program wrappers
class FlowProgram(nn.Module):
    """Method ``flow``: z_p [1, C, T_y], y_mask [1, 1, T_y], sid [1] -> z [1, C, T_y] (masked)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z_p: torch.Tensor, y_mask: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
        g = self.model.speaker_embedding(sid, 1)
        return self.model.flow_reverse(z_p, y_mask, g) * y_mask  # as DecoderProgram feeds its decoder


class DecoderStepProgram(nn.Module):
    """One step method of ``decoder.pte`` (see module docstring).

    ``first``: forward(z, sid) -> (audio, *states); ``next``: forward(z, sid, *states) ->
    (audio, *states); ``last`` (``flush``): forward(z, sid, *states) -> (audio,). ``mirror``:
    the INT8 sites of the decoder program (None: float).
    """

    def __init__(self, model: nn.Module, decoder: nn.Module, method: str,
                 mirror: "MirroredQuantization | None" = None) -> None:
        super().__init__()
        if method not in STEP_ROLES:
            raise ValueError(f"method must be one of {STEP_ROLES}, got {method!r}")
        self.model = model
        self.decoder = decoder
        self.method = method
        self.mirror = mirror

    def forward(self, z: torch.Tensor, sid: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        g = self.model.speaker_embedding(sid, 1)  # [1, gin, 1] or None
        st = self.decoder.init_states(z) if self.method == "first" else list(states)
        flush = int(self.method == "last")
        if self.mirror is None:
            audio, new = self.decoder.step(z, st, flush, g)
        else:
            with self.mirror.mode() as mode:
                audio, new = self.decoder.step(z, st, flush, g)
            mode.finish()
        return (audio,) if flush else (audio, *new)


# =========================================================================== INT8 mirror
_Q = "quantize_per_tensor"
_DQ = "dequantize_per_tensor"
_DQC = "dequantize_per_channel"
#: (a decoder program in the 2-D layout, models/layout2d.py, has the 2-D ops: their weights
#: [O, I, 1, k] / [I, O, 1, k] are the 1-D layers' with a unit axis, dropped when read)
_SITE_OPS = {"conv1d": "conv", "conv_transpose1d": "conv", "conv2d": "conv", "conv_transpose2d": "conv", "mul": "mul"}
#: ops that only move or pad numbers: a quantize node after them quantizes their source's values
_MOVERS = {"reshape", "view", "slice", "select", "permute", "unsqueeze", "squeeze", "pad", "cat", "clone",
           "contiguous", "flatten", "transpose", "expand", _Q, _DQ}


def _as_1d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A 2-D layer's weight shape [O, I, 1, k] as its 1-D layer's [O, I, k]."""
    return shape[:2] + shape[3:] if len(shape) == 4 and shape[2] == 1 else shape


def _op(node: "torch.fx.Node") -> str:
    """``aten.conv1d.default`` / ``quantized_decomposed.quantize_per_tensor.default`` -> the op name."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return ""  # also symbolic-size arithmetic (operator.mul on sizes), which is no tensor op
    return str(node.target._opname)


@dataclass
class Site:
    """One conv / mul of the decoder graph: ``inputs`` the quantization of its tensor arguments in
    order (None: float), ``weight`` the name of its INT8 weight buffers (None: float weight),
    ``output`` its output quantization, ``leaky`` the quantization of a leaky ReLU feeding it."""

    kind: str
    inputs: list[QParams | None]
    output: QParams | None
    weight: str | None = None
    leaky: QParams | None = None
    shape: tuple[int, ...] = ()


def _qparams(node: "torch.fx.Node") -> QParams:
    scale, zp, qmin, qmax, dtype = node.args[1:6]
    return (float(scale), int(zp), int(qmin), int(qmax), dtype)


@dataclass
class MirroredQuantization:
    """The INT8 sites of a converted decoder graph (see module docstring), in graph order."""

    sites: dict[str, list[Site]]
    weights: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int, int, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading the decoder graph
    @classmethod
    def from_graph(cls, gm: "torch.fx.GraphModule") -> "MirroredQuantization":
        """Sites of ``gm`` (a converted PT2E decoder stage, ``ExportedProgram.module()``)."""
        out = cls(sites={"conv": [], "mul": []})
        explained: set[str] = set()
        for node in gm.graph.nodes:
            kind = _SITE_OPS.get(_op(node))
            if kind is None:
                continue
            site = out._site(gm, node, kind, explained)
            out.sites[kind].append(site)
        unexplained = [n.name for n in gm.graph.nodes
                       if _op(n) == _Q and n.name not in explained and not _views_quantized(n, explained)]
        if unexplained:
            raise UnsupportedError(f"cannot stream this INT8 decoder: quantized tensors {unexplained[:5]} are "
                                   "not the input or output of a convolution or multiplication (only those are "
                                   "mirrored into the step program); export without streaming, or keep those "
                                   "layers float")
        return out

    def _site(self, gm: "torch.fx.GraphModule", node: "torch.fx.Node", kind: str, explained: set[str]) -> Site:
        n_in = 1 if kind == "conv" else 2
        inputs: list[QParams | None] = []
        leaky = None
        for arg in node.args[:n_in]:
            if isinstance(arg, torch.fx.Node) and _op(arg) == _DQ:
                src = arg.args[0]
                if isinstance(src, torch.fx.Node) and _op(src) == _Q:
                    inputs.append(_qparams(arg))
                    explained.add(src.name)
                    if kind == "conv" and _op(src.args[0]) == "leaky_relu":
                        leaky = _qparams(src)
                else:  # an INT8 constant (a scalar factor such as pi, quantized by the quantizer)
                    key = f"c{len(self.weights)}"
                    self.weights[key] = (getattr(gm, src.target),)
                    inputs.append((*_qparams(arg), key))
            else:  # a float tensor or a plain number
                inputs.append(None)
        quantized_users = [u for u in node.users if _op(u) == _Q]
        if quantized_users and len(quantized_users) != len(node.users):
            raise UnsupportedError(f"cannot stream this INT8 decoder: {node.name} feeds both quantized and float "
                                   "consumers")
        output = _qparams(quantized_users[0]) if quantized_users else None
        explained.update(u.name for u in quantized_users)
        site = Site(kind, inputs, output, leaky=leaky)
        if kind == "conv":
            w = node.args[1]
            site.shape = _as_1d(tuple(w.meta["val"].shape)) if "val" in w.meta else ()
            if isinstance(w, torch.fx.Node) and _op(w) == _DQC:
                key = f"w{len(self.weights)}"
                tensors = [getattr(gm, a.target) if isinstance(a, torch.fx.Node) else a for a in w.args[:3]]
                if tensors[0].dim() == 4:  # a 2-D layer of the 2-D layout; the channel axis (0 or 1) is unchanged
                    tensors[0] = tensors[0].squeeze(2)
                self.weights[key] = (*tensors, *w.args[3:7])
                site.weight = key
                site.shape = tuple(tensors[0].shape)
        return site

    # ------------------------------------------------------------------ running it
    def register(self, module: nn.Module) -> None:
        """Put the INT8 weights on ``module`` as buffers, so export holds them as program constants."""
        for key, (w, *rest) in self.weights.items():
            module.register_buffer(f"mirror_{key}_w", w, persistent=True)
            if rest:  # a per-channel weight: its scales and zero points
                module.register_buffer(f"mirror_{key}_s", rest[0], persistent=True)
                module.register_buffer(f"mirror_{key}_z", rest[1], persistent=True)
        self._owner = module

    def mode(self) -> "_MirrorMode":
        return _MirrorMode(self)

    def weight(self, key: str) -> torch.Tensor:
        owner = self._owner
        w, s, z = (getattr(owner, f"mirror_{key}_{p}") for p in "wsz")
        axis, qmin, qmax, dtype = self.weights[key][3:7]
        return torch.ops.quantized_decomposed.dequantize_per_channel(w, s, z, axis, qmin, qmax, dtype)

    def constant(self, q: tuple) -> torch.Tensor:
        """An INT8 constant operand (``q``: its quantization and buffer key), dequantized."""
        *params, key = q
        return torch.ops.quantized_decomposed.dequantize_per_tensor(getattr(self._owner, f"mirror_{key}_w"), *params)


def _views_quantized(node: "torch.fx.Node", explained: set[str]) -> bool:
    """Whether quantize ``node`` re-quantizes (with the same parameters) values an explained
    quantize node already quantized, through ops that only move numbers."""
    params = _qparams(node)
    stack, seen = [node.args[0]], set()
    found = False
    while stack:
        cur = stack.pop()
        if not isinstance(cur, torch.fx.Node) or cur.name in seen:
            continue
        seen.add(cur.name)
        if _op(cur) == _Q and cur.name in explained:
            if _qparams(cur) != params:
                return False
            found = True
            continue
        if _op(cur) not in _MOVERS:
            if _op(cur) in ("full", "ones_like", "zeros_like", "new_ones", "new_zeros"):
                continue  # constants padded in
            return False
        args = [a for arg in cur.args for a in (arg if isinstance(arg, (list, tuple)) else (arg,))]
        stack.extend(a for a in args if isinstance(a, torch.fx.Node)  # tensors only, not symbolic sizes
                     and isinstance(a.meta.get("val"), torch.Tensor))
    return found


def _fake_quant(x: torch.Tensor, q: QParams | None) -> torch.Tensor:
    if q is None:
        return x
    ops = torch.ops.quantized_decomposed
    return ops.dequantize_per_tensor(ops.quantize_per_tensor(x, *q), *q)


_CONV_FUNCS = {torch.conv1d, torch.conv_transpose1d}
_MUL_FUNCS = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__}
_LEAKY_FUNCS = {F.leaky_relu}


class _MirrorMode(TorchFunctionMode):
    """Puts the sites' INT8 weights and quantize/dequantize pairs around the convolutions and
    multiplications of one streaming decoder step, in call order (see module docstring)."""

    def __init__(self, mirror: MirroredQuantization) -> None:
        super().__init__()
        self.mirror = mirror
        self.count = {"conv": 0, "mul": 0}

    def _next(self, kind: str) -> Site:
        sites = self.mirror.sites[kind]
        i = self.count[kind]
        if i >= len(sites):
            raise UnsupportedError(f"the streaming decoder calls more {kind} ops than the decoder program has "
                                   f"({len(sites)}): cannot mirror its INT8 quantization")
        self.count[kind] = i + 1
        return sites[i]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LEAKY_FUNCS:
            out = func(*args, **kwargs)
            sites = self.mirror.sites["conv"]
            nxt = sites[self.count["conv"]] if self.count["conv"] < len(sites) else None
            return _fake_quant(out, nxt.leaky) if nxt is not None else out
        if func in _CONV_FUNCS:
            site = self._next("conv")
            x, w = args[0], args[1]
            if site.shape and tuple(w.shape) != site.shape:
                raise UnsupportedError(f"convolution {self.count['conv'] - 1} of the streaming decoder has weight "
                                       f"{tuple(w.shape)}, the decoder program's has {site.shape}: cannot mirror")
            if site.weight is not None:
                w = self.mirror.weight(site.weight)
            out = func(_fake_quant(x, site.inputs[0] if site.inputs else None), w, *args[2:], **kwargs)
            return _fake_quant(out, site.output)
        if func in _MUL_FUNCS:
            site = self._next("mul")
            if len(args) != len(site.inputs):
                raise UnsupportedError(f"multiplication {self.count['mul'] - 1} of the streaming decoder has "
                                       f"{len(args)} operands, the decoder program's {len(site.inputs)}")
            # an operand with a buffer key after its quantization (6 entries) is an INT8 constant
            args = tuple(self.mirror.constant(q) if q is not None and len(q) == 6 else _fake_quant(a, q)
                         for a, q in zip(args, site.inputs))
            return _fake_quant(func(*args, **kwargs), site.output)
        return func(*args, **kwargs)

    def finish(self) -> None:
        """Refuse a step that called fewer sites than the decoder has (a mirror out of step)."""
        for kind, sites in self.mirror.sites.items():
            if self.count[kind] != len(sites):
                raise UnsupportedError(f"the streaming decoder called {self.count[kind]} {kind} ops, the decoder "
                                       f"program has {len(sites)}: cannot mirror its INT8 quantization")


def check_mirror(step: nn.Module, decoder_gm: nn.Module, z: torch.Tensor, sid: torch.Tensor,
                 decoder_args: tuple) -> float:
    """Relative L2 distance between the mirrored streaming decoder, run eagerly on ``z`` [1, C, T]
    in one flushing call, and the converted decoder graph: it validates the site mapping (order,
    weights, quantization parameters) before minutes of lowering; a wrong mirror gives ~1, a
    right one rounding noise. (The lowered programs are compared by ``check_streaming``.)"""
    with torch.no_grad():
        g = step.model.speaker_embedding(sid, 1)
        with step.mirror.mode() as mode:
            audio, _ = step.decoder.step(z, step.decoder.init_states(z), 1, g)
        mode.finish()
        ref = decoder_gm(*decoder_args)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    ref = ref.reshape(-1)[: audio.numel()]
    return float((audio.reshape(-1) - ref).norm() / ref.norm().clamp_min(1e-12))


# =========================================================================== export
def step_example(decoder: nn.Module, channels: int, max_chunk: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """An example ``first`` chunk and the states after it (steady lengths), for tracing."""
    lag = decoder.lag_frames
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, channels, min(lag + 5, max_chunk), generator=gen)  # [1, C, n]
    with torch.no_grad():
        _, states = decoder.step(z, decoder.init_states(z), 0)
    return z, [s.clone() for s in states]  # clones: views would trace their bases' sizes too


def export_step_methods(model: nn.Module, decoder: nn.Module, max_chunk: int, export_fn: Any,
                        mirror: MirroredQuantization | None = None) -> tuple[dict[str, Any], int]:
    """``({role: ExportedProgram}, number of states)`` of the step methods, roles ``first``,
    ``next``, ``last`` (``export_fn``: the export's ``torch.export`` helper, which handles
    non-persistent buffers)."""
    from torch.export import Dim

    lag = decoder.lag_frames
    if max_chunk <= lag:
        raise UnsupportedError(f"max_chunk ({max_chunk} frames) must exceed the decoder's look-ahead ({lag} frames)")
    channels = int(model.config.inter_channels)
    z_first, states = step_example(decoder, channels, max_chunk)
    sid = torch.zeros(1, dtype=torch.long)
    z_next = torch.randn(1, channels, min(5, max_chunk), generator=torch.Generator().manual_seed(1))
    out = {}
    for method in STEP_ROLES:
        wrapper = DecoderStepProgram(model, decoder, method, mirror).eval()
        if mirror is not None:
            mirror.register(wrapper)
        if method == "first":
            args, dyn = (z_first, sid), ({2: Dim("frames", min=lag + 1, max=max_chunk)}, None)
        else:
            args = (z_next, sid, *states)
            dyn = ({2: Dim("frames", min=1, max=max_chunk)}, None, tuple(None for _ in states))  # *states: one tuple
        with torch.no_grad():
            out[method] = export_fn(wrapper, args, dyn)
    return out, len(states)


def streaming_info(decoder: nn.Module, max_chunk: int, n_states: int, methods: dict[str, str]) -> dict[str, Any]:
    """The manifest's description of the streaming methods (read by the backend): ``methods``
    maps the roles ``flow``, ``first``, ``next``, ``last`` to method names of ``decoder.pte``."""
    return {"lag_frames": int(decoder.lag_frames), "max_chunk": int(max_chunk), "states": int(n_states),
            "methods": dict(methods)}
