"""ExecuTorch export: ``.pte`` programs lowered to the XNNPACK delegate (run by :mod:`vitsq.backends.executorch`).

VITS turns ``T_x`` symbols into ``T_y = sum(ceil(durations))`` frames: the output length is
data-dependent, which an ExecuTorch program cannot have (every tensor's size must be computable
from input sizes, within bounds fixed at export time). So the model is cut exactly there:

* **program A** ``encoder.pte`` -- text encoder + duration predictor.
  inputs ``x`` [1, T_x] int64 ids (zero-padded up to at least :data:`MIN_TOKENS`),
  ``x_lengths`` [1] int64 (real symbols), ``sid`` [1] int64 (ignored by single-speaker voices),
  ``dp_noise`` [1, 2, T_x] float32 (standard normal noise already scaled by ``noise_w``),
  ``length_scale`` [1] float32;
  outputs ``m_p``, ``logs_p`` [1, C, T_x] (prior per symbol), ``w_ceil`` [1, 1, T_x] (frames per
  symbol, float). ``T_x`` is dynamic in ``[MIN_TOKENS, max_tokens]``.
* **host** (:class:`~vitsq.backends.executorch.ExecuTorchSynthesizer`, torch on CPU, microseconds): repeat each symbol's
  prior ``w_ceil`` times (``repeat_interleave``: the same values as the one-hot alignment
  matmul of :meth:`VITS.expand`), draw the frame noise and form
  ``z_p = m_y + eps * exp(logs_y) * noise_scale``.
* **program B** ``decoder.pte`` -- reverse flow + waveform decoder.
  inputs ``z_p`` [1, C, T_y] float32, ``y_mask`` [1, 1, T_y] float32, ``sid`` [1] int64;
  output ``audio`` [1, 1, T_y * hop]. ``T_y`` is dynamic in ``[MIN_FRAMES, max_frames]``.

Noise is drawn on the host from the same seeded ``torch.Generator`` calls, in the same order, as
:meth:`VITS.infer` (:func:`~vitsq.models.vits.sample_token_noise` then
:func:`~vitsq.models.vits.sample_frame_noise`), so the ExecuTorch and torch backends get the same
noise for the same seed and their outputs are comparable even with noise on.

Limits. Program inputs are batch 1: a batch is run item by item (XNNPACK's dynamic-shape support
is per dimension bound; a dynamic batch would multiply the planned memory by the maximum batch).
A sentence longer than ``max_tokens`` symbols, or whose predicted durations exceed
``max_frames`` frames, is refused with :class:`~vitsq.errors.InputError` naming both numbers
(the synthesizer already splits text into sentences; re-export with larger bounds for longer
ones -- planned memory grows linearly with ``max_frames``). Sequences shorter than the minimum
are zero-padded and masked: exact for program A (every op there is masked); for program B, a
1-frame output (a single symbol lasting one frame) gets a masked second frame, which changes the
edge of that 12 ms of audio slightly.

INT8 (``recipe="pt2e"``): the stages the recipe names (text encoder, duration predictor, flow,
decoder) are quantized by :func:`vitsq.quantize.pt2e.quantize_stages` (XNNPACK quantizer:
per-channel symmetric weights, per-tensor activations, calibrated on the calibration split),
composed with the float speaker embedding and any float stage
(:class:`~vitsq.quantize.pt2e.StagedVITS`) into the same two program wrappers, exported again
with this export's bounds, and lowered to XNNPACK's INT8 kernels. ``"pt2e"`` by name is the
measured preset (:func:`vitsq.quantize.recipes.best_for`); the manifest records the resolved
recipe. The integer durations of an INT8 text encoder/duration predictor can differ from float,
so judge INT8 programs by WER and speaker similarity, not by waveform distance.

What blocked the export and how each blocker was resolved (symbolic reshape guards,
``sym_max``, non-persistent buffers, missing quantized kernels, slow partitioning, a dequantized
tensor shared with a portable op, unused INT8 weights in both programs, dynamic bounds narrowed
by a convolution heuristic): docs/executorch.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from vitsq.backends.executorch import (
    DECODER_FILE,
    ENCODER_FILE,
    FLOW_METHOD,
    STEP_METHODS,
    EXPORT_VERSION,
    KIND,
    MIN_FRAMES,
    MIN_TOKENS,
    _load_quantized_kernels,
)
from vitsq.errors import InputError, UnsupportedError
from vitsq.export.executorch_stream import DEFAULT_MAX_CHUNK
from vitsq.models.layout2d import decode_2d, with_2d_layout

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 400  # symbol ids per sentence (Piper/Vosk sentences with blanks: ~50-300)
DEFAULT_MAX_FRAMES = 2048  # decoder frames per sentence: 23.8 s at 22.05 kHz / hop 256
RECIPES = (None, "fp32", "pt2e")
#: The decoder program's layout (quantize/pt2e.py's ``DecoderStage``): 2-D convolutions on
#: [B, C, 1, T], so XNNPACK transposes into channels-last once, not around every convolution
#: (joe, INT8 preset: transposes were about a sixth of the decoder program's time).
DECODER_LAYOUT = "2d"


# =========================================================================== program wrappers
class EncoderProgram(nn.Module):
    """Program A: ids -> (m_p [1, C, T], logs_p [1, C, T], w_ceil [1, 1, T]); see module docstring."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lengths: torch.Tensor, sid: torch.Tensor, dp_noise: torch.Tensor,
                length_scale: torch.Tensor):
        g = self.model.speaker_embedding(sid, 1)  # [1, gin, 1] or None
        h, m_p, logs_p, x_mask = self.model.encode(x, x_lengths, g)  # [1, H, T], [1, C, T] x2, [1, 1, T]
        # h is already masked, so this multiply changes no value; it gives the float duration
        # predictor's first conv a float input when the encoder is INT8 (XNNPACK's partitioner
        # takes a conv whose input is a dequantize as a quantized conv and then fails on its
        # float weight: "Weight and Input should both be quantized").
        h = h * x_mask
        w_ceil = self.model.predict_durations(h, x_mask, g, dp_noise, length_scale)  # [1, 1, T]
        return m_p, logs_p, w_ceil


