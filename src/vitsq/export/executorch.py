"""ExecuTorch export (``.pte`` programs lowered to the XNNPACK delegate) and its Synthesizer.

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
* **host** (:class:`ExecuTorchSynthesizer`, torch on CPU, microseconds): repeat each symbol's
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

What blocked the export, and how each was resolved
---------------------------------------------------
1. *Data-dependent output length* (``sum(ceil(w))`` sizes the alignment, the flow and the
   decoder): the graph is split at the durations (above); the expansion runs on the host.
2. *Guard on a symbolic reshape* in relative-position attention: ``_rel_to_abs`` padded the flat
   buffer by ``T-1`` and reshaped to ``[T+1, 2T-1]``; ``torch.export`` could not prove
   ``(2T^2 + T - 1) % (T + 1) == 0`` for all ``T`` and refused the dynamic token axis
   ("Constraints violated (tokens)"). Fixed in :mod:`vitsq.models.modules` by slicing the first
   ``T*(2T-1)`` elements instead (the padding was never kept): identical values.
3. *``torch.sym_max`` in the graph*: ``_relative_embeddings`` computed ``max(T - (w+1), 0)`` on a
   symbolic ``T``, which traces to ``torch.sym_max``; the ExecuTorch edge verifier rejects it
   (``AssertionError`` in ``check_valid_edge_op``: not an edge operator or ExecuTorch sym op).
   Fixed by always padding by ``T - 1`` and slicing from the constant offset ``w``: same values,
   no ``max``/branch on ``T``.
4. *"Shapes must be known in advance"*: ExecuTorch plans memory at export; each dynamic axis gets
   an explicit upper bound (``max_tokens``, ``max_frames``) via ``torch.export.Dim``, and the
   runtime resizes within it.
5. *Speaker embedding and scales as Python numbers* would be baked into the graph as constants:
   they are tensor inputs (``sid``, ``length_scale``); ``noise_scale`` is applied on the host.
6. *Non-persistent buffers* (VITS2 iSTFT basis, PQMF filters): XNNPACK preprocessing rejected
   them ("Non-persistent buffer model.dec.istft.basis is in the state dict"); they are exported
   as persistent program constants (:func:`_export`), the model itself is unchanged.
7. *INT8 encoder feeding the float duration predictor*: XNNPACK took ``dp.pre`` (dequantized
   input, float weight) for a quantized conv and failed ("Weight and Input should both be
   quantized"); a value-preserving ``h * x_mask`` in :class:`EncoderProgram` separates them.
8. *q/dq ops outside XNNPACK* (around ops it refuses with dynamic shapes) need the quantized
   portable kernels: ``executorch.kernels.quantized`` at export (out variants) and
   ``libexecutorch_kernels_quantized.so`` at run time (:func:`_load_quantized_kernels`), which the
   wheel's Python runtime does not load by itself (``load_method`` error 0x14, OperatorMissing).
9. *Slow lowering*: with dynamic shapes XNNPACK refuses dynamic slices/views, layer norm over
   channels, gathers and comparisons, which cut the graph into ~140 partitions at ~1 s of
   ahead-of-time work each; only partitions holding a convolution or matmul are delegated
   (:func:`_partitioner`), the elementwise crumbs run as portable kernels.

Ops left to ExecuTorch's portable kernels (the manifest lists them per program under
``executorch.programs.*.portable_ops``): in program A the embedding, layer norm, the spline
flow's gather/cumsum/where/comparisons, and the dynamic slices/views of relative attention; in
program B (Piper HiFi-GAN) only the flow's channel flips, splits and slices -- every conv,
transposed conv, activation and the decoder run in XNNPACK; for the VITS2 MB-iSTFT decoder also
``exp``/``sin``/``cos`` of the sub-band spectra, the reflect pad (``index``/``abs``), and the
flow transformer's layer norm/softmax. The iSTFT and PQMF themselves are (transposed) convs and
run in XNNPACK.

INT8 (``recipe="pt2e"``): the stages the recipe names (text encoder, duration predictor, flow,
decoder) are quantized by :func:`vitsq.quantize.pt2e.quantize_stages` (XNNPACK quantizer:
per-channel symmetric weights, per-tensor activations, calibrated on the calibration split),
composed with the float speaker embedding and any float stage
(:class:`~vitsq.quantize.pt2e.StagedVITS`) into the same two program wrappers, exported again
with this export's bounds, and lowered to XNNPACK's INT8 kernels (q/dq left outside XNNPACK run
as portable kernels). ``"pt2e"`` by name is the measured preset
(:func:`vitsq.quantize.recipes.best_for`): for VITS every stage INT8 except the decoder's last
upsampling stage, ``conv_post`` and the duration predictor's spline flows, with the residual
sums float (``quantize_adds=False``); those nodes are left unannotated
(:func:`vitsq.quantize.pt2e.unannotate`). The manifest records the resolved recipe. Exporting,
preparing and converting an unannotated graph reproduces eager float exactly, so the distance
to float is quantization error only. On joe, the 235-sentence evaluation split (``vitsq eval``,
same noise as FP32 torch): 18.0 MB (FP32 ONNX 63.2 MB), WER -0.0 pt, speaker similarity 0.985
mean / 0.962 worst; 1.56x the speed of FP32 ONNX Runtime at batch 1 with every backend on 1
thread (session 2's 2.48x gave the XNNPACK pool both cores: see :func:`set_threadpool_size`). The integer
durations of an INT8 text encoder/duration predictor differ from float for some tokens, so
log-mel distances to float are not meaningful there; judge by WER and speaker similarity.

Three more blockers, found with INT8 partly-float programs:

10. *A dequantized tensor shared by an XNNPACK partition and a portable op*: the flow's WaveNet
    started its skip sum with ``zeros_like(x)``; in the INT8 flow ``x``'s dequantize fed both a
    delegated conv and the portable ``full_like``, and the program failed at run time
    ("Propagating input shapes failed", error 0x1; with fewer partitions a portable ``add``
    broadcast error, 0x12). The sum now starts from the first layer's skip (same values).
11. *Every stage's INT8 weights in both programs*: the converted stage graphs hold their INT8
    weights as constants, which export keeps even when the program does not use them; each
    program now gets a StagedVITS with only its own stages (the Vosk config's encoder.pte went
    from 35.7 MB to ~11 MB).
12. *Dynamic bounds narrowed by a guard*: with MKL-DNN enabled, ``to_edge`` and the later passes
    re-trace convs on fake tensors, and ATen's conv backend heuristic asks whether
    ``input.numel() > 20480``, which adds a guard on the symbolic length; the Vosk INT8 encoder
    came out planned for 80 tokens instead of 400 (run-time error 0x10 on longer input).
    :func:`_lower` runs with MKL-DNN off and :func:`_check_serialized_bounds` refuses a program
    whose planned input sizes are below the bounds asked for.
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import nn

from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.synth import BaseSynthesizer

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

KIND = "executorch"
ENCODER_FILE = "encoder.pte"
DECODER_FILE = "decoder.pte"
EXPORT_VERSION = 1
DEFAULT_MAX_TOKENS = 400  # symbol ids per sentence (Piper/Vosk sentences with blanks: ~50-300)
DEFAULT_MAX_FRAMES = 2048  # decoder frames per sentence: 23.8 s at 22.05 kHz / hop 256
MIN_TOKENS = 2  # torch.export specializes sizes 0 and 1; shorter input is padded and masked
MIN_FRAMES = 2
RECIPES = (None, "fp32", "pt2e")


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
    """Program B: z_p [1, C, T_y], y_mask [1, 1, T_y], sid [1] -> audio [1, 1, T_y * hop]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z_p: torch.Tensor, y_mask: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
        g = self.model.speaker_embedding(sid, 1)
        z = self.model.flow_reverse(z_p, y_mask, g)  # [1, C, T_y]
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
    if recipe == "pt2e" or getattr(recipe, "name", None) == "pt2e":
        return "pt2e"
    shown = getattr(recipe, "name", recipe)
    raise UnsupportedError(f"ExecuTorch export recipe {shown!r} is not supported: use none/fp32 (float) or pt2e (INT8)")


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
                             wanted: dict[tuple[str, int], tuple[int, int]], name: str) -> None:
    """Refuse a program whose planned input sizes are below the dynamic bounds asked for.

    The runtime sizes each input's buffer from the serialized (upper-bound) shape; a narrower
    shape than requested means some pass added a guard on the length, and the program would
    reject valid inputs at run time (error 0x10) instead of at export.
    """
    from executorch.runtime import Runtime

    _load_quantized_kernels()
    meta = Runtime.get().load_program(buffer).load_method("forward").metadata
    for (arg, dim), (_lo, hi) in wanted.items():
        size = meta.input_tensor_meta(input_names.index(arg)).sizes()[dim]
        if size != hi:
            raise UnsupportedError(f"{name}.pte: input {arg}[{dim}] was planned for {size}, not the maximum {hi} asked "
                                   "for (an export pass narrowed the dynamic length); the program would refuse "
                                   "valid inputs")


