"""Streaming ONNX graphs: a "latent" graph and a "decoder step" graph beside ``model.onnx``.

``model.onnx`` (the Piper/Vosk contract) synthesizes a whole sentence per call. For streaming,
an ONNX artifact folder also holds two graphs that together compute the same thing:

* ``stream_latent.onnx``: ``input``, ``input_lengths``, ``scales``[, ``sid``] (as ``model.onnx``)
  -> ``z`` [1, C, T] (the decoder input: flow output, masked) and, for multi-speaker models,
  ``g`` [1, gin, 1] (the speaker conditioning). It is *cut out of* ``model.onnx``
  (:func:`onnx.utils.Extractor`) at the tensors feeding the decoder, so it computes exactly what
  ``model.onnx`` computes there -- in INT8 too, with the same quantization parameters.
* ``stream_step.onnx``: ``z`` [1, C, n] (the next n >= 0 frames), ``flush`` [f] (its *length* f
  is 1 on a sentence's last call, else 0), ``state_0`` ... ``state_{k-1}`` [b_i, c_i, len_i][, ``g``]
  -> ``audio`` [1, 1, m] (the samples that are final) and ``new_state_0`` ... . It is
  :class:`~vitsq.streaming.decoder.StreamingDecoder` exported through :class:`DecoderStepGraph`.
  States start as the ``shape``/``dtype``/``fill`` recorded in the metadata and the manifest
  (:func:`vitsq.backends.onnx.initial_states`; a state's *length* carries the start of a
  sentence, e.g. a convolution's left padding). The first call must bring more than
  ``lag_frames`` frames (:meth:`~vitsq.streaming.ChunkSchedule.plan` plans it so).

INT8 (``ort-static``): the step graph is exported in float, then every quantized tensor of
``model.onnx``'s decoder gets the same ``QuantizeLinear``/``DequantizeLinear`` pair (same scale
and zero point) on its counterpart in the step graph, and every INT8 weight and bias is copied
(:func:`mirror_quantization`). Counterparts are found by value: both float graphs run once on
the same sentence (the step graph in one call) and each decoder node of ``model.onnx`` is paired
with the step node of the same kind whose output holds the same numbers. Nodes left float in
``model.onnx`` stay float. ONNX Runtime then fuses the same ``QLinearConv``/``QLinearAdd``/
``QLinearLeakyRelu`` patterns, and a streamed sentence gives the integers of a whole-sentence run
(``QLinearConv`` gives each output the same integer whatever the input length: measured, 0 of
1.3 M outputs differ). The caches between INT8 layers are then kept as INT8 states
(:func:`int8_caches`): a quarter of the bytes, and no float round trip between INT8 layers.
Float convolutions that ``model.onnx`` runs as 2-D convolutions run as the same 2-D
convolutions in the step graph (:func:`float_convs_like_model`).
Both graphs store no weight of their own that ``model.onnx`` already holds: each such
initializer is ONNX external data pointing at the same bytes *inside* ``model.onnx``
(:func:`share_weights`), so streaming adds about 10 % to an artifact instead of doubling it, and
``model.onnx`` stays a self-contained file for the Piper and Vosk runtimes.
Float parts are not all length-invariant in ONNX Runtime (``Conv`` on short inputs, ``Sin``/
``Cos`` on a tensor's last elements differ by an ulp), so every written pair is checked
(:func:`check_pair`): streamed audio must equal ``model.onnx``'s within 1e-5 of the peak (float)
or 1 LSB of 16-bit audio (INT8), else the pair is refused.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vitsq.backends.onnx import STREAMING_VERSION, initial_states, stream_sentence
from vitsq.errors import UnsupportedError
from vitsq.onnxgraph import consumers, producers
from vitsq.streaming.decoder import StreamingDecoder

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

LATENT_FILE = "stream_latent.onnx"
STEP_FILE = "stream_step.onnx"
#: the whole-sentence graph whose bytes the streaming graphs' shared weights point into
MODEL_FILE = "model.onnx"
#: initializers smaller than this stay inside the streaming graphs (an external reference costs
#: about as much as the data)
SHARED_MIN_BYTES = 64
#: metadata_props key of the step graph (and manifest field) describing the streaming pair
META_KEY = "vitsq.streaming"
#: ops that only move numbers: their outputs inherit their inputs' quantization
_MOVERS = {"Pad", "Concat", "Slice", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Split",
           "Gather", "Expand"}
#: step-graph op kinds that may stand for a model op: an op that moves numbers may be any other
#: (a cache concatenation is the model's Pad; an interleave may be written with other reshapes)
_COUNTERPART = {op: tuple(sorted(_MOVERS)) for op in _MOVERS}


# =========================================================================== the step graph
class DecoderStepGraph(nn.Module):
    """z [1, C, n], flush [f], state_0..state_{k-1}[, g [1, gin, 1]] ->
    (audio [1, 1, m], new_state_0..new_state_{k-1}).

    Holds the model's decoder as ``dec`` so the weights keep their names (``dec.conv_pre.weight``);
    the streaming decoder's ``step`` is called as is. ``flush``'s length (0 or 1) is traced as a
    size, so one graph serves every call of a sentence.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model.eval()
        self.dec = model.dec
        self.__dict__["_stream"] = StreamingDecoder(model)  # not a submodule: its layers are dec's
        c = int(model.config.inter_channels)
        self.state_shapes = [tuple(s.shape) for s in self._stream.init_states(torch.zeros(1, c, 0))]
        self.with_g = model.config.n_speakers > 1 and getattr(model.dec, "cond", None) is not None

    def forward(self, z: torch.Tensor, flush: torch.Tensor, *rest: torch.Tensor):
        k = len(self.state_shapes)
        g = rest[k] if self.with_g else None  # [1, gin, 1]
        audio, states = self._stream.step(z, list(rest[:k]), flush.shape[0], g)  # [1, 1, m]
        return (audio, *states)