class DecoderProgram(nn.Module):
    """Program B: z_p [1, C, T_y], y_mask [1, 1, T_y], sid [1] -> audio [1, 1, T_y * hop].

    A float decoder runs in the 2-D layout (:mod:`vitsq.models.layout2d`), as the INT8 decoder
    stage does (:data:`DECODER_LAYOUT`): XNNPACK then keeps it channels-last from end to end.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        stages = getattr(model, "stages", {})
        self.dec2d = None if "decoder" in stages else with_2d_layout(getattr(model, "base", model).dec)

    def forward(self, z_p: torch.Tensor, y_mask: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
        g = self.model.speaker_embedding(sid, 1)
        z = self.model.flow_reverse(z_p, y_mask, g)  # [1, C, T_y]
        if self.dec2d is not None:
            return decode_2d(self.dec2d, z * y_mask, g)  # [1, 1, T_y * hop]
        audio, _ = self.model.vocode(z * y_mask, g)  # [1, 1, T_y * hop]
        return audio


def _encoder_inputs(config: "VitsConfig", t: int, n: int | None = None) -> tuple[torch.Tensor, ...]:
    n = t if n is None else n
    x = torch.zeros(1, t, dtype=torch.long)
    x[0, :n] = torch.arange(1, n + 1) % max(config.n_vocab - 1, 1) + 1
    return (x, torch.tensor([n]), torch.zeros(1, dtype=torch.long), torch.zeros(1, 2, t),
            torch.tensor([1.0]))


def _decoder_inputs(config: "VitsConfig", t: int) -> tuple[torch.Tensor, ...]:
    return (torch.zeros(1, config.inter_channels, t), torch.ones(1, 1, t), torch.zeros(1, dtype=torch.long))


# =========================================================================== export
def _check_bounds(max_tokens: int, max_frames: int) -> None:
    for name, v, lo in (("max_tokens", max_tokens, 8), ("max_frames", max_frames, 16)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= 100_000:
            raise InputError(f"{name}={v!r} is not valid: use an integer in {lo}..100000")


def _recipe_name(recipe: Any) -> str:
    if recipe is None or recipe == "fp32":
        return "fp32"
    if getattr(recipe, "name", None) == "pt2e":
        return "pt2e"
    if isinstance(recipe, str) and recipe.split(":", 1)[0] == "pt2e":
        from vitsq.quantize.recipes import recipe_class

        recipe_class(recipe)  # a variant pt2e does not have is refused here, naming those it has
        return "pt2e"
    shown = getattr(recipe, "name", recipe)
    raise UnsupportedError(f"ExecuTorch export recipe {shown!r} is not supported: use none/fp32 (float) or pt2e "
                           "(INT8; pt2e:faithful, the default for VITS voices, or pt2e:fast)")


def _export(module: nn.Module, args: tuple, dynamic_shapes: tuple) -> "torch.export.ExportedProgram":
    """``torch.export`` with every buffer exported as persistent.

    The VITS2 iSTFT basis and PQMF filters are non-persistent buffers (derived, not in the
    checkpoint). XNNPACK's preprocessing re-validates each delegated partition and rejects a
    non-persistent buffer that is in the partition's state dict ("Non-persistent buffer
    model.dec.istft.basis is in the state dict, it should not be"). Marking them persistent for
    the duration of the trace makes them ordinary program constants; the model is restored.
    """
    marked = [(m, name) for m in module.modules() for name in list(m._non_persistent_buffers_set)]
    for m, name in marked:
        m._non_persistent_buffers_set.discard(name)
    try:
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes, strict=False)
    finally:
        for m, name in marked:
            m._non_persistent_buffers_set.add(name)


HEAVY_OPS = ("convolution", "mm", "addmm", "bmm", "linear")  # what makes a delegated partition worth it


def _partitioner():
    """XNNPACK partitioner that keeps only partitions containing a convolution or matmul.

    With dynamic shapes, XNNPACK refuses dynamic slices, layer norm over channels, gathers and
    comparisons, so the default partitioner cuts the graph into ~140 pieces, many of them one or
    two elementwise ops; each piece costs ~1 s of ahead-of-time processing and a delegate call
    at run time while saving nothing. Those tiny pieces run as portable kernels instead.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class CoarseXnnpackPartitioner(XnnpackPartitioner):
        def generate_partitions(self, ep):  # noqa: D102 - see the enclosing docstring
            parts = super().generate_partitions(ep)
            keep = [p for p in parts if any(_op_name(n) in HEAVY_OPS for n in p.nodes)]
            log.debug("XNNPACK partitions: %d kept of %d", len(keep), len(parts))
            return keep

    return CoarseXnnpackPartitioner()


