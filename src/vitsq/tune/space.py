"""The search space of ``vitsq tune`` as data, its candidates, the quality gate and the strategy.

A :class:`SearchSpace` lists the values of each axis (recipe family, how deep into the
sensitivity ranking layers stay float, calibration method and size, per-channel weights, where
ONNX Runtime quantizes activations, threads). :func:`enumerate_candidates` turns it into concrete
recipes for one model (:class:`ModelFacts`) and prunes the ones that cannot run or cannot be
measured honestly, each with its reason, before they cost anything. :class:`Planner` chooses
which candidates become trials:

1. every family's measured preset (:func:`vitsq.quantize.recipes.best_for`), so the search always
   measures what ``vitsq quantize --recipe NAME`` gives today;
2. sensitivity-guided greedy: per family, with the preset's options, all layers INT8 first, then
   the most sensitive group kept float, then the two most sensitive, ... for as long as the gate
   fails (more float layers = slower, so the first depth that passes is that chain's answer);
3. seeded random candidates from the rest of the space until ``trials`` are reached.

Proposals depend only on the seed and on the *quality* results of earlier rounds (never on
timings, which vary), so a search gives the same trials on local workers and on Ray, and a
resumed search proposes exactly the trials it had proposed before.

Keep-float groups are the eager sensitivity groups (``enc_p``, ``dp``, ``flow``, ``dec.stage2``,
``dec.conv_post``, ...; :func:`vitsq.quantize.eager.layer_groups`); for ort-static each group
stands for ONNX node-name prefixes (:func:`ort_group_prefixes`), e.g. ``dec.stage2`` ->
``/dec/ups.2/``, its resblocks and the stage's residual sums.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Sequence

from vitsq.errors import InputError, UnsupportedError
from vitsq.quantize.recipes import (
    ENGINES,
    OBSERVERS,
    ORT_CALIBRATION_METHODS,
    EagerRecipe,
    ORT_STATIC_VARIANTS,
    OrtDynamicRecipe,
    OrtStaticRecipe,
    best_for,
    dec_op_name,
    recipe_from_dict,
)

log = logging.getLogger(__name__)

#: Families ``vitsq tune`` knows. pt2e is listed so that asking for it gets a reason, not a
#: typo error: its graphs only simulate INT8 in PyTorch (speed comes after ExecuTorch lowering).
FAMILIES = ("ort-static", "eager", "ort-dynamic", "pt2e")
DEFAULT_FAMILIES = ("ort-static", "eager")
#: Held-out calibration-split sentences the sensitivity ranking uses after its calibration set.
SENSITIVITY_HELD_OUT = 4
SPACE_SCHEMA = "vitsq-tune-space/1"


# ============================================================================ the space
@dataclass(frozen=True)
class SearchSpace:
    """The values each axis of the search takes (a JSON file with these keys, ``--space``).

    ``keep_float_depths``: how many of the most sensitive groups stay float (0 = every layer
    INT8). ``calibration_methods``: ort-static activation ranges; ``observers``: eager ones.
    ``calib_sizes``: calibration sentences. ``static_scopes``: ONNX node-name prefixes whose
    activations ort-static quantizes (the rest gets INT8 weights only). ``engines``: eager
    quantized engines (``None`` = the platform default). ``threads``: intra-op threads of a
    trial. ``ranking``: the sensitivity ranking (most sensitive group first); ``None`` = measured
    on the model (:func:`vitsq.quantize.sensitivity.measure_sensitivity`).
    """

    families: tuple[str, ...] = DEFAULT_FAMILIES
    keep_float_depths: tuple[int, ...] = (0, 1, 2, 3)
    include_presets: bool = True
    calibration_methods: tuple[str, ...] = ("minmax", "percentile")
    observers: tuple[str, ...] = ("histogram", "minmax")
    calib_sizes: tuple[int, ...] = (16, 32)
    per_channel: tuple[bool, ...] = (True, False)
    static_scopes: tuple[tuple[str, ...], ...] = (("/dec/",), ("/dec/", "/flow/"), ("/dec/", "/flow/", "/enc_p/"))
    engines: tuple[str | None, ...] = (None,)
    threads: tuple[int, ...] = (1,)
    ranking: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        tup = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in tup.items():
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        axes = ("families", "keep_float_depths", "calibration_methods", "observers", "calib_sizes", "per_channel",
                "static_scopes", "engines", "threads")
        for name in axes:
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value:
                raise InputError(f"search space axis {name!r} is empty: give at least one value "
                                 f"(an empty axis leaves no candidate)")
        for fam in self.families:
            if fam not in FAMILIES:
                raise InputError(f"unknown recipe family {fam!r} in the search space: valid are {', '.join(FAMILIES)}")
        _check_values("calibration method", self.calibration_methods, ORT_CALIBRATION_METHODS)
        _check_values("eager observer", self.observers, OBSERVERS)
        _check_values("eager engine", [e for e in self.engines if e is not None], ENGINES)
        for name, lo in (("keep_float_depths", 0), ("calib_sizes", 1), ("threads", 1)):
            bad = [v for v in getattr(self, name) if not isinstance(v, int) or isinstance(v, bool) or v < lo]
            if bad:
                raise InputError(f"search space {name} must be integers >= {lo}, got {bad}")
        if any(not isinstance(v, bool) for v in self.per_channel):
            raise InputError(f"search space per_channel takes true/false, got {list(self.per_channel)}")
        for scope in self.static_scopes:
            if not scope or any(not isinstance(p, str) or not p.startswith("/") for p in scope):
                raise InputError(f"static scope {list(scope)} must be a non-empty list of ONNX node-name prefixes "
                                 "such as /dec/ or /flow/")
        if self.ranking is not None and (not self.ranking or len(set(self.ranking)) != len(self.ranking)):
            raise InputError("search space ranking must list distinct layer groups, most sensitive first")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["static_scopes"] = [list(s) for s in self.static_scopes]
        return {"schema": SPACE_SCHEMA, **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the valid ones."""
        if not isinstance(d, dict):
            raise InputError(f"a search space is a JSON object, got {type(d).__name__}")
        d = {k: v for k, v in d.items() if k != "schema"}
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise InputError(f"unknown search space key(s) {unknown}: valid keys are {', '.join(valid)}")
        return cls(**d)


