"""The ONNX Runtime backend: runs a graph with the Piper/Vosk contract (``input``,
``input_lengths``, ``scales``[, ``sid``])."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitsq.errors import InputError, ModelLoadError
from vitsq.synth import BaseSynthesizer, check_threads, pad_batch

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig


class OnnxSynthesizer(BaseSynthesizer):
    """Runs an ONNX file with the Piper/Vosk contract (input, input_lengths, scales[, sid]) in ORT.

    Noise is drawn inside the graph by ONNX Runtime, unseeded: ``seedable`` is False and an
    explicit ``seed`` is refused while any noise is on; compare with zero noise. A batch of
    items with different lengths runs item by item (so every item equals its unbatched run);
    items of one length run as one call when the graph has an ``output_lengths`` output.
    """

    backend = "onnx"
    seedable = False
    unseeded_reason = ("its noise is drawn inside the ONNX graph by ONNX Runtime, which vitsq cannot seed, "
                       "so the seed would be silently ignored")

    def __init__(self, onnx_path: str | Path, config: "VitsConfig", name: str, frontend: Any, *,
                 threads: int | None = None, **kwargs: Any) -> None:
        import onnxruntime as ort

        kwargs.setdefault("artifact_paths", [Path(onnx_path)])
        super().__init__(name, config, frontend, **kwargs)
        threads = check_threads(threads)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.threads = threads  # None: ONNX Runtime's default (one per physical core)
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from exc
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

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["threads"] = self.threads or "onnxruntime default"
        return d
