"""ExecuTorch export: `.pte` programs run by the real `executorch.runtime` against PyTorch.

The oracle is our PyTorch model (itself tested against ONNX Runtime on the original joe voice
and against upstream golden fixtures for VITS2). Lowering to XNNPACK takes minutes per program
on two cores, so each export is made once, by ``export_executorch`` in conftest's background
worker while the rest of the suite runs (these tests run last and wait for it), and shared by
the tests that read it; the bounds are small enough that "near the maximum" inputs are cheap.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import vitsq
from conftest import VOSK_FIXTURES, VOSK_TINY
from vitsq.errors import InputError, ModelLoadError, UnsupportedError
from vitsq.backends.executorch import ExecuTorchSynthesizer
from vitsq.export.executorch import export_executorch

MAX_TOKENS = 160
MAX_FRAMES = 1024
VOSK_INT8_MAX_TOKENS = 1024  # x the hidden size (32) > 20480: see test_vits2_tiny_int8_programs_stay_close_to_float

# conftest's background worker makes these (export_executorch keyword arguments + the model spec)
BACKGROUND_EXPORTS = {
    "joe_et_dir": {"model": "joe", "max_tokens": MAX_TOKENS, "max_frames": MAX_FRAMES},
    "joe_int8_dir": {"model": "joe", "recipe": "pt2e", "max_tokens": MAX_TOKENS, "max_frames": MAX_FRAMES,
                     "calibration_sentences": 8},
    "vosk_et_dir": {**VOSK_TINY, "max_tokens": 64, "max_frames": 512},
    "vosk_int8_dir": {**VOSK_TINY, "recipe": "pt2e", "max_tokens": VOSK_INT8_MAX_TOKENS, "max_frames": 512,
                      "calibration_sentences": 4},
}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def snr_db(test: np.ndarray, ref: np.ndarray) -> float:
    n = min(len(test), len(ref))
    noise = np.sum((test[:n] - ref[:n]) ** 2)
    return float(10 * np.log10(np.sum(ref[:n] ** 2) / max(noise, 1e-20)))


@pytest.fixture(scope="module")
def joe_et_dir(background_exports):
    return background_exports.path("joe_et_dir")


@pytest.fixture(scope="module")
def joe_int8_dir(background_exports):
    return background_exports.path("joe_int8_dir")


@pytest.fixture(scope="module")
def vosk_et_dir(background_exports):
    return background_exports.path("vosk_et_dir")


@pytest.fixture(scope="module")
def vosk_int8_dir(background_exports):
    return background_exports.path("vosk_int8_dir")


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
    """A long, slow sentence whose frame count lands just under max_frames runs and matches
    (long enough that the length_scale needed stays within limits.MAX_LENGTH_SCALE)."""
    from vitsq.limits import MAX_LENGTH_SCALE

    ids = _ids(joe_torch, "The quiet river wound slowly past the old mill and under the bridge.")
    assert len(ids) <= MAX_TOKENS
    scale, frames = 1.0, 0
    for _ in range(6):  # ceil() per symbol makes frames non-linear in the scale: home in on the target
        frames = len(joe_et.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=scale).samples) // 256
        if MAX_FRAMES - 48 <= frames <= MAX_FRAMES:
            break
        scale *= (MAX_FRAMES - 24) / frames
    assert MAX_FRAMES - 48 <= frames <= MAX_FRAMES and scale <= MAX_LENGTH_SCALE
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
    from vitsq.limits import MAX_LENGTH_SCALE

    ids = _ids(joe_torch, "The quiet river wound slowly past the old mill and under the bridge.")
    with pytest.raises(InputError, match=f"frames.*at most {MAX_FRAMES}"):
        joe_et.synthesize_ids(ids, noise_scale=0, noise_w=0, length_scale=MAX_LENGTH_SCALE)


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


_THREADS_SCRIPT = """
import gc, sys
import vitsq
from vitsq.bench import run_benchmark
from vitsq.errors import UnsupportedError
from vitsq.backends.executorch import threadpool_size
d = sys.argv[1]
res = run_benchmark(d, [], batches="1", warmup=0, iters=1, progress=False, threads=1)
info = res.variants[0]
assert info["status"] == "ok" and info["threads"] == 1 and threadpool_size() == 1, info
a = vitsq.load(d, threads=1)
try:
    vitsq.load(d, threads=2)
except UnsupportedError as e:
    assert "thread pool has 1 threads" in str(e), e
else:
    raise SystemExit("resizing under a loaded program was not refused")
del a, res
gc.collect()
b = vitsq.load(d, threads=2)
assert b.describe()["threads"] == 2 and len(b.synthesize("Two threads now.").samples) > 1000
print("THREADS-OK")
"""


def test_threads_size_the_executorch_pool(joe_et_dir):
    """ExecuTorch's pool ignores torch.set_num_threads: `threads` must size it, or a "1-thread"
    benchmark runs XNNPACK on every core. A fresh process, since the pool is process-wide."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(joe_et_dir)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "THREADS-OK" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]


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
    from vitsq.export.api import export

    with pytest.raises(InputError, match="--calibrate-method applies to the ort-static recipe"):
        export("joe", "executorch", tmp_path / "w", recipe="pt2e", calibrate_method="entropy")
    assert not (tmp_path / "w").exists()