def export_step_graph(model: nn.Module, path: str | Path, *, opset: int = 17) -> dict[str, Any]:
    """Export ``model``'s decoder as a float step graph to ``path``; returns its description
    (state shapes, look-ahead, samples per frame, input and output names)."""
    import warnings

    import onnx

    graph = DecoderStepGraph(model).eval()
    stream = graph._stream
    k = len(graph.state_shapes)
    c = int(model.config.inter_channels)
    lag = int(stream.lag_frames)
    z = torch.randn(1, c, 2 * lag + 5, generator=torch.Generator().manual_seed(0))
    args = [z, torch.zeros(1, dtype=torch.int64)] + [torch.zeros(s) for s in graph.state_shapes]
    inputs = ["z", "flush"] + [f"state_{i}" for i in range(k)]
    outputs = ["audio"] + [f"new_state_{i}" for i in range(k)]
    dynamic = {"z": {2: "frames"}, "flush": {0: "flush"}, "audio": {2: "samples"}}
    for i in range(k):
        dynamic[f"state_{i}"] = {2: f"state_{i}_frames"}
        dynamic[f"new_state_{i}"] = {2: f"new_state_{i}_frames"}
    if graph.with_g:
        gin = int(model.config.gin_channels)
        args.append(torch.randn(1, gin, 1, generator=torch.Generator().manual_seed(1)))
        inputs.append("g")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about sizes read as ints are expected
        torch.onnx.export(graph, tuple(args), str(path), dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)
    with torch.inference_mode():
        hop = int(model.vocode(torch.zeros(1, c, 4), args[-1] if graph.with_g else None)[0].shape[-1]) // 4
    spec = {"version": STREAMING_VERSION, "lag_frames": lag, "hop": hop, "z_channels": c,
            "states": [list(s) for s in graph.state_shapes], "inputs": inputs, "outputs": outputs,
            "with_g": bool(graph.with_g), "decoder": stream.kind}
    proto = onnx.load(str(path))
    _set_meta(proto, {META_KEY: json.dumps(spec)})
    onnx.save(proto, str(path))
    return spec


def _set_meta(proto: Any, meta: dict[str, str]) -> None:
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for k, v in keep + list(meta.items()):
        proto.metadata_props.add(key=k, value=v)


# =========================================================================== the latent graph
def _float_source(name: str, producers: dict[str, Any]) -> str:
    """The float tensor behind ``name`` (through a DequantizeLinear <- QuantizeLinear pair)."""
    node = producers.get(name)
    while node is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear"):
        name = node.input[0]
        node = producers.get(name)
    return name


def decoder_inputs(proto: "onnx.ModelProto") -> tuple[str, str | None]:
    """Names of the float tensors ``model.onnx`` feeds its decoder: z [B, C, T] (read by
    ``/dec/conv_pre/``) and g [B, gin, 1] (read by ``/dec/cond/``; None without it)."""
    made_by = producers(proto.graph)
    found: dict[str, str] = {}
    for node in proto.graph.node:
        for scope in ("/dec/conv_pre/", "/dec/cond/"):
            if node.op_type == "Conv" and node.name.startswith(scope) and scope not in found:
                found[scope] = _float_source(node.input[0], made_by)
    if "/dec/conv_pre/" not in found:
        raise UnsupportedError("the graph has no /dec/conv_pre/ convolution: not a vitsq VITS export, so its "
                               "decoder input cannot be located for streaming")
    return found["/dec/conv_pre/"], found.get("/dec/cond/")


def extract_latent(model_path: str | Path, out_path: str | Path) -> dict[str, str]:
    """Cut ``model.onnx`` at its decoder inputs into the latent graph (inputs as ``model.onnx``,
    outputs ``z`` and, with a speaker conditioning, ``g``). Returns {output: source tensor}."""
    import onnx
    from onnx import helper
    from onnx.utils import Extractor

    proto = onnx.load(str(model_path))
    z_name, g_name = decoder_inputs(proto)
    wanted = [z_name] + ([g_name] if g_name else [])
    known = {v.name for v in proto.graph.value_info}
    # shape inference may leave these untyped in a float export; the Extractor needs their types
    proto.graph.value_info.extend(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                                  for n in wanted if n not in known)
    sub = Extractor(proto).extract_model([i.name for i in proto.graph.input], wanted)
    renamed = {"z": z_name, **({"g": g_name} if g_name else {})}
    del sub.graph.output[:]
    for out, src in renamed.items():
        sub.graph.node.append(helper.make_node("Identity", [src], [out], name=f"stream_{out}"))
        sub.graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    del sub.opset_import[:]
    sub.opset_import.extend(proto.opset_import)
    sub.ir_version = proto.ir_version
    sub.producer_name = "vitsq"
    _set_meta(sub, {META_KEY: json.dumps({"version": STREAMING_VERSION, "role": "latent", "outputs": renamed})})
    if Path(out_path).parent.resolve() == Path(model_path).parent.resolve():
        save_sharing(sub, Path(out_path), Path(model_path))  # every weight is one of model.onnx's
    else:
        onnx.save(sub, str(out_path))
    return renamed


