"""Quality metrics: corpus WER/CER, paired-bootstrap ΔWER, speaker similarity, distance to FP32.

All scoring functions are pure (no model state) and return frozen dataclasses. Model-backed pieces
(Whisper, resemblyzer) live in :mod:`vitsq.evaluate.asr` and :class:`SpeakerEncoder` here and only
produce the inputs (transcripts, embeddings).

Conventions, chosen so a skeptical reader can redo the numbers:

* **WER / CER are corpus-level**: total edits over all sentences / total reference words (chars).
  Text is normalized per language first (:func:`vitsq.evaluate.normalize.normalize`). CER counts
  characters of the normalized text including the single spaces between words.
* **A failed sentence** (synthesis or ASR raised) is scored as an empty hypothesis, so all its
  reference words count as deletions, and it is listed with its error: failures make a variant
  look worse, never better.
* **Length mismatch** (an INT8 duration predictor can round one phoneme to a different number of
  frames): log-mel L1 and SNR compare the common prefix (both signals cut to the shorter length);
  the length difference is kept per sentence and the number of mismatched sentences is reported.
  MCD aligns the two cepstrogram sequences with DTW, so it does not blow up on a shifted tail.
* **MCD** here is computed from a mel-filterbank cepstrum (DCT of the log mel amplitude, c1..c24,
  c0 excluded) over the reference's speech frames, not from SPTK mel-generalized cepstra: compare
  values within vitsq, not with numbers from papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from vitsq.errors import InputError
from vitsq.evaluate.normalize import normalize

__all__ = [
    "EditCounts",
    "SentenceScore",
    "ErrorRate",
    "DeltaWer",
    "SimilarityStats",
    "AudioDistance",
    "DistanceStats",
    "edit_counts",
    "score_transcripts",
    "paired_bootstrap_delta_wer",
    "cosine_similarity",
    "similarity_stats",
    "audio_distance",
    "distance_stats",
    "log_mel",
    "snr_db",
    "SpeakerEncoder",
]


# ----------------------------------------------------------------------------- edit distance


@dataclass(frozen=True)
class EditCounts:
    """Levenshtein alignment counts between a reference and a hypothesis sequence."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def edits(self) -> int:
        """Total edit distance S + D + I."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        """Number of reference tokens (S + D + hits)."""
        return self.substitutions + self.deletions + self.hits


def edit_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """Minimum-edit alignment of two token sequences (unit costs), with S/D/I/hit counts.

    Among alignments of equal cost the backtrace prefers hits/substitutions, then deletions,
    then insertions; the total ``edits`` is the Levenshtein distance whatever the tie-break.
    """
    ref, hyp = list(reference), list(hypothesis)
    n, m = len(ref), len(hyp)
    # d[i][j] = distance between ref[:i] and hyp[:j]
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        d[i][0] = i
    for j in range(1, m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        ri = ref[i - 1]
        prev, row = d[i - 1], d[i]
        for j in range(1, m + 1):
            cost = 0 if ri == hyp[j - 1] else 1
            row[j] = min(prev[j - 1] + cost, prev[j] + 1, row[j - 1] + 1)
    s = dl = ins = hits = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (0 if ref[i - 1] == hyp[j - 1] else 1):
            if ref[i - 1] == hyp[j - 1]:
                hits += 1
            else:
                s += 1
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            dl += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return EditCounts(s, dl, ins, hits)


# ----------------------------------------------------------------------------- WER / CER


@dataclass(frozen=True)
class SentenceScore:
    """Per-sentence scoring details, kept for inspection."""

    index: int
    reference: str
    hypothesis: str
    reference_normalized: str
    hypothesis_normalized: str
    words: EditCounts
    chars: EditCounts
    error: str | None = None  # synthesis/ASR failure message; hypothesis is then ""

    @property
    def wer(self) -> float:
        """This sentence's WER (edits / reference words); inf if the reference is empty but not the hypothesis."""
        return _ratio(self.words.edits, self.words.reference_length)

    @property
    def cer(self) -> float:
        """This sentence's CER."""
        return _ratio(self.chars.edits, self.chars.reference_length)


def _ratio(edits: int, total: int) -> float:
    if total == 0:
        return 0.0 if edits == 0 else math.inf
    return edits / total