def _op_name(node: "torch.fx.Node") -> str:
    """``aten.convolution.default`` (edge or aten overload) -> ``convolution``."""
    if node.op != "call_function":
        return ""
    op = getattr(node.target, "_op", None)  # an edge op wraps the ATen overload
    name = str(op) if isinstance(op, torch._ops.OpOverload) else str(node.target)
    return name.replace("aten.", "").split(".")[0]


def _input_ranges(ep: "torch.export.ExportedProgram") -> dict[tuple[str, int], tuple[int, int]]:
    """``{(input name, axis): (min, max)}`` for every dynamic axis of the program's user inputs."""
    user_inputs = set(ep.graph_signature.user_inputs)
    ranges = {}
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        for dim, size in enumerate(getattr(node.meta.get("val"), "shape", ())):
            if isinstance(size, torch.SymInt):
                vr = ep.range_constraints.get(size.node.expr)
                if vr is not None:
                    ranges[(node.name, dim)] = (int(vr.lower), int(vr.upper))
    return ranges


def _check_serialized_bounds(buffer: bytes, input_names: list[str],
                             wanted: dict[tuple[str, int], tuple[int, int]], name: str,
                             method: str = "forward") -> None:
    """Refuse a program whose planned input sizes are below the dynamic bounds asked for.

    The runtime sizes each input's buffer from the serialized (upper-bound) shape; a narrower
    shape than requested means some pass added a guard on the length, and the program would
    reject valid inputs at run time (error 0x10) instead of at export.
    """
    from executorch.runtime import Runtime

    _load_quantized_kernels()
    meta = Runtime.get().load_program(buffer).load_method(method).metadata
    for (arg, dim), (_lo, hi) in wanted.items():
        size = meta.input_tensor_meta(input_names.index(arg)).sizes()[dim]
        if size != hi:
            raise UnsupportedError(f"{name}.pte: input {arg}[{dim}] of {method} was planned for {size}, not the "
                                   f"maximum {hi} asked for (an export pass narrowed the dynamic length); the "
                                   "program would refuse valid inputs")


