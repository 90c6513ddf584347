"""vitsq tune: the space, the gate, the planner, the results file, the executors, and a small
real search of the Vosk tiny fixture on local workers and on a local Ray started by the test."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vitsq.errors import InputError, UnsupportedError
from vitsq.tune.space import (
    Candidate,
    CandidateSet,
    ModelFacts,
    Planner,
    SearchSpace,
    enumerate_candidates,
    ort_group_prefixes,
    parse_gate,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "vosk_vits2"
TINY = FIXTURES / "tiny_G_1.pth"
TINY_CONFIG = FIXTURES / "tiny_config.json"
#: a VITS (HiFi-GAN) config as best_for and the ORT mapping read it
VITS = SimpleNamespace(config=SimpleNamespace(arch="vits", upsample_rates=(8, 8, 2, 2),
                                              resblock_kernel_sizes=(3, 7, 11)))
GROUPS = {"enc_p": 37, "dp": 32, "flow": 40, "dec.conv_pre": 1, "dec.stage0": 7, "dec.stage3": 7, "dec.conv_post": 1}


def _facts(**kw) -> ModelFacts:
    base = dict(arch="vits", groups=GROUPS, ranking=("dec.stage3", "dec.conv_post", "dp", "flow"),
                ort_prefixes={"dec.stage3": ("/dec/ups.3/",), "dec.conv_post": ("/dec/conv_post/",), "dp": ("/dp/",),
                              "flow": ("/flow/",)}, calib_pool=40, engines=("fbgemm", "qnnpack"), max_threads=2)
    base.update(kw)
    return ModelFacts(**base)


# ============================================================================ gate
def test_gate_parses_and_judges():
    gate = parse_gate("dwer<=0.5, speaker_sim>=0.97,logmel_l1<1")
    assert gate.metrics == ("dwer", "speaker_sim", "logmel_l1")
    assert gate.evaluate({"dwer": 0.2, "speaker_sim": 0.98, "logmel_l1": 0.5})["passed"]
    verdict = gate.evaluate({"dwer": 0.7, "speaker_sim": 0.98, "logmel_l1": 0.5})
    assert not verdict["passed"] and verdict["violation"] > 0
    assert not gate.evaluate({"dwer": None, "speaker_sim": 0.99, "logmel_l1": 0.1})["passed"]  # unmeasured fails


@pytest.mark.parametrize("text, match", [
    ("", "empty --gate"),
    ("wer_delta<=1", "unknown gate metric"),
    ("dwer=0.5", "is not METRIC"),
    ("speaker_sim>=1.2", "can never be met"),
    ("logmel_l1<0", "can never be met"),
    ("logmel_l1<=0.1,logmel_l1>=0.2", "contradict"),
])
def test_gate_refuses_bad_and_unmeetable_checks(text, match):
    with pytest.raises(InputError, match=match):
        parse_gate(text)


# ============================================================================ space and pruning
def test_space_validation_and_round_trip():
    space = SearchSpace(families=("eager",), calib_sizes=(2,))
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    with pytest.raises(InputError, match="axis 'calib_sizes' is empty"):
        SearchSpace(calib_sizes=())
    with pytest.raises(InputError, match="unknown recipe family 'int4'"):
        SearchSpace(families=("int4",))
    with pytest.raises(InputError, match="unknown search space key"):
        SearchSpace.from_dict({"famillies": ["eager"]})
    with pytest.raises(InputError, match="observer"):
        SearchSpace(observers=("max",))


def test_enumeration_prunes_impossible_candidates_with_reasons():
    space = SearchSpace(families=("ort-static", "eager", "ort-dynamic"), keep_float_depths=(0, 1, 9),
                        calib_sizes=(16, 64), threads=(1, 4), engines=(None, "onednn"),
                        static_scopes=(("/dec/",), ("/dp/",)))
    cands = enumerate_candidates(space, _facts(), VITS)
    reasons = " | ".join(p.reason for p in cands.pruned)
    assert "4 threads but the largest worker has 2 cores" in reasons
    assert "calibration needs 64 sentences" in reasons
    assert "keeps 9 groups float but the sensitivity ranking has 4" in reasons
    assert "engine 'onednn' is not available" in reasons
    every = cands.grid + cands.presets
    assert every and all(c.threads == 1 and (c.calib or 0) <= 40 for c in every)
    assert len({c.key for c in cands.grid}) == len(cands.grid)  # deduplicated
    # the greedy chain keeps the most sensitive groups float, with the preset's options
    chain = cands.chains["ort-static"]
    assert [c.recipe.keep_float for c in chain] == [(), ("/dec/ups.3/",)]
    assert chain[0].recipe.calibrate_method == "percentile"
    assert [c.recipe.keep_float for c in cands.chains["eager"]] == [(), ("dec.stage3",)]
    assert {c.family for c in cands.presets} == {"ort-static", "eager", "ort-dynamic"}


def test_contradictory_space_is_an_error_naming_why():
    with pytest.raises(InputError, match="empty after pruning.*ExecuTorch"):
        enumerate_candidates(SearchSpace(families=("pt2e",)), _facts(), VITS)
    with pytest.raises(InputError, match="empty after pruning.*calibration needs 50"):
        enumerate_candidates(SearchSpace(families=("eager",), calib_sizes=(50,), include_presets=False), _facts(), VITS)
    # every group float: nothing left INT8
    facts = _facts(groups={"flow": 1, "dp": 1}, ranking=("flow", "dp"))
    with pytest.raises(InputError, match="nothing would be INT8"):
        enumerate_candidates(SearchSpace(families=("eager",), keep_float_depths=(2,), include_presets=False), facts,
                             VITS)


def test_ort_group_prefixes_follow_the_exported_names():
    names = ["/dec/ups.1/Conv", "/dec/resblocks.3/convs1.0/Conv", "/dec/resblocks.4/Add", "/dec/resblocks.5/Add",
             "/dec/LeakyRelu_1", "/dec/Add_2", "/dec/Add_3", "/dec/Div_1", "/dec/conv_post/Conv", "/dec/LeakyRelu_2",
             "/flow/flows.0/Conv", "/dec/Add_1", "/dec/Add_10"]
    config = SimpleNamespace(resblock_kernel_sizes=(3, 5, 7), upsample_rates=(4, 4))
    got = ort_group_prefixes("dec.stage1", [], config, names)
    assert got == ("/dec/ups.1/", "/dec/resblocks.3/", "/dec/resblocks.4/", "/dec/resblocks.5/", "/dec/LeakyRelu_1",
                   "/dec/Add_2", "/dec/Add_3", "/dec/Div_1")
    assert ort_group_prefixes("dec.conv_post", ["dec.conv_post"], config, names) == ("/dec/conv_post/",
                                                                                     "/dec/LeakyRelu_2")
    assert ort_group_prefixes("flow", [], config, names) == ("/flow/",)
    # "/dec/Add_1" would also name /dec/Add_10: ambiguous, dropped
    assert "/dec/Add_1" not in ort_group_prefixes("dec.stage0", [], config, names)


# ============================================================================ planner
def _cand(name: str, depth: int = 0) -> Candidate:
    return Candidate("eager", json.dumps({"recipe": "eager", "version": 1, "keep_float": [name]}), 2, 1, name,
                     "x", depth)


def test_planner_greedy_chain_then_seeded_random():
    chain = [_cand(f"c{i}", i) for i in range(3)]
    grid = [_cand(f"g{i}") for i in range(6)]
    cset = CandidateSet(grid, [_cand("preset")], {"eager": chain}, [])
    p = Planner(cset, trials=6, seed=3)
    assert [c.label for c in p.next_round({})] == ["preset", "c0"]
    res = {c.key: {"status": "ok"} for c in cset.presets}
    res[chain[0].key] = {"status": "gated"}  # the gate failed: keep the next group float
    assert [c.label for c in p.next_round(res)] == ["c1"]
    res[chain[1].key] = {"status": "ok"}  # passed: the chain is closed, random fills the budget
    rnd = p.next_round(res)
    assert len(rnd) == 3 and all(c.label.startswith("g") for c in rnd)
    assert p.next_round(res) == []
    # the same seed and results give the same proposals; another seed other random ones
    q = Planner(cset, trials=6, seed=3)
    for _ in range(4):
        q.next_round(res)
    assert [c.key for c in q.proposed] == [c.key for c in p.proposed]
    r = Planner(cset, trials=6, seed=4)
    for _ in range(4):
        r.next_round(res)
    assert [c.key for c in r.proposed][:3] == [c.key for c in p.proposed][:3]


# ============================================================================ results file
def _record(i: int) -> dict:
    cand = _cand(f"r{i}")
    return {"schema": "vitsq-tune-trial/1", "index": i, "key": cand.key, "candidate": cand.to_dict(),
            "status": "ok", "metrics": {"logmel_l1": float("nan")}}


def test_results_log_ignores_and_repairs_a_torn_last_line(tmp_path):
    from vitsq.tune.runner import ResultsLog

    path = tmp_path / "trials.jsonl"
    log = ResultsLog(path)
    log.append(_record(0))
    log.append(_record(1))
    assert json.loads(path.read_text().splitlines()[0])["metrics"]["logmel_l1"] is None  # NaN -> null
    with open(path, "ab") as f:
        f.write(b'{"schema": "vitsq-tune-trial/1", "index": 2, "ke')  # killed mid-write
    again = ResultsLog(path)
    assert again.torn > 0 and len(again.records) == 2
    again.append(_record(3))
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["schema"] == "vitsq-tune-trial/1" for line in lines)
    path.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(InputError, match="line 2 is not a trial record"):
        ResultsLog(path)


# ============================================================================ executors
def _fake_spec(i: int):
    from vitsq.tune.trial import ModelSpec, TrialSpec

    return TrialSpec(i, _cand(f"w{i}").to_dict(), ModelSpec("joe"), ("a",), (None,), "en", "logmel_l1<=1",
                     ("logmel_l1",), 1)


def test_a_dying_worker_is_retried_once_then_recorded_failed(tmp_path):
    """Worker 0 dies on its first attempt only, worker 1 on every attempt: 0 is recorded from
    its retry, 1 as failed after two deaths, and the results file holds both, whole."""
    from vitsq.tune.runner import LocalExecutor, ResultsLog, run_specs
    from vitsq.tune.trial import Reference

    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, pickle, sys\n"
        "spec = pickle.load(open(sys.argv[1], 'rb'))\n"
        "marker = sys.argv[3] + '.seen'\n"
        "first = not os.path.exists(os.path.join(os.path.dirname(sys.argv[3]), f'seen-{spec.index}'))\n"
        "open(os.path.join(os.path.dirname(sys.argv[3]), f'seen-{spec.index}'), 'w').close()\n"
        "if spec.index == 1 or first:\n"
        "    os._exit(9)\n"
        "json.dump({'schema': 'vitsq-tune-trial/1', 'index': spec.index, 'key': spec.candidate['key'],\n"
        "           'candidate': spec.candidate, 'status': 'ok', 'threads': os.environ['OMP_NUM_THREADS']},\n"
        "          open(sys.argv[3], 'w'))\n")
    ex = LocalExecutor(2, tmp_path / "logs", command=[sys.executable, str(script)])
    ex.prepare(Reference([], None, None, 22050, 0))
    results = ResultsLog(tmp_path / "trials.jsonl")
    seen = []
    try:
        run_specs(ex, [_fake_spec(0), _fake_spec(1)], results, seen.append)
    finally:
        ex.close()
    by_index = {r["index"]: r for r in seen}
    assert by_index[0]["status"] == "ok" and by_index[0]["attempts"] == 2 and by_index[0]["threads"] == "1"
    assert by_index[1]["status"] == "failed" and by_index[1]["attempts"] == 2
    assert "died twice" in by_index[1]["error"] and "exited with code 9" in by_index[1]["error"]
    assert len(ResultsLog(tmp_path / "trials.jsonl").records) == 2


def test_unreachable_or_malformed_ray_address_is_a_clean_error(tmp_path, capsys):
    pytest.importorskip("ray")
    from vitsq.cli import main
    from vitsq.tune.runner import check_reachable

    t = time.time()
    with pytest.raises(InputError, match="does not answer"):
        check_reachable("127.0.0.1:1")
    with pytest.raises(InputError, match="is not HOST:PORT"):
        check_reachable("head-node")
    assert time.time() - t < 15
    rc = main(["tune", "joe", "-o", str(tmp_path / "t"), "--ray", "ray://127.0.0.1:1", "--no-plot"])
    assert rc == 2 and "does not answer" in capsys.readouterr().err


def test_missing_ray_says_how_to_install_it(monkeypatch):
    import builtins

    from vitsq.tune.runner import import_ray

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UnsupportedError, match=r"pip install 'vitsq\[cluster\]'"):
        import_ray()


def test_tuning_split_is_disjoint_from_calibration_and_evaluation():
    from vitsq.evaluate.sentences import load_split
    from vitsq.tune.trial import calibration_room, tuning_sentences

    for lang in ("en", "ru"):
        tune = tuning_sentences(lang, 40)
        room = calibration_room(lang, 40)
        assert len(tune) == 40 and room >= 36
        assert not set(tune) & set(load_split(lang, "calibration")[:room])
        assert not set(tune) & set(load_split(lang, "evaluation"))
    with pytest.raises(InputError, match="tuning split takes"):
        tuning_sentences("en", 500)


# ============================================================================ a real search
SPACE = {"families": ["eager"], "keep_float_depths": [0, 1], "observers": ["minmax"], "calib_sizes": [2],
         "per_channel": [True, False], "include_presets": False}
ARGS = ["--trials", "3", "--gate", "logmel_l1<=1.0", "--sentences", "3", "--gate-sentences", "2",
        "--timing-sentences", "1", "--timing-rounds", "2", "--seed", "1"]


def _config():
    from vitsq.tune.search import TuneConfig
    from vitsq.tune.trial import ModelSpec

    return TuneConfig(ModelSpec(str(TINY), str(TINY_CONFIG)), "speed", "logmel_l1<=1.0", 3,
                      SearchSpace.from_dict(SPACE), 1, 3, 2, 1, 2, 0)


@pytest.fixture(scope="module")
def local_search(tmp_path_factory):
    """``vitsq tune`` on local workers: 3 trials of the Vosk tiny fixture (eager, calibrated on
    2 sentences, judged by log-mel distance on 3 tuning sentences; no Whisper needed)."""
    from vitsq.cli import main

    assert TINY.is_file(), f"golden fixture missing: {TINY}"
    root = tmp_path_factory.mktemp("tune")
    (root / "space.json").write_text(json.dumps(SPACE))
    out = root / "local"
    rc = main(["tune", str(TINY), "--config", str(TINY_CONFIG), "-o", str(out), "--space", str(root / "space.json"),
               "--workers", "2", "--final-sentences", "1"] + ARGS)
    return rc, out


def _records(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, (out / "trials.jsonl").read_text().splitlines())}


def test_local_search_runs_trials_and_writes_every_output(local_search):
    rc, out = local_search
    assert rc == 0
    recs = _records(out)
    assert len(recs) == 3
    for r in recs.values():
        assert r["status"] == "ok" and r["worker"]["threads"] == 1 and r["attempts"] == 1
        assert r["timing"]["speed"] > 0 and r["timing"]["rounds"] == 2
        assert 0 <= r["metrics"]["logmel_l1"] <= 1.0 and r["metrics"]["sentences"] == 3
        assert r["size"]["bytes"] < r["size"]["fp32_bytes"] and r["artifact"]["files"]
    assert [r["candidate"]["origin"] for r in sorted(recs.values(), key=lambda r: r["index"])] == \
        ["greedy", "random", "random"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["winner"]["reproduced"]
    winner = recs[summary["winner"]["key"]]
    assert winner["timing"]["speed"] == max(r["timing"]["speed"] for r in recs.values())
    held = summary["final"]["variants"]["winner"]
    assert summary["final"]["split"] == "evaluation" and held["metrics"]["sentences"] == 1 and held["gate"]["passed"]
    assert (out / "pareto.png").stat().st_size > 10_000 and "Held-out evaluation" in (out / "report.md").read_text()
    assert json.loads((out / "tune.json").read_text())["facts"]["ranking"]  # measured sensitivity ranking


def test_recipe_dir_best_rebuilds_the_same_artifact(local_search, tmp_path, capsys):
    from vitsq.cli import main

    _, out = local_search
    preset = json.loads((out / "best" / "preset.json").read_text())
    rc = main(["quantize", str(TINY), "--config", str(TINY_CONFIG), "--recipe", str(out / "best"),
               "-o", str(tmp_path / "q")])
    assert rc == 0 and "identical to the tuned trial's artifact" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "q" / "vitsq.json").read_text())
    assert {n: f["sha256"] for n, f in manifest["files"].items()} == preset["artifact"]["files"]
    assert manifest["quantization"]["recipe"] == preset["recipe"]["recipe"]
    rc = main(["quantize", str(TINY), "--recipe", str(out / "best"), "--calib", "4", "-o", str(tmp_path / "q2")])
    assert rc == 2 and "drop --calib" in capsys.readouterr().err
    rc = main(["quantize", str(TINY), "--recipe", str(tmp_path), "-o", str(tmp_path / "q3")])
    assert rc == 2 and "has no preset.json" in capsys.readouterr().err


def test_resume_skips_finished_trials(local_search, tmp_path):
    from vitsq.tune.runner import LocalExecutor
    from vitsq.tune.search import tune

    _, out = local_search
    before = _records(out)
    copy = tmp_path / "resume"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("logs"))
    lines = (copy / "trials.jsonl").read_text().splitlines()
    last = max(before.values(), key=lambda r: r["index"])
    kept = [line for line in lines if json.loads(line)["key"] != last["key"]]
    # an interrupted search: the last trial's line was only half written
    (copy / "trials.jsonl").write_text("\n".join(kept) + "\n" + json.dumps(last)[:40])
    ex = LocalExecutor(1, copy / "logs")
    try:
        res = tune(_config(), copy, ex)
    finally:
        ex.close()
    assert res.ran == 1  # only the trial that had not finished
    after = _records(copy)
    assert set(after) == set(before)
    assert after[last["key"]]["metrics"] == last["metrics"]  # same quality numbers when re-run
    ex = LocalExecutor(1, copy / "logs")
    try:
        assert tune(_config(), copy, ex).ran == 0  # finished: nothing left to run
    finally:
        ex.close()
    import dataclasses

    with pytest.raises(InputError, match="other settings .*gate"):
        tune(dataclasses.replace(_config(), gate="logmel_l1<=2"), copy, LocalExecutor(1, copy / "logs"))


def test_ray_search_gives_the_same_trials(local_search, tmp_path):
    """The same search as Ray tasks on a local Ray started here (its first two trials): the same
    candidates, statuses, quality numbers and artifact hashes for the same seed (timings differ,
    as they do between any two runs)."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'vitsq[cluster]'")
    from vitsq.tune.runner import RayExecutor
    from vitsq.tune.search import tune

    _, out = local_search
    ray_dir = tmp_path / "ray"
    ray_dir.mkdir()
    shutil.copy(out / "tune.json", ray_dir / "tune.json")  # the measured facts: skip ranking again
    ex = RayExecutor("auto")
    try:
        assert ex.describe()["executor"] == "ray"
        import dataclasses

        res = tune(dataclasses.replace(_config(), trials=2), ray_dir, ex)  # the local search's first two trials
    finally:
        ex.close()
    local, remote = _records(out), _records(ray_dir)
    assert res.ran == 2 and set(remote) == {k for k, r in local.items() if r["index"] < 2}
    for key, r in remote.items():
        assert r["candidate"] == local[key]["candidate"] and r["index"] == local[key]["index"]
        assert r["status"] == local[key]["status"] and r["metrics"] == local[key]["metrics"]
        assert r["artifact"] == local[key]["artifact"]


