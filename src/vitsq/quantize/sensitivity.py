"""Which layers must stay float: per-group (or per-layer) sensitivity and greedy mixed precision.

Method: calibrate once (all candidate layers observed), then for each group build a model where
*only that group* is INT8 and measure the distance of its output to the FP32 output with the
same noise (seeded) on held-out sentences: mean log-mel L1 (nats), corpus SNR (dB) and MCD
(dB, DTW-aligned). Rank worst first. :func:`auto_keep_float` then keeps the most sensitive
groups float, one at a time, re-measuring the whole model each step, until the log-mel L1 is
within the budget.

Held-out sentences are taken from the *calibration* split after the calibration sentences:
choosing layers is tuning, so it must not see the evaluation split either.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vitsq.errors import InputError
from vitsq.quantize.calibration import Calibration, make_calibration, run_items
from vitsq.quantize.eager import (
    Prepared,
    calibrate,
    convert_subset,
    layer_groups,
    prepare_all,
    resolve_keep_float,
    resolve_recipe,
)
from vitsq.quantize.engines import _quiet, use_engine
from vitsq.quantize.recipes import EagerRecipe

log = logging.getLogger(__name__)

#: Held-out sentences for sensitivity when not given.
DEFAULT_EVAL = 4


@dataclass(frozen=True)
class Distance:
    """Distance of a model's audio to FP32 over the held-out items."""

    log_mel_l1: float  # mean over items, nats
    snr_db: float  # corpus: 10 log10(Σ signal / Σ noise) over common prefixes
    mcd_db: float  # mean over items
    length_mismatches: int  # items whose length differs from FP32 (duration rounding)

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in self.__dict__.items()}


def distance_to_reference(refs: Sequence[np.ndarray], outs: Sequence[np.ndarray], sample_rate: int) -> Distance:
    """Aggregate :func:`vitsq.evaluate.metrics.audio_distance` over items."""
    from vitsq.evaluate.metrics import audio_distance

    ds = [audio_distance(r, o, sample_rate) for r, o in zip(refs, outs)]
    sig = sum(d.signal_energy for d in ds)
    noise = sum(d.noise_energy for d in ds)
    snr = math.inf if noise == 0 else 10 * math.log10(max(sig, 1e-30) / noise)
    return Distance(float(np.mean([d.log_mel_l1 for d in ds])), snr, float(np.mean([d.mcd_db for d in ds])),
                    sum(d.length_difference != 0 for d in ds))


@dataclass(frozen=True)
class SensitivityRow:
    name: str  # group or layer name
    layers: int
    params: int
    distance: Distance


@dataclass
class SensitivityReport:
    """Rows sorted most sensitive first, plus the all-INT8 distance."""

    rows: list[SensitivityRow]
    all_int8: Distance
    granularity: str
    engine: str
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def ranking(self) -> list[str]:
        return [r.name for r in self.rows]

    def table(self) -> str:
        head = f"{'rank':>4}  {'only this INT8':<40} {'layers':>6} {'params':>10}  {'logmel L1':>9} {'SNR dB':>7} {'MCD dB':>7}"
        lines = [head]
        for i, r in enumerate(self.rows, 1):
            d = r.distance
            lines.append(f"{i:>4}  {r.name:<40} {r.layers:>6} {r.params:>10,}  {d.log_mel_l1:>9.4f} "
                         f"{d.snr_db:>7.2f} {d.mcd_db:>7.2f}")
        d = self.all_int8
        lines.append(f"{'':>4}  {'(all INT8)':<40} {'':>6} {'':>10}  {d.log_mel_l1:>9.4f} {d.snr_db:>7.2f} {d.mcd_db:>7.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"granularity": self.granularity, "engine": self.engine, "evaluation": self.evaluation,
                "all_int8": self.all_int8.to_dict(),
                "rows": [{"name": r.name, "layers": r.layers, "params": r.params, **r.distance.to_dict()}
                         for r in self.rows]}


