"""Building blocks shared by VITS (Piper) and VITS2 (Vosk), inference only.

Parameter names follow the upstream training code (``enc_p.encoder.attn_layers.0.conv_q`` ...)
so that checkpoints and ONNX initializers map one-to-one onto our modules. Weight norm is
always folded before loading: every conv here is a plain ``nn.Conv1d``/``nn.ConvTranspose1d``,
which is what the quantizers look for.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.1


# --------------------------------------------------------------------------- helpers
def sequence_mask(lengths: torch.Tensor, max_length: int | torch.Tensor | None = None) -> torch.Tensor:
    """``[B] -> [B, T]`` boolean mask, True inside each sequence."""
    if max_length is None:
        max_length = lengths.max()
    steps = torch.arange(max_length, dtype=lengths.dtype, device=lengths.device)  # [T]
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def generate_path(durations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard monotonic alignment from integer durations.

    durations: [B, 1, T_x] (already ceiled, zero on padding); mask: [B, 1, T_y, T_x].
    Returns [B, 1, T_y, T_x] with a one where output frame y belongs to token x.
    """
    b, _, t_y, t_x = mask.shape
    ends = torch.cumsum(durations, dim=-1).reshape(b * t_x)  # [B*T_x] end frame of each token
    path = sequence_mask(ends, t_y).to(mask.dtype).reshape(b, t_x, t_y)  # frames < end
    # subtract the previous token's "frames < end" to keep only this token's frames
    path = path - F.pad(path, [0, 0, 1, 0, 0, 0])[:, :-1]
    return path.unsqueeze(1).transpose(2, 3) * mask


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class LayerNorm(nn.Module):
    """Channel LayerNorm over ``[B, C, T]`` with upstream's ``gamma``/``beta`` names."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        x = x.transpose(1, -1)
        x = F.layer_norm(x, (self.channels,), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


# --------------------------------------------------------------------------- attention
class MultiHeadAttention(nn.Module):
    """Self-attention with windowed relative positions (keys and values), heads share embeddings.

    ``banded``: compute the relative terms on the 2w+1 offsets of the window (logits q·e_k of
    each offset, then placed on the band of the [T, T] scores; weights read off the band, times
    e_v) instead of upstream's [T, 2T-1] relative matrices, which are zero beyond the window.
    The same sums, from O(T * w) instead of O(T^2) multiply-adds; worth it where T is long (a
    flow's attention runs over frames). Off by default: upstream's formulation.
    """

    def __init__(self, channels: int, out_channels: int, n_heads: int, window_size: int = 4,
                 banded: bool = False) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.banded = banded
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        std = self.k_channels**-0.5
        self.emb_rel_k = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)
        self.emb_rel_v = nn.Parameter(torch.randn(1, 2 * window_size + 1, self.k_channels) * std)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        # x: [B, C, T]; attn_mask: [B, 1, T, T]
        q, k, v = self.conv_q(x), self.conv_k(x), self.conv_v(x)
        b, c, t = k.shape
        q = q.view(b, self.n_heads, self.k_channels, t).transpose(2, 3)  # [B, H, T, d]
        k = k.view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        v = v.view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        q = q / math.sqrt(self.k_channels)
        scores = torch.matmul(q, k.transpose(-2, -1))  # [B, H, T, T]
        if self.banded:
            band = torch.matmul(q, self.emb_rel_k.unsqueeze(0).transpose(-2, -1))  # [B, H, T, 2w+1]
            scores = scores + self._band_to_abs(band)
        else:
            rel_k = self._relative_embeddings(self.emb_rel_k, t)  # [1, 2T-1, d]
            rel_logits = torch.matmul(q, rel_k.unsqueeze(0).transpose(-2, -1))  # [B, H, T, 2T-1]
            scores = scores + self._rel_to_abs(rel_logits)
        scores = scores.masked_fill(attn_mask == 0, -1e4)
        p_attn = torch.softmax(scores, dim=-1)  # [B, H, T, T]
        out = torch.matmul(p_attn, v)
        if self.banded:
            out = out + torch.matmul(self._abs_to_band(p_attn), self.emb_rel_v.unsqueeze(0))  # [B, H, T, d]
        else:
            rel_v = self._relative_embeddings(self.emb_rel_v, t)
            out = out + torch.matmul(self._abs_to_rel(p_attn), rel_v.unsqueeze(0))
        out = out.transpose(2, 3).contiguous().view(b, c, t)
        return self.conv_o(out)

    def _relative_embeddings(self, emb: torch.Tensor, length: int) -> torch.Tensor:
        """Select the 2*length-1 relative offsets around zero (zeros beyond the window).

        Always pads by ``length - 1`` on both sides and slices from the fixed offset ``window``:
        the same values as padding only when ``length > window + 1``, but with no ``max`` or
        branch on the length, so a dynamic length exports (ExecuTorch has no ``sym_max``).
        """
        w = self.window_size
        emb = F.pad(emb, [0, 0, length - 1, length - 1, 0, 0])  # [1, 2w + 2*length - 1, d]
        return emb[:, w : w + 2 * length - 1]

    @staticmethod
    def _rel_to_abs(x: torch.Tensor) -> torch.Tensor:
        """[B, H, T, 2T-1] relative logits -> [B, H, T, T] absolute, by the pad-and-reshape trick."""
        b, h, t, _ = x.shape
        x = F.pad(x, [0, 1])  # [B, H, T, 2T]
        x = x.reshape(b, h, t * 2 * t)
        # Read the flat buffer as rows of width 2T-1 and keep the first T of them. (Upstream pads
        # T-1 more zeros and views T+1 rows; those extra elements are never kept. Slicing instead
        # keeps the element count a plain product, so torch.export needs no divisibility guard.)
        x = x[:, :, : t * (2 * t - 1)]
        return x.reshape(b, h, t, 2 * t - 1)[:, :, :, t - 1 :]

    def _band_to_abs(self, band: torch.Tensor) -> torch.Tensor:
        """[B, H, T, 2w+1] logits of the offsets -w..w -> [B, H, T, T], zero off the band.

        Row i of the result is row i of the zero-padded band shifted right by i - w: read the
        flat [T+1, 2w+1+T] buffer from element w in rows one shorter. The zero columns catch
        the offsets that fall before the start or past the end, the extra row the last read.
        """
        b, h, t, width = band.shape
        w = self.window_size
        x = F.pad(band, [0, t, 0, 1]).reshape(b, h, (t + 1) * (width + t))
        x = x[:, :, w : w + t * (width + t - 1)]
        return x.reshape(b, h, t, width + t - 1)[:, :, :, :t]

    def _abs_to_band(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, T, T] weights -> [B, H, T, 2w+1], the weights of offsets -w..w (zero where
        the offset falls outside the sentence): the inverse reading of :meth:`_band_to_abs`."""
        b, h, t, _ = x.shape
        w = self.window_size
        r = t + 2 * w  # row of the padded buffer: w zeros, the T weights, w zeros
        x = F.pad(x, [w, w, 0, 1]).reshape(b, h, (t + 1) * r)[:, :, : t * (r + 1)]
        return x.reshape(b, h, t, r + 1)[:, :, :, : 2 * w + 1]

    @staticmethod
    def _abs_to_rel(x: torch.Tensor) -> torch.Tensor:
        """[B, H, T, T] absolute weights -> [B, H, T, 2T-1] relative."""
        b, h, t, _ = x.shape
        x = F.pad(x, [0, t - 1])
        x = x.reshape(b, h, t * t + t * (t - 1))
        x = F.pad(x, [t, 0])
        return x.reshape(b, h, t, 2 * t)[:, :, :, 1:]


class FFN(nn.Module):
    """Two convolutions with ReLU, 'same' padding, masked."""

    def __init__(self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, out_channels, kernel_size)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return F.pad(x, [(k - 1) // 2, k // 2]) if k > 1 else x

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        x = torch.relu(self.conv_1(self._pad(x * x_mask)))
        x = self.conv_2(self._pad(x * x_mask))
        return x * x_mask


class Encoder(nn.Module):
    """Transformer encoder (post-norm); optionally adds a speaker projection at one layer (VITS2)."""

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        window_size: int = 4,
        gin_channels: int = 0,
        cond_layer_idx: int = 2,
        banded: bool = False,
    ) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.cond_layer_idx = cond_layer_idx
        self.attn_layers = nn.ModuleList()
        self.norm_layers_1 = nn.ModuleList()
        self.ffn_layers = nn.ModuleList()
        self.norm_layers_2 = nn.ModuleList()
        if gin_channels > 0:
            self.spk_emb_linear = nn.Linear(gin_channels, hidden_channels)
        for _ in range(n_layers):
            self.attn_layers.append(MultiHeadAttention(hidden_channels, hidden_channels, n_heads, window_size,
                                                       banded=banded))
            self.norm_layers_1.append(LayerNorm(hidden_channels))
            self.ffn_layers.append(FFN(hidden_channels, hidden_channels, filter_channels, kernel_size))
            self.norm_layers_2.append(LayerNorm(hidden_channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, C, T]; x_mask: [B, 1, T]; g: [B, gin, 1] or None
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [B, 1, T, T]
        x = x * x_mask
        for i in range(self.n_layers):
            if i == self.cond_layer_idx and g is not None and hasattr(self, "spk_emb_linear"):
                x = x + self.spk_emb_linear(g.transpose(1, 2)).transpose(1, 2)
                x = x * x_mask
            x = self.norm_layers_1[i](x + self.attn_layers[i](x, attn_mask))
            x = self.norm_layers_2[i](x + self.ffn_layers[i](x, x_mask))
        return x * x_mask


class TextEncoder(nn.Module):
    """Symbol embedding + transformer + projection to prior mean/log-std."""

    def __init__(
        self,
        n_vocab: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        gin_channels: int = 0,
        cond_layer_idx: int = 2,
        banded: bool = False,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.emb = nn.Embedding(n_vocab, hidden_channels)
        nn.init.normal_(self.emb.weight, 0.0, hidden_channels**-0.5)
        self.encoder = Encoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size,
                               gin_channels=gin_channels, cond_layer_idx=cond_layer_idx, banded=banded)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, x: torch.Tensor, x_lengths: torch.Tensor, g: torch.Tensor | None = None):
        # x: [B, T] ids; x_lengths: [B]
        h = self.emb(x) * math.sqrt(self.hidden_channels)  # [B, T, H]
        h = h.transpose(1, -1)  # [B, H, T]
        x_mask = sequence_mask(x_lengths, x.size(1)).unsqueeze(1).to(h.dtype)  # [B, 1, T]
        h = self.encoder(h * x_mask, x_mask, g)
        stats = self.proj(h) * x_mask  # [B, 2*out, T]
        m, logs = torch.split(stats, self.out_channels, dim=1)
        return h, m, logs, x_mask


# --------------------------------------------------------------------------- WaveNet + flows
class WN(nn.Module):
    """Non-causal WaveNet stack with gated tanh/sigmoid units and optional global conditioning."""

    def __init__(self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 gin_channels: int = 0) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        if gin_channels > 0:
            self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1)
        for i in range(n_layers):
            d = dilation_rate**i
            self.in_layers.append(nn.Conv1d(hidden_channels, 2 * hidden_channels, kernel_size,
                                            dilation=d, padding=get_padding(kernel_size, d)))
            out = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(nn.Conv1d(hidden_channels, out, 1))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        h = self.hidden_channels
        # the skip sum starts from the first layer's skip, not zeros_like(x): same values, and
        # no full_like reading the input -- with it, the INT8 flow .pte (a dequantized input
        # shared by an XNNPACK partition and that portable op) failed at run time (error 0x1/0x12)
        output: torch.Tensor | None = None  # [B, H, T]
        if g is not None and hasattr(self, "cond_layer"):
            g = self.cond_layer(g)  # [B, 2H*L, 1]
        else:
            g = None
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)  # [B, 2H, T]
            if g is not None:
                x_in = x_in + g[:, i * 2 * h : (i + 1) * 2 * h, :]
            acts = torch.tanh(x_in[:, :h]) * torch.sigmoid(x_in[:, h:])
            res_skip = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                x = (x + res_skip[:, :h]) * x_mask
                skip = res_skip[:, h:]
            else:
                skip = res_skip
            output = skip if output is None else output + skip
        return output * x_mask


