"""Time to first audio of ``streaming-vits`` next to vitsq's streamed variants, on joe.

``streaming-vits`` (PyPI, MIT) splits a Piper ``.onnx`` at the prior sample ``z_p`` and decodes
frames in windows with margins. This script runs it on the original ``en_US-joe-medium.onnx``
(FP32, ONNX Runtime) in the same process, on the same phoneme ids, thread count and zero noise as
vitsq's streamed variants (FP32 PyTorch, FP32 ONNX Runtime on the original voice or on a vitsq
FP32 export given by ``--fp32-onnx``, the INT8 ``ort-static`` preset), interleaved round by round (every round runs each job once, in rotating
order, so machine load hits all alike), and writes a JSON record and a markdown table:

* TTFA (call to first chunk in hand) p50/p95 and the streamed total, per variant;
* the non-streamed latency of the same reply (the original voice in ONNX Runtime, and each
  variant's own ``synthesize``), and streamed total / non-streamed (the work ratio);
* exactness: each streamed output against its own non-streamed output (max |diff| / max |x|,
  and the largest difference in 16-bit samples); the peer against a full decode of the original
  voice in ONNX Runtime on the same ids.

The reply is real sentences (the shipped English evaluation split, in file order) up to the
asked number of phoneme ids. vitsq synthesizes text sentence by sentence; the peer runs a whole
text as one utterance, so it runs twice: on the whole reply as one utterance (the sentences' ids
joined with a space, the layout its phonemizer gives a text) and sentence by sentence on vitsq's
ids. It is fed ids, not text: its phonemizer adds a space after every sentence and, with
piper-phonemize installed, repeats each sentence's terminator, so its ids differ from Piper's.

    pip install -e '.[peers]'
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers/ttfa_streaming_vits.py \\
        -o benchmarks/joe_ttfa_peers.json --rounds 10 --force
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger("ttfa_peers")

PEER = "streaming-vits"
#: vitsq's knobs for every variant: zero noise (ONNX Runtime draws noise unseeded inside its
#: graph, so only noiseless outputs can be compared), the voice's own length scale.
ZERO_NOISE = {"noise_scale": 0.0, "noise_w": 0.0}


# ============================================================================ inputs
def pick_reply(synth: Any, target_ids: int) -> tuple[str, list[list[int]]]:
    """Sentences of the English evaluation split, in file order, until their ids reach
    ``target_ids``: (the reply's text, vitsq's ids per sentence)."""
    from vitsq.evaluate.sentences import load_split

    chosen: list[str] = []
    n = 0
    for sentence in load_split("en", "evaluation"):
        chosen.append(sentence)
        n += sum(len(ids) for ids in synth.text_to_ids(sentence))
        if n >= target_ids:
            break
    text = " ".join(chosen)
    return text, synth.text_to_ids(text)


def join_ids(sentences: list[list[int]], id_map: dict[str, list[int]]) -> list[int]:
    """The sentences' ids as one utterance, in the layout streaming-vits's phonemizer gives a
    whole text: BOS PAD, each sentence's phonemes (with their PADs) followed by a space and a
    PAD, EOS. Each sentence is Piper's ``BOS PAD ... EOS``."""
    bos, pad, eos, space = (id_map[k][0] for k in ("^", "_", "$", " "))
    out = [bos, pad]
    for ids in sentences:
        if ids[:2] != [bos, pad] or ids[-1] != eos:
            raise ValueError(f"sentence ids do not have Piper's BOS PAD ... EOS layout: {ids[:3]}...{ids[-2:]}")
        out += ids[2:-1] + [space, pad]
    return out + [eos]


# ============================================================================ the peer
def _peer_class() -> type:
    """streaming-vits's ``StreamingTTS`` fed phoneme ids: its ``stream(text)`` asks
    ``phoneme_ids(text)`` first, so that is the one method replaced."""
    from streaming_vits import StreamingTTS

    class IdsStreamingTTS(StreamingTTS):
        def phoneme_ids(self, ids):  # noqa: D102 - the peer's hook, given ids instead of text
            return np.asarray([ids], dtype=np.int64), 0  # [1, T], no unknown phonemes

    return IdsStreamingTTS


