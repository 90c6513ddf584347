"""The public face: what `import vitsq` offers, and the first user's path through it
(quantize -> load -> synthesize -> export as a Piper voice -> the Piper runtime loads it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vitsq
from vitsq.errors import UnsupportedError

PUBLIC = {"load", "available_models", "quantize", "export", "evaluate", "benchmark", "SynthesisConfig", "Audio",
          "Synthesizer", "VitsqError", "InputError", "ModelLoadError", "UnsupportedError", "OutputError"}


def test_public_names():
    assert PUBLIC <= set(vitsq.__all__) and all(hasattr(vitsq, n) for n in PUBLIC)
    from vitsq.bench import run_benchmark
    from vitsq.evaluate.run import evaluate
    from vitsq.export.api import export
    from vitsq.quantize.dispatch import quantize
    from vitsq.registry import load

    assert (vitsq.load, vitsq.quantize, vitsq.export, vitsq.evaluate, vitsq.benchmark) == (
        load, quantize, export, evaluate, run_benchmark)


def test_quantize_returns_a_synthesizer_that_saves(vosk_tiny, tmp_path):
    """ort-dynamic (no calibration: cheap) gives the same kind of object as the torch recipes."""
    from vitsq.quantize.artifact import QuantizedModel
    from vitsq.quantize.recipes import best_for

    q = vitsq.quantize(vosk_tiny, "ort-dynamic")
    assert isinstance(q, QuantizedModel) and isinstance(q, vitsq.Synthesizer)
    assert q.recipe == best_for(vosk_tiny, "ort-dynamic") and q.backend == "onnx"
    direct = q.synthesize("привет", speaker=1, noise_scale=0, noise_w=0).samples
    art = q.save(tmp_path / "q")
    assert sorted(p.name for p in art.iterdir()) == ["model.onnx", "vitsq.json"]
    with pytest.raises(vitsq.OutputError, match="already exists"):
        q.save(art)
    loaded = vitsq.load(art).synthesize("привет", speaker=1, noise_scale=0, noise_w=0).samples
    np.testing.assert_array_equal(direct, loaded)
    # the artifact becomes a vosk-tts folder (its graph reused) but not a Piper voice (Russian front-end)
    out = vitsq.export(art, "vosk-dir", tmp_path / "vosk")
    assert (out / "model.onnx").read_bytes() == (art / "model.onnx").read_bytes()
    assert {"config.json", "dictionary", "vitsq.json"} <= {p.name for p in out.iterdir()}
    with pytest.raises(UnsupportedError, match="Piper runtime cannot phonemize"):
        vitsq.export(art, "piper", tmp_path / "v.onnx")
    with pytest.raises(UnsupportedError, match="cannot be exported as --format executorch"):
        vitsq.export(art, "executorch", tmp_path / "et")
    assert not (tmp_path / "v.onnx").exists() and not (tmp_path / "et").exists()


def test_first_user_path_joe(tmp_path, capsys):
    """vitsq quantize joe --recipe ort-static -o q; vitsq.load(q); vitsq export q --format piper."""
    from piper import PiperVoice

    from vitsq.cli import main
    from vitsq.quantize.recipes import best_for

    art = tmp_path / "q"
    assert main(["quantize", "joe", "--recipe", "ort-static", "--calib", "4", "-o", str(art)]) == 0
    manifest = json.loads((art / "vitsq.json").read_text())
    assert manifest["quantization"]["recipe"] == best_for(vitsq.load("joe"), "ort-static").to_dict()
    synth = vitsq.load(art)
    assert synth.backend == "onnx"
    assert synth.synthesize("Hello there.", noise_scale=0, noise_w=0).duration > 0.3
    voice = tmp_path / "v.onnx"
    assert main(["export", str(art), "--format", "piper", "-o", str(voice)]) == 0
    assert voice.read_bytes() == (art / "model.onnx").read_bytes()
    config = json.loads((tmp_path / "v.onnx.json").read_text())
    assert config["num_symbols"] == synth.config.n_vocab and config["vitsq"]["quantization"]["recipe"]["recipe"] == "ort-static"
    piper_voice = PiperVoice.load(str(voice))
    chunks = list(piper_voice.synthesize("Hello there."))
    assert sum(len(c.audio_int16_array) for c in chunks) > 0.3 * piper_voice.config.sample_rate
    assert main(["export", str(art), "--format", "executorch", "-o", str(tmp_path / "et")]) == 2
    assert "cannot be exported as --format executorch" in capsys.readouterr().err
