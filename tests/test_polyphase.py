"""Polyphase rewrite of transposed convolutions: same function as ConvTranspose1d, and as ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vitsq.models.polyphase import PolyphaseConvTranspose1d, PolyphasePQMFSynthesis, with_polyphase_upsampling

# (in, out, kernel, stride, padding, output_padding): the HiFi-GAN layers of joe and Vosk, and
# odd cases (kernel not a multiple of the stride, stride 1, padding past the kernel's reach)
CASES = [(512, 256, 16, 4, 6, 0), (256, 128, 16, 8, 4, 0), (128, 64, 8, 4, 2, 0), (16, 8, 3, 2, 1, 0),
         (16, 8, 4, 2, 1, 0), (8, 4, 5, 3, 0, 0), (8, 4, 7, 2, 3, 1), (8, 4, 2, 2, 0, 0), (8, 4, 3, 1, 1, 0),
         (8, 4, 5, 2, 4, 0)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_equals_conv_transpose(case):
    ci, co, k, s, p, op = case
    torch.manual_seed(0)
    layer = nn.ConvTranspose1d(ci, co, k, s, padding=p, output_padding=op)
    poly = PolyphaseConvTranspose1d(layer)
    assert poly.conv.weight.shape[0] == s * co
    checked = 0
    for t in (1, 2, 5, 33):
        x = torch.randn(2, ci, t)
        try:
            ref = layer(x)
        except RuntimeError:  # output would be empty for this length
            continue
        got = poly(x)
        assert got.shape == ref.shape
        assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("subbands", [4, 3, 2])
def test_pqmf_equals_upsampler_and_filter(subbands):
    """The sub-band-rate PQMF gives the zero-stuffed full-rate filter's samples, at every length
    (the first and last samples read the zero padding of both forms)."""
    from vitsq.models.vits2 import PQMFSynthesis

    pqmf = PQMFSynthesis(subbands)
    poly = PolyphasePQMFSynthesis(pqmf)
    assert poly.weight.shape[-1] <= -(-pqmf.filters.shape[-1] // subbands) + 1
    for n in (1, 2, 7, 64):
        x = torch.randn(2, subbands, n, generator=torch.Generator().manual_seed(n))
        ref, got = pqmf(x), poly(x)
        assert got.shape == ref.shape == (2, 1, subbands * n)
        assert (got - ref).abs().max() <= 1e-6 * ref.abs().max()


def test_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match="groups=1"):
        PolyphaseConvTranspose1d(nn.ConvTranspose1d(4, 4, 4, 2, groups=2))
    with pytest.raises(ValueError, match="no dec.ups"):
        with_polyphase_upsampling(nn.Linear(2, 2))


def test_model_copy_and_onnx_export_match(vosk_tiny, tmp_path):
    """The rewritten VITS2 decoder gives the same audio in torch and in ONNX Runtime, with no
    ConvTranspose left in the upsampling; the source model is untouched."""
    import onnx
    import onnxruntime as ort

    model = vosk_tiny.model
    poly = with_polyphase_upsampling(model)
    assert all(isinstance(u, nn.ConvTranspose1d) for u in model.dec.ups)
    assert all(isinstance(u, PolyphaseConvTranspose1d) for u in poly.dec.ups)
    assert isinstance(poly.dec.pqmf, PolyphasePQMFSynthesis) and not isinstance(model.dec.pqmf, PolyphasePQMFSynthesis)
    z = torch.randn(1, model.config.inter_channels, 23, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, _ = model.dec(z)
        got, _ = poly.dec(z)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()

    from vitsq.export.onnx import export_onnx

    path = export_onnx(model, tmp_path / "poly.onnx", polyphase_upsampling=True)
    proto = onnx.load(str(path))
    assert not [n.name for n in proto.graph.node if n.op_type == "ConvTranspose" and n.name.startswith(("/dec/ups", "/dec/pqmf"))]
    plain = export_onnx(model, tmp_path / "plain.onnx")
    ids = np.array([[3, 5, 7, 9, 11, 13, 2, 4]], dtype=np.int64)
    feed = {"input": ids, "input_lengths": np.array([8], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32), "sid": np.array([1], dtype=np.int64)}
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["output"], feed)[0]
    b = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).run(["output"], feed)[0]
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-6)
