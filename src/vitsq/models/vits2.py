"""Vosk TTS MB-iSTFT-VITS2 for inference, sharing the VITS stages of :mod:`vitsq.models.vits`.

Differences from Piper's VITS (parameter names follow the vosk-tts training code, so a
``G_*.pth`` state dict maps one-to-one after weight-norm folding):

* text encoder: the speaker embedding, projected to the hidden size, is added before layer
  ``cond_layer_idx`` (``enc_p.encoder.spk_emb_linear``);
* flow: ``pre_conv2`` transformer coupling -- a 1-layer relative-position transformer with a
  residual connection between the ``pre`` projection and the WaveNet;
* duration predictor: stochastic, 256 filter channels, speaker-conditioned;
* decoder: HiFi-GAN upsampling to sub-band frames, ``subband_conv_post`` to log-magnitude and
  phase of each sub-band, inverse STFT (n_fft 16, hop 4) and PQMF synthesis of the sub-bands.
  The iSTFT is an overlap-add transposed convolution with a precomputed windowed inverse-DFT
  basis, and the PQMF filters are precomputed; all are non-persistent buffers (not in the
  state dict) and plain tensor ops, which export to ONNX and stay float under quantization.

The training-only posterior encoder (``enc_q``) is not built.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitsq.models.config import VitsConfig
from vitsq.models.modules import (
    WN,
    DurationPredictor,
    HiFiGANUpsampler,
    ResidualCouplingBlock,
    StochasticDurationPredictor,
    TextEncoder,
    apply_mask,
    upsample_mask,
)
from vitsq.models.vits import VITS

SDP_FILTER_CHANNELS = 256  # hard-coded in upstream's SynthesizerTrn
PQMF_TAPS = 62
PQMF_CUTOFF = 0.15
PQMF_BETA = 9.0


# --------------------------------------------------------------------------- signal processing
class InverseSTFT(nn.Module):
    """``torch.istft`` (Hann window, center=True, onesided) as an overlap-add transposed conv.

    magnitude, phase: [N, n_fft/2+1, frames] -> signal [N, (frames-1) * hop].
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop
        n_bins = n_fft // 2 + 1
        n = np.arange(n_fft)
        k = np.arange(n_bins)[:, None]
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann, as scipy get_window
        # irfft: x[n] = 1/N * sum_k c_k (Re X_k cos(2 pi k n / N) - Im X_k sin(2 pi k n / N)),
        # c_0 = c_{N/2} = 1, else 2 (the conjugate half); the sines vanish for k = 0 and N/2, so
        # imaginary parts there are ignored, as irfft does.
        c = np.full((n_bins, 1), 2.0)
        c[0] = 1.0
        if n_fft % 2 == 0:
            c[-1] = 1.0
        angle = 2 * np.pi * k * n / n_fft  # [F, n_fft]
        basis = np.concatenate([c * np.cos(angle), -c * np.sin(angle)], 0) * window / n_fft  # [2F, n_fft]
        self.register_buffer("basis", torch.from_numpy(basis).float().unsqueeze(1), persistent=False)  # [2F, 1, n_fft]
        self.register_buffer("window_sq", torch.from_numpy(window**2).float().view(1, 1, n_fft), persistent=False)

    def forward(self, magnitude: torch.Tensor, phase: torch.Tensor,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``frame_mask`` [N, 1, frames] (optional): frames after each signal's end, as in a padded
        batch. They are left out of the overlap-add and of its normalization, so the valid
        samples equal those of the signal's own iSTFT; samples after its end are zero."""
        spec = torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], 1)  # [N, 2F, frames]
        frames = spec.shape[-1]
        if frame_mask is None:
            weights = torch.ones_like(spec[:1, :1, :])  # [1, 1, frames]
        else:
            spec = spec * frame_mask
            weights = frame_mask  # [N, 1, frames]
        y = F.conv_transpose1d(spec, self.basis, stride=self.hop)  # [N, 1, (frames-1)*hop + n_fft]
        # window-sum-square normalization (NOLA holds for Hann with hop <= n_fft/2)
        envelope = F.conv_transpose1d(weights, self.window_sq, stride=self.hop)
        half = self.n_fft // 2
        length = (frames - 1) * self.hop
        envelope = envelope[:, :, half : half + length]
        if frame_mask is not None:
            # No frame covers a sample after a masked signal's last frame window: y and the
            # envelope are both 0 there. The floor turns 0/0 into 0; it is far below any envelope
            # value a covered sample has (>= the smallest nonzero Hann tap squared, ~1e-3).
            envelope = envelope.clamp_min(1e-8)
        y = y[:, :, half : half + length] / envelope
        return y[:, 0]  # [N, length]