# =========================================================================== running with every tensor
def _float_names(proto: "onnx.ModelProto") -> set[str]:
    """Every float tensor a node of ``proto`` produces (types from ONNX shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output) + list(g.input)}
    return {o for n in g.node for o in n.output if types.get(o) == onnx.TensorProto.FLOAT}


def run_exposed(proto: "onnx.ModelProto", feed: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Run ``proto`` in ONNX Runtime (no graph rewrites, one thread) with ``names`` made outputs;
    returns those tensors."""
    import onnx
    import onnxruntime as ort

    p = copy.deepcopy(proto)
    have = {o.name for o in p.graph.output}
    for n in names:
        if n not in have:
            p.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(p.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {k: v for k, v in feed.items()
                                            if k in {i.name for i in sess.get_inputs()}})))


# =========================================================================== matching by value
def _same(a: np.ndarray, b: np.ndarray, padded: bool) -> bool:
    """``b`` holds the numbers of ``a`` (float rounding aside); with ``padded``, ``b`` may be
    ``a`` with zero frames around it on the last axis (a cache concatenation of a padding), or
    the other way round."""
    if a.dtype != b.dtype or a.ndim != b.ndim:
        return False
    tol = 1e-4 * float(np.abs(a).max(initial=0.0)) + 1e-6
    if a.shape == b.shape:
        head = (..., slice(0, 16))  # most candidates differ at once: a cheap look first
        return bool(np.abs(a[head] - b[head]).max(initial=0.0) <= tol and np.abs(a - b).max(initial=0.0) <= tol)
    if not padded or a.ndim != 3 or a.shape[:2] != b.shape[:2]:
        return False
    long, short = (a, b) if a.shape[-1] > b.shape[-1] else (b, a)
    n = short.shape[-1]
    for off in range(long.shape[-1] - n + 1):
        if (not long[..., :off].any() and not long[..., off + n:].any()
                and np.abs(long[..., off:off + n] - short).max(initial=0.0) <= tol):
            return True
    return False


def _pairs(model: "onnx.ModelProto", step: "onnx.ModelProto", mv: dict[str, np.ndarray],
           sv: dict[str, np.ndarray], wanted: list[Any]) -> dict[str, list[Any]]:
    """{model node name: [step nodes computing the same numbers]} for each node of ``wanted``."""
    by_kind: dict[str, list[Any]] = {}
    for s in step.graph.node:
        if s.output and s.output[0] in sv:
            by_kind.setdefault(s.op_type, []).append(s)
    out: dict[str, list[Any]] = {}
    fp32_out = {n.name: n.output[0] for n in model.graph.node}  # the INT8 graph may rename an output
    for m in wanted:
        ref = mv.get(fp32_out[m.name])
        if ref is None:
            raise UnsupportedError(f"cannot stream the INT8 decoder: no float value for {m.name} ({m.op_type})")
        kinds = _COUNTERPART.get(m.op_type, (m.op_type,))
        found = [s for kind in kinds for s in by_kind.get(kind, [])
                 if _same(ref, sv[s.output[0]], padded=m.op_type in _MOVERS)]
        if not found:
            raise UnsupportedError(f"cannot stream the INT8 decoder: no node of the streaming decoder computes "
                                   f"what {m.name} ({m.op_type}) computes, so its quantization cannot be copied")
        out[m.name] = found
    return out


