"""OpenVINO FP32 and NNCF post-training INT8 next to vitsq's INT8 artifacts, on joe.

Runs in one process, on the embedded Piper voice ``joe`` (``en_US-joe-medium``), batch 1, the
asked thread count (default 1) and zero noise (scales ``[0, length_scale, 0]``; ONNX Runtime and
OpenVINO draw noise unseeded inside the graph, so only noiseless outputs can be compared):

* the baseline: the original voice file in ONNX Runtime (FP32);
* vitsq INT8 artifacts of joe given by ``--vitsq NAME=DIR`` (loaded with ``vitsq.load``);
* OpenVINO FP32: the original ``.onnx`` read by OpenVINO, CPU plugin, ``INFERENCE_PRECISION_HINT``
  ``f32`` (no silent bf16/AMX), ``INFERENCE_NUM_THREADS`` = the thread count;
* OpenVINO INT8 from NNCF post-training quantization of that model (``nncf.quantize``), calibrated
  on real joe inputs: the first ``--calib`` sentences of the shipped English *calibration* split,
  with the voice's own noise/length scales (the calibration vitsq's ``ort-static`` presets use),
  in several configurations (:data:`NNCF_CONFIGS`). Evaluation sentences come from the disjoint
  *evaluation* split.

Every variant runs the same evaluation sentences (ids → waveform; phonemization is done once,
outside the timing). Rounds are interleaved: in round r, sentence i, the variants run in an order
rotated by r + i, so machine load hits all alike. Per variant the JSON and markdown record the
median over rounds of the summed latency of the sentences, the speed (baseline median ÷ variant
median, same run), the model size on disk, and quality against the baseline's clips: how many
sentences keep the exact output length (equal integer durations) and the speaker similarity
(resemblyzer, ``vitsq.evaluate.metrics.SpeakerEncoder``), mean and minimum.

    pip install -e '.[peers]'
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/peers/openvino_nncf.py \\
        --vitsq ort-int8=out/bench/joe-ort-int8 --vitsq ort-int8-fast=out/bench/joe-ort-int8-fast \\
        -o benchmarks/joe_openvino_peers.json --force
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("openvino_peers")

BASELINE = "fp32-ort"
OV_FP32 = "openvino-fp32"
#: The ONNX names of VITS's text encoder and duration predictor (OpenVINO keeps them as friendly names).
DURATION_MODULES = ["/enc_p/.*", "/dp/.*"]
#: The top-level ops between the modules (durations from ``logw``: exp, ceil, the alignment path,
#: the expansion of the prior's mean and scale, the prior sample): names with a single ``/`` part.
#: NNCF matches ignored-scope patterns from the start of a name (``re.match``), hence the ``$``.
GLUE = ["/[^/]+$"]
#: JSON keys holding ONNX node names or patterns, not paths (kept as they are in the result file).
NNCF_TEXT_KEYS = frozenset({"description", "ignored_patterns", "evaluation_sentences"})


@dataclass(frozen=True)
class NncfConfig:
    """One NNCF configuration: its label, what it keeps float and the quantize() options."""

    name: str
    description: str
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    preset: str | None = None  # "performance" (NNCF's default) or "mixed"
    model_type: str | None = None  # None or "transformer"

    def kwargs(self) -> dict[str, Any]:
        import nncf

        kw: dict[str, Any] = {}
        if self.patterns or self.types:
            kw["ignored_scope"] = nncf.IgnoredScope(patterns=list(self.patterns), types=list(self.types),
                                                    validate=False)
        if self.preset:
            kw["preset"] = nncf.QuantizationPreset(self.preset)
        if self.model_type:
            kw["model_type"] = nncf.ModelType(self.model_type)
        return kw

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "ignored_patterns": list(self.patterns),
                "ignored_types": list(self.types), "preset": self.preset or "performance (NNCF default)",
                "model_type": self.model_type or "none (NNCF default)"}


NNCF_CONFIGS: tuple[NncfConfig, ...] = (
    NncfConfig("nncf-default", "NNCF defaults (nothing ignored)"),
    NncfConfig("nncf-float-deconv", "NNCF defaults, the decoder's transposed convolutions "
                "(ConvolutionBackpropData) float", types=("ConvolutionBackpropData",)),
    NncfConfig("nncf-float-enc_p-dp", "text encoder and duration predictor float (ignored_scope "
                "/enc_p/.*, /dp/.*)", tuple(DURATION_MODULES)),
    NncfConfig("nncf-float-duration-path", "text encoder, duration predictor and the top-level ops "
                "between the modules float (ignored_scope /enc_p/.*, /dp/.*, /[^/]+$)",
                tuple(DURATION_MODULES + GLUE)),
    NncfConfig("nncf-float-duration-path-deconv", "as nncf-float-duration-path, and the decoder's "
                "transposed convolutions (ConvolutionBackpropData) float", tuple(DURATION_MODULES + GLUE),
                ("ConvolutionBackpropData",)),
    NncfConfig("nncf-float-duration-path-deconv-mixed", "as nncf-float-duration-path-deconv, with "
                "preset=MIXED (asymmetric activations)", tuple(DURATION_MODULES + GLUE),
                ("ConvolutionBackpropData",), preset="mixed"),
)


# ============================================================================ variants
@dataclass
class Variant:
    """One timed model: ``run(ids)`` returns the waveform [S] of one id sequence at zero noise."""

    name: str
    kind: str
    run: Callable[[list[int]], np.ndarray]
    size_bytes: int
    files: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    seconds: list[list[float]] = field(default_factory=list)  # [round][sentence]
    audio: list[np.ndarray | None] = field(default_factory=list)  # last round's clip per sentence
    lengths: list[set[int]] = field(default_factory=list)  # clip lengths seen per sentence


def _vitsq_run(synth: Any, length_scale: float) -> Callable[[list[int]], np.ndarray]:
    return lambda ids: synth.synthesize_ids(ids, noise_scale=0.0, noise_w=0.0, length_scale=length_scale).samples


def _ov_run(compiled: Any, length_scale: float) -> Callable[[list[int]], np.ndarray]:
    request = compiled.create_infer_request()
    scales = np.array([0.0, length_scale, 0.0], dtype=np.float32)  # [noise_scale, length_scale, noise_w]
    out = compiled.output(0)

    def run(ids: list[int]) -> np.ndarray:
        feed = {"input": np.asarray([ids], dtype=np.int64),  # [1, T]
                "input_lengths": np.asarray([len(ids)], dtype=np.int64),  # [1]
                "scales": scales}
        return np.array(request.infer(feed)[out], dtype=np.float32).reshape(-1)  # [1,1,1,S] -> [S]
    return run


def ov_compile_config(threads: int) -> dict[str, Any]:
    """OpenVINO CPU settings of every OpenVINO variant: ``threads`` inference threads, one stream,
    latency hint, FP32 inference precision (no bf16/fp16 even where the CPU has AMX/AVX512-FP16)."""
    return {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"}


def _runtime_precisions(compiled: Any) -> dict[str, int]:
    """How many convolution / matmul layers the CPU plugin runs in each precision."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" not in rt or "runtimePrecision" not in rt:
            continue
        if rt["layerType"].astype(str) in ("Convolution", "Deconvolution", "FullyConnected", "MatMul"):
            p = rt["runtimePrecision"].astype(str)
            counts[p] = counts.get(p, 0) + 1
    return dict(sorted(counts.items()))