def pqmf_prototype(taps: int = PQMF_TAPS, cutoff: float = PQMF_CUTOFF, beta: float = PQMF_BETA) -> np.ndarray:
    """Kaiser-windowed sinc low-pass prototype of the pseudo-QMF bank, ``taps + 1`` coefficients."""
    t = np.arange(taps + 1) - 0.5 * taps
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.sin(np.pi * cutoff * t) / (np.pi * t)
    h[taps // 2] = cutoff  # the sinc's limit at t = 0
    return h * np.kaiser(taps + 1, beta)


class PQMFSynthesis(nn.Module):
    """Pseudo-QMF synthesis: sub-bands [B, S, L] -> signal [B, 1, S * L]."""

    def __init__(self, subbands: int, taps: int = PQMF_TAPS, cutoff: float = PQMF_CUTOFF,
                 beta: float = PQMF_BETA) -> None:
        super().__init__()
        self.subbands = subbands
        self.pad = taps // 2
        proto = pqmf_prototype(taps, cutoff, beta)
        t = np.arange(taps + 1) - (taps - 1) / 2
        filt = np.stack([
            2 * proto * np.cos((2 * k + 1) * np.pi / (2 * subbands) * t - (-1) ** k * np.pi / 4)
            for k in range(subbands)
        ])  # [S, taps+1]
        self.register_buffer("filters", torch.from_numpy(filt).float().unsqueeze(0), persistent=False)  # [1, S, taps+1]
        # zero-stuffing upsampler; the gain S restores the power lost by the analysis downsampling
        updown = torch.zeros(subbands, subbands, subbands)
        for k in range(subbands):
            updown[k, k, 0] = float(subbands)
        self.register_buffer("updown", updown, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv_transpose1d(x, self.updown, stride=self.subbands)  # [B, S, S*L]
        return F.conv1d(F.pad(x, [self.pad, self.pad]), self.filters)  # [B, 1, S*L]


class MultiBandISTFTGenerator(HiFiGANUpsampler):
    """Latent frames [B, C, T] -> audio [B, 1, T * hop_length] via sub-band iSTFT and PQMF."""

    def __init__(self, config: VitsConfig) -> None:
        c = config
        # upstream's multi-band generator takes gin_channels but has no conditioning layer
        super().__init__(c.inter_channels, c.resblock, c.resblock_kernel_sizes, c.resblock_dilation_sizes,
                         c.upsample_rates, c.upsample_initial_channel, c.upsample_kernel_sizes, gin_channels=0)
        self.subbands = c.subbands
        self.n_bins = c.istft_n_fft // 2 + 1
        self.subband_conv_post = nn.Conv1d(self.out_channels, c.subbands * (c.istft_n_fft + 2), 7, 1,
                                           padding=3, bias=False)
        self.istft = InverseSTFT(c.istft_n_fft, c.istft_hop)
        self.pqmf = PQMFSynthesis(c.subbands)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns audio [B, 1, T * hop_length] and the sub-band signals [B, S, T * hop_length / S].

        ``mask`` [B, 1, T] (optional): padded frames of a batch. Every conv input, the iSTFT
        frames and the sub-band signals are re-masked, so each item equals its unbatched run
        and its padding is zero.
        """
        x, mask = self.upsample(x, mask=mask)  # [B, ch, T * prod(upsample_rates)], leaky-relu'd
        return self.tail(x, mask)

    def tail(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Upsampled features [B, ch, T'] (+ mask [B, 1, T']) -> (audio, sub-band signals), as
        :meth:`forward` returns them."""
        x = F.pad(x, [1, 0], mode="reflect")  # one more frame so the iSTFT output fills T * hop
        frame_mask = None if mask is None else F.pad(mask, [1, 0], value=1.0)  # [B, 1, T']
        x = self.subband_conv_post(x)  # [B, S * (n_fft + 2), T']
        b, _, t = x.shape
        x = x.reshape(b, self.subbands, -1, t)  # [B, S, n_fft + 2, T']
        magnitude = torch.exp(x[:, :, : self.n_bins])  # [B, S, F, T']
        phase = math.pi * torch.sin(x[:, :, self.n_bins :])
        if frame_mask is not None:  # one mask per sub-band signal: [B * S, 1, T']
            frame_mask = frame_mask.unsqueeze(1).expand(b, self.subbands, 1, t).reshape(b * self.subbands, 1, t)
        y_mb = self.istft(magnitude.reshape(b * self.subbands, self.n_bins, t),
                          phase.reshape(b * self.subbands, self.n_bins, t), frame_mask)  # [B*S, L]
        y_mb = y_mb.reshape(b, self.subbands, -1)  # [B, S, L]
        mask = upsample_mask(mask, self.istft.hop)  # [B, 1, L]
        y_mb = apply_mask(y_mb, mask)  # the istft leaves the tail of the last frames after the end
        return apply_mask(self.pqmf(y_mb), upsample_mask(mask, self.subbands)), y_mb


# --------------------------------------------------------------------------- model
class VITS2(VITS):
    """Inference-only Vosk MB-iSTFT-VITS2; same stages and ``infer`` signature as :class:`VITS`.

    ``infer(...).extra["audio_subbands"]`` holds the PQMF sub-band signals [B, S, samples / S].
    """

    def __init__(self, config: VitsConfig) -> None:
        # VITS.__init__ builds Piper's modules; only the nn.Module part and the stages are shared
        nn.Module.__init__(self)
        if config.arch != "vits2" or config.decoder != "mb_istft" or config.flow_type != "pre_conv2":
            raise ValueError(
                "VITS2 implements arch='vits2' with decoder='mb_istft' and flow_type='pre_conv2'; got "
                f"arch={config.arch!r}, decoder={config.decoder!r}, flow_type={config.flow_type!r}"
            )
        self.config = c = config
        enc_gin = c.gin_channels if c.use_spk_conditioned_encoder else 0
        self.enc_p = TextEncoder(c.n_vocab, c.inter_channels, c.hidden_channels, c.filter_channels,
                                 c.n_heads, c.n_layers, c.kernel_size, gin_channels=enc_gin,
                                 cond_layer_idx=c.cond_layer_idx, banded=True)  # the same sums, O(T*w)
        self.dec = MultiBandISTFTGenerator(c)
        # transformer_flow_type "pre_conv2": coupling layers with a residual pre-transformer
        self.flow = ResidualCouplingBlock(c.inter_channels, c.hidden_channels, c.flow_kernel_size, 1,
                                          c.flow_wn_layers, c.n_flows, gin_channels=c.gin_channels,
                                          pre_transformer=True)
        if c.use_sdp:
            self.dp = StochasticDurationPredictor(c.hidden_channels, 3, 4, gin_channels=c.gin_channels,
                                                  filter_channels=SDP_FILTER_CHANNELS)
        else:
            self.dp = DurationPredictor(c.hidden_channels, SDP_FILTER_CHANNELS, 3, gin_channels=c.gin_channels)
        if c.n_speakers > 1:
            self.emb_g = nn.Embedding(c.n_speakers, c.gin_channels)

    def encode(self, x: torch.Tensor, x_lengths: torch.Tensor, g: torch.Tensor | None):
        """ids [B, T_x] -> hidden [B, H, T_x], m_p, logs_p [B, C, T_x], x_mask [B, 1, T_x]."""
        return self.enc_p(x, x_lengths, g)

    def vocode(self, z: torch.Tensor, g: torch.Tensor | None,
               y_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Latent frames [B, C, T_y] -> audio [B, 1, T_y * hop] and ``{"audio_subbands": [B, S, L]}``.

        ``y_mask`` [B, 1, T_y]: see :meth:`VITS.vocode`.
        """
        audio, subbands = self.dec(z, g, y_mask)
        return audio, {"audio_subbands": subbands}


# --------------------------------------------------------------------------- parameter counts
def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def upstream_extra_parameters(model: VITS2, spec_channels: int = 80) -> dict[str, int]:
    """Parameters an upstream ``G_*.pth`` of this config holds that the inference model has not.

    ``spec_channels`` is the posterior encoder's input (80 mel channels for the Vosk models).
    Keys: ``weight_norm_g`` (one magnitude per output channel of every weight-normed conv:
    flow WaveNets and the decoder), ``dp.post`` (duration posterior), ``dp.flows.1`` (skipped
    spline flow), ``enc_q`` (posterior encoder, with its weight-norm magnitudes).
    """
    from vitsq.models.modules import DDSConv, ConvFlow, ElementwiseAffine

    c = model.config
    wn_g = 0
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv1d, nn.ConvTranspose1d)) and (name.startswith("dec.") or ".enc." in name):
            wn_g += mod.weight.shape[0]
    fc = SDP_FILTER_CHANNELS
    dp_post = 0
    if c.use_sdp:
        dp_post = _numel(nn.Conv1d(1, fc, 1)) + _numel(nn.Conv1d(fc, fc, 1)) + _numel(DDSConv(fc, 3, 3))
        dp_post += _numel(ElementwiseAffine(2)) + 4 * _numel(ConvFlow(2, fc, 3, 3))
    dp_flow1 = _numel(ConvFlow(2, fc, 3, 3)) if c.use_sdp else 0
    h, gin = c.hidden_channels, c.gin_channels
    enc_q_wn = WN(h, 5, 1, 16, gin)
    enc_q = (_numel(nn.Conv1d(spec_channels, h, 1)) + _numel(enc_q_wn) + _numel(nn.Conv1d(h, 2 * c.inter_channels, 1))
             + sum(m.weight.shape[0] for m in enc_q_wn.modules() if isinstance(m, nn.Conv1d)))
    return {"weight_norm_g": wn_g, "dp.post": dp_post, "dp.flows.1": dp_flow1, "enc_q": enc_q}


def parameter_report(model: VITS2) -> dict[str, object]:
    """Inference parameters by submodule, and the totals upstream reports for the same config.

    ``upstream_without_enc_q`` is what an upstream inference count gives (weight norm unfolded,
    the duration posterior and skipped flow included: about 33.2 M for the Vosk Russian
    model); ``upstream_total`` adds the posterior encoder (41.97 M).
    """
    from vitsq.models.vits import count_parameters

    counts = count_parameters(model)
    extra = upstream_extra_parameters(model)
    without_q = counts["total"] + extra["weight_norm_g"] + extra["dp.post"] + extra["dp.flows.1"]
    return {
        "by_submodule": {k: v for k, v in counts.items() if k != "total"},
        "inference_total": counts["total"],
        "upstream_extra": extra,
        "upstream_without_enc_q": without_q,
        "upstream_total": without_q + extra["enc_q"],
    }
