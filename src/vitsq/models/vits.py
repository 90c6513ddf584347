"""VITS (Piper voices) for inference, split into stages that export and quantize cleanly.

Stages: ``encode`` (text encoder + speaker embedding) -> ``predict_durations`` -> ``expand``
(alignment from integer durations) -> ``decode`` (flow in reverse + waveform generator).
``infer`` chains them. Noise comes from caller-supplied generators so that two models (FP32
and INT8) or two runs see exactly the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitsq.models.config import VitsConfig
from vitsq.models.modules import (
    DurationPredictor,
    Generator,
    ResidualCouplingBlock,
    StochasticDurationPredictor,
    TextEncoder,
    generate_path,
    sequence_mask,
)

NOISE_CHUNK = 64  # frames per noise draw: keeps a prefix of the noise stable when lengths differ

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


@dataclass
class InferOutput:
    audio: torch.Tensor | None  # [B, 1, S] padded (None from ``latent``)
    audio_lengths: torch.Tensor  # [B] valid samples per item
    y_mask: torch.Tensor  # [B, 1, T_y]
    z: torch.Tensor  # [B, C, T_y] flow output (decoder input)
    z_p: torch.Tensor  # [B, C, T_y] prior sample
    m_p: torch.Tensor  # [B, C, T_x] prior mean (token level)
    logs_p: torch.Tensor  # [B, C, T_x]
    w_ceil: torch.Tensor  # [B, 1, T_x] integer durations in frames
    attn: torch.Tensor  # [B, 1, T_y, T_x]
    extra: dict


def _per_item(generator: GeneratorArg, batch: int) -> list[torch.Generator | None]:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * batch
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch}")
    return gens


def sample_token_noise(lengths: torch.Tensor, t_max: int, channels: int, generator: GeneratorArg,
                       dtype=torch.float32, device=None) -> torch.Tensor:
    """Standard normal noise [B, channels, t_max], drawn per item over its own length, zero-padded.

    Drawing per item makes item b of a batch get the same noise as an unbatched call with the
    same generator seed.
    """
    b = lengths.shape[0]
    out = torch.zeros(b, channels, t_max, dtype=dtype, device=device)
    for i, gen in enumerate(_per_item(generator, b)):
        n = int(lengths[i])
        out[i, :, :n] = torch.randn(channels, n, generator=gen, dtype=dtype).to(device)
    return out


def sample_frame_noise(lengths: torch.Tensor, t_max: int, channels: int, generator: GeneratorArg,
                       dtype=torch.float32, device=None) -> torch.Tensor:
    """Like :func:`sample_token_noise`, but drawn in fixed chunks of frames, time-major.

    Two models whose durations differ slightly (FP32 vs INT8) then still share the noise of
    every frame they both have, instead of getting unrelated noise.
    """
    b = lengths.shape[0]
    out = torch.zeros(b, channels, t_max, dtype=dtype, device=device)
    for i, gen in enumerate(_per_item(generator, b)):
        n = int(lengths[i])
        chunks = -(-n // NOISE_CHUNK)
        noise = torch.cat([torch.randn(NOISE_CHUNK, channels, generator=gen, dtype=dtype) for _ in range(chunks)]
                          or [torch.zeros(0, channels, dtype=dtype)])
        out[i, :, :n] = noise[:n].t().to(device)
    return out


def vocode_padded(model: nn.Module, z: torch.Tensor, g: torch.Tensor | None, y_mask: torch.Tensor,
                  y_lengths: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``model.vocode`` of a padded batch whose items each equal their unbatched run.

    z [B, C, T_y] (zero after each item's end), y_mask [B, 1, T_y], y_lengths [B]. Unpadded
    batches run as one. Padded ones run item by item on the CPU -- exact by construction and
    cheaper there than one batch, which computes every padding frame (decoder, 1 thread, 4 items
    of 200/150/100/50 frames: joe 0.52 s item by item, 0.94 s unmasked batch, 1.5 s masked
    batch; Vosk config 0.63 / 0.97 / 0.98 s) -- and as one masked batch elsewhere, where
    batching pays. Eager only (the per-item split reads the lengths); traced graphs call
    ``vocode(z, g, y_mask)``.
    Returns audio [B, 1, T_y * hop] (zero after each item's end) and the extras, padded alike.
    """
    b, t = z.shape[0], z.shape[-1]
    if b == 1 or bool((y_lengths == t).all()):
        return model.vocode(z, g)
    if z.device.type != "cpu":
        return model.vocode(z, g, y_mask)
    outs = [model.vocode(z[i : i + 1, :, :n], None if g is None else g[i : i + 1])
            for i, n in enumerate(y_lengths.tolist())]

    def stack(parts: list[torch.Tensor], n_frames: list[int]) -> torch.Tensor:
        per_frame = parts[0].shape[-1] // n_frames[0]  # samples (or sub-band samples) per frame
        return torch.cat([F.pad(p, [0, t * per_frame - p.shape[-1]]) for p in parts])

    lengths = y_lengths.tolist()
    audio = stack([a for a, _ in outs], lengths)
    extra = {k: stack([e[k] for _, e in outs], lengths) for k in outs[0][1]}
    return audio, extra


