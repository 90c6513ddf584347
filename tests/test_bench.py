"""vitsq bench: parsing, RTF from samples, outputs (JSON/Markdown/PNG), failures and skips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitsq import bench
from vitsq.bench import parse_batches, parse_devices, run_benchmark
from vitsq.errors import InputError, UnsupportedError
from vitsq.limits import MAX_BENCH_BATCH
from vitsq.variants import Variant, parse_variant


class FakeSynth:
    """A stand-in Synthesizer with exactly known output lengths (n_tokens * samples_per_token)."""

    backend = "fake"
    language = "en"
    num_speakers = 1

    def __init__(self, name="fake", sample_rate=16000, samples_per_token=400, fail_at_batch=None,
                 weights="trained", hop_length=256):
        self.name = name
        self.sample_rate = sample_rate
        self.samples_per_token = samples_per_token
        self.fail_at_batch = fail_at_batch
        self.weights = weights
        self.calls = []
        self.config = type("C", (), {"hop_length": hop_length})()

    def text_to_ids(self, text):
        return [[1] + [2 + (ord(c) % 50) for c in text[:20]] + [1]]

    def synthesize_ids_batch(self, batch, speakers=None, noise_scale=None, length_scale=None, noise_w=None, seed=0):
        self.calls.append((len(batch), length_scale))
        if self.fail_at_batch is not None and len(batch) >= self.fail_at_batch:
            raise RuntimeError(f"boom at batch {len(batch)}")
        scale = 1.0 if length_scale is None else length_scale
        outs = [np.zeros(int(len(ids) * self.samples_per_token * scale), np.float32) for ids in batch]
        return outs, 0.0

    def size_bytes(self):
        return 1234

    def describe(self):
        return {"name": self.name, "weights": self.weights}


# ----------------------------------------------------------------------------- parsing
def test_parse_variant_syntax(caplog):
    assert parse_variant("joe") == Variant("joe", "joe", "auto")
    assert parse_variant("joe").load_kwargs() == {}
    assert parse_variant("joe@onnx") == Variant("joe@onnx", "joe", "onnx")
    assert parse_variant("joe@onnx").load_kwargs() == {"backend": "onnx"}
    assert parse_variant("out/int8@torch") == Variant("out/int8@torch", "out/int8", "torch")
    assert parse_variant("int8=out/joe-int8@executorch") == Variant("int8", "out/joe-int8", "executorch")
    # an absolute path is labelled by its file name: no machine's folders in result tables
    assert parse_variant("/data/models/voice.onnx@onnx") == Variant("voice.onnx@onnx", "/data/models/voice.onnx", "onnx")
    with pytest.raises(InputError, match="unknown backend 'tflite'.*torch, onnx, executorch"):
        parse_variant("joe@tflite")
    with pytest.raises(InputError, match="LABEL=SPEC"):
        parse_variant("=joe")
    # BACKEND:SPEC is refused with the right spelling, except as eval's deprecated alias
    with pytest.raises(InputError, match="voice.onnx@onnx"):
        parse_variant("onnx:voice.onnx")
    with caplog.at_level("WARNING", logger="vitsq.variants"):
        assert parse_variant("onnx:voice.onnx", legacy_prefix=True) == Variant("voice.onnx@onnx", "voice.onnx", "onnx")
    assert "deprecated" in caplog.text


def test_parse_batches_and_devices_errors():
    assert parse_batches("1, 2,4,2") == [1, 2, 4]
    with pytest.raises(InputError, match="batch size 0 is not valid.*>= 1"):
        parse_batches("0,1")
    with pytest.raises(InputError, match="'x' is not an integer"):
        parse_batches("1,x")
    assert parse_batches([MAX_BENCH_BATCH]) == [MAX_BENCH_BATCH]
    with pytest.raises(InputError, match=f"batch size {MAX_BENCH_BATCH + 1} is not valid.*<= {MAX_BENCH_BATCH}"):
        parse_batches(f"1,{MAX_BENCH_BATCH + 1}")
    assert parse_devices("cpu,CUDA") == ["cpu", "cuda"]
    with pytest.raises(InputError, match="unknown device 'tpu'.*cpu, cuda, cuda-fp16"):
        parse_devices("cpu,tpu")


def test_run_benchmark_rejects_bad_input():
    with pytest.raises(InputError, match="batch size 0"):
        run_benchmark(FakeSynth(), batches=[0], progress=False)
    with pytest.raises(InputError, match="unknown device 'gpu'"):
        run_benchmark(FakeSynth(), devices="gpu", progress=False)
    with pytest.raises(InputError, match="iters must be >= 1"):
        run_benchmark(FakeSynth(), iters=0, progress=False)
    with pytest.raises(InputError, match="baseline 'nope' is not one of.*fake"):
        run_benchmark(FakeSynth(), baseline="nope", progress=False)
    with pytest.raises(InputError, match="labels must be unique"):
        run_benchmark(FakeSynth(), [FakeSynth()], progress=False)
    with pytest.raises(InputError, match="batching must be one of padded, items"):
        run_benchmark(FakeSynth(), batching="bucketed", progress=False)


# ----------------------------------------------------------------------------- measurement
def test_rtf_is_seconds_over_audio_samples_not_frames():
    # 16 kHz, 400 samples/token: audio seconds = tokens * 400 / 16000. A frames-based RTF
    # (frames = samples / hop) would differ by a factor hop/sample_rate.
    s = FakeSynth(sample_rate=16000, samples_per_token=400, hop_length=123)
    res = run_benchmark(s, batches="1,3", warmup=0, iters=1, progress=False)
    for b in (1, 3):
        c = res.cell("fake", "cpu", b)
        assert c.status == "ok"
        assert c.audio_seconds == pytest.approx(c.tokens * 400 / 16000)
        # one iteration: its RTF is exactly its latency over its audio seconds
        assert c.rtf["median"] == pytest.approx(c.latency_s["median"] / c.audio_seconds)
        assert c.rtf_aggregate == pytest.approx(c.latency_s["median"] / c.audio_seconds)
        assert c.peak_rss_mb > 10
        assert c.gpu_max_allocated_mb is None
    # the batch of 3 holds the first 3 texts: tokens add up over items
    texts = res.inputs["texts"]
    assert res.cell("fake", "cpu", 3).tokens == sum(len(s.text_to_ids(t)[0]) for t in texts[:3])
    # warmup + iters calls per cell
    assert [n for n, _ in s.calls] == [1, 3]


def test_inputs_are_identical_for_every_variant_and_seeded(tmp_path):
    a, b = FakeSynth("a"), FakeSynth("b", samples_per_token=200)
    res = run_benchmark(a, [b], batches="2", warmup=0, iters=2, progress=False)
    assert res.cell("a", "cpu", 2).tokens == res.cell("b", "cpu", 2).tokens
    # the speedup is the baseline's median RTF over the variant's, same device and batch
    ca, cb = res.cell("a", "cpu", 2), res.cell("b", "cpu", 2)
    assert cb.speedup_vs_baseline == pytest.approx(ca.rtf["median"] / cb.rtf["median"])
    assert cb.audio_seconds == pytest.approx(ca.audio_seconds / 2)  # b makes half the audio per token
    again = run_benchmark(FakeSynth("a"), batches="2", warmup=0, iters=1, progress=False)
    assert again.inputs["texts"] == res.inputs["texts"]
    other = run_benchmark(FakeSynth("a"), batches="2", warmup=0, iters=1, progress=False, seed=5)
    assert other.inputs["texts"] != res.inputs["texts"]
    # evaluation split only (never calibration sentences)
    from vitsq.evaluate.sentences import split_of

    assert all(split_of(t, "en") == "evaluation" for t in res.inputs["texts"])


def test_sentence_file_input(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("# comment\nOne short line.\nAnother one here.\n")
    res = run_benchmark(FakeSynth(), batches="1,4", warmup=0, iters=1, sentences=f, progress=False)
    assert sorted(set(res.inputs["texts"])) == ["Another one here.", "One short line."]
    assert len(res.inputs["texts"]) == 4


def test_random_weight_models_are_calibrated_to_three_frames_per_token():
    s = FakeSynth(samples_per_token=2560, weights="untrained (random weights)", hop_length=256)  # 10 frames/token
    res = run_benchmark(s, batches="1", warmup=0, iters=1, progress=False)
    info = res.variants[0]
    assert info["random_weights"] is True
    assert info["length_scale"] == pytest.approx(0.3, rel=0.02)
    assert info["frames_per_token"] == pytest.approx(3.0, rel=0.05)
    # the timed calls used the calibrated scale
    assert s.calls[-1][1] == pytest.approx(info["length_scale"])
    assert res.cell("fake", "cpu", 1).random_weights
    assert "random weights" in res.table()


# ----------------------------------------------------------------------------- failures
def test_failing_variant_is_reported_and_the_rest_continue(tmp_path):
    good, bad = FakeSynth("good"), FakeSynth("bad", fail_at_batch=2)
    res = run_benchmark(good, [bad], batches="1,2,4", warmup=0, iters=2, progress=False)
    assert res.cell("bad", "cpu", 1).status == "ok"
    for b in (2, 4):
        c = res.cell("bad", "cpu", b)
        assert c.status == "failed" and "boom at batch" in c.error
        assert res.cell("good", "cpu", b).status == "ok"
    assert any("bad on cpu at batch 2 failed" in m for m in res.messages)
    table = res.table()
    assert table.count("FAILED") == 2
    paths = res.write(tmp_path / "b.json")
    data = json.loads(paths["json"].read_text())
    assert [r["status"] for r in data["results"] if r["variant"] == "bad"] == ["ok", "failed", "failed"]
    assert data["variants"][1]["status"] == "partly failed"


def test_variant_that_fails_to_load_is_failed_not_fatal():
    def loader(v, device):
        if v.spec == "broken":
            raise FileNotFoundError("no such model: broken")
        return FakeSynth(v.label)

    res = run_benchmark("ok", ["broken"], batches="1", warmup=0, iters=1, progress=False, loader=loader)
    assert res.cell("ok", "cpu", 1).status == "ok"
    c = res.cell("broken", "cpu", 1)
    assert c.status == "failed" and "FileNotFoundError: no such model" in c.error
    assert res.variants[1]["status"] == "failed"


def test_cuda_without_gpu_is_skipped_with_message_and_cpu_still_runs(monkeypatch):
    monkeypatch.setattr(bench, "_cuda_available", lambda: False)
    res = run_benchmark(FakeSynth(), batches="1", devices="cpu,cuda,cuda-fp16", warmup=0, iters=1,
                        progress=False)
    assert res.cell("fake", "cpu", 1).status == "ok"
    assert res.cell("fake", "cuda", 1).status == "skipped"
    assert res.cell("fake", "cuda-fp16", 1).status == "skipped"
    assert any("device cuda skipped: no CUDA GPU" in m for m in res.messages)
    assert "skipped" in res.table()


# ----------------------------------------------------------------------------- outputs
def test_outputs_json_markdown_png_structure(tmp_path):
    res = run_benchmark(FakeSynth("base"), [FakeSynth("half", samples_per_token=200)], batches="1,2",
                        warmup=0, iters=3, progress=False, machine_name="test-box", threads=1)
    paths = res.write(tmp_path / "out" / "bench.json")
    data = json.loads(paths["json"].read_text())
    assert data["schema"] == "vitsq-bench/1"
    m = data["machine"]
    assert m["name"] == "test-box" and m["cpu"] and m["cores"] >= 1
    assert m["versions"]["torch"] and "onnxruntime" in m["versions"] and "executorch" in m["versions"]
    assert "gpu" in m and len(m["load_average_start"]) == 3 and len(m["load_average_end"]) == 3
    assert data["settings"]["threads"] == 1 and data["settings"]["baseline"] == "base"
    assert len(data["results"]) == 4
    for r in data["results"]:
        assert set(r["rtf"]) >= {"median", "p10", "p90"}
        assert r["rtf"]["p10"] <= r["rtf"]["median"] <= r["rtf"]["p90"]
        assert r["iters"] == 3
    md = paths["md"].read_text()
    header = md.split("## RTF")[1].splitlines()[2]
    assert header == "| batch | base · cpu | half · cpu |"
    rows = [ln for ln in md.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert len(rows) >= 2 and all("×" in ln for ln in rows[:2])
    assert "test-box" in md
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_cli_one_line_error_for_bad_batch(capsys):
    from vitsq.cli import main

    assert main(["bench", "joe", "--batch", "0"]) == 2
    err = capsys.readouterr().err
    assert "batch size 0 is not valid" in err and "Traceback" not in err
    assert main(["bench", "joe", "--device", "npu"]) == 2
    assert "unknown device 'npu'" in capsys.readouterr().err


@pytest.mark.slow
def test_real_joe_torch_vs_onnx_small(tmp_path):
    """End to end on the real voice: both backends produce audio, RTF = seconds / (samples / rate)."""
    res = run_benchmark("joe", ["joe@onnx"], batches="1,2", warmup=0, iters=1, progress=False, threads=2)
    for v in ("joe", "joe@onnx"):
        for b in (1, 2):
            c = res.cell(v, "cpu", b)
            assert c.status == "ok", c.error
            # Piper ids (phonemes interleaved with pad) run at ~40/s of speech: seconds, not frames
            assert 0.01 < c.audio_seconds / c.tokens < 0.2
            assert c.rtf["median"] == pytest.approx(c.latency_s["median"] / c.audio_seconds)
    assert res.variants[1]["backend"] == "onnx"
    assert res.variants[0]["size_bytes"] > 10_000_000


def test_items_batching_gives_the_same_audio_and_is_recorded(joe_torch):
    """`--batching items` runs a batch's items one at a time: same audio as the padded batch
    (per-item noise), recorded in the settings and per variant."""
    import vitsq

    texts = ["One short sentence.", "A second, somewhat longer sentence for the batch."]
    ids = [joe_torch.text_to_ids(t)[0] for t in texts]
    padded, _ = joe_torch.synthesize_ids_batch(ids, seed=3)
    joe_items = vitsq.load("joe")
    joe_items.batching = "items"
    items, _ = joe_items.synthesize_ids_batch(ids, seed=3)
    for a, b in zip(padded, items):
        # the padded batch differs from a lone item only by float rounding and edge effects of
        # the masked padding (~1e-4 at the very end of the shorter item)
        assert len(a) == len(b) and np.abs(a - b).max() < 1e-3 * np.abs(a).max()
    res = run_benchmark(joe_items, batches="2", warmup=0, iters=1, progress=False, batching="items")
    assert res.settings["batching"] == "items"
    assert res.variants[0]["batching"].startswith("items") and res.cell(joe_items.name, "cpu", 2).status == "ok"
    joe_items.batching = "bucketed"
    with pytest.raises(InputError, match="'padded' or 'items'"):
        joe_items.synthesize_ids_batch(ids)


def test_cuda_with_non_torch_backend_is_skipped_with_reason(monkeypatch):
    # pretend a GPU exists: a backend without a torch module still cannot run there
    monkeypatch.setattr(bench, "_cuda_available", lambda: True)
    res = run_benchmark("a@onnx", batches="1", devices="cpu,cuda-bf16", warmup=0, iters=1, progress=False,
                        loader=lambda v, d: FakeSynth(v.label))
    assert res.cell("a@onnx", "cpu", 1).status == "ok"
    c = res.cell("a@onnx", "cuda-bf16", 1)
    assert c.status == "skipped" and "needs the torch backend" in c.error


# ----------------------------------------------------------------------------- interleaving
def test_rounds_interleave_variants_in_rotating_order():
    log = []

    class Logged(FakeSynth):
        def synthesize_ids_batch(self, batch, *a, **k):
            log.append((self.name, len(batch)))
            return super().synthesize_ids_batch(batch, *a, **k)

    synths = [Logged("a"), Logged("b"), Logged("c")]
    res = run_benchmark(synths[0], synths[1:], batches="1,2", warmup=2, iters=5, progress=False)
    data = res.to_dict()
    assert data["settings"]["schedule"] == "interleaved"
    assert [(r["device"], r["batch"]) for r in data["rounds"]] == [("cpu", 1), ("cpu", 2)]
    for r in data["rounds"]:
        assert r["warmup_rounds"] == 2 and len(r["orders"]) == 5
        for k, order in enumerate(r["orders"]):
            # every round holds each variant once; round k starts at variant k mod 3
            assert sorted(order) == ["a", "b", "c"]
            assert order == (["a", "b", "c"] * 2)[k % 3:k % 3 + 3]
    # the calls really ran in that order, warm-up rounds (every variant) before the timed ones
    batch1 = [name for name, n in log if n == 1]
    assert batch1[:6] == ["a", "b", "c", "b", "c", "a"]  # two warm-up rounds
    assert batch1[6:] == [x for order in data["rounds"][0]["orders"] for x in order]
    assert all(c.iters == 5 and c.status == "ok" for c in res.cells)


def test_a_variant_failing_mid_run_leaves_the_rounds_of_the_others():
    bad = FakeSynth("bad", fail_at_batch=2)
    res = run_benchmark(FakeSynth("good"), [bad], batches="1,2", warmup=0, iters=3, progress=False)
    rounds = {r["batch"]: r["orders"] for r in res.rounds}
    assert rounds[1] == [["good", "bad"], ["bad", "good"], ["good", "bad"]]
    # bad fails in round 0 at batch 2: later rounds run good alone
    assert rounds[2][1:] == [["good"], ["good"]]
    assert res.cell("good", "cpu", 2).status == "ok" and res.cell("good", "cpu", 2).iters == 3
    assert res.cell("bad", "cpu", 2).status == "failed"


def test_real_vosk_fixture_variants_interleave(vosk_tiny):
    """Two versions of the tiny Vosk checkpoint: real synthesis, rotating rounds, same inputs."""
    import vitsq
    from tests.conftest import SHARED

    fixtures = SHARED / "fixtures" / "vosk_vits2"
    other = vitsq.load(fixtures / "tiny_G_1.pth", config_path=fixtures / "tiny_config.json")
    vosk_tiny.name, other.name = "tiny-a", "tiny-b"
    res = run_benchmark(vosk_tiny, [other], batches="1", warmup=1, iters=4, progress=False, threads=1,
                        sentences=_short_sentences())
    (r,) = res.rounds
    assert r["orders"] == [["tiny-a", "tiny-b"], ["tiny-b", "tiny-a"]] * 2
    for name in ("tiny-a", "tiny-b"):
        c = res.cell(name, "cpu", 1)
        assert c.status == "ok", c.error
        assert c.audio_seconds > 0 and c.iters == 4 and c.rtf_aggregate > 0
    assert res.cell("tiny-a", "cpu", 1).tokens == res.cell("tiny-b", "cpu", 1).tokens


def _short_sentences():
    import tempfile
    from pathlib import Path

    f = Path(tempfile.mkdtemp()) / "short.txt"
    f.write_text("Привет.\n", encoding="utf-8")
    return f


def test_executorch_pool_of_another_size_is_refused():
    class FakeET(FakeSynth):
        backend = "executorch"

        def describe(self):
            return {"name": self.name, "weights": "trained", "threads": 3}

    with pytest.raises(UnsupportedError, match=r"et \(3 threads\).*1 threads.*process-wide.*threads=1"):
        run_benchmark(FakeSynth("torchy"), [FakeET("et")], batches="1", warmup=0, iters=1, threads=1,
                      progress=False)


def test_failed_description_is_unknown_not_trained():
    class NoDescribe(FakeSynth):
        def describe(self):
            raise RuntimeError("no description")

    s = NoDescribe("nd")
    res = run_benchmark(s, batches="1", warmup=0, iters=1, progress=False)
    info = res.variants[0]
    assert info["weights"] == "unknown" and info["random_weights"] is False
    assert "describe() failed" in info["description"]["error"]
    assert s.calls == [(1, None)]  # not calibrated as a random-weight model either


# ----------------------------------------------------------------------------- portable JSON
def test_json_holds_no_absolute_paths_and_records_the_command(tmp_path):
    model = tmp_path / "models" / "voice.onnx"
    model.parent.mkdir()
    model.write_bytes(b"not really a model")
    sents = tmp_path / "sents.txt"
    sents.write_text("One short line.\nAnother one here.\n")

    class Sourced(FakeSynth):
        def describe(self):
            return {"name": self.name, "weights": "trained", "source": str(model),
                    "note": f"converted from {model}"}

    def loader(v, device):
        if v.spec.endswith("missing.onnx"):
            raise FileNotFoundError(f"no such file: {v.spec}")
        return Sourced(v.label)

    res = run_benchmark(f"{model}@onnx", [f"gone={tmp_path / 'missing.onnx'}"], batches="1", warmup=0, iters=1,
                        sentences=sents, progress=False, loader=loader, command="vitsq bench voice.onnx@onnx")
    paths = res.write(tmp_path / "out" / "b.json")
    text = paths["json"].read_text()
    assert str(tmp_path) not in text and "/tmp" not in text
    data = json.loads(text)
    assert data["command"] == "vitsq bench voice.onnx@onnx"
    import hashlib

    v0 = data["variants"][0]
    assert v0["label"] == "voice.onnx@onnx" and v0["spec"] == "voice.onnx"
    assert v0["spec_sha256"] == hashlib.sha256(b"voice.onnx" + model.read_bytes()).hexdigest()
    assert v0["description"]["source"] == "voice.onnx" and v0["description"]["source_sha256"] == v0["spec_sha256"]
    assert v0["description"]["note"] == "converted from .../voice.onnx"
    assert data["inputs"]["source"] == "sentence file sents.txt" and len(data["inputs"]["sentences_sha256"]) == 64
    assert ".../missing.onnx" in data["results"][1]["error"]


def test_cli_refuses_huge_batch_before_loading_and_records_command(tmp_path, monkeypatch, capsys):
    from vitsq.cli import main

    monkeypatch.setattr(bench, "_default_loader", lambda threads: pytest.fail("loaded a model"))
    assert main(["bench", "joe", "--batch", "5000"]) == 2
    err = capsys.readouterr().err
    assert f"batch size 5000 is not valid: batch sizes must be integers >= 1 and <= {MAX_BENCH_BATCH}" in err
    assert "Traceback" not in err
    monkeypatch.undo()
    out = tmp_path / "r.json"
    argv = ["bench", "joe", "--batch", "1", "--warmup", "0", "--iters", "1", "--sentences", str(_short_en(tmp_path)),
            "--no-plot", "--no-progress", "--out", str(out)]
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/vitsq", *argv])
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["command"].startswith("vitsq bench joe --batch 1 ") and data["command"].endswith("--out .../r.json")
    assert str(tmp_path) not in json.dumps(data)


def _short_en(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("Hi there.\n")
    return f


# ----------------------------------------------------------------------------- existing outputs
def test_cli_refuses_an_existing_out_without_force_before_loading(tmp_path, monkeypatch, capsys):
    """An earlier run's result file is refused (one line, exit 2) before any model loads, and is
    left byte-identical; the same holds for the .md/.png written beside it."""
    from vitsq.cli import main

    monkeypatch.setattr(bench, "run_benchmark", lambda *a, **k: pytest.fail("benchmarked before checking --out"))
    out = tmp_path / "bench.json"
    out.write_text('{"earlier": "run"}\n')
    assert main(["bench", "joe", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"vitsq bench: error: bench JSON output {out} already exists: choose "
                                        "another path or pass --force to replace it"]
    assert out.read_text() == '{"earlier": "run"}\n'
    md = tmp_path / "other.md"
    md.write_text("my notes\n")
    assert main(["bench", "joe", "--out", str(tmp_path / "other.json"), "--no-progress"]) == 2
    assert "bench MD output" in capsys.readouterr().err and md.read_text() == "my notes\n"
    assert not (tmp_path / "other.json").exists()


def test_write_replaces_results_only_with_force(tmp_path):
    res = run_benchmark(FakeSynth("base"), batches="1", warmup=0, iters=1, progress=False)
    paths = res.write(tmp_path / "b.json", plot=True)
    before = {k: p.read_bytes() for k, p in paths.items()}
    from vitsq.errors import OutputError

    with pytest.raises(OutputError, match="already exists"):
        res.write(tmp_path / "b.json")
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    res.settings["seed"] = 99
    again = res.write(tmp_path / "b.json", force=True)
    assert json.loads(again["json"].read_text())["settings"]["seed"] == 99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.md", "b.png"]  # no temporaries left
