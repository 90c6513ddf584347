"""`vitsq bench`: real-time-factor benchmark over batch sizes x devices x backends x variants.

What is measured, and how:

* **Inputs** are real sentences (the shipped *evaluation* split of the model's language, or a
  ``--sentences`` file), shuffled with a fixed seed; batch size ``b`` uses the first ``b`` of them,
  padded and masked in one call. Every variant gets the same texts (each through its own
  front-end, which for versions of one model yields the same ids; the token counts are recorded).
* **RTF** = compute seconds / seconds of audio produced, where audio seconds = samples / sample
  rate summed over the batch items (never latent frames). Each iteration times one
  ``synthesize_ids_batch`` call (model only, front-end excluded) and yields one RTF; we report
  the median with p10/p90 over iterations, the latency per call, and the aggregate
  (sum of seconds / sum of audio).
* **Interleaving**: on each device every variant is loaded, then each batch size runs ``warmup``
  untimed rounds and ``iters`` timed rounds; a round calls every variant once, round ``r``
  starting at variant ``r mod n``, so load from other processes hits all variants alike. The
  order of every round is recorded in the JSON (``rounds``). ExecuTorch's XNNPACK pool is
  process-wide and cannot be resized with a program loaded, so a run whose ExecuTorch variants
  would need another thread count than the run's is refused.
* **Memory**: peak CPU RSS per (device, batch) while all of that device's variants are loaded
  (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``; otherwise the process-lifetime
  ``ru_maxrss``), and ``torch.cuda.max_memory_allocated`` on GPU.
* **Portability**: the JSON names model files and sentence files by name and SHA-256, never by
  absolute path, and records the command line that produced it.
* **Random-weight models** (``describe()["weights"]`` neither "trained" nor "unknown") are run with a
  ``length_scale`` calibrated so the audio has ~3 latent frames per input token, like real
  speech, and every row they appear in is labelled as a random-weight run.
* **Devices**: ``cpu``; ``cuda`` (FP32), ``cuda-fp16``, ``cuda-bf16`` and ``cuda-compile``
  (FP16 with ``torch.compile`` on the encoder, flow and decoder). CUDA devices on a machine
  without a GPU are skipped with a message; the other devices still run. Non-torch backends run
  on CPU only.

A variant that fails to load or fails mid-run is recorded as failed (with its error) in the
JSON and the table; the remaining cells still run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vitsq.errors import InputError, UnsupportedError, VitsqError
from vitsq.jsonutil import describe_sources, file_sha256, invoked_command, portable_str, to_jsonable, without_paths
from vitsq.limits import MAX_BENCH_BATCH
from vitsq.outputs import atomic_output, check_output, write_text
from vitsq.variants import Variant, parse_variant

log = logging.getLogger(__name__)

SCHEMA = "vitsq-bench/1"
#: Device names accepted by ``--device``; the cuda ones map to (torch device, dtype, compile).
DEVICES: dict[str, tuple[str, str, bool]] = {
    "cpu": ("cpu", "float32", False),
    "cuda": ("cuda", "float32", False),
    "cuda-fp16": ("cuda", "float16", False),
    "cuda-bf16": ("cuda", "bfloat16", False),
    "cuda-compile": ("cuda", "float16", True),
}
#: Latent frames per input token that random-weight models are calibrated to (real speech: ~3).
RANDOM_WEIGHT_FRAMES_PER_TOKEN = 3.0
DEFAULT_BATCHES = (1, 2, 4, 8)


# ----------------------------------------------------------------------------- parsing
def parse_batches(text: str | Sequence[int]) -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8]; every size must be an integer in 1..``MAX_BENCH_BATCH``."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[int] = []
    for item in items:
        s = str(item).strip()
        if not s:
            continue
        try:
            b = int(s)
        except ValueError:
            raise InputError(f"batch size {s!r} is not an integer: give sizes like 1,2,4,8") from None
        if not 1 <= b <= MAX_BENCH_BATCH:
            raise InputError(f"batch size {b} is not valid: batch sizes must be integers >= 1 and <= "
                             f"{MAX_BENCH_BATCH} (the bench limit; e.g. 1,2,4,8)")
        if b not in out:
            out.append(b)
    if not out:
        raise InputError("no batch sizes given: use e.g. --batch 1,2,4,8")
    return out


def parse_devices(text: str | Sequence[str]) -> list[str]:
    """``"cpu,cuda"`` -> ["cpu", "cuda"]; unknown names raise, naming the valid ones."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in items:
        d = str(item).strip().lower()
        if not d:
            continue
        if d not in DEVICES:
            raise InputError(f"unknown device {d!r}: valid devices are {', '.join(DEVICES)}")
        if d not in out:
            out.append(d)
    if not out:
        raise InputError(f"no devices given: use e.g. --device cpu (valid: {', '.join(DEVICES)})")
    return out


# ----------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (None when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(name: str | None = None) -> dict[str, Any]:
    """CPU model, cores, memory, library versions and GPU name (if any) of this machine."""
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
               "count": torch.cuda.device_count(), "cuda": torch.version.cuda}
    return {
        "name": name or platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": affinity,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu,
        "load_average": load_average(),
        "versions": {d: package_version(d) for d in ("vitsq", "torch", "numpy", "onnxruntime", "executorch")},
    }


