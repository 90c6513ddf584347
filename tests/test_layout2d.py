"""The decoder in the 2-D layout (models/layout2d.py): the same function as the 1-D decoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitsq.models.layout2d import conv_as_2d, decode_2d, with_2d_layout


@pytest.mark.parametrize("layer", [nn.Conv1d(6, 5, 7, padding=9, dilation=3), nn.Conv1d(6, 5, 1, bias=False),
                                   nn.Conv1d(6, 6, 3, stride=2, groups=3), nn.ConvTranspose1d(6, 4, 8, 4, padding=2),
                                   nn.ConvTranspose1d(6, 4, 3, 2, padding=1, output_padding=1)],
                         ids=["dilated", "pointwise", "grouped", "transposed", "transposed-outpad"])
def test_layer_as_2d(layer):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 23)  # [B, C, T]
    with torch.no_grad():
        ref = layer(x)
        got = conv_as_2d(layer)(x.unsqueeze(2))  # [B, C', 1, T']
    assert got.shape == (ref.shape[0], ref.shape[1], 1, ref.shape[2])
    assert (got.squeeze(2) - ref).abs().max() <= 1e-6 * ref.abs().max()


def _dec_out(dec, z, g):
    out = dec(z, g=g)
    return out[0] if isinstance(out, tuple) else out


def test_joe_decoder_2d_equals_1d(joe_torch):
    dec = joe_torch.model.dec.eval()
    d2 = with_2d_layout(dec)
    assert isinstance(d2.conv_post, nn.Conv2d) and not any(isinstance(m, nn.Conv1d) for m in d2.modules())
    assert isinstance(dec.conv_post, nn.Conv1d)  # the model itself is untouched
    # module names are the model's, so keep-float lists (dec.resblocks.6, dec.conv_post) name the same layers
    assert {n for n, _ in d2.named_modules()} == {n for n, _ in dec.named_modules()}
    z = torch.randn(1, joe_torch.config.inter_channels, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = _dec_out(dec, z, None), decode_2d(d2, z)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_vosk_decoder_2d_equals_1d(vosk_tiny):
    """The multi-band decoder: upsampler in 4-D, its iSTFT/PQMF tail in 3-D; speaker input too."""
    model = vosk_tiny.model.eval()
    d2 = with_2d_layout(model.dec)
    assert isinstance(d2.subband_conv_post, nn.Conv1d) and isinstance(d2.conv_pre, nn.Conv2d)
    z = torch.randn(1, model.config.inter_channels, 30, generator=torch.Generator().manual_seed(2))
    g = model.speaker_embedding(torch.tensor([1]), 1)
    with torch.no_grad():
        ref, got = _dec_out(model.dec, z, g), decode_2d(d2, z, g)
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_refuses_a_non_hifigan_decoder():
    with pytest.raises(ValueError, match="not a HiFi-GAN-family decoder"):
        with_2d_layout(nn.Conv1d(2, 2, 1))
