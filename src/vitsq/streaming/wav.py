"""Writing a stream of audio chunks to a ``.wav`` file as they arrive.

:func:`stream_to_wav` runs :meth:`vitsq.synth.Synthesizer.stream` and appends each chunk's
16-bit samples to the file the moment the chunk is ready, timing the wait for the first audio
(TTFA) and the whole stream. The file is a 16-bit PCM mono WAV whose header is written first with
zero sizes and fixed up when the stream ends; it is built in a temporary sibling and moved into
place by :func:`vitsq.outputs.atomic_output`, so an interrupted stream leaves the old file (if any)
untouched and never a half-written one. The samples are those of the chunks, converted as
:meth:`vitsq.synth.Audio.to_int16` converts a whole synthesis.

:func:`parse_chunk_frames` reads the ``--chunk-frames`` option of ``vitsq synth --stream`` and
``vitsq bench --ttfa``.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from vitsq.errors import InputError
from vitsq.streaming import MAX_CHUNK_FRAMES, AudioChunk, ChunkSchedule

if TYPE_CHECKING:
    from vitsq.synth import SynthesisConfig

log = logging.getLogger(__name__)

#: Bytes of the canonical PCM WAV header (RIFF, fmt of 16 bytes, data).
HEADER_BYTES = 44
#: Largest data chunk a WAV header can describe (its RIFF size field is 32-bit).
MAX_DATA_BYTES = 2**32 - 1 - (HEADER_BYTES - 8)


def parse_chunk_frames(text: str | int | Sequence[int] | None) -> ChunkSchedule:
    """``"8"`` (every chunk 8 latent frames) or ``"4,8,16"`` (4, then 8, then 16 for every later
    chunk) -> a :class:`~vitsq.streaming.ChunkSchedule`; None -> the default schedule.

    Every size must be an integer in 1..:data:`~vitsq.streaming.MAX_CHUNK_FRAMES`;
    anything else is an :class:`~vitsq.errors.InputError` naming the bad item.
    """
    if text is None or isinstance(text, ChunkSchedule):
        return ChunkSchedule.build(text)
    if not isinstance(text, str):
        return ChunkSchedule.build(text)
    items = [s.strip() for s in text.split(",")]
    if not any(items):
        raise InputError(f"chunk frames {text!r} is empty: give a frame count like 8, or sizes like 4,8,16")
    sizes = []
    for item in items:
        try:
            n = int(item)
        except ValueError:
            raise InputError(f"chunk frames {item!r} is not an integer: give a frame count like 8, or sizes "
                             f"like 4,8,16 (each 1..{MAX_CHUNK_FRAMES})") from None
        if not 1 <= n <= MAX_CHUNK_FRAMES:
            raise InputError(f"chunk frames {n} is out of range: each chunk size must be 1..{MAX_CHUNK_FRAMES} "
                             "latent frames (e.g. 8, or 4,8,16)")
        sizes.append(n)
    return ChunkSchedule.build(sizes)


def _header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit PCM mono WAV holding ``data_bytes`` bytes of samples."""
    channels, width = 1, 2
    return (b"RIFF" + struct.pack("<I", HEADER_BYTES - 8 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * width,
                                    channels * width, 8 * width)
            + b"data" + struct.pack("<I", data_bytes))


