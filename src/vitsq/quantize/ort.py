"""ONNX Runtime INT8 recipes: ``ort-static`` (QDQ, calibrated on real inputs) and ``ort-dynamic``.

Both start from our FP32 export (:func:`vitsq.export.onnx.export_onnx`), so the quantized graph
keeps the Piper/Vosk runtime contract and loads in ``piper-tts`` / ``vosk-tts`` unchanged.

``ort-static`` is a hybrid, decided by measuring on the joe voice (docs/quantization.md):

* Nodes under :attr:`OrtStaticRecipe.static_prefixes` (default the waveform decoder ``/dec/``,
  where most of the compute is; the VITS preset adds the flow and the text encoder) are quantized
  by ONNX Runtime's ``quantize_static`` in QDQ format, per-channel weights, activation ranges from
  a :class:`CalibrationDataReader` that feeds real model inputs (phoneme ids of the shipped
  calibration split, several speakers, the model's inference scales). ONNX Runtime fuses these
  into ``QLinearConv`` / ``QLinearAdd`` / ``QLinearLeakyRelu`` -- this is what makes it faster.
* ``ConvTranspose`` has no INT8 kernel in the CPU provider. With ``polyphase_upsampling`` (on by
  default) the decoder's upsampling layers are exported as ordinary convolutions computing the
  same function (:mod:`vitsq.models.polyphase`), which then run as ``QLinearConv``.
* Every other Conv/ConvTranspose weight (duration predictor, and whatever is outside the static
  scope) is stored weight-only INT8, per output channel, symmetric, behind a
  ``DequantizeLinear``: the file shrinks like a fully quantized one, activations stay float.
  Judge these variants by speaker similarity and WER, not SNR: a changed integer duration
  misaligns the whole clip.

``ort-dynamic`` is ``quantize_dynamic`` (INT8 weights, activations quantized on the fly), what
sherpa-onnx ships for Piper voices: the baseline.

Artifacts are folders with ``model.onnx`` (with our ``metadata_props``, recipe included) and
``vitsq.json`` of kind ``onnx``; :func:`vitsq.export.onnx.load_onnx_artifact` loads them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from vitsq.errors import InputError, UnsupportedError
from vitsq.onnxgraph import consumers, producers
from vitsq.quantize.recipes import OrtDynamicRecipe, OrtStaticRecipe

log = logging.getLogger(__name__)

KIND = "onnx"
MODEL_FILE = "model.onnx"

#: Op types quantized statically (weights + activations) inside the static scope when the recipe
#: does not name them: quantized together so ONNX Runtime fuses them into QLinear ops
#: (Conv alone loses its gain to layout transposes and Q/DQ pairs; docs/quantization.md).
DEFAULT_STATIC_OP_TYPES: tuple[str, ...] = ("Conv", "LeakyRelu", "Add")
#: Where static (activation) quantization applies when the recipe does not say.
DEFAULT_STATIC_PREFIXES: tuple[str, ...] = ("/dec/",)
#: Op types whose float weights get weight-only INT8 outside the static scope.
WEIGHT_ONLY_OP_TYPES = {"Conv": 0, "ConvTranspose": 1}  # op -> weight axis of the output channel


# =========================================================================== calibration reader
def _calibration_reader(calibration: Any, with_sid: bool):
    """A ``CalibrationDataReader`` feeding each calibration item as one batch-1 graph input."""
    from onnxruntime.quantization import CalibrationDataReader

    scales = np.array(calibration.scales, dtype=np.float32)

    items = list(calibration.items)

    class _Reader(CalibrationDataReader):
        # __len__/set_range let quantize_static feed one item per collect_data call
        # ("CalibStridedMinMax": 1): outputs of different lengths are never stacked, which the
        # histogram (entropy/percentile) collectors cannot do, and memory stays bounded.
        def __init__(self) -> None:
            self._range = (0, len(items))
            self._pos = 0

        def __len__(self) -> int:
            return len(items)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._range = (start_index, min(end_index, len(items)))
            self._pos = start_index

        def get_next(self):
            if self._pos >= self._range[1]:
                return None
            item = items[self._pos]
            self._pos += 1
            feed = {"input": np.array([item.ids], dtype=np.int64),  # [1, T]
                    "input_lengths": np.array([len(item.ids)], dtype=np.int64),
                    "scales": scales}
            if with_sid:
                feed["sid"] = np.array([item.speaker], dtype=np.int64)
            return feed

        def rewind(self) -> None:
            self._pos = self._range[0]

    return _Reader()


# =========================================================================== weight-only pass
def weight_only_int8(model: Any, skip_prefixes: Sequence[str] = ()) -> list[str]:
    """Store float Conv/ConvTranspose weights as per-channel symmetric INT8 + DequantizeLinear.

    In place on an ``onnx.ModelProto``. Nodes whose name starts with one of ``skip_prefixes``
    are left alone; weights already behind a DequantizeLinear (static QDQ) are not initializers
    of the conv and so are skipped naturally. Returns the names of the converted nodes.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    users: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    converted: list[str] = []
    new_nodes = []
    for node in graph.node:
        axis = WEIGHT_ONLY_OP_TYPES.get(node.op_type)
        if (axis is None or len(node.input) < 2 or node.input[1] not in inits
                or any(node.name.startswith(p) for p in skip_prefixes) or users.get(node.input[1], 0) != 1):
            continue
        wname = node.input[1]
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        if w.ndim < 2 or w.size < 256:
            continue
        red = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.abs(w).max(axis=red) / 127.0  # [C_out]
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        graph.initializer.remove(inits[wname])
        graph.initializer.extend([
            numpy_helper.from_array(q, wname + "_int8"),
            numpy_helper.from_array(scale, wname + "_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), wname + "_zero_point"),
        ])
        new_nodes.append(helper.make_node("DequantizeLinear", [wname + "_int8", wname + "_scale", wname + "_zero_point"],
                                          [wname], name=node.name + "_weight_dq", axis=axis))
        converted.append(node.name)
    # DequantizeLinear nodes first: the graph stays topologically sorted
    if new_nodes:
        old = list(graph.node)
        del graph.node[:]
        graph.node.extend(new_nodes + old)
    return converted


# =========================================================================== float islands as 2-D
#: Where float convolutions run as 2-D (:func:`float_convs_as_2d`): the decoder, and with
#: ``text_encoder_convs_2d`` a float text encoder (:data:`TEXT_ENCODER_PREFIXES`). The duration
#: predictor keeps the FP32 graph's kernels: 2-D there measured no faster.
FLOAT_CONVS_2D_PREFIXES: tuple[str, ...] = ("/dec/",)


def float_convs_as_2d(model: Any, prefixes: Sequence[str] = FLOAT_CONVS_2D_PREFIXES) -> list[str]:
    """Run float 1-D ``Conv`` nodes under ``prefixes`` as 2-D convolutions over [B, C, 1, T].

    In place on an ``onnx.ModelProto``; same values up to float summation order (~3e-7 of the
    peak on joe). Why: ONNX Runtime's CPU provider runs a float 1-D convolution as im2col + SGEMM
    but gives 2-D ones to its NCHWc transformer (blocked layout, direct convolution): on joe's
    float last decoder stage 1.15x faster end to end (docs/quantization.md). Only convolutions
    inside a float island are rewritten (input not from a ``DequantizeLinear``, output not into a
    ``QuantizeLinear``), so every INT8 pattern ONNX Runtime fuses stays as it was. Returns the
    names of the rewritten nodes.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    read_by: dict[str, set[str]] = {}
    for n in graph.node:
        for i in n.input:
            read_by.setdefault(i, set()).add(n.op_type)
    axes = "vitsq_conv2d_axis"
    nodes, done, replaced = [], [], set()
    for node in graph.node:
        w = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if (w is None or len(w.dims) != 3 or w.data_type != TensorProto.FLOAT
                or not any(node.name.startswith(p) for p in prefixes)
                or made_by.get(node.input[0]) == "DequantizeLinear" or "QuantizeLinear" in read_by.get(node.output[0], ())):
            nodes.append(node)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        w2 = numpy_helper.from_array(numpy_helper.to_array(w)[:, :, None, :], w.name + "_2d")  # [O, I, 1, k]
        graph.initializer.append(w2)
        pads = a.get("pads", [0, 0])
        x4, y4 = node.output[0] + "_4d_in", node.output[0] + "_4d"
        nodes += [helper.make_node("Unsqueeze", [node.input[0], axes], [x4], name=node.name + "_to_2d"),
                  helper.make_node("Conv", [x4, w2.name, *node.input[2:]], [y4], name=node.name,
                                   kernel_shape=[1, w.dims[2]], dilations=[1, a.get("dilations", [1])[0]],
                                   strides=[1, a.get("strides", [1])[0]], group=a.get("group", 1),
                                   pads=[0, pads[0], 0, pads[1]]),
                  helper.make_node("Squeeze", [y4, axes], [node.output[0]], name=node.name + "_to_1d")]
        done.append(node.name)
        replaced.add(w.name)
    if done:
        if axes not in inits:  # a second call (another prefix) reuses it
            graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axes))
        del graph.node[:]
        graph.node.extend(nodes)
        still_read = _names_read(graph)
        for t in [t for t in graph.initializer if t.name in replaced and t.name not in still_read]:
            graph.initializer.remove(t)
    return done


#: The text encoder's nodes. The faithful presets keep it FP32 (integer durations equal FP32's);
#: as 2-D its convolutions run about 5 % faster end to end on joe, in another FP32 summation
#: order: one duration of joe's 235 evaluation sentences moves by a frame (docs/quantization.md;
#: durations guarded by tests/test_int8_faithful.py).
TEXT_ENCODER_PREFIXES: tuple[str, ...] = ("/enc_p/",)
#: Element-wise ops the float tail runs on [B, C, 1, T] (:func:`float_tail_as_4d`).
_TAIL_4D_OPS = ("LeakyRelu", "Add", "Div", "Tanh")


def _feeding_quantize(graph: Any, producer: dict[str, Any]) -> set[str]:
    """Names of the nodes from which a ``QuantizeLinear`` is reachable (themselves included)."""
    found, stack = set(), [n for n in graph.node if n.op_type == "QuantizeLinear"]
    while stack:
        n = stack.pop()
        if n.name not in found:
            found.add(n.name)
            stack.extend(producer[i] for i in n.input if i in producer)
    return found


def float_tail_as_4d(model: Any, prefixes: Sequence[str] = FLOAT_CONVS_2D_PREFIXES) -> int:
    """Keep the float tail of the decoder in ONNX Runtime's blocked (NCHWc) layout end to end.

    In place on an ``onnx.ModelProto`` already passed through :func:`float_convs_as_2d`. The tail
    is every node under ``prefixes`` from which no ``QuantizeLinear`` is reachable: nothing after
    it is INT8, so a float rounding difference here can never move an INT8 value. There the
    Unsqueeze/Squeeze pairs around the 2-D convolutions go, and ``LeakyRelu``, ``Add``, ``Div``
    by a constant and ``Tanh`` run on [B, C, 1, T] too. Why: ONNX Runtime's NCHWc transformer
    converts convolutions, additions and ReLU/Tanh, but not a standalone ``LeakyRelu`` or
    ``Div``; each of those, and each 3-D op between convolutions, costs a layout reorder out and
    back in. So a ``LeakyRelu`` that does not follow a single-use convolution gets a depthwise
    1x1 convolution with weight 1 in front (ONNX Runtime fuses it as that convolution's
    activation: same values), a ``Div`` by a constant c becomes a depthwise 1x1 convolution with
    weight 1/c (within an ulp), and a tensor entering the tail passes one such identity
    convolution. 3-D tensors still read elsewhere (the graph output) get their Squeeze back.
    Same values up to float summation order. Returns the number of nodes moved to 4-D.
    """
    return _Tail4D(model, prefixes).run()


class _Tail4D:
    """One pass of :func:`float_tail_as_4d` over a graph."""

    AXES = "vitsq_conv2d_axis"  # as float_convs_as_2d names it

    def __init__(self, model: Any, prefixes: Sequence[str]) -> None:
        from onnx import numpy_helper

        self.model, self.graph, self.prefixes = model, model.graph, tuple(prefixes)
        self.nodes = list(self.graph.node)
        self.producer, self.consumers = producers(self.graph), consumers(self.graph)
        self.inits = {t.name: t for t in self.graph.initializer}
        self.scalars = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer if int(np.prod(t.dims)) == 1}
        self.scalars.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in self.nodes
                             if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
        self.feeds_int8 = _feeding_quantize(self.graph, self.producer)  # not part of the tail
        self.channels: dict[str, int] = {}  # 3-D tensor -> channels
        self.four: dict[str, str] = {}  # 3-D tensor -> its [B, C, 1, T] counterpart
        self.made_by: dict[str, Any] = {}  # 4-D tensor -> the new node making it
        self.virtual: set[str] = set()  # 3-D tensors no longer computed (restored where still read)
        self.squeezes: dict[str, Any] = {}  # their original Squeeze nodes
        self.out: list[Any] = []

    def channels_of(self, t: str, depth: int = 0) -> int | None:
        """Channels of 3-D tensor ``t``, found from a 2-D convolution reading it (maybe through
        element-wise tail ops)."""
        if t in self.channels or depth > 8:
            return self.channels.get(t)
        for c in self.consumers.get(t, []):
            found = None
            if c.op_type == "Unsqueeze" and c.name.endswith("_to_2d"):
                conv = next((k for k in self.consumers.get(c.output[0], []) if k.op_type == "Conv"), None)
                if conv is not None and conv.input[1] in self.inits:
                    found = self.inits[conv.input[1]].dims[1] * _attr(conv, "group", 1)
            elif c.op_type in _TAIL_4D_OPS:
                found = self.channels_of(c.output[0], depth + 1)
            if found:
                self.channels[t] = found
                return found
        return None

    def depthwise(self, x4: str, y: str, c: int, weight: float, name: str) -> Any:
        """A depthwise 1x1 convolution ``y = weight * x4`` (ONNX Runtime runs it blocked)."""
        from onnx import helper, numpy_helper

        self.graph.initializer.append(numpy_helper.from_array(np.full((c, 1, 1, 1), weight, np.float32), f"{name}_w"))
        node = helper.make_node("Conv", [x4, f"{name}_w"], [y], name=name, group=c, kernel_shape=[1, 1])
        self.out.append(node)
        self.made_by[y] = node
        return node

    def as_4d(self, t: str) -> str:
        from onnx import helper

        if t not in self.four:  # a tensor entering the tail: one reshape + identity convolution
            self.out.append(helper.make_node("Unsqueeze", [t, self.AXES], [f"{t}__4d_in"], name=f"{t}__to_4d"))
            self.four[t] = f"{t}__4d"
            self.depthwise(f"{t}__4d_in", self.four[t], self.channels[t], 1.0, f"{t}__enter_nchwc")
        return self.four[t]

    def run(self) -> int:
        moved = 0
        for n in self.nodes:
            if not (n.name.startswith(self.prefixes) and n.name not in self.feeds_int8):
                self.out.append(n)
            elif n.op_type == "Unsqueeze" and n.name.endswith("_to_2d"):
                self.unsqueeze(n)
            elif n.op_type == "Squeeze" and n.name.endswith("_to_1d"):
                self.squeeze(n)
            elif self.element_wise(n):
                self.four[n.output[0]] = f"{n.output[0]}__4d"
                self.virtual.add(n.output[0])
                self.channels.setdefault(n.output[0], max(self.channels.get(i, 0) for i in n.input))
                moved += 1
            else:
                self.out.append(n)
        self.finish()
        return moved

    def unsqueeze(self, n: Any) -> None:
        if n.input[0] in self.four:  # already 4-D: its readers read that directly
            for c in self.consumers.get(n.output[0], []):
                c.input[:] = [self.four[n.input[0]] if i == n.output[0] else i for i in c.input]
        else:
            self.four[n.input[0]] = n.output[0]
            self.out.append(n)

    def squeeze(self, n: Any) -> None:
        self.four[n.output[0]] = n.input[0]
        self.virtual.add(n.output[0])
        self.squeezes[n.output[0]] = n  # put back as it was if its 3-D output is still read
        conv = self.producer.get(n.input[0])
        if conv is not None and conv.op_type == "Conv" and conv.input[1] in self.inits:
            self.channels[n.output[0]] = self.inits[conv.input[1]].dims[0]

    def element_wise(self, n: Any) -> bool:
        """Emit ``n`` on [B, C, 1, T] (output ``<name>__4d``); False when it stays as it is."""
        from onnx import helper

        op, x, y = n.op_type, (n.input or [""])[0], f"{n.output[0]}__4d"
        if op == "LeakyRelu" and self.channels_of(x):
            x4 = self.as_4d(x)
            source = self.made_by.get(x4) or self.producer.get(x4)
            if not (source is not None and source.op_type == "Conv" and len(self.consumers.get(x, [])) == 1):
                x4 = self.depthwise(x4, f"{n.output[0]}__4d_id", self.channels[x], 1.0, f"{n.name}__nchwc").output[0]
            self.out.append(helper.make_node("LeakyRelu", [x4], [y], name=n.name, alpha=_attr(n, "alpha", 0.01)))
        elif op == "Div" and n.input[1] in self.scalars and float(self.scalars[n.input[1]]) != 0 and self.channels_of(x):
            self.depthwise(self.as_4d(x), y, self.channels[x], 1.0 / float(self.scalars[n.input[1]]), n.name)
        elif op == "Add" and any(i in self.four for i in n.input) and all(i in self.four or self.channels_of(i)
                                                                          for i in n.input):
            self.out.append(helper.make_node("Add", [self.as_4d(i) for i in n.input], [y], name=n.name))
        elif op == "Tanh" and x in self.four:
            self.out.append(helper.make_node("Tanh", [self.four[x]], [y], name=n.name))
        else:
            return False
        return True

    def finish(self) -> None:
        """Put the nodes in place, with a Squeeze back for every 3-D tensor still read."""
        import onnx
        from onnx import helper, numpy_helper

        graph = self.graph
        read = {i for n in self.out for i in n.input} | {o.name for o in graph.output}
        restore = {self.four[t]: t for t in self.virtual if t in read}
        final = []
        for n in self.out:
            final.append(n)
            final.extend(self.squeezes.get(restore[o]) or helper.make_node("Squeeze", [o, self.AXES], [restore[o]],
                                                                           name=f"{restore[o]}__to_3d")
                         for o in n.output if o in restore)
        del graph.node[:]
        graph.node.extend(final)
        if self.AXES not in self.inits and any(self.AXES in n.input for n in final):
            graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), self.AXES))
        gone = self.virtual - set(restore.values())
        for vi in [v for v in graph.value_info if v.name in gone]:
            graph.value_info.remove(vi)
        onnx.checker.check_model(self.model)


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


#: Data-movement ops ONNX Runtime's QDQ propagation moves quantization across: a tensor made by
#: one of them from a dequantized input is not float-made (it may exist only as INT8).
_QDQ_PROPAGATION_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Flatten", "Pad")


def float_paths_read_float(model: Any, quantized_op_types: Sequence[str], float_prefixes: Sequence[str] = ()) -> list[str]:
    """Float ops that read the INT8 copy of a float tensor read the float tensor instead.

    In place on an ``onnx.ModelProto`` from ``quantize_static`` (QDQ). The quantizer gives every
    consumer of a quantized activation the ``DequantizeLinear`` output, also consumers that stay
    float: in a VITS flow the half of the latent that a coupling layer passes through unchanged
    is quantized for the coupling network and then concatenated *as its 8-bit copy* into the
    output, so every flow step added 8-bit rounding to the latent itself. Rerouted: a consumer
    whose op type is not quantized and whose outputs feed no ``QuantizeLinear`` (so it runs
    float, not as part of an INT8 pattern ONNX Runtime fuses), reading ``DQ(Q(t))`` where ``t``
    is made by a float op (not one that ONNX Runtime fuses into INT8, nor data movement of an
    INT8 tensor, where ``t`` may not exist as float). Nodes under ``float_prefixes`` (kept float
    by the recipe) count as float whatever their op type: a multi-speaker model's float text
    encoder then reads the speaker embedding itself, not the 8-bit copy made for the flow's INT8
    conditioning. Returns the names of the rerouted nodes.
    """
    graph = model.graph
    producer, readers = producers(graph), consumers(graph)
    quantized = set(quantized_op_types) | {"QuantizeLinear", "DequantizeLinear"}

    def made_float(t: str) -> bool:
        p = producer.get(t)
        while p is not None and p.op_type in _QDQ_PROPAGATION_OPS:  # ONNX Runtime moves Q/DQ across these
            p = producer.get(p.input[0])
        return p is not None and p.op_type not in quantized and not any(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in p.input)

    rerouted = []
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or not made_float(q.input[0]):
            continue
        for c in readers.get(dq.output[0], []):
            kept_float = c.op_type not in quantized or c.name.startswith(tuple(float_prefixes))
            if not kept_float or any(k.op_type == "QuantizeLinear" for o in c.output for k in readers.get(o, [])):
                continue
            c.input[:] = [q.input[0] if i == dq.output[0] else i for i in c.input]
            rerouted.append(c.name)
    return rerouted


def _names_read(graph: Any) -> set[str]:
    """Every tensor name a node of ``graph`` reads, subgraphs (If/Loop bodies) included."""
    out: set[str] = set()
    for n in graph.node:
        out.update(n.input)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                out |= _names_read(sub)
    return out


# =========================================================================== recipes
def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def _static_prefixes(recipe: Any) -> tuple[str, ...]:
    return tuple(getattr(recipe, "static_prefixes", None) or DEFAULT_STATIC_PREFIXES)


def _weight_only(recipe: Any) -> bool:
    return bool(getattr(recipe, "weight_only_rest", True))


NOISE_OPS = ("RandomNormal", "RandomNormalLike")


def _set_noise_seeds(proto: Any, seed: int | None) -> Any:
    """Give every in-graph noise node a fixed ``seed`` attribute (``seed + i`` for the i-th), or
    remove them (``None``). ONNX Runtime then draws the same noise sequence in every session."""
    from onnx import helper

    for i, node in enumerate(n for n in proto.graph.node if n.op_type in NOISE_OPS):
        kept = [a for a in node.attribute if a.name != "seed"]
        del node.attribute[:]
        node.attribute.extend(kept)
        if seed is not None:
            node.attribute.append(helper.make_attribute("seed", float(seed + i)))
    return proto


def quantize_onnx_file(fp32_path: Path, out_path: Path, recipe: Any, calibration: Any = None,
                       with_sid: bool = False) -> dict[str, Any]:
    """Quantize one FP32 ONNX file with ``recipe``; returns facts for the manifest."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    proto = onnx.load(str(fp32_path))
    names = [n.name for n in proto.graph.node]
    keep_float = tuple(recipe.keep_float) if hasattr(recipe, "keep_float") else ()
    unknown = [k for k in keep_float if not any(n.startswith(k) for n in names)]
    if unknown:
        scopes = sorted({"/".join(n.split("/")[:3]) + "/" for n in names if n.count("/") >= 3})
        raise InputError(f"keep-float {', '.join(repr(k) for k in unknown)} names no node of the exported graph; "
                         f"valid are node-name prefixes such as {', '.join(scopes[:12])}"
                         + (f" ({len(scopes)} module scopes in all)" if len(scopes) > 12 else ""))
    facts: dict[str, Any] = {}
    if isinstance(recipe, OrtDynamicRecipe):
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                         per_channel=recipe.per_channel,
                         op_types_to_quantize=list(recipe.op_types) if recipe.op_types else None)
        return facts
    if not isinstance(recipe, OrtStaticRecipe):
        raise UnsupportedError(f"not an ONNX Runtime recipe: {type(recipe).__name__} (use ort-static or ort-dynamic)")
    if calibration is None or not getattr(calibration, "items", None):
        raise InputError("ort-static needs calibration items (real sentences): none were given")
    scope = _static_prefixes(recipe)
    op_types = list(recipe.op_types or DEFAULT_STATIC_OP_TYPES)
    exclude = [n for n in names if not any(n.startswith(p) for p in scope) or any(n.startswith(k) for k in keep_float)]
    with tempfile.TemporaryDirectory(prefix="vitsq-ort-") as tmp:
        static_out = Path(tmp) / "static.onnx"
        # calibrate with seeded in-graph noise, so that the same calibration set gives the same
        # ranges (and the same artifact) every time; the shipped graph gets its unseeded noise back
        seeded = Path(tmp) / "seeded.onnx"
        onnx.save(_set_noise_seeds(proto, int(getattr(calibration, "seed", 0))), str(seeded))
        quantize_static(
            str(seeded), str(static_out), _calibration_reader(calibration, with_sid),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel, calibrate_method=_calibrate_method(recipe.calibrate_method),
            op_types_to_quantize=op_types, nodes_to_exclude=exclude,
            extra_options={"CalibStridedMinMax": 1},
        )
        qproto = _set_noise_seeds(onnx.load(str(static_out)), None)
    static_nodes = sorted({n.name.rsplit("_", 1)[0] for n in qproto.graph.node if n.op_type == "QuantizeLinear"})
    facts["static_scope"] = list(scope)
    facts["static_op_types"] = op_types
    facts["static_quantize_nodes"] = len(static_nodes)
    if getattr(recipe, "float_reads_float", False):
        facts["float_reads_float"] = len(float_paths_read_float(qproto, op_types, keep_float))
    if _weight_only(recipe):
        converted = weight_only_int8(qproto, skip_prefixes=keep_float)
        facts["weight_only_nodes"] = len(converted)
    if getattr(recipe, "float_convs_2d", False):
        facts["float_convs_2d"] = len(float_convs_as_2d(qproto, FLOAT_CONVS_2D_PREFIXES))
    if getattr(recipe, "text_encoder_convs_2d", False):
        facts["text_encoder_convs_2d"] = len(float_convs_as_2d(qproto, TEXT_ENCODER_PREFIXES))
    if getattr(recipe, "float_tail_4d", False):
        facts["float_tail_4d"] = float_tail_as_4d(qproto, FLOAT_CONVS_2D_PREFIXES)
    onnx.save(qproto, str(out_path))
    return facts