def _check_values(what: str, values: Iterable[Any], valid: Sequence[str]) -> None:
    bad = [v for v in values if v not in valid]
    if bad:
        raise InputError(f"unknown {what}(s) {bad} in the search space: valid are {', '.join(valid)}")


def read_space(path: Any) -> SearchSpace:
    """A :class:`SearchSpace` from a JSON file."""
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"search space file {p} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"search space file {p} is not readable JSON: {exc}") from exc
    return SearchSpace.from_dict(data)


# ============================================================================ model facts
@dataclass(frozen=True)
class ModelFacts:
    """What pruning needs to know about the model and the machine (computed once by the driver).

    ``groups``: eager layer groups -> their layer counts; ``ranking``: groups most sensitive
    first; ``ort_prefixes``: group -> ONNX node-name prefixes that exist in the exported graph;
    ``calib_pool``: calibration-split sentences before the tuning split; ``engines``: eager
    engines this PyTorch can run; ``max_threads``: cores of the largest worker.
    """

    arch: str
    groups: dict[str, int]
    ranking: tuple[str, ...]
    ort_prefixes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    calib_pool: int = 0
    engines: tuple[str, ...] = ()
    max_threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "groups": dict(self.groups), "ranking": list(self.ranking),
                "ort_prefixes": {k: list(v) for k, v in self.ort_prefixes.items()}, "calib_pool": self.calib_pool,
                "engines": list(self.engines), "max_threads": self.max_threads}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelFacts":
        return cls(d["arch"], dict(d["groups"]), tuple(d["ranking"]),
                   {k: tuple(v) for k, v in d.get("ort_prefixes", {}).items()}, int(d["calib_pool"]),
                   tuple(d["engines"]), int(d["max_threads"]))