class SensitivityProbe:
    """One calibration, FP32 references, and a way to measure any INT8 subset."""

    def __init__(self, synth: Any, recipe: EagerRecipe, calibration: Calibration | None = None,
                 evaluation: Calibration | None = None, progress: bool = True,
                 after_calibration: Callable[[Prepared], None] | None = None) -> None:
        self.synth = synth
        self.recipe = resolve_recipe(recipe)
        self.progress = progress
        self.calibration = calibration or make_calibration(synth)
        if evaluation is None:
            evaluation = make_calibration(synth, n=DEFAULT_EVAL, offset=len(self.calibration.sentences),
                                          seed=self.calibration.seed + 7)
        overlap = set(evaluation.sentences) & set(self.calibration.sentences)
        if overlap:
            raise InputError(f"sensitivity held-out sentences overlap the calibration sentences: {sorted(overlap)[:2]}")
        self.evaluation = evaluation
        keep = resolve_keep_float(synth.model, self.recipe.keep_float)
        self.prepared = prepare_all(synth.model, self.recipe, keep)
        calibrate(self.prepared, self.calibration, progress)
        if after_calibration is not None:
            after_calibration(self.prepared)
        self.references = run_items(synth.model, evaluation.items, evaluation.scales)
        self.groups = {g: [n for n in names if n in set(self.prepared.observed)]
                       for g, names in layer_groups(synth.model).items()}
        self.groups = {g: n for g, n in self.groups.items() if n}

    def measure(self, quantize: Iterable[str]) -> Distance:
        """Distance to FP32 when exactly the layers ``quantize`` are INT8."""
        model = convert_subset(self.prepared, quantize)
        with use_engine(self.prepared.engine), _quiet():
            outs = run_items(model, self.evaluation.items, self.evaluation.scales)
        return distance_to_reference(self.references, outs, self.synth.sample_rate)

    def params(self, names: Iterable[str]) -> int:
        layers = self.prepared.float_layers
        return sum(p.numel() for n in names for p in layers[n].parameters())

    def units(self, granularity: str) -> dict[str, list[str]]:
        if granularity == "groups":
            return self.groups
        if granularity == "layers":
            return {n: [n] for n in self.prepared.observed}
        raise InputError(f"unknown sensitivity granularity {granularity!r}: valid are groups, layers")

    def report(self, granularity: str = "groups") -> SensitivityReport:
        from tqdm.auto import tqdm

        units = self.units(granularity)
        rows = []
        for name, names in tqdm(units.items(), desc=f"sensitivity ({granularity})", disable=not self.progress,
                                leave=False):
            rows.append(SensitivityRow(name, len(names), self.params(names), self.measure(names)))
        rows.sort(key=lambda r: r.distance.log_mel_l1, reverse=True)
        all_int8 = self.measure(self.prepared.observed)
        return SensitivityReport(rows, all_int8, granularity, self.prepared.engine,
                                 {"items": len(self.evaluation.items), "source": "calibration split (held out)",
                                  "sha256": self.evaluation.sha256})


def measure_sensitivity(synth: Any, recipe: EagerRecipe | None = None, calibration: Calibration | None = None,
                        evaluation: Calibration | None = None, granularity: str = "groups",
                        progress: bool = True,
                        after_calibration: Callable[[Prepared], None] | None = None) -> SensitivityReport:
    """Rank groups (or single layers) by the distance to FP32 when only they are INT8.

    ``after_calibration`` may edit the observed model before measuring (tests use it to break
    one group on purpose).
    """
    probe = SensitivityProbe(synth, recipe or EagerRecipe(), calibration, evaluation, progress, after_calibration)
    return probe.report(granularity)


@dataclass
class MixedPrecisionPlan:
    """Result of :func:`auto_keep_float`."""

    keep_float: list[str]  # group/layer names kept float, in the order they were added
    layers: list[str]  # the layer names they stand for
    distance: Distance  # final measured distance
    within_budget: bool
    steps: list[dict[str, Any]]
    sensitivity: SensitivityReport

    def to_dict(self) -> dict[str, Any]:
        return {"keep_float": self.keep_float, "distance": self.distance.to_dict(),
                "within_budget": self.within_budget, "steps": self.steps,
                "sensitivity": self.sensitivity.to_dict()}


def auto_keep_float(synth: Any, budget: float, recipe: EagerRecipe | None = None,
                    calibration: Calibration | None = None, evaluation: Calibration | None = None,
                    granularity: str = "groups", progress: bool = True) -> MixedPrecisionPlan:
    """Keep the most sensitive groups float until the log-mel L1 to FP32 is <= ``budget`` (nats).

    Greedy in sensitivity order; each step re-measures the whole model. If even keeping every
    group float is not within budget the plan says so (``within_budget`` False).
    """
    if not budget > 0:
        raise InputError(f"--budget must be a log-mel L1 distance > 0 (nats, e.g. 0.1), got {budget}")
    probe = SensitivityProbe(synth, recipe or EagerRecipe(), calibration, evaluation, progress)
    report = probe.report(granularity)
    units = probe.units(granularity)
    quantized = set(probe.prepared.observed)
    dist = report.all_int8
    steps = [{"keep_float": None, **dist.to_dict()}]
    kept: list[str] = []
    for row in report.rows:
        if dist.log_mel_l1 <= budget:
            break
        kept.append(row.name)
        quantized -= set(units[row.name])
        dist = probe.measure(quantized)
        steps.append({"keep_float": row.name, **dist.to_dict()})
        log.info("keep %s float -> log-mel L1 %.4f", row.name, dist.log_mel_l1)
    layers = sorted(set(probe.prepared.observed) - quantized)
    return MixedPrecisionPlan(kept, layers, dist, dist.log_mel_l1 <= budget, steps, report)