def quantize_ort(synth: Any, recipe: Any, calibration: Any = None, *, flavor: str | None = None,
                 calib: int | None = None, streaming: bool = False):
    """Export ``synth`` to ONNX and quantize it with ``recipe``; returns a
    :class:`~vitsq.quantize.artifact.QuantizedModel` running the INT8 graph on ONNX Runtime.

    ``calibration``: a :class:`~vitsq.quantize.calibration.Calibration` (default: ``calib``
    sentences of the shipped calibration split, seeded spread of speakers, model scales; ort-dynamic
    is not calibrated). The artifact folder (``model.onnx`` + ``vitsq.json``, kind ``onnx``) is
    built in a temporary folder owned by the returned object; ``.save(dir)`` writes it.
    ``streaming`` (ort-static only): the folder also gets the streaming graphs
    (:mod:`vitsq.export.onnx_stream`; INT8 with ``model.onnx``'s own quantization), and the
    synthesizer streams chunk by chunk.
    """
    from vitsq.backends.onnx import OnnxSynthesizer
    from vitsq.export.onnx import default_flavor
    from vitsq.quantize.artifact import ONNX_KIND, QuantizedModel

    if not isinstance(recipe, (OrtStaticRecipe, OrtDynamicRecipe)):
        raise UnsupportedError(f"quantize_ort takes ort-static or ort-dynamic recipes, not {getattr(recipe, 'name', recipe)!r}")
    check_keep_float_scope(synth, recipe)
    if streaming and not isinstance(recipe, OrtStaticRecipe):
        raise UnsupportedError(f"streaming graphs need the ort-static recipe, not {recipe.name}: dynamic quantization "
                               "scales each call's activations by that call's own range, so a chunk would not "
                               "compute what the whole sentence computes")
    if streaming and not recipe.polyphase_upsampling:
        raise UnsupportedError("streaming INT8 graphs need the recipe's polyphase_upsampling (the default): the "
                               "transposed convolutions it replaces stay float with INT8 weights, which the "
                               "streaming decoder does not reproduce")
    flavor = flavor or default_flavor(synth.config)
    if isinstance(recipe, OrtStaticRecipe) and calibration is None:
        from vitsq.quantize.calibration import make_calibration

        calibration = make_calibration(synth, n=calib, recipe=recipe)
    scratch = tempfile.TemporaryDirectory(prefix="vitsq-ort-")
    build = Path(scratch.name) / "artifact"
    build.mkdir()
    quant, stream = _write_ort_artifact(synth, recipe, calibration, flavor, Path(scratch.name), build, streaming)
    int8 = OnnxSynthesizer(build / MODEL_FILE, synth.config, synth.name, synth.frontend,
                           label=getattr(synth, "label", "trained"), quantization=quant,
                           extra_info={"source": synth.describe().get("source"), "flavor": flavor}, stream=stream)
    from vitsq.manifest import source_info

    return QuantizedModel(int8, recipe, calibration, None, source_info(synth), kind=ONNX_KIND,
                          build_dir=build, _scratch=scratch)


