"""``vitsq.tune.search.tune``: the whole search, from a model to ``DIR/best`` and a report.

1. **Facts** about the model, once per output folder (kept in ``DIR/tune.json`` and reused on
   resume): the sensitivity ranking of its eager layer groups (measured on calibration-split
   sentences, unless the space gives one), the ONNX node-name prefixes of each group (from an
   FP32 export, when ort-static is searched), and what the workers can run.
2. **Candidates**: the space enumerated and pruned (:mod:`vitsq.tune.space`).
3. **Reference**: FP32 on the tuning split at zero noise (audio, transcripts, embeddings), once.
4. **Trials**, round by round as the planner proposes them, on the executor; finished ones
   already in ``DIR/trials.jsonl`` are reused.
5. **Winner**: among the trials that passed the gate on the whole tuning split, the fastest
   (``speed``) or smallest (``size``). ``DIR/best/preset.json`` is written, the winner rebuilt
   from it into ``DIR/winner`` (checking the rebuild is identical), then evaluated once on the
   held-out *evaluation* split with FP32 and its family's preset, timed interleaved.

No candidate passing the gate is not an error of the search: the result says so
(``passed = False``) and names the trial closest to the gate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from vitsq.errors import InputError
from vitsq.tune.runner import RESULTS_FILE, ResultsLog, TuneDir, run_specs
from vitsq.tune.space import (
    DEFAULT_GATE,
    SENSITIVITY_HELD_OUT,
    Candidate,
    ModelFacts,
    Planner,
    SearchSpace,
    enumerate_candidates,
    ort_group_prefixes,
    parse_gate,
)
from vitsq.tune.trial import (
    Evaluator,
    ModelSpec,
    Reference,
    TrialSpec,
    calibration_room,
    interleaved_rtf,
    speed_vs_first,
    spread_speakers,
    timing_items,
    tuning_sentences,
)

log = logging.getLogger(__name__)

OBJECTIVES = ("speed", "size")
#: calibration sentences of the sensitivity ranking (a ranking needs relative distances only)
SENSITIVITY_CALIB = 8


@dataclass(frozen=True)
class TuneConfig:
    """What ``vitsq tune`` was asked (the settings a resumed search must share)."""

    model: ModelSpec
    objective: str = "speed"
    gate: str = DEFAULT_GATE
    trials: int = 24
    space: SearchSpace = field(default_factory=SearchSpace)
    seed: int = 0
    sentences: int = 40
    gate_sentences: int = 20
    timing_sentences: int = 4
    timing_rounds: int = 5
    final_sentences: int | None = None  # None: the whole evaluation split; 0: no final evaluation
    calib_seed: int = 0

    def check(self) -> None:
        """Refuse bad settings before any slow work."""
        if self.objective not in OBJECTIVES:
            raise InputError(f"unknown --objective {self.objective!r}: valid are {', '.join(OBJECTIVES)}")
        parse_gate(self.gate)
        for name, lo in (("trials", 1), ("sentences", 1), ("gate_sentences", 1), ("timing_sentences", 1),
                         ("timing_rounds", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < lo:
                raise InputError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {value!r}")
        if self.final_sentences is not None and self.final_sentences < 0:
            raise InputError(f"--final-sentences must be >= 0 (0: no final evaluation), got {self.final_sentences}")

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        d["space"] = self.space.to_dict()
        d.pop("trials")  # a resumed search may ask for more (or fewer) trials
        d.pop("final_sentences")
        return d


@dataclass
class TuneResult:
    """What :func:`tune` found: every record, the winner (or the trial closest to the gate)."""

    out: Path
    records: list[dict[str, Any]]
    winner: dict[str, Any] | None
    passed: bool
    summary: dict[str, Any]
    ran: int = 0  # trials run by this call (the rest came from the results file)


# ============================================================================ facts
def _ranking(synth: Any, space: SearchSpace, room: int) -> tuple[tuple[str, ...], dict[str, Any] | None]:
    from vitsq.quantize.eager import layer_groups

    groups = layer_groups(synth.model)
    if space.ranking is not None:
        unknown = [g for g in space.ranking if g not in groups]
        if unknown:
            raise InputError(f"search space ranking names unknown layer group(s) {unknown}: this model's groups "
                             f"are {', '.join(groups)}")
        return space.ranking, None
    from vitsq.quantize.calibration import make_calibration
    from vitsq.quantize.recipes import EagerRecipe
    from vitsq.quantize.sensitivity import measure_sensitivity

    n = min(SENSITIVITY_CALIB, room - SENSITIVITY_HELD_OUT)
    if n < 1:
        raise InputError("the tuning split leaves no calibration-split sentences for the sensitivity ranking: use "
                         "fewer --sentences or give the ranking in --space")
    log.info("ranking layer groups by sensitivity (%d calibration + %d held-out sentences)", n, SENSITIVITY_HELD_OUT)
    cal = make_calibration(synth, n=n)
    held = make_calibration(synth, n=SENSITIVITY_HELD_OUT, offset=n, seed=7)
    report = measure_sensitivity(synth, EagerRecipe(per_channel=True), cal, held, progress=False)
    return tuple(report.ranking), report.to_dict()


def _ort_prefixes(synth: Any, groups: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
    """Group -> ONNX prefixes, from the names of an FP32 export (the ort-static preset's flavour)."""
    import onnx

    from vitsq.export.onnx import default_flavor, export_onnx
    from vitsq.quantize.recipes import best_for

    preset = best_for(synth, "ort-static")
    with tempfile.TemporaryDirectory(prefix="vitsq-tune-") as tmp:
        path = export_onnx(synth, Path(tmp) / "fp32.onnx", flavor=default_flavor(synth.config),
                           polyphase_upsampling=preset.polyphase_upsampling)
        names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
    return {g: ort_group_prefixes(g, layers, synth.config, names) for g, layers in groups.items()}


def model_facts(synth: Any, config: TuneConfig, max_threads: int) -> tuple[ModelFacts, dict[str, Any] | None]:
    """:class:`ModelFacts` of ``synth`` for ``config``'s space; also the sensitivity report."""
    from vitsq.quantize.eager import layer_groups
    from vitsq.quantize.engines import available_engines

    groups = layer_groups(synth.model)
    room = calibration_room(_language(synth), config.sentences)
    ranking, report = _ranking(synth, config.space, room)
    prefixes = _ort_prefixes(synth, groups) if "ort-static" in config.space.families else {}
    facts = ModelFacts(synth.config.arch, {g: len(v) for g, v in groups.items()}, ranking, prefixes, room,
                       tuple(available_engines()), max_threads)
    return facts, report


def _language(synth: Any) -> str:
    return (synth.language or "").split("-")[0].split("_")[0].lower()


# ============================================================================ settings and specs
def _settings(tdir: TuneDir, config: TuneConfig, synth: Any, executor: Any,
              sentences: list[str]) -> tuple[ModelFacts, bool]:
    """Facts from an earlier run of the same search (resume) or measured now; ``DIR/tune.json``."""
    from vitsq.tune.preset import model_identity

    tuning = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
    fingerprint = {**config.fingerprint(), "model_identity": model_identity(synth), "tuning_sha256": tuning}
    old = tdir.settings()
    if old is not None:
        if old.get("fingerprint") != json.loads(json.dumps(fingerprint)):
            diff = sorted(k for k in set(fingerprint) | set(old.get("fingerprint", {}))
                          if json.loads(json.dumps(fingerprint.get(k))) != old.get("fingerprint", {}).get(k))
            raise InputError(f"{tdir.path} holds a search with other settings ({', '.join(diff)} differ): resume it "
                             "with the same ones, choose another -o folder, or start over with --force")
        facts = ModelFacts.from_dict(old["facts"])
        return ModelFacts(facts.arch, facts.groups, facts.ranking, facts.ort_prefixes, facts.calib_pool,
                          facts.engines, executor.max_threads), True
    facts, report = model_facts(synth, config, executor.max_threads)
    if report is not None:
        tdir.write_json("sensitivity.json", report)
    tdir.write_json(TuneDir.SETTINGS, {"schema": "vitsq-tune/1", "fingerprint": fingerprint,
                                       "facts": facts.to_dict()})
    return facts, False


def _metrics(config: TuneConfig) -> tuple[str, ...]:
    """Metrics the gate needs (log-mel distances are always measured: they cost no model)."""
    return tuple(dict.fromkeys(parse_gate(config.gate).metrics))


def _spec(config: TuneConfig, cand: Candidate, index: int, sentences: list[str], speakers: list, lang: str):
    return TrialSpec(index, cand.to_dict(), config.model, tuple(sentences), tuple(speakers), lang, config.gate,
                     _metrics(config), config.gate_sentences, config.timing_sentences, config.timing_rounds,
                     config.calib_seed)


# ============================================================================ the search
def tune(config: TuneConfig, out: Path, executor: Any, *, force: bool = False,
         on_record: Callable[[dict[str, Any]], None] | None = None) -> TuneResult:
    """Run (or resume) the search of ``config`` into the folder ``out`` on ``executor``
    (:class:`~vitsq.tune.runner.LocalExecutor` or :class:`~vitsq.tune.runner.RayExecutor`)."""
    config.check()
    tdir = TuneDir(out, force=force)
    try:
        synth = config.model.load(threads=config.space.threads[0])
        lang = _language(synth)
        sentences = tuning_sentences(lang, config.sentences)
        facts, resumed = _settings(tdir, config, synth, executor, sentences)
        cands = enumerate_candidates(config.space, facts, synth)
        log.info("%d candidates (%d pruned)%s", cands.size, len(cands.pruned), ", resuming" if resumed else "")
        speakers = spread_speakers(len(sentences), synth.num_speakers, config.seed)
        results = ResultsLog(tdir.path / RESULTS_FILE)
        ran = _run_rounds(config, executor, synth, cands, results, sentences, speakers, lang, on_record)
        records = sorted(results.records.values(), key=lambda r: r["index"])
        summary = _conclude(config, tdir, synth, records, cands, executor)
        summary["trials_run_now"] = ran
        tdir.write_json("summary.json", summary)
        from vitsq.tune.report import write_report

        write_report(tdir.path, summary, records)
        winner = next((r for r in records if r["key"] == (summary.get("winner") or {}).get("key")), None)
        return TuneResult(tdir.path, records, winner, bool(summary["passed"]), summary, ran)
    finally:
        tdir.close()


def _run_rounds(config: TuneConfig, executor: Any, synth: Any, cands: Any, results: ResultsLog,
                sentences: list[str], speakers: list, lang: str, on_record: Any) -> int:
    planner = Planner(cands, config.trials, config.seed)
    reference: Reference | None = None
    ran = 0
    while True:
        batch = planner.next_round(results.records)
        if not batch:
            return ran
        first = len(planner.proposed) - len(batch)
        todo = [_spec(config, c, first + i, sentences, speakers, lang) for i, c in enumerate(batch)
                if c.key not in results.records]
        log.info("round of %d trials (%d already in the results file)", len(batch), len(batch) - len(todo))
        if not todo:
            continue
        if reference is None:
            reference = compute_reference(synth, sentences, speakers, lang, _metrics(config),
                                          config.space.threads[0])
            executor.prepare(reference)
        run_specs(executor, todo, results, on_record)
        ran += len(todo)


def compute_reference(synth: Any, sentences: list[str], speakers: list, lang: str, metrics: tuple[str, ...],
                      threads: int) -> Reference:
    """FP32 audio (and transcripts/embeddings when the metrics need them) at zero noise."""
    import torch

    torch.set_num_threads(threads)
    empty = Reference([], None, None, synth.sample_rate, 0)
    return Evaluator(empty, sentences, speakers, lang, metrics, threads).describe_fp32(synth)


# ============================================================================ conclusion
def select(records: list[dict[str, Any]], objective: str) -> tuple[dict[str, Any] | None, bool]:
    """(winner, True) among the trials that passed the gate, or (closest to the gate, False)."""
    passed = [r for r in records if r.get("status") == "ok"]
    if passed:
        def score(r: dict[str, Any]) -> tuple:
            m = r.get("metrics") or {}
            quality = m.get("dwer") if m.get("dwer") is not None else m.get("logmel_l1") or 0.0
            main = -(r.get("timing") or {}).get("speed", 0.0) if objective == "speed" else r["size"]["bytes"]
            return (main, quality, r["index"])

        return min(passed, key=score), True
    gated = [r for r in records if r.get("gate")]
    if not gated:
        return None, False
    return min(gated, key=lambda r: (r["gate"]["violation"], r.get("early_stop", False), r["index"])), False


def _conclude(config: TuneConfig, tdir: TuneDir, synth: Any, records: list[dict[str, Any]], cands: Any,
              executor: Any) -> dict[str, Any]:
    from vitsq.tune.preset import model_identity, preset_dict, write_preset

    winner, passed = select(records, config.objective)
    counts = {s: sum(r.get("status") == s for r in records) for s in ("ok", "gated", "failed")}
    summary: dict[str, Any] = {
        "schema": "vitsq-tune-summary/1", "model": model_identity(synth), "objective": config.objective,
        "gate": config.gate, "seed": config.seed, "trials": len(records), "counts": counts,
        "candidates": cands.size, "pruned": [p.to_dict() for p in cands.pruned], "executor": executor.describe(),
        "tuning_split": {"sentences": config.sentences, "gate_sentences": config.gate_sentences,
                         "source": "tail of the calibration split"},
        "passed": passed, "winner": _brief(winner) if winner else None, "final": None}
    if winner is None or not passed:
        return summary
    preset = preset_dict(winner, model_identity(synth), config.calib_seed, config.gate, config.objective)
    write_preset(tdir.path / "best", preset)
    summary["winner"]["reproduced"] = _winner_artifact(synth, preset, tdir.path / "winner")
    if config.final_sentences != 0:
        summary["final"] = final_evaluation(config, synth, tdir.path / "winner", winner, records)
    return summary


def _winner_artifact(synth: Any, preset: dict[str, Any], path: Path) -> bool:
    """Rebuild the winner from its preset into ``path`` (kept when an earlier run of the search
    already rebuilt the same files); True when the files equal the winning trial's."""
    from vitsq.tune.preset import rebuild

    try:
        manifest = json.loads((path / "vitsq.json").read_text(encoding="utf-8"))
        if {n: f["sha256"] for n, f in manifest["files"].items()} == preset["artifact"]["files"]:
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return bool(rebuild(synth, preset, path, force=True)["reproduced"])


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    return {"index": r["index"], "key": r["key"], "label": r["candidate"]["label"], "status": r["status"],
            "early_stop": r.get("early_stop"), "metrics": r.get("metrics"), "gate": r.get("gate"),
            "timing": r.get("timing"), "size": r.get("size"),
            "recipe": r["candidate"]["recipe"], "calib": r["candidate"]["calib"]}


def final_evaluation(config: TuneConfig, synth: Any, winner_dir: Path, winner: dict[str, Any],
                     records: list[dict[str, Any]]) -> dict[str, Any]:
    """The winner, and its family's preset when that is another recipe, on the held-out
    evaluation split against FP32 (zero noise), timed interleaved with FP32 in this process."""
    import torch

    from vitsq.evaluate.sentences import load_split
    from vitsq.registry import load
    from vitsq.tune.preset import build_artifact

    threads = int(winner["candidate"]["threads"])
    torch.set_num_threads(threads)
    lang = _language(synth)
    sentences = load_split(lang, "evaluation", limit=config.final_sentences)
    speakers = spread_speakers(len(sentences), synth.num_speakers, config.seed)
    metrics = _metrics(config)  # the gate's own metrics: the held-out result is judged by the same gate
    variants = {"winner": load(winner_dir, threads=threads)}
    preset = next((r for r in records if r["candidate"]["origin"] == "preset" and r.get("status") != "failed"
                   and r["candidate"]["family"] == winner["candidate"]["family"]), None)
    scratch = tempfile.TemporaryDirectory(prefix="vitsq-tune-")
    try:
        if preset is not None and preset["key"] != winner["key"]:
            cand = Candidate.from_dict(preset["candidate"])
            build_artifact(synth, cand.recipe, cand.calib, config.calib_seed, Path(scratch.name) / "preset")
            variants["preset"] = load(Path(scratch.name) / "preset", threads=threads)
        return _evaluate_variants(config, synth, variants, sentences, speakers, lang, metrics, threads)
    finally:
        scratch.cleanup()


def _evaluate_variants(config: TuneConfig, synth: Any, variants: dict[str, Any], sentences: list[str],
                       speakers: list, lang: str, metrics: tuple[str, ...], threads: int) -> dict[str, Any]:
    from vitsq.tune.trial import _clean

    gate = parse_gate(config.gate)
    ev = Evaluator(Reference([], None, None, synth.sample_rate, 0), sentences, speakers, lang, metrics, threads)
    ev.reference = ev.describe_fp32(synth)
    out: dict[str, Any] = {"split": "evaluation", "sentences": len(sentences), "noise": "zero", "variants": {}}
    for name, v in variants.items():
        ev.rows = []
        m = _clean(ev.score(v, len(sentences)))
        out["variants"][name] = {"metrics": m, "gate": gate.evaluate(m), "bytes": int(v.size_bytes())}
    items = timing_items(synth, sentences, speakers, config.timing_sentences)
    names = list(variants)
    rtf = interleaved_rtf([synth] + [variants[n] for n in names], items, config.timing_rounds)
    speeds = speed_vs_first(rtf)
    out["timing"] = {"rtf_fp32": speeds[0]["rtf"], "rounds": config.timing_rounds, "threads": threads}
    for name, s in zip(names, speeds[1:]):
        out["variants"][name]["timing"] = {"speed": s["speed"], "rtf": s["rtf"], "ratios": s["ratios"]}
    return out