def _lower(ep: "torch.export.ExportedProgram", name: str) -> tuple[bytes, dict[str, Any]]:
    """Lower to the XNNPACK delegate and serialize; returns (bytes, op report)."""
    import executorch.kernels.quantized  # noqa: F401  (out variants of q/dq left outside XNNPACK)
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.dialects.edge._ops import EdgeOpOverload

    t0 = time.perf_counter()
    wanted = _input_ranges(ep)
    # With MKL-DNN enabled, re-tracing a conv on fake tensors asks ATen's backend heuristic
    # whether input.numel() > 20480, which adds a guard on the symbolic length and silently
    # narrows it (the Vosk INT8 encoder came out accepting 80 tokens instead of 400). The
    # ExecuTorch program never uses ATen's conv backends, so the heuristic is switched off for
    # every pass up to serialization, and the serialized bounds are checked below.
    with torch.backends.mkldnn.flags(enabled=False):
        edge = to_edge_transform_and_lower(ep, partitioner=[_partitioner()])
        t1 = time.perf_counter()
        portable: dict[str, int] = {}
        delegated = 0
        for node in edge.exported_program().graph.nodes:
            if node.op != "call_function":
                continue
            target = getattr(node.target, "__name__", str(node.target))
            if "executorch_call_delegate" in target:
                delegated += 1
            elif isinstance(node.target, EdgeOpOverload):  # an operator left to the portable kernels
                op = _op_name(node)
                portable[op] = portable.get(op, 0) + 1
        program = edge.to_executorch()
    _check_serialized_bounds(program.buffer, list(ep.graph_signature.user_inputs), wanted, name)
    t2 = time.perf_counter()
    log.info("%s: lowered in %.1f s, serialized in %.1f s (%d XNNPACK partitions, portable ops %s)",
             name, t1 - t0, t2 - t1, delegated, portable)
    return program.buffer, {"xnnpack_partitions": delegated, "portable_ops": dict(sorted(portable.items()))}


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