# =========================================================================== copying the quantization
class _Mirror:
    """Edits to the float step graph that give it ``model.onnx``'s INT8 decoder: initializers
    copied from the INT8 model (prefixed ``q8/``), Q/DQ pairs before or after step nodes, weight
    and bias DequantizeLinear nodes."""

    PREFIX = "q8/"

    def __init__(self, step: "onnx.ModelProto", int8: "onnx.ModelProto") -> None:
        from onnx import numpy_helper

        self.step, self.int8 = step, int8
        self.init8 = {t.name: t for t in int8.graph.initializer}
        self.value8 = lambda name: numpy_helper.to_array(self.init8[name])
        self.copied: set[str] = set()
        self.front: list[Any] = []  # weight DequantizeLinear nodes (initializer inputs only)
        self.weight_out: dict[str, str] = {}  # INT8 DQ node name -> its copy's output
        self.before: dict[int, list[Any]] = {}  # step node index -> nodes placed before it
        self.after: dict[int, list[Any]] = {}
        self.out_key: dict[str, tuple] = {}  # step tensor -> quantization it now carries
        self.count = 0

    def _copy_init(self, name: str) -> str:
        if name and name not in self.copied:
            t = copy.deepcopy(self.init8[name])
            t.name = self.PREFIX + name
            self.step.graph.initializer.append(t)
            self.copied.add(name)
        return self.PREFIX + name if name else ""

    def key(self, scale: str, zero: str) -> tuple:
        z = self.value8(zero)
        return (self.value8(scale).tobytes(), z.tobytes(), str(z.dtype))

    def _qdq(self, src: str, dst: str, scale: str, zero: str) -> list[Any]:
        from onnx import helper

        self.count += 1
        s, z = self._copy_init(scale), self._copy_init(zero)
        mid = f"{dst}__q8"
        return [helper.make_node("QuantizeLinear", [src, s, z], [mid], name=f"stream_q_{self.count}"),
                helper.make_node("DequantizeLinear", [mid, s, z], [dst], name=f"stream_dq_{self.count}")]

    def weight(self, dq: Any) -> str:
        """A copy of an INT8 model's weight/bias DequantizeLinear node; returns its output."""
        if dq.name not in self.weight_out:
            node = copy.deepcopy(dq)
            node.name = self.PREFIX + dq.name
            node.input[:] = [self._copy_init(i) for i in dq.input]
            node.output[:] = [self.PREFIX + dq.output[0]]
            self.front.append(node)
            self.weight_out[dq.name] = node.output[0]
        return self.weight_out[dq.name]

    def quantize_output(self, idx: int, node: Any, scale: str, zero: str) -> None:
        """Rename the step node's output and put Q/DQ after it under the old name."""
        name = node.output[0]
        k = self.key(scale, zero)
        if name in self.out_key:
            if self.out_key[name] != k:
                raise UnsupportedError(f"cannot stream the INT8 decoder: step tensor {name} would need two "
                                       "different quantizations")
            return
        raw = f"{name}__float"
        node.output[0] = raw
        self.after.setdefault(idx, []).extend(self._qdq(raw, name, scale, zero))
        self.out_key[name] = k

    def quantize_input(self, idx: int, node: Any, j: int, scale: str, zero: str) -> None:
        """Q/DQ between input ``j`` and the step node (unless it already carries this quantization)."""
        src = node.input[j]
        if self.out_key.get(src) == self.key(scale, zero):
            return
        dst = f"{src}__in{self.count + 1}"
        self.before.setdefault(idx, []).extend(self._qdq(src, dst, scale, zero))
        node.input[j] = dst
        self.out_key[dst] = self.key(scale, zero)

    def finish(self) -> None:
        nodes = list(self.step.graph.node)
        out = list(self.front)
        for i, n in enumerate(nodes):
            out += self.before.get(i, []) + [n] + self.after.get(i, [])
        del self.step.graph.node[:]
        self.step.graph.node.extend(out)
        used = {i for n in out for i in n.input}
        keep = [t for t in self.step.graph.initializer if t.name in used]
        del self.step.graph.initializer[:]
        self.step.graph.initializer.extend(keep)


def _quantized_decoder_nodes(fp32: "onnx.ModelProto", int8: "onnx.ModelProto") -> list[Any]:
    """INT8-model nodes of the decoder that read a DequantizeLinear or feed a QuantizeLinear."""
    prod, cons = producers(int8.graph), consumers(int8.graph)
    fp32_names = {n.name for n in fp32.graph.node}
    out = []
    for n in int8.graph.node:
        if not n.name.startswith("/dec/") or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        reads = any(getattr(prod.get(i), "op_type", "") == "DequantizeLinear" for i in n.input)
        feeds = any(c.op_type == "QuantizeLinear" for c in cons.get(n.output[0], []))
        if n.op_type in _MOVERS:
            reads = False  # moving quantized numbers needs nothing; only a quantized output does
        if (reads or feeds) and n.name not in fp32_names:
            raise UnsupportedError(f"cannot stream the INT8 decoder: {n.name} is not a node of the float export")
        if reads or feeds:
            out.append(n)
    return out


def _same_grid_mover(m: Any, int8: "onnx.ModelProto") -> bool:
    """``m`` only moves numbers that were quantized with the very scale and zero point its output
    is quantized with (a transpose of a quantized tensor calibrates to the same range): its
    quantization changes nothing, so the step graph needs no counterpart for it."""
    if m.op_type not in _MOVERS:
        return False
    from onnx import numpy_helper

    prod, cons = producers(int8.graph), consumers(int8.graph)
    init = {t.name: t for t in int8.graph.initializer}
    dq = prod.get(m.input[0])
    q = next((c for c in cons.get(m.output[0], []) if c.op_type == "QuantizeLinear"), None)
    if dq is None or dq.op_type != "DequantizeLinear" or q is None:
        return False
    value = lambda name: numpy_helper.to_array(init[name]) if name in init else None  # noqa: E731
    return all(value(a) is not None and value(b) is not None and np.array_equal(value(a), value(b))
               and value(a).dtype == value(b).dtype for a, b in zip(dq.input[1:3], q.input[1:3]))