def load_openvino(core: Any, model_path: Path, threads: int, length_scale: float, name: str, kind: str,
                  files: list[Path], info: dict[str, Any]) -> Variant:
    import openvino as ov

    compiled = core.compile_model(core.read_model(str(model_path)), "CPU", ov_compile_config(threads))
    got = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    prec = compiled.get_property("INFERENCE_PRECISION_HINT")
    if got != threads or prec != ov.Type.f32:
        raise RuntimeError(f"OpenVINO compiled {name} with {got} threads and precision {prec}, "
                           f"not {threads} threads f32")
    info = dict(info, runtime_precision=_runtime_precisions(compiled),
                fake_quantize_ops=sum(op.get_type_name() == "FakeQuantize"
                                      for op in core.read_model(str(model_path)).get_ordered_ops()))
    return Variant(name, kind, _ov_run(compiled, length_scale), sum(p.stat().st_size for p in files),
                   [p.name for p in files], info)


def nncf_quantize(core: Any, onnx_path: Path, cfg: NncfConfig, calib: list[dict[str, np.ndarray]],
                  workdir: Path) -> tuple[Path, list[Path], float]:
    """``cfg`` applied to the original voice read by OpenVINO; the quantized model saved as IR
    (FP32 weights stay FP32: no fp16 compression) in ``workdir``. Returns the .xml, the IR files,
    the seconds ``nncf.quantize`` took."""
    import nncf
    import openvino as ov

    model = core.read_model(str(onnx_path))
    t0 = time.perf_counter()
    q = nncf.quantize(model, nncf.Dataset(calib), subset_size=len(calib), **cfg.kwargs())
    seconds = time.perf_counter() - t0
    xml = workdir / f"{cfg.name}.xml"
    ov.save_model(q, str(xml), compress_to_fp16=False)
    return xml, [xml, xml.with_suffix(".bin")], seconds


