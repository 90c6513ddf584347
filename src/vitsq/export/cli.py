"""`vitsq export`: a thin layer over :func:`vitsq.export.api.export` (``vitsq.export``).

``vitsq export MODEL|ARTIFACT --format onnx|vosk-dir|piper|executorch|sherpa [--recipe R] -o OUT [--force]``.
For the ONNX formats ``--recipe`` is ``fp32`` (default), ``ort-static`` or ``ort-dynamic``; the
quantized graph keeps the runtime contract, so the Piper/Vosk runtimes load it as they load FP32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitsq.export.api import FORMATS


def cmd_export(args: argparse.Namespace) -> int:
    from vitsq.export.api import export

    out = export(args.model, args.format, args.output, args.recipe, args.force, config_path=args.config,
                 calib=args.calib, calibrate_method=args.calibrate_method, espeak_data=not args.no_espeak_data,
                 streaming=args.streaming)
    out = Path(out)
    if out.is_dir():
        files = sorted(p for p in out.iterdir() if p.is_file())
        size = sum(p.stat().st_size for p in files)
        print(f"wrote {out}/ ({', '.join(p.name for p in files)})  {size / 1e6:.2f} MB")
    else:
        print(f"wrote {out}  {out.stat().st_size / 1e6:.2f} MB")
        side = Path(str(out) + ".json")
        if side.is_file():
            print(f"wrote {side}")
    return 0


def register(subparsers) -> None:
    """Add ``vitsq export`` to the main parser."""
    p = subparsers.add_parser("export", help="export ONNX (bare / Piper voice / Vosk folder / sherpa-onnx folder) "
                                             "or ExecuTorch")
    p.add_argument("model", help="joe, vosk-ru-multi, a voice .onnx, a G_*.pth, a model folder (loaded in torch), "
                                 "or an ONNX artifact folder from `vitsq quantize` (its graph reused)")
    p.add_argument("--config", help="config.json for a checkpoint, if not beside it")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--recipe", default=None,
                   help="onnx formats: fp32 (default), ort-static, ort-dynamic; executorch: fp32 (default), pt2e; "
                        "a recipe name means the measured preset for the model's family (ort-static and pt2e: "
                        "faithful for VITS voices; :fast or :faithful picks one)")
    p.add_argument("--calib", type=int, default=None, help="calibration sentences (ort-static, executorch pt2e; default 16, 32 for percentile/entropy ranges)")
    p.add_argument("--calibrate-method", default=None, choices=["minmax", "entropy", "percentile"],
                   help="ort-static activation range method")
    p.add_argument("-o", "--output", required=True,
                   help="onnx: model.onnx; piper: voice.onnx (+ .onnx.json); vosk-dir/executorch/sherpa: a folder")
    p.add_argument("--no-espeak-data", action="store_true",
                   help="sherpa: leave out the espeak-ng-data folder (only sherpa-onnx < 2.0 reads it)")
    p.add_argument("--streaming", action="store_true",
                   help="stream chunk by chunk (synth --stream, bench --ttfa, the server): executorch: decoder.pte "
                        "also gets the streaming methods; onnx: -o is a folder with the streaming graphs beside "
                        "model.onnx (fp32 or ort-static)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output that vitsq wrote (never an unrelated folder)")
    p.set_defaults(func=cmd_export)
