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


# =========================================================================== backends
MAX_TEXT_CHARS = 20_000


def validate_text(text: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError("text is empty (or only whitespace): give at least one word")
    if len(text) > max_chars:
        raise InputError(f"text has {len(text)} characters; the limit is {max_chars} (split it into several calls)")
    return text


class BaseSynthesizer:
    """Shared text handling, validation, sentence joining and timing; backends implement ``_run``.

    Sentence ``k`` of a text is synthesized with noise seed ``seed + k``, both in ``synthesize``
    and in ``synthesize_batch``, so a batched item equals its unbatched synthesis.
    """

    backend = "base"
    #: How a batch call runs: ``"padded"`` (one padded, masked batch through the backend) or
    #: ``"items"`` (each item alone, as a CPU server answering a batch would; no padding cost).
    #: Same audio either way. Backends that cannot pad (ExecuTorch, ONNX graphs without
    #: ``output_lengths``) run items regardless.
    batching = "padded"

    def __init__(self, name: str, config: "VitsConfig", frontend: Any, *, label: str = "trained",
                 artifact_paths: Sequence[Path] = (), quantization: dict | None = None,
                 extra_info: dict | None = None) -> None:
        self.name = name
        self.config = config
        self.frontend = frontend
        self.sample_rate = config.sample_rate
        self.num_speakers = config.n_speakers
        self.language = config.language
        self.label = label  # "trained" or "untrained (random weights)"
        self.artifact_paths = [Path(p) for p in artifact_paths]
        self.quantization = quantization
        self.extra_info = dict(extra_info or {})

    # ------------------------------------------------------------------ front-end
    def text_to_ids(self, text: str) -> list[list[int]]:
        if self.frontend is None:
            raise InputError(f"model {self.name} has no text front-end: use synthesize_ids")
        return self.frontend.text_to_ids(validate_text(text))

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        ids = [int(i) for i in ids]
        if not ids:
            raise InputError("ids are empty: give at least one symbol id")
        bad = [i for i in ids if not 0 <= i < self.config.n_vocab]
        if bad:
            raise InputError(f"symbol ids {bad[:5]} are outside the vocabulary 0..{self.config.n_vocab - 1}")
        return ids

    def _scales(self, noise_scale, length_scale, noise_w) -> tuple[float, float, float]:
        c = self.config
        return (
            check_scale("noise_scale", c.noise_scale if noise_scale is None else noise_scale),
            check_scale("length_scale", c.length_scale if length_scale is None else length_scale, allow_zero=False),
            check_scale("noise_w", c.noise_w if noise_w is None else noise_w),
        )

    # ------------------------------------------------------------------ public API
    def synthesize(self, text: str, speaker: int | None = None, noise_scale: float | None = None,
                   length_scale: float | None = None, noise_w: float | None = None, seed: int = 0) -> Audio:
        """Text -> one Audio; long text is synthesized sentence by sentence and joined."""
        return self.synthesize_batch([text], speaker, noise_scale, length_scale, noise_w, seed)[0]

    def synthesize_batch(self, texts: Sequence[str], speaker: int | Sequence[int] | None = None,
                         noise_scale: float | None = None, length_scale: float | None = None,
                         noise_w: float | None = None, seed: int = 0) -> list[Audio]:
        """Several texts in one padded, masked batch; item i equals ``synthesize(texts[i])``."""
        if isinstance(texts, str):
            raise InputError("synthesize_batch takes a list of texts, not a single string")
        if not texts:
            raise InputError("synthesize_batch needs at least one text")
        speakers = self._speakers(speaker, len(texts))
        scales = self._scales(noise_scale, length_scale, noise_w)
        with Timer() as fe:
            per_text = [self.text_to_ids(t) for t in texts]
        flat = [(i, k, ids) for i, sents in enumerate(per_text) for k, ids in enumerate(sents)]
        with Timer() as mt:
            outs = self._run_batch([ids for _, _, ids in flat], [speakers[i] for i, _, _ in flat], scales,
                                   [seed + k for _, k, _ in flat])
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

    def synthesize_ids(self, ids: Sequence[int], speaker: int | None = None, noise_scale: float | None = None,
                       length_scale: float | None = None, noise_w: float | None = None, seed: int = 0) -> Audio:
        """Symbol ids (one sequence, BOS/EOS included) -> Audio, bypassing the front-end."""
        ids = self._check_ids(ids)
        spk = self._speakers(speaker, 1)
        scales = self._scales(noise_scale, length_scale, noise_w)
        with Timer() as mt:
            out = self._run([ids], spk, scales, [seed])[0]
        return Audio(samples=out.astype(np.float32, copy=False), sample_rate=self.sample_rate,
                     model_seconds=mt.seconds, num_tokens=len(ids))

    def synthesize_ids_batch(self, batch: Sequence[Sequence[int]], speakers: Sequence[int] | int | None = None,
                             noise_scale: float | None = None, length_scale: float | None = None,
                             noise_w: float | None = None, seed: int = 0) -> tuple[list[np.ndarray], float]:
        """Padded batch of id sequences -> (audio per item, model seconds). Used by the benchmark."""
        ids = [self._check_ids(x) for x in batch]
        spk = self._speakers(speakers, len(ids))
        scales = self._scales(noise_scale, length_scale, noise_w)
        with Timer() as mt:
            outs = self._run_batch(ids, spk, scales, [seed] * len(ids))
        return outs, mt.seconds

    def _run_batch(self, batch: list[list[int]], speakers: list[int], scales: tuple[float, float, float],
                   seeds: list[int]) -> list[np.ndarray]:
        if self.batching == "items":
            return [self._run([ids], [spk], scales, [sd])[0] for ids, spk, sd in zip(batch, speakers, seeds)]
        if self.batching != "padded":
            raise InputError(f"batching must be 'padded' or 'items', not {self.batching!r}")
        return self._run(batch, speakers, scales, seeds)

    def _speakers(self, speaker, n: int) -> list[int]:
        if speaker is None or isinstance(speaker, (int, np.integer)):
            s = check_speaker(speaker, self.num_speakers)
            return [s] * n
        speakers = list(speaker)
        if len(speakers) != n:
            raise InputError(f"got {len(speakers)} speakers for {n} texts: give one speaker or one per text")
        return [check_speaker(s, self.num_speakers) for s in speakers]

    def _run(self, batch: list[list[int]], speakers: list[int], scales: tuple[float, float, float],
             seeds: list[int]) -> list[np.ndarray]:
        raise NotImplementedError

    # ------------------------------------------------------------------ self-description
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.artifact_paths if p.exists())

    def describe(self) -> dict[str, Any]:
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