def calibration_inputs(ort: Any, n: int) -> tuple[list[dict[str, np.ndarray]], Any]:
    """The first ``n`` sentences of the English calibration split as model inputs (one per
    sentence piece), with the voice's own scales: the calibration of vitsq's ort-static presets."""
    from vitsq.quantize.calibration import make_calibration

    cal = make_calibration(ort, n=n)
    scales = np.asarray(cal.scales, dtype=np.float32)
    items = [{"input": np.asarray([it.ids], dtype=np.int64), "input_lengths": np.asarray([len(it.ids)], np.int64),
              "scales": scales} for it in cal.items]
    return items, cal


def load_variants(args: argparse.Namespace, workdir: Path, calib: list[dict[str, np.ndarray]],
                  ort: Any) -> list[Variant]:
    """The baseline, the vitsq artifacts, OpenVINO FP32 and the NNCF variants, all on ``args.threads``."""
    import openvino as ov

    import vitsq
    from vitsq.registry import joe_paths

    ls = ort.config.length_scale
    onnx_path = joe_paths()[0]
    out = [Variant(BASELINE, "ONNX Runtime FP32, the original voice file", _vitsq_run(ort, ls),
                   onnx_path.stat().st_size, [onnx_path.name], {"describe": ort.describe()})]
    for name, folder in args.vitsq:
        synth = vitsq.load(folder, threads=args.threads)
        if synth.backend != "onnx":
            from vitsq.errors import InputError

            raise InputError(f"--vitsq {name}={folder}: expected an ONNX Runtime artifact, got the "
                             f"{synth.backend} backend")
        model = [p for p in synth.artifact_paths if p.exists()]
        out.append(Variant(name, "vitsq INT8 artifact, ONNX Runtime", _vitsq_run(synth, ls), synth.size_bytes(),
                           [p.name for p in model],
                           {"describe": synth.describe(),
                            "artifact_folder_bytes": sum(p.stat().st_size for p in Path(folder).iterdir()
                                                         if p.is_file())}))
    core = ov.Core()
    out.append(load_openvino(core, onnx_path, args.threads, ls, OV_FP32, "OpenVINO FP32 (the original .onnx)",
                             [onnx_path], {}))
    for cfg in NNCF_CONFIGS:
        log.info("nncf.quantize: %s (%d calibration inputs)", cfg.name, len(calib))
        xml, files, seconds = nncf_quantize(core, onnx_path, cfg, calib, workdir)
        log.info("%s quantized in %.0f s", cfg.name, seconds)
        out.append(load_openvino(core, xml, args.threads, ls, cfg.name, "OpenVINO INT8 (NNCF post-training)",
                                 files, {"nncf": cfg.to_dict(), "quantize_seconds": seconds}))
    return out


# ============================================================================ timing and quality
def run_rounds(variants: list[Variant], sentences: list[list[list[int]]], rounds: int, warmup: int) -> None:
    """``warmup`` untimed rounds, then ``rounds`` timed ones. In round r, sentence i, the variants
    run in an order rotated by r + i; a sentence's time is the sum over its pieces."""
    n = len(variants)
    for v in variants:
        v.audio = [None] * len(sentences)
        v.lengths = [set() for _ in sentences]
    for r in range(warmup + rounds):
        timed = r >= warmup
        per: dict[str, list[float]] = {v.name: [] for v in variants}
        for i, pieces in enumerate(sentences):
            k = (r + i) % n
            for v in variants[k:] + variants[:k]:
                clips = []
                t0 = time.perf_counter()
                for ids in pieces:
                    clips.append(v.run(ids))
                dt = time.perf_counter() - t0
                clip = np.concatenate(clips)
                per[v.name].append(dt)
                v.audio[i] = clip
                v.lengths[i].add(len(clip))
        if timed:
            for v in variants:
                v.seconds.append(per[v.name])
        log.info("%s round %d of %d done", "timed" if timed else "warm-up", r - warmup + 1 if timed else r + 1,
                 rounds if timed else warmup)


