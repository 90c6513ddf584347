"""End-to-end quality evaluation of model variants against an FP32 reference.

:func:`evaluate` synthesizes every sentence with the reference and with each variant using the
same speaker and the same noise seed (sentence ``i`` uses ``seed + i``), transcribes everything
with Whisper, and scores:

* WER / CER per variant (corpus-level, normalized text) and ΔWER vs. the reference with a paired
  bootstrap 95 % CI;
* speaker similarity (resemblyzer cosine) of each variant clip to its reference clip;
* distance to the reference clip: log-mel L1, SNR, MCD (see :mod:`vitsq.evaluate.metrics` for how
  different lengths are handled).

The reference audio is cached under ``<cache>/eval-reference/`` keyed by a fingerprint of the
reference model (its description and the sha256 of its files), the sentences, speakers, seed and
synthesis settings, so repeated runs compare against exactly the same clips.

A sentence that fails (synthesis or ASR raises) in any model is kept: it is scored as an empty
transcript, listed with its error, and counted in ``failed``.

A backend whose noise cannot be seeded (ONNX Runtime draws it inside the graph) gets no seed: its
result records ``seeded_noise: false`` and, while noise is on, a warning says its clips are not
noise-matched to the reference (compare such variants at ``noise_scale=0, noise_w=0``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitsq.errors import InputError, ModelLoadError, VitsqError
from vitsq.evaluate.metrics import (
    AudioDistance,
    DeltaWer,
    DistanceStats,
    ErrorRate,
    SimilarityStats,
    audio_distance,
    distance_stats,
    paired_bootstrap_delta_wer,
    score_transcripts,
    similarity_stats,
)
from vitsq.jsonutil import describe_sources, to_jsonable, without_paths
from vitsq.outputs import atomic_output, check_output, write_text
from vitsq.variants import AUTO, Variant, parse_variant

log = logging.getLogger(__name__)

#: Bump when anything that changes the cached reference audio changes.
REFERENCE_CACHE_VERSION = 1
#: Speakers evaluated by default on a multi-speaker model (evenly spread ids).
DEFAULT_MULTI_SPEAKERS = 4


@dataclass(frozen=True)
class VariantResult:
    """Scores of one model (the reference or a variant) over the evaluation sentences."""

    label: str  # what the user passed (spec) or the model name
    name: str
    backend: str
    size_bytes: int | None
    description: dict[str, Any]
    error_rate: ErrorRate
    synthesis_errors: tuple[str | None, ...]  # per sentence; None when it synthesized
    delta_wer: DeltaWer | None = None  # None for the reference
    similarity: SimilarityStats | None = None
    distance: DistanceStats | None = None
    is_reference: bool = False
    seeded_noise: bool = True  # False: the backend drew its noise unseeded (not matched to other models)

    @property
    def num_failed(self) -> int:
        """Sentences that failed in synthesis or ASR."""
        return self.error_rate.num_failed


@dataclass(frozen=True)
class EvalResult:
    """Everything :func:`evaluate` measured, plus the settings needed to reproduce it."""

    reference: VariantResult
    variants: tuple[VariantResult, ...]
    language: str
    sentences: tuple[str, ...]
    speakers: tuple[int | None, ...]  # per sentence
    seeds: tuple[int, ...]  # per sentence
    settings: dict[str, Any]
    asr: dict[str, Any]
    versions: dict[str, Any]
    reference_cache: str | None = None  # file name of the cached reference audio
    reference_from_cache: bool = False
    command: str | None = None  # the command line that produced the result
    messages: tuple[str, ...] = ()  # warnings about the comparison (e.g. unseeded noise)

    @property
    def all_failed(self) -> tuple[str, ...]:
        """Labels of the models (reference included) whose every sentence failed."""
        return tuple(v.label for v in self.rows if self.sentences and v.num_failed == len(self.sentences))

    @property
    def rows(self) -> tuple[VariantResult, ...]:
        """Reference first, then the variants."""
        return (self.reference, *self.variants)

    def table(self) -> str:
        """Markdown table of the headline numbers."""
        from vitsq.evaluate.table import markdown_table

        return markdown_table(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (non-finite floats become "inf"/"-inf"/null)."""
        return without_paths(to_jsonable(
            {
                "command": self.command,
                "language": self.language,
                "num_sentences": len(self.sentences),
                "settings": self.settings,
                "asr": self.asr,
                "versions": self.versions,
                "reference_cache": self.reference_cache,
                "reference_from_cache": self.reference_from_cache,
                "messages": list(self.messages),
                "notes": {
                    "wer": "corpus-level: total word edits / total reference words, after normalization",
                    "failed": "sentences whose synthesis or ASR raised; scored as empty transcripts",
                    "length_mismatch": "log-mel L1 and SNR compare the common prefix; MCD uses DTW",
                    "seeds": "sentence i is synthesized with seed + i in every model whose noise can be seeded "
                             "(seeded_noise true); the others draw their noise unseeded",
                },
                "results": [_variant_dict(v, self) for v in self.rows],
            },
            inf_as_string=True,  # keep SNR = inf for identical audio visible
        ))

    def write_json(self, path: str | Path, *, force: bool = False) -> Path:
        """Write :meth:`to_dict` to ``path`` (UTF-8, indented) atomically; an existing file is
        replaced only with ``force``."""
        return write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
                          suffixes=JSON_SUFFIXES, force=force, what="eval JSON")


