"""Measure the joe ONNX variants of benchmarks/int8/build.py: durations, speaker similarity, speed, profile.

All runs are zero noise (ONNX Runtime draws its noise unseeded inside the graph), the voice's own
length scale, batch 1, one ONNX Runtime thread, the shipped English *evaluation* split (never
used for calibration).

* ``quality``: integer durations (the graph's ``durations`` output) of every variant against the
  FP32 export with the same graph structure (``fp32_poly.onnx``) and against FP32 PyTorch; speaker
  similarity (resemblyzer) of each variant's audio to FP32 PyTorch's, per sentence.
* ``speed``: interleaved rounds -- every round runs each variant once on the same sentences, in
  rotating order -- and per-round time ratios to the baseline (the original Piper voice file),
  so machine load hits all variants alike. Reports the median ratio and its p10-p90.
* ``profile``: ONNX Runtime's profiler on one variant; kernel time per op type and per node
  prefix (the module path up to ``--depth`` components).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8/study.py quality faithful preset -n 40
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8/study.py speed faithful preset --rounds 15
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8/study.py profile faithful
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("int8.study")

BASELINE = "original"  # the Piper voice file as shipped (FP32), what `vitsq bench` calls fp32-ort


def _path(name: str, folder: Path) -> Path:
    if name == BASELINE:
        from vitsq.registry import joe_paths

        return Path(joe_paths()[0])
    p = Path(name)
    return p if p.suffix == ".onnx" and p.exists() else folder / f"{name}.onnx"


def _session(path: Path, threads: int = 1, profile_prefix: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _items(synth: Any, n: int, offset: int = 0) -> tuple[list[str], list[list[list[int]]]]:
    """n evaluation sentences and their symbol ids (one list per sentence piece)."""
    from vitsq.evaluate.sentences import load_split

    texts = load_split("en", "evaluation")[offset:offset + n]
    return texts, [synth.text_to_ids(t) for t in texts]


def _feed(ids: list[int], scales: np.ndarray) -> dict[str, np.ndarray]:
    return {"input": np.array([ids], dtype=np.int64),  # [1, T]
            "input_lengths": np.array([len(ids)], dtype=np.int64), "scales": scales}


def _run(sess, ids: list[int], scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(audio [S], durations [T]) of one piece."""
    audio, dur, n = sess.run(["output", "durations", "output_lengths"], _feed(ids, scales))
    return audio.reshape(-1)[: int(n[0])], dur.reshape(-1)


def _torch_reference(synth: Any, pieces: list[list[int]], scales: np.ndarray):
    """FP32 PyTorch (audio [S], durations [T]) per piece, zero noise."""
    import torch

    m = synth.model
    out = []
    with torch.inference_mode():
        for ids in pieces:
            x = torch.tensor([ids])  # [1, T]
            xl = torch.tensor([len(ids)])
            h, m_p, logs_p, x_mask = m.encode(x, xl, None)
            w = m.predict_durations(h, x_mask, None, torch.zeros_like(m_p[:, :2]), float(scales[1]))  # [1,1,T]
            r = m.infer(x, xl, None, noise_scale=0.0, length_scale=float(scales[1]), noise_w=0.0)
            out.append((r.audio[0, 0, : int(r.audio_lengths[0])].numpy(), w.reshape(-1).numpy()))
    return out