def _write_ort_artifact(synth: Any, recipe: Any, calibration: Any, flavor: str, scratch: Path, out: Path,
                        streaming: bool = False) -> tuple[dict, dict | None]:
    """FP32 export into ``scratch``, quantized ``model.onnx`` (+ the streaming graphs) +
    ``vitsq.json`` into ``out``; returns the quantization record and the streaming record
    (:func:`vitsq.export.onnx_stream.read_streaming`, None without)."""
    import onnx

    from vitsq.export.onnx import build_metadata, export_onnx, set_metadata
    from vitsq.manifest import source_info, write_manifest

    config = synth.config
    fp32 = export_onnx(synth, scratch / "fp32.onnx", flavor=flavor,
                       polyphase_upsampling=bool(getattr(recipe, "polyphase_upsampling", False)))
    fp32_bytes = fp32.stat().st_size
    with_sid = flavor == "vosk" or config.n_speakers > 1
    log.info("quantizing %s with %s", synth.name, recipe.name)
    facts = quantize_onnx_file(fp32, out / MODEL_FILE, recipe, calibration, with_sid=with_sid)
    quant = {"recipe": recipe.to_dict(), "fp32_onnx_bytes": fp32_bytes, **facts}
    if calibration is not None:
        quant["calibration"] = calibration.to_dict()
    proto = onnx.load(str(out / MODEL_FILE))
    set_metadata(proto, build_metadata(config, flavor, name=synth.name,
                                       weights=getattr(synth, "label", "trained"), quantization=quant))
    onnx.save(proto, str(out / MODEL_FILE))
    files, extra = [MODEL_FILE], {}
    if streaming:
        from vitsq.export.onnx_stream import streaming_files, write_streaming_pair
        from vitsq.models.polyphase import with_polyphase_upsampling

        model = synth.model
        if getattr(recipe, "polyphase_upsampling", False):
            model = with_polyphase_upsampling(model)  # what the FP32 export traced
        extra["streaming"] = write_streaming_pair(model, out / MODEL_FILE, out, float_onnx=fp32)
        files += streaming_files(extra["streaming"])
    write_manifest(out, KIND, config=config, files=files, source=source_info(synth),
                   quantization=quant, flavor=flavor, model_file=MODEL_FILE, **extra)
    (scratch / "fp32.onnx").unlink()
    stream = None
    if streaming:
        from vitsq.backends.onnx import read_streaming

        stream = read_streaming(extra, out)
    return quant, stream


