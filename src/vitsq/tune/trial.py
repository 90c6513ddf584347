"""One trial of ``vitsq tune``: build a candidate, time it against FP32, evaluate it, gate it.

A trial runs in its own process (a local worker or a Ray task) with the thread count it asks
for, and returns a plain dict (one line of the results file):

1. **build**: calibrate on the first ``calib`` sentences of the calibration split (seeded, the
   same as ``vitsq quantize --calib N``), quantize, save the artifact to a temporary folder and
   load it back with the trial's threads, as a user would; the artifact's file hashes are
   recorded, so ``vitsq quantize --recipe DIR/best`` can be checked to rebuild it exactly;
2. **early gate**: synthesize the first ``gate_sentences`` of the tuning split and score them;
   a candidate failing the gate there stops (``status: gated``, ``early_stop: true``);
3. **time**: FP32 and the candidate in this process, interleaved round by round (the order
   alternates), ``speed`` = median over rounds of RTF(FP32) / RTF(candidate): a ratio, never an
   absolute time compared across machines;
4. **evaluate** the rest of the tuning split and apply the gate to the whole of it.

Quality is measured at zero noise (``noise_scale = noise_w = 0``): ONNX Runtime draws its noise
inside the graph and cannot be seeded, and zero noise makes every metric repeatable, so the same
candidate gives the same quality numbers on any worker. The FP32 side (audio, transcripts,
speaker embeddings: :class:`Reference`) is computed once by the driver and shipped to trials.

The *tuning split* is the tail of the shipped calibration split (:func:`tuning_sentences`):
calibration takes sentences from its head (``make_calibration``) and the sensitivity ranking
the ones right after, so the three never overlap, and neither touches the evaluation split that
the winner is finally reported on.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitsq.errors import InputError
from vitsq.tune.space import ASR_METRICS, SPEAKER_METRICS, Candidate, parse_gate

log = logging.getLogger(__name__)

SCHEMA = "vitsq-tune-trial/1"


# ============================================================================ sentences
def tuning_sentences(language: str, n: int) -> list[str]:
    """The last ``n`` sentences of the shipped calibration split of ``language`` (file order):
    the tuning split. Calibration sets start at the head of the same split."""
    from vitsq.evaluate.sentences import load_split

    pool = load_split(language, "calibration")
    if not 1 <= n < len(pool):
        raise InputError(f"the tuning split takes 1..{len(pool) - 1} sentences of the {language} calibration split "
                         f"({len(pool)} sentences; the rest calibrates), got {n}")
    return pool[len(pool) - n:]


def calibration_room(language: str, n_tuning: int) -> int:
    """Calibration-split sentences before the tuning split (the largest calibration set)."""
    from vitsq.evaluate.sentences import load_split

    return len(load_split(language, "calibration")) - n_tuning


def spread_speakers(n: int, num_speakers: int, seed: int = 0) -> list[int | None]:
    """Speaker of each sentence: None for single-speaker models, else a seeded even spread."""
    if num_speakers <= 1:
        return [None] * n
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < n:
        order.extend(int(s) for s in rng.permutation(num_speakers))
    return list(order[:n])


# ============================================================================ the trial's input
@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the FP32 model: a name or path that resolves on every worker."""

    spec: str
    config_path: str | None = None

    def load(self, threads: int | None = None):
        from vitsq.registry import load

        return load(self.spec, backend="torch", config_path=self.config_path, threads=threads)


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs besides the FP32 reference (picklable, JSON-able)."""

    index: int
    candidate: dict[str, Any]
    model: ModelSpec
    sentences: tuple[str, ...]
    speakers: tuple[int | None, ...]
    language: str
    gate: str
    metrics: tuple[str, ...]
    gate_sentences: int
    timing_sentences: int = 4
    timing_rounds: int = 5
    calib_seed: int = 0
    n_boot: int = 1000


@dataclass
class Reference:
    """FP32 side of the comparison on a sentence set, at zero noise."""

    audio: list[np.ndarray | None]
    transcripts: list[str | None] | None
    embeddings: list[np.ndarray | None] | None
    sample_rate: int
    fp32_bytes: int


def needs(metrics: Sequence[str]) -> tuple[bool, bool]:
    """(Whisper needed, speaker encoder needed) for ``metrics``."""
    return any(m in ASR_METRICS for m in metrics), any(m in SPEAKER_METRICS for m in metrics)


# ============================================================================ synthesis and scoring
def synthesize(synth: Any, text: str, speaker: int | None) -> np.ndarray:
    """One sentence at zero noise, the model's length scale: samples [S]."""
    kw = {} if speaker is None else {"speaker": speaker}
    return synth.synthesize(text, noise_scale=0.0, noise_w=0.0, **kw).samples