def _onnx_scope(layer: str) -> str:
    """``dec.resblocks.0.convs1.2`` -> ``/dec/resblocks.0/convs1.2/``: torch.onnx scopes join a
    ModuleList index to its list's name with a dot and separate modules with slashes."""
    parts: list[str] = []
    for p in layer.split("."):
        if p.isdigit() and parts:
            parts[-1] += f".{p}"
        else:
            parts.append(p)
    return "/" + "/".join(parts) + "/"


def ort_group_prefixes(group: str, layers: Sequence[str], config: Any, node_names: Sequence[str]) -> tuple[str, ...]:
    """ONNX node-name prefixes that stand for eager group ``group`` (whose layers are ``layers``)
    in the exported graph with names ``node_names``; prefixes naming no node, or naming more
    nodes than the single top-level op they mean (``/dec/Add_1`` vs ``/dec/Add_10``), are dropped.

    Top-level modules map to themselves (``flow`` -> ``/flow/``); a decoder stage ``i`` to its
    upsampler, its resblocks, the LeakyReLU feeding it and its residual sums (``torch.onnx``
    numbers the decoder's top-level ops in order: one LeakyRelu, ``k - 1`` Adds and a Div per
    stage, see :func:`vitsq.quantize.recipes.ort_keep_float`); ``dec.conv_post`` also takes the
    activation feeding it; any other group its layers' module scopes.
    """
    k = len(getattr(config, "resblock_kernel_sizes", ()) or ()) or 1
    n_stages = len(getattr(config, "upsample_rates", ()) or ())
    if "." not in group:
        wanted = [f"/{group}/"]
    elif (m := re.fullmatch(r"dec\.stage(\d+)", group)) is not None:
        i = int(m.group(1))
        wanted = [f"/dec/ups.{i}/"] + [f"/dec/resblocks.{i * k + j}/" for j in range(k)]
        wanted += [dec_op_name("LeakyRelu", i)] + [dec_op_name("Add", i * (k - 1) + j) for j in range(k - 1)]
        wanted += [dec_op_name("Div", i)]
    elif group == "dec.conv_post":
        wanted = [_onnx_scope(layer) for layer in layers] + [dec_op_name("LeakyRelu", n_stages)]
    else:
        wanted = [_onnx_scope(layer) for layer in layers]
    out = []
    for p in dict.fromkeys(wanted):
        hits = [n for n in node_names if n.startswith(p)]
        exact = p.endswith("/") or all(n == p or n.startswith(p + "/") for n in hits)
        if hits and exact:
            out.append(p)
        else:
            log.info("keep-float group %s: ONNX prefix %s %s", group, p, "is ambiguous" if hits else "names no node")
    return tuple(out)


# ============================================================================ candidates
@dataclass(frozen=True)
class Candidate:
    """One point of the space: a recipe, its calibration size and the trial's thread count.

    ``key`` identifies it (recipe + calibration + threads); ``label``, ``origin`` (preset,
    greedy, random) and ``depth`` only describe it.
    """

    family: str
    recipe_json: str  # canonical JSON of recipe.to_dict()
    calib: int | None  # calibration sentences (None: not calibrated)
    threads: int
    label: str = field(default="", compare=False)
    origin: str = field(default="", compare=False)
    depth: int | None = field(default=None, compare=False)

    @property
    def recipe(self):
        return recipe_from_dict(json.loads(self.recipe_json))

    @property
    def key(self) -> str:
        blob = json.dumps({"recipe": json.loads(self.recipe_json), "calib": self.calib, "threads": self.threads},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "family": self.family, "recipe": json.loads(self.recipe_json), "calib": self.calib,
                "threads": self.threads, "label": self.label, "origin": self.origin, "depth": self.depth}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(d["family"], _canonical(d["recipe"]), d["calib"], int(d["threads"]), d.get("label", ""),
                   d.get("origin", ""), d.get("depth"))


