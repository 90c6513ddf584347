"""`vitsq demo` (the README's ``./dev demo``): FP32 vs INT8 on the embedded voice, end to end.

Steps, each with a progress bar: load joe -> quantize it with the demo recipe (default
``ort-static``: ONNX Runtime static QDQ INT8; ``eager``: torch.ao static INT8; each the measured
preset from :func:`vitsq.quantize.recipes.best_for`, calibrated on the shipped *calibration* split) -> evaluate FP32 vs INT8 with Whisper on held-out *evaluation* sentences
(same seeds) -> benchmark FP32 torch, FP32 ONNX Runtime and INT8 on CPU -> write the report
(Markdown + self-contained HTML) and sample wavs -> return a short summary.

Everything lands in one folder (default ``out/demo``)::

    joe-int8-<recipe>/  the INT8 artifact (vitsq.json + weights); reused by later runs (--requantize to redo)
    eval.json        WER/CER/ΔWER/similarity/distances          bench.json/.md/.png  RTF by batch
    samples/*.wav    the same sentences from every variant      report/report.{md,html} + PNGs

The demo owns the files it writes there: a rerun replaces each of them atomically
(:mod:`vitsq.outputs`, as with ``--force``) and never touches any other file in the folder. Every
output path is checked before the models load.

Anything missing (an optional dependency, the packaged Whisper model, ...) stops the demo with
a one-line :class:`~vitsq.errors.VitsqError` naming the step and what to install.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path
from typing import Any, Sequence

from vitsq.errors import ModelLoadError, UnsupportedError, VitsqError

log = logging.getLogger(__name__)

STEPS = ("load", "quantize", "evaluate", "benchmark", "samples", "report")
SAMPLE_TEXTS = (
    "Small models can still sound natural.",
    "The quick brown fox jumps over the lazy dog, twice before breakfast.",
)
EXTRA_HINTS = {
    "faster_whisper": "pip install -e '.[eval]'",
    "ctranslate2": "pip install -e '.[eval]'",
    "resemblyzer": "pip install -e '.[eval]'",
    "librosa": "pip install -e '.[eval]'",
    "scipy": "pip install -e '.[eval]'",
    "matplotlib": "pip install -e '.[serve]'",
}


#: Recipes the demo can use -> (recipe factory, backend the INT8 artifact runs on).
DEMO_RECIPES = ("ort-static", "eager")
DEFAULT_RECIPE = "ort-static"


def check_demo_recipe(name: str) -> None:
    """InputError naming the valid demo recipes unless ``name`` is one."""
    from vitsq.errors import InputError

    if name not in DEMO_RECIPES:
        raise InputError(f"unknown demo recipe {name!r}: valid recipes are {', '.join(DEMO_RECIPES)}")


def demo_recipe(name: str = DEFAULT_RECIPE, model: Any = None):
    """(recipe, backend) for the demo: the measured preset of kind ``name`` for ``model`` from
    :func:`vitsq.quantize.recipes.best_for` -- ``ort-static`` (ONNX Runtime QDQ INT8, runs on
    onnx) or ``eager`` (torch.ao static INT8, runs on torch)."""
    from vitsq.errors import InputError
    from vitsq.quantize.recipes import best_for

    check_demo_recipe(name)
    if model is None:
        raise InputError("the demo's recipe is the measured preset for a model: pass the loaded model")
    return best_for(model, name), ("onnx" if name == "ort-static" else "torch")


def _artifact_recipe(art: Path) -> dict | None:
    """The recipe dict an artifact's vitsq.json records (eager stores it flat, ORT nested)."""
    import json

    try:
        q = json.loads((art / "vitsq.json").read_text(encoding="utf-8")).get("quantization") or {}
    except (OSError, ValueError):
        return None
    r = q.get("recipe")
    if isinstance(r, dict):
        return r
    return q if isinstance(r, str) else None


def _same_recipe(recorded: dict | None, wanted: dict) -> bool:
    if not recorded:
        return False
    norm = lambda d: {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}  # noqa: E731
    rec = norm(recorded)
    return all(rec.get(k) == v for k, v in norm(wanted).items())