def export_executorch(synth: Any, out_dir: str | Path, recipe: Any = None, *,
                      max_tokens: int = DEFAULT_MAX_TOKENS, max_frames: int = DEFAULT_MAX_FRAMES,
                      force: bool = False, calibration: Any = None, calibration_sentences: int | None = None) -> Path:
    """Write ``encoder.pte`` + ``decoder.pte`` (XNNPACK) and ``vitsq.json`` into ``out_dir``.

    ``synth``: a torch-backend synthesizer of an FP32 model (``vitsq.load(..., backend="torch")``).
    ``recipe``: ``None``/``"fp32"`` (float programs) or ``"pt2e"`` / a ``PT2ERecipe`` (INT8).
    ``max_tokens`` / ``max_frames``: upper bounds of the dynamic axes (symbol ids per sentence,
    decoder frames per sentence). Refuses an existing ``out_dir`` unless ``force``.
    ``calibration`` (pt2e): a :class:`~vitsq.quantize.calibration.Calibration`, default the first
    ``calibration_sentences`` (default :data:`~vitsq.quantize.calibration.DEFAULT_CALIB`) sentences
    of the model language's calibration split.
    Returns ``out_dir``.
    """
    rname = _recipe_name(recipe)
    _check_bounds(max_tokens, max_frames)
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
    from vitsq.outputs import atomic_output, check_output

    out = check_output(out_dir, kind="dir", force=force, what="ExecuTorch output folder")  # before exporting
    was_training = model.training
    model.eval()
    try:
        enc_ep, dec_ep, quant_info = _export_programs(synth, model, rname, recipe, calibration,
                                                      calibration_sentences, int(max_tokens), int(max_frames))
        with atomic_output(out, kind="dir", force=force, what="ExecuTorch output folder") as tmp:
            reports = _write_programs(synth, model.config, tmp, enc_ep, dec_ep, quant_info, rname,
                                      int(max_tokens), int(max_frames))
    finally:
        model.train(was_training)
    log.info("wrote %s (%s)", out, ", ".join(f"{r['file']} {r['bytes'] / 1e6:.1f} MB" for r in reports.values()))
    return out


