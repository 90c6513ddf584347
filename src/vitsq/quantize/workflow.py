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
from vitsq.quantize.recipes import (
    EagerRecipe,
    OrtDynamicRecipe,
    OrtStaticRecipe,
    PT2ERecipe,
    quantize,
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
    keep_float: str = ""  # "auto" or comma-separated names
    budget: float | None = None
    granularity: str = "groups"
    sensitivity: bool = False
    seed: int | None = None  # calibration noise seed (None: 0)
    noise_scale: float | None = None
    length_scale: float | None = None
    noise_w: float | None = None


@dataclass
class QuantizeResult:
    out_dir: Path
    quantized: Any  # QuantizedModel (torch recipes) or what quantize_ort returns
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


def build_recipe(opts: QuantizeOptions):
    """Recipe object for the options; options that the recipe does not take are an error.

    ``keep_float``: ``"auto"`` (eager, with a budget), ``"none"`` (nothing float), or names;
    ``"preset"`` is resolved by the caller (it needs the model: :func:`vitsq.quantize.recipes.best_for`).
    """
    cls = recipe_class(opts.recipe)
    names = _names(opts.keep_float)
    if names == ("preset",):
        raise InputError("--keep-float preset is resolved from the model: use vitsq.quantize.recipes.best_for")
    auto = names == ("auto",)
    manual = () if auto or names == ("none",) else names
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
    if opts.calibrate_method is not None and cls is not OrtStaticRecipe:
        raise UnsupportedError(f"--calibrate-method applies to the ort-static recipe only, not {opts.recipe!r}")
    if cls is EagerRecipe:
        return EagerRecipe(per_channel=opts.per_channel, act_observer=opts.observer or "histogram",
                           engine=opts.engine, keep_float=manual)
    if cls is PT2ERecipe:
        # no names: the measured preset for the model's architecture (keep_float=None); "none": nothing float
        return PT2ERecipe(keep_float=() if names == ("none",) else (manual or None))
    if cls is OrtStaticRecipe:
        return OrtStaticRecipe(per_channel=True, calibrate_method=opts.calibrate_method or "minmax", keep_float=manual,
                               static_prefixes=opts.static_prefixes)
    if manual:
        raise UnsupportedError("--keep-float applies to the eager, pt2e and ort-static recipes; ort-dynamic "
                               "quantizes the weights of every Conv/MatMul (op types, not layers)")
    return OrtDynamicRecipe(per_channel=opts.per_channel)


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
    recipe = build_recipe(opts)
    auto = opts.keep_float.strip() == "auto"
    if auto and opts.budget is None:
        raise InputError("--keep-float auto needs --budget (max log-mel L1 to FP32 in nats, e.g. 0.15)")
    if opts.budget is not None and not auto:
        raise InputError("--budget only applies with --keep-float auto")
    check_keep_float(synth, recipe)
    sentences = read_sentence_file(opts.calib_file) if opts.calib_file else None
    n = opts.calib if opts.calib is not None or sentences is None else len(sentences)
    calibration = None if isinstance(recipe, OrtDynamicRecipe) else make_calibration(
        synth, n=n, sentences=sentences, seed=opts.seed or 0, noise_scale=opts.noise_scale,
        length_scale=opts.length_scale, noise_w=opts.noise_w, recipe=recipe)
    if not isinstance(recipe, EagerRecipe):
        extra = {"force": force} if isinstance(recipe, (OrtStaticRecipe, OrtDynamicRecipe)) else {}
        q = quantize(synth, recipe, calibration, out_dir=out_dir, **extra)
        if hasattr(q, "save"):
            q.save(out_dir, force=force)
        return QuantizeResult(out_dir, q, getattr(q, "coverage", None), summary=_summary(q, recipe, out_dir))
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
    cov = getattr(q, "coverage", None)
    synth = getattr(q, "synth", None)
    size = synth.size_bytes() if synth is not None else sum(
        p.stat().st_size for p in out_dir.iterdir() if p.is_file() and p.name != "vitsq.json")
    return {"out_dir": str(out_dir), "recipe": recipe.name, "recipe_dict": recipe.to_dict(), "size_bytes": size,
            "share_quantized": cov.share_quantized if cov is not None else None,
            "coverage": cov.summary() if cov is not None else None}