class Evaluator:
    """Scores a synthesizer against a :class:`Reference`, sentence by sentence, so a trial can
    score the first sentences (early gate) and go on with the rest."""

    def __init__(self, reference: Reference, sentences: Sequence[str], speakers: Sequence[int | None], language: str,
                 metrics: Sequence[str], threads: int | None = None, n_boot: int = 1000) -> None:
        use_asr, use_spk = needs(metrics)
        self.reference, self.sentences, self.speakers = reference, list(sentences), list(speakers)
        self.language, self.n_boot = language, n_boot
        self.asr = self.encoder = None
        if use_asr:
            from vitsq.evaluate.asr import WhisperASR

            self.asr = WhisperASR(cpu_threads=threads or 0)
        if use_spk:
            from vitsq.evaluate.metrics import SpeakerEncoder

            self.encoder = SpeakerEncoder()
        self.rows: list[dict[str, Any]] = []

    def describe_fp32(self, synth: Any) -> Reference:
        """Synthesize, transcribe and embed FP32 on every sentence: the reference."""
        audio, hyps, embs = [], [], []
        for text, spk in zip(self.sentences, self.speakers):
            a = synthesize(synth, text, spk)
            audio.append(a)
            hyps.append(self.asr.transcribe(a, synth.sample_rate, self.language) if self.asr else None)
            embs.append(self.encoder.embed(a, synth.sample_rate) if self.encoder else None)
        return Reference(audio, hyps if self.asr else None, embs if self.encoder else None, synth.sample_rate,
                         int(synth.size_bytes()))

    def score(self, synth: Any, stop: int) -> dict[str, Any]:
        """Score sentences ``len(self.rows)`` .. ``stop - 1`` of ``synth``; metrics over 0 .. stop - 1."""
        from vitsq.evaluate.metrics import audio_distance, cosine_similarity

        ref = self.reference
        for i in range(len(self.rows), stop):
            row: dict[str, Any] = {"distance": None, "hypothesis": None, "similarity": None, "error": None}
            try:
                out = synthesize(synth, self.sentences[i], self.speakers[i])
                row["distance"] = audio_distance(ref.audio[i], out, ref.sample_rate)
                if self.asr is not None:
                    row["hypothesis"] = self.asr.transcribe(out, ref.sample_rate, self.language)
                if self.encoder is not None:
                    row["similarity"] = cosine_similarity(ref.embeddings[i], self.encoder.embed(out, ref.sample_rate))
            except Exception as exc:  # noqa: BLE001 - a failed sentence counts against the candidate
                row["error"] = f"{type(exc).__name__}: {exc}"
            self.rows.append(row)
        return self.metrics(stop)

    def metrics(self, stop: int) -> dict[str, Any]:
        """Aggregates over the first ``stop`` scored sentences (failures make a candidate look worse)."""
        from vitsq.evaluate.metrics import distance_stats

        rows = self.rows[:stop]
        out: dict[str, Any] = {"sentences": stop, "failed": sum(r["error"] is not None for r in rows)}
        d = distance_stats([r["distance"] for r in rows])
        out.update(logmel_l1=d.log_mel_l1, snr_db=d.snr_db, mcd_db=d.mcd_db,
                   length_mismatches=sum(r["distance"] is not None and r["distance"].length_difference != 0
                                         for r in rows))
        if self.asr is not None:
            out.update(self._wer(rows, stop))
        if self.encoder is not None:
            sims = [r["similarity"] for r in rows if r["similarity"] is not None]
            out["speaker_sim"] = float(np.mean(sims)) if sims else math.nan
            out["speaker_sim_min"] = float(min(sims)) if sims else math.nan
        if out["failed"]:  # a sentence that did not synthesize: distances/similarity cannot vouch for it
            for k in ("logmel_l1", "mcd_db", "speaker_sim", "speaker_sim_min"):
                if k in out:
                    out[k] = math.nan
        return out

    def _wer(self, rows: list[dict[str, Any]], stop: int) -> dict[str, Any]:
        from vitsq.evaluate.metrics import paired_bootstrap_delta_wer, score_transcripts

        refs = self.sentences[:stop]
        base = score_transcripts(refs, list(self.reference.transcripts[:stop]), self.language)
        cand = score_transcripts(refs, [r["hypothesis"] for r in rows], self.language,
                                 errors=[r["error"] for r in rows])
        dw = paired_bootstrap_delta_wer(base, cand, n_boot=self.n_boot, seed=0)
        return {"wer": cand.wer * 100, "wer_fp32": base.wer * 100, "dwer": dw.delta * 100,
                "dwer_ci": [dw.ci_low * 100, dw.ci_high * 100]}


