"""sherpa-onnx folders (``vitsq export --format sherpa``) run in the real ``sherpa-onnx`` package.

Oracles: ONNX Runtime running the original joe voice (FP32), and ONNX Runtime running the same
INT8 file (INT8), both at zero noise (sherpa-onnx draws its noise inside the graph, unseeded).
sherpa-onnx 2.x takes phonemes from the caller; the FP32 test drives ``sherpa_onnx.OfflineTts``
directly with phonemes from piper-phonemize, as a user would (the folder's README recipe).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED
from vitsq.errors import ModelLoadError, OutputError, UnsupportedError

TEXT = "The quick brown fox jumps over the lazy dog."
ZERO = dict(noise_scale=0.0, noise_w=0.0)
TINY = SHARED / "fixtures" / "vosk_vits2"
SHERPA_KEYS = {"comment": "piper", "n_speakers": "1", "model_type": "vits", "voice": "en-us", "has_espeak": "1",
               "add_blank": "0", "sample_rate": "22050", "language": "en"}


def _meta(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def fp32_folder(tmp_path_factory, joe_torch):
    import vitsq

    return vitsq.export(joe_torch, "sherpa", tmp_path_factory.mktemp("sherpa") / "joe-fp32")


@pytest.fixture(scope="module")
def int8_model(joe_torch):
    """joe quantized with the size-first ort-static preset, the one measured in sherpa-onnx
    (2 calibration sentences: a speed choice)."""
    import vitsq

    return vitsq.quantize(joe_torch, "ort-static:fast", calib=2)


@pytest.fixture(scope="module")
def int8_folder(tmp_path_factory, int8_model):
    import vitsq

    return vitsq.export(int8_model, "sherpa", tmp_path_factory.mktemp("sherpa") / "joe-int8")


def test_fp32_folder_in_sherpa_onnx_equals_onnx_runtime(fp32_folder, joe_onnx):
    import sherpa_onnx
    from piper_phonemize import phonemize_espeak

    import vitsq

    manifest = json.loads((fp32_folder / "vitsq.json").read_text())
    model = fp32_folder / manifest["model_file"]
    assert model.name == "en_US-joe-medium.onnx" and manifest["kind"] == "sherpa"
    assert (fp32_folder / "en_US-joe-medium.onnx.json").is_file() and (fp32_folder / "espeak-ng-data" / "phontab").is_file()
    assert "sherpa-onnx 2.0.1" in (fp32_folder / "README.md").read_text()
    meta = _meta(model)
    assert {k: meta.get(k) for k in SHERPA_KEYS} == SHERPA_KEYS and "vitsq.config" in meta  # both sets of keys
    tokens = (fp32_folder / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert tokens[:4] == ["_ 0", "^ 1", "$ 2", "  3"]

    # the README's recipe: phonemes from piper-phonemize, one thread, raw silences
    tts = sherpa_onnx.OfflineTts(sherpa_onnx.OfflineTtsConfig(model=sherpa_onnx.OfflineTtsModelConfig(
        vits=sherpa_onnx.OfflineTtsVitsModelConfig(model=str(model), tokens=str(fp32_folder / "tokens.txt"),
                                                   noise_scale=0.0, noise_scale_w=0.0), num_threads=1)))
    assert (tts.sample_rate, tts.num_speakers) == (22050, 1)
    gen = sherpa_onnx.GenerationConfig()
    (phonemes,) = phonemize_espeak(TEXT, "en-us")
    gen.phoneme_codepoints = [[ord(p) for p in phonemes]]
    gen.silence_scale = 1.0
    got = np.asarray(tts.generate("", gen).samples, dtype=np.float32)
    # the original voice in ONNX Runtime, on the same phonemes (vitsq's front-end)
    (ids,) = joe_onnx.text_to_ids(TEXT)
    ref = joe_onnx.synthesize_ids(ids, **ZERO).samples
    assert len(got) == len(ref) > 22050 and _rel(got, ref) < 1e-3

    synth = vitsq.load(fp32_folder, threads=1)  # the folder's own backend: sherpa
    assert synth.backend == "sherpa" and synth.describe()["sherpa_onnx"] == "2.0.1"
    ours = synth.synthesize(TEXT, **ZERO).samples
    assert len(ours) == len(got) and np.abs(ours - got).max() < 1e-6
    slow = synth.synthesize_ids(ids, length_scale=1.25, **ZERO).samples  # speed = 1 / length_scale
    assert len(slow) == len(joe_onnx.synthesize_ids(ids, length_scale=1.25, **ZERO).samples) > 1.1 * len(ref)


def test_int8_folder_in_sherpa_onnx_equals_same_file_in_onnx_runtime(int8_model, int8_folder):
    """sherpa-onnx 2.0.1 bundles ONNX Runtime 1.28.2; vitsq runs 1.32.0. On the FP32 graph they agree
    to 1e-5; on INT8 graphs their kernels may round a duration differently (checked: plain ONNX
    Runtime 1.28.0 reproduces sherpa-onnx's INT8 audio sample for sample, while 1.32.0 gave one
    phoneme a frame more and a later one a frame less). So each sentence must keep its length
    within two frames and its spectrum, which a wrong id layout, scale or speaker would change."""
    import vitsq
    from vitsq.evaluate.metrics import log_mel

    built = _meta(int8_model.build_dir / "model.onnx")  # the recipe's own graph carries the keys
    assert {k: built.get(k) for k in SHERPA_KEYS} == SHERPA_KEYS
    manifest = json.loads((int8_folder / "vitsq.json").read_text())
    assert manifest["quantization"]["recipe"]["recipe"] == "ort-static"
    assert "(ort-static)" in (int8_folder / "README.md").read_text()
    fp32_bytes = manifest["quantization"]["fp32_onnx_bytes"]
    assert (int8_folder / manifest["model_file"]).stat().st_size * 3 < fp32_bytes

    sherpa = vitsq.load(int8_folder, backend="sherpa", threads=1)
    ort = vitsq.load(int8_folder, backend="onnx", threads=1)
    assert sherpa.quantization["recipe"]["recipe"] == "ort-static"
    for text in (TEXT, "Hello world, this is a test."):
        a, b = sherpa.synthesize(text, **ZERO).samples, ort.synthesize(text, **ZERO).samples
        spectrum = [log_mel(x, 22050).mean(axis=1) for x in (a, b)]  # time-averaged: blind to a moved frame
        # measured <= 0.04 nats; INT8 vs FP32 on the second sentence: 1.5
        gap = float(np.abs(spectrum[0] - spectrum[1]).mean())
        assert abs(len(a) - len(b)) <= 2 * 256 and len(a) > 22050 and gap < 0.1, (text, len(a), len(b), gap)
    with pytest.raises(UnsupportedError, match="cannot honour seed"):
        sherpa.synthesize(TEXT, seed=1)  # noise drawn in the graph: unseedable, as on the onnx backend


def test_force_replaces_only_a_vitsq_folder_and_data_can_be_left_out(int8_model, int8_folder, tmp_path):
    import vitsq

    out = tmp_path / "joe-int8"
    shutil.copytree(int8_folder, out)
    with pytest.raises(OutputError, match="already exists"):
        vitsq.export(int8_model, "sherpa", out)
    vitsq.export(int8_model, "sherpa", out, force=True, espeak_data=False)
    assert not (out / "espeak-ng-data").exists() and "--no-espeak-data" in (out / "README.md").read_text()
    assert vitsq.load(out, backend="sherpa", threads=1).synthesize("Hi there.", **ZERO).samples.size > 1000
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="did not write"):
        vitsq.export(int8_model, "sherpa", mine, force=True)
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]


def test_refuses_vosk_vits2_saying_why(vosk_tiny, tmp_path):
    import vitsq

    with pytest.raises(UnsupportedError) as err:
        vitsq.export(vosk_tiny, "sherpa", tmp_path / "vosk")
    msg = str(err.value)
    assert "Vosk VITS2" in msg and "several characters" in msg and "a0" in msg and "--format vosk-dir" in msg
    assert not (tmp_path / "vosk").exists()


def test_cli_refusals_before_loading(tmp_path, capsys, monkeypatch):
    import piper_phonemize

    import vitsq
    from vitsq.cli import main

    monkeypatch.setattr(vitsq.registry, "load", lambda *a, **k: pytest.fail("loaded the model before refusing"))
    (tmp_path / "somedir").mkdir()
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "vitsq.json").write_text('{"kind": "sherpa"}')
    cases = [
        (["--format", "sherpa", "-o", str(tmp_path / "somedir"), "--force"], "did not write"),
        (["--format", "sherpa", "-o", str(tmp_path / "done")], "already exists"),
        (["--format", "sherpa", "-o", str(tmp_path / "x.onnx")], "must be a folder"),
        (["--format", "sherpa", "--recipe", "pt2e", "-o", str(tmp_path / "a")], "does not apply to --format sherpa"),
        (["--format", "piper", "--no-espeak-data", "-o", str(tmp_path / "a.onnx")], "applies to --format sherpa only"),
    ]
    for extra, msg in cases:
        assert main(["export", "joe"] + extra) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1 and "Traceback" not in err, (extra, err)
    # piper-phonemize without its data folder: refused, naming the way out
    fake = tmp_path / "site" / "piper_phonemize"
    fake.mkdir(parents=True)
    monkeypatch.setattr(piper_phonemize, "__file__", str(fake / "__init__.py"))
    assert main(["export", "joe", "--format", "sherpa", "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "espeak-ng data folder" in err and "--no-espeak-data" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "site", "somedir"]


def test_backend_refuses_what_sherpa_onnx_would_exit_on(tmp_path):
    """sherpa-onnx ends the process on these; the backend refuses them first."""
    from vitsq.backends.sherpa import check_model_metadata, read_tokens
    from vitsq.registry import joe_paths

    with pytest.raises(ModelLoadError, match="n_speakers"):
        check_model_metadata(joe_paths()[0])  # the original voice: no sherpa-onnx metadata
    bad = tmp_path / "tokens.txt"
    bad.write_text("_ 0\n^ 1\n$ 2\na0 3\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="one-character"):
        read_tokens(bad)
    bad.write_text("_ 0\n^ 1\n", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="lacks '\\$'"):
        read_tokens(bad)