def _variant_dict(v: VariantResult, res: EvalResult) -> dict[str, Any]:
    er = v.error_rate
    d: dict[str, Any] = {
        "variant": v.label,
        "name": v.name,
        "backend": v.backend,
        "reference": v.is_reference,
        "size_bytes": v.size_bytes,
        "wer": er.wer,
        "cer": er.cer,
        "word_totals": er.totals(),
        "reference_chars": er.reference_chars,
        "char_edits": er.char_edits,
        "failed": v.num_failed,
        "seeded_noise": v.seeded_noise,
        "description": v.description,
    }
    if v.delta_wer is not None:
        dw = v.delta_wer
        d["delta_wer"] = {
            "delta": dw.delta,
            "ci_low": dw.ci_low,
            "ci_high": dw.ci_high,
            "confidence": dw.confidence,
            "n_boot": dw.n_boot,
            "seed": dw.seed,
        }
    if v.similarity is not None:
        d["speaker_similarity"] = {
            "mean": v.similarity.mean,
            "worst": v.similarity.worst,
            "worst_sentence": v.similarity.worst_index,
            "compared": v.similarity.num_compared,
        }
    if v.distance is not None:
        ds = v.distance
        d["distance_to_reference"] = {
            "log_mel_l1": ds.log_mel_l1,
            "snr_db": ds.snr_db,
            "mcd_db": ds.mcd_db,
            "compared": ds.num_compared,
            "length_mismatch_sentences": ds.num_length_mismatch,
            "max_abs_length_difference_samples": ds.max_abs_length_difference,
        }
    d["sentences"] = [_sentence_dict(v, res, i) for i in range(len(er.sentences))]
    return d


def _sentence_dict(v: VariantResult, res: EvalResult, i: int) -> dict[str, Any]:
    """One sentence of one model: text, transcript, edits, error, similarity and distance."""
    s = v.error_rate.sentences[i]
    item: dict[str, Any] = {
        "index": i,
        "text": s.reference,
        "speaker": res.speakers[i],
        "seed": res.seeds[i],
        "hypothesis": s.hypothesis,
        "reference_normalized": s.reference_normalized,
        "hypothesis_normalized": s.hypothesis_normalized,
        "wer": s.wer,
        "cer": s.cer,
        "word_edits": {
            "substitutions": s.words.substitutions,
            "deletions": s.words.deletions,
            "insertions": s.words.insertions,
            "reference_words": s.words.reference_length,
        },
        "error": s.error,
    }
    if v.similarity is not None:
        item["speaker_similarity"] = v.similarity.per_sentence[i]
    if v.distance is not None:
        dist: AudioDistance | None = v.distance.per_sentence[i]
        item["distance"] = None if dist is None else {
            "log_mel_l1": dist.log_mel_l1,
            "snr_db": dist.snr_db,
            "mcd_db": dist.mcd_db,
            "reference_samples": dist.reference_samples,
            "test_samples": dist.test_samples,
        }
    return item