def quality(variants: list[Variant], sample_rate: int) -> dict[str, dict[str, Any]]:
    """Each variant's clips against the baseline's: equal lengths, speaker similarity, the largest
    difference where the lengths are equal."""
    from vitsq.evaluate.metrics import SpeakerEncoder, similarity_stats

    enc = SpeakerEncoder("cpu")
    base = next(v for v in variants if v.name == BASELINE)
    ref_emb = [enc.embed(a, sample_rate) for a in base.audio]
    out = {}
    for v in variants:
        emb = ref_emb if v is base else [enc.embed(a, sample_rate) for a in v.audio]
        sim = similarity_stats(ref_emb, emb)
        same = [len(a) == len(b) for a, b in zip(v.audio, base.audio)]
        rel = [float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-9))
               for a, b, s in zip(v.audio, base.audio, same) if s and len(b)]
        out[v.name] = {"same_length": int(sum(same)), "sentences": len(same),
                       "length_ratio": float(sum(len(a) for a in v.audio) / sum(len(b) for b in base.audio)),
                       "speaker_similarity": {"mean": sim.mean, "min": sim.worst, "min_sentence": sim.worst_index,
                                              "per_sentence": list(sim.per_sentence)},
                       "max_rel_abs_diff_same_length": max(rel) if rel else None,
                       "output_length_stable": all(len(s) == 1 for s in v.lengths)}
    return out


def latency(variants: list[Variant]) -> dict[str, dict[str, Any]]:
    """Per variant: the sentences' summed latency per round (median, min, max) and the per-sentence
    medians; speed = the baseline's median ÷ the variant's (same rounds)."""
    totals = {v.name: np.asarray([sum(r) for r in v.seconds]) * 1e3 for v in variants}
    base = float(np.median(totals[BASELINE]))
    out = {}
    for v in variants:
        t = totals[v.name]
        out[v.name] = {"median_ms": float(np.median(t)), "min_ms": float(t.min()), "max_ms": float(t.max()),
                       "rounds_ms": [float(x) for x in t],
                       "per_sentence_median_ms": [float(x) for x in np.median(np.asarray(v.seconds) * 1e3, axis=0)],
                       "speed_vs_baseline": base / float(np.median(t))}
    return out