def _lower(ep: "torch.export.ExportedProgram | dict[str, torch.export.ExportedProgram]",
           name: str) -> tuple[bytes, dict[str, Any]]:
    """Lower to the XNNPACK delegate and serialize; returns (bytes, op report).

    ``ep``: one program (method ``forward``) or ``{method: program}`` (one ``.pte`` with several
    methods; weights the methods share are stored once)."""
    import executorch.kernels.quantized  # noqa: F401  (out variants of q/dq left outside XNNPACK)
    from executorch.exir import to_edge_transform_and_lower

    methods = ep if isinstance(ep, dict) else {"forward": ep}
    t0 = time.perf_counter()
    wanted = {m: _input_ranges(p) for m, p in methods.items()}
    # With MKL-DNN enabled, re-tracing a conv on fake tensors asks ATen's backend heuristic
    # whether input.numel() > 20480, which adds a guard on the symbolic length and silently
    # narrows it (the Vosk INT8 encoder came out accepting 80 tokens instead of 400). The
    # ExecuTorch program never uses ATen's conv backends, so the heuristic is switched off for
    # every pass up to serialization, and the serialized bounds are checked below.
    with torch.backends.mkldnn.flags(enabled=False):
        edge = to_edge_transform_and_lower(ep, partitioner=[_partitioner()])
        t1 = time.perf_counter()
        report = _op_report(edge, list(methods))
        program = edge.to_executorch()
    for m, p in methods.items():
        _check_serialized_bounds(program.buffer, list(p.graph_signature.user_inputs), wanted[m], name, m)
    t2 = time.perf_counter()
    log.info("%s: lowered in %.1f s, serialized in %.1f s (%d XNNPACK partitions, portable ops %s)",
             name, t1 - t0, t2 - t1, report["xnnpack_partitions"], report["portable_ops"])
    return program.buffer, report


def _op_report(edge: Any, methods: list[str]) -> dict[str, Any]:
    """XNNPACK partitions and the operators left to the portable kernels, over ``methods``."""
    from executorch.exir.dialects.edge._ops import EdgeOpOverload

    portable: dict[str, int] = {}
    delegated = 0
    for method in methods:
        for node in edge.exported_program(method).graph.nodes:
            if node.op != "call_function":
                continue
            target = getattr(node.target, "__name__", str(node.target))
            if "executorch_call_delegate" in target:
                delegated += 1
            elif isinstance(node.target, EdgeOpOverload):  # an operator left to the portable kernels
                op = _op_name(node)
                portable[op] = portable.get(op, 0) + 1
    return {"xnnpack_partitions": delegated, "portable_ops": dict(sorted(portable.items()))}


def _program_specs(config: "VitsConfig", max_tokens: int, max_frames: int):
    from torch.export import Dim

    tok = Dim("tokens", min=MIN_TOKENS, max=max_tokens)
    frm = Dim("frames", min=MIN_FRAMES, max=max_frames)
    enc_dyn = ({1: tok}, None, None, {2: tok}, None)
    dec_dyn = ({2: frm}, {2: frm}, None)
    # example sizes inside the ranges (not the bounds, to avoid specialization on a bound)
    t_ex = min(max(MIN_TOKENS + 1, 37), max_tokens - 1)
    f_ex = min(max(MIN_FRAMES + 1, 101), max_frames - 1)
    return (enc_dyn, _encoder_inputs(config, t_ex)), (dec_dyn, _decoder_inputs(config, f_ex))


