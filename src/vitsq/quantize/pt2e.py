"""PT2E INT8 with the XNNPACK quantizer, stage by stage (what the ExecuTorch export consumes).

A whole VITS cannot be exported as one static graph: the number of frames depends on the
predicted durations (data-dependent). So we export and quantize the *stages* whose shapes are
static given a dynamic length axis, through explicit wrapper modules with a fixed I/O contract:

=========  ==========================================================  =========================
stage      inputs -> outputs                                           dynamic axis
=========  ==========================================================  =========================
encoder    ids [1, T_x] int64, lengths [1] int64 (+ g [1, gin, 1])     T_x (tokens)
           -> h [1, H, T_x], m_p [1, C, T_x], logs_p [1, C, T_x], x_mask [1, 1, T_x]
duration   h [1, H, T_x], x_mask [1, 1, T_x], noise [1, 2, T_x] (+ g)   T_x (tokens)
           -> logw [1, 1, T_x] (log-durations)
flow       z_p [1, C, T_y], y_mask [1, 1, T_y] (+ g) -> z [1, C, T_y]   T_y (frames)
decoder    z [1, C, T_y] (+ g) -> audio [1, 1, T_y * hop]                T_y (frames)
=========  ==========================================================  =========================

Noise, the rounding of durations and the alignment expansion stay float eager code, as does
every stage a recipe leaves out (:class:`StagedVITS` reuses ``VITS.infer``, so the order of noise
draws is unchanged).

For the ExecuTorch export (``vitsq.export.executorch``), call::

    programs = quantize_stages(model, PT2ERecipe(), calibration)   # {stage: ExportedProgram}
    # then per stage: to_edge_transform_and_lower(programs[stage], partitioner=[XnnpackPartitioner()])

:func:`stage_modules` gives the float wrapper modules and :func:`stage_dynamic_shapes` /
:func:`example_inputs` their export arguments, for a float (un-quantized) export with the same
contract. The quantized graphs hold quantize/dequantize ops around float ops: in eager PyTorch
they *simulate* INT8 (accuracy, not speed); the speed comes after XNNPACK lowering.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitsq.errors import ModelLoadError, UnsupportedError
from vitsq.models.vits import VITS
from vitsq.models.layout2d import decode_2d, with_2d_layout
from vitsq.backends.torch import TorchSynthesizer
from vitsq.quantize.artifact import PT2E_KIND, QuantizedModel, check_torch_backend, quant_info
from vitsq.quantize.recipes import PT2E_STAGES, PT2ERecipe

log = logging.getLogger(__name__)

#: Minimum length of the dynamic axes (tokens / frames) the exported graphs accept.
MIN_LEN = 2
MAX_TOKENS = 1024
MAX_FRAMES = 16384


# ============================================================================ stage wrappers
class EncoderStage(nn.Module):
    """Text encoder: ids [1, T_x], lengths [1] (+ g [1, gin, 1]) -> h, m_p, logs_p, x_mask."""

    def __init__(self, model: VITS) -> None:
        super().__init__()
        self.enc_p = model.enc_p
        self.spk_conditioned = bool(getattr(model.config, "use_spk_conditioned_encoder", False)
                                    and model.config.n_speakers > 1)

    def forward(self, x: torch.Tensor, x_lengths: torch.Tensor, g: torch.Tensor | None = None):
        if self.spk_conditioned:
            return self.enc_p(x, x_lengths, g)
        return self.enc_p(x, x_lengths)


class DurationStage(nn.Module):
    """Duration predictor: h [1, H, T_x], x_mask [1, 1, T_x], noise [1, 2, T_x] (+ g) -> logw [1, 1, T_x]."""

    def __init__(self, model: VITS) -> None:
        super().__init__()
        self.dp = model.dp

    def forward(self, h: torch.Tensor, x_mask: torch.Tensor, noise: torch.Tensor,
                g: torch.Tensor | None = None) -> torch.Tensor:
        return self.dp(h, x_mask, noise=noise, g=g)


class FlowStage(nn.Module):
    """Flow in reverse: z_p [1, C, T_y], y_mask [1, 1, T_y] (+ g) -> z [1, C, T_y]."""

    def __init__(self, model: VITS) -> None:
        super().__init__()
        self.flow = model.flow

    def forward(self, z_p: torch.Tensor, y_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return self.flow(z_p, y_mask, g=g)


class DecoderStage(nn.Module):
    """Waveform decoder: z [1, C, T_y] (+ g) -> audio [1, 1, T_y * hop] (first output only).

    ``layout="2d"``: the decoder runs as a :func:`~vitsq.models.layout2d.with_2d_layout` copy (on
    [B, C, 1, T], what XNNPACK runs without a layout transpose around every convolution; module
    names unchanged); the stage's inputs and outputs are the same.
    """

    def __init__(self, model: VITS, layout: str = "1d") -> None:
        super().__init__()
        if layout not in DECODER_LAYOUTS:
            raise ValueError(f"decoder layout {layout!r}: valid are {', '.join(DECODER_LAYOUTS)}")
        self.layout = layout
        self.dec = with_2d_layout(model.dec) if layout == "2d" else model.dec

    def forward(self, z: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if self.layout == "2d":
            return decode_2d(self.dec, z, g)
        out = self.dec(z, g=g)
        return out[0] if isinstance(out, tuple) else out  # MB-iSTFT returns (audio, sub-bands)


#: How the decoder stage computes: on [B, C, T] as the model does, or on [B, C, 1, T] (2-D convolutions)
DECODER_LAYOUTS = ("1d", "2d")
STAGE_CLASSES = {"encoder": EncoderStage, "duration": DurationStage, "flow": FlowStage, "decoder": DecoderStage}
STAGE_PREFIX = {"encoder": "enc_p", "duration": "dp", "flow": "flow", "decoder": "dec"}


def stage_modules(model: VITS, stages: tuple[str, ...] = PT2E_STAGES,
                  decoder_layout: str = "1d") -> dict[str, nn.Module]:
    """Float wrapper modules for ``stages`` (sharing the model's weights; a 2-D decoder copies them)."""
    return {s: (DecoderStage(model, decoder_layout) if s == "decoder" else STAGE_CLASSES[s](model)).eval()
            for s in stages}


def _speaker_input(model: VITS, stage: str) -> bool:
    c = model.config
    if c.n_speakers <= 1 or c.gin_channels <= 0:
        return False
    if stage == "encoder":
        return bool(getattr(c, "use_spk_conditioned_encoder", False))
    return True


def example_inputs(model: VITS, stage: str, length: int = 37) -> tuple[torch.Tensor, ...]:
    """Example export arguments for ``stage`` (batch 1, ``length`` tokens or frames)."""
    c = model.config
    g = (torch.zeros(1, c.gin_channels, 1),) if _speaker_input(model, stage) else ()
    if stage == "encoder":
        return (torch.ones(1, length, dtype=torch.long), torch.tensor([length], dtype=torch.long), *g)
    if stage == "duration":
        return (torch.zeros(1, c.hidden_channels, length), torch.ones(1, 1, length), torch.zeros(1, 2, length), *g)
    if stage == "flow":
        return (torch.zeros(1, c.inter_channels, length), torch.ones(1, 1, length), *g)
    return (torch.zeros(1, c.inter_channels, length), *g)


def stage_dynamic_shapes(model: VITS, stage: str) -> tuple:
    """``dynamic_shapes`` for :func:`torch.export.export` of ``stage`` (length axis dynamic)."""
    from torch.export import Dim

    g = (None,) if _speaker_input(model, stage) else ()
    if stage == "encoder":
        t = Dim("tokens", min=MIN_LEN, max=MAX_TOKENS)
        return ({1: t}, None, *g)
    if stage == "duration":
        t = Dim("tokens", min=MIN_LEN, max=MAX_TOKENS)
        return ({2: t}, {2: t}, {2: t}, *g)
    t = Dim("frames", min=MIN_LEN, max=MAX_FRAMES)
    if stage == "flow":
        return ({2: t}, {2: t}, *g)
    return ({2: t}, *g)


def export_stage(module: nn.Module, model: VITS, stage: str, length: int = 37):
    """``torch.export`` one stage wrapper with its dynamic length axis."""
    with torch.no_grad():
        return torch.export.export(module, example_inputs(model, stage, length),
                                   dynamic_shapes=stage_dynamic_shapes(model, stage), strict=False)


# ============================================================================ calibration capture
def capture_stage_inputs(model: VITS, calibration: Any, stages: tuple[str, ...]) -> dict[str, list[tuple]]:
    """Run FP32 inference on the calibration items and record each stage's real inputs."""
    from vitsq.quantize.calibration import run_items

    captured: dict[str, list[tuple]] = {s: [] for s in stages}
    hooks = []

    def hook_for(stage: str):
        def hook(_mod, args, kwargs):
            if stage == "encoder":
                x, lengths = args[0], args[1]
                g = args[2] if len(args) > 2 else kwargs.get("g")
                vals = (x, lengths) + ((g,) if _speaker_input(model, stage) else ())
            elif stage == "duration":
                g = kwargs.get("g", args[3] if len(args) > 3 else None)
                noise = kwargs.get("noise", args[2] if len(args) > 2 else None)
                vals = (args[0], args[1], noise) + ((g,) if _speaker_input(model, stage) else ())
            elif stage == "flow":
                g = kwargs.get("g", args[2] if len(args) > 2 else None)
                vals = (args[0], args[1]) + ((g,) if _speaker_input(model, stage) else ())
            else:
                g = kwargs.get("g", args[1] if len(args) > 1 else None)
                vals = (args[0],) + ((g,) if _speaker_input(model, stage) else ())
            captured[stage].append(tuple(v.detach().clone() for v in vals))
        return hook

    for s in stages:
        mod = getattr(model, STAGE_PREFIX[s])
        hooks.append(mod.register_forward_pre_hook(hook_for(s), with_kwargs=True))
    try:
        run_items(model, calibration.items, calibration.scales, desc="capturing stage inputs")
    finally:
        for h in hooks:
            h.remove()
    return captured


# ============================================================================ quantize
def resolve_recipe(model: VITS, recipe: PT2ERecipe) -> PT2ERecipe:
    """``recipe`` with ``stages=None`` / ``keep_float=None`` replaced by the measured preset for
    ``model``'s architecture (:func:`vitsq.quantize.recipes.best_for`)."""
    if recipe.stages is not None and recipe.keep_float is not None:
        return recipe
    from vitsq.quantize.recipes import best_for, pt2e_keep_float

    stages = best_for(model, "pt2e").stages if recipe.stages is None else recipe.stages
    keep = (pt2e_keep_float(getattr(model.config, "arch", "vits"), stages) if recipe.keep_float is None
            else recipe.keep_float)
    return recipe.replace(stages=stages, keep_float=keep)


def float_scopes(model: VITS, keep_float: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(prefixes, decoder_stage_starts)`` for ``keep_float`` entries.

    ``prefixes``: module paths whose graph nodes stay float (the layers of the named groups, or
    the named layers/prefixes). ``decoder_stage_starts``: for each ``dec.stage<i>`` group, the path
    of its upsampler (``dec.ups.<i>``): from its first node on, the decoder's own ops (residual
    sums, their average, activations) also stay float -- the XNNPACK quantizer annotates them on
    the ``dec`` module itself, so skipping the stage's modules by name leaves them INT8.
    """
    from vitsq.quantize.eager import layer_groups, resolve_keep_float

    modules = {n for n, _ in model.named_modules()}
    # a named module (``enc_p.encoder.attn_layers``) covers its non-layer ops too (matmuls, adds)
    prefixes = tuple(sorted(resolve_keep_float(model, keep_float) | {e.strip() for e in keep_float} & modules))
    groups = layer_groups(model)
    starts = []
    for entry in keep_float:
        entry = entry.strip()
        if entry.startswith("dec.stage") and entry in groups:
            starts.append(f"dec.ups.{int(entry[len('dec.stage'):])}")
    return prefixes, tuple(starts)


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    # non-strict export names paths like the module attributes; strip export's own prefixes
    for junk in ("L['self'].", "L__self__."):
        if path.startswith(junk):
            path = path[len(junk):]
    return path


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


def unannotate(gm: torch.fx.GraphModule, prefixes: tuple[str, ...], stage_starts: tuple[str, ...],
               quantize_adds: bool) -> list[str]:
    """Delete the quantization annotation of the nodes that must stay float; returns their names.

    (a) nodes inside a kept module (``prefixes``); (b) after the first node of a kept decoder
    stage (``stage_starts``), the nodes of the ``dec`` module itself; (c) unless
    ``quantize_adds``, every ``add``/``div`` (residual sums and their average).
    """
    adds = {torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor, torch.ops.aten.div.Tensor,
            torch.ops.aten.div_.Tensor}
    dropped = []
    in_tail = False
    for node in gm.graph.nodes:
        path = _module_path(node)
        if not in_tail and any(_under(path, s) for s in stage_starts):
            in_tail = True
        keep = (any(_under(path, p) for p in prefixes)
                or (in_tail and path == "dec")
                or (not quantize_adds and node.target in adds))
        if keep and node.meta.pop("quantization_annotation", None) is not None:
            dropped.append(node.name)
    # ops that share their quantization with a now-float node (views, cats, pooling: a
    # SharedQuantizationSpec) would point at nothing: they stay float too, until none is left
    gone = set(dropped)
    changed = bool(gone)
    while changed:
        changed = False
        for node in gm.graph.nodes:
            ann = node.meta.get("quantization_annotation")
            if ann is not None and _shares_with(ann, gone):
                del node.meta["quantization_annotation"]
                gone.add(node.name)
                dropped.append(node.name)
                changed = True
    return dropped


def _shares_with(annotation: Any, names: set[str]) -> bool:
    """Whether a node annotation has a SharedQuantizationSpec tied to a node in ``names``."""
    specs = list(annotation.input_qspec_map.values()) + [annotation.output_qspec]
    for spec in specs:
        ref = getattr(spec, "edge_or_node", None)
        if ref is None:
            continue
        refs = ref if isinstance(ref, tuple) else (ref,)
        if any(getattr(r, "name", None) in names for r in refs):
            return True
    return False


def _quantizer(recipe: PT2ERecipe, model: VITS | None = None):
    """XNNPACK quantizer whose annotations skip ``recipe.keep_float`` (and adds, see :func:`unannotate`).

    ``set_module_name(name, None)`` is refused by this torchao, so the quantizer's ``annotate``
    is wrapped: it annotates everything, then the float nodes lose their annotation.
    """
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    except ImportError as exc:
        raise UnsupportedError("the pt2e recipe needs executorch (pip install executorch==1.5.1)") from exc
    prefixes, starts = float_scopes(model, recipe.keep_float or ()) if model is not None else ((), ())
    quantize_adds = recipe.quantize_adds

    class _FilteredQuantizer(XNNPACKQuantizer):
        dropped: list[str] = []

        def annotate(self, gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
            gm = super().annotate(gm)
            self.dropped = unannotate(gm, prefixes, starts, quantize_adds)
            return gm

    return _FilteredQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=recipe.per_channel))


def quantize_stages(model: VITS, recipe: PT2ERecipe, calibration: Any, progress: bool = True,
                    decoder_layout: str = "1d") -> dict[str, Any]:
    """Quantized ``ExportedProgram`` per stage in ``recipe.stages`` (dynamic length axis kept).

    This is the function the ExecuTorch export calls. ``calibration``: a
    :class:`~vitsq.quantize.calibration.Calibration`; each stage is calibrated on the inputs it
    sees during real FP32 inference of those sentences. ``decoder_layout``: see
    :class:`DecoderStage` (the ExecuTorch export uses ``"2d"``).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from tqdm.auto import tqdm

    from vitsq.quantize.engines import _quiet

    model = model.eval()
    recipe = resolve_recipe(model, recipe)
    captured = capture_stage_inputs(model, calibration, recipe.stages)
    programs = {}
    for stage, module in stage_modules(model, recipe.stages, decoder_layout).items():
        with _quiet():
            ep = export_stage(module, model, stage)
            quantizer = _quantizer(recipe, model)
            prepared = prepare_pt2e(ep.module(), quantizer)
            log.debug("pt2e: %s: %d nodes left float", stage, len(quantizer.dropped))
            with torch.no_grad():
                for args in tqdm(captured[stage], desc=f"calibrating {stage}", leave=False, disable=not progress):
                    prepared(*args)
            converted = _drop_unused_attributes(convert_pt2e(prepared))
            programs[stage] = torch.export.export(converted, example_inputs(model, stage),
                                                  dynamic_shapes=stage_dynamic_shapes(model, stage), strict=False)
        log.info("pt2e: quantized stage %s on %d calibration inputs", stage, len(captured[stage]))
    return programs


def _drop_unused_attributes(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Remove parameters/buffers no graph node reads: after weight folding the float originals
    stay registered, and re-export would save them beside their INT8 copies."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in [n for n, _ in gm.named_parameters()] + [n for n, _ in gm.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            mod = gm.get_submodule(owner) if owner else gm
            delattr(mod, attr)
    gm.recompile()
    return gm


def _register_quant_ops() -> None:
    """``torch.export.load`` needs the quantized_decomposed ops registered (torchao does it on import)."""
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401


class StagedVITS(nn.Module):
    """VITS/VITS2 whose encoder/flow/decoder are replaced by (exported, quantized) stage modules.

    ``infer`` is ``VITS.infer`` itself: only the stage methods below are routed to the stages.
    """

    infer = VITS.infer
    latent = VITS.latent
    speaker_embedding = VITS.speaker_embedding
    predict_durations = VITS.predict_durations
    expand = staticmethod(VITS.expand)

    def __init__(self, base: VITS, stages: dict[str, nn.Module]) -> None:
        super().__init__()
        self.config = base.config
        self.base = base
        self.stages = nn.ModuleDict(stages)
        for name in ("emb_g", "dp"):
            if hasattr(base, name):
                setattr(self, name, getattr(base, name))

    def train(self, mode: bool = True) -> "StagedVITS":
        # exported graphs refuse .train()/.eval(); they are inference graphs already
        self.training = mode
        self.base.train(mode)
        return self

    def encode(self, x, x_lengths, g):
        if "encoder" not in self.stages:
            return self.base.encode(x, x_lengths, g)
        args = (x, x_lengths) + ((g,) if _speaker_input(self.base, "encoder") else ())
        return tuple(self.stages["encoder"](*args))

    def duration_logw(self, h, x_mask, g, dp_noise):
        if "duration" not in self.stages:
            return self.base.duration_logw(h, x_mask, g, dp_noise)
        return self.stages["duration"](h, x_mask, dp_noise, *((g,) if _speaker_input(self.base, "duration") else ()))

    def flow_reverse(self, z_p, y_mask, g):
        if "flow" not in self.stages:
            return self.base.flow_reverse(z_p, y_mask, g)
        return self.stages["flow"](z_p, y_mask, *((g,) if _speaker_input(self.base, "flow") else ()))

    def vocode(self, z, g):
        if "decoder" not in self.stages:
            return self.base.vocode(z, g)
        return self.stages["decoder"](z, *((g,) if _speaker_input(self.base, "decoder") else ())), {}


class StagedSynthesizer(TorchSynthesizer):
    """TorchSynthesizer over a :class:`StagedVITS`; the exported stages are batch-1 graphs, so
    a batch runs item by item (with the same per-item seeds, hence the same audio)."""

    def _run(self, batch, speakers, scales, seeds):
        outs = []
        for ids, spk, seed in zip(batch, speakers, seeds):
            outs.extend(super()._run([ids], [spk], scales, [seed]))
        return outs


def _synth(model: StagedVITS, name: str, frontend: Any, **kw: Any) -> StagedSynthesizer:
    return StagedSynthesizer(model, name, frontend, **kw)


def quantize_pt2e(synth: Any, recipe: PT2ERecipe, calibration: Any = None, progress: bool = True):
    """PT2E/XNNPACK INT8 of the static-shape stages; returns a QuantizedModel (torch-pt2e)."""
    from vitsq.manifest import source_info
    from vitsq.quantize.calibration import make_calibration

    if calibration is None:
        calibration = make_calibration(synth)
    recipe = resolve_recipe(synth.model, recipe)  # the artifact records the resolved keep_float
    programs = quantize_stages(synth.model, recipe, calibration, progress)
    staged = StagedVITS(synth.model, {s: ep.module() for s, ep in programs.items()})
    staged.programs = programs  # kept for saving
    q = _synth(staged, synth.name, synth.frontend, label=getattr(synth, "label", "trained"),
               quantization=quant_info(recipe, calibration, None),
               extra_info={"source": synth.describe().get("source")})
    return QuantizedModel(q, recipe, calibration, None, source_info(synth), kind=PT2E_KIND,
                          write_files=lambda folder: save_stages(staged, folder))


# ============================================================================ save / load
FLOAT_PARTS = "float_parts.pt"


def save_stages(model: StagedVITS, directory: Path) -> list[str]:
    """Write ``<stage>.pt2`` (quantized ExportedProgram) per stage and the float rest; returns file names."""
    files = []
    for stage, ep in model.programs.items():
        torch.export.save(ep, directory / f"{stage}.pt2")
        files.append(f"{stage}.pt2")
    quantized_prefixes = {STAGE_PREFIX[s] for s in model.programs}
    rest = {k: v for k, v in model.base.state_dict().items() if k.split(".")[0] not in quantized_prefixes}
    torch.save(rest, directory / FLOAT_PARTS)
    files.append(FLOAT_PARTS)
    return files


def load_pt2e(directory: Path, manifest: dict[str, Any], device: str = "cpu", **kw: Any):
    """Rebuild a StagedVITS from a ``torch-pt2e`` artifact (strict: every float key must match)."""
    from vitsq.manifest import manifest_config, verify_manifest
    from vitsq.quantize.eager import skeleton
    from vitsq.quantize.recipes import recipe_from_dict
    from vitsq.text import make_frontend

    if str(device) != "cpu":
        raise UnsupportedError(f"pt2e artifacts run on the CPU, not {device!r}")
    verify_manifest(directory, manifest)
    q = manifest.get("quantization") or {}
    recipe = recipe_from_dict({k: q[k] for k in ("recipe", "version", "per_channel", "stages", "keep_float",
                                                 "quantize_adds") if k in q})
    config = manifest_config(manifest)
    base = skeleton(config).eval()
    rest = torch.load(directory / FLOAT_PARTS, map_location="cpu", weights_only=True)
    quantized_prefixes = {STAGE_PREFIX[s] for s in recipe.stages}
    for name, child in base.named_children():
        if name in quantized_prefixes:
            continue
        sub = {k[len(name) + 1:]: v for k, v in rest.items() if k.split(".")[0] == name}
        try:
            child.load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{directory}/{FLOAT_PARTS}: {name} does not match the config: {str(exc)[:200]}") from exc
    unknown = {k.split(".")[0] for k in rest} - {n for n, _ in base.named_children()}
    if unknown:
        raise ModelLoadError(f"{directory}/{FLOAT_PARTS} has unexpected modules {sorted(unknown)}")
    _register_quant_ops()
    try:
        programs = {s: torch.export.load(directory / f"{s}.pt2") for s in recipe.stages}
    except RuntimeError as exc:
        raise ModelLoadError(f"{directory}: cannot load the exported stages: {exc}") from exc
    staged = StagedVITS(base, {s: ep.module() for s, ep in programs.items()})
    staged.programs = programs
    src = manifest.get("source") or {}
    return _synth(staged, src.get("name", directory.name), make_frontend(config, dictionary=kw.get("dictionary")),
                  label=src.get("weights", "trained"), quantization=q,
                  artifact_paths=[directory / f for f in manifest["files"]],
                  extra_info={"source": src.get("source"), "artifact": str(directory)})


def load_pt2e_artifact(directory: Path, manifest: dict[str, Any], backend: str = "torch", device: str = "cpu",
                       **kw: Any):
    """Load a ``torch-pt2e`` artifact (float model parts + exported INT8 stages)."""
    directory = Path(directory)
    check_torch_backend(directory, PT2E_KIND, backend)
    return load_pt2e(directory, manifest, device=device, **kw)