def _canonical(recipe_dict: dict[str, Any]) -> str:
    return json.dumps(recipe_dict, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Pruned:
    """A candidate that was not run, and why."""

    label: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"label": self.label, "reason": self.reason}


@dataclass(frozen=True)
class _Point:
    """An unresolved grid point: the axis values before they become a recipe."""

    family: str
    depth: int
    method: str | None
    calib: int | None
    per_channel: bool
    scope: tuple[str, ...] | None
    engine: str | None
    threads: int


def _keep_groups(facts: ModelFacts, depth: int) -> tuple[str, ...]:
    return tuple(facts.ranking[:depth])


def _recipe_for(p: _Point, facts: ModelFacts, model: Any):
    """The recipe of a grid point (raises UnsupportedError/InputError for impossible ones)."""
    groups = _keep_groups(facts, p.depth)
    if p.family == "ort-static":
        preset = best_for(model, "ort-static")
        keep = tuple(dict.fromkeys(x for g in groups for x in facts.ort_prefixes.get(g, ())))
        return OrtStaticRecipe(per_channel=p.per_channel, calibrate_method=p.method, keep_float=keep,
                               static_prefixes=p.scope, polyphase_upsampling=preset.polyphase_upsampling)
    if p.family == "eager":
        return EagerRecipe(per_channel=p.per_channel, act_observer=p.method, engine=p.engine, keep_float=groups)
    if p.family == "ort-dynamic":
        return OrtDynamicRecipe(per_channel=p.per_channel)
    raise UnsupportedError(f"{p.family} graphs only simulate INT8 in PyTorch (their speed comes after ExecuTorch "
                           "lowering), so a trial cannot time them; tune ort-static or eager")


def _label(p: _Point) -> str:
    bits = [p.family, f"float{p.depth}"]
    if p.method:
        bits.append(p.method)
    if p.calib:
        bits.append(f"n{p.calib}")
    bits.append("pc" if p.per_channel else "pt")
    if p.scope:
        bits.append("+".join(s.strip("/") for s in p.scope))
    if p.engine:
        bits.append(p.engine)
    return " ".join(bits) + f" t{p.threads}"


def _prune_reason(p: _Point, facts: ModelFacts) -> str | None:
    """Why a grid point cannot give an honest trial (None: it can)."""
    if p.family == "pt2e":
        return ("pt2e graphs only simulate INT8 in PyTorch (speed comes after ExecuTorch lowering): a trial "
                "cannot time them")
    if p.threads > facts.max_threads:
        return f"{p.threads} threads but the largest worker has {facts.max_threads} cores (timings would be oversubscribed)"
    if p.calib is not None and p.calib > facts.calib_pool:
        return (f"calibration needs {p.calib} sentences but only {facts.calib_pool} calibration-split sentences "
                "lie before the tuning split")
    if p.depth > len(facts.ranking):
        return f"keeps {p.depth} groups float but the sensitivity ranking has {len(facts.ranking)}"
    groups = _keep_groups(facts, p.depth)
    if groups and set(groups) >= set(facts.groups):
        return "keeps every layer group float: nothing would be INT8"
    if p.engine is not None and p.engine not in facts.engines:
        return f"quantized engine {p.engine!r} is not available here (available: {', '.join(facts.engines)})"
    if p.family == "ort-static":
        keep = [x for g in groups for x in facts.ort_prefixes.get(g, ())]
        if keep and all(any(s.startswith(k) for k in keep) for s in p.scope or ()):
            return "keeps every statically quantized scope float: no INT8 activations (that is ort-dynamic's job)"
    return None