# ----------------------------------------------------------------------------- helpers


def _versions() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("vitsq", "torch", "numpy", "onnxruntime", "faster-whisper", "ctranslate2", "resemblyzer", "scipy", "librosa"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _load_model(spec: Any, role: str, backend: str | None, device: str) -> tuple[Any, str]:
    """Load ``spec`` (``[LABEL=]SPEC[@BACKEND]``, see :mod:`vitsq.variants`) or accept an
    already-loaded Synthesizer; returns (synth, label). ``backend`` serves specs that name none."""
    if not isinstance(spec, (str, Path)):
        for attr in ("synthesize", "sample_rate", "num_speakers", "language"):
            if not hasattr(spec, attr):
                raise InputError(f"{role} {spec!r} is neither a model spec nor a Synthesizer (no {attr!r})")
        return spec, str(getattr(spec, "name", role))
    v = parse_variant(str(spec), legacy_prefix=True)
    if v.backend == AUTO and backend and backend != AUTO:
        v = Variant(v.label, v.spec, backend)
    try:
        return v.load(device=device), v.label
    except VitsqError as e:
        raise type(e)(f"{role} {v.label!r} could not be loaded: {e}") from e
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise ModelLoadError(f"{role} {v.label!r} could not be loaded: {type(e).__name__}: {e}") from e


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _hash_path(p: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names + contents); memoized by size/mtime."""
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FILE_HASHES:
            fh = hashlib.sha256()
            with open(f, "rb") as fp:
                for chunk in iter(lambda: fp.read(1 << 20), b""):
                    fh.update(chunk)
            _FILE_HASHES[key] = fh.hexdigest()
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        h.update(_FILE_HASHES[key].encode())
    return h.hexdigest()


def model_fingerprint(synth: Any, spec: Any = None) -> str:
    """A sha256 identifying a model: its description plus the contents of its files."""
    desc = {}
    try:
        desc = dict(synth.describe())
    except Exception as e:  # a description is best-effort metadata
        log.debug("describe() failed: %s", e)
    desc.pop("device", None)
    paths = []
    for cand in (spec if isinstance(spec, (str, Path)) else None, desc.get("source")):
        if cand:
            p = Path(str(cand)).expanduser()
            if p.exists():
                paths.append(p)
    for p in getattr(synth, "artifact_paths", []) or []:
        if Path(p).exists():
            paths.append(Path(p))
    h = hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode())
    for p in sorted(set(paths)):
        h.update(_hash_path(p).encode())
    # In-memory weights (a torch module edited after loading) are part of the identity too.
    module = getattr(synth, "model", None)
    state_dict = getattr(module, "state_dict", None)
    if callable(state_dict):
        for name, tensor in sorted(state_dict().items()):
            h.update(name.encode())
            try:
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            except (TypeError, RuntimeError, AttributeError):  # quantized/packed tensors
                h.update(repr(tensor).encode())
    return h.hexdigest()


def _reference_cache_path(cache_root: Path, key_payload: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]
    return cache_root / "eval-reference" / f"{key}.npz"


def _load_reference_cache(path: Path, n: int, sample_rate: int) -> tuple[list[np.ndarray | None], list[str | None]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("n") != n or meta.get("sample_rate") != sample_rate:
                return None
            audios: list[np.ndarray | None] = []
            for i in range(n):
                audios.append(None if meta["errors"][i] is not None else np.asarray(z[f"a{i}"], dtype=np.float32))
            return audios, list(meta["errors"])
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable reference cache %s (%s); re-synthesizing", path, e)
        return None


def _save_reference_cache(path: Path, audios: Sequence[np.ndarray | None], errors: Sequence[str | None],
                          sample_rate: int, payload: dict[str, Any]) -> None:
    """Store the reference clips (atomically; a cache another process is writing is left to it)."""
    from vitsq.errors import OutputError

    arrays = {f"a{i}": a for i, a in enumerate(audios) if a is not None}
    meta = {"n": len(audios), "sample_rate": sample_rate, "errors": list(errors), "key": payload}
    try:
        with atomic_output(path, suffixes=(".npz",), force=True, what="reference cache") as tmp:
            np.savez(tmp, meta=np.array(json.dumps(meta, ensure_ascii=False)), **arrays)
    except OutputError as e:  # a cache is an optimization: the evaluation goes on without it
        log.warning("reference audio not cached: %s", e)


def _seedable(synth: Any) -> bool:
    """Whether ``seed`` decides ``synth``'s noise (ONNX Runtime draws it unseeded and refuses a seed)."""
    return bool(getattr(synth, "seedable", True))


def _synthesize_all(synth: Any, sentences: Sequence[str], speakers: Sequence[int | None], seeds: Sequence[int],
                    scales: dict[str, float | None], desc: str, progress: bool) -> tuple[list[np.ndarray | None], list[str | None]]:
    from tqdm.auto import tqdm

    audios: list[np.ndarray | None] = []
    errors: list[str | None] = []
    seeded = _seedable(synth)
    for i, text in enumerate(tqdm(sentences, desc=desc, unit="sent", disable=not progress, leave=False)):
        try:
            seed_kw = {"seed": seeds[i]} if seeded else {}
            a = synth.synthesize(text, speaker=speakers[i], **seed_kw, **scales)
            if int(a.sample_rate) != int(synth.sample_rate):
                raise ModelLoadError(f"returned audio at {a.sample_rate} Hz but the model says {synth.sample_rate} Hz")
            x = np.asarray(a.samples, dtype=np.float32).reshape(-1)
            if x.size == 0:
                raise InputError("synthesis returned no samples")
            if not np.all(np.isfinite(x)):
                raise InputError("synthesis returned NaN/inf samples")
            audios.append(x)
            errors.append(None)
        except Exception as e:  # noqa: BLE001 - a failing sentence is reported, not fatal
            log.warning("%s: sentence %d failed: %s: %s", desc, i, type(e).__name__, e)
            audios.append(None)
            errors.append(f"synthesis failed: {type(e).__name__}: {e}")
    return audios, errors


def _transcribe_all(asr: Any, audios: Sequence[np.ndarray | None], errors: Sequence[str | None], sample_rate: int,
                    language: str, desc: str, progress: bool) -> tuple[list[str | None], list[str | None]]:
    from tqdm.auto import tqdm

    hyps: list[str | None] = []
    errs: list[str | None] = list(errors)
    for i, a in enumerate(tqdm(audios, desc=desc, unit="sent", disable=not progress, leave=False)):
        if a is None:
            hyps.append(None)
            continue
        try:
            hyps.append(asr.transcribe(a, sample_rate, language))
        except Exception as e:  # noqa: BLE001 - reported per sentence
            log.warning("%s: ASR failed on sentence %d: %s", desc, i, e)
            hyps.append(None)
            errs[i] = f"ASR failed: {type(e).__name__}: {e}"
    return hyps, errs


def _embed_all(encoder: Any, audios: Sequence[np.ndarray | None], sample_rate: int) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for i, a in enumerate(audios):
        if a is None:
            out.append(None)
            continue
        try:
            out.append(encoder.embed(a, sample_rate))
        except Exception as e:  # noqa: BLE001 - similarity is then missing for that sentence
            log.warning("speaker embedding failed on sentence %d: %s", i, e)
            out.append(None)
    return out


def _default_speakers(num_speakers: int) -> list[int | None]:
    if num_speakers <= 1:
        return [None]
    k = min(DEFAULT_MULTI_SPEAKERS, num_speakers)
    return sorted({int(round(j * (num_speakers - 1) / max(k - 1, 1))) for j in range(k)})


# ----------------------------------------------------------------------------- main entry

#: Accepted endings of the eval JSON output.
JSON_SUFFIXES = (".json",)


def check_settings(noise_scale: float | None = None, length_scale: float | None = None,
                   noise_w: float | None = None, seed: int = 0, speakers: Sequence[int] | None = None,
                   n_boot: int = 2000, num_sentences: int | None = None) -> Any:
    """Validate an evaluation's settings before any work; returns them as a
    :class:`~vitsq.synth.SynthesisConfig` (scales and seed, validated there).

    Beyond what :class:`~vitsq.synth.SynthesisConfig` checks: speakers are integers >= 0 (their
    range is checked against the model once it is loaded), ``seed`` is given (sentence ``i`` uses
    ``seed + i``), ``n_boot`` >= 1 and ``num_sentences`` >= 1. InputError names the value and
    what is valid.
    """
    from vitsq.synth import MAX_SEED, SynthesisConfig

    if seed is None:
        raise InputError(f"seed=None is not valid: use an integer in 0..{MAX_SEED} (sentence i uses seed + i)")
    config = SynthesisConfig.build(noise_scale=noise_scale, length_scale=length_scale, noise_w=noise_w, seed=seed)
    for s in speakers or ():
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or int(s) < 0:
            raise InputError(f"speaker {s!r} is not valid: speaker ids are integers >= 0")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 1:
        raise InputError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if num_sentences is not None and (isinstance(num_sentences, bool) or not isinstance(num_sentences, numbers.Integral)
                                      or num_sentences < 1):
        raise InputError(f"the number of sentences must be an integer >= 1, got {num_sentences!r}")
    return config


def _check_compatible(ref: tuple[Any, str], loaded: Sequence[tuple[Any, str]]) -> None:
    """Variants must be versions of the reference: same sample rate, speakers and language."""
    ref_synth, ref_label = ref
    for synth, label in loaded:
        if int(synth.sample_rate) != int(ref_synth.sample_rate):
            raise InputError(
                f"variant {label!r} runs at {synth.sample_rate} Hz but the reference {ref_label!r} at "
                f"{ref_synth.sample_rate} Hz: variants must be versions of the same model"
            )
        if int(synth.num_speakers) != int(ref_synth.num_speakers):
            raise InputError(
                f"variant {label!r} has {synth.num_speakers} speakers but the reference {ref_label!r} has "
                f"{ref_synth.num_speakers}: variants must be versions of the same model"
            )
        if str(synth.language) != str(ref_synth.language):
            raise InputError(
                f"variant {label!r} speaks {synth.language!r} but the reference {ref_label!r} speaks "
                f"{ref_synth.language!r}"
            )


def _choose_sentences(sentences: Sequence[str] | None, language: str, num_sentences: int | None) -> list[str]:
    """The given sentences (checked, first ``num_sentences``), or the shipped evaluation split."""
    from vitsq.evaluate.sentences import load_split

    if sentences is None:
        return load_split(language, "evaluation", num_sentences)
    sents = [str(s).strip() for s in sentences]
    if not sents or not any(sents):
        raise InputError("no sentences to evaluate: the sentence list is empty")
    empty = [i for i, s in enumerate(sents) if not s]
    if empty:
        raise InputError(f"sentences {empty[:5]} are empty strings: remove them")
    if num_sentences is not None:
        if num_sentences > len(sents):
            raise InputError(f"num_sentences={num_sentences} but {len(sents)} sentences were given")
        sents = sents[:num_sentences]
    return sents


@dataclass(frozen=True)
class _Plan:
    """What every model speaks: sentences, per-sentence speakers and seeds, scales."""

    language: str
    sample_rate: int
    sentences: list[str]
    speakers: list[int | None]
    per_sentence_speakers: list[int | None]
    seeds: list[int]
    scales: dict[str, float | None]


def _plan(ref_synth: Any, sentences: Sequence[str] | None, num_sentences: int | None,
          speakers: Sequence[int] | None, seed: int, scales: dict[str, float | None]) -> _Plan:
    from vitsq.synth import MAX_SEED, check_speaker

    language = str(ref_synth.language)
    sents = _choose_sentences(sentences, language, num_sentences)
    if int(seed) + len(sents) - 1 > MAX_SEED:
        raise InputError(f"seed={seed} is out of range for {len(sents)} sentences: sentence i uses seed + i, so "
                         f"use an integer in 0..{MAX_SEED - len(sents) + 1}")
    spk_list = list(speakers) if speakers else _default_speakers(int(ref_synth.num_speakers))
    for s in spk_list:
        check_speaker(s, int(ref_synth.num_speakers))
    return _Plan(language, int(ref_synth.sample_rate), sents, spk_list,
                 [spk_list[i % len(spk_list)] for i in range(len(sents))],
                 [int(seed) + i for i in range(len(sents))], scales)


def _reference_audio(ref_synth: Any, reference: Any, ref_label: str, plan: _Plan, cache_path_root: Path | None,
                     progress: bool) -> tuple[list[np.ndarray | None], list[str | None], Path | None, bool]:
    """The reference clips, from the cache when it holds exactly these settings; returns
    (audios, errors, cache path, whether they came from the cache)."""
    payload = {
        "version": REFERENCE_CACHE_VERSION,
        "model": model_fingerprint(ref_synth, reference),
        "backend": getattr(ref_synth, "backend", None),
        "sentences": plan.sentences,
        "speakers": plan.per_sentence_speakers,
        "seeds": plan.seeds,
        "scales": plan.scales,
        "sample_rate": plan.sample_rate,
    }
    n = len(plan.sentences)
    cache_path = _reference_cache_path(cache_path_root, payload) if cache_path_root is not None else None
    cached = _load_reference_cache(cache_path, n, plan.sample_rate) if cache_path and cache_path.exists() else None
    if cached is not None:
        log.info("reference audio loaded from cache %s", cache_path)
        return cached[0], cached[1], cache_path, True
    audios, errors = _synthesize_all(ref_synth, plan.sentences, plan.per_sentence_speakers, plan.seeds, plan.scales,
                                     f"synth {ref_label}", progress)
    if cache_path is not None:
        _save_reference_cache(cache_path, audios, errors, plan.sample_rate, payload)
    return audios, errors, cache_path, False


def _score(synth: Any, label: str, plan: _Plan, asr: Any, encoder: Any, progress: bool,
           audio: tuple[list[np.ndarray | None], list[str | None]] | None = None) -> dict[str, Any]:
    """Synthesize (unless ``audio`` is given), transcribe, score and embed one model's clips."""
    if audio is None:
        audio = _synthesize_all(synth, plan.sentences, plan.per_sentence_speakers, plan.seeds, plan.scales,
                                f"synth {label}", progress)
    clips, syn_err = audio
    hyps, errs = _transcribe_all(asr, clips, syn_err, plan.sample_rate, plan.language, f"asr {label}", progress)
    return {"audio": clips, "syn_err": syn_err, "er": score_transcripts(plan.sentences, hyps, plan.language, errs),
            "emb": _embed_all(encoder, clips, plan.sample_rate)}


def _result(synth: Any, label: str, scored: dict[str, Any], ref: dict[str, Any] | None, plan: _Plan,
            n_boot: int, seed: int) -> VariantResult:
    """A :class:`VariantResult`; with ``ref`` (the reference's scores) also ΔWER, similarity, distances."""
    extra: dict[str, Any] = {"is_reference": True}
    if ref is not None:
        dists = [None if (r is None or t is None) else audio_distance(r, t, plan.sample_rate)
                 for r, t in zip(ref["audio"], scored["audio"])]
        extra = {"delta_wer": paired_bootstrap_delta_wer(ref["er"], scored["er"], n_boot=n_boot, seed=seed),
                 "similarity": similarity_stats(ref["emb"], scored["emb"]), "distance": distance_stats(dists)}
    return VariantResult(label=label, name=str(getattr(synth, "name", label)),
                         backend=str(getattr(synth, "backend", "")), size_bytes=_size(synth),
                         description=_describe(synth), error_rate=scored["er"],
                         synthesis_errors=tuple(scored["syn_err"]), seeded_noise=_seedable(synth), **extra)


def _noise_on(synth: Any, scales: dict[str, float | None]) -> bool:
    """Whether ``synth`` draws any noise at ``scales`` (None: the model's default)."""
    config = getattr(synth, "config", None)
    for name in ("noise_scale", "noise_w"):
        value = scales.get(name)
        if value is None:
            value = getattr(config, name, None)
        if value is None or float(value) > 0:
            return True
    return False


def _unseeded_warnings(models: Sequence[tuple[Any, str]], scales: dict[str, float | None]) -> list[str]:
    """One line per model (the reference first) whose noise is on but cannot be seeded: its clips
    are not noise-matched to the others."""
    out = []
    for k, (synth, label) in enumerate(models):
        if not _seedable(synth) and _noise_on(synth, scales):
            other = "the variants" if k == 0 else "the reference"
            out.append(f"{label}: noise is drawn unseeded on the {getattr(synth, 'backend', '?')} backend, so its "
                       f"clips are not noise-matched to {other}; compare at --noise-scale 0 --noise-w 0")
    for line in out:
        log.warning("%s", line)
    return out


def _load_all(reference: Any, variants: Sequence[Any], backend: str | None,
              device: str) -> tuple[tuple[Any, str], list[tuple[Any, str]]]:
    """The reference and the variants loaded (or taken as given), checked to be one model's versions."""
    ref = _load_model(reference, "reference", backend, device)
    loaded = [_load_model(v, "variant", backend, device) for v in variants]
    _check_compatible(ref, loaded)
    return ref, loaded


def _score_all(ref: tuple[Any, str], reference: Any, loaded: Sequence[tuple[Any, str]], plan: _Plan, asr: Any,
               encoder: Any, cache_root: Path | None, progress: bool, n_boot: int,
               seed: int) -> tuple[VariantResult, list[VariantResult], Path | None, bool]:
    """Score the reference (its audio from the cache when it holds these settings), then every
    variant against it; returns (reference result, variant results, cache path, from cache).
    ``encoder``: a speaker encoder, or None for :class:`~vitsq.evaluate.metrics.SpeakerEncoder`."""
    from vitsq.evaluate.metrics import SpeakerEncoder

    ref_synth, ref_label = ref
    encoder = encoder if encoder is not None else SpeakerEncoder()
    *ref_audio, cache_path, from_cache = _reference_audio(ref_synth, reference, ref_label, plan, cache_root, progress)
    ref_scores = _score(ref_synth, ref_label, plan, asr, encoder, progress, audio=tuple(ref_audio))
    ref_result = _result(ref_synth, ref_label, ref_scores, None, plan, n_boot, seed)
    results = [_result(s, label, _score(s, label, plan, asr, encoder, progress), ref_scores, plan, n_boot, seed)
               for s, label in loaded]
    return ref_result, results, cache_path, from_cache


def evaluate(
    reference: Any,
    variants: Sequence[Any],
    sentences: Sequence[str] | None = None,
    speakers: Sequence[int] | None = None,
    seed: int = 0,
    asr_model: str | Path | None = None,
    out: str | Path | None = None,
    *,
    num_sentences: int | None = None,
    backend: str | None = None,
    device: str = "cpu",
    noise_scale: float | None = None,
    length_scale: float | None = None,
    noise_w: float | None = None,
    n_boot: int = 2000,
    asr: Any = None,
    asr_download: bool = False,
    speaker_encoder: Any = None,
    use_cache: bool = True,
    cache_root: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
    force: bool = False,
) -> EvalResult:
    """Evaluate ``variants`` against the FP32 ``reference``; optionally write JSON to ``out``.

    Args:
        reference: model spec for :func:`vitsq.load` (e.g. ``"joe"``) or a loaded Synthesizer.
        variants: ``[LABEL=]SPEC[@BACKEND]`` strings (:mod:`vitsq.variants`; the old
            ``BACKEND:SPEC`` still works, with a deprecation warning) or Synthesizers.
        sentences: texts to speak; default: the shipped *evaluation* split of the reference's
            language (first ``num_sentences`` of it).
        speakers: speaker ids, assigned round-robin to sentences (sentence ``i`` gets
            ``speakers[i % len]``); default: the single speaker, or 4 evenly spread ids.
        seed: base noise seed; sentence ``i`` uses ``seed + i`` in every model whose noise can be
            seeded (see the module docstring for those that cannot). Also seeds the bootstrap.
        asr_model: Whisper model (``None``/"base" = packaged base, a folder, or a name);
            ``asr_download`` lets faster-whisper download a named model.
        out: JSON output path, written atomically; an existing file is replaced only with ``force``.
        backend: backend for specs that name none (default: each model's own).
        asr / speaker_encoder: pre-built :class:`WhisperASR` / :class:`SpeakerEncoder` (reuse).
        use_cache / cache_root: reference-audio cache (default ``$VITSQ_CACHE`` or ~/.cache/vitsq).
        command: the command line that asked for the evaluation (recorded in the JSON).

    Every setting and the output path are validated before any model or ASR is loaded. A
    sentence that fails is kept and counted (see the module docstring); if every sentence of a
    model failed, an error is logged and :attr:`EvalResult.all_failed` names it.
    """
    from vitsq.evaluate.asr import WhisperASR, cache_dir

    if not variants:
        raise InputError("give at least one variant to compare with the reference")
    config = check_settings(noise_scale, length_scale, noise_w, seed, speakers, n_boot, num_sentences)
    scales = {k: getattr(config, k) for k in ("noise_scale", "length_scale", "noise_w")}
    out = None if out is None else check_output(out, suffixes=JSON_SUFFIXES, force=force, what="eval JSON")
    # ASR next: an incomplete model folder should fail before minutes of synthesis.
    if asr is None:
        asr = WhisperASR(asr_model, allow_download=asr_download, device=device if device.startswith("cuda") else "cpu")
    ref, loaded = _load_all(reference, variants, backend, device)
    plan = _plan(ref[0], sentences, num_sentences, speakers, seed, scales)
    messages = _unseeded_warnings([ref, *loaded], scales)
    root = (Path(cache_root) if cache_root else cache_dir()) if use_cache else None
    ref_result, results, cache_path, from_cache = _score_all(ref, reference, loaded, plan, asr, speaker_encoder,
                                                             root, progress, n_boot, seed)
    result = EvalResult(
        reference=ref_result, variants=tuple(results), language=plan.language, sentences=tuple(plan.sentences),
        speakers=tuple(plan.per_sentence_speakers), seeds=tuple(plan.seeds),
        settings={"seed": seed, "speakers": plan.speakers, "n_boot": n_boot, "backend": backend or AUTO,
                  "device": device, "sample_rate": plan.sample_rate, **scales},
        asr=asr.describe() if hasattr(asr, "describe") else {"model": str(asr)}, versions=_versions(),
        reference_cache=cache_path.name if cache_path else None, reference_from_cache=from_cache,
        command=command, messages=tuple(messages),
    )
    for label in result.all_failed:
        log.error("%s: every one of the %d sentences failed; its scores mean nothing", label, len(plan.sentences))
    if out is not None:
        log.info("wrote %s", result.write_json(out, force=force))
    return result


def _size(synth: Any) -> int | None:
    try:
        return int(synth.size_bytes())
    except Exception as e:  # noqa: BLE001 - size is informative only
        log.debug("size_bytes() failed: %s", e)
        return None


def _describe(synth: Any) -> dict[str, Any]:
    """The model's description for the JSON (paths as file names + sha256); weights "unknown"
    when describe() fails, never a guess."""
    try:
        return describe_sources(dict(synth.describe()))
    except Exception as e:  # noqa: BLE001 - description is informative only
        log.debug("describe() failed: %s", e)
        return {"weights": "unknown", "error": f"describe() failed: {type(e).__name__}: {e}"}