class VITS(nn.Module):
    """Inference-only VITS as trained by Piper (HiFi-GAN decoder, residual coupling flow)."""

    def __init__(self, config: VitsConfig) -> None:
        super().__init__()
        if config.arch != "vits":
            raise ValueError(f"VITS expects arch='vits', got {config.arch!r} (use VITS2 for Vosk models)")
        self.config = config
        c = config
        self.enc_p = TextEncoder(c.n_vocab, c.inter_channels, c.hidden_channels, c.filter_channels,
                                 c.n_heads, c.n_layers, c.kernel_size)
        self.dec = Generator(c.inter_channels, c.resblock, c.resblock_kernel_sizes, c.resblock_dilation_sizes,
                             c.upsample_rates, c.upsample_initial_channel, c.upsample_kernel_sizes,
                             gin_channels=c.gin_channels)
        self.flow = ResidualCouplingBlock(c.inter_channels, c.hidden_channels, c.flow_kernel_size, 1,
                                          c.flow_wn_layers, c.n_flows, gin_channels=c.gin_channels)
        if c.use_sdp:
            self.dp = StochasticDurationPredictor(c.hidden_channels, 3, 4, gin_channels=c.gin_channels)
        else:
            self.dp = DurationPredictor(c.hidden_channels, 256, 3, gin_channels=c.gin_channels)
        if c.n_speakers > 1:
            self.emb_g = nn.Embedding(c.n_speakers, c.gin_channels)

    # ------------------------------------------------------------------ stages
    def speaker_embedding(self, sid: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """[B] speaker ids -> [B, gin, 1] (None for single-speaker models)."""
        if self.config.n_speakers <= 1:
            return None
        if sid is None:
            sid = torch.zeros(batch, dtype=torch.long, device=self.emb_g.weight.device)
        return self.emb_g(sid).unsqueeze(-1)

    def encode(self, x: torch.Tensor, x_lengths: torch.Tensor, g: torch.Tensor | None):
        """ids [B, T_x] -> hidden [B, H, T_x], m_p, logs_p [B, C, T_x], x_mask [B, 1, T_x]."""
        return self.enc_p(x, x_lengths)

    def predict_durations(self, h: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None,
                          dp_noise: torch.Tensor, length_scale: float | torch.Tensor) -> torch.Tensor:
        """Integer frame counts per token [B, 1, T_x]. ``dp_noise`` [B, 2, T_x] is pre-scaled."""
        logw = self.duration_logw(h, x_mask, g, dp_noise)  # [B, 1, T_x]
        w = torch.exp(logw) * x_mask * length_scale
        return torch.ceil(w)

    def duration_logw(self, h: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None,
                      dp_noise: torch.Tensor) -> torch.Tensor:
        """Log-durations [B, 1, T_x] from the duration predictor (a stage of its own for PT2E)."""
        return self.dp(h, x_mask, noise=dp_noise, g=g)

    @staticmethod
    def expand(m_p: torch.Tensor, logs_p: torch.Tensor, x_mask: torch.Tensor, w_ceil: torch.Tensor):
        """Repeat token statistics by their durations: returns m_p, logs_p [B, C, T_y], y_mask, attn."""
        y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()  # [B]
        y_mask = sequence_mask(y_lengths).unsqueeze(1).to(x_mask.dtype)  # [B, 1, T_y]
        attn_mask = x_mask.unsqueeze(2) * y_mask.unsqueeze(-1)  # [B, 1, T_y, T_x]
        attn = generate_path(w_ceil, attn_mask)
        a = attn.squeeze(1)  # [B, T_y, T_x]
        m_y = torch.matmul(a, m_p.transpose(1, 2)).transpose(1, 2)
        logs_y = torch.matmul(a, logs_p.transpose(1, 2)).transpose(1, 2)
        return m_y, logs_y, y_mask, attn, y_lengths

    def flow_reverse(self, z_p: torch.Tensor, y_mask: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        return self.flow(z_p, y_mask, g=g)

    def vocode(self, z: torch.Tensor, g: torch.Tensor | None,
               y_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Latent frames [B, C, T_y] -> audio [B, 1, T_y * hop] (+ extras, e.g. sub-bands).

        ``y_mask`` [B, 1, T_y]: the valid frames of a padded batch. With it, every decoder conv
        sees zeros after each item's end, as it does when the item runs alone, so batch items
        equal unbatched runs; the audio after each item's end is zero. None: no masking (one
        item, or frames that are all valid).
        """
        return self.dec(z, g=g, mask=y_mask), {}

    # ------------------------------------------------------------------ full pass
    def latent(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        sid: torch.Tensor | None = None,
        noise_scale: float = 0.667,
        length_scale: float = 1.0,
        noise_w: float = 0.8,
        generator: GeneratorArg = None,
        flow: bool = True,
    ) -> InferOutput:
        """Everything before the waveform decoder: :meth:`infer` without ``audio`` (None there).

        ``extra["g"]`` holds the speaker conditioning the decoder takes; ``z`` is masked. The
        streaming decoder (:mod:`vitsq.streaming`) starts from here. ``flow=False`` stops at the
        prior sample ``z_p`` (``z`` is None then): a streaming flow takes it from there.
        """
        b, t_x = x.shape
        g = self.speaker_embedding(sid, b)
        h, m_p, logs_p, x_mask = self.encode(x, x_lengths, g)
        dp_noise = sample_token_noise(x_lengths, t_x, 2, generator, m_p.dtype, m_p.device) * noise_w
        w_ceil = self.predict_durations(h, x_mask, g, dp_noise, length_scale)
        m_y, logs_y, y_mask, attn, y_lengths = self.expand(m_p, logs_p, x_mask, w_ceil)
        eps = sample_frame_noise(y_lengths, m_y.shape[2], m_y.shape[1], generator, m_y.dtype, m_y.device)
        z_p = m_y + eps * torch.exp(logs_y) * noise_scale
        z = self.flow_reverse(z_p, y_mask, g) * y_mask if flow else None
        return InferOutput(audio=None, audio_lengths=y_lengths, y_mask=y_mask, z=z, z_p=z_p, m_p=m_p,
                           logs_p=logs_p, w_ceil=w_ceil, attn=attn, extra={"g": g})

    def infer(
        self,
        x: torch.Tensor,
        x_lengths: torch.Tensor,
        sid: torch.Tensor | None = None,
        noise_scale: float = 0.667,
        length_scale: float = 1.0,
        noise_w: float = 0.8,
        generator: GeneratorArg = None,
    ) -> InferOutput:
        """ids [B, T_x] with lengths [B] -> audio. ``generator``: one, one per item, or None.

        ``z`` in the result is the flow output masked to each item's frames."""
        lat = self.latent(x, x_lengths, sid, noise_scale, length_scale, noise_w, generator)
        y_lengths, g = lat.audio_lengths, lat.extra["g"]
        audio, extra = vocode_padded(self, lat.z, g, lat.y_mask, y_lengths)
        hop = audio.shape[-1] // lat.z.shape[-1]
        lat.audio, lat.audio_lengths, lat.extra = audio, y_lengths * hop, extra
        return lat


def count_parameters(model: nn.Module, depth: int = 1) -> dict[str, int]:
    """Parameter count per submodule prefix (``depth`` name components), plus ``total``."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:depth])
        counts[key] = counts.get(key, 0) + p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