def _grid(space: SearchSpace, facts: ModelFacts) -> Iterable[_Point]:
    for fam in space.families:
        for depth, pc, threads in itertools.product(space.keep_float_depths, space.per_channel, space.threads):
            if fam == "ort-dynamic":
                if depth == 0:  # ort-dynamic has no layer choice: one point per per-channel value
                    yield _Point(fam, 0, None, None, pc, None, None, threads)
                continue
            if fam == "ort-static":
                for method, n, scope in itertools.product(space.calibration_methods, space.calib_sizes,
                                                          space.static_scopes):
                    yield _Point(fam, depth, method, n, pc, scope, None, threads)
            elif fam == "eager":
                for method, n, engine in itertools.product(space.observers, space.calib_sizes, space.engines):
                    yield _Point(fam, depth, method, n, pc, None, engine, threads)
            else:
                for n in space.calib_sizes:
                    yield _Point(fam, depth, None, n, pc, None, None, threads)


def _candidate(p: _Point, facts: ModelFacts, model: Any, origin: str) -> tuple[Candidate | None, str | None]:
    reason = _prune_reason(p, facts)
    if reason is not None:
        return None, reason
    try:
        recipe = _recipe_for(p, facts, model)
    except (InputError, UnsupportedError) as exc:
        return None, str(exc)
    return Candidate(p.family, _canonical(recipe.to_dict()), p.calib, p.threads, _label(p), origin, p.depth), None


@dataclass
class CandidateSet:
    """The pruned space: grid candidates, presets and greedy chains (per family, by depth)."""

    grid: list[Candidate]
    presets: list[Candidate]
    chains: dict[str, list[Candidate]]
    pruned: list[Pruned]

    @property
    def size(self) -> int:
        return len({c.key for c in self.grid + self.presets + [c for ch in self.chains.values() for c in ch]})


def enumerate_candidates(space: SearchSpace, facts: ModelFacts, model: Any) -> CandidateSet:
    """Every candidate of ``space`` for ``model`` that can run, the pruned ones with reasons.

    Raises :class:`InputError` when nothing is left (an empty or contradictory space), listing why.
    """
    grid: dict[str, Candidate] = {}
    pruned: list[Pruned] = []
    for p in _grid(space, facts):
        cand, reason = _candidate(p, facts, model, "random")
        if cand is None:
            pruned.append(Pruned(_label(p), reason or ""))
        elif cand.key not in grid:
            grid[cand.key] = cand
    presets = _presets(space, facts, model, pruned)
    chains = {fam: _chain(space, facts, model, fam) for fam in space.families}
    chains = {fam: ch for fam, ch in chains.items() if ch}
    result = CandidateSet(list(grid.values()), presets, chains, pruned)
    if result.size == 0:
        reasons = sorted({p.reason for p in pruned})
        raise InputError("the search space is empty after pruning: every candidate is impossible here ("
                         + "; ".join(reasons[:6]) + (f"; and {len(reasons) - 6} more" if len(reasons) > 6 else "")
                         + "). Widen the space (families, calib_sizes, threads, keep_float_depths)")
    return result


def _presets(space: SearchSpace, facts: ModelFacts, model: Any, pruned: list[Pruned]) -> list[Candidate]:
    from vitsq.quantize.calibration import default_calibration_size

    out = []
    if not space.include_presets:
        return out
    for fam in space.families:
        label = f"{fam} preset"
        if fam == "pt2e":
            pruned.append(Pruned(label, _prune_reason(_Point(fam, 0, None, None, True, None, None, 1), facts) or ""))
            continue
        # ort-static has two presets (faithful and fast): both are measured, so the search
        # always places what `--recipe ort-static` and `--recipe ort-static:fast` give today
        variants = [(label, None)]
        if fam == "ort-static":
            variants = [(f"{fam}:{v} preset", v) for v in ORT_STATIC_VARIANTS]
        threads = space.threads[0]
        for label, variant in variants:
            recipe = best_for(model, fam, variant)
            calib = None if fam == "ort-dynamic" else default_calibration_size(recipe)
            if calib is not None and calib > facts.calib_pool:
                pruned.append(Pruned(label, f"calibration needs {calib} sentences but only {facts.calib_pool} lie "
                                            "before the tuning split"))
                continue
            if threads > facts.max_threads:
                pruned.append(Pruned(label, f"{threads} threads but the largest worker has {facts.max_threads} cores"))
                continue
            cand = Candidate(fam, _canonical(recipe.to_dict()), calib, threads, label, "preset", None)
            if all(c.key != cand.key for c in out):
                out.append(cand)
    return out