def _check_chunk(max_chunk: int, max_frames: int) -> None:
    if isinstance(max_chunk, bool) or not isinstance(max_chunk, (int, np.integer)) or not 2 <= int(max_chunk) <= max_frames:
        raise InputError(f"max_chunk_frames={max_chunk!r} is not valid: use an integer in 2..max_frames ({max_frames})")


def _check_streamable(model: nn.Module, max_chunk: int) -> None:
    """Refuse streaming before any export work: a decoder the streaming ops cannot run, or a
    chunk bound within the decoder's look-ahead (the first call must bring more frames)."""
    from vitsq.streaming.decoder import StreamingDecoder

    lag = StreamingDecoder(model).lag_frames
    if max_chunk <= lag:
        raise InputError(f"max_chunk_frames={max_chunk} is not valid for this model: a step call must take more "
                         f"frames than the decoder's look-ahead ({lag}); use at least {lag + 1}")


def export_executorch(synth: Any, out_dir: str | Path, recipe: Any = None, *,
                      max_tokens: int = DEFAULT_MAX_TOKENS, max_frames: int = DEFAULT_MAX_FRAMES,
                      force: bool = False, calibration: Any = None, calibration_sentences: int | None = None,
                      streaming: bool = False, max_chunk_frames: int = DEFAULT_MAX_CHUNK) -> Path:
    """Write ``encoder.pte`` + ``decoder.pte`` (XNNPACK) and ``vitsq.json`` into ``out_dir``.

    ``synth``: a torch-backend synthesizer of an FP32 model (``vitsq.load(..., backend="torch")``).
    ``recipe``: ``None``/``"fp32"`` (float programs) or ``"pt2e"`` / a ``PT2ERecipe`` (INT8).
    ``max_tokens`` / ``max_frames``: upper bounds of the dynamic axes (symbol ids per sentence,
    decoder frames per sentence). Refuses an existing ``out_dir`` unless ``force``.
    ``calibration`` (pt2e): a :class:`~vitsq.quantize.calibration.Calibration`, default the first
    ``calibration_sentences`` (default :data:`~vitsq.quantize.calibration.DEFAULT_CALIB`) sentences
    of the model language's calibration split.
    ``streaming``: ``decoder.pte`` also gets the streaming methods (the flow and the step calls,
    :mod:`vitsq.export.executorch_stream`; weights stored once), whose step calls take at most
    ``max_chunk_frames`` latent frames; the streamed audio of a check sentence must equal
    ``forward``'s (FP32 within 1e-5 of the peak, INT8 within 1 LSB of 16-bit audio) or the export
    is refused.
    Returns ``out_dir``.
    """
    rname = _recipe_name(recipe)
    _check_bounds(max_tokens, max_frames)
    if streaming:
        _check_chunk(max_chunk_frames, int(max_frames))
    if rname == "fp32" and (calibration is not None or calibration_sentences is not None):
        raise InputError("calibration (--calib) applies to the pt2e recipe only: float (fp32) programs are not "
                         "calibrated; add --recipe pt2e or drop --calib")
    model = getattr(synth, "model", None)
    if getattr(synth, "backend", None) != "torch" or not isinstance(model, nn.Module):
        raise UnsupportedError(f"ExecuTorch export needs a model loaded with the torch backend, got "
                               f"{getattr(synth, 'backend', type(synth).__name__)!r}: use vitsq.load(spec, backend='torch')")
    if getattr(synth, "quantization", None):
        raise UnsupportedError("this model is already quantized for PyTorch "
                               f"({synth.quantization.get('recipe', synth.quantization)}); export the float model "
                               "and use recipe='pt2e' for INT8 ExecuTorch programs")
    if streaming:
        _check_streamable(model, int(max_chunk_frames))
    from vitsq.outputs import atomic_output, check_output

    out = check_output(out_dir, kind="dir", force=force, what="ExecuTorch output folder")  # before exporting
    was_training = model.training
    model.eval()
    bounds = (int(max_tokens), int(max_frames))
    try:
        programs, quant_info, stream_info = _export_programs(
            synth, model, rname, recipe, calibration, calibration_sentences, *bounds,
            int(max_chunk_frames) if streaming else None)
        with atomic_output(out, kind="dir", force=force, what="ExecuTorch output folder") as tmp:
            reports = _write_programs(synth, model.config, tmp, programs, quant_info, rname, *bounds, stream_info)
    finally:
        model.train(was_training)
    log.info("wrote %s (%s)", out, ", ".join(f"{r['file']} {r['bytes'] / 1e6:.1f} MB" for r in reports.values()))
    return out