def _export_programs(synth: Any, model: nn.Module, rname: str, recipe: Any, calibration: Any,
                     n_calib: int | None, max_tokens: int, max_frames: int) -> tuple[Any, Any, Any]:
    """``(encoder program, decoder program, quantization facts or None)`` before lowering."""
    (enc_dyn, enc_args), (dec_dyn, dec_args) = _program_specs(model.config, max_tokens, max_frames)
    t0 = time.perf_counter()
    if rname == "fp32":
        with torch.no_grad():
            enc_ep = _export(EncoderProgram(model).eval(), enc_args, enc_dyn)
            dec_ep = _export(DecoderProgram(model).eval(), dec_args, dec_dyn)
        log.info("torch.export of both programs: %.1f s", time.perf_counter() - t0)
    quant_info = None
    if rname == "pt2e":
        enc_ep, dec_ep, quant_info = _quantize_pt2e(synth, model, recipe, calibration, n_calib,
                                                    ((enc_dyn, enc_args), (dec_dyn, dec_args)))
    return enc_ep, dec_ep, quant_info


def _write_programs(synth: Any, config: "VitsConfig", out: Path, enc_ep: Any, dec_ep: Any, quant_info: Any,
                    rname: str, max_tokens: int, max_frames: int) -> dict[str, dict[str, Any]]:
    """Lower both programs to ``.pte`` files and write ``vitsq.json`` into ``out``; returns reports."""
    from vitsq.manifest import source_info, write_manifest

    reports = {}
    for name, ep, fname in (("encoder", enc_ep, ENCODER_FILE), ("decoder", dec_ep, DECODER_FILE)):
        buf, report = _lower(ep, name)
        (out / fname).write_bytes(buf)
        reports[name] = {"file": fname, "bytes": len(buf), **report}
    import executorch  # noqa: F401  (version for the manifest)
    from importlib.metadata import version

    et_info = {
        "export_version": EXPORT_VERSION,
        "executorch_version": version("executorch"),
        "torch_version": torch.__version__,
        "delegate": "XnnpackBackend",
        "max_tokens": int(max_tokens),
        "max_frames": int(max_frames),
        "min_tokens": MIN_TOKENS,
        "min_frames": MIN_FRAMES,
        "recipe": rname,
        "programs": {
            "encoder": {**reports["encoder"], "inputs": ["x", "x_lengths", "sid", "dp_noise", "length_scale"],
                        "outputs": ["m_p", "logs_p", "w_ceil"]},
            "decoder": {**reports["decoder"], "inputs": ["z_p", "y_mask", "sid"], "outputs": ["audio"]},
        },
    }
    write_manifest(out, KIND, config=config, files=[ENCODER_FILE, DECODER_FILE], source=source_info(synth),
                   quantization=quant_info, executorch=et_info, name=synth.name, label=getattr(synth, "label", "trained"))
    return reports