def test_no_candidate_passing_the_gate_reports_the_closest_and_exits_non_zero(capsys):
    from vitsq.tune.cli import _print_summary
    from vitsq.tune.search import TuneResult, select

    a, b = _record(0), _record(1)
    a.update(status="gated", early_stop=True, gate={"violation": 3.0})
    b.update(status="gated", early_stop=False, gate={"violation": 0.5})
    winner, passed = select([a, b], "speed")
    assert winner is b and not passed
    summary = {"trials": 2, "counts": {"ok": 0, "gated": 2, "failed": 0}, "gate": "logmel_l1<=0.01",
               "winner": {"index": 1, "label": "r1", "metrics": {"logmel_l1": 0.02}}}
    assert _print_summary(TuneResult(Path("x"), [a, b], b, False, summary)) == 1
    assert "no candidate passed the gate" in capsys.readouterr().out


def test_a_trial_failing_the_early_gate_stops_before_timing(vosk_tiny):
    from vitsq.tune.search import compute_reference
    from vitsq.tune.trial import ModelSpec, TrialSpec, run_trial, tuning_sentences

    sentences = tuning_sentences("ru", 3)
    cand = enumerate_candidates(SearchSpace.from_dict({**SPACE, "per_channel": [True], "keep_float_depths": [0]}),
                                _facts(groups={"enc_p": 1, "flow": 1}, ranking=("flow",), calib_pool=40), vosk_tiny)
    spec = TrialSpec(0, cand.grid[0].to_dict(), ModelSpec(str(TINY), str(TINY_CONFIG)), tuple(sentences),
                     (0, 1, 2), "ru", "logmel_l1<=0.000001", ("logmel_l1",), 1, 1, 1)
    ref = compute_reference(vosk_tiny, sentences, [0, 1, 2], "ru", ("logmel_l1",), 1)
    rec = run_trial(spec, ref)
    assert rec["status"] == "gated" and rec["early_stop"] and rec["metrics"]["sentences"] == 1
    assert "timing" not in rec and rec["gate"]["checks"][0]["passed"] is False