class _Step:
    """Runs one demo step; turns a missing dependency or other failure into a one-line VitsqError."""

    def __init__(self, name: str, bar: Any) -> None:
        self.name, self.bar = name, bar

    def __enter__(self) -> "_Step":
        self.bar.set_description(f"demo: {self.name}")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.seconds = time.perf_counter() - self.t0
            self.bar.update(1)
            return False
        if isinstance(exc, KeyboardInterrupt):
            return False
        if isinstance(exc, ModuleNotFoundError):
            mod = (exc.name or "").split(".")[0]
            hint = EXTRA_HINTS.get(mod, "pip install -e '.[all]'")
            raise UnsupportedError(f"demo step '{self.name}' needs the Python package {mod!r}, which is not "
                                   f"installed: run `{hint}` (or ./dev, which installs everything)") from exc
        if isinstance(exc, VitsqError):
            raise type(exc)(f"demo step '{self.name}' failed: {exc}") from exc
        log.debug("demo step %s failed", self.name, exc_info=(exc_type, exc, tb))
        raise ModelLoadError(f"demo step '{self.name}' failed: {type(exc).__name__}: {exc}") from exc


def _load(model: str, tkw: dict[str, Any]) -> tuple[Any, Any]:
    """FP32 on torch and on ONNX Runtime (its own thread pool gets the benchmark's thread count)."""
    from vitsq.registry import load

    fp32 = load(model, backend="torch")
    onnx = load(model, backend="onnx", **tkw)
    try:
        weights = fp32.describe().get("weights") or "unknown"
    except Exception as e:  # noqa: BLE001 - a description that fails says nothing: unknown, not trained
        log.warning("cannot describe %s: %s", model, e)
        weights = "unknown"
    if weights != "trained":
        raise UnsupportedError(f"the demo compares quality, so it needs a trained model; {model!r} has "
                               f"{weights} weights")
    return fp32, onnx


def _quantized(fp32: Any, recipe_obj: Any, int8_backend: str, art: Path, requantize: bool,
               tkw: dict[str, Any]) -> Any:
    """The INT8 artifact at ``art``: reused when it holds this recipe, else quantized again."""
    from vitsq.registry import load

    if (art / "vitsq.json").is_file() and not requantize:
        if not _same_recipe(_artifact_recipe(art), recipe_obj.to_dict()):
            log.info("%s was made with another recipe: quantizing again", art)
        else:
            try:
                int8 = load(art, backend=int8_backend, **tkw)
                log.info("reusing %s", art)
                return int8
            except VitsqError as e:
                log.warning("cannot reuse %s (%s): quantizing again", art, e)
    from vitsq.quantize import quantize

    # the demo owns this artifact: a stale one (another recipe) is replaced whole, atomically;
    # a folder there that vitsq did not write is refused, never deleted
    quantize(fp32, recipe_obj).save(art, force=True)
    return load(art, backend=int8_backend, **tkw)


def _evaluate(fp32: Any, onnx: Any, int8: Any, int8_backend: str, out: Path, num_sentences: int,
              progress: bool) -> tuple[Any, Any, dict[str, float]]:
    """FP32 vs INT8 with Whisper; returns (result, the FP32 reference used, the noise settings).

    The FP32 reference runs on the INT8 variant's runtime. ONNX Runtime draws noise inside the
    graph (it cannot be seeded), so that comparison uses zero noise: identical inputs, and every
    difference is the quantization's.
    """
    from vitsq.evaluate.run import evaluate

    reference = onnx if int8_backend == "onnx" else fp32
    zero = {"noise_scale": 0.0, "noise_w": 0.0} if int8_backend == "onnx" else {}
    ev = evaluate(reference, [int8], num_sentences=num_sentences, out=out / "eval.json", progress=progress,
                  force=True, **zero)
    return ev, reference, zero


def _tag(model: str) -> str:
    """A file-name-safe short name of ``model`` (a name or a path): it names rows and sample files."""
    name = Path(model).name.removesuffix(".onnx") or model
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def _variant_names(tag: str) -> dict[str, str]:
    """The row labels of the demo's three variants (distinct: they label the eval/bench/report rows)."""
    return {"fp32": f"{tag}-fp32", "onnx": f"{tag}-fp32-onnx", "int8": f"{tag}-int8"}


def _sample_path(out: Path, k: int, name: str) -> Path:
    return out / "samples" / f"{k + 1:02d}_{name}.wav"


def _check_outputs(out: Path, tag: str) -> None:
    """Check every file the demo writes before any model loads: each may replace the demo's own
    file of the same kind (a folder or a link in its place is refused)."""
    from vitsq.bench import check_bench_outputs
    from vitsq.outputs import check_output

    for name in ("eval.json", "summary.json"):
        check_output(out / name, suffixes=(".json",), force=True, what="demo output")
    check_bench_outputs(out / "bench.json", plot=True, force=True)
    for k in range(len(SAMPLE_TEXTS)):
        for name in _variant_names(tag).values():
            check_output(_sample_path(out, k, name), suffixes=(".wav",), force=True, what="demo sample")
    check_output(out / "report", kind="dir", force=True, what="demo report folder")


