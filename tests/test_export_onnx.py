"""ONNX export checked by the real runtimes: ONNX Runtime, PyPI ``piper-tts`` and ``vosk-tts``.

FP32 exports must equal our PyTorch output with zero noise (in-graph noise cannot be seeded like
PyTorch's); the INT8 (ort-static) voice must stay within a quality budget of the FP32 audio.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED
from vitsq.errors import InputError, UnsupportedError
from vitsq.synth import pad_batch

TINY = SHARED / "fixtures" / "vosk_vits2"
EN_TEXT = "Hello world, this is a test of the exported voice."
RU_TEXT = "привет, мир! замок молоко"
ZERO = dict(noise_scale=0.0, noise_w=0.0)


@pytest.fixture(scope="module")
def joe_voice(tmp_path_factory, joe_torch):
    """joe exported once as a Piper voice (voice.onnx + voice.onnx.json)."""
    from vitsq.export.onnx import export_piper_voice

    return export_piper_voice(joe_torch, tmp_path_factory.mktemp("piper") / "joe.onnx")


@pytest.fixture(scope="module")
def tiny_vosk():
    """The tiny golden Vosk VITS2 checkpoint, with a pronunciation dictionary in its front-end."""
    import vitsq
    from vitsq.text.russian import RussianFrontend

    pth, cfg = TINY / "tiny_G_1.pth", TINY / "tiny_config.json"
    assert pth.is_file() and cfg.is_file(), f"golden fixture missing: {TINY}"
    synth = vitsq.load(pth, config_path=cfg)
    dictionary = Path(__file__).parent / "data" / "ru_dictionary.txt"
    synth.frontend = RussianFrontend(synth.config, dictionary)
    return synth


def test_fp32_matches_torch_with_dynamic_batch(joe_torch, joe_voice):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(joe_voice), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "input_lengths", "scales"]  # single speaker: no sid
    assert sess.get_outputs()[0].name == "output"
    ids = [joe_torch.text_to_ids("Short one.")[0], joe_torch.text_to_ids(EN_TEXT)[0]]
    assert len(ids[0]) < len(ids[1])
    x, lengths = pad_batch(ids)
    audio, durations, out_len = sess.run(None, {"input": x, "input_lengths": lengths,
                                                "scales": np.array([0.0, 1.0, 0.0], np.float32)})
    assert audio.shape[0] == 2 and durations.shape == (2, 1, x.shape[1])
    for i, seq in enumerate(ids):
        ref = joe_torch.synthesize_ids(seq, **ZERO).samples
        got = audio[i, 0, : out_len[i]]
        assert len(got) == len(ref)
        assert np.abs(got - ref).max() < 1e-3
        assert durations[i].sum() * 256 == out_len[i]
    # metadata describes the file: a bare .onnx loads through the registry
    import vitsq

    bare = joe_voice.parent / "bare.onnx"
    bare.write_bytes(joe_voice.read_bytes())
    loaded = vitsq.load(bare, backend="onnx")
    assert loaded.sample_rate == 22050 and loaded.config.phoneme_id_map == joe_torch.config.phoneme_id_map
    got = loaded.synthesize(EN_TEXT, **ZERO).samples
    np.testing.assert_allclose(got, joe_torch.synthesize(EN_TEXT, **ZERO).samples, atol=1e-3)


def _piper_audio(voice_path: Path, text: str, **kw) -> tuple[np.ndarray, list[int]]:
    """Audio of the first sentence from the Piper runtime, and the phoneme ids it fed the graph.

    The comparison uses the runtime's own ids: its bundled espeak-ng may phonemize a word
    differently from ours, which is a front-end matter, not an export one.
    """
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(str(voice_path))
    cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False, **kw)
    chunk = next(iter(voice.synthesize(text, syn_config=cfg)))
    return chunk.audio_float_array, list(chunk.phoneme_ids)


def test_piper_runtime_loads_fp32_voice(joe_torch, joe_voice):
    from piper import PiperVoice

    got, ids = _piper_audio(joe_voice, EN_TEXT)
    ref = joe_torch.synthesize_ids(ids, **ZERO).samples
    assert len(got) == len(ref)
    assert np.abs(got - np.clip(ref, -1, 1)).max() < 1e-3
    # alignments: Piper reads our `durations` output as samples per phoneme id
    voice = PiperVoice.load(str(joe_voice), include_alignments=True)
    chunk = next(iter(voice.synthesize("Alignment test.", include_alignments=True)))
    assert chunk.phoneme_alignments and sum(a.num_samples for a in chunk.phoneme_alignments) == len(chunk.audio_float_array)


def test_vosk_runtime_loads_exported_folder(tiny_vosk, tmp_path):
    import vosk_tts

    import vitsq
    from vitsq.export.onnx import export_vosk_dir

    out = export_vosk_dir(tiny_vosk, tmp_path / "vosk")
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "config.json", "dictionary"}
    assert "замок" in (out / "dictionary").read_text(encoding="utf-8")
    synth = vosk_tts.Synth(vosk_tts.Model(model_path=str(out)))
    for speaker in (0, 3):
        got = synth.synth_audio(RU_TEXT, speaker_id=speaker, noise_level=0.0, duration_noise_level=0.0)
        ref = tiny_vosk.synthesize(RU_TEXT, speaker=speaker, **ZERO).samples
        ref16 = (np.clip(ref, -1, 1) * 32767).astype(np.int16)
        assert got.dtype == np.int16 and len(got) == len(ref16)
        assert np.abs(got.astype(np.int32) - ref16).max() <= 2
    # speakers differ, so sid really reaches the graph
    a0 = synth.synth_audio(RU_TEXT, speaker_id=0, noise_level=0.0, duration_noise_level=0.0)
    a3 = synth.synth_audio(RU_TEXT, speaker_id=3, noise_level=0.0, duration_noise_level=0.0)
    assert len(a0) != len(a3) or np.abs(a0.astype(np.int32) - a3).max() > 10
    # the runtime's defaults come from config.json in its own keys
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["inference"]["noise_level"] == tiny_vosk.config.noise_scale
    # and vitsq loads the folder back (vitsq.json manifest, same dictionary)
    back = vitsq.load(out, backend="onnx")
    np.testing.assert_allclose(back.synthesize(RU_TEXT, speaker=3, **ZERO).samples,
                               tiny_vosk.synthesize(RU_TEXT, speaker=3, **ZERO).samples, atol=1e-4)


def test_vosk_runtime_runs_int8_folder_with_polyphase_upsampling(tiny_vosk, tmp_path):
    """ort-static (VITS2 preset: decoder INT8, upsampling rewritten as convolutions) still drops
    into vosk-tts, which runs it exactly as vitsq's ONNX backend does."""
    import onnx
    import vosk_tts

    import vitsq
    from vitsq.quantize.ort import export_quantized

    out = export_quantized(tiny_vosk, "vosk-dir", tmp_path / "vosk-int8", "ort-static", calib=4)
    proto = onnx.load(str(out / "model.onnx"))
    # calibration draws seeded in-graph noise: the same calibration set gives the same file,
    # and the shipped graph's noise is unseeded again
    again = export_quantized(tiny_vosk, "vosk-dir", tmp_path / "vosk-int8-again", "ort-static", calib=4)
    assert (again / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()
    noise = [n for n in proto.graph.node if n.op_type.startswith("RandomNormal")]
    assert noise and not [a for n in noise for a in n.attribute if a.name == "seed"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["vitsq.quantization"])["recipe"]["polyphase_upsampling"] is True
    ops = [(n.name, n.op_type) for n in proto.graph.node]
    assert not [n for n, op in ops if op == "ConvTranspose" and n.startswith("/dec/ups")]
    assert [n for n, op in ops if n.startswith("/dec/ups.0/conv") and op == "Conv"]
    synth = vosk_tts.Synth(vosk_tts.Model(model_path=str(out)))
    got = synth.synth_audio(RU_TEXT, speaker_id=3, noise_level=0.0, duration_noise_level=0.0)
    ours = vitsq.load(out, backend="onnx").synthesize(RU_TEXT, speaker=3, **ZERO).samples
    ours16 = (np.clip(ours, -1, 1) * 32767).astype(np.int16)
    assert len(got) == len(ours16) > 1000 and np.abs(got.astype(np.int32) - ours16).max() <= 2
    ref = tiny_vosk.synthesize(RU_TEXT, speaker=3, **ZERO).samples
    assert abs(len(ours) - len(ref)) <= 0.1 * len(ref)


def test_refuses_existing_output_and_unsupported_pairs(joe_torch, tiny_vosk, joe_voice, tmp_path, capsys):
    from vitsq.cli import main
    from vitsq.export.onnx import export_onnx, export_piper_voice, export_vosk_dir

    with pytest.raises(InputError, match="already exists.*--force"):
        export_onnx(joe_torch, joe_voice)
    with pytest.raises(UnsupportedError, match="vosk_ru.*--format piper"):
        export_vosk_dir(joe_torch, tmp_path / "joe-vosk")
    assert not (tmp_path / "joe-vosk").exists()
    with pytest.raises(UnsupportedError, match="Piper runtime cannot phonemize"):
        export_piper_voice(tiny_vosk, tmp_path / "tiny.onnx")
    import vitsq

    with pytest.raises(UnsupportedError, match="torch backend"):
        export_onnx(vitsq.load("joe", backend="onnx"), tmp_path / "x.onnx")
    # CLI: one line, exit code 2, nothing overwritten
    before = joe_voice.stat().st_mtime_ns
    assert main(["export", "joe", "--format", "piper", "-o", str(joe_voice)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert joe_voice.stat().st_mtime_ns == before
    assert main(["export", "joe", "--format", "vosk-dir", "-o", str(tmp_path / "v")]) == 2
    assert "vosk_ru" in capsys.readouterr().err


def _mean_log_mel(samples: np.ndarray) -> np.ndarray:
    """Time-averaged log-mel spectrum: compares timbre even when durations differ by a frame."""
    from vitsq.evaluate.metrics import log_mel

    return log_mel(samples, 22050).mean(axis=1)


def test_piper_runtime_loads_int8_voice(joe_torch, tmp_path):
    """ort-static INT8 voice: the Piper runtime runs it as is, within the quality budget of FP32."""
    import onnx

    from vitsq.evaluate.metrics import audio_distance
    from vitsq.quantize.ort import export_quantized

    from vitsq.quantize.recipes import best_for

    voice = export_quantized(joe_torch, "piper", tmp_path / "joe-int8.onnx", "ort-static", calib=4)
    proto = onnx.load(str(voice))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QLinearConv", "DequantizeLinear"} <= ops or {"QuantizeLinear", "DequantizeLinear"} <= ops
    # by name = the measured preset: every float prefix names real nodes, which stay float, and
    # the upsampling layers became (quantizable) convolutions
    names = [n.name for n in proto.graph.node]
    dq_out = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for prefix in best_for(joe_torch, "ort-static").keep_float:
        hit = [n for n in proto.graph.node if n.name.startswith(prefix)
               and n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
        assert hit, f"preset prefix {prefix} matches no node"
        # float convs keep float weights (their input may still be a shared, quantized activation:
        # the exporter merges the identical leaky_relu(x) that each resblock of a stage computes)
        assert not [n.name for n in hit if n.op_type == "Conv" and n.input[1] in dq_out], prefix
    assert not [n for n in names if n.startswith("/dec/ups") and "ConvTranspose" in n]
    ups0 = next(n for n in proto.graph.node if n.name == "/dec/ups.0/conv/Conv")
    assert ups0.input[0] in dq_out  # INT8 activations into the rewritten upsampling conv
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["vitsq.quantization"])["recipe"]["recipe"] == "ort-static"
    fp32_bytes = json.loads(meta["vitsq.quantization"])["fp32_onnx_bytes"]
    # weights really stored in INT8: the default (faithful) preset keeps the text encoder and the
    # duration predictor FP32 (most of joe's weights; 38 of 65 MB), the fast one quantizes them
    assert voice.stat().st_size * 1.5 < fp32_bytes
    got, ids = _piper_audio(voice, EN_TEXT)
    ref = joe_torch.synthesize_ids(ids, **ZERO).samples
    assert abs(len(got) - len(ref)) <= 0.05 * len(ref)  # durations may move by a frame here and there
    d = audio_distance(ref, got, 22050)
    spec_l1 = float(np.abs(_mean_log_mel(ref) - _mean_log_mel(got)).mean())
    noise_l1 = float(np.abs(_mean_log_mel(ref) - _mean_log_mel(
        np.random.default_rng(0).normal(0, np.abs(ref).std(), len(ref)).astype(np.float32))).mean())
    print(f"INT8 vs FP32: len {len(got)}/{len(ref)} SNR {d.snr_db:.2f} dB log-mel L1 {d.log_mel_l1:.3f} "
          f"MCD {d.mcd_db:.2f} mean-spectrum L1 {spec_l1:.3f} (noise {noise_l1:.3f})")
    # Budget: measured 2.03 nats on this sentence (INT8 activations add a noise floor in quiet
    # frames, which the log domain weighs heavily; white noise at the same level scores 3.6).
    # Loose on purpose: ASR/speaker-similarity budgets live in `vitsq eval`, not here.
    assert spec_l1 < 2.6 and spec_l1 < noise_l1 * 0.75
    # the runtime and vitsq's own ONNX backend run the same INT8 graph identically
    import vitsq

    ours = vitsq.load(voice, backend="onnx").synthesize_ids(ids, **ZERO).samples
    assert len(ours) == len(got) and np.abs(ours - np.clip(got, -1, 1)).max() < 1e-4


# ----------------------------------------------------------------------------- outputs and options
def test_cli_refuses_odd_outputs_and_ignored_options_before_loading(tmp_path, capsys, monkeypatch):
    import vitsq
    from vitsq.cli import main

    monkeypatch.setattr(vitsq.registry, "load", lambda *a, **k: pytest.fail("loaded the model before refusing the request"))
    (tmp_path / "somedir").mkdir()
    (tmp_path / "somedir" / "keep.txt").write_text("mine")
    (tmp_path / "old.onnx").write_bytes(b"old")
    base = ["export", str(TINY / "tiny_G_1.pth"), "--config", str(TINY / "tiny_config.json")]
    cases = [
        (["--format", "onnx", "-o", str(tmp_path / "somedir")], "must end in .onnx"),
        (["--format", "onnx", "-o", str(tmp_path / "x.mp3")], "must end in .onnx"),
        (["--format", "piper", "-o", str(tmp_path / "noext")], "must end in .onnx"),
        (["--format", "onnx", "-o", "/proc/x.onnx"], "not writable"),
        (["--format", "onnx", "-o", str(tmp_path / "old.onnx")], "already exists"),
        (["--format", "vosk-dir", "-o", str(tmp_path / "somedir"), "--force"], "did not write"),
        (["--format", "vosk-dir", "-o", str(tmp_path / "v.onnx")], "must be a folder"),
        (["--format", "onnx", "--calibrate-method", "entropy", "-o", str(tmp_path / "a.onnx")],
         "--calibrate-method applies to --recipe ort-static only"),
        (["--format", "onnx", "--calib", "8", "-o", str(tmp_path / "a.onnx")], "--calib applies to --recipe ort-static"),
        (["--format", "onnx", "--recipe", "ort-dynamic", "--calib", "8", "-o", str(tmp_path / "a.onnx")],
         "the ort-dynamic export takes no calibration"),
        (["--format", "executorch", "--calib", "8", "-o", str(tmp_path / "et")], "--calib applies to --recipe pt2e"),
    ]
    for extra, msg in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1 and "Traceback" not in err, (extra, err)
    assert (tmp_path / "somedir" / "keep.txt").read_text() == "mine" and (tmp_path / "old.onnx").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.onnx", "somedir"]


def test_interrupted_piper_write_keeps_both_old_files(tmp_path):
    """voice.onnx and voice.onnx.json are replaced together or not at all."""
    from vitsq.export.onnx import write_piper_voice

    voice = tmp_path / "voice.onnx"
    voice.write_bytes(b"old graph")
    Path(str(voice) + ".json").write_text('{"old": true}')

    def half_written(tmp: Path) -> None:
        tmp.write_bytes(b"new graph, half written")
        raise KeyboardInterrupt  # what the CLI's SIGTERM handler raises

    with pytest.raises(KeyboardInterrupt):
        write_piper_voice(voice, half_written, {"new": True}, force=True)
    assert voice.read_bytes() == b"old graph" and Path(str(voice) + ".json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voice.onnx", "voice.onnx.json"]


def test_force_replaces_a_piper_voice_pair(joe_torch, tmp_path):
    """The real joe export over an old voice: both files new, nothing else left; without --force
    the old pair is refused before any export work."""
    import onnx

    from vitsq.errors import OutputError
    from vitsq.export.onnx import export_piper_voice

    voice = tmp_path / "joe.onnx"
    voice.write_bytes(b"old graph")
    Path(str(voice) + ".json").write_text('{"old": true}')
    with pytest.raises(OutputError, match="already exists"):
        export_piper_voice(joe_torch, voice)
    assert voice.read_bytes() == b"old graph"
    export_piper_voice(joe_torch, voice, force=True)
    assert onnx.load(str(voice)).producer_name == "vitsq"
    assert json.loads(Path(str(voice) + ".json").read_text())["num_speakers"] == joe_torch.config.n_speakers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joe.onnx", "joe.onnx.json"]