@dataclass(frozen=True)
class ErrorRate:
    """Corpus-level word and character error rates with the per-sentence details."""

    language: str
    sentences: tuple[SentenceScore, ...]

    @property
    def word_edits(self) -> int:
        return sum(s.words.edits for s in self.sentences)

    @property
    def reference_words(self) -> int:
        return sum(s.words.reference_length for s in self.sentences)

    @property
    def char_edits(self) -> int:
        return sum(s.chars.edits for s in self.sentences)

    @property
    def reference_chars(self) -> int:
        return sum(s.chars.reference_length for s in self.sentences)

    @property
    def wer(self) -> float:
        """Total word edits / total reference words."""
        return _ratio(self.word_edits, self.reference_words)

    @property
    def cer(self) -> float:
        """Total character edits / total reference characters."""
        return _ratio(self.char_edits, self.reference_chars)

    @property
    def num_failed(self) -> int:
        """Sentences whose synthesis or transcription raised (scored as empty hypotheses)."""
        return sum(1 for s in self.sentences if s.error is not None)

    def totals(self) -> dict[str, int]:
        """Substitution/deletion/insertion word totals."""
        return {
            "substitutions": sum(s.words.substitutions for s in self.sentences),
            "deletions": sum(s.words.deletions for s in self.sentences),
            "insertions": sum(s.words.insertions for s in self.sentences),
            "reference_words": self.reference_words,
        }


def score_transcripts(
    references: Sequence[str],
    hypotheses: Sequence[str | None],
    language: str,
    errors: Sequence[str | None] | None = None,
) -> ErrorRate:
    """Score hypotheses against references (same order) at corpus level.

    ``hypotheses[i]`` may be ``None`` when ``errors[i]`` says why the sentence failed; such a
    sentence is scored as an empty hypothesis (all reference tokens deleted).
    """
    if len(references) != len(hypotheses):
        raise InputError(f"{len(references)} references but {len(hypotheses)} hypotheses: they must pair up")
    if errors is not None and len(errors) != len(references):
        raise InputError(f"{len(references)} references but {len(errors)} error entries")
    scores = []
    for i, ref in enumerate(references):
        err = errors[i] if errors is not None else None
        hyp = hypotheses[i]
        if hyp is None and err is None:
            err = "no hypothesis"
        hyp_text = "" if (hyp is None or err is not None) else hyp
        rn, hn = normalize(ref, language), normalize(hyp_text, language)
        scores.append(
            SentenceScore(
                index=i,
                reference=ref,
                hypothesis=hyp_text,
                reference_normalized=rn,
                hypothesis_normalized=hn,
                words=edit_counts(rn.split(), hn.split()),
                chars=edit_counts(list(rn), list(hn)),
                error=err,
            )
        )
    return ErrorRate(language=language, sentences=tuple(scores))