# ----------------------------------------------------------------------------- memory
def _reset_peak_rss() -> str:
    """Reset the kernel's peak-RSS mark for this process; returns the method used."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM (reset per cell)"
    except OSError:
        return "ru_maxrss (process lifetime)"


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------- inputs
def benchmark_texts(language: str, batches: Sequence[int], seed: int = 0,
                    sentences_file: str | Path | None = None) -> list[str]:
    """``max(batches)`` texts: a seeded shuffle of the evaluation split (or of a sentence file)."""
    from vitsq.evaluate.sentences import load_split, read_sentence_file

    pool = read_sentence_file(sentences_file) if sentences_file else load_split(language, "evaluation")
    pool = list(pool)
    random.Random(seed).shuffle(pool)
    need = max(batches)
    if len(pool) < need:
        # a short file still works for large batches: repeat it, in the same shuffled order
        pool = (pool * math.ceil(need / len(pool)))[:need]
    return pool[:need]


def _text_ids(synth: Any, texts: Sequence[str]) -> list[list[int]]:
    """One id sequence per text (multi-sentence texts are joined: one batch item per text)."""
    out = []
    for t in texts:
        sents = synth.text_to_ids(t)
        ids = [i for s in sents for i in s]
        out.append(ids)
    return out


# ----------------------------------------------------------------------------- results
@dataclass
class Cell:
    """One (variant, device, batch) measurement."""

    variant: str
    device: str
    batch: int
    status: str  # "ok", "failed", "skipped"
    error: str | None = None
    iters: int = 0
    tokens: int = 0
    audio_seconds: float | None = None  # per call (mean over iterations)
    rtf: dict[str, float] | None = None  # median / p10 / p90 / mean over iterations
    rtf_aggregate: float | None = None  # sum seconds / sum audio seconds
    latency_s: dict[str, float] | None = None
    tokens_per_second: float | None = None
    peak_rss_mb: float | None = None
    gpu_max_allocated_mb: float | None = None
    speedup_vs_baseline: float | None = None  # baseline median RTF / this median RTF
    random_weights: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class BenchResult:
    """Everything one benchmark run measured; :meth:`to_dict` is the JSON written to disk."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    variants: list[dict[str, Any]]
    cells: list[Cell]
    inputs: dict[str, Any]
    messages: list[str] = field(default_factory=list)
    created: str = ""
    rounds: list[dict[str, Any]] = field(default_factory=list)  # the order of every timed round
    command: str | None = None  # the command line that produced the run

    def cell(self, variant: str, device: str, batch: int) -> Cell | None:
        for c in self.cells:
            if c.variant == variant and c.device == device and c.batch == batch:
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        return without_paths(to_jsonable({
            "schema": SCHEMA,
            "created": self.created,
            "command": self.command,
            "machine": self.machine,
            "settings": self.settings,
            "notes": {
                "rtf": "compute seconds / seconds of audio (samples / sample_rate summed over the batch); "
                       "median and p10/p90 over iterations; model call only (front-end excluded)",
                "speedup_vs_baseline": "baseline median RTF / variant median RTF, same device and batch, same run",
                "random_weights": "rows of random-weight models measure speed only, with a length_scale "
                                  "calibrated to ~3 frames per input token",
                "rounds": "variants are interleaved: every timed round runs each variant once, round r starting "
                          "at variant r mod n; 'orders' lists each round's order, per device and batch",
                "peak_rss_mb": "process peak while the device's variants are all loaded and interleaved, "
                               "so one number per device and batch, not per variant",
            },
            "inputs": self.inputs,
            "variants": self.variants,
            "results": [c.to_dict() for c in self.cells],
            "rounds": self.rounds,
            "messages": self.messages,
        }))

    def table(self) -> str:
        return markdown_table(self.to_dict())

    def write(self, out: str | Path, plot: bool = True, *, force: bool = False) -> dict[str, Path]:
        """Write ``out`` (JSON), ``out`` with ``.md`` (table) and ``.png`` (plot); returns the paths.

        Each file is written atomically (:mod:`vitsq.outputs`); an existing one is replaced only
        with ``force`` (see :func:`check_bench_outputs`, which callers run before the benchmark).
        """
        paths = check_bench_outputs(out, plot=plot, force=force)
        data = self.to_dict()
        write_text(paths["json"], json.dumps(data, indent=2, allow_nan=False) + "\n", suffixes=(".json",),
                   force=force, what="bench JSON")
        write_text(paths["md"], markdown_report(data), suffixes=(".md",), force=force, what="bench table")
        if plot:
            plot_rtf(data, paths["png"], force=force)
        return paths


def bench_output_paths(out: str | Path, plot: bool = True) -> dict[str, Path]:
    """The files a bench run writes for ``--out``: the JSON (``.json`` added when missing), and
    beside it the ``.md`` table and (with ``plot``) the ``.png`` plot."""
    out = Path(out).expanduser()
    if out.suffix != ".json":
        out = out.with_suffix(out.suffix + ".json") if out.suffix else out.with_suffix(".json")
    paths = {"json": out, "md": out.with_suffix(".md")}
    if plot:
        paths["png"] = out.with_suffix(".png")
    return paths