# ============================================================================ output
def _f(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def markdown(data: dict[str, Any]) -> str:
    s, m = data["settings"], data["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    a, b = m.get("load_average_start"), m.get("load_average_end")
    load = f"; 1-min load average {a[0]:.1f} at start, {b[0]:.1f} at end" if a and b else ""
    n = s["sentences"]
    out = [f"# OpenVINO + NNCF next to vitsq INT8 on joe ({data['created']})", "",
           f"machine `{m['name']}`: {m['cpu']}, {m['cores']} cores ({m['cores_available']} available); {vers}; "
           f"threads {s['threads']}{load}", "",
           f"Command: `{data['command']}`", "",
           f"{n} sentences of the English evaluation split (ids → waveform, batch 1, zero noise, length scale "
           f"{s['length_scale']:g}); {s['rounds']} timed rounds after {s['warmup']} warm-up, interleaved (every "
           f"round runs each sentence on every variant, in rotating order). *speed*: the baseline's median "
           f"latency over the rounds ÷ the variant's (the sentences' summed latency per round). *same length*: "
           f"sentences whose output has the baseline's length (equal integer durations). *speaker sim*: "
           f"resemblyzer cosine similarity to the baseline's clip. NNCF calibration: the first {s['calib']} "
           f"sentences of the disjoint calibration split ({s['calibration']['items']} inputs), the voice's "
           f"own scales (noise {s['calibration']['noise_scale']:g}, length {s['calibration']['length_scale']:g}, "
           f"noise_w {s['calibration']['noise_w']:g}). OpenVINO CPU plugin: "
           + ", ".join(f"{k}={v}" for k, v in s["openvino_config"].items()) + ".", "",
           "| variant | size MB | speed × vs FP32 ORT | same length (of N) | speaker sim mean / min |",
           "|---|---:|---:|---:|---|"]
    for v in data["variants"]:
        q, lat = v["quality"], v["latency"]
        sim = q["speaker_similarity"]
        out.append(f"| `{v['name']}` | {v['size_bytes'] / 1e6:.1f} | {lat['speed_vs_baseline']:.2f} | "
                   f"{q['same_length']} of {q['sentences']} | {_f(sim['mean'], '.3f')} / {_f(sim['min'], '.3f')} |")
    out += ["", f"Baseline `{BASELINE}`: median {data['variants'][0]['latency']['median_ms']:.0f} ms for the "
                f"{n} sentences per round.", "", "## Variants", ""]
    for v in data["variants"]:
        line = f"- `{v['name']}`: {v['kind']}; files {', '.join(v['files'])}"
        info = v["info"]
        if "nncf" in info:
            line += f"; {info['nncf']['description']}; nncf.quantize {info['quantize_seconds']:.0f} s"
        if "runtime_precision" in info:
            prec = ", ".join(f"{k} {c}" for k, c in info["runtime_precision"].items())
            line += f"; FakeQuantize ops {info['fake_quantize_ops']}; conv/matmul layers at run time: {prec}"
        if "artifact_folder_bytes" in info:
            line += (f"; the artifact folder (streaming graphs included) is "
                     f"{info['artifact_folder_bytes'] / 1e6:.1f} MB")
        out.append(line + ".")
    out += ["", "Sizes: the files each variant runs (the original `.onnx` for both FP32 variants, the INT8 "
                "`model.onnx` of a vitsq artifact, the IR `.xml` + `.bin` of an NNCF model)."]
    return "\n".join(out) + "\n"


# ============================================================================ main
def _name_dir(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (NAME of letters, digits, . _ -), got {text!r}")
    return name, Path(folder)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", required=True, type=Path,
                    help="result JSON (.json); the markdown table goes beside it (.md)")
    ap.add_argument("--vitsq", action="append", type=_name_dir, default=[], metavar="NAME=DIR",
                    help="a vitsq ONNX Runtime artifact folder of joe, timed as variant NAME (repeatable)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--sentences", type=int, default=20, help="evaluation sentences (default 20)")
    ap.add_argument("--calib", type=int, default=32, help="NNCF calibration sentences (default 32)")
    ap.add_argument("--threads", type=int, default=1, help="threads of every runtime (default 1)")
    ap.add_argument("--wait", type=int, default=900,
                    help="seconds to wait for a --vitsq folder's vitsq.json being written (default 900)")
    ap.add_argument("--force", action="store_true", help="replace existing result files")
    return ap.parse_args(argv)


def check_args(args: argparse.Namespace) -> tuple[Path, Path]:
    """Refuse bad counts, names and paths before any slow work; the two output paths."""
    from vitsq.errors import InputError
    from vitsq.evaluate.sentences import load_split
    from vitsq.outputs import check_output

    limits = (("rounds", 1, 1000), ("warmup", 0, 100), ("threads", 1, 256), ("wait", 0, 86400),
              ("sentences", 1, len(load_split("en", "evaluation"))), ("calib", 1, len(load_split("en", "calibration"))))
    for name, lo, hi in limits:
        value = getattr(args, name)
        if not lo <= value <= hi:
            raise InputError(f"--{name} {value} is out of range: use an integer in {lo}..{hi}")
    names = [n for n, _ in args.vitsq]
    taken = {BASELINE, OV_FP32, *(c.name for c in NNCF_CONFIGS)}
    for name in names:
        if names.count(name) > 1 or name in taken:
            raise InputError(f"--vitsq {name}=...: the name is used twice or by a built-in variant")
    for name, folder in args.vitsq:
        if not folder.is_dir():
            raise InputError(f"--vitsq {name}={folder}: no such folder")
    if args.out.suffix.lower() != ".json":
        raise InputError(f"-o {args.out}: give a .json path (the .md table is written beside it)")
    md = args.out.with_suffix(".md")
    for p, sfx in ((args.out, ".json"), (md, ".md")):
        check_output(p, suffixes=(sfx,), force=args.force, what="result file")
    return args.out, md


def wait_for_artifacts(args: argparse.Namespace) -> None:
    """Wait (up to ``--wait`` seconds) for each --vitsq folder's manifest, in case another job is
    still writing it."""
    from vitsq.errors import InputError

    deadline = time.monotonic() + args.wait
    for name, folder in args.vitsq:
        manifest = folder / "vitsq.json"
        if not manifest.exists():
            log.info("waiting for %s", manifest)
        while not manifest.exists():
            if time.monotonic() > deadline:
                raise InputError(f"--vitsq {name}={folder}: no vitsq.json after {args.wait} s")
            time.sleep(5)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Load everything, quantize with NNCF, time the interleaved rounds, score; the result record."""
    import torch

    import vitsq
    from vitsq.bench import load_average, machine_info, package_version
    from vitsq.evaluate.sentences import load_split
    from vitsq.jsonutil import command_line, describe_sources

    torch.set_num_threads(args.threads)  # the speaker encoder (scoring only)
    machine = machine_info()
    for dist in ("openvino", "nncf", "resemblyzer"):
        machine["versions"][dist] = package_version(dist)
    load_start = machine.pop("load_average")
    wait_for_artifacts(args)
    ort = vitsq.load("joe", backend="onnx", threads=args.threads)
    evaluation = load_split("en", "evaluation", limit=args.sentences)
    calib, cal = calibration_inputs(ort, args.calib)
    overlap = set(cal.sentences) & set(evaluation)
    if overlap:
        raise RuntimeError(f"calibration and evaluation sentences overlap: {sorted(overlap)[:3]}")
    sentences = [ort.text_to_ids(s) for s in evaluation]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vitsq-openvino-") as tmp:
        variants = load_variants(args, Path(tmp), calib, ort)
        setup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        run_rounds(variants, sentences, args.rounds, args.warmup)
        rounds_s = time.perf_counter() - t1
    lat = latency(variants)
    qual = quality(variants, ort.sample_rate)
    machine["load_average_start"], machine["load_average_end"] = load_start, load_average()
    records = []
    for v in variants:
        info = dict(v.info)
        if "describe" in info:
            info["describe"] = describe_sources(info["describe"])
        records.append({"name": v.name, "kind": v.kind, "size_bytes": v.size_bytes, "files": v.files, "info": info,
                        "latency": lat[v.name], "quality": qual[v.name]})
    return {
        "kind": "vitsq-openvino-peers",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command_line(argv, prog="benchmarks/peers/openvino_nncf.py"),
        "machine": machine,
        "settings": {"threads": args.threads, "rounds": args.rounds, "warmup": args.warmup,
                     "sentences": args.sentences, "calib": args.calib, "batch": 1,
                     "noise_scale": 0.0, "noise_w": 0.0, "length_scale": ort.config.length_scale,
                     "baseline": BASELINE, "openvino_config": ov_compile_config(args.threads),
                     "calibration": cal.to_dict(), "nncf_subset_size": len(calib),
                     "order": "round r, sentence i: variants rotated by (r + i) mod n",
                     "setup_seconds": setup_s, "rounds_seconds": rounds_s},
        "evaluation_sentences": evaluation,
        "sentence_ids": [[len(ids) for ids in pieces] for pieces in sentences],
        "variants": records,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # before torch, ONNX Runtime or OpenVINO start their pools: every runtime gets the asked thread count
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from vitsq.errors import VitsqError
    from vitsq.jsonutil import TEXT_KEYS, to_jsonable, without_paths
    from vitsq.outputs import write_text

    try:
        out_json, out_md = check_args(args)
        try:
            import nncf  # noqa: F401
            import openvino  # noqa: F401
        except ImportError as exc:
            from vitsq.errors import UnsupportedError

            raise UnsupportedError(f"openvino and nncf are needed: pip install -e '.[peers]' ({exc})") from exc
        logging.getLogger("nncf").setLevel(logging.WARNING)  # NNCF logs every ignored node at INFO
        data = without_paths(to_jsonable(run(args, argv)), skip=TEXT_KEYS | NNCF_TEXT_KEYS)
        write_text(out_json, json.dumps(data, indent=2, allow_nan=False) + "\n", suffixes=(".json",),
                   force=args.force, what="result file")
        write_text(out_md, markdown(data), suffixes=(".md",), force=args.force, what="result table")
    except VitsqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out_json} and {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