def _quantize_pt2e(synth: Any, model: nn.Module, recipe: Any, calibration: Any, n_calib: int | None,
                   specs: tuple) -> tuple[Any, Any, dict[str, Any]]:
    """INT8 programs A and B from :func:`vitsq.quantize.pt2e.quantize_stages`.

    The quantized stages (those of text encoder, duration predictor, flow and decoder that
    ``recipe.stages`` names) are calibrated by the quantization module on the real inputs each
    stage sees during FP32 inference of the calibration sentences; they are then composed with
    the float speaker embedding and any float stage (:class:`~vitsq.quantize.pt2e.StagedVITS`)
    into the same two program wrappers as FP32 and exported again with this export's bounds.
    """
    from vitsq.quantize.calibration import make_calibration
    from vitsq.quantize.pt2e import StagedVITS, quantize_stages, resolve_recipe
    from vitsq.quantize.recipes import PT2E_STAGES, PT2ERecipe

    # "pt2e" by name: the measured preset (recipes.best_for)
    recipe = resolve_recipe(model, PT2ERecipe() if isinstance(recipe, str) else recipe)
    if calibration is None:
        calibration = make_calibration(synth, n=n_calib)
    t0 = time.perf_counter()
    programs = quantize_stages(model, recipe, calibration, progress=False)

    def staged(names: tuple[str, ...]) -> StagedVITS:
        # only the stages a program runs: the converted stage graphs hold their INT8 weights as
        # constants, which export keeps even when unused -- one StagedVITS with every stage put
        # the decoder's INT8 weights into encoder.pte and vice versa (+24 MB on the Vosk config)
        return StagedVITS(model, {s: ep.module() for s, ep in programs.items() if s in names})

    (enc_dyn, enc_args), (dec_dyn, dec_args) = specs
    with torch.no_grad():
        enc_ep = _export(EncoderProgram(staged(("encoder", "duration"))), enc_args, enc_dyn)
        dec_ep = _export(DecoderProgram(staged(("flow", "decoder"))), dec_args, dec_dyn)
    log.info("pt2e: quantized stages %s and re-exported both programs in %.1f s", recipe.stages,
             time.perf_counter() - t0)
    info = {**recipe.to_dict(), "calibration": calibration.to_dict(),
            "float": ["speaker embedding", "host-side expansion"]
            + [s for s in PT2E_STAGES if s not in recipe.stages]}
    return enc_ep, dec_ep, info


# =========================================================================== runtime
_QUANTIZED_KERNELS_LOADED = False


def _load_quantized_kernels() -> None:
    """Register ExecuTorch's quantized portable kernels with the Python runtime (once).

    INT8 programs keep some ``quantize_per_tensor``/``dequantize_per_tensor`` ops outside the
    XNNPACK partitions (around ops XNNPACK refuses with dynamic shapes). The ``executorch`` wheel
    ships their kernels in ``executorch/lib/libexecutorch_kernels_quantized.so`` but its runtime
    bindings do not load it (``load_method`` then fails with OperatorMissing, 0x14); loading the
    library globally runs its kernel registration.
    """
    global _QUANTIZED_KERNELS_LOADED
    if _QUANTIZED_KERNELS_LOADED:
        return
    import ctypes

    from executorch.extension.pybindings import portable_lib

    lib = Path(portable_lib.__file__).resolve().parents[2] / "lib" / "libexecutorch_kernels_quantized.so"
    if not lib.is_file():
        raise ModelLoadError(f"this executorch installation lacks {lib.name}, needed by INT8 programs")
    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    _QUANTIZED_KERNELS_LOADED = True


#: ExecuTorch synthesizers alive in this process (their XNNPACK delegates hold the thread pool).
_LIVE_SYNTHS: "weakref.WeakSet[ExecuTorchSynthesizer]" = weakref.WeakSet()


def threadpool_size() -> int:
    """Threads in ExecuTorch's process-wide pool, on which XNNPACK runs its kernels."""
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def set_threadpool_size(threads: int) -> int:
    """Resize ExecuTorch's process-wide thread pool to ``threads`` and return its size.

    The pool starts with one thread per core and ignores ``torch.set_num_threads``, so without
    this an ExecuTorch variant benchmarked "with 1 thread" ran on every core. It can only be
    resized while no program that ran on it is alive: with executorch 1.5.1, resizing under a
    loaded XNNPACK method crashed the process (segfault), so that case raises
    :class:`~vitsq.errors.UnsupportedError` instead.
    """
    from executorch.extension.pybindings import portable_lib

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    current = threadpool_size()
    if threads == current:
        return current
    if len(_LIVE_SYNTHS):
        raise UnsupportedError(
            f"ExecuTorch's thread pool has {current} threads and cannot be resized to {threads} while "
            f"{len(_LIVE_SYNTHS)} ExecuTorch model(s) are loaded in this process (the runtime crashes): "
            f"load every ExecuTorch model with the same threads, or release the others first")
    portable_lib._unsafe_reset_threadpool(threads)
    log.info("ExecuTorch thread pool resized %d -> %d threads", current, threads)
    return threadpool_size()