def check_bench_outputs(out: str | Path, plot: bool = True, force: bool = False) -> dict[str, Path]:
    """Validate every output path of a bench run before any model loads (an existing file needs
    ``force``; see :func:`vitsq.outputs.check_output`); returns them as :func:`bench_output_paths`."""
    paths = bench_output_paths(out, plot)
    for kind, p in paths.items():
        check_output(p, suffixes=(f".{kind}",), force=force, what=f"bench {kind.upper()} output")
    return paths


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(arr)), "p10": float(np.percentile(arr, 10)),
            "p90": float(np.percentile(arr, 90)), "mean": float(arr.mean()),
            "min": float(arr.min()), "max": float(arr.max())}


# ----------------------------------------------------------------------------- devices
def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _prepare_for_device(synth: Any, device: str) -> Any:
    """Move/cast a torch synthesizer for ``device``; raises UnsupportedError for other backends."""
    import torch

    torch_device, dtype, compiled = DEVICES[device]
    if torch_device == "cpu":
        return synth
    if getattr(synth, "backend", None) != "torch" or not hasattr(synth, "model"):
        raise UnsupportedError(f"device {device} needs the torch backend; {getattr(synth, 'backend', '?')} "
                               "runs on cpu only")
    synth.model = synth.model.to(torch.device(torch_device), dtype=getattr(torch, dtype)).eval()
    synth.device = torch.device(torch_device)
    if compiled:
        # shapes vary with durations, so compile the big submodules with dynamic shapes rather
        # than capturing the whole data-dependent forward in one graph
        for name in ("enc_p", "flow", "dec"):
            sub = getattr(synth.model, name, None)
            if sub is not None:
                setattr(synth.model, name, torch.compile(sub, dynamic=True))
    return synth


# ----------------------------------------------------------------------------- core
Loader = Callable[[Variant, str], Any]


#: How a benchmark runs batches (see :attr:`vitsq.synth.BaseSynthesizer.batching`).
BATCHING = ("padded", "items")


def _default_loader(threads: int) -> Loader:
    def load(v: Variant, device: str) -> Any:
        # torch's pool is set by run_benchmark; ONNX Runtime sessions and ExecuTorch's process-wide
        # XNNPACK pool take the run's thread count from here (torch loaders ignore it), so every
        # variant of one run computes on the same number of threads
        return v.load(device="cpu", threads=threads)

    return load


def _weights(desc: dict[str, Any]) -> str:
    """``describe()["weights"]``; "unknown" when the description failed or does not say."""
    return str(desc.get("weights") or "unknown") if "error" not in desc else "unknown"


def _is_random(weights: str) -> bool:
    return weights not in ("trained", "unknown")


def _seed_kw(synth: Any, seed: int) -> dict[str, int]:
    """The seed for a backend that can honour it; none for one whose noise is drawn unseeded
    (ONNX Runtime), which refuses an explicit seed rather than ignore it."""
    return {"seed": seed} if getattr(synth, "seedable", True) else {}


def _calibrate_length_scale(synth: Any, batch: list[list[int]], seed: int) -> tuple[float, float]:
    """length_scale giving ~3 latent frames per input token on ``batch``; returns (scale, frames/token)."""
    hop = int(getattr(synth.config, "hop_length", 256))
    tokens = sum(len(x) for x in batch)
    scale, fpt = 1.0, float("nan")
    for _ in range(3):
        outs, _ = synth.synthesize_ids_batch(batch, 0, length_scale=scale, **_seed_kw(synth, seed))
        frames = sum(len(o) for o in outs) / hop
        fpt = frames / tokens
        if fpt <= 0:
            break
        if abs(fpt - RANDOM_WEIGHT_FRAMES_PER_TOKEN) / RANDOM_WEIGHT_FRAMES_PER_TOKEN < 0.05:
            break
        scale = float(min(max(scale * RANDOM_WEIGHT_FRAMES_PER_TOKEN / fpt, 0.01), 100.0))
    return scale, fpt


@dataclass
class _Entry:
    """One variant as given: a parsed spec to load, or an already-loaded Synthesizer."""

    label: str
    variant: Variant | None
    preloaded: Any = None


@dataclass
class _Loaded:
    """One variant loaded and prepared on one device: its synthesizer, ids and length_scale."""

    label: str
    synth: Any
    info: dict[str, Any]
    ids: list[list[int]]
    length_scale: float | None
    random_weights: bool


@dataclass
class _Run:
    """State shared by the steps of one :func:`run_benchmark` call."""

    batches: list[int]
    warmup: int
    iters: int
    seed: int
    threads: int
    batching: str
    sentences: str | Path | None
    load: Loader
    bar: Any
    cells: list[Cell] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    texts: list[str] | None = None

    def note(self, msg: str, level: int = logging.WARNING) -> None:
        self.messages.append(msg)
        log.log(level, msg)

    def mark(self, label: str, device: str, status: str, error: str, random_weights: bool = False) -> None:
        """Record every batch of ``label`` on ``device`` as ``status`` (failed/skipped)."""
        for b in self.batches:
            self.cells.append(Cell(label, device, b, status, error, random_weights=random_weights))
            self.bar.update(1)