@dataclass(frozen=True)
class DeltaWer:
    """WER(other) - WER(base) on paired sentences, with a paired-bootstrap confidence interval."""

    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    n_boot: int
    seed: int
    num_sentences: int

    @property
    def significant(self) -> bool:
        """True when the interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap_delta_wer(
    base: ErrorRate,
    other: ErrorRate,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> DeltaWer:
    """ΔWER = corpus WER(other) - corpus WER(base), CI by resampling sentences with replacement.

    Each bootstrap replicate draws the same sentence indices for both systems (paired), recomputes
    both corpus WERs from the summed edits and reference words, and takes the difference; the CI
    is the percentile interval of the replicates. Deterministic for a given ``seed``.
    """
    if len(base.sentences) != len(other.sentences):
        raise InputError(
            f"ΔWER needs the same sentences: base has {len(base.sentences)}, other has {len(other.sentences)}"
        )
    if any(a.reference != b.reference for a, b in zip(base.sentences, other.sentences)):
        raise InputError("ΔWER needs the same sentences in the same order: references differ")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    n = len(base.sentences)
    if n == 0:
        raise InputError("ΔWER needs at least one sentence")
    e_a = np.array([s.words.edits for s in base.sentences], dtype=np.float64)
    e_b = np.array([s.words.edits for s in other.sentences], dtype=np.float64)
    r = np.array([s.words.reference_length for s in base.sentences], dtype=np.float64)
    delta = other.wer - base.wer
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # [B, n]
    ref_tot = r[idx].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = (e_b[idx].sum(axis=1) - e_a[idx].sum(axis=1)) / ref_tot
    reps = reps[np.isfinite(reps)]
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (np.quantile(reps, [alpha, 1.0 - alpha]) if reps.size else (math.nan, math.nan))
    return DeltaWer(float(delta), float(lo), float(hi), confidence, int(n_boot), int(seed), n)


# ----------------------------------------------------------------------------- speaker similarity


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two embedding vectors."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise InputError(f"embeddings differ in size: {a.shape[0]} vs {b.shape[0]}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise InputError("cosine similarity of a zero vector is undefined")
    return float(np.dot(a, b) / (na * nb))


@dataclass(frozen=True)
class SimilarityStats:
    """Speaker similarity of a variant to the reference over paired sentences."""

    mean: float
    worst: float
    worst_index: int
    per_sentence: tuple[float | None, ...]  # None where either side failed
    num_compared: int


def similarity_stats(
    reference_embeddings: Sequence[np.ndarray | None], test_embeddings: Sequence[np.ndarray | None]
) -> SimilarityStats:
    """Mean and worst (minimum) cosine similarity over sentences where both embeddings exist."""
    if len(reference_embeddings) != len(test_embeddings):
        raise InputError(f"{len(reference_embeddings)} reference but {len(test_embeddings)} test embeddings")
    sims: list[float | None] = [
        None if (a is None or b is None) else cosine_similarity(a, b)
        for a, b in zip(reference_embeddings, test_embeddings)
    ]
    vals = [(s, i) for i, s in enumerate(sims) if s is not None]
    if not vals:
        return SimilarityStats(math.nan, math.nan, -1, tuple(sims), 0)
    worst, worst_i = min(vals)
    return SimilarityStats(float(np.mean([v for v, _ in vals])), worst, worst_i, tuple(sims), len(vals))


class SpeakerEncoder:
    """resemblyzer's pretrained GE2E speaker encoder on CPU (weights ship with the package).

    Audio is resampled to 16 kHz with :func:`vitsq.evaluate.asr.resample`, then passed through
    resemblyzer's own preprocessing (volume normalization and long-silence trimming).
    """

    def __init__(self, device: str = "cpu") -> None:
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as e:  # webrtcvad imports pkg_resources (setuptools < 81)
            from vitsq.errors import ModelLoadError

            raise ModelLoadError(
                f"resemblyzer could not be imported ({e}); install the eval extra: "
                "`pip install 'vitsq[eval]'` (it needs setuptools<81 for webrtcvad's pkg_resources)"
            ) from e
        self._preprocess = preprocess_wav
        self._encoder = VoiceEncoder(device, verbose=False)

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """L2-normalized 256-d utterance embedding of a mono clip."""
        from vitsq.evaluate.asr import resample

        wav = resample(samples, sample_rate, 16000)
        if wav.size == 0:
            raise InputError("cannot embed an empty clip")
        trimmed = self._preprocess(wav, source_sr=16000)
        if trimmed.size < 16000 * 0.3:  # trimming left almost nothing (near-silent clip)
            peak = float(np.max(np.abs(wav))) or 1.0
            trimmed = wav / peak * 0.5
        return np.asarray(self._encoder.embed_utterance(trimmed.astype(np.float32)), dtype=np.float32)


# ----------------------------------------------------------------------------- distance to FP32

N_FFT = 1024
HOP = 256
N_MELS = 80
N_CEPS = 24
_LOG_FLOOR = 1e-5
_MCD_CONST = 10.0 / math.log(10.0) * math.sqrt(2.0)


def _mel_power(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mel power spectrogram [n_mels, frames] with a Hann STFT (n_fft 1024, hop 256, centered)."""
    import librosa

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    spec = np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP, window="hann", center=True)) ** 2  # [F, T]
    fb = librosa.filters.mel(sr=sample_rate, n_fft=N_FFT, n_mels=N_MELS, fmin=0.0, fmax=sample_rate / 2)
    return fb @ spec  # [n_mels, T]


def log_mel(samples: np.ndarray, sample_rate: int, floor: float = _LOG_FLOOR) -> np.ndarray:
    """Natural-log mel *amplitude* spectrogram [n_mels, frames], floored at ``floor``."""
    return np.log(np.maximum(np.sqrt(_mel_power(samples, sample_rate)), floor))