def _samples(out: Path, synths: Sequence[Any]) -> list[str]:
    """The sample sentences from every variant, as wav files (a rerun replaces the demo's own)."""
    samples = []
    for k, text in enumerate(SAMPLE_TEXTS):
        for s in synths:
            # seeded where the backend can honour it (ONNX Runtime draws its noise unseeded)
            a = s.synthesize(text, **({"seed": k} if getattr(s, "seedable", True) else {}))
            samples.append(str(a.write(_sample_path(out, k, s.name), force=True)))
    return samples


def _summary(model: str, recipe_obj: Any, int8_backend: str, art: Path, synths: dict[str, Any], ev: Any,
             bench: Any, reference: Any, zero: dict, rep: dict, samples: list[str]) -> dict[str, Any]:
    """The demo's headline numbers (sizes, RTFs, speedups, WER, similarity) and where its files are."""
    fp32, onnx, int8 = synths["fp32"], synths["onnx"], synths["int8"]
    ref, var = ev.reference, ev.variants[0]
    batch = min(bench.settings["batches"])

    def cell_rtf(label: str) -> float | None:
        c = bench.cell(label, "cpu", batch)
        return c.rtf["median"] if c is not None and c.status == "ok" else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    rtf = {n: cell_rtf(n) for n in (fp32.name, onnx.name, int8.name)}
    return {
        "model": model,
        "recipe": recipe_obj.to_dict(),
        "int8_backend": int8_backend,
        "artifact": str(art),
        "size_bytes": {"fp32": fp32.size_bytes(), "int8": int8.size_bytes()},
        "size_ratio": int8.size_bytes() / fp32.size_bytes(),
        "rtf_batch": batch,
        "rtf": rtf,
        "speedup_int8_vs_fp32_torch": ratio(rtf[fp32.name], rtf[int8.name]),
        "speedup_int8_vs_fp32_onnx": ratio(rtf[onnx.name], rtf[int8.name]),
        "wer": {"fp32": ref.error_rate.wer, "int8": var.error_rate.wer},
        "delta_wer": {"delta": var.delta_wer.delta, "ci_low": var.delta_wer.ci_low, "ci_high": var.delta_wer.ci_high}
        if var.delta_wer else None,
        "num_sentences": len(ev.sentences),
        "eval_reference": reference.name,
        "eval_noise": "zero (ONNX Runtime noise cannot be seeded)" if zero else "model defaults, same seeds",
        "speaker_similarity": var.similarity.mean if var.similarity else None,
        "report_html": str(rep["html"]),
        "report_md": str(rep["md"]),
        "samples": samples,
        "threads": bench.settings["threads"],
    }


