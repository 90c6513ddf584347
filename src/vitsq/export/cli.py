"""`vitsq export`: ONNX (bare, Piper voice, Vosk folder) and ExecuTorch programs.

``vitsq export MODEL --format onnx|vosk-dir|piper|executorch [--recipe R] -o OUT [--force]``.
For the ONNX formats ``--recipe`` is ``fp32`` (default), ``ort-static`` or ``ort-dynamic``; the
quantized graph keeps the runtime contract, so the Piper/Vosk runtimes load it as they load FP32.
``executorch`` hands the recipe to :func:`vitsq.export.executorch.export_executorch`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path

from vitsq.errors import InputError, UnsupportedError

log = logging.getLogger(__name__)

FORMATS = ("onnx", "vosk-dir", "piper", "executorch")
ONNX_RECIPES = ("fp32", "ort-static", "ort-dynamic")


def check_export_args(fmt: str, out: str | Path, *, recipe: str | None = None, force: bool = False,
                      calib: int | None = None, calibrate_method: str | None = None) -> Path:
    """Everything about ``vitsq export`` that can be refused without the model: format, recipe and
    the options it takes, and the output path (:mod:`vitsq.outputs`). Returns the output path."""
    from vitsq.export.onnx import check_export_output
    from vitsq.outputs import check_output

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if fmt == "executorch":
        if calibrate_method is not None:
            raise InputError("--calibrate-method applies to the ort-static recipe, not to ExecuTorch (pt2e uses "
                             "min/max observers)")
        if recipe not in (None, "fp32", "pt2e"):
            raise UnsupportedError(f"ExecuTorch export recipe {recipe!r} is not supported: valid are fp32 (float) "
                                   "and pt2e (INT8)")
        if calib is not None and (recipe or "fp32") == "fp32":
            raise InputError("--calib applies to --recipe pt2e: float (fp32) programs are not calibrated")
        return check_output(out, kind="dir", force=force, what="ExecuTorch output folder")
    recipe = recipe or "fp32"
    if recipe not in ONNX_RECIPES:
        raise InputError(f"recipe {recipe!r} does not apply to --format {fmt}: valid are {', '.join(ONNX_RECIPES)}")
    if recipe != "ort-static":
        for flag, value in (("--calibrate-method", calibrate_method), ("--calib", calib)):
            if value is not None:
                raise InputError(f"{flag} applies to --recipe ort-static only (it calibrates activation ranges); "
                                 f"the {recipe} export takes no calibration")
    return check_export_output(fmt, out, force)


def run_export(model: str, fmt: str, out: str | Path, *, recipe: str | None = None, force: bool = False,
               config: str | None = None, calib: int | None = None, calibrate_method: str | None = None) -> Path:
    """Library entry of the command: check the request and the output path, load ``model`` (torch
    backend) and write ``out`` (atomically: an interrupted export leaves the old output as it was)."""
    import vitsq
    from vitsq.export import onnx as ox

    out = check_export_args(fmt, out, recipe=recipe, force=force, calib=calib, calibrate_method=calibrate_method)
    if fmt == "executorch":
        try:
            mod = importlib.import_module("vitsq.export.executorch")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("vitsq"):
                raise UnsupportedError("ExecuTorch export is not available in this vitsq build "
                                       "(vitsq.export.executorch is missing); use --format onnx") from exc
            raise
    kw = {"config_path": Path(config)} if config else {}
    synth = vitsq.load(model, backend="torch", **kw)
    if fmt == "executorch":
        kwargs: dict = {"force": force}
        if recipe:
            kwargs["recipe"] = recipe
        if calib is not None:
            kwargs["calibration_sentences"] = calib
        return mod.export_executorch(synth, out, **kwargs)
    recipe = recipe or "fp32"
    if recipe == "fp32":
        return ox.export(synth, fmt, out, force=force)
    from vitsq.quantize.ort import export_quantized

    return export_quantized(synth, fmt, out, recipe, force=force, calib=calib, calibrate_method=calibrate_method)


def cmd_export(args: argparse.Namespace) -> int:
    out = run_export(args.model, args.format, args.output, recipe=args.recipe, force=args.force,
                     config=args.config, calib=args.calib, calibrate_method=args.calibrate_method)
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
    p = subparsers.add_parser("export", help="export ONNX (bare / Piper voice / Vosk folder) or ExecuTorch")
    p.add_argument("model", help="joe, vosk-ru-multi, a voice .onnx, a G_*.pth or a model folder (loaded in torch)")
    p.add_argument("--config", help="config.json for a checkpoint, if not beside it")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--recipe", default=None,
                   help="onnx formats: fp32 (default), ort-static, ort-dynamic; executorch: its recipes (e.g. pt2e)")
    p.add_argument("--calib", type=int, default=None, help="calibration sentences (ort-static, executorch pt2e; default 16, 32 for percentile/entropy ranges)")
    p.add_argument("--calibrate-method", default=None, choices=["minmax", "entropy", "percentile"],
                   help="ort-static activation range method")
    p.add_argument("-o", "--output", required=True,
                   help="onnx: model.onnx; piper: voice.onnx (+ .onnx.json); vosk-dir/executorch: a folder")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output that vitsq wrote (never an unrelated folder)")
    p.set_defaults(func=cmd_export)
