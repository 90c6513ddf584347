"""vitsq report on small eval and bench JSON produced by the real evaluate()/run_benchmark() code."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from vitsq.bench import run_benchmark
from vitsq.errors import InputError
from vitsq.evaluate.run import evaluate
from vitsq.report import bootstrap_ci, build_report, classify, load_inputs, markdown_to_html
from vitsq.synth import Audio

SENTS = ["The red bus stops here.", "A quiet morning in the valley.", "Bring two apples and a pear.",
         "Nobody expected the rain to stop.", "She reads a book every night."]


class ToneSynth:
    """A cheap stand-in model: a tone whose length follows the text; ``drop`` words go missing in ASR."""

    language = "en"
    num_speakers = 1

    def __init__(self, name, backend="torch", size=4_000_000, drop=0, weights="trained"):
        self.name, self.backend, self._size, self.drop, self.weights = name, backend, size, drop, weights
        self.sample_rate = 16000
        self.config = type("C", (), {"hop_length": 256})()

    def text_to_ids(self, text):
        return [[1] + [2 + ord(c) % 40 for c in text] + [1]]

    def synthesize(self, text, speaker=None, noise_scale=None, length_scale=None, noise_w=None, seed=0):
        n = 400 * len(text)
        t = np.arange(n) / self.sample_rate
        x = (0.3 * np.sin(2 * np.pi * (200 + 10 * self.drop) * t)).astype(np.float32)
        x += np.random.default_rng(seed).normal(0, 0.01, n).astype(np.float32)
        return Audio(samples=x, sample_rate=self.sample_rate, model_seconds=0.01, num_tokens=len(text))

    def synthesize_ids_batch(self, batch, speakers=None, noise_scale=None, length_scale=None, noise_w=None, seed=0):
        return [np.zeros(300 * len(ids), np.float32) for ids in batch], 0.0

    def size_bytes(self):
        return self._size

    def describe(self):
        return {"name": self.name, "backend": self.backend, "weights": self.weights}


class EchoASR:
    """Returns the sentence it was made for, minus the first ``drop`` words for 'drop' models."""

    def __init__(self):
        self.queue = []

    def transcribe(self, audio, sample_rate, language):
        text, drop = self.queue.pop(0)
        return " ".join(text.split()[drop:])

    def describe(self):
        return {"model": "echo-test-asr"}


class FlatEncoder:
    def embed(self, audio, sample_rate):
        v = np.array([1.0, float(np.abs(audio).mean())])
        return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    ref, int8 = ToneSynth("fp32", size=60_000_000), ToneSynth("int8", size=16_000_000, drop=1)
    asr = EchoASR()
    asr.queue = [(s, 0) for s in SENTS] + [(s, 1) for s in SENTS]
    evaluate(ref, [int8], sentences=SENTS, asr=asr, speaker_encoder=FlatEncoder(), out=d / "eval.json",
             use_cache=False, progress=False, n_boot=200)
    res = run_benchmark(ToneSynth("fp32", size=60_000_000), [ToneSynth("int8", size=16_000_000)],
                        batches="1,2", warmup=0, iters=3, progress=False, machine_name="report-test")
    res.write(d / "bench.json")
    sens = {"granularity": "groups", "engine": "x86", "evaluation": {},
            "all_int8": {"log_mel_l1": 0.2, "snr_db": 10.0, "mcd_db": 3.0, "length_mismatches": 0},
            "rows": [{"name": f"dec.ups.{i}", "layers": 2, "params": 1000 * (i + 1), "log_mel_l1": 0.1 / (i + 1),
                      "snr_db": 12.0 + i, "mcd_db": 2.0, "length_mismatches": 0} for i in range(4)]}
    (d / "artifact").mkdir()
    (d / "artifact" / "vitsq.json").write_text(json.dumps({"kind": "torch-eager", "quantization": {"sensitivity": sens}}))
    return d


def test_classify_and_load(results):
    inp = load_inputs([results])
    assert len(inp.eval) == 1 and len(inp.bench) == 1 and len(inp.sensitivity) == 1
    assert classify({"foo": 1}) is None
    with pytest.raises(InputError, match="does not exist"):
        load_inputs([results / "missing.json"])
    bad = results / "bad.txt"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad.txt is not a JSON file \(malformed JSON: Expecting property name "
                                         r"enclosed in double quotes at line 1 column 2\)"):
        load_inputs([bad])
    truncated = results / "truncated.txt"
    truncated.write_text('{"schema": "vitsq-bench/1", "settings": {"batches": [1]}}')
    with pytest.raises(InputError, match="truncated.txt looks like a vitsq bench result but has no 'results'"):
        load_inputs([truncated])
    row = results / "row.txt"
    row.write_text('{"results": [{"variant": "x"}], "asr": {}}')
    with pytest.raises(InputError, match=r"row.txt looks like a vitsq eval result but has no results\[0\].'sentences'"):
        load_inputs([row])
    other = results / "other.json.txt"
    other.write_text('{"a": 1}')
    with pytest.raises(InputError, match="neither a vitsq bench JSON"):
        load_inputs([other])
    with pytest.raises(InputError, match="no results given"):
        load_inputs([])


def test_report_tables_plots_and_self_contained_html(results, tmp_path):
    paths = build_report([results / "eval.json", results / "bench.json", results / "artifact"], tmp_path / "rep")
    md = paths["md"].read_text()
    # table 1: one row per variant with size, RTF, WER, delta WER
    t1 = md.split("## Model variants")[1].split("\n\n")[1].splitlines()
    assert t1[0].startswith("| variant | backend | weights | size |")
    fp32 = next(ln for ln in t1 if ln.startswith("| fp32 "))
    int8 = next(ln for ln in t1 if ln.startswith("| int8 "))
    assert "60.0 MB" in fp32 and "(reference)" in fp32 and "0.000 [0.000, 0.000]" in fp32
    assert "16.0 MB" in int8 and "0.27" in int8  # size ratio 16/60
    ev = json.loads((results / "eval.json").read_text())
    wer_int8 = next(r for r in ev["results"] if r["variant"] == "int8")["wer"]
    assert wer_int8 > 0 and f"{wer_int8:.3f} [" in int8
    # RTF from the bench run, merged into the same rows
    bench = json.loads((results / "bench.json").read_text())
    rtf = next(c for c in bench["results"] if c["variant"] == "int8" and c["batch"] == 1)["rtf"]["median"]
    assert f"{rtf:.4f} (b=1)" in int8
    # table 2 in the seed's layout
    assert "| batch | fp32 · cpu | int8 · cpu |" in md
    assert "report-test" in md
    # sensitivity ranking, most sensitive first
    assert "| 1 | dec.ups.0 |" in md and "(all INT8)" in md
    for key in ("size_png", "wer_png", "rtf_png", "sensitivity_png"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 4
    assert not re.search(r'src="(?!data:)', html)  # nothing loaded from disk or network
    first = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert base64.b64decode(first)[:4] == b"\x89PNG"
    assert "<table>" in html and "<th>variant</th>" in html


def test_eval_label_and_bench_path_of_one_variant_share_a_row(results, tmp_path):
    """`vitsq eval joe int8=DIR` records the label, `vitsq bench int8=DIR` the path: one row."""
    bench = json.loads((results / "bench.json").read_text())
    for v in bench["variants"]:
        if v["label"] == "int8":
            v["spec"] = "out/bench/joe-int8"
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    md = build_report([results / "eval.json", tmp_path / "bench.json"], tmp_path / "rep")["md"].read_text()
    t1 = md.split("## Model variants")[1].split("\n\n")[1].splitlines()
    rows = [ln for ln in t1 if ln.startswith("| int8 ")]
    assert len(rows) == 1 and "(b=1)" in rows[0] and "[" in rows[0].split("|")[8]


def test_bootstrap_ci_contains_point_and_is_exact_for_identical_sentences():
    p, lo, hi = bootstrap_ci([1, 0, 2, 1, 0, 3], [5, 5, 5, 5, 5, 5], n_boot=500)
    assert p == pytest.approx(7 / 30) and lo <= p <= hi and lo < hi
    p, lo, hi = bootstrap_ci([1, 1, 1], [4, 4, 4])
    assert p == lo == hi == pytest.approx(0.25)


def test_random_weight_variants_are_flagged(tmp_path):
    res = run_benchmark(ToneSynth("rand", weights="untrained (random weights)"), batches="1", warmup=0, iters=1,
                        progress=False)
    res.write(tmp_path / "b.json")
    paths = build_report([tmp_path / "b.json"], tmp_path / "rep")
    md = paths["md"].read_text()
    assert "Random-weight variants measure speed and size only" in md and "**random weights**" in md


def test_failed_bench_variant_shows_failed(tmp_path):
    class Bad(ToneSynth):
        def synthesize_ids_batch(self, *a, **k):
            raise RuntimeError("kaput")

    res = run_benchmark(ToneSynth("ok"), [Bad("bad")], batches="1", warmup=0, iters=1, progress=False)
    res.write(tmp_path / "b.json")
    md = build_report([tmp_path / "b.json"], tmp_path / "rep")["md"].read_text()
    assert re.search(r"\| bad \|.*\| FAILED \|", md)


def test_markdown_to_html_escapes(tmp_path):
    out = markdown_to_html("# T <x>\n\n| a | b |\n|---|---|\n| <i> | `c` |\n", tmp_path, "t")
    assert "&lt;i&gt;" in out and "<code>c</code>" in out and "<h1>T &lt;x&gt;</h1>" in out


def test_cli_report(results, tmp_path, capsys):
    from vitsq.cli import main

    assert main(["report", str(results / "bench.json"), "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file()
    assert main(["report", str(tmp_path / "nope.json"), "-o", str(tmp_path / "r0")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # malformed JSON: one line naming the file and the JSON error, exit 2
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "vitsq-bench/1",\n "settings": }')
    assert main(["report", str(broken), "-o", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"vitsq report: error: {broken} is not a JSON file (malformed JSON: Expecting value at line 2 column 14)"]
    not_utf8 = tmp_path / "latin.json"
    not_utf8.write_bytes(b'{"a": "\xe9"}')
    assert main(["report", str(not_utf8), "-o", str(tmp_path / "r3")]) == 2
    err = capsys.readouterr().err
    assert "latin.json is not a JSON file (not UTF-8 text" in err and "Traceback" not in err
    # a folder holding a malformed file names that file
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "half.json").write_text('{"results": [')
    assert main(["report", str(folder), "-o", str(tmp_path / "r4")]) == 2
    assert "half.json is not a JSON file (malformed JSON" in capsys.readouterr().err


def test_report_folder_is_replaced_only_with_force_and_only_if_vitsq_wrote_it(results, tmp_path, capsys):
    from vitsq.cli import main

    out = tmp_path / "r"
    assert main(["report", str(results / "bench.json"), "-o", str(out)]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "vitsq.json").read_text())
    assert manifest["kind"] == "report" and "report.html" in manifest["files"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a rerun is refused before anything is read or written: one line, exit 2, folder untouched
    assert main(["report", str(results / "eval.json"), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"vitsq report: error: report folder {out} already exists: choose another path or pass --force to replace it"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # --force replaces the whole earlier report (its files of another run are gone, nothing left over)
    assert main(["report", str(results / "eval.json"), "-o", str(out), "--force"]) == 0
    assert "rtf_vs_batch.png" not in {p.name for p in out.iterdir()} and (out / "wer_cer.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    # a folder vitsq did not write is never replaced, even with --force
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["report", str(results / "eval.json"), "-o", str(mine), "--force"]) == 2
    assert "vitsq did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


# ----------------------------------------------------------------------------- the demo's error path
def test_demo_missing_things_are_one_line_errors(tmp_path, capsys):
    from vitsq.cli import main
    from vitsq.demo import _Step
    from vitsq.errors import UnsupportedError

    assert main(["demo", "--model", "no-such-voice", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "demo step 'load' failed: model 'no-such-voice' not found" in err and "Traceback" not in err

    class Bar:
        def set_description(self, s):
            pass

        def update(self, n):
            pass

    with pytest.raises(UnsupportedError, match=r"needs the Python package 'faster_whisper'.*\.\[eval\]"):
        with _Step("evaluate", Bar()):
            raise ModuleNotFoundError("No module named 'faster_whisper'", name="faster_whisper")


def test_demo_runs_end_to_end_small(tmp_path, capsys):
    """The README's first command, shrunk: every step runs (a refactor once broke the last one,
    writing summary.json, and nothing caught it) and the printed summary names the artifacts."""
    import json

    from vitsq.cli import main

    assert main(["demo", "--out", str(tmp_path), "--sentences", "2", "--batch", "1", "--warmup", "0",
                 "--iters", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["recipe"]["recipe"] == "ort-static" and summary["recipe"]["polyphase_upsampling"] is True
    assert summary["report_md"] == str(tmp_path / "report" / "report.md")
    assert "## Model variants" in (tmp_path / "report" / "report.md").read_text()
    assert "WER" in out and "RTF" in out
    # every variant of its benchmark ran on the demo's one thread (ONNX Runtime has its own pool)
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [v["threads"] for v in bench["variants"]] == [1, 1, 1]
    # the README's `./dev demo` twice in a row: the demo replaces its own outputs (the INT8
    # artifact is reused) and leaves every other file in its folder alone
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "samples" / "mine.wav").write_bytes(b"not vitsq's")
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "samples").iterdir()}
    assert main(["demo", "--out", str(tmp_path), "--sentences", "2", "--batch", "1", "--warmup", "0",
                 "--iters", "1", "--no-progress"]) == 0
    assert "WER" in capsys.readouterr().out
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "samples" / "mine.wav").read_bytes() == b"not vitsq's"
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "samples").iterdir()}
    assert again.keys() == first.keys() and len(again) == 7
    assert all(again[n] > first[n] for n in again if n != "mine.wav")  # every sample written again
    assert json.loads((tmp_path / "summary.json").read_text())["samples"] == summary["samples"]
    assert not [p for p in tmp_path.rglob(".*vitsq-*")]  # no temporaries or locks left