def load_peer(voice: Path, voice_json: Path, workdir: Path, threads: int,
              profile: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """streaming-vits on a copy of the original voice in ``workdir`` (it caches its split graphs
    beside the model: the installed voice package stays untouched), with the package's default
    profile or ``profile`` (a ``profile.json`` from ``streaming-vits calibrate``). Returns its
    decoders by name (``windowed``; ``cached-state`` too when its torch export builds for this
    voice) and what the JSON records about them."""
    try:
        import streaming_vits
        from streaming_vits import Profile
    except ImportError as exc:
        from vitsq.errors import UnsupportedError

        raise UnsupportedError("streaming-vits is not installed: pip install -e '.[peers]'") from exc
    model = workdir / voice.name
    shutil.copyfile(voice, model)
    shutil.copyfile(voice_json, workdir / voice_json.name)
    cls = _peer_class()

    def make(cached: bool) -> Any:
        prof = Profile.load(profile) if profile else Profile()
        return cls(model, profile=prof, threads=threads, verbose=False, use_cached=cached)

    peers = {"windowed": make(False)}
    cached = _try_cached_export(model)
    if cached["built"]:
        peers["cached-state"] = make(True)
        if peers["cached-state"].cached is None:
            raise RuntimeError(f"{PEER} built its cached-state decoder but does not load it")
    w = peers["windowed"]
    info = {"version": streaming_vits.__version__, "decoders": list(peers),
            "profile": f"calibrated ({profile.name})" if profile else "package default (uncalibrated)",
            "margins": {"left": w.left, "right": w.right}, "schedule": list(w.profile.schedule),
            "threads": w.threads, "hop": w.hop, "cached_state": cached}
    return peers, info


def _try_cached_export(model: Path) -> dict[str, Any]:
    """Build streaming-vits's cached-state decoder (no margin recomputation; a torch export) beside
    ``model``; a voice it cannot export is recorded with the error and runs windowed only."""
    try:
        from streaming_vits.export import export_stream

        path, delay = export_stream(model, verbose=False)
    except Exception as exc:  # noqa: BLE001 - the peer's failure is a finding, recorded as such
        log.warning("%s cached-state export failed on %s: %s: %s", PEER, model.name, type(exc).__name__, exc)
        return {"built": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"built": True, "delay_samples": int(delay), "file": Path(path).name}


# ============================================================================ jobs
@dataclass
class Job:
    """One timed call per round: ``run()`` yields audio pieces (one for a non-streamed call).

    A streamed job names its non-streamed ``reference`` job (and says what it is in ``against``)."""

    name: str
    run: Callable[[], Iterable[np.ndarray]]
    reference: str | None = None
    against: str = ""
    streams: str = ""  # "frames" or "sentences" (streamed jobs)
    ttfa: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    chunks: int = 0
    first_chunk_seconds: float = 0.0
    audio: np.ndarray | None = None

    @property
    def streamed(self) -> bool:
        return self.reference is not None


def time_job(job: Job, sample_rate: int) -> None:
    """Run ``job`` once: seconds to the first non-empty piece and to the end, its audio."""
    parts: list[np.ndarray] = []
    first = None
    t0 = time.perf_counter()
    for samples in job.run():
        if first is None and len(samples):
            first = time.perf_counter() - t0
        parts.append(np.asarray(samples, dtype=np.float32).reshape(-1))  # [n]
    total = time.perf_counter() - t0
    job.ttfa.append(total if first is None else first)
    job.total.append(total)
    job.chunks = len(parts)
    job.first_chunk_seconds = len(parts[0]) / sample_rate if parts else 0.0
    job.audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _vitsq_stream(synth: Any, text: str, knobs: dict) -> Callable[[], Iterator[np.ndarray]]:
    return lambda: (c.samples for c in synth.stream(text, **knobs))


def _vitsq_full(synth: Any, text: str, knobs: dict) -> Callable[[], list[np.ndarray]]:
    return lambda: [synth.synthesize(text, **knobs).samples]


def _peer_stream(peer: Any, utterances: list[list[int]], scales: np.ndarray) -> Callable[[], Iterator[np.ndarray]]:
    def run() -> Iterator[np.ndarray]:
        for ids in utterances:  # one utterance, or one per sentence
            for chunk in peer.stream(ids, scales=scales):
                yield chunk.audio
    return run


ORT_WHOLE = "original voice, ORT (whole reply, one utterance)"
#: vitsq's streamed variants (the last one only when ``--int8-fast`` is given).
VITSQ_LABELS = ("fp32-onnx", "fp32-torch", "int8-ort-static", "int8-ort-static-fast")
ORT_SENTENCES = "original voice, ORT (per sentence)"


def build_jobs(v: dict[str, Any], peers: dict[str, Any], text: str, sentences: list[list[int]],
               whole: list[int]) -> list[Job]:
    """The timed calls of a round: the peer's decoders on the whole reply and per sentence,
    vitsq's three streamed variants, and the non-streamed calls they are compared with."""
    knobs = dict(ZERO_NOISE, length_scale=v["length_scale"])
    scales = np.array([0.0, v["length_scale"], 0.0], dtype=np.float32)  # the peer's [noise, length, noise_w]
    ort = v["original-onnx"]
    same_ids = "full decode of the original voice in ORT, same ids"
    jobs = [Job(ORT_WHOLE, lambda: [ort.synthesize_ids(whole, **knobs).samples]),
            Job(ORT_SENTENCES, _vitsq_full(ort, text, knobs))]
    for decoder, peer in peers.items():
        jobs += [Job(f"{PEER} {decoder} (whole reply)", _peer_stream(peer, [whole], scales), ORT_WHOLE, same_ids, "frames"),
                 Job(f"{PEER} {decoder} (per sentence)", _peer_stream(peer, sentences, scales), ORT_SENTENCES,
                     same_ids, "frames")]
    if v["fp32-onnx"] is ort:  # the original voice: its own synthesize() is already timed
        jobs.append(Job("vitsq fp32-onnx", _vitsq_stream(ort, text, knobs), ORT_SENTENCES,
                        "its own synthesize() (the original voice in ORT)", ort.streaming))
    for label in VITSQ_LABELS:
        if label not in v:
            continue
        synth = v[label]
        if synth is ort:
            continue
        ref = f"vitsq {label} (not streamed)"
        jobs += [Job(f"vitsq {label}", _vitsq_stream(synth, text, knobs), ref, "its own synthesize()", synth.streaming),
                 Job(ref, _vitsq_full(synth, text, knobs))]
    return jobs


def _int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)  # as vitsq.synth.Audio.to_int16


