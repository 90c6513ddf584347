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


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("vitsq synth: error:"), err
    for f in fragments:
        assert f in err, (f, err)
    return err


def _no_cuda_device() -> str:
    import torch

    # "cuda" where no GPU exists; otherwise an index no machine here has
    return "cuda:99" if torch.cuda.is_available() else "cuda"


def test_user_errors_are_one_line_exit_2(tmp_path, capsys):
    out = str(tmp_path / "e.wav")
    cases = [
        (["--device", _no_cuda_device()], ["device", "cpu"]),
        (["--device", "foo"], ["device 'foo'", "cpu"]),
        (["--seed", str(2**64)], ["seed=18446744073709551616", "0..18446744073709551615"]),
        (["--seed", "-1"], ["seed=-1", "0..18446744073709551615"]),
        (["--length-scale", "0"], ["length_scale=0.0", "> 0"]),
        (["--noise-w", "nan"], ["noise_w=nan"]),
        (["--config", str(tmp_path / "c.json")], ["config", "carries its own config"]),
        (["--backend", "executorch"], ["torch or onnx backend", "not 'executorch'"]),
        (["--backend", "onnx", "--seed", "3"], ["cannot honour seed=3", "noise_scale=0"]),
    ]
    for extra, fragments in cases:
        assert main(["synth", "joe", "Hello.", "-o", out, *extra]) == 2, extra
        _one_line_error(capsys, *fragments)
    # a named model that carries its own config is refused before the (slow) preset is built
    assert main(["synth", "vosk-ru-multi", "Привет.", "-o", out, "--config", str(tmp_path / "c.json")]) == 2
    _one_line_error(capsys, "'vosk-ru-multi' carries its own config")
    assert not (tmp_path / "e.wav").exists()


def test_synth_output_is_checked_first_and_needs_force(tmp_path, capsys):
    out = tmp_path / "keep.wav"
    out.write_bytes(b"not vitsq's audio")
    # the output is refused before the model is even looked up
    assert main(["synth", str(tmp_path / "missing.onnx"), "Hi.", "-o", str(out)]) == 2
    _one_line_error(capsys, "already exists", "--force")
    assert main(["synth", "joe", "Hi.", "-o", str(out)]) == 2
    _one_line_error(capsys, "already exists")
    assert out.read_bytes() == b"not vitsq's audio"
    assert main(["synth", "joe", "Hi.", "-o", str(tmp_path / "x.mp3")]) == 2
    _one_line_error(capsys, ".wav")
    # --force replaces it, atomically (no temporary sibling left behind)
    assert main(["synth", "joe", "Hi there.", "-o", str(out), "--force", "--no-warmup", "--seed", "1"]) == 0
    assert sf.info(out).duration > 0.3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


def test_weights_label_unknown_when_undescribed(capsys):
    from vitsq.cli import weights_label

    class Broken:
        name = "broken"

        def describe(self):
            raise RuntimeError("no description")

    class Silent:
        name = "silent"

        def describe(self):
            return {"name": "silent"}

    assert weights_label(Broken()) == "unknown"
    assert weights_label(Silent()) == "unknown"
