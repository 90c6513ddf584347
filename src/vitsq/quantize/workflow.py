"""One call from options to an artifact folder (what ``vitsq quantize`` runs).

Builds the recipe from flat options, the calibration set, optionally ranks sensitivity and
picks float layers (``keep_float="auto"`` with a budget), quantizes, and saves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitsq.errors import InputError, UnsupportedError
from vitsq.quantize.dispatch import quantize
from vitsq.quantize.recipes import (
    EagerRecipe,
    OrtDynamicRecipe,
    OrtStaticRecipe,
    PT2ERecipe,
    best_for,
    recipe_class,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizeOptions:
    """Flat options as the CLI gives them; :func:`build_recipe` turns them into a recipe."""

    recipe: str = "eager"
    engine: str | None = None
    per_channel: bool = False
    observer: str | None = None  # eager activation observer (None: histogram)
    calibrate_method: str | None = None  # ort-static activation ranges (None: minmax)
    static_prefixes: tuple[str, ...] | None = None  # ort-static: where activations are INT8 (None = decoder)
    calib: int | None = None
    calib_file: Path | None = None
    keep_float: str = ""  # ""/"preset" (the preset's), "none", "auto", or comma-separated names
    budget: float | None = None
    granularity: str = "groups"
    sensitivity: bool = False
    seed: int | None = None  # calibration noise seed (None: 0)
    noise_scale: float | None = None
    length_scale: float | None = None
    noise_w: float | None = None
    streaming: bool = False  # ort-static: also write the streaming graphs (docs/streaming.md)


@dataclass
class QuantizeResult:
    out_dir: Path
    quantized: Any  # QuantizedModel
    coverage: Any = None
    sensitivity: Any = None  # SensitivityReport
    plan: Any = None  # MixedPrecisionPlan
    summary: dict | None = None


KEEP_FLOAT_KEYWORDS = ("preset", "none", "auto")


def _names(spec: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    words = [n for n in names if n in KEEP_FLOAT_KEYWORDS]
    if words and len(names) > 1:
        raise InputError(f"--keep-float {words[0]!r} is a keyword and stands alone; give either one of "
                         f"{', '.join(KEEP_FLOAT_KEYWORDS)} or comma-separated layer/group names, not both")
    return names


def check_options(opts: QuantizeOptions) -> None:
    """Refuse options the recipe does not take, without the model (before it loads)."""
    cls = recipe_class(opts.recipe)
    names = _names(opts.keep_float)
    auto = names == ("auto",)
    if cls is not EagerRecipe:
        for flag, given in (("--engine", opts.engine), ("--observer", opts.observer),
                            ("--keep-float auto", auto), ("--sensitivity", opts.sensitivity)):
            if given:
                raise UnsupportedError(f"{flag} applies to the eager recipe only, not {opts.recipe!r}")
    if cls is OrtDynamicRecipe:
        for flag, given in (("--calib", opts.calib is not None), ("--calib-file", opts.calib_file),
                            ("--seed", opts.seed is not None), ("--noise-scale", opts.noise_scale is not None),
                            ("--length-scale", opts.length_scale is not None), ("--noise-w", opts.noise_w is not None)):
            if given:
                raise UnsupportedError(f"{flag} sets calibration; ort-dynamic is not calibrated (activation ranges "
                                       f"are measured at run time)")
        if names and names not in (("preset",), ("none",)):
            raise UnsupportedError("--keep-float applies to the eager, pt2e and ort-static recipes; ort-dynamic "
                                   "quantizes the weights of every Conv/MatMul (op types, not layers)")
    if opts.streaming and cls is not OrtStaticRecipe:
        raise UnsupportedError(f"--streaming applies to the ort-static recipe only, not {opts.recipe!r} (the PyTorch "
                               "backend streams every eager model as it is; ExecuTorch: vitsq export --format "
                               "executorch)")
    if opts.calibrate_method is not None and cls is not OrtStaticRecipe:
        raise UnsupportedError(f"--calibrate-method applies to the ort-static recipe only, not {opts.recipe!r}")
    if auto and opts.budget is None:
        raise InputError("--keep-float auto needs --budget (max log-mel L1 to FP32 in nats, e.g. 0.15)")
    if opts.budget is not None and not auto:
        raise InputError("--budget only applies with --keep-float auto")


def build_recipe(opts: QuantizeOptions, model: Any):
    """The recipe the options mean for ``model``: the measured preset of ``opts.recipe`` for its
    family (:func:`~vitsq.quantize.recipes.best_for`), changed only by what the options say.

    ``keep_float``: ``""``/``"preset"`` keeps the preset's float layers; ``"none"``: every layer
    INT8; ``"auto"``: nothing preset (eager; the sensitivity search adds layers); names: exactly those.
    Other options (engine, observer, calibration method, static prefixes, per-channel) replace the
    preset's value when given.
    """
    check_options(opts)
    recipe = best_for(model, opts.recipe)
    names = _names(opts.keep_float)
    if names in (("none",), ("auto",)):
        recipe = recipe.replace(keep_float=())
    elif names and names != ("preset",):
        recipe = recipe.replace(keep_float=names)
    changes: dict[str, Any] = {}
    if opts.per_channel:
        changes["per_channel"] = True
    if opts.engine is not None:
        changes["engine"] = opts.engine
    if opts.observer is not None:
        changes["act_observer"] = opts.observer
    if opts.calibrate_method is not None:
        changes["calibrate_method"] = opts.calibrate_method
    if opts.static_prefixes is not None:
        changes["static_prefixes"] = opts.static_prefixes
    return recipe.replace(**changes) if changes else recipe


def check_keep_float(synth: Any, recipe: Any) -> None:
    """Refuse keep-float names that name nothing in ``synth``'s model, before any slow work
    (:class:`InputError` naming them and listing the valid groups/prefixes)."""
    keep = getattr(recipe, "keep_float", None)
    if not keep:
        return
    if isinstance(recipe, (EagerRecipe, PT2ERecipe)):
        from vitsq.quantize.eager import resolve_keep_float

        resolve_keep_float(synth.model, keep)
    elif isinstance(recipe, OrtStaticRecipe):
        from vitsq.quantize.ort import check_keep_float_scope

        check_keep_float_scope(synth, recipe)


def quantize_to_dir(synth: Any, out_dir: str | Path, opts: QuantizeOptions, *, force: bool = False) -> QuantizeResult:
    """Quantize ``synth`` as ``opts`` say and write the artifact folder ``out_dir``.

    The folder is checked before calibrating and written whole at the end (:mod:`vitsq.outputs`):
    an existing one is refused unless ``force`` and it is a vitsq artifact, replaced whole then.
    """
    from vitsq.evaluate.sentences import read_sentence_file
    from vitsq.outputs import check_output
    from vitsq.quantize.calibration import make_calibration

    out_dir = check_output(out_dir, kind="dir", force=force, what="artifact folder")
    recipe = build_recipe(opts, synth)
    auto = opts.keep_float.strip() == "auto"
    check_keep_float(synth, recipe)
    sentences = read_sentence_file(opts.calib_file) if opts.calib_file else None
    n = opts.calib if opts.calib is not None or sentences is None else len(sentences)
    calibration = None if isinstance(recipe, OrtDynamicRecipe) else make_calibration(
        synth, n=n, sentences=sentences, seed=opts.seed or 0, noise_scale=opts.noise_scale,
        length_scale=opts.length_scale, noise_w=opts.noise_w, recipe=recipe)
    if not isinstance(recipe, EagerRecipe):
        q = quantize(synth, recipe, calibration, **({"streaming": True} if opts.streaming else {}))
        q.save(out_dir, force=force)
        return QuantizeResult(out_dir, q, q.coverage, summary=_summary(q, recipe, out_dir))
    report = plan = None
    extra_float: tuple[str, ...] = ()
    if auto:
        from vitsq.quantize.sensitivity import auto_keep_float

        plan = auto_keep_float(synth, opts.budget, recipe, calibration, granularity=opts.granularity)
        report = plan.sensitivity
        extra_float = tuple(plan.layers)
    elif opts.sensitivity:
        from vitsq.quantize.sensitivity import measure_sensitivity

        report = measure_sensitivity(synth, recipe, calibration, granularity=opts.granularity)
    q = quantize(synth, recipe, calibration, keep_float_layers=extra_float)
    if plan is not None:
        q.extra["mixed_precision"] = {k: v for k, v in plan.to_dict().items() if k != "sensitivity"}
    if report is not None:
        q.extra["sensitivity"] = report.to_dict()
    q.save(out_dir, force=force)
    return QuantizeResult(out_dir, q, q.coverage, report, plan, _summary(q, recipe, out_dir))


def _summary(q: Any, recipe: Any, out_dir: Path) -> dict:
    cov = q.coverage
    size = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file() and p.name != "vitsq.json")
    return {"out_dir": str(out_dir), "recipe": recipe.name, "recipe_dict": recipe.to_dict(), "size_bytes": size,
            "share_quantized": cov.share_quantized if cov is not None else None,
            "coverage": cov.summary() if cov is not None else None}