# --------------------------------------------------------------------------- joe INT8 (pt2e preset)
def test_int8_preset_keeps_durations_and_the_voice(joe_torch, joe_et_dir, joe_int8_dir, quality_vs_fp32,
                                                     fp32_durations):
    """The pt2e preset (faithful for VITS voices) as `.pte`: the text encoder and duration
    predictor run FP32 inside the programs, so at zero noise the encoder program's integer
    durations equal FP32 PyTorch's on every symbol of held-out sentences; with the same seeds the
    audio has FP32's length, speaker similarity (resemblyzer) and Whisper transcripts stay within
    the quality budget, and the programs are < 0.65 x FP32 (the float text encoder holds most of
    the remaining bytes).
    """
    import torch
    from executorch.runtime import Runtime

    from vitsq.evaluate.sentences import load_split
    from vitsq.quantize.recipes import best_for

    out = joe_int8_dir
    manifest = json.loads((out / "vitsq.json").read_text())
    q, preset = manifest["quantization"], best_for(joe_torch, "pt2e", variant="faithful")
    assert q["stages"] == list(preset.stages) == ["flow", "decoder"] and q["keep_float"] == list(preset.keep_float)
    fp32_bytes = sum(f["bytes"] for f in json.loads((joe_et_dir / "vitsq.json").read_text())["files"].values())
    int8_bytes = sum(f["bytes"] for f in manifest["files"].values())
    assert int8_bytes < 0.65 * fp32_bytes, (int8_bytes, fp32_bytes)  # measured 37 / 63 MB

    fits = [t for t in load_split("en", "evaluation")
            if all(len(ids) <= MAX_TOKENS - 10 for ids in joe_torch.text_to_ids(t))]  # within the test bounds
    texts = fits[:5]
    encoder = Runtime.get().load_program(out / "encoder.pte").load_method("forward")
    length_scale, symbols = joe_torch.resolve().length_scale, 0
    for text in texts:
        (ids,) = joe_torch.text_to_ids(text)
        x = torch.tensor([ids])  # [1, T] (T >= the program's minimum: these are sentences)
        _, _, w_ceil = encoder.execute([x, torch.tensor([len(ids)]), torch.zeros(1, dtype=torch.long),
                                        torch.zeros(1, 2, len(ids)), torch.tensor([length_scale])])
        np.testing.assert_array_equal(w_ceil.reshape(-1).numpy(), fp32_durations(ids), err_msg=text)
        symbols += len(ids)
    assert symbols > 250  # many durations compared, not a handful

    et = vitsq.load(out, backend="executorch")
    ref = [joe_torch.synthesize(t, seed=i) for i, t in enumerate(texts)]
    got = [et.synthesize(t, seed=i) for i, t in enumerate(texts)]
    sims, wer = quality_vs_fp32(texts, ref, got)
    assert min(sims) > 0.95 and np.mean(sims) >= 0.97, sims  # 0.989 / 0.978 on 40 sentences at zero noise
    # same noise, float duration path: the same lengths (a duration within float rounding of an
    # integer may still move one frame between the two FP32 runtimes)
    hop = joe_torch.model.config.hop_length
    assert all(abs(len(b.samples) - len(a.samples)) <= hop for a, b in zip(ref, got))
    assert all(rel_err(b.samples, a.samples) > 1e-3 for a, b in zip(ref, got))  # INT8, not the float programs
    assert wer["int8"] <= wer["fp32"] + 0.05, wer  # <= 2 words more in these ~45


# --------------------------------------------------------------------------- Vosk VITS2 (MB-iSTFT)
def test_vits2_tiny_exports_and_matches_torch_and_upstream(vosk_tiny, vosk_et_dir):
    """Multi-speaker VITS2 with the sub-band iSTFT + PQMF decoder, against our torch model
    (unbatched) and the upstream golden audio (row 0 of the batch, which has no frame padding)."""
    import torch

    out = vosk_et_dir
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


def test_vits2_tiny_int8_programs_stay_close_to_float(vosk_tiny, vosk_int8_dir):
    """pt2e INT8 `.pte` (XNNPACK INT8 kernels + portable q/dq) vs the float torch model.

    Random weights: this bounds the distance to float (SNR, log-mel), not speech quality.
    The VITS2 preset keeps the duration predictor float, so lengths are unchanged.
    ``max_tokens`` is large enough (1024 x the hidden size > 20480) that ATen's MKL-DNN conv
    heuristic, without the export's guard against it, narrowed the token axis to 80.
    """
    import torch
    from executorch.runtime import Runtime

    from vitsq.evaluate.metrics import audio_distance

    out = vosk_int8_dir
    manifest = json.loads((out / "vitsq.json").read_text())
    assert manifest["quantization"]["recipe"] == "pt2e" and manifest["executorch"]["recipe"] == "pt2e"
    assert manifest["quantization"]["stages"] == ["encoder", "flow", "decoder"]  # VITS2 preset: dp float
    et = vitsq.load(out, backend="executorch")
    method = Runtime.get().load_program(out / "encoder.pte").load_method("forward")
    assert method.metadata.input_tensor_meta(0).sizes() == (1, VOSK_INT8_MAX_TOKENS)  # the bound, not narrowed
    long_ids = list(np.random.default_rng(0).integers(1, vosk_tiny.config.n_vocab, 150))  # > 80 tokens
    assert len(et.synthesize_ids(long_ids, speaker=1, seed=0, length_scale=0.2).samples) > 0
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
