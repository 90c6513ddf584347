"""The ONNX Runtime backend: runs a graph with the Piper/Vosk contract (``input``,
``input_lengths``, ``scales``[, ``sid``]), and streams with an artifact's streaming pair
(:mod:`vitsq.export.onnx_stream`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from vitsq.errors import InputError, ModelLoadError
from vitsq.synth import BaseSynthesizer, check_threads, pad_batch

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

#: version of the streaming record (manifest field ``streaming``) this vitsq reads and writes
STREAMING_VERSION = 1


class OnnxSynthesizer(BaseSynthesizer):
    """Runs an ONNX file with the Piper/Vosk contract (input, input_lengths, scales[, sid]) in ORT.

    Noise is drawn inside the graph by ONNX Runtime, unseeded: ``seedable`` is False and an
    explicit ``seed`` is refused while any noise is on; compare with zero noise. A batch of
    items with different lengths runs item by item (so every item equals its unbatched run);
    items of one length run as one call when the graph has an ``output_lengths`` output.

    ``stream``: the artifact's streaming record (:func:`read_streaming`):
    :meth:`stream` then runs the latent graph once per sentence and the decoder-step graph chunk
    by chunk (``streaming == "frames"``); without it, one chunk per sentence.
    """

    backend = "onnx"
    seedable = False
    unseeded_reason = ("its noise is drawn inside the ONNX graph by ONNX Runtime, which vitsq cannot seed, "
                       "so the seed would be silently ignored")

    def __init__(self, onnx_path: str | Path, config: "VitsConfig", name: str, frontend: Any, *,
                 threads: int | None = None, stream: dict[str, Any] | None = None, **kwargs: Any) -> None:
        import onnxruntime as ort

        kwargs.setdefault("artifact_paths", [Path(onnx_path)])
        super().__init__(name, config, frontend, **kwargs)
        threads = check_threads(threads)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.threads = threads  # None: ONNX Runtime's default (one per physical core)
        self.session = _load_session(onnx_path, opts)
        self._opts = opts
        self._stream = dict(stream) if stream is not None else None
        if stream is not None:
            self.streaming = "frames"  # its sessions load on the first stream (loading costs seconds)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = {"input", "input_lengths", "scales"} - self.input_names
        if missing:
            raise ModelLoadError(f"{onnx_path} lacks inputs {sorted(missing)}: not a Piper/Vosk TTS graph")
        if self.num_speakers > 1 and "sid" not in self.input_names:
            # the graph would run every speaker id as the same voice
            raise ModelLoadError(f"{onnx_path}: its config declares {self.num_speakers} speakers (num_speakers) "
                                 "but the graph has no 'sid' input, so it has one speaker: fix the config")

    def _feed(self, x: np.ndarray, lengths: np.ndarray, speakers: list[int], scales) -> dict:
        feed = {"input": x, "input_lengths": lengths, "scales": np.array(scales, dtype=np.float32)}
        if "sid" in self.input_names:
            feed["sid"] = np.array(speakers, dtype=np.int64)
        elif any(speakers):
            raise InputError(f"speaker {max(speakers)} given, but {self.name}'s graph has a single speaker "
                             "(no 'sid' input): use no speaker or 0")
        return feed

    def _run(self, batch, speakers, scales, seeds):
        # One call only when no item is padded: the exported graph's decoder is unmasked, so a
        # padded item's last frames would differ from the item alone. Item by item is also the
        # faster way on CPU (padding work is wasted work).
        if "output_lengths" in self.output_names and len({len(ids) for ids in batch}) == 1:
            x, lengths = pad_batch(batch)
            audio, out_len = self.session.run(["output", "output_lengths"], self._feed(x, lengths, speakers, scales))
            audio = audio.reshape(audio.shape[0], -1)
            return [audio[i, : int(n)] for i, n in enumerate(out_len)]
        outs = []
        for ids, spk in zip(batch, speakers):
            x, lengths = pad_batch([ids])
            (audio,) = self.session.run(["output"], self._feed(x, lengths, [spk], scales))
            outs.append(audio.reshape(-1))
        return outs

    def _stream_ids(self, ids, speaker, scales, seed, schedule):
        if self._stream is None:
            yield from super()._stream_ids(ids, speaker, scales, seed, schedule)
            return
        x, lengths = pad_batch([ids])
        feed = self._feed(x, lengths, [speaker], scales)
        st = self._stream
        if "step" not in st:
            st["latent"], st["step"] = (_load_session(st[k], self._opts) for k in ("latent_path", "step_path"))
        empty = True
        for samples, last in stream_sentence(st["latent"], st["step"], st, feed, schedule.plan):
            empty = False
            yield samples, last
        if empty:  # a sentence of no frames: one empty chunk still ends it
            yield np.zeros(0, np.float32), True

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["threads"] = self.threads or "onnxruntime default"
        if self._stream is not None:
            d["streaming_graphs"] = {"lag_frames": self._stream["lag_frames"],
                                     "quantized": self._stream.get("quantized", False),
                                     "bytes": sum(Path(self._stream[k]).stat().st_size
                                                  for k in ("latent_path", "step_path"))}
        return d


def _load_session(path: str | Path, opts: Any) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from exc


# =========================================================================== streaming graphs
def read_streaming(manifest: dict[str, Any], directory: str | Path) -> dict[str, Any] | None:
    """An artifact manifest's streaming record (:mod:`vitsq.export.onnx_stream`) with absolute
    ``latent_path``/``step_path``, or None when the artifact has no streaming graphs."""
    rec = manifest.get("streaming")
    if not rec:
        return None
    version = rec.get("version") if isinstance(rec, dict) else None
    if version != STREAMING_VERSION:
        raise ModelLoadError(f"{directory}: streaming record of version {version!r} is not supported (this vitsq "
                             f"reads version {STREAMING_VERSION}): re-create the artifact with vitsq")
    return {**rec, "latent_path": Path(directory) / rec["latent_file"], "step_path": Path(directory) / rec["step_file"]}


def initial_states(spec: dict[str, Any]) -> list[np.ndarray]:
    """The step graph's states before a sentence's first call: each ``shape`` filled with its
    ``fill`` (0, or an INT8 cache's zero point) in its ``dtype``."""
    return [np.full(s["shape"], s.get("fill", 0), dtype=s.get("dtype", "float32")) for s in spec["states"]]


def stream_sentence(latent: Any, step: Any, spec: dict[str, Any], feed: dict[str, np.ndarray],
                    plan: Any) -> Iterator[tuple[np.ndarray, bool]]:
    """One sentence through the streaming graphs (ONNX Runtime sessions): the latent graph once,
    then the step graph once per chunk of ``plan(frames, lag)`` frames; yields each call's
    samples [m] and whether it was the sentence's last call."""
    names = {i.name for i in latent.get_inputs()}
    outs = latent.run(None, {k: v for k, v in feed.items() if k in names})
    z = outs[0]  # [1, C, T]
    g = outs[1] if spec.get("with_g") else None  # [1, gin, 1]
    states = initial_states(spec)
    sizes = plan(int(z.shape[-1]), int(spec["lag_frames"]))
    pos = 0
    for k, n in enumerate(sizes):
        last = k == len(sizes) - 1
        call = {"z": z[:, :, pos:pos + n], "flush": np.zeros(int(last), np.int64),  # flush: its length
                **{f"state_{i}": s for i, s in enumerate(states)}}
        if g is not None:
            call["g"] = g
        audio, *states = step.run(None, call)  # [1, 1, m], new states
        pos += n
        yield audio.reshape(-1), last
