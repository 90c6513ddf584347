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

    def __init__(self, model: Any, name: str, frontend: Any, *, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(name, model.config, frontend, **kwargs)
        import torch

        self.device = torch.device(resolve_device(device))
        self.model = model.to(self.device).eval()
        self._decoder: Any = None
        try:
            from vitsq.streaming.decoder import StreamingDecoder

            self._decoder = StreamingDecoder(self.model)
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
                                    generator=torch.Generator().manual_seed(int(seed)))
            z, g = lat.z, lat.extra["g"]  # [1, C, T], [1, gin, 1] or None
            states = self._decoder.init_states(z)
        sizes = schedule.plan(z.shape[-1], self._decoder.lag_frames)
        pos = 0
        for k, n in enumerate(sizes):
            last = k == len(sizes) - 1
            with torch.inference_mode(), self._engine():
                audio, states = self._decoder.step(z[:, :, pos : pos + n], states, int(last), g)
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
