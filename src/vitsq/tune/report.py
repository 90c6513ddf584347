"""The Pareto front of a search, its plot and the Markdown report (``DIR/pareto.png``,
``DIR/report.md``).

The front is over the trials that were timed and fully evaluated: speed (× FP32, higher is
better) against ΔWER (points, lower is better; the log-mel L1 distance to FP32 when the gate
did not ask for Whisper). A trial is on the front when no other trial is at least as fast and at
least as good with one of the two strictly better.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


def quality_axis(records: Sequence[dict[str, Any]]) -> str:
    """``dwer`` when the trials measured it, else ``logmel_l1``."""
    return "dwer" if any((r.get("metrics") or {}).get("dwer") is not None for r in records) else "logmel_l1"


def _point(r: dict[str, Any], axis: str) -> tuple[float, float] | None:
    speed = (r.get("timing") or {}).get("speed")
    y = (r.get("metrics") or {}).get(axis)
    if r.get("early_stop") or speed is None or y is None:
        return None
    return float(speed), float(y)


def pareto_front(records: Sequence[dict[str, Any]], axis: str | None = None) -> list[dict[str, Any]]:
    """Non-dominated trials (max speed, min quality axis), fastest first."""
    axis = axis or quality_axis(records)
    pts = [(r, p) for r in records if (p := _point(r, axis)) is not None]
    front = [r for r, (s, y) in pts
             if not any(s2 >= s and y2 <= y and (s2 > s or y2 < y) for _, (s2, y2) in pts)]
    return sorted(front, key=lambda r: -r["timing"]["speed"])


def plot_pareto(records: Sequence[dict[str, Any]], path: Path, *, title: str = "",
                winner_key: str | None = None) -> Path:
    """Scatter speed × vs ΔWER (or log-mel L1), colour = mean speaker similarity; the front as a
    line, presets as squares, the winner as a star, trials that failed the gate hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitsq.outputs import atomic_output

    axis = quality_axis(records)
    pts = [(r, p) for r in records if (p := _point(r, axis)) is not None]
    sims = [(r.get("metrics") or {}).get("speaker_sim") for r, _ in pts]
    colored = [s for s in sims if s is not None]
    vmin, vmax = (min(colored), max(colored)) if colored else (0.0, 1.0)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-3)
    for (r, (x, y)), sim in zip(pts, sims):
        color = cmap(norm(sim)) if sim is not None else "grey"
        marker = "s" if r["candidate"].get("origin") == "preset" else "o"
        size = 60
        if r["key"] == winner_key:
            marker, size = "*", 260
        passed = r.get("status") == "ok"
        ax.scatter([x], [y], s=size, marker=marker, facecolors=color if passed else "none", edgecolors=color,
                   linewidths=1.5, zorder=3)
    front = pareto_front(records, axis)
    if front:
        ax.plot([r["timing"]["speed"] for r in front], [r["metrics"][axis] for r in front], "--", color="black",
                lw=1, zorder=2, label="Pareto front")
        ax.legend(loc="best")
    if colored:
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="speaker similarity to FP32")
    ax.set_xlabel("speed vs FP32 (×, same process, interleaved)")
    ax.set_ylabel("ΔWER vs FP32 (points)" if axis == "dwer" else "log-mel L1 to FP32 (nats)")
    ax.set_title(title or "vitsq tune", fontsize=10)
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, "filled: passed the gate; hollow: failed it; square: preset; star: winner", fontsize=7)
    with atomic_output(path, kind="file", suffixes=(".png",), force=True, what="Pareto plot") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def gate_line(record: dict[str, Any]) -> str:
    """``speaker_sim>=0.97: 0.963 (fail), ...`` for a trial's gate verdict."""
    checks = (record.get("gate") or {}).get("checks") or []
    return ", ".join(f"{c['check']}: {_f(c['value'], '{:.4g}')} ({'pass' if c['passed'] else 'fail'})"
                     for c in checks) + (" on the first sentences" if record.get("early_stop") else "")