def exactness(got: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """``got`` against ``ref``: max |diff| / max |ref| and the largest 16-bit sample difference
    (over the common length; unequal lengths are recorded and count as inexact)."""
    n = min(len(got), len(ref))
    diff = np.abs(got[:n].astype(np.float64) - ref[:n])
    peak = float(np.max(np.abs(ref))) if len(ref) else 0.0
    lsb = np.abs(_int16(got[:n]).astype(np.int32) - _int16(ref[:n]))
    return {"samples": len(got), "reference_samples": len(ref), "same_length": len(got) == len(ref),
            "max_abs_diff": float(diff.max()) if n else 0.0,
            "rel_max_abs_diff": float(diff.max()) / peak if n and peak > 0 else None,
            "int16_max_diff_lsb": int(lsb.max()) if n else 0,
            "int16_differing_samples": int(np.count_nonzero(lsb))}


def _worse(a: dict | None, b: dict) -> dict:
    if a is None:
        return b
    key = lambda e: (not e["same_length"], e["rel_max_abs_diff"] or 0.0, e["int16_max_diff_lsb"])  # noqa: E731
    return b if key(b) > key(a) else a


def run_rounds(jobs: list[Job], rounds: int, warmup: int, sample_rate: int) -> tuple[list[list[str]], dict]:
    """``warmup`` untimed rounds, then ``rounds`` timed ones; round r runs the jobs starting at
    job r (mod n). Returns each timed round's order and the worst exactness of each streamed job
    over the rounds."""
    by_name = {j.name: j for j in jobs}
    orders: list[list[str]] = []
    worst: dict[str, dict] = {}
    for r in range(warmup + rounds):
        k = r % len(jobs)
        order = jobs[k:] + jobs[:k]
        for job in order:
            time_job(job, sample_rate)
        if r < warmup:
            for job in jobs:
                job.ttfa.clear()
                job.total.clear()
            continue
        orders.append([j.name for j in order])
        for job in jobs:
            if job.streamed:
                worst[job.name] = _worse(worst.get(job.name), exactness(job.audio, by_name[job.reference].audio))
        log.info("round %d/%d done", r - warmup + 1, rounds)
    return orders, worst


# ============================================================================ vitsq variants
def load_variants(threads: int, int8_dir: Path | None, onnx_path: Path | None, workdir: Path,
                  fast_dir: Path | None = None) -> dict[str, Any]:
    """joe on PyTorch FP32, on ONNX Runtime (the original file; and ``onnx_path``, a vitsq FP32
    ONNX export of joe, when given), the INT8 ``ort-static`` preset (quantized here unless
    ``int8_dir`` holds one) and, when ``fast_dir`` is given, the ``ort-static:fast`` artifact in it,
    all on ``threads`` threads."""
    import torch

    import vitsq
    from vitsq.errors import InputError

    torch.set_num_threads(threads)
    fp32 = vitsq.load("joe", backend="torch")
    original = vitsq.load("joe", backend="onnx", threads=threads)
    onnx = original
    if onnx_path is not None:
        onnx = vitsq.load(onnx_path, backend="onnx", threads=threads)
        if onnx.describe().get("quantization"):
            raise InputError(f"--fp32-onnx {onnx_path} is quantized: give an FP32 ONNX export of joe "
                             f"(vitsq export joe --format onnx -o PATH)")
    if int8_dir is None:
        log.info("quantizing joe with the ort-static preset (calibration takes a few minutes)")
        int8_dir = vitsq.quantize(fp32, "ort-static", streaming=True).save(workdir / "joe-ort-int8")
    out = {"fp32-torch": fp32, "fp32-onnx": onnx, "original-onnx": original, "length_scale": fp32.config.length_scale}
    for label, flag, path in (("int8-ort-static", "--int8", int8_dir), ("int8-ort-static-fast", "--int8-fast", fast_dir)):
        if path is None:
            continue
        int8 = vitsq.load(path, threads=threads)
        recipe = (int8.describe().get("quantization") or {}).get("recipe")
        recipe = recipe.get("recipe") if isinstance(recipe, dict) else recipe  # a manifest nests the recipe record
        if int8.backend != "onnx" or recipe != "ort-static":
            raise InputError(f"{flag} {path}: expected an ort-static artifact (vitsq quantize joe --recipe "
                             f"ort-static), got recipe {recipe!r} on the {int8.backend} backend")
        out[label] = int8
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"PyTorch runs {torch.get_num_threads()} threads, not {threads}")
    return out


