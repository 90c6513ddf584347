"""`vitsq report`: Markdown + self-contained HTML from ``vitsq eval`` and ``vitsq bench`` JSON.

Inputs are recognized by content: bench JSON (``"schema": "vitsq-bench/1"``), eval JSON
(``"results"`` + ``"asr"``), a sensitivity report (``"rows"`` + ``"all_int8"``, also found inside
an artifact's ``vitsq.json``). A folder is searched for ``*.json`` files (and ``*/vitsq.json``).

The report holds the seed's two tables — one row per model variant (size, RTF, WER/CER, ΔWER with
its CI) and RTF by batch × variant × device — plots (RTF vs batch size, WER/CER with bootstrap
95 % CIs, size bars, layer-sensitivity ranking when present), and the machine and versions.
``report.md`` references the PNGs beside it; ``report.html`` embeds them (base64), so it can be
mailed or opened from anywhere.

The output folder is written whole to a temporary sibling and moved into place
(:mod:`vitsq.outputs`); its ``vitsq.json`` (kind ``report``) marks it as vitsq's, so ``--force``
may replace it, while any other existing folder is left alone.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vitsq.errors import InputError

log = logging.getLogger(__name__)

BOOTSTRAP = 2000


# ----------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Results grouped by kind, each as (source name, parsed JSON)."""

    bench: list[tuple[str, dict]] = field(default_factory=list)
    eval: list[tuple[str, dict]] = field(default_factory=list)
    sensitivity: list[tuple[str, dict]] = field(default_factory=list)


def _find_sensitivity(obj: Any) -> dict | None:
    if isinstance(obj, dict):
        if "rows" in obj and "all_int8" in obj:
            return obj
        for v in obj.values():
            found = _find_sensitivity(v)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _find_sensitivity(v)
            if found is not None:
                return found
    return None


def classify(data: Any) -> str | None:
    """``"bench"``, ``"eval"``, ``"sensitivity"`` or None for a parsed JSON document."""
    if not isinstance(data, dict):
        return None
    if str(data.get("schema", "")).startswith("vitsq-bench"):
        return "bench"
    if "results" in data and "asr" in data:
        return "eval"
    if _find_sensitivity(data) is not None:
        return "sensitivity"
    return None


def load_inputs(sources: Sequence[str | Path | dict]) -> Inputs:
    """Read and classify result files (or folders, or already-parsed dicts)."""
    if not sources:
        raise InputError("no results given: pass bench/eval JSON files (or folders holding them)")
    out = Inputs()
    files: list[tuple[str, Any]] = []
    for s in sources:
        if isinstance(s, dict):
            files.append(("(dict)", s))
            continue
        p = Path(s)
        if p.is_dir():
            found = sorted(set(p.glob("*.json")) | set(p.glob("*/vitsq.json")))
            if not found:
                raise InputError(f"{p} is a folder without .json result files")
            for f in found:
                files.append((str(f), f))
        elif p.is_file():
            files.append((str(p), p))
        else:
            raise InputError(f"result file {p} does not exist")
    for name, item in files:
        data = _read_json(item) if isinstance(item, Path) else item
        kind = classify(data)
        if kind is not None:
            _check_shape(kind, data, name)
        if kind == "bench":
            out.bench.append((name, data))
        elif kind == "eval":
            out.eval.append((name, data))
        elif kind == "sensitivity":
            out.sensitivity.append((name, _find_sensitivity(data)))
        else:
            log.info("skipping %s: not a bench, eval or sensitivity result", name)
            if len(sources) == 1 and not Path(str(sources[0])).is_dir():
                raise InputError(f"{name} is neither a vitsq bench JSON (schema vitsq-bench/1), an eval JSON "
                                 "(results + asr) nor a sensitivity report")
    if not (out.bench or out.eval or out.sensitivity):
        raise InputError("none of the inputs is a vitsq bench, eval or sensitivity result")
    return out


