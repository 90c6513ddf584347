"""Eager ``torch.ao`` static INT8: QuantStub/DeQuantStub around every Conv1d/ConvTranspose1d/Linear.

Each quantizable layer is replaced by a :class:`torch.ao.quantization.QuantWrapper` (quantize
input -> INT8 layer -> dequantize output), so tensors between layers stay float and every
other op (attention math, flows, activations, masks) runs unchanged. That is the seed's method;
what we add: observer/engine/per-channel options, a numerics probe per engine/layer pair
(:mod:`vitsq.quantize.engines`), real calibration data (:mod:`vitsq.quantize.calibration`), a
computed coverage report, and layer groups for sensitivity and mixed precision.

Flow: :func:`prepare_all` wraps + observes every candidate layer once; after calibration,
:func:`convert_subset` makes an INT8 model from any subset of the observed layers (the rest
float). Sensitivity analysis reuses one calibration for all subsets.

Measured here (2-core CPU shared with other jobs, so timings are rough; `vitsq bench` is the
real benchmark). joe, all layers INT8, fbgemm, 16 calibration sentences: state dict 62.7 MB ->
16.3 MB (99.53 % of weights INT8); distance to FP32 with the same noise on 4 held-out sentences:
log-mel L1 1.68 nats, MCD 59 dB (measured before the MCD scale fix; /6.3 on the current scale), all 4 lengths changed (INT8 encoder/duration predictor moves
durations). qnnpack (8-bit activations instead of fbgemm's 7): L1 1.29. Sensitivity ranks the
last decoder stage and the final conv worst (an INT8 noise floor in silence: SNR 25 dB alone,
but L1 0.94), then the duration predictor (durations change). Keeping dp, dec.stage2,
dec.conv_post float (4.3 % of weights): L1 0.80, MCD 17 dB (old scale), 18.0 MB. RTF ratios flipped between
runs under load (INT8/FP32 0.85 with 2 threads in one run, 1.54 with 1 thread in another).
Vosk VITS2 preset (random weights, size only): 127.7 MB -> 32.7 MB, 99.69 % INT8.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from vitsq.backends.torch import TorchSynthesizer
from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.quantize.artifact import EAGER_FILE, EAGER_KIND, QuantizedModel, check_torch_backend, quant_info
from vitsq.quantize.engines import (
    QUANTIZABLE,
    _quiet,
    check_engine,
    default_engine,
    probe_layer,
    reduce_range,
    supports_per_channel,
    use_engine,
)
from vitsq.quantize.recipes import EagerRecipe

log = logging.getLogger(__name__)


# ============================================================================ layers and groups
def candidate_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Conv1d/ConvTranspose1d/Linear of ``model`` by module name, in module order."""
    return {n: m for n, m in model.named_modules() if type(m) in QUANTIZABLE}


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Sensitivity groups -> candidate layer names.

    ``enc_p`` text encoder, ``dp`` duration predictor, ``flow``, decoder split into
    ``dec.conv_pre``, ``dec.stage<i>`` (upsampler i with its residual blocks), ``dec.conv_post``
    (and ``dec.other`` for any remaining decoder layer); anything else by its top-level name.
    """
    names = list(candidate_layers(model))
    n_kernels = len(getattr(model.config, "resblock_kernel_sizes", ())) or 1
    groups: dict[str, list[str]] = {}

    def add(group: str, name: str) -> None:
        groups.setdefault(group, []).append(name)

    for name in names:
        parts = name.split(".")
        if parts[0] == "dec":
            if parts[1] == "ups":
                add(f"dec.stage{int(parts[2])}", name)
            elif parts[1] == "resblocks":
                add(f"dec.stage{int(parts[2]) // n_kernels}", name)
            elif parts[1] in ("conv_pre", "conv_post"):
                add(f"dec.{parts[1]}", name)
            else:
                add("dec.other", name)
        else:
            add(parts[0], name)
    return groups


def resolve_keep_float(model: nn.Module, entries: Iterable[str]) -> set[str]:
    """Layer names for ``keep_float`` entries: group names, layer names, or module prefixes.

    Every entry must name at least one quantizable layer; the unknown ones are reported together
    (:class:`InputError`), with the valid groups and module prefixes of ``model``.
    """
    layers = candidate_layers(model)
    groups = layer_groups(model)
    out: set[str] = set()
    unknown = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if entry in groups:
            out.update(groups[entry])
            continue
        hit = [n for n in layers if n == entry or n.startswith(entry + ".")]
        if not hit:
            unknown.append(entry)
        out.update(hit)
    if unknown:
        raise InputError(f"--keep-float: unknown layer name{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(u) for u in unknown)} (no quantizable layer of this model); valid are "
                         f"the groups {', '.join(groups)}, the module prefixes {', '.join(keep_float_prefixes(model))}, "
                         f"any layer name under them (e.g. {next(iter(layers), '-')}), or the keywords "
                         f"preset, none, auto")
    return out


def keep_float_prefixes(model: nn.Module) -> list[str]:
    """The module prefixes (two levels deep) that hold quantizable layers, in module order."""
    seen: dict[str, None] = {}
    for name in candidate_layers(model):
        parts = name.split(".")
        seen.setdefault(".".join(parts[:2]) if len(parts) > 2 else name, None)
    return list(seen)


# ============================================================================ qconfig
def activation_observer(recipe: EagerRecipe, engine: str):
    import torch.ao.quantization as tq

    rr = reduce_range(engine) if recipe.reduce_range is None else recipe.reduce_range
    if recipe.act_observer == "histogram":
        return tq.HistogramObserver.with_args(reduce_range=rr)
    if recipe.act_observer == "minmax":
        return tq.MinMaxObserver.with_args(reduce_range=rr)
    return tq.MovingAverageMinMaxObserver.with_args(reduce_range=rr, averaging_constant=0.01)


def layer_qconfig(layer: nn.Module, recipe: EagerRecipe, engine: str, act=None):
    """QConfig for one layer: symmetric INT8 weights, per-channel where the recipe asks and torch can."""
    import torch.ao.quantization as tq

    if recipe.per_channel and supports_per_channel(layer):
        w = tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    else:
        w = tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return tq.QConfig(activation=act or activation_observer(recipe, engine), weight=w)


def weight_scheme(layer: nn.Module, recipe: EagerRecipe) -> str:
    return "per-channel" if recipe.per_channel and supports_per_channel(layer) else "per-tensor"


# ============================================================================ prepare / convert
@dataclass
class LayerDecision:
    """Why a candidate layer is or is not quantized."""

    quantize: bool
    reason: str = ""
    scheme: str = ""


@dataclass
class Prepared:
    """A model whose candidate layers are wrapped and observed, plus the float originals."""

    model: nn.Module  # observed (after calibration: holds the activation ranges)
    float_layers: dict[str, nn.Module]  # name -> the original float layer
    decisions: dict[str, LayerDecision]  # every candidate layer
    recipe: EagerRecipe
    engine: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def observed(self) -> list[str]:
        return [n for n, d in self.decisions.items() if d.quantize]


def resolve_recipe(recipe: EagerRecipe) -> EagerRecipe:
    """Fill the default engine and check it runs here (UnsupportedError naming the valid ones)."""
    engine = recipe.engine or default_engine()
    check_engine(engine)
    rr = reduce_range(engine) if recipe.reduce_range is None else recipe.reduce_range
    return recipe.replace(engine=engine, reduce_range=rr)


def prepare_all(float_model: nn.Module, recipe: EagerRecipe, keep_float: set[str] = frozenset(),
                probe: bool = True) -> Prepared:
    """Copy ``float_model``, wrap every candidate layer not in ``keep_float`` and not broken on
    the engine, and insert observers (``torch.ao.quantization.prepare``)."""
    import torch.ao.quantization as tq

    recipe = resolve_recipe(recipe)
    engine = recipe.engine
    model = copy.deepcopy(float_model).eval()
    decisions: dict[str, LayerDecision] = {}
    float_layers: dict[str, nn.Module] = {}
    for name, layer in candidate_layers(model).items():
        scheme = weight_scheme(layer, recipe)
        if name in keep_float:
            decisions[name] = LayerDecision(False, "kept float (keep_float)", "float")
            continue
        if probe:
            pr = probe_layer(layer, engine, recipe.per_channel)
            if not pr.ok:
                what = pr.error or f"{pr.relative_error:.0%} relative error"
                decisions[name] = LayerDecision(False, f"kept float: {engine} INT8 {pr.layer_type} is wrong here ({what})",
                                                "float")
                continue
        decisions[name] = LayerDecision(True, "int8", scheme)
        float_layers[name] = copy.deepcopy(layer)  # prepare() adds observers to `layer` in place
        wrapper = tq.QuantWrapper(layer)
        wrapper.qconfig = layer_qconfig(layer, recipe, engine)
        model.set_submodule(name, wrapper)
    with _quiet():
        tq.prepare(model, inplace=True)
    return Prepared(model, float_layers, decisions, recipe, engine)


def convert_subset(prepared: Prepared, quantize: Iterable[str] | None = None) -> nn.Module:
    """INT8 model where only the observed layers in ``quantize`` (default: all) are quantized."""
    import torch.ao.quantization as tq

    wanted = set(prepared.observed if quantize is None else quantize)
    unknown = wanted - set(prepared.observed)
    if unknown:
        raise InputError(f"layers {sorted(unknown)[:5]} were not observed during calibration")
    model = copy.deepcopy(prepared.model)
    for name in prepared.observed:
        if name not in wanted:
            model.set_submodule(name, copy.deepcopy(prepared.float_layers[name]))
    with use_engine(prepared.engine), _quiet():
        tq.convert(model, inplace=True)
    return model.eval()


def skeleton(config: Any) -> nn.Module:
    """A float model of the right architecture for ``config`` (weights to be overwritten)."""
    if config.arch == "vits":
        from vitsq.models.vits import VITS

        return VITS(config)
    from vitsq.models.vits2 import VITS2

    return VITS2(config)


def rebuild_quantized(config: Any, recipe: EagerRecipe, quantized: Iterable[str]) -> nn.Module:
    """The INT8 module structure of an artifact, ready for ``load_state_dict`` (strict)."""
    import torch.ao.quantization as tq

    recipe = resolve_recipe(recipe)
    model = skeleton(config).eval()
    layers = candidate_layers(model)
    quantized = list(quantized)
    missing = [n for n in quantized if n not in layers]
    if missing:
        raise InputError(f"artifact lists quantized layers {missing[:3]} that this architecture does not have")
    act = tq.MinMaxObserver.with_args(reduce_range=bool(recipe.reduce_range))  # ranges come from the state dict
    for name in quantized:
        wrapper = tq.QuantWrapper(layers[name])
        wrapper.qconfig = layer_qconfig(layers[name], recipe, recipe.engine, act=act)
        model.set_submodule(name, wrapper)
    with use_engine(recipe.engine), _quiet():
        tq.prepare(model, inplace=True)
        tq.convert(model, inplace=True)
    return model.eval()


# ============================================================================ coverage
@dataclass(frozen=True)
class LayerCoverage:
    name: str
    type: str
    params: int
    quantized: bool
    reason: str  # "int8" or why it stays float
    scheme: str  # per-tensor / per-channel / float


@dataclass(frozen=True)
class Coverage:
    """Every parameter-owning layer of the float model: quantized or float, and how many weights."""

    layers: tuple[LayerCoverage, ...]

    @property
    def total_params(self) -> int:
        return sum(l.params for l in self.layers)

    @property
    def quantized_params(self) -> int:
        return sum(l.params for l in self.layers if l.quantized)

    @property
    def share_quantized(self) -> float:
        """Quantized parameters / all parameters of the inference model."""
        return self.quantized_params / self.total_params if self.total_params else 0.0

    @property
    def float_layers(self) -> list[str]:
        return [l.name for l in self.layers if not l.quantized]

    def summary(self) -> dict[str, Any]:
        return {"layers": len(self.layers), "quantized_layers": sum(l.quantized for l in self.layers),
                "total_params": self.total_params, "quantized_params": self.quantized_params,
                "share_quantized": round(self.share_quantized, 6)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "per_layer": [l.__dict__ for l in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Coverage":
        return cls(tuple(LayerCoverage(**l) for l in d["per_layer"]))

    def table(self, only_float: bool = False) -> str:
        """Plain-text table, one row per layer, totals at the end."""
        rows = [f"{'layer':<42} {'type':<16} {'params':>10}  {'scheme':<12} status"]
        for l in self.layers:
            if only_float and l.quantized:
                continue
            rows.append(f"{l.name:<42} {l.type:<16} {l.params:>10,}  {l.scheme:<12} {l.reason}")
        s = self.summary()
        rows.append(f"{s['quantized_layers']}/{s['layers']} layers INT8; {s['quantized_params']:,} of "
                    f"{s['total_params']:,} parameters quantized ({self.share_quantized:.2%})")
        return "\n".join(rows)


def compute_coverage(float_model: nn.Module, decisions: dict[str, LayerDecision],
                     quantized: Iterable[str]) -> Coverage:
    """Coverage of a model built by :func:`convert_subset` with ``quantized`` layers."""
    quantized = set(quantized)
    rows = []
    for name, mod in float_model.named_modules():
        own = sum(p.numel() for p in mod.parameters(recurse=False))
        if own == 0:
            continue
        if name in decisions:
            d = decisions[name]
            if name in quantized:
                rows.append(LayerCoverage(name, type(mod).__name__, own, True, "int8", d.scheme))
            else:
                reason = d.reason if not d.quantize else "kept float (mixed precision)"
                rows.append(LayerCoverage(name, type(mod).__name__, own, False, reason, "float"))
        else:
            why = "float: not a Conv1d/ConvTranspose1d/Linear (no INT8 kernel in this recipe)"
            rows.append(LayerCoverage(name, type(mod).__name__, own, False, why, "float"))
    return Coverage(tuple(rows))


# ============================================================================ calibrate + quantize
def calibrate(prepared: Prepared, calibration: Any, progress: bool = True) -> None:
    """Run the calibration items through the observed model (engine set, seeded noise)."""
    from vitsq.quantize.calibration import run_items

    with use_engine(prepared.engine), _quiet():
        run_items(prepared.model, calibration.items, calibration.scales,
                  desc=f"calibrating ({len(calibration.items)} sentences)" if progress else None)


def quantize_eager(synth: Any, recipe: EagerRecipe, calibration: Any = None, progress: bool = True,
                   keep_float_layers: Iterable[str] = ()):
    """Eager static INT8 of a torch synthesizer; returns a QuantizedModel (``.synth``, ``.save``).

    ``recipe.keep_float`` (names, prefixes or groups) and ``keep_float_layers`` (exact layer
    names, e.g. from :func:`vitsq.quantize.sensitivity.auto_keep_float`) stay float.
    """
    from vitsq.quantize.calibration import make_calibration

    float_model = synth.model
    if str(getattr(synth, "device", "cpu")) != "cpu":
        raise UnsupportedError("eager INT8 runs on the CPU quantized engines only: load the model with device='cpu'")
    recipe = resolve_recipe(recipe)
    keep = resolve_keep_float(float_model, recipe.keep_float) | set(keep_float_layers)
    if keep_float_layers:
        recipe = recipe.replace(keep_float=tuple(sorted(set(recipe.keep_float) | set(keep_float_layers))))
    if calibration is None:
        calibration = make_calibration(synth)
    prepared = prepare_all(float_model, recipe, keep)
    calibrate(prepared, calibration, progress)
    model = convert_subset(prepared)
    coverage = compute_coverage(float_model, prepared.decisions, prepared.observed)
    log.info("eager INT8 (%s): %s", recipe.engine, coverage.summary())
    return _quantized_model(synth, model, recipe, calibration, coverage)


def _quantized_model(float_synth: Any, model: Any, recipe: EagerRecipe, calibration: Any,
                     coverage: Any) -> QuantizedModel:
    from vitsq.manifest import source_info

    synth = EagerInt8Synthesizer(model, float_synth.name, float_synth.frontend, engine=recipe.engine,
                                 label=getattr(float_synth, "label", "trained"),
                                 quantization=quant_info(recipe, calibration, coverage),
                                 extra_info={"source": float_synth.describe().get("source")})

    def write_files(folder: Path) -> list[str]:
        torch.save(model.state_dict(), folder / EAGER_FILE)
        return [EAGER_FILE]

    return QuantizedModel(synth, recipe, calibration, coverage, source_info(float_synth), kind=EAGER_KIND,
                          write_files=write_files)


# ============================================================================ artifacts


class EagerInt8Synthesizer(TorchSynthesizer):
    """A TorchSynthesizer over an eager INT8 module; runs every call on the artifact's engine."""

    def __init__(self, model: Any, name: str, frontend: Any, *, engine: str, **kwargs: Any) -> None:
        if str(kwargs.get("device", "cpu")) != "cpu":
            raise UnsupportedError(f"eager INT8 models run on the CPU only (quantized engine {engine}), "
                                   f"not on {kwargs['device']!r}: use device='cpu'")
        super().__init__(model, name, frontend, **kwargs)
        self.engine = engine

    def _run(self, batch, speakers, scales, seeds):
        with self._engine():
            return super()._run(batch, speakers, scales, seeds)

    def _engine(self) -> Any:
        from vitsq.quantize.engines import use_engine

        return use_engine(self.engine)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["engine"] = self.engine
        return d