# ============================================================================ results
def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "min_ms": float(ms.min()), "mean_ms": float(ms.mean()), "n": int(len(ms))}


def summarize(jobs: list[Job], worst: dict[str, dict], sample_rate: int) -> dict[str, Any]:
    """Per job: TTFA and total statistics; for streamed jobs their reference's latency, the work
    ratio (streamed total / non-streamed, medians), TTFA over the non-streamed FP32 ORT latency
    and over each peer run's TTFA (medians), and the worst exactness over the rounds."""
    by_name = {j.name: j for j in jobs}
    med = {j.name: float(np.median(j.total)) for j in jobs}
    ttfa = {j.name: float(np.median(j.ttfa)) for j in jobs}
    peer_runs = [j.name for j in jobs if j.streamed and j.name.startswith(PEER)]
    rows = []
    for j in jobs:
        row: dict[str, Any] = {"name": j.name, "streamed": j.streamed, "total": _stats(j.total)}
        if j.streamed:
            ref = by_name[j.reference]
            row.update(streams=j.streams, ttfa=_stats(j.ttfa), chunks=j.chunks,
                       first_chunk_audio_s=j.first_chunk_seconds, reference=ref.name, against=j.against,
                       reference_total=_stats(ref.total), work_ratio=med[j.name] / med[ref.name],
                       ttfa_over_ort_fp32_not_streamed=ttfa[j.name] / med[ORT_SENTENCES],
                       ttfa_over_peer={p: ttfa[j.name] / ttfa[p] for p in peer_runs},
                       exactness=worst[j.name])
        rows.append(row)
    return {"jobs": rows, "audio_seconds": {j.name: len(j.audio) / sample_rate for j in jobs}}


