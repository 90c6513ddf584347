"""Streaming on the ExecuTorch backend: an artifact exported with ``streaming=True`` decodes chunk
by chunk (``flow.pte`` + the ``first``/``next``/``last`` methods of ``decoder_step.pte``) and gives
the audio of its own ``decoder.pte`` -- FP32 within 1e-5 of each sentence's peak, INT8 (pt2e)
within 1 LSB of 16-bit audio (measured: identical) -- at every chunk schedule, noise on (seeded).

Lowering to XNNPACK costs minutes per program on two cores and grows with the number of graph
nodes, not with the channel counts, so the exports here are of two small random-weight models
made from the real configs (one encoder layer, one flow, two residual blocks per stage): a
HiFi-GAN VITS with joe's front-end (FP32) and an MB-iSTFT VITS2 with the Vosk tiny fixture's
front-end (INT8, the VITS2 preset: everything INT8 down to the iSTFT). joe itself is measured by
the export's own check (README / docs).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import vitsq
from vitsq.backends.executorch import FLOW_FILE, STEP_FILE, ExecuTorchSynthesizer
from vitsq.backends.torch import TorchSynthesizer
from vitsq.errors import InputError, ModelLoadError
from vitsq.export.executorch import export_executorch

TEXT_EN = "Streaming starts with a short chunk. Then the chunks grow! Does it still sound the same?"
TEXT_RU = "Привет, как дела?\nХорошо."
MAX_CHUNK = 24  # small, so the default schedule's later chunks run as several calls
SCHEDULES = [1, [3, 5, 7], None, [40], 100_000]  # 1-frame, odd sizes, default, > MAX_CHUNK, one chunk
SMALL = {"n_layers": 1, "resblock_kernel_sizes": (3, 5), "resblock_dilation_sizes": ((1, 2), (1, 2)),
         "n_flows": 1, "flow_wn_layers": 1, "use_sdp": False}


def _small_synth(base, name: str, **changes) -> TorchSynthesizer:
    """A random-weight model of ``base``'s config made small (see module docstring), with
    ``base``'s front-end."""
    from vitsq.models.vits import VITS
    from vitsq.models.vits2 import VITS2

    config = base.config.replace(**SMALL, **changes)
    torch.manual_seed(0)
    model = (VITS2 if config.arch == "vits2" else VITS)(config).eval()
    return TorchSynthesizer(model, name, base.frontend, label="untrained (random weights)")


@pytest.fixture(scope="module")
def small_vits(joe_torch):
    return _small_synth(joe_torch, "joe-small", inter_channels=16, hidden_channels=32, filter_channels=64,
                        upsample_rates=(8, 8), upsample_kernel_sizes=(16, 16), upsample_initial_channel=32,
                        hop_length=64)


@pytest.fixture(scope="module")
def fp32_dir(small_vits, tmp_path_factory):
    return export_executorch(small_vits, tmp_path_factory.mktemp("et-stream") / "fp32", max_tokens=160,
                             max_frames=512, streaming=True, max_chunk_frames=MAX_CHUNK)


@pytest.fixture(scope="module")
def fp32(fp32_dir):
    return vitsq.load(fp32_dir, backend="executorch")


@pytest.fixture(scope="module")
def int8_dir(vosk_tiny, tmp_path_factory):
    small = _small_synth(vosk_tiny, "vosk-small", cond_layer_idx=0)
    return export_executorch(small, tmp_path_factory.mktemp("et-stream") / "int8", recipe="pt2e", max_tokens=64,
                             max_frames=512, calibration_sentences=2, streaming=True, max_chunk_frames=MAX_CHUNK)


def _per_sentence_error(chunks, reference: np.ndarray) -> float:
    """Largest |streamed - reference| over a sentence, relative to that sentence's peak."""
    streamed = np.concatenate([c.samples for c in chunks])
    assert streamed.shape == reference.shape
    worst, start = 0.0, 0
    for k in range(chunks[-1].sentence + 1):
        n = sum(len(c.samples) for c in chunks if c.sentence == k)
        ref = reference[start : start + n]
        worst = max(worst, float(np.abs(streamed[start : start + n] - ref).max() / np.abs(ref).max()))
        start += n
    return worst


