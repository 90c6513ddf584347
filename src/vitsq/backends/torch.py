"""The PyTorch backend: runs a VITS/VITS2 module (FP32, or INT8 from :mod:`vitsq.quantize`)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from vitsq.errors import UnsupportedError
from vitsq.synth import BaseSynthesizer, pad_batch, resolve_device

log = logging.getLogger(__name__)


class TorchSynthesizer(BaseSynthesizer):
    """Runs a PyTorch VITS/VITS2 module (FP32, or quantized by vitsq.quantize)."""

    backend = "torch"
    #: Sentences of at least this many frames stream the VITS flow too (its cost then no longer
    #: delays the first chunk). Streamed flow convolutions see shorter inputs than the
    #: whole-sentence flow, and oneDNN rounds short inputs differently (1e-6 of z), which the
    #: decoder amplifies to about 2e-5 of peak; shorter sentences run the flow whole and stream
    #: within 1e-5. None: never stream the flow; 0: always.
    stream_flow_min_frames: int | None = 256

    def __init__(self, model: Any, name: str, frontend: Any, *, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(name, model.config, frontend, **kwargs)
        import torch

        self.device = torch.device(resolve_device(device))
        self.model = model.to(self.device).eval()
        self._decoder: Any = None
        try:
            from vitsq.streaming.flow import StreamingVocoder

            self._decoder = StreamingVocoder(self.model)
            self.streaming = "frames"
        except (UnsupportedError, AttributeError, TypeError) as exc:  # e.g. a traced decoder graph
            log.info("%s streams sentence by sentence: its decoder cannot run chunk by chunk (%s)", name, exc)

    def _engine(self) -> Any:
        """The context every model call runs in (INT8 models pin their quantized engine)."""
        return contextlib.nullcontext()

    def _stream_ids(self, ids, speaker, scales, seed, schedule) -> Iterator[tuple[Any, bool]]:
        if self._decoder is None:
            yield from super()._stream_ids(ids, speaker, scales, seed, schedule)
            return
        import torch

        noise_scale, length_scale, noise_w = scales
        dev = self.device
        with torch.inference_mode(), self._engine():
            lat = self.model.latent(torch.tensor([ids], device=dev), torch.tensor([len(ids)], device=dev),
                                    torch.tensor([speaker], dtype=torch.long, device=dev), noise_scale=noise_scale,
                                    length_scale=length_scale, noise_w=noise_w,
                                    generator=torch.Generator().manual_seed(int(seed)), flow=False)
            g = lat.extra["g"]  # [1, gin, 1] or None
            frames = lat.z_p.shape[-1]
            least = self.stream_flow_min_frames
            vocoder = self._decoder
            if vocoder.flow is not None and least is not None and frames >= least:
                z = lat.z_p  # [1, C, T] prior sample: the flow streams too
            else:
                z = self.model.flow_reverse(lat.z_p, lat.y_mask, g) * lat.y_mask  # as VITS.latent
                vocoder = vocoder.decoder
            states = vocoder.init_states(z)
        sizes = schedule.plan(frames, vocoder.lag_frames)
        pos = 0
        for k, n in enumerate(sizes):
            last = k == len(sizes) - 1
            with torch.inference_mode(), self._engine():
                audio, states = vocoder.step(z[:, :, pos : pos + n], states, int(last), g)
            pos += n
            yield audio[0, 0].float().cpu().numpy(), last

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
        d["threads"] = torch.get_num_threads()  # process-wide: what this model runs on now
        return d