def _entries(model: Any, variants: Sequence[Any], baseline: str | None) -> tuple[list[_Entry], str]:
    """Parse the variants, check labels are unique and the baseline is one of them."""
    entries: list[_Entry] = []
    for item in [model, *variants]:
        if isinstance(item, Variant):
            entries.append(_Entry(item.label, item))
        elif isinstance(item, (str, Path)):
            v = parse_variant(str(item))
            entries.append(_Entry(v.label, v))
        else:
            for attr in ("synthesize_ids_batch", "text_to_ids", "sample_rate"):
                if not hasattr(item, attr):
                    raise InputError(f"{item!r} is neither a variant spec nor a Synthesizer (no {attr!r})")
            entries.append(_Entry(str(getattr(item, "label_for_bench", None) or item.name), None, item))
    labels = [e.label for e in entries]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise InputError(f"variant labels must be unique, {dupes} repeat: name them with LABEL=SPEC")
    baseline = baseline or labels[0]
    if baseline not in labels:
        raise InputError(f"baseline {baseline!r} is not one of the benchmarked variants: {', '.join(labels)}")
    return entries, baseline


def _variant_info(e: _Entry) -> dict[str, Any]:
    """The JSON record of a variant before loading: label, spec (file name + sha256 for a path)."""
    info: dict[str, Any] = {"label": e.label, "spec": None, "status": "ok", "error": None,
                            "backend": e.variant.backend if e.variant else getattr(e.preloaded, "backend", None)}
    if e.variant is not None:
        spec = Path(e.variant.spec).expanduser()
        if spec.exists():
            info["spec"] = spec.name if spec.is_absolute() else e.variant.spec
            info["spec_sha256"] = file_sha256(spec)
        else:
            info["spec"] = portable_str(e.variant.spec)
    return info