def mirror_quantization(step: "onnx.ModelProto", fp32: "onnx.ModelProto", int8: "onnx.ModelProto",
                        feed: dict[str, np.ndarray], states: list[np.ndarray]) -> "onnx.ModelProto":
    """The float step graph ``step`` with the INT8 decoder of ``int8`` (``fp32`` quantized).

    ``feed``: one sentence's inputs of ``model.onnx`` (zero noise), run through ``fp32`` and, in
    one call, through ``step`` to pair nodes by value (see the module docstring).
    """
    z_name, g_name = decoder_inputs(fp32)
    wanted = _quantized_decoder_nodes(fp32, int8)
    model_names = sorted(({o for n in fp32.graph.node if n.name.startswith("/dec/") for o in n.output}
                          & _float_names(fp32)) | {z_name} | ({g_name} if g_name else set()))
    mv = run_exposed(fp32, feed, model_names)
    fp32_out = {n.name: n.output[0] for n in fp32.graph.node}
    # not the shape reads of a quantized tensor, nor a reordering requantized as it was
    wanted = [m for m in wanted if fp32_out[m.name] in mv and not _same_grid_mover(m, int8)]
    step_feed = {"z": mv[z_name], "flush": np.zeros(1, np.int64),
                 **{f"state_{i}": s for i, s in enumerate(states)}}
    if g_name and "g" in {i.name for i in step.graph.input}:
        step_feed["g"] = mv[g_name]
    sv = run_exposed(step, step_feed, sorted(_float_names(step)))
    sv.update(step_feed)
    pairs = _pairs(fp32, step, mv, sv, wanted)
    out = copy.deepcopy(step)
    index = {n.name: i for i, n in enumerate(step.graph.node)}
    nodes = list(out.graph.node)
    mirror = _Mirror(out, int8)
    prod8, cons8 = producers(int8.graph), consumers(int8.graph)
    for m in wanted:  # outputs first: inputs then see what each tensor already carries
        q = next((c for c in cons8.get(m.output[0], []) if c.op_type == "QuantizeLinear"), None)
        if q is not None:
            for s in pairs[m.name]:
                mirror.quantize_output(index[s.name], nodes[index[s.name]], q.input[1], q.input[2])
    for m in wanted:
        for s in pairs[m.name]:
            if m.op_type not in _MOVERS and s.op_type == m.op_type:  # a mover's inputs carry their own
                _mirror_inputs(mirror, m, nodes[index[s.name]], index[s.name], prod8, mv, sv, step)
    mirror.finish()
    log.info("step graph: %d quantized decoder nodes of model.onnx copied onto %d step nodes",
             len(wanted), sum(len(v) for v in pairs.values()))
    return out


def _mirror_inputs(mirror: _Mirror, m: Any, s: Any, idx: int, prod8: dict, mv: dict, sv: dict,
                   step: "onnx.ModelProto") -> None:
    """Weights, biases and activation quantization of ``m``'s inputs onto step node ``s``."""
    orig = step.graph.node[idx]  # the node as exported: input names before this pass renamed any
    for i, name in enumerate(m.input):
        dq = prod8.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or i >= len(s.input):
            continue
        if dq.input[0] in mirror.init8:  # an INT8 weight or bias
            s.input[i] = mirror.weight(dq)
            continue
        j = i
        if m.op_type in ("Add", "Mul") and len(s.input) == len(m.input):
            ref = mv.get(_float_source(name, prod8))
            hits = [k for k, t in enumerate(orig.input) if ref is not None and t in sv and _same(ref, sv[t], False)]
            j = hits[0] if len(hits) == 1 else i
        mirror.quantize_input(idx, s, j, dq.input[1], dq.input[2])


def float_convs_like_model(step: "onnx.ModelProto", int8: "onnx.ModelProto") -> int:
    """Float step convolutions whose ``model.onnx`` counterpart runs as a 2-D convolution
    (weights ``<name>_2d`` [O, I, 1, k]: :func:`vitsq.quantize.ort.float_convs_as_2d`) become the
    same 2-D convolution, in place: ONNX Runtime then picks the same kernel and summation order
    for both. Matched by weight name (both graphs name weights after the model's parameters).
    Returns the number rewritten."""
    from onnx import helper, numpy_helper

    init8 = {t.name: t for t in int8.graph.initializer}
    as_2d = {n.input[1][: -len("_2d")]: n for n in int8.graph.node
             if n.op_type == "Conv" and n.input[1].endswith("_2d") and n.input[1] in init8}
    inits = {t.name for t in step.graph.initializer}
    axes = "stream_conv2d_axis"
    nodes, done = [], 0
    for node in step.graph.node:
        model = as_2d.get(node.input[1]) if node.op_type == "Conv" and node.input[1] in inits else None
        pads = next((list(a.ints) for a in node.attribute if a.name == "pads"), [0, 0])
        if model is None or any(pads):
            nodes.append(node)
            continue
        w2 = copy.deepcopy(init8[model.input[1]])
        if w2.name not in inits:
            step.graph.initializer.append(w2)
            inits.add(w2.name)
        attrs = {a.name: helper.get_attribute_value(a) for a in model.attribute if a.name != "pads"}
        x4, y4 = f"{node.output[0]}__2d_in", f"{node.output[0]}__2d"
        nodes += [helper.make_node("Unsqueeze", [node.input[0], axes], [x4], name=f"{node.name}_to_2d"),
                  helper.make_node("Conv", [x4, w2.name, *node.input[2:]], [y4], name=node.name, **attrs),
                  helper.make_node("Squeeze", [y4, axes], [node.output[0]], name=f"{node.name}_to_1d")]
        done += 1
    if done:
        step.graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axes))
        del step.graph.node[:]
        step.graph.node.extend(nodes)
        _prune(step)
    return done