def _read_json(path: Path) -> Any:
    """Parse one result file; a malformed one is an InputError naming the file and the JSON error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not a JSON file (malformed JSON: {e.msg} at line {e.lineno} "
                         f"column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path} is not a JSON file (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None


#: What the report reads from each kind of result: key -> expected type.
_SHAPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "bench": {"settings": dict, "results": list, "variants": list, "machine": dict, "inputs": dict},
    "eval": {"results": list, "asr": dict},
}
_ROW_SHAPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    "bench": {"variant": str, "device": str, "batch": int, "status": str},
    "eval": {"sentences": list},
}


def _check_shape(kind: str, data: dict, name: str) -> None:
    """InputError naming the file and the first missing or mistyped field the report needs."""
    def need(obj: dict, key: str, typ: type | tuple[type, ...], where: str) -> None:
        if key not in obj:
            raise InputError(f"{name} looks like a vitsq {kind} result but has no {where}{key!r}: "
                             "it is truncated or was not written by vitsq")
        if not isinstance(obj[key], typ):
            raise InputError(f"{name}: {where}{key!r} is a {type(obj[key]).__name__}, not the expected "
                             f"{getattr(typ, '__name__', 'value')}: the file is malformed")

    for key, typ in _SHAPES.get(kind, {}).items():
        need(data, key, typ, "")
    for i, row in enumerate(data.get("results", []) if kind in _ROW_SHAPES else []):
        if not isinstance(row, dict):
            raise InputError(f"{name}: results[{i}] is a {type(row).__name__}, not an object: the file is malformed")
        for key, typ in _ROW_SHAPES[kind].items():
            need(row, key, typ, f"results[{i}].")
    if kind == "bench":
        need(data["settings"], "batches", list, "settings.")
        need(data["settings"], "baseline", (str, type(None)), "settings.")


# ----------------------------------------------------------------------------- statistics
def bootstrap_ci(edits: Sequence[float], totals: Sequence[float], n_boot: int = BOOTSTRAP, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float, float]:
    """Corpus ratio sum(edits)/sum(totals) and its percentile bootstrap CI over sentences."""
    e = np.asarray(edits, dtype=np.float64)
    t = np.asarray(totals, dtype=np.float64)
    point = float(e.sum() / t.sum()) if t.sum() > 0 else float("nan")
    if len(e) < 2:
        return point, point, point
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), size=(n_boot, len(e)))
    te = t[idx].sum(axis=1)
    ratios = np.where(te > 0, e[idx].sum(axis=1) / np.maximum(te, 1e-12), np.nan)
    a = (1 - confidence) / 2
    lo, hi = np.nanpercentile(ratios, [100 * a, 100 * (1 - a)])
    return point, float(lo), float(hi)


def error_rate_cis(row: dict) -> dict[str, tuple[float, float, float]]:
    """WER (exact, from per-sentence word edits) and CER (per-sentence CER weighted by the
    normalized reference length) with bootstrap 95 % CIs for one eval result row."""
    sents = row.get("sentences") or []
    out: dict[str, tuple[float, float, float]] = {}
    if not sents:
        return out
    we = [s["word_edits"]["substitutions"] + s["word_edits"]["deletions"] + s["word_edits"]["insertions"]
          for s in sents]
    wt = [s["word_edits"]["reference_words"] for s in sents]
    _, lo, hi = bootstrap_ci(we, wt)
    out["wer"] = (row.get("wer"), lo, hi)
    n = [max(len(s.get("reference_normalized") or ""), 1) for s in sents]
    ce = [(s.get("cer") or 0.0) * k for s, k in zip(sents, n)]
    _, lo, hi = bootstrap_ci(ce, n)
    out["cer"] = (row.get("cer"), lo, hi)
    return out


# ----------------------------------------------------------------------------- matching
def _key(spec: str | None, backend: str | None) -> tuple[str, str]:
    from vitsq.variants import AUTO, parse_variant

    if not spec:
        return ("", backend or "")
    try:
        v = parse_variant(spec, legacy_prefix=True)
        s, b = v.spec, (backend or "torch") if v.backend == AUTO else v.backend
    except InputError:
        s, b = spec, backend or "torch"
    s = os.path.normpath(s) if ("/" in s or os.sep in s) else s
    return (s, b)


def _bench_key(v: dict) -> tuple[str, str]:
    return _key(v.get("spec") or v.get("label"), v.get("backend"))


def _eval_key(r: dict) -> tuple[str, str]:
    label = r.get("variant") or r.get("name")
    s, b = _key(label, r.get("backend"))
    return (s, r.get("backend") or b)


def _is_random(weights: Any) -> bool:
    """A random-weight model: weights recorded and neither "trained" nor "unknown"."""
    return bool(weights) and weights not in ("trained", "unknown")


def _fmt(x: Any, spec: str, none: str = "–") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or isinstance(x, str):
        return none
    return format(x, spec)


def _mb(n: Any) -> str:
    return f"{n / 1e6:.1f} MB" if isinstance(n, (int, float)) and n else "–"


def _esc(s: Any) -> str:
    return str(s).replace("|", "\\|")


# ----------------------------------------------------------------------------- tables
def variant_rows(inp: Inputs) -> list[dict[str, Any]]:
    """One row per model variant, merging eval rows and bench rows by (spec, backend)."""
    rows: list[dict[str, Any]] = []
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for _, ev in inp.eval:
        for r in ev["results"]:
            k = _eval_key(r)
            row = index.get(k)
            if row is None:
                row = {"label": r.get("variant") or r.get("name"), "backend": r.get("backend"),
                       "size_bytes": r.get("size_bytes"),
                       "weights": (r.get("description") or {}).get("weights") or "unknown"}
                index[k] = row
                rows.append(row)
            row.update({"reference": r.get("reference", False), "wer": r.get("wer"), "cer": r.get("cer"),
                        "delta_wer": r.get("delta_wer"), "failed": r.get("failed"),
                        "n_sentences": len(r.get("sentences") or []),
                        "similarity": (r.get("speaker_similarity") or {}).get("mean"),
                        "log_mel_l1": (r.get("distance_to_reference") or {}).get("log_mel_l1"),
                        "mcd_db": (r.get("distance_to_reference") or {}).get("mcd_db"),
                        "cis": error_rate_cis(r)})
    for _, b in inp.bench:
        base = b["settings"].get("baseline")
        for v in b.get("variants", []):
            k = _bench_key(v)
            row = index.get(k)
            if row is None:  # eval names a variant by its label (`vitsq eval joe int8=DIR`), bench by DIR
                k2 = _key(v.get("label"), v.get("backend"))
                row = index.get(k2) if k2 in index and "rtf" not in index[k2] else None
            if row is None:
                row = {"label": v["label"], "backend": v.get("backend"), "size_bytes": v.get("size_bytes"),
                       "weights": v.get("weights") or "unknown"}
                index[k] = row
                rows.append(row)
            if row.get("size_bytes") is None:
                row["size_bytes"] = v.get("size_bytes")
            if v.get("random_weights"):
                row["weights"] = v.get("weights") or "untrained (random weights)"
            cpu = [c for c in b["results"] if c["variant"] == v["label"] and c["device"] == "cpu" and c["status"] == "ok"]
            if cpu and "rtf" not in row:
                c = min(cpu, key=lambda c: c["batch"])
                row.update({"rtf": c["rtf"]["median"], "rtf_p10": c["rtf"]["p10"], "rtf_p90": c["rtf"]["p90"],
                            "rtf_batch": c["batch"], "speedup": c.get("speedup_vs_baseline"),
                            "baseline": base, "bench_label": v["label"]})
            elif not cpu and "rtf" not in row:
                failed = [c for c in b["results"] if c["variant"] == v["label"] and c["status"] == "failed"]
                if failed:
                    row["rtf_error"] = failed[0].get("error")
    ref = next((r for r in rows if r.get("reference")), rows[0] if rows else None)
    for r in rows:
        if ref is not None and ref.get("size_bytes") and r.get("size_bytes"):
            r["size_ratio"] = r["size_bytes"] / ref["size_bytes"]
    return rows


def variants_table(rows: list[dict[str, Any]]) -> str:
    """The seed's first table: size / RTF / WER per variant."""
    head = ["variant", "backend", "weights", "size", "size ×", "RTF (CPU)", "speedup", "WER [95% CI]",
            "CER [95% CI]", "ΔWER [95% CI]", "speaker sim.", "log-mel L1", "MCD dB", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    for r in rows:
        cis = r.get("cis") or {}

        def rate(name: str) -> str:
            if r.get(name) is None:
                return "–"
            if name in cis:
                p, lo, hi = cis[name]
                return f"{r[name]:.3f} [{lo:.3f}, {hi:.3f}]"
            return f"{r[name]:.3f}"

        dw = r.get("delta_wer")
        delta = "(reference)" if r.get("reference") else (
            f"{dw['delta']:+.3f} [{dw['ci_low']:+.3f}, {dw['ci_high']:+.3f}]" if dw else "–")
        if "rtf" in r:
            rtf = f"{r['rtf']:.4f} (b={r['rtf_batch']})"
        elif r.get("rtf_error"):
            rtf = "FAILED"
        else:
            rtf = "–"
        weights = r.get("weights") or "unknown"  # missing: unknown, never assumed trained
        weights = "**random weights**" if _is_random(weights) else weights
        lines.append("| " + " | ".join([
            _esc(r["label"]), _esc(r.get("backend") or "–"), weights, _mb(r.get("size_bytes")),
            _fmt(r.get("size_ratio"), ".2f"), rtf,
            (f"×{r['speedup']:.2f}" if r.get("speedup") is not None else "–"),
            rate("wer"), rate("cer"), delta, _fmt(r.get("similarity"), ".3f"),
            _fmt(r.get("log_mel_l1"), ".3f"), _fmt(r.get("mcd_db"), ".2f"),
            (f"{r['failed']}/{r['n_sentences']}" if r.get("failed") is not None else "–"),
        ]) + " |")
    return "\n".join(lines) + "\n"


def sensitivity_table(sens: dict, top: int = 15) -> str:
    lines = ["| rank | only this INT8 | layers | params | log-mel L1 | SNR dB | MCD dB |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(sens["rows"][:top], 1):
        lines.append(f"| {i} | {_esc(r['name'])} | {r.get('layers', '')} | {r.get('params', 0):,} | "
                     f"{_fmt(r.get('log_mel_l1'), '.4f')} | {_fmt(r.get('snr_db'), '.2f')} | {_fmt(r.get('mcd_db'), '.2f')} |")
    a = sens.get("all_int8") or {}
    lines.append(f"| | (all INT8) | | | {_fmt(a.get('log_mel_l1'), '.4f')} | {_fmt(a.get('snr_db'), '.2f')} | "
                 f"{_fmt(a.get('mcd_db'), '.2f')} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots
def ttfa_table(data: dict[str, Any]) -> str:
    """The ``vitsq bench --ttfa`` table: one row per reply length and variant with the median
    [p95] time to first audio of the streamed run, its total, the whole call's latency and the
    ratios of the same run."""
    base = data.get("settings", {}).get("baseline")
    lines = ["| phonemes | variant | streams by | audio s | TTFA ms p50 [p95] | streamed total s | whole call s "
             "| TTFA ÷ own whole | TTFA ÷ baseline whole | work streamed ÷ whole | chunks "
             "| max error ÷ peak (int16) |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in data.get("results", []):
        head = f"| {r['phonemes']} | {_esc(r['variant'])} | {r.get('streaming', '–')} |"
        if r.get("status") != "ok":
            err = _esc(str(r.get("error") or "").replace("\n", " ")[:160])
            lines.append(f"{head} FAILED: {err} | | | | | | | | |")
            continue
        t, total, whole = r["ttfa_s"], r["stream_total_s"], r["whole_latency_s"]
        ex = r.get("exactness")
        if not ex:
            exact = "– (unseeded noise)"
        elif not ex.get("same_length"):
            exact = f"lengths differ ({ex['streamed_samples']} vs {ex['whole_samples']})"
        else:
            exact = (f"{ex['max_abs_diff_over_peak']:.1e} "
                     f"({ex['int16_differing_samples']} samples ±{ex['int16_max_diff']})")
        vs_base = "–" if r["variant"] == base else _fmt(r.get("ttfa_over_baseline"), ".3f")
        lines.append(f"{head} {r['audio_seconds']:.2f} | {t['p50'] * 1000:.1f} [{t['p95'] * 1000:.1f}] | "
                     f"{total['p50']:.3f} | {whole['p50']:.3f} | {r['ttfa_over_latency']:.3f} | {vs_base} | "
                     f"{r['work_ratio']:.3f} | {r['chunks']} | {exact} |")
    return "\n".join(lines) + "\n"


def ttfa_report(data: dict[str, Any]) -> str:
    """Markdown page for one ``vitsq bench --ttfa`` JSON: settings, the table, inputs, messages."""
    from vitsq.bench import machine_line

    s = data["settings"]
    sched = s.get("schedule") or {}
    chunks = (",".join(map(str, sched["sizes"])) + " frames" if sched.get("sizes") else
              f"{sched.get('first')} frames, ×{sched.get('growth')} up to {sched.get('largest')}")
    out = [f"# vitsq bench --ttfa ({data.get('created', '')})", "", machine_line(data), "",
           f"warmup {s['warmup']}, timed rounds {s['iters']} (each runs every variant streamed and whole, "
           f"in rotating order), seed {s['seed']}, chunks {chunks}; baseline for TTFA ÷ baseline whole: "
           f"`{s['baseline']}`.", ""]
    if data.get("command"):
        out += [f"Command: `{data['command']}`", ""]
    out += ["## Time to first audio (streamed) vs the whole call", "", ttfa_table(data), "",
            "TTFA: from the call with the reply's ids until the first chunk; whole call: `synthesize_ids` on the "
            "same ids. Variants that stream by sentences return a one-sentence reply in one chunk, so their TTFA "
            "is their whole latency. Work streamed ÷ whole: median streamed total over median whole latency."]
    for rep in data.get("inputs", {}).get("replies", []):
        out += ["", f"Reply of {rep['phonemes']} phonemes ({rep['ids']} ids) from: "
                + " ".join(f"“{_esc(t)}”" for t in rep.get("texts", []))]
    rw = [v["label"] for v in data.get("variants", []) if v.get("random_weights")]
    if rw:
        out += ["", "Random-weight runs (speed only, not speech): " + ", ".join(f"`{x}`" for x in rw)]
    if data.get("messages"):
        out += ["", "## Messages", ""] + [f"- {m}" for m in data["messages"]]
    return "\n".join(out) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_error_rates(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """WER and CER per variant with bootstrap 95 % CIs, plus ΔWER vs the reference with its CI."""
    rows = [r for r in rows if r.get("wer") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(rows))
    for off, name, color in ((-0.18, "wer", "#2f6fed"), (0.18, "cer", "#e67e22")):
        vals = np.array([r[name] for r in rows], dtype=float)
        cis = [(r.get("cis") or {}).get(name) for r in rows]
        lo = np.array([v - c[1] if c else 0 for v, c in zip(vals, cis)])
        hi = np.array([c[2] - v if c else 0 for v, c in zip(vals, cis)])
        ax1.bar(x + off, vals, 0.36, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], capsize=4, label=name.upper(),
                color=color)
    ax1.set_xticks(x, [str(r["label"]) for r in rows], rotation=15, ha="right", fontsize=8)
    ax1.set_ylabel("error rate (corpus level)")
    ax1.set_title("WER / CER with bootstrap 95% CI")
    ax1.legend()
    ax1.grid(True, axis="y", alpha=0.3)
    dv = [r for r in rows if r.get("delta_wer")]
    if dv:
        xs = np.arange(len(dv))
        d = np.array([r["delta_wer"]["delta"] for r in dv])
        lo = d - np.array([r["delta_wer"]["ci_low"] for r in dv])
        hi = np.array([r["delta_wer"]["ci_high"] for r in dv]) - d
        ax2.errorbar(xs, d, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o", capsize=5, color="#8e44ad")
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_xticks(xs, [str(r["label"]) for r in dv], rotation=15, ha="right", fontsize=8)
        ax2.set_xlim(-0.7, len(dv) - 0.3)
    else:
        ax2.text(0.5, 0.5, "no variants vs reference", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_title("ΔWER vs reference (paired bootstrap 95% CI)")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sizes(rows: list[dict[str, Any]], path: Path) -> Path | None:
    rows = [r for r in rows if r.get("size_bytes")]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.4), dpi=110)
    y = np.arange(len(rows))
    mbs = [r["size_bytes"] / 1e6 for r in rows]
    ax.barh(y, mbs, color="#16a085")
    for yi, v in zip(y, mbs):
        ax.text(v, yi, f" {v:.1f} MB", va="center", fontsize=8)
    ax.set_yticks(y, [str(r["label"]) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("artifact size (MB)")
    ax.set_title("Model size per variant")
    ax.set_xlim(0, max(mbs) * 1.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sensitivity(sens: dict, path: Path, top: int = 15) -> Path:
    plt = _plt()
    rows = sens["rows"][:top]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.5), dpi=110)
    y = np.arange(len(rows))
    vals = [r.get("log_mel_l1") or 0.0 for r in rows]
    ax.barh(y, vals, color="#c0392b")
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    a = (sens.get("all_int8") or {}).get("log_mel_l1")
    if a is not None:
        ax.axvline(a, color="k", ls="--", lw=0.8, label=f"all INT8: {a:.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("log-mel L1 to FP32 with only this part INT8 (nats)")
    ax.set_title(f"Layer sensitivity ranking ({sens.get('granularity', '')})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- HTML
_IMG = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)$")


def _inline(s: str) -> str:
    s = html.escape(s, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', s)
    return s


def markdown_to_html(md: str, base: Path, title: str) -> str:
    """The small Markdown subset this module writes -> one HTML page with images embedded."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    while i < len(lines):
        ln = lines[i].rstrip()
        if not ln:
            flush()
            i += 1
            continue
        m = re.match(r"^(#{1,4}) (.*)$", ln)
        if m:
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
            i += 1
            continue
        m = _IMG.match(ln)
        if m:
            flush()
            p = base / m.group(2)
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(m.group(1))}</figcaption></figure>")
            i += 1
            continue
        if ln.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1

            def cells(r: str) -> list[str]:
                parts = re.split(r"(?<!\\)\|", r.strip()[1:-1])
                return [c.strip().replace("\\|", "|") for c in parts]

            head = cells(rows[0])
            body = [cells(r) for r in rows[2:]]
            t = ["<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"]
            for r in body:
                t.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>")
            t.append("</tbody></table>")
            out.append("".join(t))
            continue
        if ln.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        para.append(ln)
        i += 1
    flush()
    style = ("body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#1d2330}"
             "table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;font-variant-numeric:tabular-nums}"
             "th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:right}th{background:#f3f5f8}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:12px 0}"
             "figcaption{color:#667085;font-size:12px}code{background:#f3f5f8;padding:1px 4px;border-radius:3px}")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


# ----------------------------------------------------------------------------- main
def build_report(sources: Sequence[str | Path | dict], out_dir: str | Path, title: str = "vitsq report",
                 *, force: bool = False) -> dict[str, Path]:
    """Write the report folder ``out_dir`` (``report.md``, ``report.html``, the PNG plots and a
    ``vitsq.json`` of kind ``report``) atomically; returns the paths of its files.

    An existing ``out_dir`` is replaced only with ``force``, and only if it is a vitsq artifact
    (an earlier report); checked before the inputs are read.
    """
    from vitsq.outputs import MANIFEST, atomic_output, check_output

    check_output(out_dir, kind="dir", force=force, what="report folder")
    inp = load_inputs(sources)
    with atomic_output(out_dir, kind="dir", force=force, what="report folder") as tmp:
        names = _write_report(inp, tmp, title)
        manifest = {"kind": "report", "title": title, "files": sorted(names.values()),
                    "sources": [Path(n).name for n, _ in inp.eval + inp.bench + inp.sensitivity]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    out = Path(out_dir).expanduser()
    return {key: out / name for key, name in names.items()}


def _write_report(inp: Inputs, out: Path, title: str) -> dict[str, str]:
    """Write the report's files into the (new, empty) folder ``out``; returns key -> file name."""
    from vitsq.bench import machine_line, markdown_table, plot_rtf

    paths: dict[str, Path] = {}
    rows = variant_rows(inp)
    md: list[str] = [f"# {title}", ""]
    srcs = [n for n, _ in inp.eval + inp.bench + inp.sensitivity]
    md += ["Sources: " + ", ".join(f"`{Path(s).name}`" for s in srcs), ""]
    if any(_is_random(r.get("weights")) for r in rows):
        md += ["**Random-weight variants measure speed and size only; their WER is not a quality number.**", ""]

    md += ["## Model variants", "", variants_table(rows)]
    notes = []
    if inp.eval:
        ev = inp.eval[0][1]
        notes.append(f"WER/CER: {ev.get('num_sentences')} held-out {ev.get('language')} sentences, "
                     f"{(ev.get('asr') or {}).get('model', 'ASR')}, corpus level; CIs by sentence bootstrap "
                     f"({BOOTSTRAP} resamples; CER CI weights sentences by normalized length); ΔWER by paired bootstrap; speaker similarity, log-mel L1 and MCD compare each clip with the reference's clip.")
    if inp.bench:
        b = inp.bench[0][1]
        notes.append(f"RTF: median over {b['settings']['iters']} calls at the smallest batch on CPU "
                     f"({b['settings']['threads']} threads); speedup vs `{b['settings']['baseline']}` in the same run.")
    md += [" ".join(notes), ""] if notes else []
    p = plot_sizes(rows, out / "size.png")
    if p:
        paths["size_png"] = p
        md += ["![Model size per variant](size.png)", ""]
    p = plot_error_rates(rows, out / "wer_cer.png")
    if p:
        paths["wer_png"] = p
        md += ["![WER and CER with 95% confidence intervals](wer_cer.png)", ""]

    if inp.bench:
        md += ["## RTF by batch size × variant × device", "",
               "Median RTF [p10–p90] over iterations (compute seconds / seconds of audio); × = speedup over the "
               "baseline in the same run.", ""]
        for name, b in inp.bench:
            if len(inp.bench) > 1:
                md += [f"### {Path(name).name}", ""]
            md += [machine_line(b), "", markdown_table(b)]
            if b.get("messages"):
                md += [f"- {m}" for m in b["messages"]] + [""]
        paths["rtf_png"] = plot_rtf([b for _, b in inp.bench], out / "rtf_vs_batch.png")
        md += ["![RTF vs batch size](rtf_vs_batch.png)", ""]

    for k, (name, sens) in enumerate(inp.sensitivity):
        png = f"sensitivity{'' if k == 0 else k}.png"
        md += ["## Layer sensitivity ranking", "",
               f"Each row quantizes only that {sens.get('granularity', 'group')} to INT8 ({sens.get('engine', '')}) "
               f"and measures the distance of the audio to FP32; most sensitive first. Source `{Path(name).name}`.", "",
               sensitivity_table(sens)]
        paths[f"sensitivity_png{k or ''}"] = plot_sensitivity(sens, out / png)
        md += [f"![Layer sensitivity ranking]({png})", ""]

    md += ["## Machine and versions", ""]
    for name, b in inp.bench:
        m = b["machine"]
        md += [f"- bench `{Path(name).name}`: {m.get('cpu')}, {m.get('cores')} cores, GPU "
               f"{(m.get('gpu') or {}).get('name', 'none')}, {m.get('platform')}; "
               + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)]
    for name, ev in inp.eval:
        v = ev.get("versions") or {}
        md += [f"- eval `{Path(name).name}`: " + ", ".join(f"{k} {x}" for k, x in v.items() if x)]
    md.append("")

    text = "\n".join(md)
    paths["md"] = out / "report.md"
    paths["md"].write_text(text, encoding="utf-8")
    paths["html"] = out / "report.html"
    paths["html"].write_text(markdown_to_html(text, out, title), encoding="utf-8")
    return {key: p.name for key, p in paths.items()}


def cmd_report(args: argparse.Namespace) -> int:
    paths = build_report(args.results, args.out, title=args.title, force=args.force)
    print(f"wrote {paths['md']} and {paths['html']} (self-contained)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="Markdown + self-contained HTML report from eval and bench JSON")
    p.add_argument("results", nargs="+", help="bench/eval JSON files, artifact vitsq.json, or folders holding them")
    p.add_argument("-o", "--out", default="report", help="output folder (report.md, report.html, PNGs)")
    p.add_argument("--title", default="vitsq report")
    p.add_argument("--force", action="store_true", help="replace the folder of an earlier report")
    p.set_defaults(func=cmd_report)