def quality(names: list[str], folder: Path, n: int, offset: int) -> dict[str, Any]:
    import vitsq
    from vitsq.evaluate.metrics import SpeakerEncoder, cosine_similarity

    synth = vitsq.load("joe", backend="torch")
    scales = np.array([0.0, synth.resolve().length_scale, 0.0], dtype=np.float32)
    texts, items = _items(synth, n, offset)
    ref_t = [_torch_reference(synth, pieces, scales) for pieces in items]
    sess_ref = _session(folder / "fp32_poly.onnx")
    ref_o = [[_run(sess_ref, ids, scales) for ids in pieces] for pieces in items]
    enc = SpeakerEncoder()
    sr = synth.sample_rate
    emb_ref = [enc.embed(np.concatenate([a for a, _ in r]), sr) for r in ref_t]
    pieces_total = sum(len(p) for p in items)
    same_torch_onnx = sum(np.array_equal(dt, do) for rt, ro in zip(ref_t, ref_o)
                          for (_, dt), (_, do) in zip(rt, ro))
    result: dict[str, Any] = {"sentences": len(texts), "pieces": pieces_total, "offset": offset,
                              "scales": scales.tolist(),
                              "fp32_onnx_durations_equal_torch": same_torch_onnx, "variants": {}}
    for name in names:
        sess = _session(_path(name, folder))
        outs = [[_run(sess, ids, scales) for ids in pieces] for pieces in items]
        eq_onnx = eq_torch = 0
        moved_frames = []
        sims = []
        for k, (o, ro, rt) in enumerate(zip(outs, ref_o, ref_t)):
            for (_, d), (_, d_o), (_, d_t) in zip(o, ro, rt):
                eq_onnx += int(np.array_equal(d, d_o))
                eq_torch += int(np.array_equal(d, d_t))
                moved_frames.append(int(np.abs(d - d_o).sum()))
            sims.append(float(cosine_similarity(emb_ref[k], enc.embed(np.concatenate([a for a, _ in o]), sr))))
        worst = int(np.argmin(sims))
        result["variants"][name] = {
            "bytes": _path(name, folder).stat().st_size,
            "durations_equal_fp32_onnx": eq_onnx, "durations_equal_fp32_torch": eq_torch,
            "share_equal_fp32_onnx": eq_onnx / pieces_total, "frames_moved_total": int(sum(moved_frames)),
            "speaker_similarity_mean": float(np.mean(sims)), "speaker_similarity_worst": float(min(sims)),
            "worst_sentence": texts[worst], "speaker_similarity": sims}
        v = result["variants"][name]
        log.info("%s: durations equal %d/%d (onnx) %d/%d (torch); spk sim mean %.4f worst %.4f; %.1f MB", name,
                 eq_onnx, pieces_total, eq_torch, pieces_total, v["speaker_similarity_mean"],
                 v["speaker_similarity_worst"], v["bytes"] / 1e6)
    return result