def _f(x: Any, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def trials_table(records: Sequence[dict[str, Any]], winner_key: str | None = None) -> str:
    """Markdown table of every trial, in proposal order."""
    lines = ["| # | candidate | origin | status | speed × | MB | ΔWER pt | spk sim | log-mel L1 | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        m, t = r.get("metrics") or {}, r.get("timing") or {}
        size = (r.get("size") or {}).get("bytes")
        status = r.get("status", "?") + (" (early)" if r.get("early_stop") else "")
        if r.get("status") == "failed":
            status += ": " + str(r.get("error", ""))[:60]
        star = " **winner**" if r["key"] == winner_key else ""
        lines.append(f"| {r['index'] + 1} | {r['candidate']['label']}{star} | {r['candidate'].get('origin', '')} | "
                     f"{status} | {_f(t.get('speed'), '{:.2f}')} | {_f(size / 1e6 if size else None, '{:.1f}')} | "
                     f"{_f(m.get('dwer'), '{:+.2f}')} | {_f(m.get('speaker_sim'))} | {_f(m.get('logmel_l1'))} | "
                     f"{_f(r.get('seconds'), '{:.0f}')} |")
    return "\n".join(lines)


def markdown_report(summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> str:
    """The whole report: settings, winner, held-out result, trials, pruned candidates."""
    w = summary.get("winner") or {}
    counts = ", ".join(f"{n} {status}" for status, n in summary["counts"].items())
    ex = summary["executor"]
    where = (f"{ex.get('workers')} local worker(s) on {ex.get('cores')} cores" if ex.get("executor") == "local"
             else f"Ray {ex.get('ray')} at {ex.get('address')} ({ex.get('nodes')} node(s), {ex.get('cpus')} CPUs)")
    out = [f"# vitsq tune: {summary['model'].get('name')}", "",
           f"Objective **{summary['objective']}**, gate `{summary['gate']}`, {summary['trials']} trials "
           f"({counts}) out of {summary['candidates']} candidates after pruning ({len(summary['pruned'])} pruned); "
           f"{where}. Speed is RTF(FP32 PyTorch) / RTF(candidate), timed interleaved in each trial's process; "
           "quality at zero noise on the tuning split.", ""]
    if not w:
        out += ["No trial was measured.", ""]
    elif summary["passed"]:
        out += [f"**Winner**: trial {w['index'] + 1} `{w['label']}` (speed {_f((w.get('timing') or {}).get('speed'), '{:.2f}')}×, "
                f"{_f(w['size']['bytes'] / 1e6, '{:.1f}')} MB); rebuilt from `best/` "
                + ("identically." if w.get("reproduced") else "**with different bytes**."), ""]
    else:
        out += [f"**No candidate passed the gate.** Closest: trial {w['index'] + 1} `{w['label']}` "
                f"({gate_line(w)}).", ""]
    final = summary.get("final")
    if final:
        out += [f"## Held-out evaluation split ({final['sentences']} sentences, zero noise)", "",
                "| variant | speed × | ΔWER pt | WER % | spk sim (mean/min) | log-mel L1 | MB | gate |",
                "|---|---|---|---|---|---|---|---|"]
        for name, v in final["variants"].items():
            m, t = v["metrics"], v.get("timing") or {}
            out.append(f"| {name} | {_f(t.get('speed'), '{:.2f}')} | {_f(m.get('dwer'), '{:+.2f}')} | "
                       f"{_f(m.get('wer'), '{:.2f}')} | {_f(m.get('speaker_sim'))}/{_f(m.get('speaker_sim_min'))} | "
                       f"{_f(m.get('logmel_l1'))} | {v['bytes'] / 1e6:.1f} | "
                       f"{'pass' if v['gate']['passed'] else 'fail'} |")
        out.append("")
    out += ["## Trials", "", trials_table(records, w.get("key") if summary["passed"] else None), ""]
    if summary["pruned"]:
        reasons: dict[str, int] = {}
        for p in summary["pruned"]:
            reasons[p["reason"]] = reasons.get(p["reason"], 0) + 1
        out += ["## Pruned before running", ""] + [f"- {n} × {reason}" for reason, n in reasons.items()] + [""]
    return "\n".join(out)


def write_report(directory: Path, summary: dict[str, Any], records: Sequence[dict[str, Any]],
                 plot: bool = True) -> dict[str, Path]:
    """``report.md`` and (when matplotlib is installed) ``pareto.png`` in ``directory``."""
    from vitsq.outputs import write_text

    paths = {"report": write_text(Path(directory) / "report.md", markdown_report(summary, records),
                                  suffixes=(".md",), force=True, what="tune report")}
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log.warning("matplotlib is not installed: no Pareto plot (pip install matplotlib)")
            return paths
        title = f"{summary['model'].get('name')}: gate {summary['gate']}, objective {summary['objective']}"
        paths["plot"] = plot_pareto(records, Path(directory) / "pareto.png", title=title,
                                    winner_key=(summary.get("winner") or {}).get("key"))
    return paths