def _export_programs(synth: Any, model: nn.Module, rname: str, recipe: Any, calibration: Any,
                     n_calib: int | None, max_tokens: int, max_frames: int,
                     max_chunk: int | None) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
    """``({program name: ExportedProgram, or {method: ExportedProgram}}, quantization facts or
    None, streaming facts or None)`` before lowering; streaming programs when ``max_chunk``."""
    from vitsq.export.executorch_stream import FlowProgram, export_step_methods, streaming_info

    (enc_dyn, enc_args), (dec_dyn, dec_args) = _program_specs(model.config, max_tokens, max_frames)
    t0 = time.perf_counter()
    quant_info = mirror = None
    parts = {"encoder": model, "decoder": model, "flow": model}
    if rname == "pt2e":
        parts, quant_info, mirror = _quantize_pt2e(synth, model, recipe, calibration, n_calib, max_chunk is not None)
    with torch.no_grad():
        programs = {"encoder": _export(EncoderProgram(parts["encoder"]).eval(), enc_args, enc_dyn),
                    "decoder": _export(DecoderProgram(parts["decoder"]).eval(), dec_args, dec_dyn)}
        stream_info = None
        if max_chunk is not None:  # decoder.pte's streaming methods, beside its forward
            from vitsq.streaming.decoder import StreamingDecoder

            methods = {"forward": programs["decoder"],
                       FLOW_METHOD: _export(FlowProgram(parts["flow"]).eval(), dec_args, dec_dyn)}
            decoder = StreamingDecoder(model)
            steps, n_states = export_step_methods(model, decoder, max_chunk, _export, mirror)
            methods.update({STEP_METHODS[role]: ep for role, ep in steps.items()})
            programs["decoder"] = methods
            stream_info = streaming_info(decoder, max_chunk, n_states,
                                         {"flow": FLOW_METHOD, **STEP_METHODS})
    log.info("torch.export of %s: %.1f s", ", ".join(programs), time.perf_counter() - t0)
    return programs, quant_info, stream_info


_PROGRAM_IO = {  # (file, inputs, outputs) of each program's forward
    "encoder": (ENCODER_FILE, ["x", "x_lengths", "sid", "dp_noise", "length_scale"], ["m_p", "logs_p", "w_ceil"]),
    "decoder": (DECODER_FILE, ["z_p", "y_mask", "sid"], ["audio"]),
}
_STREAM_IO = {  # decoder.pte's streaming methods: (inputs, outputs)
    FLOW_METHOD: (["z_p", "y_mask", "sid"], ["z"]),
    STEP_METHODS["first"]: (["z", "sid"], ["audio", "state_0..state_{k-1}"]),
    STEP_METHODS["next"]: (["z", "sid", "state_0..state_{k-1}"], ["audio", "state_0..state_{k-1}"]),
    STEP_METHODS["last"]: (["z", "sid", "state_0..state_{k-1}"], ["audio"]),
}


