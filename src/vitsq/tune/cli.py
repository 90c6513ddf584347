"""``vitsq tune``: a thin layer over :func:`vitsq.tune.search.tune`.

Exit codes: 0 when a candidate passed the gate, 1 when none did (the closest one is reported),
2 for bad input (the CLI's rule for every :class:`~vitsq.errors.VitsqError`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitsq.tune.space import DEFAULT_GATE, FAMILIES, GATE_METRICS


def register(sub) -> None:
    """Add the ``tune`` subcommand to the ``vitsq`` subparsers."""
    p = sub.add_parser(
        "tune", help="search the recipe space of a voice for the fastest/smallest INT8 recipe passing a quality gate",
        description="Search quantization recipes for MODEL: each trial builds a candidate, times it against FP32 "
                    "in the same process (interleaved), and evaluates it on a tuning split (the tail of the "
                    "calibration split) with an early gate. Trials run in local worker processes, or as Ray tasks "
                    "with --ray. DIR gets trials.jsonl (resumable), pareto.png, report.md, summary.json, best/ "
                    "(rebuild with `vitsq quantize MODEL --recipe DIR/best`) and winner/. See docs/tune.md.")
    p.add_argument("model", help="model spec that resolves on every worker: joe, a voice .onnx, a G_*.pth, ...")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR",
                   help="results folder (an existing one resumes)")
    p.add_argument("--objective", default="speed", choices=["speed", "size"],
                   help="what the winner maximizes among gate-passing trials (default speed)")
    p.add_argument("--gate", default=DEFAULT_GATE,
                   help=f"quality gate, comma-separated checks (default {DEFAULT_GATE}); metrics: "
                        + ", ".join(GATE_METRICS))
    p.add_argument("--trials", type=int, default=24, help="trials in all, presets included (default 24)")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run trials as Ray tasks: alone (or 'auto') starts a local Ray for the run; HOST:PORT or "
                        "ray://HOST:PORT joins a running cluster (needs vitsq[cluster]; write it after MODEL)")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes at once (default: cores // trial threads)")
    p.add_argument("--space", type=Path, default=None, help="search space JSON (docs/tune.md; default: built in)")
    p.add_argument("--families", default=None,
                   help=f"comma-separated recipe families to search (of {', '.join(FAMILIES)}), overriding the space")
    p.add_argument("--threads", type=int, default=None, help="threads per trial, overriding the space (default 1)")
    p.add_argument("--sentences", type=int, default=40, help="tuning-split sentences (default 40)")
    p.add_argument("--gate-sentences", type=int, default=20,
                   help="first sentences the early gate judges before timing (default 20)")
    p.add_argument("--timing-sentences", type=int, default=4, help="sentences per timing round (default 4)")
    p.add_argument("--timing-rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--final-sentences", type=int, default=None,
                   help="evaluation-split sentences for the winner's final evaluation (default all; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random candidates and speakers (default 0)")
    p.add_argument("--config", help="config.json of a checkpoint that is not beside it")
    p.add_argument("--force", action="store_true", help="start over in DIR (its earlier trials are discarded)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the Pareto plot (needs matplotlib)")
    p.set_defaults(func=cmd_tune)


def _space(args: argparse.Namespace):
    from vitsq.tune.space import SearchSpace, read_space

    space = read_space(args.space) if args.space else SearchSpace()
    changes = {}
    if args.families:
        changes["families"] = tuple(f.strip() for f in args.families.split(",") if f.strip())
    if args.threads is not None:
        changes["threads"] = (args.threads,)
    if not changes:
        return space
    import dataclasses

    return dataclasses.replace(space, **changes)


def _print_record(total: int):
    def show(r: dict) -> None:
        m, t = r.get("metrics") or {}, r.get("timing") or {}
        bits = [f"trial {r['index'] + 1}/{total}", r["candidate"]["label"], r["status"]
                + (" (early)" if r.get("early_stop") else "")]
        if t.get("speed") is not None:
            bits.append(f"speed {t['speed']:.2f}x")
        for key, fmt in (("dwer", "dwer {:+.2f}"), ("speaker_sim", "sim {:.3f}"), ("logmel_l1", "logmel {:.3f}")):
            if m.get(key) is not None:
                bits.append(fmt.format(m[key]))
        if r.get("error"):
            bits.append(str(r["error"])[:120])
        print("  ".join(bits) + f"  ({r.get('seconds', 0):.0f} s)", flush=True)
    return show


def cmd_tune(args: argparse.Namespace) -> int:
    import os

    from vitsq.errors import InputError
    from vitsq.tune.runner import LocalExecutor, RayExecutor, import_ray
    from vitsq.tune.search import TuneConfig, tune
    from vitsq.tune.trial import ModelSpec

    config = TuneConfig(ModelSpec(str(args.model), args.config), args.objective, args.gate, args.trials, _space(args),
                        args.seed, args.sentences, args.gate_sentences, args.timing_sentences, args.timing_rounds,
                        args.final_sentences)
    config.check()  # before Ray starts or the model loads
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("the Pareto plot needs matplotlib: pip install 'vitsq[serve]' (or matplotlib), or pass "
                             "--no-plot") from None
    if args.ray is not None:
        if args.workers is not None:
            raise InputError("--workers sets local worker processes; with --ray the cluster's CPUs decide")
        import_ray()
        executor = RayExecutor(args.ray)
    else:
        workers = args.workers or max(1, (os.cpu_count() or 1) // max(config.space.threads))
        executor = LocalExecutor(workers, Path(args.output) / "logs")
    try:
        result = tune(config, args.output, executor, force=args.force, on_record=_print_record(args.trials))
    finally:
        executor.close()
    return _print_summary(result)


def _print_summary(result) -> int:
    s, w = result.summary, result.summary.get("winner") or {}
    print(f"\n{s['trials']} trials ({result.ran} run now), {s['counts']}; results in {result.out}")
    if not w:
        print("vitsq tune: no trial was measured", flush=True)
        return 1
    if not result.passed:
        from vitsq.tune.report import gate_line

        print(f"vitsq tune: no candidate passed the gate {s['gate']}: the closest was trial {w['index'] + 1} "
              f"{w['label']} ({gate_line(w)})")
        return 1
    t = w.get("timing") or {}
    print(f"winner: trial {w['index'] + 1} {w['label']}  speed {t.get('speed', float('nan')):.2f}x  "
          f"{w['size']['bytes'] / 1e6:.1f} MB  -> {result.out / 'best'} "
          f"({'rebuilt identically' if w.get('reproduced') else 'rebuild DIFFERS'})")
    final = s.get("final")
    if final:
        for name, v in final["variants"].items():
            m, vt = v["metrics"], v.get("timing") or {}
            print(f"held-out evaluation ({final['sentences']} sentences) {name}: speed {vt.get('speed', 0):.2f}x  "
                  + "  ".join(f"{k} {m[k]:.3f}" for k in ("dwer", "speaker_sim", "logmel_l1") if m.get(k) is not None)
                  + f"  gate {'pass' if v['gate']['passed'] else 'FAIL'}")
    print(f"report: {result.out / 'report.md'}")
    return 0