def _f(x: float | None, fmt: str = ".0f") -> str:
    return "–" if x is None else format(x, fmt)


def _machine_line(m: dict[str, Any], threads: int) -> str:
    vers = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    a, b = m.get("load_average_start"), m.get("load_average_end")
    load = f"; 1-min load average {a[0]:.1f} at start, {b[0]:.1f} at end" if a and b else ""
    return (f"machine `{m.get('name')}`: {m.get('cpu')}, {m.get('cores')} cores "
            f"({m.get('cores_available')} available); {vers}; threads {threads}{load}")


def _ttfa_table(rows: list[dict[str, Any]], peer_runs: list[str]) -> list[str]:
    head = ["variant", "streams", "TTFA p50 ms", "TTFA p95 ms", "streamed total p50 ms", "not streamed p50 ms",
            "work ×", "chunks", "TTFA ÷ FP32 ORT not streamed"] + [f"TTFA ÷ {p}" for p in peer_runs]
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        if not r["streamed"]:
            continue
        cells = [f"`{r['name']}`", r["streams"], _f(r["ttfa"]["p50_ms"]), _f(r["ttfa"]["p95_ms"]),
                 _f(r["total"]["p50_ms"]), _f(r["reference_total"]["p50_ms"]), _f(r["work_ratio"], ".2f"),
                 str(r["chunks"]), _f(r["ttfa_over_ort_fp32_not_streamed"], ".3f")]
        cells += [_f(r["ttfa_over_peer"][p], ".2f") for p in peer_runs]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _exact_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [f"| variant | against | same length | max abs diff ÷ max abs x | int16 max diff (LSB) | "
           f"int16 samples differing |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        if r["streamed"]:
            e = r["exactness"]
            out.append(f"| `{r['name']}` | {r['against']} | {'yes' if e['same_length'] else 'no'} | "
                       f"{_f(e['rel_max_abs_diff'], '.2e')} | {e['int16_max_diff_lsb']} | "
                       f"{e['int16_differing_samples']} of {e['samples']} |")
    return out


def markdown(data: dict[str, Any]) -> str:
    """The markdown page of one result: settings, TTFA/work table, latencies, exactness, peer notes."""
    s, reply, peer = data["settings"], data["reply"], data["peer"]
    rows = data["results"]["jobs"]
    peer_runs = [r["name"] for r in rows if r["streamed"] and r["name"].startswith(PEER)]
    out = [f"# Time to first audio: vitsq and {PEER} on joe ({data['created']})", "",
           _machine_line(data["machine"], s["threads"]), "",
           f"Command: `{data['command']}`", "",
           f"Reply: {len(reply['sentence_ids'])} sentences of the English evaluation split, "
           f"{sum(reply['sentence_ids'])} phoneme ids (first sentence {reply['sentence_ids'][0]}), "
           f"{data['results']['audio_seconds'][ORT_SENTENCES]:.2f} s of audio; zero noise, length scale "
           f"{s['length_scale']:g}; {s['rounds']} timed rounds after {s['warmup']} warm-up, interleaved (each "
           f"round runs every call once, in rotating order). TTFA: from the call until the first chunk is in "
           f"hand (phonemization included for vitsq, which is given text; the peer is given ids). "
           f"`vitsq fp32-onnx` runs {s['fp32_onnx']}. "
           f"*streams*: `frames` = chunks within a sentence, `sentences` = one chunk per sentence. "
           f"*work ×*: streamed total ÷ the same variant not streamed (medians).", "",
           "## Time to first audio", ""]
    out += _ttfa_table(rows, peer_runs)
    out += ["", "Not streamed (the whole reply before any audio):", ""]
    out += [f"- `{r['name']}`: p50 {_f(r['total']['p50_ms'])} ms, p95 {_f(r['total']['p95_ms'])} ms"
            for r in rows if not r["streamed"]]
    out += ["", f"## Exactness (streamed vs not streamed, worst of {s['rounds']} rounds)", ""]
    out += _exact_table(rows)
    cached = peer["cached_state"]
    out += ["", f"## {PEER}", "",
            f"- version {peer['version']}, decoders timed: {', '.join(peer['decoders'])}; {peer['profile']} profile: "
            f"margins left {peer['margins']['left']} / right {peer['margins']['right']} frames, schedule "
            f"{peer['schedule']}, {peer['threads']} thread(s); on a copy of the original `en_US-joe-medium.onnx`.",
            "- cached-state decoder: " + ("built and timed" if cached["built"] else
                                          f"its export fails on this voice (`{cached['error']}`), not timed") + ".",
            f"- fed vitsq's phoneme ids, not text. Whole reply: the sentences joined as its phonemizer lays out "
            f"a text ({reply['whole_ids']} ids; its own phonemizer makes {reply['peer_phonemizer_whole_ids']} ids "
            f"of the text, equal: {'yes' if reply['peer_phonemizer_whole_equal'] else 'no'}). Per sentence: "
            f"vitsq's ids (its own phonemizer's ids equal them for {reply['peer_phonemizer_sentences_equal']} of "
            f"{len(reply['sentence_ids'])} sentences)."]
    return "\n".join(out) + "\n"


# ============================================================================ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", required=True, type=Path,
                    help="result JSON (.json); the markdown table goes beside it (.md)")
    ap.add_argument("--ids", type=int, default=300, help="phoneme ids of the reply, at least (default 300)")
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds (default 10)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="threads of every runtime (default 1)")
    ap.add_argument("--int8", type=Path, help="an ort-static artifact of joe (`vitsq quantize joe --recipe "
                                              "ort-static -o DIR`); default: quantize here")
    ap.add_argument("--int8-fast", type=Path, help="an ort-static:fast artifact of joe (`vitsq quantize joe --recipe "
                                                   "ort-static:fast -o DIR`), timed as one more variant")
    ap.add_argument("--fp32-onnx", type=Path, help="a vitsq FP32 ONNX export of joe (`vitsq export joe --format "
                                                   "onnx -o PATH`) as the fp32-onnx variant; default: the original "
                                                   "voice file")
    ap.add_argument("--peer-profile", type=Path, help=f"a {PEER} profile.json (from `{PEER} calibrate`); "
                                                      "default: the package's default profile")
    ap.add_argument("--force", action="store_true", help="replace existing result files")
    return ap.parse_args(argv)


