"""`vitsq synth --stream` (the wav written chunk by chunk) and `vitsq bench --ttfa` on the
embedded voice, plus the streaming WAV writer against libsndfile."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf

from vitsq.cli import main
from vitsq.errors import InputError
from vitsq.streaming import AudioChunk, ChunkSchedule
from vitsq.streaming.ttfa import build_reply, parse_phonemes, sentence_pool
from vitsq.streaming.wav import WavStreamWriter, parse_chunk_frames, write_chunks

TEXT = "Streaming writes the file as it goes. Every chunk lands at once!"


def _chunk(samples, k=0, rate=16000):
    return AudioChunk(samples=np.asarray(samples, np.float32), sample_rate=rate, index=k, sentence=0, offset=0,
                      ready_seconds=0.0)


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if ".vitsq-" in p.name]


# ----------------------------------------------------------------------------- the writer
def test_streamed_wav_is_byte_identical_to_libsndfile(tmp_path):
    rng = np.random.default_rng(0)
    pieces = [rng.uniform(-1.2, 1.2, n).astype(np.float32) for n in (1, 300, 0, 4097)]  # clipped like to_int16
    res = write_chunks((_chunk(p, k) for k, p in enumerate(pieces)), tmp_path / "s.wav", sample_rate=16000)
    whole = (np.clip(np.concatenate(pieces), -1, 1) * 32767.0).astype(np.int16)
    ref = io.BytesIO()
    sf.write(ref, whole, 16000, subtype="PCM_16", format="WAV")
    assert (tmp_path / "s.wav").read_bytes() == ref.getvalue()
    assert (res.samples, res.chunks, res.sample_rate) == (len(whole), 4, 16000)
    assert 0 < res.first_audio_seconds <= res.total_seconds
    assert _leftovers(tmp_path) == []


def test_an_interrupted_stream_leaves_the_old_file_and_stops_the_stream(tmp_path):
    out = tmp_path / "a.wav"
    out.write_bytes(b"old")
    closed = []

    def chunks():
        try:
            yield _chunk(np.zeros(100))
            raise RuntimeError("model failed midway")
        finally:
            closed.append(True)

    with pytest.raises(RuntimeError, match="midway"):
        write_chunks(chunks(), out, sample_rate=16000, force=True)
    assert out.read_bytes() == b"old" and closed == [True] and _leftovers(tmp_path) == []
    with pytest.raises(InputError, match="no audio"):
        write_chunks(iter(()), tmp_path / "empty.wav", sample_rate=16000)
    assert not (tmp_path / "empty.wav").exists()
    with pytest.raises(InputError, match="mono"):
        WavStreamWriter(io.BytesIO(), 16000).write(np.zeros((2, 3)))


def test_parse_chunk_frames():
    assert parse_chunk_frames("8") == ChunkSchedule(sizes=(8,))
    assert parse_chunk_frames(" 4, 8,16 ") == ChunkSchedule(sizes=(4, 8, 16))
    assert parse_chunk_frames(None) == ChunkSchedule()
    for bad in ("0", "-3", "x", "4,,8", "1.5", "", " , ", "100001"):
        with pytest.raises(InputError, match="chunk frames"):
            parse_chunk_frames(bad)


# ----------------------------------------------------------------------------- vitsq synth --stream
def _timings(line: str) -> tuple[float, float]:
    m = re.search(r"first audio \(TTFA\) ([\d.]+) ms +total ([\d.]+) s +RTF ([\d.]+)", line)
    assert m, line
    return float(m.group(1)) / 1000, float(m.group(2))


def test_synth_stream_writes_the_streamed_audio(tmp_path, capsys, joe_torch):
    streamed = tmp_path / "streamed.wav"
    args = ["synth", "joe", TEXT, "--backend", "torch", "--seed", "3", "--no-warmup"]
    assert main([*args, "-o", str(streamed), "--stream", "--chunk-frames", "4,8"]) == 0
    ttfa, total = _timings(capsys.readouterr().out)
    assert 0 < ttfa < total
    got, rate = sf.read(streamed, dtype="int16")
    assert rate == joe_torch.sample_rate and sf.info(streamed).subtype == "PCM_16"
    # the file holds exactly the chunks of the library's stream with the same settings
    chunks = list(joe_torch.stream(TEXT, seed=3, schedule=[4, 8]))
    assert len(chunks) > 4
    assert np.array_equal(got, (np.clip(np.concatenate([c.samples for c in chunks]), -1, 1) * 32767).astype(np.int16))
    # and the wav of `vitsq synth` without --stream (Audio.write of synthesize) sample for sample,
    # up to the FP32 rounding of a chunked decoder (within 1e-5 of peak): 1 LSB on a few samples
    ref = joe_torch.synthesize(TEXT, seed=3).to_int16()
    assert got.shape == ref.shape
    diff = np.abs(got.astype(np.int32) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("extra", [["--stream", "--chunk-frames", "0"], ["--stream", "--chunk-frames=-2"],
                                   ["--stream", "--chunk-frames", "eight"], ["--stream", "--chunk-frames", "4,x"],
                                   ["--chunk-frames", "8"]])
def test_synth_stream_refuses_bad_chunk_frames(tmp_path, capsys, extra):
    out = tmp_path / "x.wav"
    assert main(["synth", "joe", "Hi.", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitsq synth: error:") and "chunk" in err, err
    assert not out.exists()


# ----------------------------------------------------------------------------- vitsq bench --ttfa
def test_reply_has_exactly_the_phonemes_asked_for(joe_torch):
    pool = sentence_pool("en", seed=0)
    reply = build_reply(joe_torch.frontend, pool, 37)
    assert len(reply.phonemes) == 37
    assert reply.ids == joe_torch.frontend.phonemes_to_ids(reply.phonemes) and len(reply.ids) == 2 * 37 + 3
    assert reply.texts == pool[: len(reply.texts)]
    with pytest.raises(InputError, match="ids of one utterance"):
        build_reply(joe_torch.frontend, pool, 600)
    with pytest.raises(InputError, match="fewer than"):
        build_reply(joe_torch.frontend, pool[:1], 300)
    assert parse_phonemes("50, 300") == [50, 300] and parse_phonemes(None) == [300]


def test_bench_ttfa_on_joe(tmp_path, capsys):
    out = tmp_path / "ttfa.json"
    argv = ["bench", "joe@torch", "--ttfa", "--phonemes", "24", "--iters", "1", "--warmup", "0", "--threads", "1",
            "--chunk-frames", "4,8", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "TTFA" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["schema"] == "vitsq-ttfa/1" and data["command"].startswith("vitsq bench joe@torch --ttfa")
    assert data["settings"]["schedule"]["sizes"] == [4, 8] and data["settings"]["phonemes"] == [24]
    assert data["rounds"][0]["orders"] == [["joe@torch:stream", "joe@torch:whole"]]
    assert data["inputs"]["replies"][0]["phonemes"] == 24 and len(data["inputs"]["replies"][0]["phoneme_text"]) == 24
    (r,) = data["results"]
    assert r["status"] == "ok" and r["streaming"] == "frames" and r["rounds"] == 1 and r["ids"] == 2 * 24 + 3
    assert 0 < r["ttfa_s"]["p50"] < r["stream_total_s"]["p50"] and r["whole_latency_s"]["p50"] > 0
    assert r["work_ratio"] > 0 and 0 < r["ttfa_over_latency"] and r["chunks"] > 1
    assert r["work_ratio"] == pytest.approx(r["stream_total_s"]["p50"] / r["whole_latency_s"]["p50"])
    assert r["exactness"]["same_length"] and r["exactness"]["max_abs_diff_over_peak"] < 1e-5
    assert "| 24 | joe@torch | frames |" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("extra", [["--ttfa", "--phonemes", "0"], ["--ttfa", "--phonemes", "many"],
                                   ["--phonemes", "300"], ["--chunk-frames", "8"], ["--ttfa", "--batch", "2"],
                                   ["--ttfa", "--chunk-frames", "0"], ["--ttfa", "--device", "cuda"]])
def test_bench_ttfa_refuses_bad_options(tmp_path, capsys, extra):
    out = tmp_path / "b.json"
    assert main(["bench", "joe", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vitsq bench: error:"), err
    assert not out.exists()