class TorchSynthesizer(BaseSynthesizer):
    """Runs a PyTorch VITS/VITS2 module (FP32, or quantized by vitsq.quantize)."""

    backend = "torch"

    def __init__(self, model: Any, name: str, frontend: Any, *, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(name, model.config, frontend, **kwargs)
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def _run(self, batch, speakers, scales, seeds):
        import torch

        x, lengths = pad_batch(batch)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        noise_scale, length_scale, noise_w = scales
        with torch.inference_mode():
            out = self.model.infer(
                torch.from_numpy(x).to(self.device), torch.from_numpy(lengths).to(self.device),
                torch.tensor(speakers, dtype=torch.long, device=self.device),
                noise_scale=noise_scale, length_scale=length_scale, noise_w=noise_w, generator=gens,
            )
        audio = out.audio.float().cpu().numpy()[:, 0, :]  # [B, S]
        return [audio[i, : int(n)] for i, n in enumerate(out.audio_lengths.cpu())]

    def size_bytes(self) -> int:
        if self.artifact_paths:
            return super().size_bytes()
        if not hasattr(self, "_size"):
            import io

            import torch

            buf = io.BytesIO()
            torch.save(self.model.state_dict(), buf)
            self._size = buf.tell()
        return self._size

    def describe(self) -> dict[str, Any]:
        import torch

        from vitsq.models.vits import count_parameters

        d = super().describe()
        d["parameters"] = count_parameters(self.model)
        d["device"] = str(self.device)
        d["threads"] = torch.get_num_threads()
        return d


class OnnxSynthesizer(BaseSynthesizer):
    """Runs an ONNX file with the Piper/Vosk contract (input, input_lengths, scales[, sid]) in ORT.

    Noise is drawn inside the graph by ONNX Runtime, so ``seed`` cannot make it identical to the
    torch backend; compare with zero noise. Models without an ``output_lengths`` output are
    run one item at a time in a batch call, since padded items' lengths are not recoverable.
    """

    backend = "onnx"

    def __init__(self, onnx_path: str | Path, config: "VitsConfig", name: str, frontend: Any, *,
                 threads: int | None = None, **kwargs: Any) -> None:
        import onnxruntime as ort

        kwargs.setdefault("artifact_paths", [Path(onnx_path)])
        super().__init__(name, config, frontend, **kwargs)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.threads = threads  # None: ONNX Runtime's default (one per physical core)
        try:
            self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            from vitsq.errors import ModelLoadError

            raise ModelLoadError(f"ONNX Runtime cannot load {onnx_path}: {exc}") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = {"input", "input_lengths", "scales"} - self.input_names
        if missing:
            from vitsq.errors import ModelLoadError

            raise ModelLoadError(f"{onnx_path} lacks inputs {sorted(missing)}: not a Piper/Vosk TTS graph")

    def _feed(self, x: np.ndarray, lengths: np.ndarray, speakers: list[int], scales) -> dict:
        feed = {"input": x, "input_lengths": lengths, "scales": np.array(scales, dtype=np.float32)}
        if "sid" in self.input_names:
            feed["sid"] = np.array(speakers, dtype=np.int64)
        return feed

    def _run(self, batch, speakers, scales, seeds):
        if "output_lengths" in self.output_names:
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