def _first_in(preferred: Any, values: Sequence[Any]) -> Any:
    return preferred if preferred in values else values[0]


def _chain(space: SearchSpace, facts: ModelFacts, model: Any, family: str) -> list[Candidate]:
    """The greedy chain of ``family``: its preset's options (where the space has them), keeping
    0, 1, 2, ... of the most sensitive groups float (depths of the space only)."""
    if family in ("ort-dynamic", "pt2e"):
        return []
    preset = best_for(model, family)
    pc = _first_in(preset.per_channel, space.per_channel)
    if family == "ort-static":
        method = _first_in(preset.calibrate_method, space.calibration_methods)
        scope = _first_in(tuple(preset.static_prefixes or ()), space.static_scopes)
        engine = None
    else:
        method = _first_in(preset.act_observer, space.observers)
        scope, engine = None, _first_in(preset.engine, space.engines)
    from vitsq.quantize.calibration import default_calibration_size

    n = _first_in(default_calibration_size(preset.replace(calibrate_method=method) if family == "ort-static"
                                           else preset), space.calib_sizes)
    out: list[Candidate] = []
    for depth in sorted(space.keep_float_depths):
        cand, _ = _candidate(_Point(family, depth, method, n, pc, scope, engine, space.threads[0]), facts, model,
                             "greedy")
        if cand is not None and all(c.key != cand.key for c in out):
            out.append(cand)
    return out


# ============================================================================ the gate
GATE_METRICS: dict[str, tuple[str, float, float]] = {
    # name: (meaning, lowest possible, highest possible)
    "dwer": ("ΔWER to FP32 in percentage points (Whisper, corpus level)", -100.0, math.inf),
    "wer": ("candidate WER in percent (Whisper, corpus level)", 0.0, math.inf),
    "speaker_sim": ("mean speaker similarity to FP32 (resemblyzer cosine)", -1.0, 1.0),
    "speaker_sim_min": ("worst sentence's speaker similarity to FP32", -1.0, 1.0),
    "logmel_l1": ("mean log-mel L1 distance to FP32 (nats)", 0.0, math.inf),
    "mcd_db": ("mean mel-cepstral distortion to FP32 (dB)", 0.0, math.inf),
}
_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}
#: Metrics that need Whisper / the speaker encoder.
ASR_METRICS = ("dwer", "wer")
SPEAKER_METRICS = ("speaker_sim", "speaker_sim_min")
DEFAULT_GATE = "dwer<=0.5,speaker_sim>=0.95"


@dataclass(frozen=True)
class GateCheck:
    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def passes(self, measured: float | None) -> bool:
        return measured is not None and not math.isnan(measured) and _OPS[self.op](measured, self.value)

    def violation(self, measured: float | None) -> float:
        """How far ``measured`` is from passing, relative to the threshold's scale (0 = passes)."""
        if measured is None or math.isnan(measured):
            return math.inf
        gap = self.value - measured if self.op in (">=", ">") else measured - self.value
        return max(0.0, gap) / max(abs(self.value), 1e-3)


@dataclass(frozen=True)
class Gate:
    """A conjunction of checks, e.g. ``dwer<=0.5,speaker_sim>=0.97``."""

    checks: tuple[GateCheck, ...]

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.checks)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.metric for c in self.checks))

    def evaluate(self, metrics: dict[str, float | None]) -> dict[str, Any]:
        """``{"passed": bool, "violation": float, "checks": [{check, value, passed}]}``."""
        rows = [{"check": str(c), "value": metrics.get(c.metric), "passed": c.passes(metrics.get(c.metric))}
                for c in self.checks]
        violation = sum(c.violation(metrics.get(c.metric)) for c in self.checks)
        return {"passed": all(r["passed"] for r in rows), "violation": violation, "checks": rows}