def _frontend(config: Any, kw: dict[str, Any]):
    from vitsq.text import make_frontend

    return make_frontend(config, dictionary=kw.get("dictionary"))


def load_eager_artifact(directory: Path, manifest: dict[str, Any], backend: str = "torch", device: str = "cpu",
                        engine: str | None = None, **kw: Any) -> EagerInt8Synthesizer:
    """Load a ``torch-eager`` artifact; ``engine`` (optional) must equal the one it was calibrated on."""
    from vitsq.manifest import manifest_config, verify_manifest
    from vitsq.quantize.engines import available_engines
    from vitsq.quantize.recipes import recipe_from_dict

    directory = Path(directory)
    check_torch_backend(directory, EAGER_KIND, backend)
    verify_manifest(directory, manifest)
    q = manifest.get("quantization") or {}
    try:
        recipe = recipe_from_dict({k: q[k] for k in ("recipe", "version", "per_channel", "act_observer",
                                                      "engine", "keep_float")}
                                  | ({"reduce_range": q["reduce_range"]} if "reduce_range" in q else {}))
    except KeyError as exc:
        raise ModelLoadError(f"{directory}/vitsq.json: quantization lacks {exc}") from exc
    if not isinstance(recipe, EagerRecipe) or not recipe.engine:
        raise ModelLoadError(f"{directory}/vitsq.json: not an eager recipe with an engine")
    if engine is not None and engine != recipe.engine:
        raise UnsupportedError(f"{directory} was calibrated and packed for quantized engine {recipe.engine!r}; "
                               f"it cannot run on {engine!r} (re-quantize with --engine {engine})")
    if recipe.engine not in available_engines():
        raise UnsupportedError(f"{directory} needs quantized engine {recipe.engine!r}, which this machine lacks "
                               f"(available: {', '.join(available_engines())}): re-quantize here with one of them")
    if recipe.reduce_range is False:
        from vitsq.quantize.engines import full_range_ok

        if not full_range_ok(recipe.engine):
            raise UnsupportedError(f"{directory} uses 8-bit activations, which saturate in this CPU's "
                                   f"{recipe.engine} kernels (no VNNI): re-quantize here (7-bit is chosen "
                                   f"automatically)")
    config = manifest_config(manifest)
    model = rebuild_quantized(config, recipe, q.get("quantized_layers", []))
    state = torch.load(directory / EAGER_FILE, map_location="cpu", weights_only=False)
    try:
        with use_engine(recipe.engine):  # packed weights are re-packed for the current engine
            model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{directory}/{EAGER_FILE} does not match its manifest: {str(exc)[:300]}") from exc
    src = manifest.get("source") or {}
    return EagerInt8Synthesizer(model, src.get("name", directory.name), _frontend(config, kw), engine=recipe.engine,
                                device=device, label=src.get("weights", "trained"),
                                artifact_paths=[directory / EAGER_FILE], quantization=q,
                                extra_info={"source": src.get("source"), "artifact": str(directory)})