def check_keep_float_scope(synth: Any, recipe: Any) -> None:
    """``ort-static`` keep-float entries are ONNX node-name prefixes under the model's top-level
    modules (``/dec/conv_post/``); refuse any other before the slow work. Whether each one names
    nodes of the exported graph is checked once the graph exists (:func:`quantize_onnx_file`)."""
    keep = tuple(getattr(recipe, "keep_float", ()) or ())
    if not keep:
        return
    model = getattr(synth, "model", synth)
    tops = [n for n, _ in model.named_children()] if hasattr(model, "named_children") else []
    bad = [k for k in keep if not k.startswith("/") or (tops and k.strip("/").split("/")[0] not in tops)]
    if bad:
        raise InputError(f"ort-static --keep-float {', '.join(repr(b) for b in bad)}: not an ONNX node-name prefix "
                         f"of this model; valid prefixes start with one of "
                         f"{', '.join('/' + t + '/' for t in tops)} (e.g. /dec/conv_post/, /dec/ups.0/)")


def export_quantized(synth: Any, fmt: str, out: str | Path, recipe: Any, *, force: bool = False,
                     calib: int | None = None, calibrate_method: str | None = None,
                     streaming: bool = False) -> Path:
    """``vitsq export --format onnx|piper|vosk-dir --recipe ort-static|ort-dynamic``: quantize
    ``synth`` (a recipe name is the measured preset, :func:`~vitsq.quantize.recipes.best_for`)
    and write the format (:func:`vitsq.export.onnx.export_onnx_artifact`). ``streaming``: a
    ``vosk-dir`` folder also gets the streaming graphs (single-file formats cannot carry them)."""
    from vitsq.export import onnx as ox
    from vitsq.quantize.recipes import best_for

    if fmt not in ox.FORMATS:
        raise InputError(f"unknown format {fmt!r} for an ONNX Runtime recipe: valid are {', '.join(ox.FORMATS)}")
    out = ox.check_export_output(fmt, out, force)  # before calibrating and exporting
    ox.check_format_fits(fmt, synth.config)
    if isinstance(recipe, str):
        recipe = best_for(synth, recipe)
    if calibrate_method:
        if not isinstance(recipe, OrtStaticRecipe):
            raise InputError(f"--calibrate-method applies to the ort-static recipe only, not {recipe.name!r}")
        recipe = recipe.replace(calibrate_method=calibrate_method)
    if calib is not None and not isinstance(recipe, OrtStaticRecipe):
        raise InputError(f"--calib applies to the ort-static recipe only (it calibrates activations), not {recipe.name!r}")
    flavor = {"piper": "piper", "vosk-dir": "vosk"}.get(fmt)
    q = quantize_ort(synth, recipe, flavor=flavor, calib=calib, streaming=streaming)
    return ox.export_onnx_artifact(q.build_dir, fmt, out, force=force, source_synth=synth)


def op_type_census(path: str | Path, prefixes: Iterable[str] = ("/enc_p/", "/dp/", "/flow/", "/dec/")) -> dict:
    """Count op types per top-level block of an ONNX file (for reports on what runs INT8)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, dict[str, int]] = {}
    for n in proto.graph.node:
        block = next((p.strip("/") for p in prefixes if n.name.startswith(p)), "other")
        out.setdefault(block, {})
        out[block][n.op_type] = out[block].get(n.op_type, 0) + 1
    return out
