"""The Synthesizer interface, the `Audio` result, :class:`SynthesisConfig`, the shared
:class:`BaseSynthesizer` and the input checks every backend uses.

Every backend (:mod:`vitsq.backends`: PyTorch FP32/INT8, ONNX Runtime, ExecuTorch) is reached
through the same :class:`Synthesizer` protocol so that evaluation, benchmarks and the web app never care which
one they hold. The knobs of one synthesis call (speaker, noise and length scales, seed) travel
together in a :class:`SynthesisConfig`, validated once when it is built.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from vitsq.errors import InputError, UnsupportedError
from vitsq.limits import MAX_BATCH_IDS, MAX_LENGTH_SCALE, MAX_NOISE_SCALE, MAX_TEXT_CHARS
from vitsq.text.validate import check_text_chars

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig
    from vitsq.streaming import AudioChunk, ChunkSchedule

log = logging.getLogger(__name__)

#: The concrete backends a model can run on.
BACKENDS = ("torch", "onnx", "executorch", "sherpa")
#: ``vitsq.load``'s default: the model's own backend (see :func:`vitsq.registry.load`).
AUTO = "auto"
BACKEND_CHOICES = (AUTO, *BACKENDS)

#: Seeds are unsigned 64-bit integers (what ``torch.Generator.manual_seed`` takes).
MAX_SEED = 2**64 - 1
#: The weights label of models with seeded random weights (good for speed and size only).
UNTRAINED = "untrained (random weights)"
#: The knobs of :class:`SynthesisConfig`, in order.
KNOBS = ("speaker", "noise_scale", "length_scale", "noise_w", "seed")


@dataclass
class Audio:
    """Synthesized speech plus the timings needed for RTF and tokens/s."""

    samples: np.ndarray  # [N] float32, mono, nominally in [-1, 1]
    sample_rate: int
    frontend_seconds: float = 0.0  # text -> ids (phonemize / G2P)
    model_seconds: float = 0.0  # ids -> samples
    num_tokens: int = 0  # model input ids, summed over sentences
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Audio length in seconds (samples / sample rate)."""
        return len(self.samples) / float(self.sample_rate)

    @property
    def rtf(self) -> float:
        """Real-time factor of the model: model seconds per second of audio."""
        return self.model_seconds / self.duration if self.duration > 0 else float("inf")

    @property
    def tokens_per_second(self) -> float:
        """Input tokens processed per second of model time."""
        return self.num_tokens / self.model_seconds if self.model_seconds > 0 else 0.0

    def to_int16(self) -> np.ndarray:
        """Samples as 16-bit PCM (clipped to [-1, 1] first)."""
        return (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype(np.int16)

    def write(self, path: str | Path, *, force: bool = False) -> Path:
        """Write a 16-bit PCM ``.wav`` file atomically (see :mod:`vitsq.outputs`).

        An existing file is replaced only with ``force`` (and only a ``.wav`` file); an
        interrupted write leaves the old file, if any, untouched. Returns the path written.
        """
        import soundfile as sf

        from vitsq.outputs import atomic_output

        with atomic_output(path, kind="file", suffixes=(".wav",), force=force, what="audio output") as tmp:
            sf.write(str(tmp), self.to_int16(), self.sample_rate, subtype="PCM_16", format="WAV")
        return Path(path).expanduser()


# =========================================================================== validation
def _check_int(name: str, value: object, hi: int | None, valid: str, lo: int | None = 0) -> int | None:
    """None, or an integer (bool refused) in ``lo..hi`` (None: unbounded); InputError naming
    ``valid`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}={value!r} is not valid: use {valid}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{name}={value} is out of range: use {valid}")
    return int(value)


def _check_real(name: str, value: object, hi: float, allow_zero: bool) -> float | None:
    """None, or a finite real number (bool/str refused) in [0, hi] (or (0, hi])."""
    if value is None:
        return None
    valid = f"a finite number {'>=' if allow_zero else '>'} 0 and <= {hi:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}={value!r} is not valid: use {valid}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero) or v > hi:
        raise InputError(f"{name}={v!r} is out of range: use {valid}")
    return v


@dataclass(frozen=True)
class SynthesisConfig:
    """The knobs of one synthesis call, validated once here (:class:`~vitsq.errors.InputError`
    naming the field, the value and the valid range).

    ``None`` means the model's default (its config's ``noise_scale``/``length_scale``/``noise_w``,
    speaker 0). Ranges: ``speaker`` an integer (checked against the model's speakers when the
    config is used); ``noise_scale`` and ``noise_w`` finite numbers in [0, :data:`MAX_NOISE_SCALE`];
    ``length_scale`` in (0, :data:`vitsq.limits.MAX_LENGTH_SCALE`]; ``seed`` an integer in
    0..2**64-1, or ``None`` for the backend's default (0 on the seedable backends; backends whose
    noise cannot be seeded refuse an explicit seed while any noise is on, see
    :attr:`BaseSynthesizer.seedable`).
    """

    speaker: int | None = None
    noise_scale: float | None = None
    length_scale: float | None = None
    noise_w: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        # the speaker's range is the model's: checked by check_speaker when the config is used
        valid_speaker = "an integer speaker id (for one speaker per item of a batch, pass speakers=[...])"
        checked = {
            "speaker": _check_int("speaker", self.speaker, None, valid_speaker, lo=None),
            "noise_scale": _check_real("noise_scale", self.noise_scale, MAX_NOISE_SCALE, True),
            "length_scale": _check_real("length_scale", self.length_scale, MAX_LENGTH_SCALE, False),
            "noise_w": _check_real("noise_w", self.noise_w, MAX_NOISE_SCALE, True),
            "seed": _check_int("seed", self.seed, MAX_SEED, f"an integer in 0..{MAX_SEED} (2**64-1)"),
        }
        for name, value in checked.items():  # normalized: numpy scalars become int/float
            object.__setattr__(self, name, value)

    @classmethod
    def build(cls, config: "SynthesisConfig | None" = None, **knobs: Any) -> "SynthesisConfig":
        """``config`` with the knobs given as keywords (those not None) overriding its fields.

        An unknown knob is an InputError listing the valid names.
        """
        if config is not None and not isinstance(config, SynthesisConfig):
            raise InputError(f"config must be a SynthesisConfig or None, got {type(config).__name__} "
                             f"{config!r} (pass knobs by keyword: {', '.join(KNOBS)})")
        unknown = sorted(set(knobs) - set(KNOBS))
        if unknown:
            raise InputError(f"unknown synthesis option {unknown[0]!r}: valid options are {', '.join(KNOBS)}")
        given = {k: v for k, v in knobs.items() if v is not None}
        base = config if config is not None else cls()
        return replace(base, **given) if given else base

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (None = model/backend default)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_speaker(speaker: object, num_speakers: int) -> int:
    """Validate a speaker id against the model; single-speaker models take None or 0."""
    spk = _check_int("speaker", speaker, None, "an integer speaker id", lo=None)
    if num_speakers <= 1:
        if spk not in (None, 0):
            raise InputError(
                f"speaker {speaker!r} given, but this model has a single speaker (use no speaker or 0)"
            )
        return 0
    if spk is None:
        return 0
    if not 0 <= spk < num_speakers:
        raise InputError(f"speaker {spk} out of range: this model has speakers 0..{num_speakers - 1}")
    return spk


def check_scale(name: str, value: object, allow_zero: bool = True) -> float:
    """Validate one scale as :class:`SynthesisConfig` does (``noise_scale``, ``length_scale``,
    ``noise_w``); ``allow_zero=False`` also refuses 0."""
    scales = ("noise_scale", "length_scale", "noise_w")
    if name not in scales:
        raise InputError(f"unknown scale {name!r}: valid scales are {', '.join(scales)}")
    if value is None:
        raise InputError(f"{name} is missing: give a number")
    v = getattr(SynthesisConfig(**{name: value}), name)
    if v == 0 and not allow_zero:
        raise InputError(f"{name}=0.0 is out of range: use a finite number > 0")
    return v


def check_threads(threads: object) -> int | None:
    """None (the backend's default) or an integer >= 1."""
    return _check_int("threads", threads, None, "an integer >= 1 (or None for the backend's default)", lo=1)


def resolve_device(device: object) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (when this machine has that GPU); InputError naming the
    valid devices otherwise."""
    name = str(device).strip().lower() if isinstance(device, str) else str(device)
    if name == "cpu":
        return "cpu"
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(n)] if n else [])
    if name in valid:
        return name
    note = "" if n else " (no CUDA GPU is available on this machine)"
    raise InputError(f"device {device!r} is not valid: use {', '.join(valid)}{note}")




def _bounded_chunks(flat: list, max_ids: int) -> list[list]:
    """Consecutive runs of ``(text, sentence, ids)`` items whose padded size (items x longest
    ids) stays within ``max_ids`` (an item longer than that runs alone)."""
    chunks: list[list] = []
    cur: list = []
    longest = 0
    for item in flat:
        n = len(item[2])
        if cur and (len(cur) + 1) * max(longest, n) > max_ids:
            chunks.append(cur)
            cur, longest = [], 0
        cur.append(item)
        longest = max(longest, n)
    if cur:
        chunks.append(cur)
    return chunks


def validate_text(text: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Refuse a non-string, empty, over-long text, or one with control characters (other than
    newline, tab, carriage return) or lone surrogates (:func:`vitsq.text.validate.check_text_chars`);
    return it unchanged."""
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError("text is empty (or only whitespace): give at least one word")
    if len(text) > max_chars:
        raise InputError(f"text has {len(text)} characters; the limit is {max_chars} (split it into several calls)")
    return check_text_chars(text)


class Timer:
    """Context manager measuring wall-clock seconds with perf_counter."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


@runtime_checkable
class Synthesizer(Protocol):
    """What every loaded model offers, whatever its backend."""

    name: str  # human-readable model id, e.g. "en_US-joe-medium"
    backend: str  # one of BACKENDS
    sample_rate: int
    num_speakers: int
    language: str  # "en", "ru", ...
    config: "VitsConfig"
    seedable: bool  # whether ``seed`` decides the noise (False: noise drawn unseeded, e.g. in ONNX Runtime)

    def text_to_ids(self, text: str) -> list[list[int]]:
        """Front-end: one list of symbol ids per sentence."""

    def synthesize(self, text: str, config: SynthesisConfig | None = None, **knobs: Any) -> Audio:
        """Text -> one Audio (``knobs``: the fields of :class:`SynthesisConfig`, overriding ``config``)."""

    def synthesize_batch(self, texts: Sequence[str], config: SynthesisConfig | None = None, *,
                         speakers: Sequence[int] | None = None, **knobs: Any) -> list[Audio]:
        """Several texts; item i equals ``synthesize(texts[i])``; ``speakers``: one per text."""

    def synthesize_ids(self, ids: Sequence[int], config: SynthesisConfig | None = None, **knobs: Any) -> Audio:
        """Symbol ids of one sentence -> Audio, bypassing the front-end."""

    def stream(self, text: str, config: SynthesisConfig | None = None, *,
               schedule: "ChunkSchedule | Sequence[int] | int | None" = None, **knobs: Any) -> Iterator["AudioChunk"]:
        """Text -> audio chunks as they are ready; concatenated, they equal ``synthesize``."""

    def size_bytes(self) -> int:
        """Bytes of the inference artifact (file(s) on disk or serialized weights)."""

    def describe(self) -> dict[str, Any]:
        """Self-description: model id, backend, config summary, quantization recipe, threads."""


# =========================================================================== shared backend code
def _sentence_seed(seed: int, k: int) -> int:
    return (seed + k) % (MAX_SEED + 1)


class BaseSynthesizer:
    """Shared text handling, validation, sentence joining and timing; backends implement ``_run``.

    Sentence ``k`` of a text is synthesized with noise seed ``seed + k`` (mod 2**64), both in
    ``synthesize`` and in ``synthesize_batch``, so a batched item equals its unbatched synthesis.
    """

    backend = "base"
    #: Whether ``seed`` decides the noise. Backends that draw noise where vitsq cannot seed it
    #: refuse an explicit seed while any noise scale is > 0 (:meth:`resolve`).
    seedable = True
    #: Why a backend is not seedable (part of the refusal message).
    unseeded_reason = ""
    #: How a batch call runs: ``"padded"`` (one padded, masked batch through the backend) or
    #: ``"items"`` (each item alone, as a CPU server answering a batch would; no padding cost).
    #: Same audio either way. Backends that cannot pad (ExecuTorch, ONNX graphs without
    #: ``output_lengths``) run items regardless.
    batching = "padded"

    def __init__(self, name: str, config: "VitsConfig", frontend: Any, *, label: str = "unknown",
                 artifact_paths: Sequence[Path] = (), quantization: dict | None = None,
                 extra_info: dict | None = None) -> None:
        self.name = name
        self.config = config
        self.frontend = frontend
        self.sample_rate = config.sample_rate
        self.num_speakers = config.n_speakers
        self.language = config.language
        self.label = label  # "trained", "untrained (random weights)", or "unknown"
        self.artifact_paths = [Path(p) for p in artifact_paths]
        self.quantization = quantization
        self.extra_info = dict(extra_info or {})

    # ------------------------------------------------------------------ front-end
    def text_to_ids(self, text: str) -> list[list[int]]:
        """Front-end: one list of symbol ids per sentence."""
        return [ids for piece in self._pieces(text) for ids in self._piece_ids(piece)]

    def _pieces(self, text: str) -> list[str]:
        """The text's sentences as the front-end is given them, one at a time (see
        :func:`vitsq.text.split.sentence_pieces`): ``synthesize`` and ``stream`` cut alike."""
        from vitsq.text.split import sentence_pieces

        if self.frontend is None:
            raise InputError(f"model {self.name} has no text front-end: use synthesize_ids")
        # a front-end whose utterance is a whole line (Russian, as vosk-tts) is cut at lines only
        return sentence_pieces(validate_text(text), lines_only=getattr(self.frontend, "utterance_per_line", False))

    def _piece_ids(self, piece: str) -> list[list[int]]:
        return self.frontend.text_to_ids(piece)

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
            raise InputError(f"ids must be a sequence of integer symbol ids, got {type(ids).__name__}")
        wrong = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
        if wrong:
            raise InputError(f"symbol ids must be integers in 0..{self.config.n_vocab - 1}, got {wrong[0]!r}")
        ids = [int(i) for i in ids]
        if not ids:
            raise InputError("ids are empty: give at least one symbol id")
        bad = [i for i in ids if not 0 <= i < self.config.n_vocab]
        if bad:
            raise InputError(f"symbol ids {bad[:5]} are outside the vocabulary 0..{self.config.n_vocab - 1}")
        return ids

    # ------------------------------------------------------------------ settings
    def resolve(self, config: SynthesisConfig | None = None, **knobs: Any) -> SynthesisConfig:
        """The call's settings with every field filled: knobs over ``config`` over the model's
        defaults (speaker 0, seed 0). Refuses a speaker this model lacks, and an explicit seed
        on a backend that cannot honour it while noise is on."""
        cfg = SynthesisConfig.build(config, **knobs)
        c = self.config
        full = replace(
            cfg,
            speaker=check_speaker(cfg.speaker, self.num_speakers),
            noise_scale=c.noise_scale if cfg.noise_scale is None else cfg.noise_scale,
            length_scale=c.length_scale if cfg.length_scale is None else cfg.length_scale,
            noise_w=c.noise_w if cfg.noise_w is None else cfg.noise_w,
            seed=0 if cfg.seed is None else cfg.seed,
        )
        if cfg.seed is not None and not self.seedable and (full.noise_scale > 0 or full.noise_w > 0):
            raise UnsupportedError(
                f"{self.name} ({self.backend} backend) cannot honour seed={cfg.seed}: {self.unseeded_reason}. "
                f"Give no seed, or set noise_scale=0 and noise_w=0 (deterministic), or load the model on "
                f"the torch backend for seeded noise")
        return full

    @staticmethod
    def _scales(cfg: SynthesisConfig) -> tuple[float, float, float]:
        return cfg.noise_scale, cfg.length_scale, cfg.noise_w

    def _speakers(self, speakers: object, default: int, n: int) -> list[int]:
        """Per-item speakers: ``speakers`` (an int, or one per item) or ``default`` for all."""
        if speakers is None:
            return [default] * n
        if isinstance(speakers, (numbers.Integral, np.integer)) and not isinstance(speakers, bool):
            return [check_speaker(speakers, self.num_speakers)] * n
        if isinstance(speakers, (str, bytes)) or not isinstance(speakers, (Sequence, np.ndarray)):
            raise InputError(f"speakers must be a list with one speaker id per item, got {type(speakers).__name__}")
        speakers = list(speakers)
        if len(speakers) != n:
            raise InputError(f"got {len(speakers)} speakers for {n} items: give one speaker per item")
        return [check_speaker(s, self.num_speakers) for s in speakers]

    # ------------------------------------------------------------------ public API
    def synthesize(self, text: str, config: SynthesisConfig | None = None, **knobs: Any) -> Audio:
        """Text -> one Audio; long text is synthesized sentence by sentence and joined.

        ``config``: a :class:`SynthesisConfig` (None: model defaults); ``knobs`` (``speaker``,
        ``noise_scale``, ``length_scale``, ``noise_w``, ``seed``) override its fields.
        """
        cfg = self.resolve(config, **knobs)
        with Timer() as fe:
            sentences = self.text_to_ids(text)
        # one sentence at a time: each equals its streamed synthesis (a padded batch's text
        # encoder rounds differently), and memory stays that of one sentence
        with Timer() as mt:
            outs = [self._run([ids], [cfg.speaker], self._scales(cfg), [_sentence_seed(cfg.seed, k)])[0]
                    for k, ids in enumerate(sentences)]
        return Audio(samples=np.concatenate(outs).astype(np.float32, copy=False), sample_rate=self.sample_rate,
                     frontend_seconds=fe.seconds, model_seconds=mt.seconds,
                     num_tokens=sum(len(s) for s in sentences),
                     extra={"sentences": len(sentences), "batch_model_seconds": mt.seconds, "batch_size": 1})

    def synthesize_batch(self, texts: Sequence[str], config: SynthesisConfig | None = None, *,
                         speakers: Sequence[int] | None = None, **knobs: Any) -> list[Audio]:
        """Several texts in one padded, masked batch; item i equals ``synthesize(texts[i])``.

        ``speakers``: one speaker id per text (instead of ``config.speaker`` for all).
        """
        if isinstance(texts, str):
            raise InputError("synthesize_batch takes a list of texts, not a single string")
        if not texts:
            raise InputError("synthesize_batch needs at least one text")
        cfg = self._resolve_with_speakers(config, speakers, knobs)
        spk = self._speakers(speakers, cfg.speaker, len(texts))
        with Timer() as fe:
            per_text = [self.text_to_ids(t) for t in texts]
        flat = [(i, k, ids) for i, sents in enumerate(per_text) for k, ids in enumerate(sents)]
        with Timer() as mt:
            outs: list[np.ndarray] = []
            # bounded backend calls: a long text's utterances never all decode at once
            for part in _bounded_chunks(flat, MAX_BATCH_IDS):
                outs += self._run_batch([ids for _, _, ids in part], [spk[i] for i, _, _ in part],
                                        self._scales(cfg), [_sentence_seed(cfg.seed, k) for _, k, _ in part])
        results = []
        total_tokens = sum(len(ids) for _, _, ids in flat)
        for i, sents in enumerate(per_text):
            pieces = [o for (j, _, _), o in zip(flat, outs) if j == i]
            n_tok = sum(len(s) for s in sents)
            share = n_tok / total_tokens
            results.append(Audio(
                samples=np.concatenate(pieces).astype(np.float32, copy=False),
                sample_rate=self.sample_rate,
                frontend_seconds=fe.seconds * share,
                model_seconds=mt.seconds * share,
                num_tokens=n_tok,
                extra={"sentences": len(sents), "batch_model_seconds": mt.seconds, "batch_size": len(flat)},
            ))
        return results

    def synthesize_ids(self, ids: Sequence[int], config: SynthesisConfig | None = None, **knobs: Any) -> Audio:
        """Symbol ids (one sequence, BOS/EOS included) -> Audio, bypassing the front-end."""
        ids = self._check_ids(ids)
        cfg = self.resolve(config, **knobs)
        with Timer() as mt:
            out = self._run([ids], [cfg.speaker], self._scales(cfg), [cfg.seed])[0]
        return Audio(samples=out.astype(np.float32, copy=False), sample_rate=self.sample_rate,
                     model_seconds=mt.seconds, num_tokens=len(ids))

    def stream(self, text: str, config: SynthesisConfig | None = None, *,
               schedule: "ChunkSchedule | Sequence[int] | int | None" = None, **knobs: Any) -> Iterator["AudioChunk"]:
        """Text -> :class:`~vitsq.streaming.AudioChunk` s as soon as each is ready.

        Concatenated, the chunks equal ``synthesize(text, config)`` (same knobs and seed).
        Sentences are phonemized one at a time, so the first sentence's audio waits for no
        other. Backends that decode chunk by chunk (:attr:`streaming` ``"frames"``) cut each
        sentence by ``schedule`` (a :class:`~vitsq.streaming.ChunkSchedule`, a list of frame
        counts, or one count; default: 8 frames, doubling to 128); the others yield one chunk
        per sentence. Settings are checked before the first chunk; closing the iterator stops
        the work.
        """
        from vitsq.streaming import ChunkSchedule

        start = time.perf_counter()
        cfg = self.resolve(config, **knobs)
        plan = ChunkSchedule.build(schedule)
        pieces = self._pieces(text)
        return self._chunks(pieces, cfg, plan, start)

    def stream_ids(self, ids: Sequence[int], config: SynthesisConfig | None = None, *,
                   schedule: "ChunkSchedule | Sequence[int] | int | None" = None,
                   **knobs: Any) -> Iterator["AudioChunk"]:
        """Symbol ids (one sequence, BOS/EOS included) -> :class:`~vitsq.streaming.AudioChunk` s,
        bypassing the front-end; concatenated they equal ``synthesize_ids(ids, config)`` (same
        knobs and seed). ``schedule`` as in :meth:`stream`; ids and settings are checked before
        the first chunk; closing the iterator stops the work."""
        from vitsq.streaming import ChunkSchedule

        start = time.perf_counter()
        ids = self._check_ids(ids)
        cfg = self.resolve(config, **knobs)
        plan = ChunkSchedule.build(schedule)
        return self._id_chunks(ids, cfg, plan, start)

    def _id_chunks(self, ids: list[int], cfg: SynthesisConfig, plan: "ChunkSchedule",
                   start: float) -> Iterator["AudioChunk"]:
        from vitsq.streaming import AudioChunk

        index = offset = 0
        # seed as synthesize_ids: the sequence is the first (only) sentence
        for samples, end in self._stream_ids(ids, cfg.speaker, self._scales(cfg), cfg.seed, plan):
            samples = np.asarray(samples, dtype=np.float32)
            yield AudioChunk(samples=samples, sample_rate=self.sample_rate, index=index, sentence=0, offset=offset,
                             ready_seconds=time.perf_counter() - start, sentence_end=end)
            index += 1
            offset += len(samples)

    def _chunks(self, pieces: list[str], cfg: SynthesisConfig, plan: "ChunkSchedule",
                start: float) -> Iterator["AudioChunk"]:
        from vitsq.streaming import AudioChunk

        index = offset = sentence = 0
        for piece in pieces:
            for ids in self._piece_ids(piece):
                for samples, end in self._stream_ids(ids, cfg.speaker, self._scales(cfg),
                                                     _sentence_seed(cfg.seed, sentence), plan):
                    samples = np.asarray(samples, dtype=np.float32)
                    yield AudioChunk(samples=samples, sample_rate=self.sample_rate, index=index, sentence=sentence,
                                     offset=offset, ready_seconds=time.perf_counter() - start, sentence_end=end)
                    index += 1
                    offset += len(samples)
                sentence += 1

    #: ``"frames"``: :meth:`stream` decodes chunk by chunk; ``"sentences"``: one chunk per sentence.
    streaming = "sentences"

    def _stream_ids(self, ids: list[int], speaker: int, scales: tuple[float, float, float], seed: int,
                    schedule: "ChunkSchedule") -> Iterator[tuple[np.ndarray, bool]]:
        """One sentence's audio as ``(samples, is_last)`` pieces; here the whole sentence at once."""
        yield self._run([ids], [speaker], scales, [seed])[0], True

    def synthesize_ids_batch(self, batch: Sequence[Sequence[int]], speakers: Sequence[int] | int | None = None,
                             config: SynthesisConfig | None = None, **knobs: Any) -> tuple[list[np.ndarray], float]:
        """Batch of id sequences -> (audio per item, model seconds); every item gets ``config.seed``.
        Used by the benchmark."""
        if isinstance(batch, (str, bytes)) or len(batch) == 0:
            raise InputError("synthesize_ids_batch needs a non-empty list of id sequences")
        ids = [self._check_ids(x) for x in batch]
        cfg = self._resolve_with_speakers(config, speakers, knobs)
        spk = self._speakers(speakers, cfg.speaker, len(ids))
        with Timer() as mt:
            outs = self._run_batch(ids, spk, self._scales(cfg), [cfg.seed] * len(ids))
        return outs, mt.seconds

    def _resolve_with_speakers(self, config: SynthesisConfig | None, speakers: object,
                               knobs: dict[str, Any]) -> SynthesisConfig:
        cfg = self.resolve(config, **knobs)
        if speakers is not None and (knobs.get("speaker") is not None
                                     or (config is not None and config.speaker is not None)):
            raise InputError("give either speaker (one for all items) or speakers (one per item), not both")
        return cfg

    def _run_batch(self, batch: list[list[int]], speakers: list[int], scales: tuple[float, float, float],
                   seeds: list[int]) -> list[np.ndarray]:
        if self.batching == "items":
            return [self._run([ids], [spk], scales, [sd])[0] for ids, spk, sd in zip(batch, speakers, seeds)]
        if self.batching != "padded":
            raise InputError(f"batching must be 'padded' or 'items', not {self.batching!r}")
        return self._run(batch, speakers, scales, seeds)

    def _run(self, batch: list[list[int]], speakers: list[int], scales: tuple[float, float, float],
             seeds: list[int]) -> list[np.ndarray]:
        raise NotImplementedError

    # ------------------------------------------------------------------ self-description
    def size_bytes(self) -> int:
        """Bytes of the artifact files on disk."""
        return sum(p.stat().st_size for p in self.artifact_paths if p.exists())

    def describe(self) -> dict[str, Any]:
        """Model id, backend, architecture, weights label, sizes, quantization, extra info."""
        c = self.config
        return {
            "name": self.name,
            "backend": self.backend,
            "arch": c.arch,
            "decoder": c.decoder,
            "weights": self.label,
            "sample_rate": c.sample_rate,
            "speakers": c.n_speakers,
            "symbols": c.n_vocab,
            "language": c.language,
            "seedable": self.seedable,
            "streaming": self.streaming,
            "size_bytes": self.size_bytes(),
            "quantization": self.quantization,
            **self.extra_info,
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} backend={self.backend}>"


def pad_batch(batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """ids -> ([B, T_max] int64 zero-padded, [B] int64 lengths)."""
    lengths = np.array([len(x) for x in batch], dtype=np.int64)
    out = np.zeros((len(batch), int(lengths.max())), dtype=np.int64)
    for i, x in enumerate(batch):
        out[i, : len(x)] = x
    return out, lengths
