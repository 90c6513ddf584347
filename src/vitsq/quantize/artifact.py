"""Quantized models in memory (:class:`QuantizedModel`) and on disk (artifact folders).

An artifact folder holds the inference weights (``model.pt``: the state dict of the INT8
module; or ``stages.pt2`` files for PT2E) and ``vitsq.json`` (source model and its hash, recipe
and version, engine, calibration set hash, coverage). ``vitsq.load(DIR)`` reads it through
:func:`load_eager_artifact` / :func:`load_pt2e_artifact` (registered in
:data:`vitsq.registry.ARTIFACT_LOADERS`). Loading is strict: hashes are verified, the state
dict must match exactly, and the engine used at calibration must be available and is the only
one used for inference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitsq.errors import ModelLoadError, UnsupportedError
from vitsq.synth import TorchSynthesizer

log = logging.getLogger(__name__)

EAGER_KIND = "torch-eager"
PT2E_KIND = "torch-pt2e"
EAGER_FILE = "model.pt"


class EagerInt8Synthesizer(TorchSynthesizer):
    """A TorchSynthesizer over an eager INT8 module; runs every call on the artifact's engine."""

    def __init__(self, model: Any, name: str, frontend: Any, *, engine: str, **kwargs: Any) -> None:
        if str(kwargs.get("device", "cpu")) != "cpu":
            raise UnsupportedError(f"eager INT8 models run on the CPU only (quantized engine {engine}), "
                                   f"not on {kwargs['device']!r}: use device='cpu'")
        super().__init__(model, name, frontend, **kwargs)
        self.engine = engine

    def _run(self, batch, speakers, scales, seeds):
        from vitsq.quantize.engines import use_engine

        with use_engine(self.engine):
            return super()._run(batch, speakers, scales, seeds)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["engine"] = self.engine
        return d


@dataclass
class QuantizedModel:
    """Result of :func:`vitsq.quantize.quantize` for the torch recipes."""

    synth: TorchSynthesizer
    recipe: Any
    calibration: Any
    coverage: Any = None
    source: dict[str, Any] = field(default_factory=dict)
    kind: str = EAGER_KIND
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_eager(cls, float_synth: Any, model: Any, recipe: Any, calibration: Any, coverage: Any) -> "QuantizedModel":
        from vitsq.manifest import source_info

        synth = EagerInt8Synthesizer(model, float_synth.name, float_synth.frontend, engine=recipe.engine,
                                     label=getattr(float_synth, "label", "trained"),
                                     quantization=_quant_info(recipe, calibration, coverage),
                                     extra_info={"source": float_synth.describe().get("source")})
        return cls(synth, recipe, calibration, coverage, source_info(float_synth))

    @property
    def quantization(self) -> dict[str, Any]:
        return _quant_info(self.recipe, self.calibration, self.coverage, **self.extra)

    def save(self, directory: str | Path, *, force: bool = False) -> Path:
        """Write the artifact folder (weights + ``vitsq.json``); returns the folder.

        The folder is written whole to a temporary sibling and moved into place; an existing
        ``directory`` is refused unless ``force`` and it is a vitsq artifact, which is then
        replaced whole (never merged with: no weights of one kind beside a manifest of another).
        """
        from vitsq.manifest import write_manifest
        from vitsq.outputs import atomic_output

        directory = Path(directory).expanduser()
        with atomic_output(directory, kind="dir", force=force, what="artifact folder") as tmp:
            if self.kind == EAGER_KIND:
                torch.save(self.synth.model.state_dict(), tmp / EAGER_FILE)
                files = [EAGER_FILE]
            else:
                from vitsq.quantize.pt2e import save_stages

                files = save_stages(self.synth.model, tmp)
            write_manifest(tmp, self.kind, config=self.synth.config, files=files, source=self.source,
                           quantization=self.quantization,
                           coverage=self.coverage.to_dict() if self.coverage is not None else None)
        self.synth.artifact_paths = [directory / f for f in files]
        log.info("wrote %s (%s, %.2f MB)", directory, self.kind, self.synth.size_bytes() / 1e6)
        return directory


def _quant_info(recipe: Any, calibration: Any, coverage: Any, **extra: Any) -> dict[str, Any]:
    info = {**recipe.to_dict(), "calibration": calibration.to_dict() if calibration is not None else None}
    if getattr(recipe, "engine", None):
        info["engine"] = recipe.engine
    if coverage is not None:
        info["coverage"] = coverage.summary()
        info["quantized_layers"] = [l.name for l in coverage.layers if l.quantized]
    info.update(extra)
    return info


def _frontend(config: Any, kw: dict[str, Any]):
    from vitsq.text import make_frontend

    return make_frontend(config, dictionary=kw.get("dictionary"))


def _check_backend(directory: Path, kind: str, backend: str) -> None:
    if backend != "torch":
        raise UnsupportedError(f"{directory} is a {kind} artifact: it runs on the torch backend, not {backend!r}")


def load_eager_artifact(directory: Path, manifest: dict[str, Any], backend: str = "torch", device: str = "cpu",
                        engine: str | None = None, **kw: Any) -> EagerInt8Synthesizer:
    """Load a ``torch-eager`` artifact; ``engine`` (optional) must equal the one it was calibrated on."""
    from vitsq.manifest import manifest_config, verify_manifest
    from vitsq.quantize.eager import rebuild_quantized
    from vitsq.quantize.engines import available_engines, use_engine
    from vitsq.quantize.recipes import EagerRecipe, recipe_from_dict

    directory = Path(directory)
    _check_backend(directory, EAGER_KIND, backend)
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


def load_pt2e_artifact(directory: Path, manifest: dict[str, Any], backend: str = "torch", device: str = "cpu",
                       **kw: Any):
    """Load a ``torch-pt2e`` artifact (float model parts + exported INT8 stages)."""
    from vitsq.quantize.pt2e import load_pt2e

    directory = Path(directory)
    _check_backend(directory, PT2E_KIND, backend)
    return load_pt2e(directory, manifest, device=device, **kw)
