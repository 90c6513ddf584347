"""Streaming on the ONNX Runtime backend: an artifact's streaming graphs (the latent graph cut out
of model.onnx and the decoder-step graph) give the audio of model.onnx itself -- FP32 within 1e-5
of each sentence's peak, INT8 (ort-static) within 1 LSB of 16-bit audio on a few samples (its
float tail runs in ONNX Runtime's blocked layout whole, chunk by chunk with caches between the
convolutions: same values up to float rounding) -- at every chunk schedule.
Compared at zero noise (ONNX Runtime draws its noise unseeded)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

import vitsq
from conftest import assert_same_16bit, per_sentence_error
from vitsq.errors import ModelLoadError, UnsupportedError
from vitsq.export.onnx import export_onnx_dir
from vitsq.export.onnx_stream import LATENT_FILE, STEP_FILE
from vitsq.quantize import OrtDynamicRecipe

TEXT = "Streaming starts with a short chunk. Then the chunks grow! Does it still sound the same?"
SCHEDULES = [1, [3, 5, 7], None, 100_000]
ZERO = {"noise_scale": 0.0, "noise_w": 0.0}


@pytest.fixture(scope="module")
def joe_fp32_dir(joe_torch, tmp_path_factory):
    # the public export path (`vitsq export joe --format onnx --streaming -o DIR`)
    from vitsq.export.api import export

    return export(joe_torch, "onnx", tmp_path_factory.mktemp("stream") / "joe-fp32", streaming=True)


@pytest.fixture(scope="module")
def joe_fp32(joe_fp32_dir):
    return vitsq.load(joe_fp32_dir)


@pytest.fixture(scope="module")
def joe_int8(joe_torch):
    return vitsq.quantize(joe_torch, "ort-static", calib=4, streaming=True)



def _int16(chunks) -> np.ndarray:
    return np.concatenate([c.to_int16() for c in chunks])


# ----------------------------------------------------------------------------- FP32
def test_fp32_artifact_holds_the_pair_beside_an_unchanged_contract(joe_fp32_dir):
    manifest = json.loads((joe_fp32_dir / "vitsq.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", LATENT_FILE, STEP_FILE}
    rec = manifest["streaming"]
    assert rec["lag_frames"] > 0 and rec["hop"] == 256 and not rec["quantized"]
    assert rec["check"]["max_rel"] <= 1e-5
    model = onnx.load(str(joe_fp32_dir / "model.onnx"), load_external_data=False)
    assert [i.name for i in model.graph.input] == ["input", "input_lengths", "scales"]  # Piper's contract
    assert [o.name for o in model.graph.output][0] == "output"
    _assert_shares_model_weights(joe_fp32_dir)
    step = onnx.load(str(joe_fp32_dir / STEP_FILE), load_external_data=False)
    k = len(rec["states"])
    assert [i.name for i in step.graph.input] == ["z", "flush"] + [f"state_{i}" for i in range(k)]
    latent = onnx.load(str(joe_fp32_dir / LATENT_FILE), load_external_data=False)
    assert [o.name for o in latent.graph.output] == ["z"]
    assert not any(n.name.startswith("/dec/") for n in latent.graph.node)  # the decoder is the step graph's


@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_fp32_stream_equals_synthesize(joe_fp32, schedule):
    assert joe_fp32.streaming == "frames"
    reference = joe_fp32.synthesize(TEXT, **ZERO).samples
    chunks = list(joe_fp32.stream(TEXT, schedule=schedule, **ZERO))
    assert per_sentence_error(chunks, reference) < 1e-5
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert sum(c.sentence_end for c in chunks) == 3 and chunks[-1].sentence_end
    if schedule != 100_000:
        assert len(chunks) > 3  # chunk by chunk, not a sentence at a time


def test_first_chunk_is_small(joe_fp32):
    lag = joe_fp32.describe()["streaming_graphs"]["lag_frames"]
    first = next(joe_fp32.stream("A long sentence, that goes on and on, and then on a little more. " * 3,
                                 schedule=[4, 64], **ZERO))
    assert 0 < len(first.samples) <= (4 + lag) * 256


# ----------------------------------------------------------------------------- INT8
@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_int8_stream_equals_synthesize_in_16_bit_samples(joe_int8, schedule):
    assert joe_int8.streaming == "frames"
    reference = joe_int8.synthesize(TEXT, **ZERO).to_int16()
    assert_same_16bit(_int16(list(joe_int8.stream(TEXT, schedule=schedule, **ZERO))), reference)


def test_int8_step_graph_carries_model_onnx_quantization(joe_int8):
    """Every INT8 decoder weight of model.onnx is in the step graph byte for byte, and the caches
    between INT8 layers are INT8 states."""
    build = joe_int8.build_dir
    model = onnx.load(str(build / "model.onnx"))
    step = onnx.load(str(build / STEP_FILE))
    dec_int8 = {t.name: t.raw_data for t in model.graph.initializer
                if t.name.startswith("dec.") and t.data_type == onnx.TensorProto.INT8}
    copied = {t.name.removeprefix("q8/"): t.raw_data for t in step.graph.initializer if t.name.startswith("q8/")}
    assert dec_int8 and all(copied.get(name) == raw for name, raw in dec_int8.items())
    rec = json.loads((build / "vitsq.json").read_text())["streaming"]
    assert rec["quantized"] and rec["check"]["max_lsb"] <= 1
    assert sum(s["dtype"] == "uint8" for s in rec["states"]) > len(rec["states"]) // 2
    _assert_shares_model_weights(build)


def _assert_shares_model_weights(folder, max_extra: float | None = 0.25):
    """The streaming graphs hold no copy of model.onnx's weights: they point into its bytes
    (ONNX external data), so they add a small fraction to the artifact (``max_extra`` of
    model.onnx's size for a real voice; a tiny test model is mostly graph structure)."""
    model_bytes = (folder / "model.onnx").read_bytes()
    weights = {t.name: t.raw_data for t in onnx.load(str(folder / "model.onnx")).graph.initializer}
    for name in (LATENT_FILE, STEP_FILE):
        proto = onnx.load(str(folder / name), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external and all({e.key: e.value for e in t.external_data}["location"] == "model.onnx"
                                for t in external), name
    latent = onnx.load(str(folder / LATENT_FILE), load_external_data=False)
    checked = 0
    for t in latent.graph.initializer:  # cut out of model.onnx: the same names, the same values
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
            assert model_bytes[info["offset"]:info["offset"] + info["length"]] == weights[t.name]
            checked += 1
    assert checked > 10
    inline = sum(len(t.raw_data) for n in (LATENT_FILE, STEP_FILE)
                 for t in onnx.load(str(folder / n), load_external_data=False).graph.initializer)
    assert inline < 0.05 * sum(len(raw) for raw in weights.values())
    if max_extra is not None:
        extra = sum((folder / n).stat().st_size for n in (LATENT_FILE, STEP_FILE))
        assert extra < max_extra * len(model_bytes), f"streaming graphs add {extra} bytes to {len(model_bytes)}"


def test_saved_int8_artifact_streams(joe_int8, tmp_path):
    saved = joe_int8.save(tmp_path / "int8")
    _assert_shares_model_weights(saved)
    loaded = vitsq.load(saved)
    assert loaded.streaming == "frames" and loaded.describe()["streaming_graphs"]["quantized"]
    text = "Saved and loaded, it streams the same."
    assert_same_16bit(_int16(list(loaded.stream(text, schedule=[2, 9], **ZERO))),
                      joe_int8.synthesize(text, **ZERO).to_int16())


# ----------------------------------------------------------------------------- Vosk VITS2 (multi-band iSTFT)
def test_vits2_tiny_fp32_streams(vosk_tiny, tmp_path):
    synth = vitsq.load(export_onnx_dir(vosk_tiny, tmp_path / "vosk-fp32"))
    assert synth.streaming == "frames" and synth.describe()["streaming_graphs"]["lag_frames"] > 0
    text = "Привет, как дела?\nХорошо."
    reference = synth.synthesize(text, speaker=1, **ZERO).samples
    for schedule in ([1], [2, 3]):
        assert per_sentence_error(list(synth.stream(text, speaker=1, schedule=schedule, **ZERO)), reference) < 1e-5


def test_vits2_tiny_int8_streams(vosk_tiny, tmp_path):
    from vitsq.export.api import export

    q = vitsq.quantize(vosk_tiny, "ort-static", calib=4, streaming=True)
    text = "Привет, как дела?\nХорошо."
    reference = q.synthesize(text, speaker=1, **ZERO).to_int16()
    for schedule in ([1], [2, 3]):
        assert_same_16bit(_int16(list(q.stream(text, speaker=1, schedule=schedule, **ZERO))), reference)
    # as a vosk-tts folder: the graphs are copied and point into the folder's own model.onnx
    folder = export(q, "vosk-dir", tmp_path / "vosk-int8")
    _assert_shares_model_weights(folder, max_extra=None)
    again = vitsq.load(folder)
    assert again.streaming == "frames"
    assert_same_16bit(_int16(list(again.stream(text, speaker=1, schedule=[3], **ZERO))), reference)


# ----------------------------------------------------------------------------- refusals
def test_dynamic_quantization_cannot_stream(joe_torch):
    with pytest.raises(UnsupportedError, match="need the ort-static recipe"):
        vitsq.quantize(joe_torch, OrtDynamicRecipe(), streaming=True)


def test_a_missing_streaming_graph_is_refused(joe_fp32_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(joe_fp32_dir, broken)
    (broken / STEP_FILE).unlink()
    with pytest.raises(ModelLoadError, match=STEP_FILE):
        vitsq.load(broken)


def test_graphs_without_the_pair_stream_by_sentence(joe_onnx):
    chunks = list(joe_onnx.stream(TEXT, **ZERO))
    assert joe_onnx.streaming == "sentences" and len(chunks) == 3


def test_quantize_cli_streaming_flag_is_refused_outside_ort_static(tmp_path, capsys):
    from vitsq.cli import main

    assert main(["quantize", "joe", "--recipe", "eager", "--streaming", "-o", str(tmp_path / "q")]) == 2
    assert "--streaming applies to the ort-static recipe only" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_cli_export_streaming_folder_and_refusals(tmp_path, capsys):
    """`vitsq export --format onnx --streaming` writes a folder that streams by frames (fp32 and
    ort-static); formats and recipes that cannot stream are refused before loading the model."""
    from conftest import SHARED
    from vitsq.cli import main

    tiny = SHARED / "fixtures" / "vosk_vits2"
    model = [str(tiny / "tiny_G_1.pth"), "--config", str(tiny / "tiny_config.json")]
    for recipe in ("fp32", "ort-static"):
        out = tmp_path / recipe
        assert main(["export", *model, "--format", "onnx", "--streaming", "--recipe", recipe, "-o", str(out)]) == 0
        synth = vitsq.load(out)
        assert synth.streaming == "frames"
        assert bool(synth.describe()["streaming_graphs"]["quantized"]) == (recipe != "fp32")
    capsys.readouterr()
    bad = [(["--format", "piper"], "--streaming applies to --format onnx and executorch"),
           (["--format", "onnx", "--recipe", "ort-dynamic"], "needs --recipe fp32 or ort-static"),
           (["--format", "onnx", "--recipe", "int4"], "valid are fp32, ort-static, ort-dynamic")]
    for extra, message in bad:
        assert main(["export", *model, "--streaming", *extra, "-o", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
    assert main(["export", str(tmp_path / "fp32"), "--format", "onnx", "--streaming", "-o", str(tmp_path / "again")]) == 2
    assert "export the source model with --streaming" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "again").exists()