# =========================================================================== caches kept in INT8
class _Graph:
    """Producer/consumer maps of a graph, rebuilt on demand."""

    def __init__(self, proto: "onnx.ModelProto") -> None:
        from onnx import numpy_helper

        self.proto = proto
        self.prod = producers(proto.graph)
        self.cons = consumers(proto.graph)
        self.init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        self.outputs = {o.name: i for i, o in enumerate(proto.graph.output)}
        self.inputs = {o.name: i for i, o in enumerate(proto.graph.input)}

    def key(self, q: Any) -> tuple:
        z = self.init[q.input[2]]
        return (self.init[q.input[1]].tobytes(), z.tobytes(), str(z.dtype))

    def zero_const(self, name: str) -> bool:
        from onnx import numpy_helper

        node = self.prod.get(name)
        if node is None or node.op_type != "ConstantOfShape":
            return False
        value = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1, np.float32))
        return value.dtype == np.float32 and not value.any()


def _concat_plan(g: _Graph, c: Any, state_of: dict[str, int], out_state: dict[str, int]) -> dict | None:
    """How concatenation ``c`` can run on INT8 numbers, or None: every use of its float output
    goes through one quantization (directly, or through a Slice), except Slices that are the
    next states of the states it reads (they then carry the INT8 numbers instead)."""
    key, quants, shapes, slices, state_slices = None, [], [], [], []

    def unify(q: Any) -> bool:
        nonlocal key
        k = g.key(q)
        key = key or k
        return k == key

    for use in g.cons.get(c.output[0], []):
        if use.op_type == "QuantizeLinear" and unify(use):
            quants.append(use)
            for dq in g.cons.get(use.output[0], []):  # the quantized copy's own states
                for sl in g.cons.get(dq.output[0], []) if dq.op_type == "DequantizeLinear" else []:
                    if sl.op_type == "Slice" and sl.output[0] in out_state:
                        state_slices.append(sl)
        elif use.op_type == "Shape":
            shapes.append(use)
        elif use.op_type == "Slice" and use.input[0] == c.output[0]:
            if use.output[0] in out_state:
                state_slices.append(use)
            elif all(u.op_type == "QuantizeLinear" and unify(u) for u in g.cons.get(use.output[0], [])):
                slices.append(use)
            else:
                return None
        else:
            return None
    if key is None or not (quants or slices):
        return None
    read = {state_of[i] for i in c.input if i in state_of}
    written = {out_state[s.output[0]] for s in state_slices}
    if read != written or any(len(g.cons[i]) != 1 for i in c.input if i in state_of):
        return None
    return {"key": key, "quants": quants, "shapes": shapes, "slices": slices, "state_slices": state_slices,
            "q": (quants or [q for s in slices for q in g.cons[s.output[0]]])[0]}


def int8_caches(proto: "onnx.ModelProto", states: list[dict]) -> int:
    """Rewrite, in place, the cache concatenations of a quantized step graph to run on INT8
    numbers: ``Q(concat(cache, x, zeros))`` -> ``concat(cache8, Q(x), zero_point)``, the
    cache states then INT8 (``states[i]`` gets its ``dtype`` and ``fill``). Same numbers
    (quantization is elementwise), a quarter of the bytes moved, and no float round trip
    between INT8 layers. Returns the number of concatenations rewritten."""
    from onnx import helper, numpy_helper

    g = _Graph(proto)
    k = len(states)
    state_of = {f"state_{i}": i for i in range(k)}
    out_state = {f"new_state_{i}": i for i in range(k)}
    done, new_nodes, drop, made = 0, {}, set(), {}
    for c in [n for n in proto.graph.node if n.op_type == "Concat"]:
        plan = _concat_plan(g, c, state_of, out_state)
        if plan is None:
            continue
        q = plan["q"]
        zp = g.init[q.input[2]]
        elem = helper.np_dtype_to_tensor_dtype(zp.dtype)
        before, ins = [], []
        for t in c.input:
            if t in state_of:
                i = state_of[t]
                proto.graph.input[g.inputs[t]].type.tensor_type.elem_type = elem
                states[i].update(dtype=str(zp.dtype), fill=int(zp.reshape(-1)[0]))
                ins.append(t)
            elif (t in g.prod and g.prod[t].op_type == "DequantizeLinear" and g.prod[t].input[0] not in g.init
                  and g.key(g.prod[t]) == plan["key"]):
                ins.append(g.prod[t].input[0])  # DQ then Q of the same scale: the INT8 numbers as they are
            else:
                name = made.get((t, plan["key"]))
                if name is None:  # one INT8 copy of a tensor several caches read
                    name = made[(t, plan["key"])] = f"{t}__int8_{len(made)}"
                    if g.zero_const(t):
                        fill = numpy_helper.from_array(zp.reshape(1), name="")
                        before.append(helper.make_node("ConstantOfShape", [g.prod[t].input[0]], [name],
                                                       name=f"{name}_fill", value=fill))
                    else:
                        before.append(helper.make_node("QuantizeLinear", [t, q.input[1], q.input[2]], [name],
                                                       name=f"{name}_q"))
                ins.append(name)
        out8 = f"{c.output[0]}__int8"
        before.append(helper.make_node("Concat", ins, [out8], name=f"{c.name}_int8", axis=c.attribute[0].i))
        new_nodes[c.name] = before
        drop.add(c.name)
        for use in plan["quants"]:  # Q(concat) is the INT8 concat itself
            _identity(use, out8)
        for use in plan["shapes"] + plan["slices"] + plan["state_slices"]:
            use.input[0] = out8
        for sl in plan["slices"]:
            for use in g.cons[sl.output[0]]:
                _identity(use, sl.output[0])
        for sl in plan["state_slices"]:
            proto.graph.output[g.outputs[sl.output[0]]].type.tensor_type.elem_type = elem
        done += 1
    nodes = []
    for n in proto.graph.node:
        nodes += new_nodes.get(n.name, []) + ([] if n.name in drop else [n])
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    del proto.graph.value_info[:]  # types changed; ONNX Runtime infers them again
    _shape_reads(proto)
    _prune(proto)
    return done