# ============================================================================ timing
def interleaved_rtf(synths: Sequence[Any], items: Sequence[tuple[list[int], int | None]], rounds: int,
                    warmup: int = 1) -> list[list[float]]:
    """RTF of each synthesizer in each round: ``[variant][round]``. Every round runs every
    variant on all ``items`` (ids, speaker) at zero noise; round ``r`` starts at variant
    ``r mod n``, so load from other processes hits all variants alike."""
    n = len(synths)
    rtf: list[list[float]] = [[] for _ in synths]
    for r in range(-warmup, rounds):
        for j in range(n):
            v = (j + max(r, 0)) % n
            seconds = audio = 0.0
            for ids, spk in items:
                kw = {} if spk is None else {"speaker": spk}
                a = synths[v].synthesize_ids(ids, noise_scale=0.0, noise_w=0.0, **kw)
                seconds += a.model_seconds
                audio += a.duration
            if r >= 0:
                rtf[v].append(seconds / max(audio, 1e-9))
    return rtf


def speed_vs_first(rtf: list[list[float]]) -> list[dict[str, Any]]:
    """Per variant: median RTF and median over rounds of RTF(variant 0) / RTF(variant)."""
    out = []
    for v in rtf:
        ratios = [a / b for a, b in zip(rtf[0], v) if b > 0]
        out.append({"speed": float(np.median(ratios)) if ratios else math.nan, "rtf": float(np.median(v)),
                    "ratios": [round(x, 4) for x in ratios]})
    return out


def timing_items(synth: Any, sentences: Sequence[str], speakers: Sequence[int | None], n: int):
    """(ids, speaker) of the first piece of the first ``n`` sentences."""
    return [(synth.text_to_ids(s)[0], spk) for s, spk in list(zip(sentences, speakers))[:n]]


# ============================================================================ the trial
def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))


def run_trial(spec: TrialSpec, reference: Reference) -> dict[str, Any]:
    """Run one trial (module docstring) and return its record; never raises for a candidate
    that fails (``status: failed`` with the error), so that only a dying process is retried."""
    t0 = time.perf_counter()
    cand = Candidate.from_dict(spec.candidate)
    record: dict[str, Any] = {"schema": SCHEMA, "index": spec.index, "key": cand.key, "candidate": cand.to_dict(),
                              "worker": {"host": platform.node(), "pid": os.getpid(), "threads": cand.threads}}
    try:
        _set_threads(cand.threads)
        synth = spec.model.load()
        with tempfile.TemporaryDirectory(prefix="vitsq-tune-") as tmp:
            record.update(_measure(spec, cand, synth, reference, Path(tmp) / "artifact"))
    except Exception as exc:  # noqa: BLE001 - recorded; the search goes on
        log.error("trial %d (%s) failed: %s", spec.index, cand.label, exc)
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback="".join(traceback.format_exc(limit=8)))
    record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


def _measure(spec: TrialSpec, cand: Candidate, synth: Any, reference: Reference, out: Path) -> dict[str, Any]:
    from vitsq.registry import load
    from vitsq.tune.preset import build_artifact

    t = time.perf_counter()
    built = build_artifact(synth, cand.recipe, cand.calib, spec.calib_seed, out)
    if built["calibration_sentences"] & set(spec.sentences):
        raise InputError("calibration sentences overlap the tuning split: the search would grade its own data")
    variant = load(out, threads=cand.threads)
    res: dict[str, Any] = {"build_seconds": round(time.perf_counter() - t, 2), "artifact": built["artifact"],
                           "size": {"bytes": built["artifact"]["bytes"], "fp32_bytes": reference.fp32_bytes,
                                    "ratio": reference.fp32_bytes / max(built["artifact"]["bytes"], 1)}}
    gate = parse_gate(spec.gate)
    ev = Evaluator(reference, spec.sentences, spec.speakers, spec.language, spec.metrics, cand.threads, spec.n_boot)
    n = len(spec.sentences)
    k = min(spec.gate_sentences, n)
    early = ev.score(variant, k)
    verdict = gate.evaluate(early)
    if not verdict["passed"] and k < n:
        return {**res, "status": "gated", "early_stop": True, "metrics": _clean(early), "gate": verdict}
    items = timing_items(synth, spec.sentences, spec.speakers, spec.timing_sentences)
    rtf = interleaved_rtf([synth, variant], items, spec.timing_rounds)
    fp32, q = speed_vs_first(rtf)
    res["timing"] = {"speed": q["speed"], "rtf_fp32": fp32["rtf"], "rtf": q["rtf"], "ratios": q["ratios"],
                     "rounds": spec.timing_rounds, "sentences": len(items)}
    full = ev.score(variant, n)
    verdict = gate.evaluate(full)
    return {**res, "status": "ok" if verdict["passed"] else "gated", "early_stop": False, "metrics": _clean(full),
            "gate": verdict}


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """Rounded, JSON-safe metrics (NaN/inf -> None)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, float):
            out[k] = round(v, 5) if math.isfinite(v) else None
        elif isinstance(v, list):
            out[k] = [round(x, 5) if isinstance(x, float) and math.isfinite(x) else None for x in v]
        else:
            out[k] = v
    return out


def spec_to_dict(spec: TrialSpec) -> dict[str, Any]:
    return {**asdict(spec), "model": asdict(spec.model)}

