"""The public face: `vitsq.load` (auto backend, explicit options, threads, devices),
`vitsq.available_models`, `SynthesisConfig` validation, seeds on backends that cannot honour
them, speakers, text checks, and `Audio.write`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import vitsq
from conftest import SHARED
from vitsq import limits
from vitsq.errors import InputError, ModelLoadError, OutputError, UnsupportedError
from vitsq.limits import MAX_NOISE_SCALE
from vitsq.synth import SynthesisConfig, validate_text

TINY = SHARED / "fixtures" / "vosk_vits2"
RU = "Привет, мир."
ZERO = dict(noise_scale=0.0, noise_w=0.0)


@pytest.fixture(scope="module")
def onnx_artifacts(tmp_path_factory, vosk_tiny):
    """The tiny Vosk model as an ONNX Runtime INT8 artifact (kind onnx, what `vitsq quantize
    --recipe ort-*` writes), a vosk-dir artifact, and a plain Vosk model folder (no vitsq.json)."""
    from vitsq.export.onnx import export_vosk_dir
    root = tmp_path_factory.mktemp("artifacts")
    ort_dir = vitsq.quantize(vosk_tiny, "ort-dynamic").save(root / "q")  # no calibration: cheap
    vosk_dir = export_vosk_dir(vosk_tiny, root / "vosk")
    plain = root / "plain"
    shutil.copytree(vosk_dir, plain)
    (plain / "vitsq.json").unlink()
    return ort_dir, vosk_dir, plain


# ----------------------------------------------------------------------------- load
def test_auto_backend_is_the_artifacts_own(onnx_artifacts, vosk_tiny, joe_torch, tmp_path, capsys):
    ort_dir, vosk_dir, plain = onnx_artifacts
    assert json.loads((ort_dir / "vitsq.json").read_text())["kind"] == "onnx"
    for folder in (ort_dir, vosk_dir, plain):
        s = vitsq.load(folder)
        assert s.backend == "onnx" and s.num_speakers == vosk_tiny.num_speakers
        assert len(s.synthesize(RU, speaker=1, **ZERO).samples) > 1000
        with pytest.raises(UnsupportedError, match="runs on the onnx backend, not 'torch'"):
            vitsq.load(folder, backend="torch")
    assert vosk_tiny.backend == "torch" and joe_torch.backend == "torch"  # checkpoints, voices: torch
    # the command line the user ran: an ort artifact, no --backend
    from vitsq.cli import main

    out = tmp_path / "q.wav"
    assert main(["synth", str(ort_dir), RU, "-o", str(out), "--noise-scale", "0", "--seed", "2"]) == 2
    assert "cannot honour seed=2" in capsys.readouterr().err  # noise_w still on: refused, not ignored
    assert main(["synth", str(ort_dir), RU, "-o", str(out), "--speaker", "2"]) == 0
    assert out.stat().st_size > 2000


def test_registry_loaders_are_functions_and_imports_have_no_cycles():
    from vitsq import registry

    assert all(callable(p.loader) for p in registry.PRESETS.values())
    assert all(callable(k.loader) for k in registry.ARTIFACT_LOADERS.values())
    assert {k.backend for k in registry.ARTIFACT_LOADERS.values()} == {"torch", "onnx", "executorch", "sherpa"}
    models = vitsq.available_models()
    assert set(models) == {"joe", "vosk-ru-multi"} and "untrained" in models["vosk-ru-multi"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for module in ("vitsq.registry", "vitsq.synth", "vitsq.cli"):
        code = f"import sys, {module}; print('torch' in sys.modules)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        if module == "vitsq.registry":
            assert done.stdout.strip() == "False"  # loaders import lazily


def test_load_options_are_explicit_and_checked(tmp_path):
    with pytest.raises(TypeError, match="thread"):
        vitsq.load("joe", thread=2)
    with pytest.raises(InputError, match="valid backends are auto, torch, onnx, executorch"):
        vitsq.load("joe", backend="tensorflow")
    with pytest.raises(InputError, match="carries its own config"):
        vitsq.load("joe", config_path=tmp_path / "c.json")
    with pytest.raises(InputError, match="torch-eager INT8 artifacts only"):
        vitsq.load("joe", engine="fbgemm")
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InputError, match="threads"):
            vitsq.load("joe", threads=bad)
    for device in ("foo", "cuda:99", "cuda" if not torch.cuda.is_available() else "cuda:98"):
        with pytest.raises(InputError, match="device .* is not valid: use cpu"):
            vitsq.load("joe", device=device)


def test_threads_are_honoured(joe_onnx):
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            s = vitsq.load(TINY / "tiny_G_1.pth", config_path=TINY / "tiny_config.json", threads=n)
            assert torch.get_num_threads() == n and s.describe()["threads"] == n
    finally:
        torch.set_num_threads(before)
    o = vitsq.load("joe", backend="onnx", threads=1)
    assert o.session.get_session_options().intra_op_num_threads == 1 and o.describe()["threads"] == 1


# ----------------------------------------------------------------------------- SynthesisConfig
@pytest.mark.parametrize("field,value,match", [
    ("speaker", 1.5, "speaker=1.5 is not valid: use an integer"),
    ("speaker", True, "speaker=True is not valid"),
    ("speaker", [1, 2], "speakers="),
    ("noise_scale", "abc", "noise_scale='abc' is not valid: use a finite number >= 0"),
    ("noise_scale", -0.1, "noise_scale=-0.1 is out of range"),
    ("noise_scale", MAX_NOISE_SCALE * 2, f"<= {MAX_NOISE_SCALE:g}"),
    ("noise_w", "abc", "noise_w='abc' is not valid"),
    ("noise_w", float("inf"), "noise_w=inf is out of range"),
    ("length_scale", 0, "length_scale=0.0 is out of range: use a finite number > 0"),
    ("length_scale", limits.MAX_LENGTH_SCALE + 1, f"<= {limits.MAX_LENGTH_SCALE:g}"),
    ("length_scale", float("nan"), "length_scale=nan"),
    ("seed", "x", "seed='x' is not valid: use an integer in 0..18446744073709551615"),
    ("seed", 2**64, "seed=18446744073709551616 is out of range"),
    ("seed", -1, "seed=-1 is out of range"),
    ("seed", 1.0, "seed=1.0 is not valid"),
])
def test_synthesis_config_refuses(field, value, match):
    with pytest.raises(InputError, match=match.replace("[", r"\[").replace("(", r"\(")):
        SynthesisConfig(**{field: value})


def test_synthesis_config_normalizes_builds_and_is_frozen():
    c = SynthesisConfig(speaker=np.int64(3), noise_scale=np.float32(0.5), length_scale=1, seed=2**64 - 1)
    assert (type(c.speaker), type(c.noise_scale), type(c.length_scale)) == (int, float, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 1
    b = SynthesisConfig.build(c, seed=7, noise_w=None)  # None knobs do not override
    assert (b.seed, b.speaker, b.noise_w) == (7, 3, None)
    with pytest.raises(InputError, match="unknown synthesis option 'noise'.*speaker, noise_scale, length_scale"):
        SynthesisConfig.build(noise=0.3)
    with pytest.raises(InputError, match="config must be a SynthesisConfig"):
        SynthesisConfig.build(3)


def test_config_and_keyword_knobs_give_the_same_audio(joe_torch):
    text = "Config or keywords."
    a = joe_torch.synthesize(text, SynthesisConfig(seed=3, noise_scale=0.5)).samples
    b = joe_torch.synthesize(text, seed=3, noise_scale=0.5).samples
    c = joe_torch.synthesize(text, SynthesisConfig(seed=9, noise_scale=0.5), seed=3).samples  # knob overrides
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, joe_torch.synthesize(text, seed=4, noise_scale=0.5).samples)
    # seed None: the torch backend's default, 0
    np.testing.assert_array_equal(joe_torch.synthesize(text).samples, joe_torch.synthesize(text, seed=0).samples)
    for bad in (dict(speaker=1.5), dict(noise_w="abc"), dict(seed="x"), dict(sped=1)):
        with pytest.raises(InputError):
            joe_torch.synthesize(text, **bad)
    with pytest.raises(InputError, match="symbol ids must be integers"):
        joe_torch.synthesize_ids(["a"])
    with pytest.raises(InputError, match="sequence of integer symbol ids"):
        joe_torch.synthesize_ids("abc")


# ----------------------------------------------------------------------------- seeds
def test_onnx_refuses_a_seed_it_cannot_honour(joe_onnx, joe_torch):
    from vitsq.backends.executorch import ExecuTorchSynthesizer

    assert joe_torch.seedable and ExecuTorchSynthesizer.seedable and not joe_onnx.seedable
    assert joe_onnx.describe()["seedable"] is False
    ids = joe_onnx.text_to_ids("Seeds.")[0]
    for call in (lambda **k: joe_onnx.synthesize("Seeds.", **k), lambda **k: joe_onnx.synthesize_ids(ids, **k),
                 lambda **k: joe_onnx.synthesize_ids_batch([ids], 0, **k)):
        with pytest.raises(UnsupportedError, match="cannot honour seed=0.*ONNX Runtime.*noise_scale=0"):
            call(seed=0)
        with pytest.raises(UnsupportedError, match="cannot honour seed=5"):
            call(seed=5, noise_scale=0.0)  # noise_w still on
        call()  # no seed: unseeded noise, as the runtime does
    # zero noise: deterministic, and a seed is allowed (it changes nothing)
    quiet = joe_onnx.synthesize("Seeds.", seed=5, **ZERO).samples
    np.testing.assert_array_equal(quiet, joe_onnx.synthesize("Seeds.", **ZERO).samples)


# ----------------------------------------------------------------------------- speakers
def test_speaker_on_a_graph_without_sid(joe_onnx, tmp_path):
    with pytest.raises(InputError, match="single speaker"):
        joe_onnx.synthesize("Hi.", speaker=2)
    # a config that claims more speakers than the graph has is refused at load
    from vitsq.registry import joe_paths

    onnx_path, json_path = joe_paths()
    voice = tmp_path / "voice.onnx"
    voice.symlink_to(onnx_path)
    cfg = json.loads(json_path.read_text())
    cfg["num_speakers"] = 4
    (tmp_path / "voice.onnx.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="4 speakers.*no 'sid' input"):
        vitsq.load(voice, backend="onnx")


def test_per_item_speakers(vosk_tiny):
    texts = [RU, "Как дела?"]
    batch = vosk_tiny.synthesize_batch(texts, speakers=[1, 3], **ZERO)
    for text, spk, got in zip(texts, (1, 3), batch):
        np.testing.assert_allclose(got.samples, vosk_tiny.synthesize(text, speaker=spk, **ZERO).samples, atol=1e-4)
    with pytest.raises(InputError, match="either speaker .* or speakers"):
        vosk_tiny.synthesize_batch(texts, speakers=[1, 3], speaker=1)
    with pytest.raises(InputError, match="2 items"):
        vosk_tiny.synthesize_batch(texts, speakers=[1])
    with pytest.raises(InputError, match="out of range"):
        vosk_tiny.synthesize_batch(texts, speakers=[1, vosk_tiny.num_speakers])


# ----------------------------------------------------------------------------- text and output
def test_text_checks():
    assert validate_text("line one\nline\ttwo\r\n") == "line one\nline\ttwo\r\n"
    with pytest.raises(InputError, match=r"control character U\+0007.* at position 5"):
        validate_text("Hello\x07 world")
    with pytest.raises(InputError, match=r"lone surrogate U\+D800.* at position 2"):
        validate_text("ab\ud800c")
    with pytest.raises(InputError, match=f"limit is {limits.MAX_TEXT_CHARS}"):
        validate_text("a" * (limits.MAX_TEXT_CHARS + 1))


def test_audio_write_is_atomic_and_needs_force(tmp_path):
    import soundfile as sf

    audio = vitsq.Audio(samples=np.zeros(2205, np.float32), sample_rate=22050)
    out = audio.write(tmp_path / "sub" / "a.wav")
    assert sf.info(out).frames == 2205
    other = tmp_path / "b.wav"
    other.write_bytes(b"someone else's")
    with pytest.raises(OutputError, match="already exists"):
        audio.write(other)
    assert other.read_bytes() == b"someone else's"
    audio.write(other, force=True)
    assert sf.info(other).frames == 2205
    with pytest.raises(OutputError, match=r"\.wav"):
        audio.write(tmp_path / "c.mp3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.wav", "sub"]


def test_undescribed_weights_are_unknown(joe_torch):
    from vitsq.synth import BaseSynthesizer

    assert BaseSynthesizer("m", joe_torch.config, None).describe()["weights"] == "unknown"
    assert joe_torch.describe()["weights"] == "trained"