class Flip(nn.Module):
    """Channel reversal between coupling layers (no parameters)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.flip(x, [1])


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling, run in reverse (prior -> latent) at inference.

    VITS uses pre conv -> WaveNet -> post conv. VITS2's ``pre_conv2`` transformer flow adds a
    residual one-layer transformer after the pre conv (``pre_transformer=True``); the rest is
    identical, so both share this class and their upstream parameter names.
    """

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_layers: int, gin_channels: int = 0, pre_transformer: bool = False) -> None:
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        if pre_transformer:
            # over frames (long T): the banded relative terms
            self.pre_transformer = Encoder(hidden_channels, hidden_channels, n_heads=2, n_layers=1,
                                           kernel_size=kernel_size, banded=True)
        self.enc = WN(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], 1)  # [B, C/2, T] each
        h = self.pre(x0) * x_mask  # [B, H, T]
        if hasattr(self, "pre_transformer"):
            h = h + self.pre_transformer(h * x_mask, x_mask)
        h = self.enc(h, x_mask, g)
        m = self.post(h) * x_mask  # [B, C/2, T]
        x1 = (x1 - m) * x_mask
        return torch.cat([x0, x1], 1)


class ResidualCouplingBlock(nn.Module):
    """Stack of coupling layers and flips; ``forward`` is the inverse (generation) direction."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_layers: int, n_flows: int = 4, gin_channels: int = 0, pre_transformer: bool = False) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(ResidualCouplingLayer(channels, hidden_channels, kernel_size, dilation_rate,
                                                    n_layers, gin_channels, pre_transformer=pre_transformer))
            self.flows.append(Flip())

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        for flow in reversed(self.flows):
            x = flow(x, x_mask, g=g)
        return x


# --------------------------------------------------------------------------- duration predictors
class DDSConv(nn.Module):
    """Dilated depth-separable convolutions with LayerNorm and GELU."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.convs_sep = nn.ModuleList()
        self.convs_1x1 = nn.ModuleList()
        self.norms_1 = nn.ModuleList()
        self.norms_2 = nn.ModuleList()
        for i in range(n_layers):
            d = kernel_size**i
            self.convs_sep.append(nn.Conv1d(channels, channels, kernel_size, groups=channels, dilation=d,
                                            padding=(kernel_size * d - d) // 2))
            self.convs_1x1.append(nn.Conv1d(channels, channels, 1))
            self.norms_1.append(LayerNorm(channels))
            self.norms_2.append(LayerNorm(channels))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None:
            x = x + g
        for i in range(self.n_layers):
            y = F.gelu(self.norms_1[i](self.convs_sep[i](x * x_mask)))
            y = F.gelu(self.norms_2[i](self.convs_1x1[i](y)))
            x = x + y
        return x * x_mask


def _rational_quadratic_inverse(
    inputs: torch.Tensor,
    widths_u: torch.Tensor,
    heights_u: torch.Tensor,
    derivs_u: torch.Tensor,
    tail_bound: float,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> torch.Tensor:
    """Inverse of a monotonic rational-quadratic spline on [-B, B] with identity (linear) tails.

    inputs: [...]; widths_u, heights_u: [..., K]; derivs_u: [..., K-1] (unnormalized).
    Computed for every element and selected with ``where`` (no boolean indexing), so the
    graph has static shapes for export and quantization.
    """
    num_bins = widths_u.shape[-1]
    inside = (inputs >= -tail_bound) & (inputs <= tail_bound)
    x = inputs.clamp(-tail_bound, tail_bound)

    # Boundary derivatives are fixed to 1 so the spline joins the identity tails smoothly.
    edge = math.log(math.exp(1 - min_derivative) - 1)
    derivs_u = F.pad(derivs_u, (1, 1), value=edge)
    derivs = min_derivative + F.softplus(derivs_u)  # [..., K+1]

    widths = torch.softmax(widths_u, dim=-1)
    widths = min_bin_width + (1 - min_bin_width * num_bins) * widths
    cumw = F.pad(torch.cumsum(widths, dim=-1), (1, 0), value=0.0)
    cumw = 2 * tail_bound * cumw - tail_bound
    cumw = torch.cat([torch.full_like(cumw[..., :1], -tail_bound), cumw[..., 1:-1],
                      torch.full_like(cumw[..., :1], tail_bound)], dim=-1)
    widths = cumw[..., 1:] - cumw[..., :-1]

    heights = torch.softmax(heights_u, dim=-1)
    heights = min_bin_height + (1 - min_bin_height * num_bins) * heights
    cumh = F.pad(torch.cumsum(heights, dim=-1), (1, 0), value=0.0)
    cumh = 2 * tail_bound * cumh - tail_bound
    cumh = torch.cat([torch.full_like(cumh[..., :1], -tail_bound), cumh[..., 1:-1],
                      torch.full_like(cumh[..., :1], tail_bound)], dim=-1)
    heights = cumh[..., 1:] - cumh[..., :-1]

    # bin index: number of bin edges (last one nudged up) that the input has passed, minus one
    locs = torch.cat([cumh[..., :-1], cumh[..., -1:] + 1e-6], dim=-1)
    idx = (torch.sum((x.unsqueeze(-1) >= locs).to(torch.long), dim=-1) - 1).clamp(0, num_bins - 1)
    idx = idx.unsqueeze(-1)

    in_cumw = cumw.gather(-1, idx)[..., 0]
    in_w = widths.gather(-1, idx)[..., 0]
    in_cumh = cumh.gather(-1, idx)[..., 0]
    in_h = heights.gather(-1, idx)[..., 0]
    in_delta = (heights / widths).gather(-1, idx)[..., 0]
    in_d = derivs.gather(-1, idx)[..., 0]
    in_d1 = derivs[..., 1:].gather(-1, idx)[..., 0]

    dy = x - in_cumh
    s = in_d + in_d1 - 2 * in_delta
    a = dy * s + in_h * (in_delta - in_d)
    b = in_h * in_d - dy * s
    c = -in_delta * dy
    disc = (b.pow(2) - 4 * a * c).clamp_min(0.0)
    root = (2 * c) / (-b - torch.sqrt(disc))
    out = root * in_w + in_cumw
    return torch.where(inside, out, inputs)


class ConvFlow(nn.Module):
    """Neural-spline coupling used by the stochastic duration predictor (inverse direction)."""

    def __init__(self, in_channels: int, filter_channels: int, kernel_size: int, n_layers: int,
                 num_bins: int = 10, tail_bound: float = 5.0) -> None:
        super().__init__()
        self.filter_channels = filter_channels
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.half_channels = in_channels // 2
        self.pre = nn.Conv1d(self.half_channels, filter_channels, 1)
        self.convs = DDSConv(filter_channels, kernel_size, n_layers)
        self.proj = nn.Conv1d(filter_channels, self.half_channels * (num_bins * 3 - 1), 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], 1)  # [B, 1, T] each
        h = self.convs(self.pre(x0), x_mask, g=g)
        h = self.proj(h) * x_mask  # [B, half*(3K-1), T]
        b, c, t = x0.shape
        h = h.reshape(b, c, -1, t).permute(0, 1, 3, 2)  # [B, half, T, 3K-1]
        k = self.num_bins
        scale = math.sqrt(self.filter_channels)
        x1 = _rational_quadratic_inverse(x1, h[..., :k] / scale, h[..., k : 2 * k] / scale, h[..., 2 * k :],
                                         tail_bound=self.tail_bound)
        return torch.cat([x0, x1], 1) * x_mask


class ElementwiseAffine(nn.Module):
    """``y = m + exp(logs) * x``, inverted at inference."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return (x - self.m) * torch.exp(-self.logs) * x_mask


class UnusedFlow(nn.Module):
    """Placeholder for the spline flow that upstream inference skips ("a useless vflow").

    Keeping a parameter-free slot keeps the indices of the remaining flows (``dp.flows.3`` ...)
    equal to upstream's, while the inference model carries no dead weights.
    """

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # pragma: no cover - never called
        raise RuntimeError("the skipped duration flow must not be called")


class StochasticDurationPredictor(nn.Module):
    """Flow-based duration predictor, sampling log-durations from noise (inference direction).

    ``flows`` = [ElementwiseAffine, ConvFlow, Flip, ConvFlow, Flip, ...]; upstream inference
    runs them reversed and skips the first ConvFlow (index 1), so index 1 is a placeholder here.
    """

    def __init__(self, in_channels: int, kernel_size: int = 3, n_flows: int = 4, gin_channels: int = 0,
                 filter_channels: int | None = None) -> None:
        super().__init__()
        if filter_channels is None:
            # Piper's VITS overrides the requested filter size with in_channels; Vosk's VITS2
            # keeps it (256) and passes it explicitly.
            filter_channels = in_channels
        self.pre = nn.Conv1d(in_channels, filter_channels, 1)
        self.proj = nn.Conv1d(filter_channels, filter_channels, 1)
        self.convs = DDSConv(filter_channels, kernel_size, n_layers=3)
        if gin_channels > 0:
            self.cond = nn.Conv1d(gin_channels, filter_channels, 1)
        self.flows = nn.ModuleList([ElementwiseAffine(2)])
        for i in range(n_flows):
            self.flows.append(UnusedFlow() if i == 0 else ConvFlow(2, filter_channels, kernel_size, n_layers=3))
            self.flows.append(Flip())

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, noise: torch.Tensor,
                g: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, H, T]; noise: [B, 2, T] already scaled by noise_w. Returns log-durations [B, 1, T]."""
        x = self.pre(x)
        if g is not None and hasattr(self, "cond"):
            x = x + self.cond(g)
        x = self.proj(self.convs(x, x_mask)) * x_mask
        z = noise
        flows = list(reversed(self.flows))
        flows = flows[:-2] + [flows[-1]]  # drop the skipped ConvFlow (upstream index 1)
        for flow in flows:
            z = flow(z, x_mask, g=x)
        return z[:, :1]


class DurationPredictor(nn.Module):
    """Deterministic duration predictor (``use_sdp = false``)."""

    def __init__(self, in_channels: int, filter_channels: int = 256, kernel_size: int = 3,
                 gin_channels: int = 0) -> None:
        super().__init__()
        self.conv_1 = nn.Conv1d(in_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_1 = LayerNorm(filter_channels)
        self.conv_2 = nn.Conv1d(filter_channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.norm_2 = LayerNorm(filter_channels)
        self.proj = nn.Conv1d(filter_channels, 1, 1)
        if gin_channels > 0:
            self.cond = nn.Conv1d(gin_channels, in_channels, 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, noise: torch.Tensor | None = None,
                g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None and hasattr(self, "cond"):
            x = x + self.cond(g)
        x = self.norm_1(torch.relu(self.conv_1(x * x_mask)))
        x = self.norm_2(torch.relu(self.conv_2(x * x_mask)))
        return self.proj(x * x_mask) * x_mask


# --------------------------------------------------------------------------- HiFi-GAN
# Padded batches: a convolution at an item's last frames reads the frames after them. Run
# alone, those are the conv's zero padding; in a batch they are the padding frames, which equal
# zero only if every conv input is re-masked (a conv's bias and kernel spread values into them).
# Each decoder conv therefore takes a mask of its own time resolution; ``mask=None`` (a single
# item, or one exported program per item) skips the multiplies.
def apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x * mask`` ([B, C, T] * [B, 1, T]), or ``x`` unchanged when ``mask`` is None."""
    return x if mask is None else x * mask


def upsample_mask(mask: torch.Tensor | None, factor: int) -> torch.Tensor | None:
    """Frame mask [B, 1, T] -> [B, 1, T * factor], each frame's value repeated ``factor`` times.

    Expand + reshape (no data-dependent shapes), so it traces for ONNX and torch.export.
    """
    if mask is None or factor == 1:
        return mask
    b, c, t = mask.shape
    return mask.unsqueeze(-1).expand(b, c, t, factor).reshape(b, c, t * factor)


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList([nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                               padding=get_padding(kernel_size, d)) for d in dilation])
        self.convs2 = nn.ModuleList([nn.Conv1d(channels, channels, kernel_size, dilation=1,
                                               padding=get_padding(kernel_size, 1)) for _ in dilation])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: [B, C, T]; mask: [B, 1, T] or None. The output is not masked (the caller masks
        # before its next conv).
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(apply_mask(F.leaky_relu(x, LRELU_SLOPE), mask))
            xt = c2(apply_mask(F.leaky_relu(xt, LRELU_SLOPE), mask))
            x = xt + x
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, dilation: tuple[int, ...] = (1, 3)) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(channels, channels, kernel_size, dilation=d,
                                              padding=get_padding(kernel_size, d)) for d in dilation])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for c in self.convs:
            x = c(apply_mask(F.leaky_relu(x, LRELU_SLOPE), mask)) + x
        return x


class HiFiGANUpsampler(nn.Module):
    """conv_pre, transposed-conv upsampling stages and multi-receptive-field resblocks.

    Shared by the HiFi-GAN waveform generator and the multi-band iSTFT generator, which differ
    only in what follows the last stage.
    """

    def __init__(self, initial_channel: int, resblock: str, resblock_kernel_sizes, resblock_dilation_sizes,
                 upsample_rates, upsample_initial_channel: int, upsample_kernel_sizes,
                 gin_channels: int = 0) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.upsample_rates = tuple(int(u) for u in upsample_rates)
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        block = ResBlock1 if resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            self.ups.append(nn.ConvTranspose1d(upsample_initial_channel // 2**i, upsample_initial_channel // 2 ** (i + 1),
                                               k, u, padding=(k - u) // 2))
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i in range(len(self.ups)):
            ch = upsample_initial_channel // 2 ** (i + 1)
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(ch, k, tuple(d)))
        self.out_channels = ch
        if gin_channels > 0:
            self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def upsample(self, x: torch.Tensor, g: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, C, T] (+ frame mask [B, 1, T]) -> (features [B, ch, T * prod(rates)], their mask).

        The features are leaky-relu'd and, with a mask, zero after each item's end.
        """
        x = self.conv_pre(apply_mask(x, mask))  # [B, U, T]
        if g is not None and hasattr(self, "cond"):
            x = x + self.cond(g)
        for i in range(self.num_upsamples):
            x = self.ups[i](apply_mask(F.leaky_relu(x, LRELU_SLOPE), mask))
            mask = upsample_mask(mask, self.upsample_rates[i])
            x = apply_mask(x, mask)
            xs = self.resblocks[i * self.num_kernels](x, mask)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x, mask)
            x = xs / self.num_kernels
        return apply_mask(F.leaky_relu(x), mask), mask  # upstream uses the default 0.01 slope here


class Generator(HiFiGANUpsampler):
    """HiFi-GAN generator: latent frames [B, C, T] -> waveform [B, 1, T * hop]."""

    #: its tail is one convolution and tanh: it runs on [B, C, 1, T] as well (models/layout2d.py)
    tail_runs_2d = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conv_post = nn.Conv1d(self.out_channels, 1, 7, 1, padding=3, bias=False)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` [B, 1, T] (optional): padded frames of a batch; their audio is zero and never
        reaches the valid samples, so each item equals its unbatched run."""
        x, mask = self.upsample(x, g, mask)
        return self.tail(x, mask)

    def tail(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Upsampled features [B, ch, T'] -> waveform [B, 1, T']."""
        return apply_mask(torch.tanh(self.conv_post(x)), mask)
