"""Build the joe ONNX variants the faithful-INT8 study compares, into one folder (default out/int8/).

Every INT8 variant is quantized from the same FP32 export with polyphase upsampling and the same
calibration (the ort-static presets': 32 sentences of the calibration split, seed 0), so the
variants differ only by their recipe: the two presets (``faithful``, ``fast``) and the steps
docs/quantization.md reports on the way to them. Also written: that FP32 export
(``fp32_poly.onnx``) and, with ``fp32``, the export without polyphase upsampling (``fp32.onnx``,
the upstream graph structure).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/int8/build.py faithful fast dp-weight-only
    .venv/bin/python benchmarks/int8/build.py --list

A variant already built is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("int8.build")

STATIC_FLOW_DEC = ("/dec/", "/flow/")


def _nth(op: str, i: int) -> str:
    return f"/dec/{op}" if i == 0 else f"/dec/{op}_{i}"


def _sums_float(config: Any) -> tuple[str, ...]:
    """The last stage's float tail without its resblocks' convolutions: the sum leaving each
    resblock, the sums/average across resblocks, the last activation, conv_post."""
    n, k = len(config.upsample_rates), len(config.resblock_kernel_sizes)
    last = n - 1
    keep = ["/dec/conv_post/", _nth("LeakyRelu", n), _nth("Div", last)]
    keep += [_nth("Add", last * (k - 1) + j) for j in range(k - 1)]
    n_convs = len(config.resblock_dilation_sizes[0])
    keep += [f"/dec/resblocks.{b}/{_nth('Add', n_convs - 1)[5:]}" for b in range(last * k, last * k + k)]
    return tuple(keep)


def _variants(config: Any) -> dict[str, Callable[[], Any]]:
    """Name -> recipe factory: the two presets and the steps measured on the way to them."""
    from vitsq.quantize.recipes import (ORT_DURATION_PATH, OrtStaticRecipe, best_for, ort_keep_float,
                                        ort_last_stage)

    fast_tail = ort_keep_float(config)
    stage = ort_last_stage(config)

    def static(prefixes=STATIC_FLOW_DEC, keep=ORT_DURATION_PATH, tail=fast_tail, **kw):
        return OrtStaticRecipe(per_channel=True, calibrate_method="percentile", keep_float=tuple(keep) + tuple(tail),
                               static_prefixes=prefixes, polyphase_upsampling=True, **kw)

    return {
        "faithful": lambda: best_for(config, "ort-static", variant="faithful"),
        "fast": lambda: best_for(config, "ort-static", variant="fast"),
        # the faithful preset without the 2-D float convolutions (recipe version 2's graph)
        "faithful-1d": lambda: best_for(config, "ort-static", variant="faithful").replace(float_convs_2d=False),
        "fast-1d": lambda: best_for(config, "ort-static", variant="fast").replace(float_convs_2d=False),
        # duration path float, the fast preset's decoder tail
        "fast-tail": lambda: static(),
        # ... duration predictor weight-only INT8 (text encoder float): does that alone move durations?
        "dp-weight-only": lambda: static(keep=("/enc_p/",)),
        # ... the last stage's resblock convolutions INT8 too (sums, average, last activation, conv_post float)
        "sums-float": lambda: static(tail=_sums_float(config)),
        # ... only the last activation and conv_post float
        "post-float": lambda: static(tail=("/dec/conv_post/", _nth("LeakyRelu", len(config.upsample_rates)))),
        # ... the whole decoder INT8
        "dec-int8": lambda: static(tail=()),
        # the whole last stage float except its upsampling layer
        "stage-float-ups-int8": lambda: static(tail=tuple(k for k in stage if not k.startswith("/dec/ups."))),
        # the fast tail, and the flow float too
        "flow-float": lambda: static(("/dec/",), keep=("/flow/",) + ORT_DURATION_PATH),
    }


def build(names: list[str], out: Path, force: bool = False) -> dict[str, Any]:
    """Quantize each named variant from one FP32 polyphase export with one calibration."""
    import vitsq
    from vitsq.export.onnx import export_onnx
    from vitsq.quantize.calibration import make_calibration
    from vitsq.quantize.ort import quantize_onnx_file

    out.mkdir(parents=True, exist_ok=True)
    synth = vitsq.load("joe", backend="torch")
    variants = _variants(synth.config)
    bad = [n for n in names if n not in variants and n != "fp32"]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}: valid are fp32, {', '.join(variants)}")
    source = out / "fp32_poly.onnx"
    if force or not source.exists():
        export_onnx(synth, source, polyphase_upsampling=True, force=True)
    if "fp32" in names and (force or not (out / "fp32.onnx").exists()):
        export_onnx(synth, out / "fp32.onnx", polyphase_upsampling=False, force=True)
    calibration = make_calibration(synth, recipe=variants["faithful"]())  # the presets': 32 sentences
    facts: dict[str, Any] = {}
    for name in [n for n in names if n != "fp32"]:
        path = out / f"{name}.onnx"
        if path.exists() and not force:
            log.info("%s exists, kept", path)
            continue
        recipe = variants[name]()
        t0 = time.perf_counter()
        f = quantize_onnx_file(source, path, recipe, calibration)
        facts[name] = {"recipe": recipe.to_dict(), "seconds": round(time.perf_counter() - t0, 1), **f,
                       "bytes": path.stat().st_size}
        log.info("%s: %s", name, facts[name])
        (out / f"{name}.json").write_text(json.dumps(facts[name], indent=1))
    return facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--out", type=Path, default=Path("out/int8"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.list:
        import vitsq

        print("fp32 " + " ".join(_variants(vitsq.load("joe", backend="torch").config)))
        return
    build(args.names, args.out, args.force)


if __name__ == "__main__":
    main()