def run_programs(encoder: Any, decoder: Any, config: "VitsConfig", ids: Sequence[int], speaker: int, seed: int,
                 scales: tuple[float, float, float], max_frames: int) -> np.ndarray:
    """One sentence through program A, the host expansion and program B -> audio [S] float32.

    ``encoder``/``decoder``: loaded ExecuTorch methods. Noise is drawn
    from ``torch.Generator().manual_seed(seed)`` in :meth:`VITS.infer`'s order.
    """
    from vitsq.models.vits import sample_frame_noise, sample_token_noise

    noise_scale, length_scale, noise_w = scales
    c = config.inter_channels
    gen = torch.Generator().manual_seed(int(seed))
    n = len(ids)
    t = max(n, MIN_TOKENS)
    x = torch.zeros(1, t, dtype=torch.long)  # [1, t], zero-padded to the program minimum
    x[0, :n] = torch.tensor(list(ids), dtype=torch.long)
    lengths = torch.tensor([n], dtype=torch.long)
    sid = torch.tensor([speaker], dtype=torch.long)
    dp_noise = sample_token_noise(lengths, t, 2, gen) * noise_w  # [1, 2, t], as VITS.infer
    m_p, logs_p, w_ceil = encoder.execute(
        [x, lengths, sid, dp_noise, torch.tensor([length_scale], dtype=torch.float32)])
    w = w_ceil[0, 0, :n].to(torch.long)  # [n] frames per symbol
    t_y = int(w.sum())
    if t_y > max_frames:
        raise InputError(f"the sentence lasts {t_y} frames, but this ExecuTorch program takes at most "
                         f"{max_frames}: split the text into shorter sentences, lower length_scale, "
                         f"or re-export with a larger max_frames")
    # expansion (VITS.expand with a one-hot alignment == repeating each symbol's column)
    m_y = torch.repeat_interleave(m_p[0, :, :n], w, dim=1).unsqueeze(0)  # [1, C, t_y]
    logs_y = torch.repeat_interleave(logs_p[0, :, :n], w, dim=1).unsqueeze(0)
    frames = max(t_y, 1)  # VITS.expand clamps the length to one (silent) frame
    if t_y == 0:
        m_y = logs_y = torch.zeros(1, c, 1)
    eps = sample_frame_noise(torch.tensor([frames]), frames, c, gen)  # [1, C, frames]
    z_p = m_y + eps * torch.exp(logs_y) * noise_scale
    y_mask = torch.ones(1, 1, frames)
    if frames < MIN_FRAMES:  # pad with masked frames; the decoder sees them as zeros
        pad = MIN_FRAMES - frames
        z_p = torch.nn.functional.pad(z_p, [0, pad])
        y_mask = torch.nn.functional.pad(y_mask, [0, pad])
    (audio,) = decoder.execute([z_p.contiguous(), y_mask, sid])  # [1, 1, frames' * hop]
    hop = audio.shape[-1] // z_p.shape[-1]
    return audio[0, 0, : frames * hop].numpy().astype(np.float32, copy=True)


