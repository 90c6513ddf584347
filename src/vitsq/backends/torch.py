"""The PyTorch backend: runs a VITS/VITS2 module (FP32, or INT8 from :mod:`vitsq.quantize`)."""

from __future__ import annotations

from typing import Any

from vitsq.synth import BaseSynthesizer, pad_batch, resolve_device


class TorchSynthesizer(BaseSynthesizer):
    """Runs a PyTorch VITS/VITS2 module (FP32, or quantized by vitsq.quantize)."""

    backend = "torch"

    def __init__(self, model: Any, name: str, frontend: Any, *, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(name, model.config, frontend, **kwargs)
        import torch

        self.device = torch.device(resolve_device(device))
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
        d["threads"] = torch.get_num_threads()  # process-wide: what this model runs on now
        return d