def _mel_cepstrum(samples: np.ndarray, sample_rate: int, floor: float) -> np.ndarray:
    """Mel-frequency cepstrum c1..c24 [24, frames] (DCT-II of the log mel amplitude; c0 dropped)."""
    from scipy.fft import dct

    # The usual mel-cepstrum c_d is the cosine-series coefficient of the log spectrum,
    # (2/N) * sum_k X_k cos(...); an orthonormal DCT-II is sqrt(N/2) times that, which would
    # inflate MCD ~6x (80 bands). Rescale so values sit on the familiar dB scale.
    c = dct(log_mel(samples, sample_rate, floor), type=2, axis=0, norm="ortho") * math.sqrt(2.0 / N_MELS)
    return c[1 : N_CEPS + 1]


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10·log10(Σ ref² / Σ (ref - test)²) over equal-length signals; inf when identical."""
    ref = np.asarray(reference, dtype=np.float64)
    tst = np.asarray(test, dtype=np.float64)
    if ref.shape != tst.shape:
        raise InputError(f"snr_db needs equal lengths, got {ref.shape} and {tst.shape}")
    noise = float(np.sum((ref - tst) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass(frozen=True)
class AudioDistance:
    """Distance of one test clip to its reference clip (same text, speaker and noise)."""

    log_mel_l1: float  # mean |Δ log mel| over the common-prefix frames (nats)
    snr_db: float  # over the common prefix
    mcd_db: float  # mel-cepstral distortion along the DTW path
    reference_samples: int
    test_samples: int
    mel_frames: int  # frames in the log-mel L1 mean
    mcd_frames: int  # aligned speech frames in the MCD mean
    signal_energy: float  # Σ ref² over the common prefix (for corpus SNR)
    noise_energy: float  # Σ (ref - test)² over the common prefix

    @property
    def length_difference(self) -> int:
        """test - reference length in samples."""
        return self.test_samples - self.reference_samples


def audio_distance(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> AudioDistance:
    """Log-mel L1, SNR and MCD between a reference clip and a test clip at ``sample_rate``.

    Different lengths: L1 and SNR use the common prefix; MCD uses DTW (see the module docstring).
    """
    import librosa

    ref = np.asarray(reference, dtype=np.float32).reshape(-1)
    tst = np.asarray(test, dtype=np.float32).reshape(-1)
    if ref.size == 0 or tst.size == 0:
        raise InputError(f"cannot compare empty audio (reference {ref.size} samples, test {tst.size} samples)")
    n = min(ref.size, tst.size)
    r, t = ref[:n], tst[:n]
    lr, lt = log_mel(r, sample_rate), log_mel(t, sample_rate)
    l1 = float(np.mean(np.abs(lr - lt)))
    noise = float(np.sum((r.astype(np.float64) - t) ** 2))
    signal = float(np.sum(r.astype(np.float64) ** 2))
    # MCD: one floor for both clips, relative to the reference's loudest mel bin (-120 dB, so a
    # pure gain change scores 0 with c0 dropped), and only
    # frames where the reference is speech (frame power within 60 dB of its loudest frame), so
    # that digital silence vs. a faint hiss does not dominate, as is usual for MCD.
    ref_power = _mel_power(ref, sample_rate)  # [n_mels, T]
    floor = max(1e-10, float(np.sqrt(ref_power.max())) * 1e-6)
    frame_power = ref_power.sum(axis=0)  # [T]
    speech = frame_power >= frame_power.max() * 1e-6
    cr = _mel_cepstrum(ref, sample_rate, floor)  # [24, Tr]
    ct = _mel_cepstrum(tst, sample_rate, floor)  # [24, Tt]
    if ref.size == tst.size:
        pairs = np.stack([np.arange(cr.shape[1])] * 2, axis=1)  # [T, 2]
    else:
        _, path = librosa.sequence.dtw(X=cr, Y=ct, metric="euclidean")
        pairs = path[::-1]  # [L, 2] (ref frame, test frame), in time order
    pairs = pairs[speech[pairs[:, 0]]]
    diffs = np.linalg.norm(cr[:, pairs[:, 0]] - ct[:, pairs[:, 1]], axis=0)
    mcd = float(_MCD_CONST * np.mean(diffs))  # (10 / ln 10) * sqrt(2 * sum_d Δc_d²), per frame
    return AudioDistance(
        log_mel_l1=l1,
        snr_db=snr_db(r, t),
        mcd_db=mcd,
        reference_samples=int(ref.size),
        test_samples=int(tst.size),
        mel_frames=int(lr.shape[1]),
        mcd_frames=int(diffs.size),
        signal_energy=signal,
        noise_energy=noise,
    )


@dataclass(frozen=True)
class DistanceStats:
    """Corpus aggregates of :class:`AudioDistance` (frame-weighted means, energy-summed SNR)."""

    log_mel_l1: float
    snr_db: float
    mcd_db: float
    num_compared: int
    num_length_mismatch: int
    max_abs_length_difference: int  # samples
    per_sentence: tuple[AudioDistance | None, ...] = field(repr=False)


def distance_stats(distances: Sequence[AudioDistance | None]) -> DistanceStats:
    """Aggregate per-sentence distances; ``None`` entries (a side failed) are skipped and not counted."""
    ok = [d for d in distances if d is not None]
    if not ok:
        return DistanceStats(math.nan, math.nan, math.nan, 0, 0, 0, tuple(distances))
    mel_frames = sum(d.mel_frames for d in ok)
    mcd_frames = sum(d.mcd_frames for d in ok)
    l1 = sum(d.log_mel_l1 * d.mel_frames for d in ok) / mel_frames
    mcd = sum(d.mcd_db * d.mcd_frames for d in ok) / mcd_frames
    noise = sum(d.noise_energy for d in ok)
    signal = sum(d.signal_energy for d in ok)
    snr = math.inf if noise == 0 else (-math.inf if signal == 0 else 10 * math.log10(signal / noise))
    mism = [abs(d.length_difference) for d in ok if d.length_difference != 0]
    return DistanceStats(
        log_mel_l1=float(l1),
        snr_db=float(snr),
        mcd_db=float(mcd),
        num_compared=len(ok),
        num_length_mismatch=len(mism),
        max_abs_length_difference=max(mism, default=0),
        per_sentence=tuple(distances),
    )
