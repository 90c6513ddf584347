"""Streaming on the ExecuTorch backend: an artifact exported with ``streaming=True`` decodes chunk
by chunk (the ``flow`` and ``step_first``/``step_next``/``step_last`` methods of its
``decoder.pte``) and gives the audio of that program's ``forward`` -- FP32 within 1e-5 of each
sentence's peak, INT8 (pt2e) within 1 LSB of 16-bit audio (measured: identical) -- at every chunk
schedule, noise on (seeded).

Lowering to XNNPACK takes time in proportion to the number of graph nodes, not to the channel
counts, so the two exports here are of small random-weight models made from the real configs
(one encoder layer, one flow, two one-dilation residual blocks per stage): a HiFi-GAN VITS with
joe's front-end (FP32, about 1 CPU minute) and an MB-iSTFT VITS2 with the Vosk tiny fixture's
front-end (INT8 decoder as in the VITS2 preset, everything INT8 down to the iSTFT; about 2.5 CPU
minutes). conftest's background worker makes both (``BACKGROUND_EXPORTS``) while the rest of the
suite runs; these tests run last and wait for them. joe itself is checked by every export
(``streaming.check`` in its manifest: the pt2e preset streams bit-exactly).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import vitsq
from conftest import VOSK_TINY, per_sentence_error, random_weight_synth
from vitsq.backends.executorch import FLOW_METHOD, STEP_METHODS, ExecuTorchSynthesizer
from vitsq.errors import InputError, ModelLoadError
from vitsq.export.executorch import export_executorch
from vitsq.quantize.recipes import PT2ERecipe

TEXT_EN = "Streaming starts with a short chunk. Then the chunks grow! Does it still sound the same?"
TEXT_RU = "Привет, как дела?\nХорошо."
MAX_CHUNK = 24  # small, so the default schedule's later chunks run as several calls
SCHEDULES = [1, [3, 5, 7], None, [40], 100_000]  # 1-frame, odd sizes, default, > MAX_CHUNK, one chunk
#: one encoder layer, one flow, and per stage two residual blocks of one dilation each (of different
#: look-aheads, so their outputs wait for each other as in the real decoders)
SMALL = {"n_layers": 1, "resblock_kernel_sizes": (3, 5), "resblock_dilation_sizes": ((1,), (2,)),
         "n_flows": 1, "flow_wn_layers": 1, "use_sdp": False}
#: joe's config made small: the random-weight HiFi-GAN VITS of the FP32 export
JOE_SMALL = {"name": "joe-small", "config": {
    **SMALL, "inter_channels": 16, "hidden_channels": 32, "filter_channels": 64, "upsample_rates": (8, 8),
    "upsample_kernel_sizes": (16, 16), "upsample_initial_channel": 32, "hop_length": 64}}

# conftest's background worker makes these (export_executorch keyword arguments + the model spec)
BACKGROUND_EXPORTS = {
    "stream_fp32_dir": {"model": "joe", "random_weights": JOE_SMALL, "max_tokens": 160, "max_frames": 512,
                 "streaming": True, "max_chunk_frames": MAX_CHUNK},
    # the decoder stage only (the VITS2 preset's decoder: all INT8, iSTFT included): the step
    # methods mirror it; an INT8 flow is the same converted graph in the flow and forward methods
    "stream_int8_dir": {**VOSK_TINY, "random_weights": {"name": "vosk-small", "config": {**SMALL, "cond_layer_idx": 0}},
                 "recipe": PT2ERecipe(per_channel=True, stages=("decoder",), keep_float=()).to_dict(),
                 "max_tokens": 64, "max_frames": 512, "calibration_sentences": 2, "streaming": True,
                 "max_chunk_frames": MAX_CHUNK},
}


@pytest.fixture(scope="module")
def small_vits(joe_torch):
    """The model of the FP32 export, in this process (cheap: it is the export that costs)."""
    return random_weight_synth(joe_torch, **JOE_SMALL)


@pytest.fixture(scope="module")
def stream_fp32_dir(background_exports):
    return background_exports.path("stream_fp32_dir")


@pytest.fixture(scope="module")
def fp32(stream_fp32_dir):
    return vitsq.load(stream_fp32_dir, backend="executorch")


@pytest.fixture(scope="module")
def stream_int8_dir(background_exports):
    return background_exports.path("stream_int8_dir")


# ----------------------------------------------------------------------------- FP32
@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_fp32_stream_equals_synthesize(fp32, schedule):
    assert fp32.streaming == "frames"
    reference = fp32.synthesize(TEXT_EN, seed=3).samples
    chunks = list(fp32.stream(TEXT_EN, seed=3, schedule=schedule))
    assert per_sentence_error(chunks, reference) < 1e-5
    assert [c.sentence for c in chunks if c.sentence_end] == [0, 1, 2]
    if schedule != 100_000:
        assert len(chunks) > 6  # really chunked, not one chunk per sentence


def test_fp32_first_chunk_is_small(fp32):
    chunks = list(fp32.stream(TEXT_EN, seed=3, schedule=[2, MAX_CHUNK]))
    hop = fp32.config.hop_length
    assert len(chunks[0].samples) < 5 * hop  # about the 2 frames asked for (the first call holds back its look-ahead)
    assert chunks[0].ready_seconds < chunks[-1].ready_seconds


def test_manifest_describes_the_streaming_programs(stream_fp32_dir, fp32):
    manifest = json.loads((stream_fp32_dir / "vitsq.json").read_text())
    et = manifest["executorch"]
    st = et["streaming"]
    assert et["export_version"] == 1  # old readers still read encoder.pte/decoder.pte
    assert set(manifest["files"]) == {"encoder.pte", "decoder.pte"} and st["max_chunk"] == MAX_CHUNK
    assert st["methods"] == {"flow": FLOW_METHOD, **STEP_METHODS} and st["lag_frames"] > 0
    assert st["check"]["max_diff_of_peak"] < 1e-5 and st["check"]["chunks"] >= 3
    assert set(et["programs"]["decoder"]["methods"]) == {FLOW_METHOD, *STEP_METHODS.values()}
    assert fp32.describe()["streaming"] == "frames"
    from executorch.runtime import Runtime

    names = Runtime.get().load_program(stream_fp32_dir / "decoder.pte").method_names
    assert set(names) == {"forward", FLOW_METHOD, *STEP_METHODS.values()}


# ----------------------------------------------------------------------------- INT8
def test_int8_stream_equals_synthesize_in_16_bit_samples(stream_int8_dir):
    q = vitsq.load(stream_int8_dir, backend="executorch")
    manifest = json.loads((stream_int8_dir / "vitsq.json").read_text())
    assert manifest["quantization"]["recipe"] == "pt2e" and manifest["quantization"]["stages"] == ["decoder"]
    assert manifest["executorch"]["streaming"]["check"]["max_lsb"] <= 1
    reference = q.synthesize(TEXT_RU, speaker=1, seed=5).to_int16().astype(np.int32)
    for schedule in SCHEDULES:
        chunks = list(q.stream(TEXT_RU, speaker=1, seed=5, schedule=schedule))
        streamed = np.concatenate([c.to_int16() for c in chunks]).astype(np.int32)
        assert streamed.shape == reference.shape, schedule
        assert np.abs(streamed - reference).max() <= 1, schedule


# ----------------------------------------------------------------------------- old and broken artifacts
def _rewrite(src, dst, edit) -> None:
    """Copy artifact ``src`` to ``dst``, apply ``edit(manifest)``, write a valid manifest again."""
    from vitsq.manifest import manifest_config, write_manifest

    shutil.copytree(src, dst)
    m = json.loads((dst / "vitsq.json").read_text())
    edit(m)
    write_manifest(dst, m["kind"], config=manifest_config(m), files=list(m["files"]), source=m["source"],
                   quantization=m["quantization"], executorch=m["executorch"], name=m["name"], label=m["label"])


def test_artifact_without_streaming_section_streams_by_sentence(stream_fp32_dir, fp32, tmp_path):
    def strip(m):  # the manifest of an export without streaming (or of an older vitsq)
        del m["executorch"]["streaming"], m["executorch"]["programs"]["decoder"]["methods"]

    _rewrite(stream_fp32_dir, tmp_path / "old", strip)
    old = vitsq.load(tmp_path / "old", backend="executorch")
    assert isinstance(old, ExecuTorchSynthesizer) and old.streaming == "sentences"
    chunks = list(old.stream(TEXT_EN, seed=3, schedule=1))
    assert len(chunks) == 3
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), fp32.synthesize(TEXT_EN, seed=3).samples)


def test_bad_streaming_section_is_refused(stream_fp32_dir, tmp_path):
    def bad(m):
        st = m["executorch"]["streaming"]
        st["max_chunk"] = st["lag_frames"]

    _rewrite(stream_fp32_dir, tmp_path / "bad", bad)
    with pytest.raises(ModelLoadError, match="streaming section"):
        vitsq.load(tmp_path / "bad", backend="executorch")


def test_export_refuses_bad_chunk_bounds_before_any_work(small_vits, tmp_path):
    from vitsq.streaming.decoder import StreamingDecoder

    lag = StreamingDecoder(small_vits.model).lag_frames
    with pytest.raises(InputError, match="max_chunk_frames=1 "):
        export_executorch(small_vits, tmp_path / "a", streaming=True, max_chunk_frames=1)
    with pytest.raises(InputError, match=f"look-ahead \\({lag}\\)"):
        export_executorch(small_vits, tmp_path / "b", streaming=True, max_chunk_frames=lag)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_cli_streaming_flag_is_for_streaming_formats(tmp_path, capsys):
    """--streaming is refused, before loading, for formats whose files cannot stream."""
    from vitsq.cli import main

    assert main(["export", "joe", "--format", "piper", "--streaming", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "--streaming applies to --format onnx and executorch" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