def speed(names: list[str], folder: Path, n: int, rounds: int, warmup: int) -> dict[str, Any]:
    import vitsq

    synth = vitsq.load("joe", backend="onnx")
    scales = np.array([0.0, synth.resolve().length_scale, 0.0], dtype=np.float32)
    texts, items = _items(synth, n)
    pieces = [ids for p in items for ids in p]
    variants = [BASELINE] + [v for v in names if v != BASELINE]
    sessions = {v: _session(_path(v, folder)) for v in variants}
    audio_s = 0.0
    for ids in pieces:
        (a,) = sessions[BASELINE].run(["output"], _feed(ids, scales))
        audio_s += a.size / synth.sample_rate
    # wall time, and the CPU time of this thread (ONNX Runtime runs a 1-thread session on the
    # calling thread): on a shared machine the CPU time leaves out the time other processes take
    times: dict[str, dict[str, list[float]]] = {v: {"wall": [], "cpu": []} for v in variants}
    load_start = os.getloadavg()
    for r in range(warmup + rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            t0, c0 = time.perf_counter(), time.thread_time()
            for ids in pieces:
                sessions[v].run(["output"], _feed(ids, scales))
            if r >= warmup:
                times[v]["wall"].append(time.perf_counter() - t0)
                times[v]["cpu"].append(time.thread_time() - c0)
    out: dict[str, Any] = {"rounds": rounds, "warmup": warmup, "pieces": len(pieces),
                           "tokens": sum(map(len, pieces)), "audio_seconds": audio_s,
                           "load_average": {"start": load_start, "end": os.getloadavg()}, "variants": {}}
    for v in variants:
        rec: dict[str, Any] = {}
        for clock in ("wall", "cpu"):
            t = np.array(times[v][clock])
            ratio = np.array(times[BASELINE][clock]) / t  # speed-up per round, > 1 = faster than the baseline
            rec[clock] = {"rtf_median": float(np.median(t) / audio_s), "speedup_median": float(np.median(ratio)),
                          "speedup_p10": float(np.percentile(ratio, 10)),
                          "speedup_p90": float(np.percentile(ratio, 90)), "seconds": t.tolist()}
        out["variants"][v] = rec
        log.info("%-16s wall RTF %.4f x%.2f [%.2f-%.2f]   cpu RTF %.4f x%.2f [%.2f-%.2f]", v,
                 *(rec[c][k] for c in ("wall", "cpu") for k in ("rtf_median", "speedup_median", "speedup_p10",
                                                                 "speedup_p90")))
    return out


def _prefix(node: str, depth: int) -> str:
    parts = [p for p in node.split("/") if p]
    return "/" + "/".join(parts[:depth]) if len(parts) > 1 else "(root)"


def kernel_times(events: list[dict], warmup_runs: int, depth: int) -> dict[str, Any]:
    """Kernel time (microseconds) of an ONNX Runtime profile after its first ``warmup_runs``
    runs, summed per op type (``by_op``; ``op_calls`` counts them), per node prefix of ``depth``
    components (``by_prefix``), per node (``by_node``) and per op type and top-level block
    (``by_op_and_block``); ``model_run_us``: the counted runs' wall time."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    cutoff = runs[warmup_runs - 1]["ts"] + runs[warmup_runs - 1]["dur"] if warmup_runs else -1
    out: dict[str, Any] = {key: defaultdict(float) for key in ("by_op", "by_prefix", "by_node", "by_op_and_block")}
    out["op_calls"], out["model_run_us"] = defaultdict(int), 0.0
    for e in events:
        if e.get("ts", 0) <= cutoff:
            continue
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            out["model_run_us"] += e["dur"]
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        out["by_op"][op] += e["dur"]
        out["op_calls"][op] += 1
        out["by_prefix"][_prefix(node, depth)] += e["dur"]
        out["by_node"][node] += e["dur"]
        out["by_op_and_block"][f"{op} {_prefix(node, 1)}"] += e["dur"]
    return out


def profile(name: str, folder: Path, n: int, depth: int, repeats: int) -> dict[str, Any]:
    import tempfile

    import vitsq

    synth = vitsq.load("joe", backend="onnx")
    scales = np.array([0.0, synth.resolve().length_scale, 0.0], dtype=np.float32)
    _, items = _items(synth, n)
    pieces = [ids for p in items for ids in p]
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session(_path(name, folder), profile_prefix=str(Path(tmp) / "prof"))
        for _ in range(1 + repeats):  # the first pass warms up (buffers, kernel choices): not counted
            for ids in pieces:
                sess.run(["output"], _feed(ids, scales))
        events = json.loads(Path(sess.end_profiling()).read_text())
    k = kernel_times(events, len(pieces), depth)
    by_op, by_prefix, by_node, by_op_prefix = k["by_op"], k["by_prefix"], k["by_node"], k["by_op_and_block"]
    count_op, total_run = k["op_calls"], k["model_run_us"]
    total = sum(by_op.values())

    def table(d: dict[str, float], k: int = 40) -> list[tuple[str, float, float]]:
        return [(key, round(v / 1e3 / repeats, 2), round(100 * v / total, 1))
                for key, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]]

    res = {"variant": name, "pieces": len(pieces), "repeats": repeats, "kernel_ms_per_repeat": total / 1e3 / repeats,
           "model_run_ms_per_repeat": total_run / 1e3 / repeats,
           "by_op": table(by_op), "op_calls": dict(count_op), "by_prefix": table(by_prefix),
           "top_nodes": table(by_node, 30),
           "by_op_and_block": table(by_op_prefix)}
    log.info("%s: kernels %.1f ms / model_run %.1f ms per repeat", name, res["kernel_ms_per_repeat"],
             res["model_run_ms_per_repeat"])
    for title in ("by_op", "by_prefix", "top_nodes", "by_op_and_block"):
        log.info("-- %s (ms per repeat, %% of kernel time)", title)
        for key, ms, pct in res[title][:25]:
            log.info("   %-60s %8.2f %5.1f", key, ms, pct)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("quality", "speed", "profile"))
    ap.add_argument("names", nargs="+", help="variant names in --folder (or .onnx paths); 'original' = the Piper file")
    ap.add_argument("--folder", type=Path, default=Path("out/int8"))
    ap.add_argument("-n", type=int, default=None, help="sentences (quality 40, speed 4, profile 4)")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-o", "--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.what == "quality":
        res = quality(args.names, args.folder, args.n or 40, args.offset)
    elif args.what == "speed":
        res = speed(args.names, args.folder, args.n or 4, args.rounds, args.warmup)
    else:
        res = profile(args.names[0], args.folder, args.n or 4, args.depth, args.repeats)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