def _shape_reads(proto: "onnx.ModelProto") -> None:
    """A Shape of a dequantized tensor reads the INT8 tensor (same shape): a DequantizeLinear
    that only fed sizes is then not run at all. (Not further back: a float tensor read by
    anything but its QuantizeLinear keeps ONNX Runtime from fusing its producer into INT8.)"""
    prod = producers(proto.graph)
    for n in proto.graph.node:
        src = prod.get(n.input[0]) if n.op_type == "Shape" else None
        if src is not None and src.op_type == "DequantizeLinear":
            n.input[0] = src.input[0]


def _identity(node: Any, src: str) -> None:
    """Turn ``node`` into ``Identity(src)`` keeping its output name."""
    out = node.output[0]
    node.op_type = "Identity"
    del node.input[:]
    node.input.append(src)
    del node.attribute[:]
    del node.output[:]
    node.output.append(out)


def _prune(proto: "onnx.ModelProto") -> None:
    """Drop nodes and initializers nothing uses (graph outputs are used)."""
    needed = {o.name for o in proto.graph.output}
    keep = []
    for n in reversed(list(proto.graph.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(keep))
    inits = [t for t in proto.graph.initializer if t.name in needed]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inits)


# =========================================================================== the pair, written and checked
def sample_feed(proto: "onnx.ModelProto", config: Any) -> dict[str, np.ndarray]:
    """One sentence of ``model.onnx`` inputs (seeded random symbols, zero noise) for matching and
    checking the pair."""
    ids = np.random.default_rng(0).integers(1, config.n_vocab, size=(1, 48), dtype=np.int64)  # [1, T]
    feed = {"input": ids, "input_lengths": np.array([48], np.int64), "scales": np.array([0.0, 1.0, 0.0], np.float32)}
    if "sid" in {i.name for i in proto.graph.input}:
        feed["sid"] = np.zeros(1, np.int64)
    return feed


def _session(path: str | Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_pair(model_onnx: str | Path, latent_path: str | Path, step_path: str | Path, spec: dict,
               feed: dict[str, np.ndarray]) -> dict[str, float]:
    """Stream one sentence through the pair at several chunk sizes and compare with ``model.onnx``
    (zero noise): the largest difference relative to the peak, and in 16-bit samples."""
    from vitsq.streaming import ChunkSchedule

    model, latent, step = _session(model_onnx), _session(latent_path), _session(step_path)
    ref = model.run(["output"], feed)[0].reshape(-1)
    worst = {"max_rel": 0.0, "max_lsb": 0}
    for sched in ([1], [3, 5, 7]):  # 1-frame chunks, odd sizes; each call after the first emits
        plan = ChunkSchedule.build(sched).plan
        got = np.concatenate([a for a, _ in stream_sentence(latent, step, spec, feed, plan)])
        if got.shape != ref.shape:
            raise UnsupportedError(f"the streaming graphs give {got.size} samples where model.onnx gives {ref.size}")
        rel = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))
        lsb = int(np.abs(_int16(got).astype(np.int32) - _int16(ref)).max())
        worst = {"max_rel": max(worst["max_rel"], rel), "max_lsb": max(worst["max_lsb"], lsb)}
    return worst


def _int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