class WavStreamWriter:
    """Appends 16-bit PCM mono samples to an open binary file, header first; :meth:`finish`
    writes the real sizes into the header. The file is flushed after every chunk, so a reader
    of the (temporary) file sees each chunk as soon as it is written."""

    def __init__(self, file: IO[bytes], sample_rate: int) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
            raise InputError(f"sample rate must be a positive integer, got {sample_rate!r}")
        self.file = file
        self.sample_rate = sample_rate
        self.samples = 0
        file.write(_header(sample_rate, 0))  # sizes unknown until the stream ends

    def write(self, samples: np.ndarray) -> None:
        """Append float samples (``[N]``, nominally in [-1, 1]), converted as ``Audio.to_int16``."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise InputError(f"a chunk must hold mono samples [N], got shape {tuple(x.shape)}")
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)  # [N], as Audio.to_int16
        if (self.samples + len(pcm)) * 2 > MAX_DATA_BYTES:
            raise InputError(f"the stream is longer than a WAV file can hold ({MAX_DATA_BYTES // 2} samples)")
        self.file.write(pcm.astype("<i2", copy=False).tobytes())
        self.file.flush()
        self.samples += len(pcm)

    def finish(self) -> None:
        """Write the final RIFF and data sizes into the header."""
        end = self.file.tell()
        self.file.seek(0)
        self.file.write(_header(self.sample_rate, self.samples * 2))
        self.file.seek(end)
        self.file.flush()


@dataclass
class StreamedWav:
    """What :func:`write_chunks` wrote and how long it waited.

    ``first_audio_seconds`` (TTFA): from the start of the call until the first chunk was in the
    file; ``total_seconds``: until the last one was, header fixed up; both wall clock, front-end
    and model included.
    """

    path: Path
    sample_rate: int
    samples: int
    chunks: int
    sentences: int
    first_audio_seconds: float
    total_seconds: float

    @property
    def duration(self) -> float:
        """Seconds of audio written."""
        return self.samples / float(self.sample_rate)

    @property
    def rtf(self) -> float:
        """Real-time factor of the whole stream: total seconds per second of audio."""
        return self.total_seconds / self.duration if self.samples else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "sample_rate": self.sample_rate, "samples": self.samples,
                "chunks": self.chunks, "sentences": self.sentences, "duration": self.duration,
                "first_audio_seconds": self.first_audio_seconds, "total_seconds": self.total_seconds,
                "rtf": self.rtf}


def write_chunks(chunks: Iterable[AudioChunk], path: str | Path, *, sample_rate: int, force: bool = False,
                 start: float | None = None) -> StreamedWav:
    """Write ``chunks`` to the WAV file ``path`` as each arrives; atomic (see the module docstring).

    ``start``: the ``time.perf_counter()`` the timings count from (default: this call). An
    existing ``path`` is replaced only with ``force``. The iterator is closed when the call
    ends, also on an error or Ctrl-C, so a synthesizer's stream stops its work.
    """
    from vitsq.outputs import atomic_output

    start = time.perf_counter() if start is None else start
    first = None
    n_chunks = 0
    sentences: set[int] = set()
    try:
        with atomic_output(path, kind="file", suffixes=(".wav",), force=force, what="audio output") as tmp:
            with open(tmp, "wb") as f:
                writer = WavStreamWriter(f, sample_rate)
                for chunk in chunks:
                    if chunk.sample_rate != sample_rate:
                        raise InputError(f"chunk {chunk.index} has sample rate {chunk.sample_rate}, the stream "
                                         f"{sample_rate}: one file holds one rate")
                    writer.write(chunk.samples)
                    n_chunks += 1
                    sentences.add(chunk.sentence)
                    if first is None:
                        first = time.perf_counter() - start
                if n_chunks == 0:
                    raise InputError("the stream produced no audio: nothing to write")
                writer.finish()
            total = time.perf_counter() - start
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    log.info("streamed %d chunks (%d samples) to %s: first audio after %.1f ms, total %.3f s", n_chunks,
             writer.samples, path, first * 1000, total)
    return StreamedWav(path=Path(path).expanduser(), sample_rate=sample_rate, samples=writer.samples,
                       chunks=n_chunks, sentences=len(sentences), first_audio_seconds=first, total_seconds=total)


def stream_to_wav(synth: Any, text: str, path: str | Path, config: "SynthesisConfig | None" = None, *,
                  schedule: ChunkSchedule | Sequence[int] | int | None = None, force: bool = False,
                  **knobs: Any) -> StreamedWav:
    """Synthesize ``text`` with ``synth.stream`` into the WAV file ``path``, each chunk written as
    it arrives; returns the timings (TTFA from the call, not from the model's first frame).

    ``config``/``knobs``/``schedule`` as :meth:`vitsq.synth.Synthesizer.stream`; the file's samples
    equal the chunks' (16-bit, as ``Audio.to_int16``). Bad settings fail before any file is made.
    """
    from vitsq.outputs import check_output

    check_output(path, kind="file", suffixes=(".wav",), force=force, what="audio output")
    start = time.perf_counter()
    chunks = synth.stream(text, config, schedule=schedule, **knobs)  # checks the settings at once
    return write_chunks(chunks, path, sample_rate=int(synth.sample_rate), force=force, start=start)
