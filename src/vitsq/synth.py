"""The Synthesizer interface, the `Audio` result, and `vitsq.load`.

Every backend (PyTorch FP32/INT8, ONNX Runtime, ExecuTorch) is reached through the same
:class:`Synthesizer` protocol so that evaluation, benchmarks and the web app never care which
one they hold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

from vitsq.errors import InputError

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "executorch")


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
        return (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype(np.int16)

    def write(self, path: str | Path) -> Path:
        """Write a 16-bit PCM wav file."""
        import soundfile as sf

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), self.to_int16(), self.sample_rate, subtype="PCM_16")
        return path


@runtime_checkable
class Synthesizer(Protocol):
    """What every loaded model offers, whatever its backend."""

    name: str  # human-readable model id, e.g. "en_US-joe-medium"
    backend: str  # one of BACKENDS
    sample_rate: int
    num_speakers: int
    language: str  # "en", "ru", ...
    config: "VitsConfig"

    def text_to_ids(self, text: str) -> list[list[int]]:
        """Front-end: one list of symbol ids per sentence."""

    def synthesize(
        self,
        text: str,
        speaker: int | None = None,
        noise_scale: float | None = None,
        length_scale: float | None = None,
        noise_w: float | None = None,
        seed: int = 0,
    ) -> Audio: ...

    def synthesize_batch(
        self,
        texts: Sequence[str],
        speaker: int | Sequence[int] | None = None,
        noise_scale: float | None = None,
        length_scale: float | None = None,
        noise_w: float | None = None,
        seed: int = 0,
    ) -> list[Audio]: ...

    def synthesize_ids(
        self,
        ids: Sequence[int],
        speaker: int | None = None,
        noise_scale: float | None = None,
        length_scale: float | None = None,
        noise_w: float | None = None,
        seed: int = 0,
    ) -> Audio: ...

    def size_bytes(self) -> int:
        """Bytes of the inference artifact (file(s) on disk or serialized weights)."""

    def describe(self) -> dict[str, Any]:
        """Self-description: model id, backend, config summary, quantization recipe."""


def check_speaker(speaker: int | None, num_speakers: int) -> int:
    """Validate a speaker id against the model; single-speaker models take None or 0."""
    if num_speakers <= 1:
        if speaker not in (None, 0):
            raise InputError(
                f"speaker {speaker!r} given, but this model has a single speaker (use no speaker or 0)"
            )
        return 0
    if speaker is None:
        return 0
    if isinstance(speaker, bool) or not isinstance(speaker, (int, np.integer)):
        raise InputError(f"speaker must be an integer in 0..{num_speakers - 1}, got {speaker!r}")
    if not 0 <= int(speaker) < num_speakers:
        raise InputError(f"speaker {speaker} out of range: this model has speakers 0..{num_speakers - 1}")
    return int(speaker)


def check_scale(name: str, value: float, allow_zero: bool = True) -> float:
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero) or value > 100:
        valid = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InputError(f"{name}={value} is not valid: use {valid} (and <= 100)")
    return value


class Timer:
    """Context manager measuring wall-clock seconds with perf_counter."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def load(spec: str | Path, backend: str = "torch", device: str = "cpu", **kwargs: Any) -> Synthesizer:
    """Load a model by name or path behind the Synthesizer interface.

    ``spec`` may be: ``"joe"`` (the embedded Piper voice), ``"vosk-ru-multi"`` (untrained preset),
    a Piper ``.onnx`` (with ``.onnx.json`` beside it), a Vosk ``G_*.pth`` (config beside it or
    ``config=``), a Vosk model folder, or a vitsq artifact folder (with ``vitsq.json``).
    ``backend`` is one of ``torch``, ``onnx``, ``executorch``.
    """
    from vitsq.registry import load_synthesizer

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}: valid backends are {', '.join(BACKENDS)}")
    return load_synthesizer(str(spec), backend=backend, device=device, **kwargs)