# ----------------------------------------------------------------------------- FP32
@pytest.mark.parametrize("schedule", SCHEDULES, ids=str)
def test_fp32_stream_equals_synthesize(fp32, schedule):
    assert fp32.streaming == "frames"
    reference = fp32.synthesize(TEXT_EN, seed=3).samples
    chunks = list(fp32.stream(TEXT_EN, seed=3, schedule=schedule))
    assert _per_sentence_error(chunks, reference) < 1e-5
    assert [c.sentence for c in chunks if c.sentence_end] == [0, 1, 2]
    if schedule != 100_000:
        assert len(chunks) > 6  # really chunked, not one chunk per sentence


def test_fp32_first_chunk_is_small(fp32):
    chunks = list(fp32.stream(TEXT_EN, seed=3, schedule=[2, MAX_CHUNK]))
    hop = fp32.config.hop_length
    assert len(chunks[0].samples) < 5 * hop  # about the 2 frames asked for (the first call holds back its look-ahead)
    assert chunks[0].ready_seconds < chunks[-1].ready_seconds


def test_manifest_describes_the_streaming_programs(fp32_dir, fp32):
    manifest = json.loads((fp32_dir / "vitsq.json").read_text())
    et = manifest["executorch"]
    st = et["streaming"]
    assert et["export_version"] == 1  # old readers still read encoder.pte/decoder.pte
    assert {FLOW_FILE, STEP_FILE} <= set(manifest["files"]) and st["max_chunk"] == MAX_CHUNK
    assert st["methods"] == ["first", "next", "last"] and st["lag_frames"] == fp32._step.lag_frames
    assert st["check"]["max_diff_of_peak"] < 1e-5 and st["check"]["chunks"] >= 3
    assert et["programs"]["decoder_step"]["xnnpack_partitions"] > 0
    assert fp32.describe()["streaming"] == "frames"
    assert fp32.size_bytes() == sum(f["bytes"] for f in manifest["files"].values())


# ----------------------------------------------------------------------------- INT8
def test_int8_stream_equals_synthesize_in_16_bit_samples(int8_dir):
    q = vitsq.load(int8_dir, backend="executorch")
    manifest = json.loads((int8_dir / "vitsq.json").read_text())
    assert manifest["quantization"]["recipe"] == "pt2e" and "decoder" in manifest["quantization"]["stages"]
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
    files = edit(m) or list(m["files"])
    write_manifest(dst, m["kind"], config=manifest_config(m), files=files, source=m["source"],
                   quantization=m["quantization"], executorch=m["executorch"], name=m["name"], label=m["label"])


def test_artifact_without_streaming_programs_streams_by_sentence(fp32_dir, fp32, tmp_path):
    def strip(m):  # what an export without streaming (or an older vitsq) wrote
        del m["executorch"]["streaming"], m["executorch"]["programs"]["flow"]
        del m["executorch"]["programs"]["decoder_step"]
        for f in (FLOW_FILE, STEP_FILE):
            (tmp_path / "old" / f).unlink()
        return [f for f in m["files"] if f not in (FLOW_FILE, STEP_FILE)]

    _rewrite(fp32_dir, tmp_path / "old", strip)
    old = vitsq.load(tmp_path / "old", backend="executorch")
    assert isinstance(old, ExecuTorchSynthesizer) and old.streaming == "sentences"
    chunks = list(old.stream(TEXT_EN, seed=3, schedule=1))
    assert len(chunks) == 3
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), fp32.synthesize(TEXT_EN, seed=3).samples)


def test_bad_streaming_section_is_refused(fp32_dir, tmp_path):
    def bad(m):
        st = m["executorch"]["streaming"]
        st["max_chunk"] = st["lag_frames"]

    _rewrite(fp32_dir, tmp_path / "bad", bad)
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
