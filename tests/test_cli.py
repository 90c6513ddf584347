"""The `vitsq` command line: synth/info on the embedded voice, exit code 2 on bad input."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from vitsq.cli import main


def test_synth_writes_speech(tmp_path, capsys):
    out = tmp_path / "x.wav"
    text = "The command line writes a wav file."
    assert main(["synth", "joe", text, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RTF" in printed and "duration" in printed
    audio, sr = sf.read(out)
    assert sr == 22050
    assert len(text) / 20 < len(audio) / sr < len(text) / 8
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0.05


def test_synth_onnx_backend(tmp_path):
    out = tmp_path / "y.wav"
    assert main(["synth", "joe", "Runs in ONNX Runtime.", "-o", str(out), "--backend", "onnx"]) == 0
    assert sf.info(out).duration > 0.5


def test_info_prints_parameters(capsys):
    assert main(["info", "joe"]) == 0
    out = capsys.readouterr().out
    assert "22050" in out and "total" in out and "enc_p" in out and "symbols" in out


def test_bad_input_exit_code_2(tmp_path, capsys):
    assert main(["synth", "joe", "   ", "-o", str(tmp_path / "z.wav")]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "Traceback" not in err
    assert main(["synth", "joe", "Hi.", "--speaker", "3", "-o", str(tmp_path / "z.wav")]) == 2
    assert main(["synth", str(tmp_path / "missing.onnx"), "Hi.", "-o", str(tmp_path / "z.wav")]) == 2
    assert "not found" in capsys.readouterr().err