# =========================================================================== shared weights
def share_weights(proto: "onnx.ModelProto", model_bytes: bytes, location: str = MODEL_FILE) -> int:
    """Turn every initializer of ``proto`` (loaded with its data) whose bytes occur in
    ``model_bytes`` (the content of the file ``location``, beside ``proto``'s file) into ONNX
    external data at that offset. The graph then reads the weights ``model.onnx`` holds instead
    of a copy; the tensor values are unchanged (the same bytes). Returns the bytes shared."""
    import onnx
    from onnx.external_data_helper import set_external_data

    shared = 0
    for t in proto.graph.initializer:
        raw = t.raw_data
        if t.data_location == onnx.TensorProto.EXTERNAL or len(raw) < SHARED_MIN_BYTES:
            continue
        offset = model_bytes.find(raw)
        if offset < 0:  # a weight model.onnx does not hold (the step graph's own layout)
            continue
        del t.external_data[:]
        set_external_data(t, location=location, offset=offset, length=len(raw))
        t.data_location = onnx.TensorProto.EXTERNAL
        t.ClearField("raw_data")
        shared += len(raw)
    return shared


def save_sharing(proto: "onnx.ModelProto", path: Path, model_path: Path) -> int:
    """Save ``proto`` at ``path`` with its weights shared with ``model_path`` (same folder);
    returns the bytes shared."""
    import onnx

    if Path(model_path).parent.resolve() != Path(path).parent.resolve():
        raise ValueError(f"{path} and {model_path} must share a folder (external data is found beside the graph)")
    shared = share_weights(proto, Path(model_path).read_bytes(), Path(model_path).name)
    onnx.save(proto, str(path))  # external tensors stay references: onnx writes no data for them
    return shared


def write_streaming_pair(model: nn.Module, model_onnx: str | Path, out_dir: str | Path, *,
                         float_onnx: str | Path | None = None) -> dict[str, Any]:
    """Write ``stream_latent.onnx`` and ``stream_step.onnx`` for ``model_onnx`` into ``out_dir``;
    returns the manifest record (file names, look-ahead, states, the exactness check).

    ``model``: the PyTorch module ``model_onnx`` was exported from (with polyphase upsampling if
    it was). ``float_onnx``: for a quantized ``model_onnx`` (ort-static), the float graph it was
    quantized from; the step graph then gets its INT8 decoder (:func:`mirror_quantization`).
    Raises UnsupportedError when the pair cannot reproduce ``model_onnx`` (streamed audio must
    equal it within 1e-5 of the peak in float, within 1 LSB of 16-bit audio in INT8).
    """
    import tempfile

    import onnx

    out_dir = Path(out_dir)
    if Path(model_onnx).parent.resolve() != out_dir.resolve():
        raise ValueError(f"the streaming graphs share {Path(model_onnx).name}'s weights, so they go in its folder, "
                         f"not {out_dir}")
    extract_latent(model_onnx, out_dir / LATENT_FILE)
    proto_model = onnx.load(str(model_onnx))
    feed = sample_feed(proto_model, model.config)
    with tempfile.TemporaryDirectory(prefix="vitsq-stream-") as tmp:
        spec = export_step_graph(model, Path(tmp) / "step.onnx")
        step = onnx.load(str(Path(tmp) / "step.onnx"))
    spec["states"] = [{"shape": list(s), "dtype": "float32", "fill": 0} for s in spec["states"]]
    spec["quantized"] = float_onnx is not None
    if float_onnx is not None:
        step = mirror_quantization(step, onnx.load(str(float_onnx)), proto_model, feed, initial_states(spec))
        int8_caches(step, spec["states"])
        float_convs_like_model(step, proto_model)
    _set_meta(step, {META_KEY: json.dumps(spec)})
    step.producer_name = "vitsq"
    save_sharing(step, out_dir / STEP_FILE, Path(model_onnx))
    check = check_pair(model_onnx, out_dir / LATENT_FILE, out_dir / STEP_FILE, spec, feed)
    ok = check["max_lsb"] <= 1 if float_onnx is not None else check["max_rel"] <= 1e-5
    if not ok:
        raise UnsupportedError(f"the streaming graphs do not reproduce {Path(model_onnx).name} (largest difference "
                               f"{check['max_rel']:.2e} of the peak, {check['max_lsb']} LSB of 16-bit audio)")
    log.info("streaming pair written to %s (check: %.1e of peak, %d LSB)", out_dir, check["max_rel"], check["max_lsb"])
    return {**spec, "latent_file": LATENT_FILE, "step_file": STEP_FILE, "check": check}


def streaming_files(record: dict[str, Any] | None) -> list[str]:
    """The file names a streaming record adds to an artifact (none without a record)."""
    return [record["latent_file"], record["step_file"]] if record else []


def copy_streaming(stream: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Copy an artifact's streaming graphs (``stream`` from :func:`read_streaming`) into
    ``out_dir``; returns the record for its manifest."""
    import onnx

    record = {k: v for k, v in stream.items() if k not in ("latent_path", "step_path", "latent", "step")}
    model = Path(out_dir) / MODEL_FILE
    if not model.is_file():
        raise ValueError(f"copy {MODEL_FILE} into {out_dir} before its streaming graphs (they share its weights)")
    for src, name in ((stream["latent_path"], record["latent_file"]), (stream["step_path"], record["step_file"])):
        # loaded with the data it shares with the source model.onnx, then re-pointed at this
        # folder's model.onnx (the same weights; offsets differ if its metadata changed)
        save_sharing(onnx.load(str(src)), Path(out_dir) / name, model)
    return record
