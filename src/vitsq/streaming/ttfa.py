"""`vitsq bench --ttfa`: time to first audio of streamed synthesis against the whole call.

What is measured, and how:

* **Replies** of given phoneme counts (``--phonemes 300``): real sentences of the shipped
  evaluation split (or a ``--sentences`` file), in a seeded shuffle, phonemized by each variant's
  own front-end and joined with a word space into one utterance, cut at exactly N phonemes (the
  symbols of the voice's phoneme map: letters, stress marks, spaces, punctuation; not the
  BOS/EOS/blank ids around them). One reply is one id sequence, synthesized as one utterance.
* **Modes**: ``stream`` times :meth:`~vitsq.synth.BaseSynthesizer.stream_ids` (TTFA = the
  first chunk's arrival; total = the last chunk's), ``whole`` times
  :meth:`~vitsq.synth.BaseSynthesizer.synthesize_ids` on the same ids (its latency is what a
  non-streaming runtime makes the user wait). Backends that stream by sentences yield the whole
  reply as one chunk: their TTFA is their latency, which is the point of comparison.
* **Interleaving**: every round runs each (variant, mode) pair once, round ``r`` starting at
  pair ``r mod n``; the orders are recorded (``rounds``). ``warmup`` untimed rounds first.
* **Ratios** come from one run: ``work_ratio`` = median streamed total / median whole latency
  (the cost of streaming), ``ttfa_over_latency`` = median TTFA / the variant's own median latency,
  ``ttfa_over_baseline`` = median TTFA / the baseline's median whole latency.
* **Exactness** of the last round's streamed audio against the whole call: largest difference
  relative to the peak and in 16-bit samples; only for deterministic variants (seeded noise, or
  noise off), since unseeded noise differs on every call.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitsq.errors import InputError, UnsupportedError, VitsqError
from vitsq.limits import MAX_TOKENS_PER_UTTERANCE
from vitsq.streaming import ChunkSchedule

log = logging.getLogger(__name__)

SCHEMA = "vitsq-ttfa/1"
DEFAULT_PHONEMES = (300,)
MODES = ("stream", "whole")
#: Default rounds of ``bench --ttfa`` (a long reply takes seconds per call).
DEFAULT_WARMUP, DEFAULT_ITERS = 2, 20


def parse_phonemes(text: str | int | Sequence[int] | None) -> list[int]:
    """``"300"`` or ``"50,300"`` -> reply lengths in phonemes, each an integer in
    1..:data:`~vitsq.limits.MAX_TOKENS_PER_UTTERANCE` (the id limit of one utterance also
    applies once the reply is built)."""
    if text is None:
        return list(DEFAULT_PHONEMES)
    items = text.split(",") if isinstance(text, str) else [text] if isinstance(text, int) else list(text)
    out: list[int] = []
    for item in items:
        s = str(item).strip()
        if not s:
            continue
        try:
            n = int(s)
        except ValueError:
            raise InputError(f"phoneme count {s!r} is not an integer: give counts like 300 or 50,300") from None
        if not 1 <= n <= MAX_TOKENS_PER_UTTERANCE:
            raise InputError(f"phoneme count {n} is out of range: a reply has 1..{MAX_TOKENS_PER_UTTERANCE} "
                             "phonemes (e.g. 300)")
        if n not in out:
            out.append(n)
    if not out:
        raise InputError("no phoneme counts given: use e.g. --phonemes 300")
    return out


# ----------------------------------------------------------------------------- replies
def _phoneme_api(frontend: Any) -> tuple[Any, Any, set[str]]:
    """(text -> phonemes per sentence, phonemes -> ids with BOS/EOS, the map's symbols) of a
    front-end; UnsupportedError for front-ends that do not expose their phonemes."""
    from vitsq.text.espeak import EspeakFrontend
    from vitsq.text.russian import BOS, EOS, RussianFrontend

    if isinstance(frontend, EspeakFrontend):
        return frontend.phonemize, frontend.phonemes_to_ids, set(frontend.id_map)
    if isinstance(frontend, RussianFrontend):
        # one utterance per text, BOS and EOS included: strip them, add them back around a reply
        return (lambda text: [frontend.phonemize(text)[1:-1]],
                lambda ph: frontend.phonemes_to_ids([BOS, *ph, EOS]), set(frontend.phoneme_id_map))
    raise UnsupportedError(f"front-end {type(frontend).__name__} does not expose phonemes: --ttfa builds replies "
                           "from the espeak (Piper) or Russian (Vosk) front-end")


@dataclass
class Reply:
    """One reply: ``phonemes`` symbols, their ``ids`` (one utterance) and the sentences used."""

    phonemes: list[str]
    ids: list[int]
    texts: list[str]


def build_reply(frontend: Any, pool: Sequence[str], n: int) -> Reply:
    """The first ``n`` phonemes of ``pool``'s sentences phonemized in order and joined with a
    word space, as one utterance's ids. InputError when the pool is too short or the ids exceed
    :data:`~vitsq.limits.MAX_TOKENS_PER_UTTERANCE`."""
    phonemize, to_ids, symbols = _phoneme_api(frontend)
    out: list[str] = []
    used: list[str] = []
    for text in pool:
        if len(out) >= n:
            break
        for sentence in phonemize(text):
            speakable = [p for p in sentence if p in symbols]  # phonemes the map lacks make no ids
            if not speakable:
                continue
            if out and " " in symbols:
                out.append(" ")
            out.extend(speakable)
        used.append(text)
    if len(out) < n:
        raise InputError(f"the sentences give only {len(out)} phonemes, fewer than the {n} asked for: "
                         "use a smaller --phonemes or a longer --sentences file")
    phonemes = out[:n]
    ids = to_ids(phonemes)
    if len(ids) > MAX_TOKENS_PER_UTTERANCE:
        raise InputError(f"a reply of {n} phonemes is {len(ids)} ids, over the {MAX_TOKENS_PER_UTTERANCE} ids of "
                         f"one utterance: use at most about {n * MAX_TOKENS_PER_UTTERANCE // len(ids)} phonemes")
    return Reply(phonemes, ids, used)


def sentence_pool(language: str, seed: int = 0, sentences_file: str | Path | None = None) -> list[str]:
    """The sentences replies are built from: the evaluation split of ``language`` (or a file),
    shuffled with ``seed`` as ``vitsq bench`` shuffles them."""
    from vitsq.evaluate.sentences import load_split, read_sentence_file

    pool = list(read_sentence_file(sentences_file) if sentences_file else load_split(language, "evaluation"))
    random.Random(seed).shuffle(pool)
    return pool


# ----------------------------------------------------------------------------- measuring
@dataclass
class _Variant:
    """A loaded variant: what :func:`vitsq.bench._check_threads` and the rounds need."""

    label: str
    synth: Any
    info: dict[str, Any]
    replies: dict[int, Reply] = field(default_factory=dict)
    length_scale: float | None = None
    deterministic: bool = True


def _knobs(x: _Variant, seed: int) -> dict[str, Any]:
    from vitsq.bench import _seed_kw

    return {"length_scale": x.length_scale, **_seed_kw(x.synth, seed)}


def _timed(x: _Variant, ids: list[int], mode: str, seed: int, schedule: ChunkSchedule) -> dict[str, Any]:
    """One call: the streamed reply (TTFA, total, chunks) or the whole one (latency)."""
    t0 = time.perf_counter()
    if mode == "whole":
        audio = x.synth.synthesize_ids(ids, **_knobs(x, seed))
        return {"total": time.perf_counter() - t0, "samples": audio.samples}
    parts: list[np.ndarray] = []
    first = None
    chunks = x.synth.stream_ids(ids, schedule=schedule, **_knobs(x, seed))
    try:
        for chunk in chunks:
            if first is None:
                first = time.perf_counter() - t0
            parts.append(chunk.samples)
    finally:
        chunks.close()
    total = time.perf_counter() - t0
    if first is None:
        raise RuntimeError("the stream yielded no audio")
    return {"total": total, "first": first, "samples": np.concatenate(parts), "chunks": len(parts),
            "first_samples": len(parts[0])}


def _pct(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}


def _exactness(streamed: np.ndarray, whole: np.ndarray) -> dict[str, Any]:
    """How far the streamed audio is from the whole call's (same length expected)."""
    if streamed.shape != whole.shape:
        return {"same_length": False, "streamed_samples": int(len(streamed)), "whole_samples": int(len(whole))}
    peak = float(np.abs(whole).max()) or 1.0
    s16 = (np.clip(streamed, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.int32)  # as Audio.to_int16
    w16 = (np.clip(whole, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.int32)
    diff = np.abs(s16 - w16)
    return {"same_length": True, "max_abs_diff_over_peak": float(np.abs(streamed - whole).max() / peak),
            "int16_max_diff": int(diff.max()), "int16_differing_samples": int((diff > 0).sum()),
            "samples": int(len(whole))}


@dataclass
class _Rounds:
    """The timed samples of one reply length across all (variant, mode) pairs."""

    samples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    last: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)


def _interleave(variants: list[_Variant], n: int, warmup: int, iters: int, seed: int,
                schedule: ChunkSchedule, bar: Any) -> _Rounds:
    """``warmup`` then ``iters`` rounds; each runs every live (variant, mode) pair once, round r
    starting at pair r mod (pairs), so load from other processes hits every pair alike."""
    out = _Rounds()
    pairs = [(x, m) for x in variants for m in MODES]
    for r in range(warmup + iters):
        live = [(x, m) for x, m in pairs if x.label not in out.errors]
        if not live:
            break
        k = r % len(live)
        order = live[k:] + live[:k]
        if r >= warmup:
            out.orders.append([f"{x.label}:{m}" for x, m in order])
        for x, m in order:
            if x.label in out.errors:
                continue
            try:
                res = _timed(x, x.replies[n].ids, m, seed, schedule)
            except Exception as exc:  # noqa: BLE001 - recorded; the other variants go on
                out.errors[x.label] = str(exc) if isinstance(exc, VitsqError) else f"{type(exc).__name__}: {exc}"
                log.error("%s (%s, %d phonemes) failed: %s", x.label, m, n, out.errors[x.label])
                continue
            if r >= warmup:
                out.last[(x.label, m)] = res
                out.samples.setdefault((x.label, m), []).append(
                    {k2: v for k2, v in res.items() if k2 != "samples"})
        bar.update(1)
    return out


def _result(x: _Variant, n: int, m: _Rounds, rate: int) -> dict[str, Any]:
    """The JSON record of one variant at one reply length."""
    reply = x.replies[n]
    row: dict[str, Any] = {"variant": x.label, "phonemes": n, "ids": len(reply.ids),
                           "streaming": getattr(x.synth, "streaming", "sentences"), "status": "ok", "error": None}
    err = m.errors.get(x.label)
    stream, whole = m.samples.get((x.label, "stream")), m.samples.get((x.label, "whole"))
    if err is not None or not stream or not whole:
        row.update(status="failed", error=err or "no timed rounds")
        return row
    last_s, last_w = m.last[(x.label, "stream")], m.last[(x.label, "whole")]
    ttfa = _pct([s["first"] for s in stream])
    total = _pct([s["total"] for s in stream])
    latency = _pct([s["total"] for s in whole])
    audio_s = len(last_w["samples"]) / float(rate)
    row.update({
        "rounds": len(stream), "audio_seconds": audio_s, "chunks": last_s["chunks"],
        "first_chunk_audio_seconds": last_s["first_samples"] / float(rate),
        "ttfa_s": ttfa, "stream_total_s": total, "whole_latency_s": latency,
        "work_ratio": total["p50"] / latency["p50"], "ttfa_over_latency": ttfa["p50"] / latency["p50"],
        "rtf_stream": total["p50"] / audio_s if audio_s > 0 else None,
        "exactness": _exactness(last_s["samples"], last_w["samples"]) if x.deterministic else None,
    })
    return row


# ----------------------------------------------------------------------------- run
@dataclass
class TtfaResult:
    """Everything one ``bench --ttfa`` run measured; :meth:`to_dict` is the JSON written."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    variants: list[dict[str, Any]]
    results: list[dict[str, Any]]
    inputs: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    created: str = ""
    command: str | None = None

    def row(self, variant: str, phonemes: int) -> dict[str, Any] | None:
        """The result of ``variant`` at ``phonemes`` (None if not run)."""
        return next((r for r in self.results if r["variant"] == variant and r["phonemes"] == phonemes), None)

    def to_dict(self) -> dict[str, Any]:
        from vitsq.jsonutil import to_jsonable, without_paths

        return without_paths(to_jsonable({
            "schema": SCHEMA, "created": self.created, "command": self.command, "machine": self.machine,
            "settings": self.settings,
            "notes": {
                "ttfa_s": "seconds from the stream_ids call until its first chunk (model only, ids given); "
                          "p50/p95 over timed rounds",
                "stream_total_s": "seconds from the stream_ids call until its last chunk",
                "whole_latency_s": "seconds of one synthesize_ids call on the same ids (no streaming)",
                "work_ratio": "p50 stream_total_s / p50 whole_latency_s: the cost of streaming",
                "ttfa_over_latency": "p50 TTFA / the variant's own p50 whole latency",
                "ttfa_over_baseline": "p50 TTFA / the baseline's p50 whole latency, same reply, same run",
                "streaming": "frames: decoded chunk by chunk; sentences: one chunk per sentence (a reply is one "
                             "sentence, so TTFA = latency)",
                "exactness": "last round's streamed audio vs its whole call; null where noise is unseeded",
                "rounds": "every round runs each variant:mode once, round r starting at pair r mod n",
            },
            "inputs": self.inputs, "variants": self.variants, "results": self.results, "rounds": self.rounds,
            "messages": self.messages,
        }))

    def table(self) -> str:
        from vitsq.report import ttfa_table

        return ttfa_table(self.to_dict())

    def write(self, out: str | Path, *, force: bool = False) -> dict[str, Path]:
        """Write ``out`` (JSON) and the ``.md`` page beside it, atomically (an existing file
        only with ``force``); returns the paths."""
        from vitsq.bench import check_bench_outputs
        from vitsq.outputs import write_text
        from vitsq.report import ttfa_report

        paths = check_bench_outputs(out, plot=False, force=force)
        data = self.to_dict()
        write_text(paths["json"], json.dumps(data, indent=2, allow_nan=False) + "\n", suffixes=(".json",),
                   force=force, what="TTFA JSON")
        write_text(paths["md"], ttfa_report(data), suffixes=(".md",), force=force, what="TTFA table")
        return paths


@dataclass
class _State:
    """What the preparation steps of one run share."""

    phonemes: list[int]
    seed: int
    sentences: str | Path | None
    load: Any
    messages: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    pool: list[str] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    first_ids: dict[int, list[int]] = field(default_factory=dict)  # the first variant's, to compare

    def fail(self, label: str, info: dict[str, Any], err: str) -> None:
        info["status"], info["error"] = "failed", err
        self.messages.append(f"{label}: {err}")
        log.error("%s: %s", label, err)
        self.failed += [{"variant": label, "phonemes": n, "status": "failed", "error": err} for n in self.phonemes]


def _deterministic(synth: Any) -> bool:
    """Whether two calls give the same audio: seeded noise, or no noise at all."""
    c = getattr(synth, "config", None)
    return bool(getattr(synth, "seedable", True)) or (
        getattr(c, "noise_scale", 1.0) == 0 and getattr(c, "noise_w", 1.0) == 0)


def _replies(st: _State, synth: Any) -> dict[int, Reply]:
    """This variant's replies; the first variant's sentences and phonemes are the run's inputs."""
    if st.pool is None:
        language = str(getattr(synth, "language", "en"))
        st.pool = sentence_pool(language, st.seed, st.sentences)
        st.inputs = {"language": language, "seed": st.seed, "source": f"{language} evaluation split"}
        if st.sentences:
            from vitsq.jsonutil import file_sha256

            st.inputs.update(source=f"sentence file {Path(st.sentences).name}",
                             sentences_sha256=file_sha256(st.sentences))
    replies = {n: build_reply(getattr(synth, "frontend", None), st.pool, n) for n in st.phonemes}
    if not st.first_ids:
        st.first_ids = {n: r.ids for n, r in replies.items()}
        st.inputs["replies"] = [{"phonemes": n, "ids": len(r.ids), "phoneme_text": "".join(r.phonemes),
                                 "texts": r.texts} for n, r in replies.items()]
    return replies


def _prepare(st: _State, entry: Any, info: dict[str, Any]) -> _Variant | None:
    """Load, describe and build the replies of one variant (calibrating random weights' length
    scale as ``vitsq bench`` does); None, recorded as failed, if any step fails."""
    from vitsq.bench import _calibrate_length_scale, _describe_into, _is_random

    try:
        synth = entry.preloaded if entry.preloaded is not None else st.load(entry.variant, "cpu")
    except Exception as exc:  # noqa: BLE001 - one bad variant must not stop the run
        st.fail(entry.label, info, f"failed to load: {exc if isinstance(exc, VitsqError) else repr(exc)}")
        return None
    random_weights = _is_random(_describe_into(info, synth, entry.label))
    x = _Variant(entry.label, synth, info, deterministic=_deterministic(synth))
    info["streaming"] = getattr(synth, "streaming", "sentences")
    try:
        x.replies = _replies(st, synth)
        if random_weights:
            x.length_scale, info["frames_per_token"] = _calibrate_length_scale(
                synth, [x.replies[st.phonemes[0]].ids], st.seed)
            info["length_scale"] = x.length_scale
    except Exception as exc:  # noqa: BLE001
        st.fail(entry.label, info, str(exc) if isinstance(exc, VitsqError) else f"{type(exc).__name__}: {exc}")
        return None
    info["reply_ids"] = {str(n): len(r.ids) for n, r in x.replies.items()}
    # versions of one voice share a front-end: say so when a variant was given other ids
    info["same_ids_as_inputs"] = all(r.ids == st.first_ids.get(n) for n, r in x.replies.items())
    if not info["same_ids_as_inputs"]:
        st.messages.append(f"{entry.label}: its front-end gives other ids than the first variant's for the same "
                           "sentences: its numbers are for other inputs")
    return x


def run_ttfa(model: Any, variants: Sequence[Any] = (), phonemes: Sequence[int] | str | None = None, *,
             schedule: ChunkSchedule | Sequence[int] | int | None = None, threads: int | None = None,
             warmup: int = DEFAULT_WARMUP, iters: int = DEFAULT_ITERS, sentences: str | Path | None = None,
             seed: int = 0, baseline: str | None = None, machine_name: str | None = None,
             progress: bool = True, loader: Any = None, command: str | None = None) -> TtfaResult:
    """Measure TTFA and latency of ``model`` and ``variants`` (variant strings, Variants or loaded
    Synthesizers, as :func:`vitsq.bench.run_benchmark` takes) for replies of ``phonemes``
    phonemes, streamed with ``schedule`` and whole, interleaved; see the module docstring."""
    import torch
    from tqdm.auto import tqdm

    from vitsq.bench import _check_counts, _check_threads, _default_loader, _entries, _variant_info, load_average
    from vitsq.bench import machine_info

    counts = parse_phonemes(phonemes)
    plan = ChunkSchedule.build(schedule)
    _check_counts(warmup, iters, "padded", threads)
    entries, baseline = _entries(model, variants, baseline)
    if threads is not None:
        torch.set_num_threads(threads)
    threads_used = torch.get_num_threads()
    load_at_start = load_average()
    st = _State(counts, seed, sentences, loader or _default_loader(threads_used))
    infos = [_variant_info(e) for e in entries]
    loaded = [x for x in (_prepare(st, e, i) for e, i in zip(entries, infos)) if x is not None]
    _check_threads(loaded, threads_used)
    results, rounds = list(st.failed), []
    with tqdm(total=len(counts) * (warmup + iters), desc="bench --ttfa", unit="round",
              disable=not progress) as bar:
        for n in counts if loaded else ():
            m = _interleave(loaded, n, warmup, iters, seed, plan, bar)
            rounds.append({"phonemes": n, "warmup_rounds": warmup, "orders": m.orders})
            results += [_result(x, n, m, int(x.synth.sample_rate)) for x in loaded]
    _ratios_to_baseline(results, baseline)
    order = {e.label: k for k, e in enumerate(entries)}
    results.sort(key=lambda r: (counts.index(r["phonemes"]), order[r["variant"]]))
    settings = {"phonemes": counts, "modes": list(MODES), "threads": threads_used, "threads_requested": threads,
                "warmup": warmup, "iters": iters, "seed": seed, "baseline": baseline, "speaker": 0,
                "device": "cpu", "schedule": plan.to_dict(), "interleaving": "round-robin over variant:mode"}
    machine = machine_info(machine_name)
    machine["load_average_start"], machine["load_average_end"] = load_at_start, machine.pop("load_average")
    return TtfaResult(machine=machine, settings=settings, variants=infos, results=results, inputs=st.inputs,
                      rounds=rounds, messages=st.messages, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      command=command)


def _ratios_to_baseline(results: list[dict[str, Any]], baseline: str) -> None:
    """Each ok row's median TTFA over the baseline's median whole latency, same reply."""
    for r in results:
        base = next((b for b in results if b["variant"] == baseline and b["phonemes"] == r["phonemes"]
                     and b["status"] == "ok"), None)
        if r["status"] == "ok" and base is not None:
            r["ttfa_over_baseline"] = r["ttfa_s"]["p50"] / base["whole_latency_s"]["p50"]


# ----------------------------------------------------------------------------- CLI
def cmd_ttfa(args: argparse.Namespace) -> int:
    """``vitsq bench --ttfa``: the options of ``vitsq bench`` that apply, checked before loading."""
    from vitsq.bench import check_bench_outputs
    from vitsq.jsonutil import invoked_command
    from vitsq.streaming.wav import parse_chunk_frames

    for opt, value in (("--batch", args.batch), ("--batching", args.batching if args.batching != "padded" else None)):
        if value is not None:
            raise InputError(f"{opt} is an option of the RTF benchmark: --ttfa times one reply at a time")
    if str(args.device).strip().lower() != "cpu":
        raise InputError(f"--ttfa runs on cpu only, not {args.device!r}")
    counts = parse_phonemes(args.phonemes)
    schedule = parse_chunk_frames(args.chunk_frames)
    warmup = DEFAULT_WARMUP if args.warmup is None else args.warmup
    iters = DEFAULT_ITERS if args.iters is None else args.iters
    check_bench_outputs(args.out, plot=False, force=args.force)  # before any model loads
    res = run_ttfa(args.model, args.variants, counts, schedule=schedule, threads=args.threads, warmup=warmup,
                   iters=iters, sentences=args.sentences, seed=args.seed, baseline=args.baseline,
                   machine_name=args.machine_name, progress=not args.no_progress, command=invoked_command(args))
    paths = res.write(args.out, force=args.force)
    for msg in res.messages:
        print(f"note: {msg}")
    print(res.table(), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 1 if res.results and all(r["status"] == "failed" for r in res.results) else 0