def parse_gate(text: str) -> Gate:
    """``"dwer<=0.5,speaker_sim>=0.97"`` -> :class:`Gate`; unknown metrics, bad operators and
    thresholds no measurement can meet are :class:`InputError` naming what is valid."""
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise InputError(f"empty --gate: give checks like {DEFAULT_GATE}")
    checks = []
    for item in items:
        m = re.fullmatch(r"([a-z_][a-z0-9_]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)", item)
        if m is None:
            raise InputError(f"gate check {item!r} is not METRIC<=VALUE or METRIC>=VALUE (e.g. {DEFAULT_GATE}); "
                             f"metrics: {', '.join(GATE_METRICS)}")
        metric, op, raw = m.groups()
        if metric not in GATE_METRICS:
            raise InputError(f"unknown gate metric {metric!r}: valid are "
                             + "; ".join(f"{k} ({v[0]})" for k, v in GATE_METRICS.items()))
        try:
            value = float(raw)
        except ValueError:
            raise InputError(f"gate threshold {raw!r} of {metric} is not a number") from None
        lo, hi = GATE_METRICS[metric][1:]
        if not math.isfinite(value) or (op in (">=", ">") and (value > hi or (op == ">" and value == hi))) or (
                op in ("<=", "<") and (value < lo or (op == "<" and value == lo))):
            raise InputError(f"gate check {item!r} can never be met: {metric} ({GATE_METRICS[metric][0]}) lies "
                             f"between {lo:g} and {hi:g}")
        checks.append(GateCheck(metric, op, value))
    metrics = [c.metric for c in checks]
    for metric in set(metrics):
        lows = [c.value for c in checks if c.metric == metric and c.op in (">=", ">")]
        highs = [c.value for c in checks if c.metric == metric and c.op in ("<=", "<")]
        if lows and highs and max(lows) > min(highs):
            raise InputError(f"gate checks on {metric} contradict each other (>= {max(lows):g} and <= {min(highs):g}): "
                             "no candidate can pass")
    return Gate(tuple(checks))


# ============================================================================ the strategy
@dataclass
class Planner:
    """Deterministic proposals in rounds (module docstring): presets and chain heads first, the
    next chain step of each family whose last step failed the gate, then seeded random
    candidates. ``results`` maps candidate keys to finished trial records."""

    candidates: CandidateSet
    trials: int
    seed: int = 0
    proposed: list[Candidate] = field(default_factory=list)
    _chain_pos: dict[str, int] = field(default_factory=dict)
    _random_done: bool = False

    def _add(self, out: list[Candidate], cand: Candidate) -> None:
        keys = {c.key for c in self.proposed}
        if cand.key not in keys and len(self.proposed) < self.trials:
            self.proposed.append(cand)
            out.append(cand)

    def next_round(self, results: dict[str, dict[str, Any]]) -> list[Candidate]:
        """The next round's new candidates ([] when the search is over)."""
        out: list[Candidate] = []
        if not self.proposed:
            for cand in self.candidates.presets:
                self._add(out, cand)
            for fam, chain in self.candidates.chains.items():
                self._chain_pos[fam] = 0
                self._add(out, chain[0])
            if out:
                return out
        for fam, chain in self.candidates.chains.items():
            pos = self._chain_pos.get(fam)
            if pos is None:
                continue
            last = results.get(chain[pos].key)
            if last is None or last.get("status") != "gated" or pos + 1 >= len(chain):
                self._chain_pos.pop(fam)  # passed, failed to run, or exhausted: the chain is closed
                continue
            self._chain_pos[fam] = pos + 1
            self._add(out, chain[pos + 1])
        if out or self._chain_pos or self._random_done:
            return out
        self._random_done = True
        import numpy as np

        keys = {c.key for c in self.proposed}
        pool = [c for c in self.candidates.grid if c.key not in keys]
        order = np.random.default_rng(self.seed).permutation(len(pool)) if pool else []
        for i in order:
            self._add(out, pool[int(i)])
        return out
