"""ExecuTorch export: `.pte` programs run by the real `executorch.runtime` against PyTorch.

The oracle is our PyTorch model (itself tested against ONNX Runtime on the original joe voice
and against upstream golden fixtures for VITS2). Exports are done once per module: lowering to
XNNPACK takes minutes on two cores, so the bounds are small enough that "near the maximum"
inputs are cheap to run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import vitsq
from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.export.executorch import ExecuTorchSynthesizer, export_executorch

SHARED = Path(__file__).resolve().parents[2] / "shared"
VOSK_FIXTURES = SHARED / "fixtures" / "vosk_vits2"
MAX_TOKENS = 160
MAX_FRAMES = 1024


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def snr_db(test: np.ndarray, ref: np.ndarray) -> float:
    n = min(len(test), len(ref))
    noise = np.sum((test[:n] - ref[:n]) ** 2)
    return float(10 * np.log10(np.sum(ref[:n] ** 2) / max(noise, 1e-20)))


@pytest.fixture(scope="module")
def joe_et_dir(tmp_path_factory, joe_torch):
    out = tmp_path_factory.mktemp("et") / "joe-fp32"
    export_executorch(joe_torch, out, max_tokens=MAX_TOKENS, max_frames=MAX_FRAMES)
    return out


@pytest.fixture(scope="module")
def joe_et(joe_et_dir):
    return vitsq.load(joe_et_dir, backend="executorch")


def _ids(synth, text: str) -> list[int]:
    (ids,) = synth.text_to_ids(text)
    return ids


def test_fp32_matches_torch_for_many_lengths(joe_torch, joe_et):
    """Zero noise: same length and rel. error < 1e-3, from 1 symbol (padded path) to the maximum."""
    rng = np.random.default_rng(0)
    sentence = _ids(joe_torch, "Quick tests of the exported programs, with a comma, and a question?")
    cases = [[sentence[0]], sentence[:5], sentence,
             list(rng.integers(1, joe_torch.config.n_vocab, MAX_TOKENS))]  # exactly max_tokens
    for ids in cases:
        ref = joe_torch.synthesize_ids(ids, noise_scale=0, noise_w=0)
        got = joe_et.synthesize_ids(ids, noise_scale=0, noise_w=0)
        assert len(got.samples) == len(ref.samples), len(ids)
        assert rel_err(got.samples, ref.samples) < 1e-3, len(ids)


def test_fp32_near_max_frames(joe_torch, joe_et):
    """A slow sentence whose frame count lands just under max_frames runs and matches."""
    ids = _ids(joe_torch, "Slowly now.")
    scale, frames = 1.0, 0
    for _ in range(6):  # ceil() per symbol makes frames non-linear in the scale: home in on the target
        frames = len(joe_et.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=scale).samples) // 256
        if MAX_FRAMES - 48 <= frames <= MAX_FRAMES:
            break
        scale *= (MAX_FRAMES - 24) / frames
    assert MAX_FRAMES - 48 <= frames <= MAX_FRAMES
    ref = joe_torch.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=scale)
    got = joe_et.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=scale)
    assert len(got.samples) == len(ref.samples)
    assert rel_err(got.samples, ref.samples) < 1e-3


def test_same_seed_same_noise_as_torch(joe_torch, joe_et):
    """Noise is drawn on the host like VITS.infer, so seeded outputs agree with noise on."""
    text = "Noise comes from the same seeded generator. Two sentences, two seeds."
    ref = joe_torch.synthesize(text, seed=7)
    got = joe_et.synthesize(text, seed=7)
    assert len(got.samples) == len(ref.samples)
    assert rel_err(got.samples, ref.samples) < 1e-3
    other = joe_et.synthesize(text, seed=8)
    assert len(other.samples) != len(got.samples) or rel_err(other.samples, got.samples) > 0.1


def test_too_long_input_is_refused_clearly(joe_torch, joe_et):
    with pytest.raises(InputError, match=f"{MAX_TOKENS + 1} symbol ids.*at most {MAX_TOKENS}"):
        joe_et.synthesize_ids([5] * (MAX_TOKENS + 1))
    ids = _ids(joe_torch, "Far too slow.")
    with pytest.raises(InputError, match=f"frames.*at most {MAX_FRAMES}"):
        joe_et.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=60.0)


def test_artifact_manifest_loading_and_cli(joe_et_dir, joe_et, tmp_path, capsys):
    from vitsq.cli import main

    manifest = json.loads((joe_et_dir / "vitsq.json").read_text())
    assert manifest["kind"] == "executorch"
    et = manifest["executorch"]
    assert (et["max_tokens"], et["max_frames"], et["recipe"]) == (MAX_TOKENS, MAX_FRAMES, "fp32")
    assert et["programs"]["decoder"]["xnnpack_partitions"] > 0
    assert set(manifest["files"]) == {"encoder.pte", "decoder.pte"}
    assert joe_et.size_bytes() == sum(f["bytes"] for f in manifest["files"].values())
    # the default backend ("torch") runs the programs; onnx is refused by name
    assert isinstance(vitsq.load(joe_et_dir), ExecuTorchSynthesizer)
    with pytest.raises(UnsupportedError, match="executorch"):
        vitsq.load(joe_et_dir, backend="onnx")
    out = tmp_path / "et.wav"
    assert main(["synth", str(joe_et_dir), "The CLI runs ExecuTorch.", "--backend", "executorch", "-o", str(out)]) == 0
    assert "RTF" in capsys.readouterr().out and out.stat().st_size > 20_000
    # a modified program is refused
    bad = tmp_path / "bad"
    shutil.copytree(joe_et_dir, bad)
    with open(bad / "decoder.pte", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelLoadError, match="decoder.pte"):
        vitsq.load(bad, backend="executorch")


def test_export_refuses_bad_requests(joe_torch, joe_onnx, tmp_path):
    with pytest.raises(InputError, match="already exists"):
        export_executorch(joe_torch, tmp_path)
    with pytest.raises(UnsupportedError, match="pt2e"):
        export_executorch(joe_torch, tmp_path / "x", recipe="ort-static")
    with pytest.raises(UnsupportedError, match="torch backend"):
        export_executorch(joe_onnx, tmp_path / "y")
    with pytest.raises(InputError, match="max_tokens"):
        export_executorch(joe_torch, tmp_path / "z", max_tokens=0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# --------------------------------------------------------------------------- Vosk VITS2 (MB-iSTFT)
@pytest.fixture(scope="module")
def vosk_tiny():
    ckpt = VOSK_FIXTURES / "tiny_G_1.pth"
    assert ckpt.is_file(), f"golden fixture missing: {ckpt} (copy ../shared/fixtures beside the repo)"
    return vitsq.load(ckpt, config_path=VOSK_FIXTURES / "tiny_config.json")


def test_vits2_tiny_exports_and_matches_torch_and_upstream(vosk_tiny, tmp_path):
    """Multi-speaker VITS2 with the sub-band iSTFT + PQMF decoder, against our torch model
    (unbatched) and the upstream golden audio (row 0 of the batch, which has no frame padding)."""
    import torch

    out = export_executorch(vosk_tiny, tmp_path / "vosk", max_tokens=64, max_frames=512)
    et = vitsq.load(out, backend="executorch")
    golden = torch.load(VOSK_FIXTURES / "tiny_golden_io.pt", map_location="cpu", weights_only=False)
    for case in golden["cases"]:
        ls = case["length_scale"]
        for b in range(golden["x"].shape[0]):
            n = int(golden["x_lengths"][b])
            ids, spk = golden["x"][b, :n].tolist(), int(golden["sid"][b])
            got = et.synthesize_ids(ids, speaker=spk, noise_scale=0, noise_w=0, length_scale=ls).samples
            ref = vosk_tiny.synthesize_ids(ids, speaker=spk, noise_scale=0, noise_w=0, length_scale=ls).samples
            assert len(got) == len(ref)
            assert rel_err(got, ref) < 1e-3
            if int(case["y_mask"][b].sum()) == case["y_mask"].shape[-1]:  # no padded frames: the upstream audio applies
                up = case["audio"][b, 0].numpy()
                assert len(up) == len(got) and rel_err(got, up) < 1e-3
    # speakers are an input of both programs, not baked in
    ids = golden["x"][0, : int(golden["x_lengths"][0])].tolist()
    a0 = et.synthesize_ids(ids, speaker=0, noise_scale=0, noise_w=0).samples
    a3 = et.synthesize_ids(ids, speaker=3, noise_scale=0, noise_w=0).samples
    assert len(a0) != len(a3) or rel_err(a0, a3) > 0.05
    ops = json.loads((out / "vitsq.json").read_text())["executorch"]["programs"]["decoder"]
    assert ops["xnnpack_partitions"] > 0


def test_vits2_tiny_int8_programs_stay_close_to_float(vosk_tiny, tmp_path):
    """pt2e INT8 `.pte` (XNNPACK INT8 kernels + portable q/dq) vs the float torch model.

    Random weights: this bounds the distance to float (SNR, log-mel), not speech quality.
    The duration predictor stays float, so lengths are unchanged.
    """
    import torch

    from vitsq.evaluate.metrics import audio_distance

    out = export_executorch(vosk_tiny, tmp_path / "vosk-int8", recipe="pt2e", max_tokens=64, max_frames=512,
                            calibration_sentences=4)
    manifest = json.loads((out / "vitsq.json").read_text())
    assert manifest["quantization"]["recipe"] == "pt2e" and manifest["executorch"]["recipe"] == "pt2e"
    et = vitsq.load(out, backend="executorch")
    golden = torch.load(VOSK_FIXTURES / "tiny_golden_io.pt", map_location="cpu", weights_only=False)
    for b in range(golden["x"].shape[0]):
        n = int(golden["x_lengths"][b])
        ids, spk = golden["x"][b, :n].tolist(), int(golden["sid"][b])
        ref = vosk_tiny.synthesize_ids(ids, speaker=spk, seed=b).samples
        got = et.synthesize_ids(ids, speaker=spk, seed=b).samples
        assert len(got) == len(ref)
        d = audio_distance(ref, got, vosk_tiny.sample_rate)
        assert d.snr_db > 18.0 and d.log_mel_l1 < 0.15, d
        assert rel_err(got, ref) > 1e-4  # really quantized, not the float program