def _check_args(args: argparse.Namespace) -> tuple[Path, Path]:
    """Refuse bad counts and unusable paths before any slow work; the two output paths."""
    from vitsq.errors import InputError
    from vitsq.outputs import check_output

    for name, lo, hi in (("ids", 10, 1000), ("rounds", 1, 1000), ("warmup", 0, 100), ("threads", 1, 256)):
        value = getattr(args, name)
        if not lo <= value <= hi:
            raise InputError(f"--{name} {value} is out of range: use an integer in {lo}..{hi}")
    for name in ("int8", "int8_fast", "fp32_onnx", "peer_profile"):
        p = getattr(args, name)
        if p is not None and not p.exists():
            raise InputError(f"--{name.replace('_', '-')} {p} does not exist")
    if args.out.suffix.lower() != ".json":
        raise InputError(f"-o {args.out}: give a .json path (the .md table is written beside it)")
    md = args.out.with_suffix(".md")
    for p, sfx in ((args.out, ".json"), (md, ".md")):
        check_output(p, suffixes=(sfx,), force=args.force, what="result file")
    return args.out, md


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Load everything, time the interleaved rounds, return the result record."""
    from vitsq.bench import load_average, machine_info, package_version
    from vitsq.jsonutil import command_line, describe_sources
    from vitsq.registry import joe_paths

    machine = machine_info()
    machine["versions"][PEER] = package_version(PEER)
    load_start = machine.pop("load_average")
    with tempfile.TemporaryDirectory(prefix="vitsq-peers-") as tmp:
        v = load_variants(args.threads, args.int8, args.fp32_onnx, Path(tmp), args.int8_fast)
        peers, peer_info = load_peer(*joe_paths(), Path(tmp), args.threads, args.peer_profile)
        ort = v["original-onnx"]
        text, sentences = pick_reply(ort, args.ids)
        for label in (lb for lb in VITSQ_LABELS if lb in v):
            if v[label].text_to_ids(text) != sentences:
                raise RuntimeError(f"{label} phonemizes the reply differently from the original voice")
        whole = join_ids(sentences, ort.config.phoneme_id_map)
        phon = peers["windowed"].phonemizer
        jobs = build_jobs(v, peers, text, sentences, whole)
        orders, worst = run_rounds(jobs, args.rounds, args.warmup, ort.sample_rate)
        results = summarize(jobs, worst, ort.sample_rate)
        variants = {k: describe_sources(v[k].describe())
                    for k in ("fp32-torch", "fp32-onnx", "original-onnx", *VITSQ_LABELS[2:]) if k in v}
    machine["load_average_start"], machine["load_average_end"] = load_start, load_average()
    return {
        "kind": "vitsq-ttfa-peers",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command_line(argv, prog="benchmarks/peers/ttfa_streaming_vits.py"),
        "machine": machine,
        "settings": {"threads": args.threads, "rounds": args.rounds, "warmup": args.warmup, "target_ids": args.ids,
                     "noise_scale": 0.0, "noise_w": 0.0, "length_scale": v["length_scale"],
                     "vitsq_schedule": "default ChunkSchedule (8 frames, doubling to 128)",
                     "fp32_onnx": args.fp32_onnx.name if args.fp32_onnx else "the original voice file"},
        "reply": {"text": text, "sentence_ids": [len(s) for s in sentences], "whole_ids": len(whole),
                  "peer_phonemizer_whole_ids": len(phon.ids(text)[0]),
                  "peer_phonemizer_whole_equal": phon.ids(text)[0] == whole,
                  "peer_phonemizer_sentences_equal": _peer_sentences_equal(phon, text, sentences)},
        "peer": peer_info,
        "variants": variants,
        "results": results,
        "rounds": orders,
    }


def _peer_sentences_equal(phonemizer: Any, text: str, sentences: list[list[int]]) -> int | None:
    """How many of vitsq's sentences the peer's own phonemizer turns into the same ids (None when
    vitsq's front-end cut the text into a different number of pieces than its sentences)."""
    from vitsq.text.split import sentence_pieces

    pieces = sentence_pieces(text)
    if len(pieces) != len(sentences):
        return None
    return sum(phonemizer.ids(piece)[0] == ids for piece, ids in zip(pieces, sentences))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # before torch or ONNX Runtime start their pools: every runtime gets the asked thread count
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from vitsq.errors import VitsqError
    from vitsq.jsonutil import to_jsonable, without_paths
    from vitsq.outputs import write_text

    try:
        out_json, out_md = _check_args(args)
        data = without_paths(to_jsonable(run(args, argv)))
        write_text(out_json, json.dumps(data, indent=2, allow_nan=False) + "\n", suffixes=(".json",),
                   force=args.force, what="result file")
        write_text(out_md, markdown(data), suffixes=(".md",), force=args.force, what="result table")
    except VitsqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out_json} and {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
