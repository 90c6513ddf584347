"""Streaming synthesis: audio chunk by chunk, equal to the whole-sentence synthesis.

:class:`AudioChunk` is what :meth:`vitsq.synth.Synthesizer.stream` yields; :class:`ChunkSchedule`
says how many frames each chunk holds (a small first chunk for a short wait, then larger ones).
The chunk-by-chunk decoders are in :mod:`vitsq.streaming.decoder` (PyTorch).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from vitsq.errors import InputError

#: Largest chunk a schedule may ask for, in latent frames (a whole sentence is at most a few
#: thousand frames; bigger chunks stream nothing).
MAX_CHUNK_FRAMES = 100_000


@dataclass
class AudioChunk:
    """One piece of a stream.

    ``samples`` float32 mono; ``index`` the chunk's number in the stream (from 0); ``sentence``
    the sentence it belongs to; ``offset`` its first sample's index in the whole stream;
    ``ready_seconds`` seconds from the ``stream()`` call until the chunk was ready;
    ``sentence_end`` whether it is its sentence's last chunk.
    """

    samples: np.ndarray
    sample_rate: int
    index: int
    sentence: int
    offset: int
    ready_seconds: float
    sentence_end: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of audio in this chunk."""
        return len(self.samples) / float(self.sample_rate)

    def to_int16(self) -> np.ndarray:
        """Samples as 16-bit PCM, converted as :meth:`vitsq.synth.Audio.to_int16` does."""
        return (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def _frames(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= MAX_CHUNK_FRAMES:
        raise InputError(f"{what} must be an integer number of frames in 1..{MAX_CHUNK_FRAMES}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ChunkSchedule:
    """Frames of audio per chunk: ``sizes`` for the first chunks, then the last size again, or,
    without ``sizes``, ``first`` frames then each chunk ``growth`` times the one before, up to
    ``largest``.

    The default (8 frames, then doubling up to 128) gives a first chunk in tens of milliseconds
    and never starves playback while the model runs faster than half real time (each chunk takes
    at most as long to compute as the one before lasts). Frames are latent frames (a Piper voice:
    256 samples, 11.6 ms at 22.05 kHz).
    """

    first: int = 8
    growth: float = 2.0
    largest: int = 128
    sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _frames(self.first, "first chunk")
        _frames(self.largest, "largest chunk")
        if isinstance(self.growth, bool) or not isinstance(self.growth, numbers.Real) or not 1.0 <= self.growth <= 16.0:
            raise InputError(f"chunk growth must be a number in 1..16, got {self.growth!r}")
        if self.largest < self.first:
            raise InputError(f"largest chunk ({self.largest}) is smaller than the first ({self.first})")
        if isinstance(self.sizes, (str, bytes)) or not isinstance(self.sizes, (Sequence, np.ndarray)):
            raise InputError(f"chunk sizes must be a list of frame counts, got {self.sizes!r}")
        object.__setattr__(self, "sizes", tuple(_frames(s, "chunk size") for s in self.sizes))

    @classmethod
    def build(cls, schedule: "ChunkSchedule | Sequence[int] | int | None") -> "ChunkSchedule":
        """A schedule from a ChunkSchedule, a list of sizes, one size (every chunk), or None
        (the default)."""
        if schedule is None:
            return cls()
        if isinstance(schedule, ChunkSchedule):
            return schedule
        if isinstance(schedule, numbers.Integral) and not isinstance(schedule, bool):
            return cls(sizes=(schedule,))
        if isinstance(schedule, (Sequence, np.ndarray)) and not isinstance(schedule, (str, bytes)):
            if len(schedule) == 0:
                raise InputError("chunk sizes are empty: give at least one frame count")
            return cls(sizes=tuple(schedule))
        raise InputError(f"schedule must be a ChunkSchedule, a list of frame counts or one frame count, "
                         f"got {type(schedule).__name__}")

    def size(self, k: int) -> int:
        """Frames of output in chunk ``k``."""
        if self.sizes:
            return self.sizes[min(k, len(self.sizes) - 1)]
        return int(min(self.largest, round(self.first * self.growth**k)))

    def plan(self, frames: int, lag: int) -> list[int]:
        """Input frames per decoder call for a sentence of ``frames`` frames when the decoder
        looks ``lag`` frames ahead: the first call brings its chunk plus the look-ahead, the
        last one the rest (and flushes). Sums to ``frames``."""
        out: list[int] = []
        pos = 0
        while pos < frames:
            n = self.size(len(out)) + (lag if not out else 0)
            n = min(n, frames - pos)
            out.append(n)
            pos += n
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "growth": self.growth, "largest": self.largest, "sizes": list(self.sizes)}


def playback_stalls(chunks: Sequence[AudioChunk]) -> tuple[float, int]:
    """(seconds of silence, number of gaps) a player would insert: it starts the first chunk
    the moment it is ready and plays each next chunk right after the one before, waiting
    whenever a chunk is not ready yet. ``(0.0, 0)``: playback never starved."""
    stalled, gaps = 0.0, 0
    end = None  # when the audio queued so far finishes playing, on the ready_seconds clock
    for c in chunks:
        if end is None:
            end = c.ready_seconds
        elif c.ready_seconds > end:
            stalled += c.ready_seconds - end
            gaps += 1
            end = c.ready_seconds
        end += c.duration
    return stalled, gaps