class ExecuTorchSynthesizer(BaseSynthesizer):
    """Runs ``encoder.pte`` / ``decoder.pte`` through ``executorch.runtime`` (CPU, XNNPACK).

    Same noise as the torch backend for the same seed (see module docstring); a batch runs
    item by item. Only ``device="cpu"``.
    """

    backend = "executorch"

    def __init__(self, directory: str | Path, config: "VitsConfig", name: str, frontend: Any, *,
                 max_tokens: int, max_frames: int, threads: int | None = None, **kwargs: Any) -> None:
        from executorch.runtime import Runtime

        directory = Path(directory)
        paths = [directory / ENCODER_FILE, directory / DECODER_FILE]
        kwargs.setdefault("artifact_paths", paths)
        super().__init__(name, config, frontend, **kwargs)
        self.directory = directory
        self.max_tokens = int(max_tokens)
        self.max_frames = int(max_frames)
        runtime = Runtime.get()
        if threads is not None:  # before loading: the pool cannot change under a loaded program
            set_threadpool_size(threads)
        if self.quantization:
            _load_quantized_kernels()
        try:
            self._programs = [runtime.load_program(str(p)) for p in paths]
            self._encoder, self._decoder = (p.load_method("forward") for p in self._programs)
        except Exception as exc:  # the runtime raises RuntimeError/ValueError with its own codes
            raise ModelLoadError(f"executorch.runtime cannot load the programs in {directory}: {exc}") from exc
        _LIVE_SYNTHS.add(self)

    def _run(self, batch: list[list[int]], speakers: list[int], scales: tuple[float, float, float],
             seeds: list[int]) -> list[np.ndarray]:
        too_long = [len(ids) for ids in batch if len(ids) > self.max_tokens]
        if too_long:
            raise InputError(f"a sentence has {max(too_long)} symbol ids, but this ExecuTorch program takes at "
                             f"most {self.max_tokens} per sentence: split the text into shorter sentences, or "
                             f"re-export with a larger max_tokens")
        return [run_programs(self._encoder, self._decoder, self.config, ids, spk, seed, scales, self.max_frames)
                for ids, spk, seed in zip(batch, speakers, seeds)]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["max_tokens"] = self.max_tokens
        d["max_frames"] = self.max_frames
        d["device"] = "cpu"
        d["threads"] = threadpool_size()
        return d


def load_executorch_artifact(directory: str | Path, manifest: dict[str, Any], backend: str = "executorch",
                             device: str = "cpu", **kw: Any) -> ExecuTorchSynthesizer:
    """Registry loader for ``kind: executorch`` folders (see :data:`vitsq.registry.ARTIFACT_LOADERS`).

    The folder holds only ExecuTorch programs, so it always runs on the ExecuTorch runtime:
    ``backend="executorch"``, or ``"torch"`` -- the default of ``vitsq.load`` and the CLI, taken
    as "no preference" (logged) so ``vitsq synth DIR`` works without ``--backend``. ``"onnx"`` is
    refused. Only ``device="cpu"`` (XNNPACK is a CPU delegate).
    """
    from vitsq.manifest import manifest_config, verify_manifest
    from vitsq.text import make_frontend

    directory = Path(directory)
    if backend not in ("executorch", "torch"):
        raise UnsupportedError(f"{directory} is an ExecuTorch artifact: it runs on the executorch backend, "
                               f"not {backend!r} (load the source model for torch/onnx)")
    if backend == "torch":
        log.info("%s holds ExecuTorch programs: running them on the executorch backend", directory)
    if str(device) != "cpu":
        raise UnsupportedError(f"ExecuTorch programs with the XNNPACK delegate run on cpu, not {device!r}")
    verify_manifest(directory, manifest)
    et = manifest.get("executorch")
    if not isinstance(et, dict) or "max_tokens" not in et or "max_frames" not in et:
        raise ModelLoadError(f"{directory}/vitsq.json has no executorch section with max_tokens/max_frames")
    if et.get("export_version") != EXPORT_VERSION:
        raise ModelLoadError(f"{directory}: ExecuTorch export version {et.get('export_version')!r} is not "
                             f"supported (this vitsq reads {EXPORT_VERSION}): re-export the model")
    config = manifest_config(manifest)
    name = manifest.get("name") or manifest.get("source", {}).get("name") or directory.name
    recipe = et.get("recipe", "fp32")
    return ExecuTorchSynthesizer(
        directory, config, f"{name}-et-{recipe}", make_frontend(config),
        max_tokens=et["max_tokens"], max_frames=et["max_frames"], threads=kw.pop("threads", None),
        label=manifest.get("label", "trained"), quantization=manifest.get("quantization"),
        extra_info={"source": manifest.get("source", {}).get("source"), "artifact": str(directory),
                    "executorch_recipe": recipe},
    )
