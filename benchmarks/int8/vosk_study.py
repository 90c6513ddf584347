"""Profile and compare ONNX Runtime graphs of the Vosk VITS2 config (random weights: speed only).

Both runs use 4 sentences of the Russian evaluation split, speaker 5, the model's default noise
and length scales, batch 1 and one ONNX Runtime thread.

* ``profile FILE``: ONNX Runtime's profiler, after one warm-up pass; kernel time per op type,
  per node prefix (``--depth`` path components), per op type and top-level block, and the
  nodes under ``--nodes PREFIX``.
* ``speed FILE [FILE ...]``: interleaved rounds (each round runs every file once on the same
  sentences, in rotating order); the median per-round ratio of thread CPU time to the first file.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8/vosk_study.py profile out/bench/vosk-ort-int8/model.onnx
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8/vosk_study.py speed a/model.onnx b/model.onnx --rounds 12
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from study import _session, kernel_times  # beside this script (run as a script, its folder is on the path)

SPEAKER = 5


def _feeds(path: str) -> list[dict[str, np.ndarray]]:
    import vitsq
    from vitsq.evaluate.sentences import load_split

    synth = vitsq.load(str(Path(path).parent), backend="onnx")
    s = synth.resolve()
    scales = np.array([s.noise_scale, s.length_scale, s.noise_w], dtype=np.float32)
    pieces = [ids for text in load_split("ru", "evaluation")[:4] for ids in synth.text_to_ids(text)]
    return [{"input": np.array([ids], np.int64), "input_lengths": np.array([len(ids)], np.int64),
             "scales": scales, "sid": np.array([SPEAKER], np.int64)} for ids in pieces]


def profile(path: str, depth: int, repeats: int, nodes: str | None, top: int) -> None:
    feeds = _feeds(path)
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session(path, profile_prefix=str(Path(tmp) / "prof"))
        for _ in range(1 + repeats):  # the first pass warms up: not counted
            for f in feeds:
                sess.run(["output"], f)
        events = json.loads(Path(sess.end_profiling()).read_text())
    k = kernel_times(events, len(feeds), depth)
    tables = {"op": k["by_op"], "prefix": k["by_prefix"], "op+block": k["by_op_and_block"],
              "node": {n: us for n, us in k["by_node"].items() if nodes and n.startswith(nodes)}}
    total = sum(k["by_op"].values())
    print(f"kernel time {total / 1e3 / repeats:.1f} ms per pass over {len(feeds)} sentences")
    for name, table in tables.items():
        if table:
            print(f"-- {name} (ms per pass, % of kernel time)")
            for key, us in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
                print(f"   {key:70s} {us / 1e3 / repeats:8.2f} {100 * us / total:5.1f}")


def speed(paths: list[str], rounds: int) -> None:
    feeds = _feeds(paths[0])
    sessions = [_session(p) for p in paths]
    seconds: list[list[float]] = [[] for _ in paths]
    for r in range(rounds + 1):  # round 0 warms up
        order = list(range(len(paths)))
        order = order[r % len(order):] + order[: r % len(order)]
        for i in order:
            c0 = time.thread_time()
            for f in feeds:
                sessions[i].run(["output"], f)
            if r:
                seconds[i].append(time.thread_time() - c0)
    for path, t in zip(paths, seconds):
        ratio = np.array(seconds[0]) / np.array(t)
        print(f"{path}: median {np.median(t):.3f} s, x{np.median(ratio):.3f} "
              f"[{np.percentile(ratio, 10):.3f}-{np.percentile(ratio, 90):.3f}] vs {paths[0]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("profile", "speed"))
    ap.add_argument("files", nargs="+", help="ONNX files of vitsq artifacts (model.onnx beside vitsq.json)")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--nodes", help="also list the nodes whose name starts with this")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    if args.what == "profile":
        profile(args.files[0], args.depth, args.repeats, args.nodes, args.top)
    else:
        speed(args.files, args.rounds)


if __name__ == "__main__":
    main()