def run_demo(out_dir: str | Path = "out/demo", model: str = "joe", num_sentences: int = 12,
             batches: str = "1,2,4", warmup: int = 1, iters: int = 5, threads: int | None = None,
             requantize: bool = False, progress: bool = True, recipe: str = DEFAULT_RECIPE) -> dict[str, Any]:
    """Run the whole demo; returns the summary (also written to ``<out>/summary.json``)."""
    import json

    from tqdm.auto import tqdm

    from vitsq.jsonutil import to_jsonable
    from vitsq.outputs import check_output, write_text

    check_demo_recipe(recipe)  # bad names fail before any work (the preset itself needs the model)
    from vitsq.bench import parse_batches

    parse_batches(batches)  # so do bad batch sizes
    out = Path(out_dir).expanduser()
    tag = _tag(model)
    _check_outputs(out, tag)  # and unwritable or odd output paths
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    tkw = {"threads": threads} if threads else {}
    bar = tqdm(total=len(STEPS), desc="demo", unit="step", disable=not progress, position=0)
    try:
        with _Step("load", bar) as st:
            fp32, onnx = _load(model, tkw)
        timings["load"] = st.seconds
        recipe_obj, int8_backend = demo_recipe(recipe, fp32)
        art = out / f"{fp32.name}-int8-{recipe}"
        if not (art / "vitsq.json").is_file():  # reused as is, or replaced whole (only if vitsq's)
            check_output(art, kind="dir", force=True, what="demo artifact folder")
        with _Step("quantize", bar) as st:
            int8 = _quantized(fp32, recipe_obj, int8_backend, art, requantize, tkw)
        timings["quantize"] = st.seconds
        # distinct names: they label the rows of the eval, bench and report tables
        names = _variant_names(tag)
        fp32.name, onnx.name, int8.name = names["fp32"], names["onnx"], names["int8"]
        with _Step("evaluate", bar) as st:
            ev, reference, zero = _evaluate(fp32, onnx, int8, int8_backend, out, num_sentences, progress)
        timings["evaluate"] = st.seconds
        with _Step("benchmark", bar) as st:
            from vitsq.bench import run_benchmark

            bench = run_benchmark(fp32, [onnx, int8], batches=batches, devices="cpu", threads=threads,
                                  warmup=warmup, iters=iters, progress=progress, baseline=reference.name)
            bench_paths = bench.write(out / "bench.json", force=True)
        timings["benchmark"] = st.seconds
        with _Step("samples", bar) as st:
            samples = _samples(out, (fp32, int8, onnx))
        timings["samples"] = st.seconds
        with _Step("report", bar) as st:
            from vitsq.report import build_report

            rep = build_report([out / "eval.json", bench_paths["json"], art], out / "report",
                               title=f"vitsq demo: {model} FP32 vs INT8", force=True)
        timings["report"] = st.seconds
    finally:
        bar.close()
    summary = _summary(model, recipe_obj, int8_backend, art, {"fp32": fp32, "onnx": onnx, "int8": int8}, ev, bench,
                       reference, zero, rep, samples)
    summary["seconds"] = {**timings, "total": time.perf_counter() - t_start}
    write_text(out / "summary.json", json.dumps(to_jsonable(summary), indent=2) + "\n", suffixes=(".json",),
               force=True, what="demo summary")
    return summary


def format_summary(s: dict[str, Any]) -> str:
    """The few lines the CLI prints."""
    def f(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    sz = s["size_bytes"]
    rtf = s["rtf"]
    names = list(rtf)
    dw = s.get("delta_wer") or {}
    lines = [
        f"recipe    {s['recipe']['recipe']} (INT8 runs on {s['int8_backend']})",
        f"size      FP32 {sz['fp32'] / 1e6:.1f} MB -> INT8 {sz['int8'] / 1e6:.1f} MB  (x{s['size_ratio']:.2f})",
        f"RTF (CPU, batch {s['rtf_batch']}, {s['threads']} threads)  " + "  ".join(f"{n} {f(rtf[n], '.4f')}" for n in names),
        f"speedup   INT8 vs FP32 torch x{f(s['speedup_int8_vs_fp32_torch'], '.2f')}   "
        f"INT8 vs FP32 ONNX Runtime x{f(s['speedup_int8_vs_fp32_onnx'], '.2f')}",
        f"WER       FP32 {f(s['wer']['fp32'], '.3f')}  INT8 {f(s['wer']['int8'], '.3f')}  "
        f"ΔWER {f(dw.get('delta'), '+.3f')} [95% CI {f(dw.get('ci_low'), '+.3f')}, {f(dw.get('ci_high'), '+.3f')}]"
        f"  on {s['num_sentences']} held-out sentences (Whisper base; vs {s['eval_reference']}, noise {s['eval_noise']})",
        f"speaker similarity INT8 vs FP32 {f(s.get('speaker_similarity'), '.3f')}",
        f"samples   {Path(s['samples'][0]).parent}/",
        f"report    {s['report_html']}  (and {Path(s['report_md']).name})",
        f"took      {s['seconds']['total'] / 60:.1f} min",
    ]
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    s = run_demo(args.out, args.model, num_sentences=args.sentences, batches=args.batch, warmup=args.warmup,
                 iters=args.iters, threads=args.threads, requantize=args.requantize, progress=not args.no_progress,
                 recipe=args.recipe)
    print(format_summary(s))
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="FP32 vs INT8 on the embedded voice: quantize, evaluate, benchmark, report")
    p.add_argument("--model", default="joe")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--sentences", type=int, default=12, help="held-out sentences for WER (default 12)")
    p.add_argument("--batch", default="1,2,4", help="benchmark batch sizes")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for the benchmark (default 1: stable timings on a shared machine)")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=DEMO_RECIPES,
                   help=f"INT8 recipe kind; its measured preset is used (default {DEFAULT_RECIPE})")
    p.add_argument("--requantize", action="store_true", help="quantize again even if the artifact exists")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