def _load_one(run: _Run, e: _Entry, info: dict[str, Any], device: str) -> Any | None:
    """Load (fresh per device, so casts/compiles do not leak) and place ``e``; None if it failed."""
    try:
        if e.preloaded is not None:
            if device != "cpu":
                raise UnsupportedError(f"a preloaded synthesizer runs on cpu only, not {device}")
            synth = e.preloaded
        else:
            synth = run.load(e.variant, device)
        return _prepare_for_device(synth, device)
    except UnsupportedError as exc:
        run.note(f"{e.label} on {device}: {exc}")
        run.mark(e.label, device, "skipped", str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad variant must not stop the run
        err = str(exc) if isinstance(exc, VitsqError) else f"{type(exc).__name__}: {exc}"
        run.note(f"{e.label} on {device} failed to load: {err}", logging.ERROR)
        info["status"], info["error"] = "failed", err
        run.mark(e.label, device, "failed", err)
    return None


def _describe_into(info: dict[str, Any], synth: Any, label: str) -> str:
    """Fill ``info`` from ``synth.describe()`` (paths as names + sha256); returns the weights label."""
    try:
        desc = describe_sources(dict(synth.describe()))
    except Exception as exc:  # noqa: BLE001 - a description is informative
        desc = {"error": f"describe() failed: {type(exc).__name__}: {exc}"}
    weights = _weights(desc)
    info.update({"name": getattr(synth, "name", label), "backend": getattr(synth, "backend", info["backend"]),
                 "weights": weights, "random_weights": _is_random(weights), "size_bytes": _size(synth),
                 "sample_rate": int(synth.sample_rate), "threads": desc.get("threads"),
                 "seeded_noise": bool(getattr(synth, "seedable", True)), "description": desc})
    return weights


def _batching_note(synth: Any, batching: str) -> str:
    """How the variant runs a batch (ExecuTorch and ONNX Runtime run a batch of different
    lengths one item at a time): said next to its numbers."""
    if batching == "items" and hasattr(synth, "batching"):
        synth.batching = "items"
    outs = getattr(synth, "output_names", None)
    if getattr(synth, "backend", None) == "executorch":
        return "items one at a time (ExecuTorch programs take batch 1)"
    if outs is not None:
        # the ONNX backend pads only items of equal length (its exported decoder is unmasked)
        return "items one at a time (ONNX Runtime: items of different lengths are never padded)"
    if getattr(synth, "batching", "padded") == "items":
        return "items one at a time (--batching items)"
    return "padded batch"


def _texts_for(run: _Run, synth: Any) -> list[str]:
    """The run's input texts, chosen once from the first loaded variant's language."""
    if run.texts is None:
        language = str(getattr(synth, "language", "en"))
        run.texts = benchmark_texts(language, run.batches, run.seed, run.sentences)
        if run.sentences:
            src = Path(run.sentences)
            source = {"source": f"sentence file {src.name}", "sentences_sha256": file_sha256(src)}
        else:
            source = {"source": f"{language} evaluation split"}
        run.inputs = {"language": language, "seed": run.seed, **source, "texts": run.texts}
    return run.texts


def _prepare(run: _Run, e: _Entry, info: dict[str, Any], synth: Any, device: str) -> _Loaded | None:
    """Describe, tokenize and (for random weights) calibrate one loaded variant; None if that failed."""
    random_weights = _is_random(_describe_into(info, synth, e.label))
    try:
        ids = _text_ids(synth, _texts_for(run, synth))
    except Exception as exc:  # noqa: BLE001
        err = f"front-end failed: {type(exc).__name__}: {exc}"
        info["status"], info["error"] = "failed", err
        run.note(f"{e.label}: {err}", logging.ERROR)
        run.mark(e.label, device, "failed", err, random_weights)
        return None
    info["tokens_per_batch"] = {str(b): sum(len(x) for x in ids[:b]) for b in run.batches}
    info["batching"] = _batching_note(synth, run.batching)
    length_scale = None
    if random_weights:
        try:
            length_scale, fpt = _calibrate_length_scale(synth, ids[: max(run.batches)], run.seed)
        except Exception as exc:  # noqa: BLE001
            err = f"length_scale calibration failed: {type(exc).__name__}: {exc}"
            info["status"], info["error"] = "failed", err
            run.mark(e.label, device, "failed", err, random_weights)
            return None
        info["length_scale"], info["frames_per_token"] = length_scale, fpt
        log.info("%s: random weights, length_scale %.3f gives %.2f frames/token", e.label, length_scale, fpt)
    return _Loaded(e.label, synth, info, ids, length_scale, random_weights)


def _check_threads(loaded: Sequence[_Loaded], threads: int) -> None:
    """Refuse to interleave ExecuTorch variants whose shared pool differs from the run's threads.

    ExecuTorch's XNNPACK pool is process-wide and cannot be resized while a program is loaded
    (it crashes), and interleaving keeps every variant loaded: one run, one thread count.
    """
    et = [x for x in loaded if getattr(x.synth, "backend", None) == "executorch"]
    odd = [x for x in et if isinstance(x.info.get("threads"), int) and x.info["threads"] != threads]
    if odd:
        names = ", ".join(f"{x.label} ({x.info['threads']} threads)" for x in odd)
        raise UnsupportedError(
            f"cannot interleave {names} with a run on {threads} threads: ExecuTorch's XNNPACK thread pool is "
            f"process-wide and cannot be resized while a program is loaded, so every variant of one run must use "
            f"the same thread count; load the ExecuTorch models with threads={threads} (or pass --threads "
            f"{odd[0].info['threads']})")


def _call(x: _Loaded, batch: list[list[int]], seed: int, on_cuda: bool) -> tuple[float, float]:
    """One timed model call: (seconds, audio seconds = samples / rate summed over the batch)."""
    import torch

    t0 = time.perf_counter()
    outs, _model_s = x.synth.synthesize_ids_batch(batch, 0, length_scale=x.length_scale, **_seed_kw(x.synth, seed))
    if on_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, sum(int(len(o)) for o in outs) / float(x.synth.sample_rate)


def _rotations(live: list[_Loaded], n_rounds: int, start: int = 0):
    """Yield each round's order: round r starts at variant (start + r) mod n of the live list."""
    for r in range(n_rounds):
        if not live:
            return
        k = (start + r) % len(live)
        yield live[k:] + live[:k]


def _interleave(run: _Run, loaded: list[_Loaded], device: str, b: int) -> dict[str, Any]:
    """Warm up, then time ``run.iters`` rounds of batch ``b``; each round runs every live variant
    once, in rotating order, so machine load hits all variants alike. Returns per-label samples."""
    import torch

    on_cuda = DEVICES[device][0] == "cuda"
    live = list(loaded)
    samples: dict[str, tuple[list[float], list[float]]] = {x.label: ([], []) for x in loaded}
    errors: dict[str, str] = {}

    def step(x: _Loaded, timed: bool) -> None:
        try:
            s, a = _call(x, x.ids[:b], run.seed, on_cuda)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the rest continue
            errors[x.label] = f"{type(exc).__name__}: {exc}"
            live.remove(x)
            return
        if timed:
            samples[x.label][0].append(s)
            samples[x.label][1].append(a)

    for order in _rotations(live, run.warmup):
        for x in order:
            step(x, timed=False)
    rss_method = _reset_peak_rss()
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    orders = []
    for order in _rotations(live, run.iters):
        orders.append([x.label for x in order])
        for x in order:
            step(x, timed=True)
    run.rounds.append({"device": device, "batch": b, "warmup_rounds": run.warmup, "orders": orders})
    return {"samples": samples, "errors": errors, "rss_method": rss_method,
            "peak_rss_mb": _peak_rss_mb(),
            "gpu_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None}


def _cell(run: _Run, x: _Loaded, device: str, b: int, m: dict[str, Any]) -> Cell:
    """The measured cell of one variant from :func:`_interleave`'s samples (or its error)."""
    cell = Cell(x.label, device, b, "ok", tokens=sum(len(i) for i in x.ids[:b]), iters=run.iters,
                random_weights=x.random_weights)
    seconds, audio = m["samples"][x.label]
    err = m["errors"].get(x.label)
    if err is None and min(audio) <= 0:
        err = "RuntimeError: the model produced empty audio: RTF is undefined"
    if err is not None:
        cell.status, cell.error, cell.iters = "failed", err, 0
        run.note(f"{x.label} on {device} at batch {b} failed: {err}", logging.ERROR)
        if x.info["status"] == "ok":
            x.info["status"], x.info["error"] = "partly failed", err
        return cell
    cell.rtf = _stats([s / a for s, a in zip(seconds, audio)])
    cell.rtf_aggregate = sum(seconds) / sum(audio)
    cell.latency_s = _stats(seconds)
    cell.audio_seconds = float(np.mean(audio))
    cell.tokens_per_second = cell.tokens / cell.latency_s["median"]
    cell.peak_rss_mb, cell.gpu_max_allocated_mb = m["peak_rss_mb"], m["gpu_max_allocated_mb"]
    run.inputs["rss_method"] = m["rss_method"]
    return cell


def _run_device(run: _Run, entries: Sequence[_Entry], infos: Sequence[dict[str, Any]], device: str) -> None:
    """Load every variant on ``device``, then measure each batch size with interleaved rounds."""
    import torch

    if DEVICES[device][0] == "cuda" and not _cuda_available():
        for e in entries:
            run.mark(e.label, device, "skipped", "no CUDA GPU on this machine")
        return
    loaded: list[_Loaded] = []
    for e, info in zip(entries, infos):
        synth = _load_one(run, e, info, device)
        prepared = _prepare(run, e, info, synth, device) if synth is not None else None
        if prepared is not None:
            loaded.append(prepared)
    _check_threads(loaded, run.threads)
    for b in run.batches if loaded else ():
        run.bar.set_postfix_str(f"{device} b={b}")
        m = _interleave(run, loaded, device, b)
        for x in loaded:
            run.cells.append(_cell(run, x, device, b, m))
            run.bar.update(1)
    del loaded
    if DEVICES[device][0] == "cuda":
        torch.cuda.empty_cache()


def _speedups(cells: Sequence[Cell], baseline: str) -> None:
    """Set each ok cell's ratio to the baseline's median RTF, same device and batch."""
    for c in cells:
        if c.status != "ok":
            continue
        base = next((x for x in cells if x.variant == baseline and x.device == c.device and x.batch == c.batch
                     and x.status == "ok"), None)
        if base is not None and c.rtf and base.rtf:
            c.speedup_vs_baseline = base.rtf["median"] / c.rtf["median"]


def _check_counts(warmup: int, iters: int, batching: str, threads: int | None) -> None:
    if warmup < 0:
        raise InputError(f"warmup must be >= 0 rounds, got {warmup}")
    if iters < 1:
        raise InputError(f"iters must be >= 1, got {iters}")
    if batching not in BATCHING:
        raise InputError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")


def run_benchmark(
    model: str | Variant | Any,
    variants: Sequence[str | Variant | Any] = (),
    batches: Sequence[int] | str = DEFAULT_BATCHES,
    devices: Sequence[str] | str = ("cpu",),
    threads: int | None = None,
    warmup: int = 10,
    iters: int = 100,
    sentences: str | Path | None = None,
    seed: int = 0,
    baseline: str | None = None,
    machine_name: str | None = None,
    progress: bool = True,
    loader: Loader | None = None,
    batching: str = "padded",
    command: str | None = None,
) -> BenchResult:
    """Benchmark ``model`` and ``variants`` on every (device, batch); see the module docstring.

    ``model``/``variants`` are variant strings (:func:`vitsq.variants.parse_variant`),
    :class:`~vitsq.variants.Variant` or already-loaded Synthesizers (used on CPU as given).
    ``baseline`` is the label speedups are relative to (default: ``model``'s label).
    ``loader(variant, device)`` overrides how specs load. ``command`` is the command line that
    asked for the run (the CLI passes it), recorded in the JSON.
    """
    import torch
    from tqdm.auto import tqdm

    batches = parse_batches(batches)
    devices = parse_devices(devices)
    _check_counts(warmup, iters, batching, threads)
    entries, baseline = _entries(model, variants, baseline)
    if threads is not None:
        torch.set_num_threads(threads)
    threads_used = torch.get_num_threads()
    load_at_start = load_average()
    bar = tqdm(total=len(entries) * len(devices) * len(batches), desc="bench", unit="cell", disable=not progress)
    run = _Run(batches, warmup, iters, seed, threads_used, batching, sentences,
               loader or _default_loader(threads_used), bar)
    for d in devices:
        if DEVICES[d][0] == "cuda" and not _cuda_available():
            run.note(f"device {d} skipped: no CUDA GPU on this machine (torch.cuda.is_available() is False)")
    infos = [_variant_info(e) for e in entries]
    try:
        for device in devices:
            _run_device(run, entries, infos, device)
    finally:
        bar.close()
    # variants in the order given, then devices, then batches (failures are recorded early)
    order = {e.label: k for k, e in enumerate(entries)}
    run.cells.sort(key=lambda c: (order[c.variant], devices.index(c.device), batches.index(c.batch)))
    _speedups(run.cells, baseline)
    settings = {"batches": batches, "devices": devices, "threads": threads_used, "batching": batching,
                "threads_requested": threads, "warmup": warmup, "iters": iters, "seed": seed,
                "baseline": baseline, "speaker": 0, "schedule": "interleaved",
                "random_weight_frames_per_token": RANDOM_WEIGHT_FRAMES_PER_TOKEN}
    machine = machine_info(machine_name)
    # other processes on the machine distort timings: say how busy it was
    machine["load_average_start"], machine["load_average_end"] = load_at_start, machine.pop("load_average")
    return BenchResult(machine=machine, settings=settings, variants=infos, cells=run.cells, inputs=run.inputs,
                       messages=run.messages, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       rounds=run.rounds, command=command)


def _size(synth: Any) -> int | None:
    try:
        return int(synth.size_bytes())
    except Exception:  # noqa: BLE001 - informative only
        return None


# ----------------------------------------------------------------------------- rendering
def _fmt_rtf(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if x >= 0.001 else f"{x:.2e}"


def _columns(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(variant, device) columns in run order."""
    cols: list[tuple[str, str]] = []
    for r in data["results"]:
        key = (r["variant"], r["device"])
        if key not in cols:
            cols.append(key)
    return cols


def markdown_table(data: dict[str, Any]) -> str:
    """The seed's layout: rows = batch size, columns = variant x device; cells = median RTF
    [p10–p90] and the speedup over the baseline (×)."""
    cols = _columns(data)
    rw = {v["label"] for v in data.get("variants", []) if v.get("random_weights")}
    head = ["batch"] + [f"{v}{' (random weights)' if v in rw else ''} · {d}" for v, d in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
    by = {(r["variant"], r["device"], r["batch"]): r for r in data["results"]}
    for b in data["settings"]["batches"]:
        row = [str(b)]
        for v, d in cols:
            r = by.get((v, d, b))
            if r is None:
                row.append("–")
            elif r["status"] == "failed":
                row.append("FAILED")
            elif r["status"] == "skipped":
                row.append("skipped")
            else:
                s = r["rtf"]
                cell = f"{_fmt_rtf(s['median'])} [{_fmt_rtf(s['p10'])}–{_fmt_rtf(s['p90'])}]"
                if r.get("speedup_vs_baseline") is not None and v != data["settings"]["baseline"]:
                    cell += f" ×{r['speedup_vs_baseline']:.2f}"
                row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def details_table(data: dict[str, Any]) -> str:
    """Per-cell latency, audio, tokens/s and memory."""
    lines = ["| variant | device | batch | tokens | audio s | latency median s [p10–p90] | RTF aggregate | tokens/s | peak RSS MB | GPU max MB | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in data["results"]:
        if r["status"] == "ok":
            lat = r["latency_s"]
            lines.append(
                f"| {r['variant']} | {r['device']} | {r['batch']} | {r['tokens']} | {r['audio_seconds']:.2f} | "
                f"{lat['median']:.3f} [{lat['p10']:.3f}–{lat['p90']:.3f}] | {_fmt_rtf(r['rtf_aggregate'])} | "
                f"{r['tokens_per_second']:.0f} | {r['peak_rss_mb']:.0f} | "
                f"{'–' if r['gpu_max_allocated_mb'] is None else format(r['gpu_max_allocated_mb'], '.0f')} | ok |")
        else:
            err = (r.get("error") or "").replace("|", "/").replace("\n", " ")[:160]
            lines.append(f"| {r['variant']} | {r['device']} | {r['batch']} | | | | | | | | {r['status']}: {err} |")
    return "\n".join(lines) + "\n"


def machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    v = m.get("versions", {})
    gpu = m.get("gpu")
    gpu_s = f"{gpu['name']} ({gpu['memory_gb']} GB)" if gpu else "none"
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return (f"machine `{m.get('name')}`: {m.get('cpu')}, {m.get('cores')} cores "
            f"({m.get('cores_available')} available), GPU {gpu_s}; {vers}; "
            f"threads {data['settings']['threads']}" + _load_note(m))


def _load_note(m: dict[str, Any]) -> str:
    a, b = m.get("load_average_start"), m.get("load_average_end")
    if not a or not b:
        return ""
    return f"; 1-min load average {a[0]:.1f} at start, {b[0]:.1f} at end (on {m.get('cores')} cores)"


def markdown_report(data: dict[str, Any]) -> str:
    """Markdown page for one bench JSON: settings, RTF table, details, messages."""
    s = data["settings"]
    out = [f"# vitsq bench ({data.get('created', '')})", "", machine_line(data), "",
           f"warmup {s['warmup']}, iterations {s['iters']}, seed {s['seed']}, "
           f"batching {s.get('batching', 'padded')}, inputs: "
           f"{data['inputs'].get('source', '?')}; baseline for × speedups: `{s['baseline']}`.", "",
           "## RTF (median [p10–p90] over iterations; lower is faster)", "", markdown_table(data)]
    rw = [v for v in data.get("variants", []) if v.get("random_weights")]
    if rw:
        out += ["", "Random-weight runs (speed only, not speech): " + ", ".join(
            f"`{v['label']}` (length_scale {v.get('length_scale', float('nan')):.3f} → "
            f"{v.get('frames_per_token', float('nan')):.2f} frames/token)" for v in rw), ""]
    seq = [v["label"] for v in data.get("variants", []) if str(v.get("batching", "")).startswith("items")]
    if seq:
        out += ["", "Not batched (run item by item inside a batch call, so no padding cost): "
                + ", ".join(f"`{x}`" for x in seq) + "."]
    odd = [v for v in data.get("variants", [])
           if v.get("threads") is not None and v.get("threads") != s["threads"]]
    if odd:
        out += ["", f"**Thread counts differ** from the run's {s['threads']}: " + ", ".join(
            f"`{v['label']}` {v['threads']}" for v in odd) + " — compare these speedups with care."]
    out += ["", "## Details", "", details_table(data)]
    if data.get("messages"):
        out += ["", "## Messages", ""] + [f"- {m}" for m in data["messages"]]
    return "\n".join(out) + "\n"


def plot_rtf(data: dict[str, Any] | Sequence[dict[str, Any]], path: str | Path, *, force: bool = False) -> Path:
    """PNG: median RTF vs batch size, one line per variant x device, p10–p90 as error bars.

    Written atomically; an existing ``path`` is replaced only with ``force``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    runs = [data] if isinstance(data, dict) else list(data)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    plotted = 0
    for d in runs:
        rw = {v["label"] for v in d.get("variants", []) if v.get("random_weights")}
        for v, dev in _columns(d):
            pts = [r for r in d["results"] if r["variant"] == v and r["device"] == dev and r["status"] == "ok"]
            if not pts:
                continue
            xs = [r["batch"] for r in pts]
            med = np.array([r["rtf"]["median"] for r in pts])
            lo = med - np.array([r["rtf"]["p10"] for r in pts])
            hi = np.array([r["rtf"]["p90"] for r in pts]) - med
            ax.errorbar(xs, med, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], marker="o", capsize=3,
                        label=f"{v} · {dev}" + (" (random weights)" if v in rw else ""))
            plotted += 1
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    batches = sorted({int(b) for d in runs for b in d["settings"]["batches"]})
    ax.set_xticks(batches)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("batch size")
    ax.set_ylabel("RTF (compute s / audio s), median")
    ax.set_title("RTF vs batch size (lower is faster)")
    ax.grid(True, which="both", alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no successful runs", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    try:
        with atomic_output(path, suffixes=(".png",), force=force, what="plot") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path).expanduser()


# ----------------------------------------------------------------------------- CLI
def cmd_bench(args: argparse.Namespace) -> int:
    """``vitsq bench`` without ``--ttfa`` (the CLI sends ``--ttfa`` to :mod:`vitsq.streaming.ttfa`)."""
    for opt, value in (("--phonemes", args.phonemes), ("--chunk-frames", args.chunk_frames)):
        if value is not None:
            raise InputError(f"{opt} is an option of the streaming benchmark: add --ttfa")
    check_bench_outputs(args.out, plot=not args.no_plot, force=args.force)  # before any model loads
    res = run_benchmark(
        args.model, args.variants, batches=DEFAULT_BATCHES if args.batch is None else args.batch,
        devices=args.device, threads=args.threads,
        batching=args.batching, warmup=10 if args.warmup is None else args.warmup,
        iters=100 if args.iters is None else args.iters, sentences=args.sentences, seed=args.seed,
        baseline=args.baseline, machine_name=args.machine_name, progress=not args.no_progress,
        command=invoked_command(args),
    )
    paths = res.write(args.out, plot=not args.no_plot, force=args.force)
    for m in res.messages:
        print(f"note: {m}")
    print(res.table(), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = [c for c in res.cells if c.status == "failed"]
    return 1 if failed and len(failed) == len(res.cells) else 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="RTF benchmark: batch sizes x devices x backends x variants; --ttfa: streaming",
                       description="Benchmark MODEL and VARIANTs. Each is [LABEL=]SPEC[@BACKEND], e.g. joe, "
                                   "joe@onnx, int8=out/joe-int8@torch; without @BACKEND a model runs on its own backend. "
                                   "Variants are interleaved: every timed round runs each once, in rotating order.")
    p.add_argument("model", help="baseline model: joe, vosk-ru-multi, a path, optionally @torch/@onnx/@executorch")
    p.add_argument("variants", nargs="*", help="more models to compare, same syntax")
    p.add_argument("--batch", default=None,
                   help=f"batch sizes, e.g. 1,2,4,8 (each 1..{MAX_BENCH_BATCH}; default "
                        f"{','.join(map(str, DEFAULT_BATCHES))})")
    p.add_argument("--device", default="cpu", help=f"comma-separated, from: {', '.join(DEVICES)}")
    p.add_argument("--batching", choices=BATCHING, default="padded",
                   help="padded: each batch as one padded, masked batch (default); items: every variant runs a "
                        "batch's items one at a time, as a CPU server would (no padding cost)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch, ONNX Runtime and ExecuTorch (XNNPACK)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed rounds per batch size or reply (each runs every variant; default 10, with --ttfa 2)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed rounds per batch size or reply (each runs every variant; default 100, with --ttfa 20)")
    p.add_argument("--sentences", default=None, help="sentence file (default: the evaluation split)")
    p.add_argument("--seed", type=int, default=0, help="shuffle and noise seed")
    p.add_argument("--baseline", default=None, help="label speedups are relative to (default: MODEL)")
    p.add_argument("--machine-name", default=None, help="name of this machine in the output")
    p.add_argument("--out", default="bench.json", help="JSON path; .md and .png are written beside it")
    p.add_argument("--force", action="store_true",
                   help="replace existing result files (.json/.md/.png) of an earlier run")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ttfa", action="store_true",
                   help="instead of RTF: time to first audio of streamed synthesis vs the whole call, per variant, "
                        "for replies of --phonemes phonemes, interleaved (writes the JSON and a .md table)")
    p.add_argument("--phonemes", default=None, metavar="N[,N...]",
                   help="with --ttfa: reply lengths in phonemes, built from real sentences (default 300)")
    p.add_argument("--chunk-frames", default=None, metavar="SIZES",
                   help="with --ttfa: latent frames per streamed chunk, e.g. 8 or 4,8,16 (default 8 doubling to 128)")
    p.set_defaults(func=cmd_bench)
