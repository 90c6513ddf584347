"""``vitsq quantize``: a thin layer over :func:`vitsq.quantize.workflow.quantize_to_dir`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vitsq.quantize.recipes import OBSERVERS, ORT_CALIBRATION_METHODS, RECIPES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("quantize", help="INT8 post-training quantization -> artifact folder",
                              description="Quantize a model with a recipe, calibrated on real sentences, and write "
                                          "an artifact folder (weights + vitsq.json) that `vitsq load/synth` reads.")
    p.add_argument("model", help="model spec: joe, vosk-ru-multi, a .onnx voice, G_*.pth, a model folder")
    p.add_argument("--recipe", required=True,
                   help=f"one of: {', '.join(RECIPES)}; each means the measured preset for the model's family "
                        "(vitsq.quantize.recipes.best_for; ort-static and pt2e take :faithful or :fast), changed "
                        "only by the options given; or a `vitsq tune` "
                        "output's DIR/best, rebuilt exactly (docs/tune.md)")
    p.add_argument("-o", "--output", required=True, type=Path, help="artifact folder to write")
    p.add_argument("--force", action="store_true",
                   help="replace an existing artifact folder (only one vitsq wrote; replaced whole)")
    p.add_argument("--config", help="config.json for a Vosk checkpoint")
    p.add_argument("--engine", help="eager: quantized engine (fbgemm, x86, qnnpack, onednn; default fbgemm on x86-64)")
    p.add_argument("--per-channel", action="store_true", help="per-channel weights (eager: Conv1d/Linear; "
                                                                "ConvTranspose stays per-tensor)")
    p.add_argument("--observer", default=None,
                   help=f"eager activation observer: {', '.join(OBSERVERS)} (default: the preset's)")
    p.add_argument("--calibrate-method", default=None,
                   help=f"ort-static calibration: {', '.join(ORT_CALIBRATION_METHODS)} (default: the preset's)")
    p.add_argument("--calib", type=int, default=None, help="calibration sentences (default: 16; 32 for percentile/entropy ranges; see docs)")
    p.add_argument("--calib-file", type=Path, help="calibration sentences file (one per line) instead of the shipped split")
    p.add_argument("--keep-float", default="preset",
                   help="'preset' (default: the recipe preset's float layers), 'none' (every layer INT8), 'auto' "
                        "(eager; needs --budget) or comma-separated layer/group names or module prefixes")
    p.add_argument("--budget", type=float, help="with --keep-float auto: max log-mel L1 to FP32 (nats), e.g. 0.15")
    p.add_argument("--granularity", default="groups", choices=["groups", "layers"],
                   help="sensitivity unit for --keep-float auto / --sensitivity")
    p.add_argument("--sensitivity", action="store_true", help="also rank groups by sensitivity and print it")
    p.add_argument("--report", action="store_true", help="print the per-layer coverage report")
    p.add_argument("--seed", type=int, default=None, help="calibration noise seed (default 0)")
    p.add_argument("--noise-scale", type=float, help="calibration inference setting (default: the model's)")
    p.add_argument("--length-scale", type=float, help="calibration inference setting (default: the model's)")
    p.add_argument("--noise-w", type=float, help="calibration inference setting (default: the model's)")
    p.add_argument("--streaming", action="store_true",
                   help="ort-static: also write the streaming graphs, so the artifact streams chunk by chunk "
                        "with the same INT8 samples (docs/streaming.md)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    from vitsq.outputs import check_output
    from vitsq.quantize.workflow import QuantizeOptions, build_recipe, check_keep_float, check_options, quantize_to_dir
    from vitsq.registry import load
    from vitsq.tune.preset import cmd_quantize_preset, preset_path

    tuned = preset_path(args.recipe)
    if tuned is not None:  # a `vitsq tune` DIR/best: its recipe, calibration and threads, rebuilt exactly
        return cmd_quantize_preset(args, tuned)
    opts = QuantizeOptions(
        recipe=args.recipe, engine=args.engine, per_channel=args.per_channel, observer=args.observer,
        calibrate_method=args.calibrate_method, calib=args.calib, calib_file=args.calib_file,
        keep_float=args.keep_float, budget=args.budget, granularity=args.granularity,
        sensitivity=args.sensitivity, seed=args.seed, noise_scale=args.noise_scale,
        length_scale=args.length_scale, noise_w=args.noise_w, streaming=args.streaming)
    # fail on a bad recipe/option or output path before loading the model
    check_options(opts)
    check_output(args.output, kind="dir", force=args.force, what="artifact folder")
    kw = {"config_path": Path(args.config)} if args.config else {}
    synth = load(args.model, backend="torch", device="cpu", **kw)
    check_keep_float(synth, build_recipe(opts, synth))  # names checked against the model, before calibrating
    result = quantize_to_dir(synth, args.output, opts, force=args.force)
    if args.json:
        print(json.dumps(result.summary, indent=2, default=str))
        return 0
    if result.sensitivity is not None:
        print("sensitivity (distance to FP32, same noise, held-out calibration-split sentences):")
        print(result.sensitivity.table())
    if result.plan is not None:
        print(f"keep float: {', '.join(result.plan.keep_float) or '(none)'}  -> log-mel L1 "
              f"{result.plan.distance.log_mel_l1:.4f} (budget {args.budget}, "
              f"{'met' if result.plan.within_budget else 'NOT met'})")
    if args.report and result.coverage is not None:
        print(result.coverage.table())
    s = result.summary
    print(f"wrote {args.output}  recipe {s['recipe']}  size {s['size_bytes'] / 1e6:.2f} MB  "
          + (f"INT8 share {s['share_quantized']:.2%}" if s.get("share_quantized") is not None else ""))
    return 0