def _write_programs(synth: Any, config: "VitsConfig", out: Path, programs: dict[str, Any], quant_info: Any,
                    rname: str, max_tokens: int, max_frames: int,
                    stream_info: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Lower the programs to ``.pte`` files, check the streaming ones, write ``vitsq.json`` into
    ``out``; returns the per-program reports."""
    from vitsq.manifest import source_info, write_manifest

    reports = {}
    for name, ep in programs.items():
        fname, inputs, outputs = _PROGRAM_IO[name]
        buf, report = _lower(ep, name)
        (out / fname).write_bytes(buf)
        reports[name] = {"file": fname, "bytes": len(buf), **report, "inputs": inputs, "outputs": outputs}
        if isinstance(ep, dict):
            reports[name]["methods"] = {m: {"inputs": i, "outputs": o} for m, (i, o) in _STREAM_IO.items()}
    if stream_info is not None:
        stream_info["check"] = check_streaming(out, config, rname, max_tokens, max_frames, stream_info)
    import executorch  # noqa: F401  (version for the manifest)
    from importlib.metadata import version

    et_info = {
        "export_version": EXPORT_VERSION,
        "executorch_version": version("executorch"),
        "torch_version": torch.__version__,
        "delegate": "XnnpackBackend",
        "decoder_layout": DECODER_LAYOUT,
        "max_tokens": int(max_tokens),
        "max_frames": int(max_frames),
        "min_tokens": MIN_TOKENS,
        "min_frames": MIN_FRAMES,
        "recipe": rname,
        "programs": reports,
    }
    if stream_info is not None:
        et_info["streaming"] = stream_info
    write_manifest(out, KIND, config=config, files=[r["file"] for r in reports.values()], source=source_info(synth),
                   quantization=quant_info, executorch=et_info, name=synth.name, label=getattr(synth, "label", "trained"))
    return reports


def _quantize_pt2e(synth: Any, model: nn.Module, recipe: Any, calibration: Any, n_calib: int | None,
                   streaming: bool) -> tuple[dict[str, nn.Module], dict[str, Any], Any]:
    """INT8 stages from :func:`vitsq.quantize.pt2e.quantize_stages`: ``({program: model to wrap},
    quantization facts, the decoder's mirrored quantization for the step program or None)``.

    The quantized stages (those of text encoder, duration predictor, flow and decoder that
    ``recipe.stages`` names) are calibrated by the quantization module on the real inputs each
    stage sees during FP32 inference of the calibration sentences; they are then composed with
    the float speaker embedding and any float stage (:class:`~vitsq.quantize.pt2e.StagedVITS`)
    into the same program wrappers as FP32 and exported again with this export's bounds.
    """
    from vitsq.quantize.calibration import make_calibration
    from vitsq.quantize.pt2e import StagedVITS, quantize_stages, resolve_recipe
    from vitsq.quantize.recipes import PT2E_STAGES, best_for

    # "pt2e" / "pt2e:fast" by name: the measured preset (recipes.best_for)
    recipe = best_for(model, recipe) if isinstance(recipe, str) else resolve_recipe(model, recipe)
    if calibration is None:
        calibration = make_calibration(synth, n=n_calib)
    t0 = time.perf_counter()
    programs = quantize_stages(model, recipe, calibration, progress=False, decoder_layout=DECODER_LAYOUT)

    def staged(names: tuple[str, ...]) -> StagedVITS:
        # only the stages a program runs: the converted stage graphs hold their INT8 weights as
        # constants, which export keeps even when unused -- one StagedVITS with every stage put
        # the decoder's INT8 weights into encoder.pte and vice versa (+24 MB on the Vosk config)
        return StagedVITS(model, {s: ep.module() for s, ep in programs.items() if s in names})

    mirror = None
    if streaming and "decoder" in programs:
        mirror = _mirror_decoder(model, programs["decoder"].module())
    log.info("pt2e: quantized stages %s in %.1f s", recipe.stages, time.perf_counter() - t0)
    info = {**recipe.to_dict(), "calibration": calibration.to_dict(),
            "float": ["speaker embedding", "host-side expansion"]
            + [s for s in PT2E_STAGES if s not in recipe.stages]}
    parts = {"encoder": staged(("encoder", "duration")), "decoder": staged(("flow", "decoder")),
             "flow": staged(("flow",))}
    return parts, info, mirror


def _mirror_decoder(model: nn.Module, decoder_gm: nn.Module) -> Any:
    """The converted decoder stage's quantization, mirrored for the step program and checked
    eagerly on a random latent (a wrong mirror is ~100 % off, a right one ~1e-3)."""
    from vitsq.export.executorch_stream import DecoderStepProgram, MirroredQuantization, check_mirror
    from vitsq.quantize.pt2e import _speaker_input
    from vitsq.streaming.decoder import StreamingDecoder

    mirror = MirroredQuantization.from_graph(decoder_gm)
    step = DecoderStepProgram(model, StreamingDecoder(model), "first", mirror)
    mirror.register(step)
    z = torch.randn(1, model.config.inter_channels, 64, generator=torch.Generator().manual_seed(0))
    sid = torch.zeros(1, dtype=torch.long)
    g = model.speaker_embedding(sid, 1)
    args = (z,) + ((g,) if _speaker_input(model, "decoder") else ())
    err = check_mirror(step, decoder_gm, z, sid, args)
    if not err < 0.02:
        raise UnsupportedError(f"the INT8 step decoder does not mirror the decoder program (relative error {err:.3g} "
                               "on a test latent): export without streaming")
    log.info("pt2e: step decoder mirrors the INT8 decoder (eager relative error %.2g)", err)
    return mirror


def check_streaming(directory: Path, config: "VitsConfig", rname: str, max_tokens: int, max_frames: int,
                    info: dict[str, Any]) -> dict[str, Any]:
    """Stream a check sentence (random ids, seeded noise, chunks of 1, 5, 2 and 16 frames) through
    the written methods and compare it with ``decoder.pte``'s whole-sentence audio; refuses the
    export (UnsupportedError) when FP32 differs by more than 1e-5 of the peak or INT8 by more
    than 1 LSB of 16-bit audio. Returns the measured differences."""
    from executorch.runtime import Runtime

    from vitsq.backends.executorch import StepPrograms, decode_whole, encode_sentence
    from vitsq.streaming import ChunkSchedule

    _load_quantized_kernels()
    runtime = Runtime.get()
    enc = runtime.load_program(str(directory / ENCODER_FILE)).load_method("forward")
    program = runtime.load_program(str(directory / DECODER_FILE))
    dec, step = program.load_method("forward"), StepPrograms(program, info["lag_frames"], info["max_chunk"])
    ids = np.random.default_rng(0).integers(1, config.n_vocab, min(max_tokens, 60)).tolist()
    speaker = min(1, config.n_speakers - 1)
    z_p, frames, sid = encode_sentence(enc, config, ids, speaker, 0, (config.noise_scale, 1.0, config.noise_w),
                                       max_frames)
    plan = ChunkSchedule(sizes=(1, 5, 2, 16)).plan(frames, step.lag_frames)
    if len(plan) < 3:
        raise UnsupportedError(f"the streaming check sentence lasts only {frames} frames, too few to stream in "
                               f"chunks with a look-ahead of {step.lag_frames} frames")
    whole = decode_whole(dec, z_p, frames, sid)
    streamed = np.concatenate(list(step.stream(z_p, sid, plan)))
    if streamed.shape != whole.shape:
        raise UnsupportedError(f"streamed check audio has {streamed.size} samples, decoder.pte {whole.size}")
    peak = float(np.abs(whole).max())
    rel = float(np.abs(streamed - whole).max() / max(peak, 1e-12))
    lsb = np.abs(_int16(streamed) - _int16(whole))
    result = {"frames": int(frames), "chunks": len(plan), "max_diff_of_peak": rel, "max_lsb": int(lsb.max()),
              "samples_differing_lsb": int((lsb > 0).sum()), "samples": int(whole.size)}
    ok = result["max_lsb"] <= 1 if rname == "pt2e" else rel <= 1e-5
    if not ok:
        raise UnsupportedError(f"the streaming programs do not reproduce decoder.pte on the check sentence ({result}): "
                               "export without streaming")
    log.info("streaming check: %s", result)
    return result


def _int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.int32)  # as Audio.to_int16
