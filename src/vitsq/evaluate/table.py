"""Markdown table of an :class:`~vitsq.evaluate.run.EvalResult`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vitsq.evaluate.run import EvalResult

COLUMNS = (
    "variant", "size", "WER", "CER", "ΔWER [95% CI]", "spk sim mean / worst",
    "log-mel L1", "SNR dB", "MCD dB", "failed",
)


def _num(x: float | None, fmt: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return format(x, fmt)


def _size(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 1e6:.1f} MB"


def markdown_table(result: "EvalResult") -> str:
    """One row per model (reference first): size, WER, CER, ΔWER with CI, similarity, distances, failures.

    A footer line states the sentence count, language, ASR model and what a failure means.
    """
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for v in result.rows:
        er = v.error_rate
        if v.delta_wer is not None:
            dw = v.delta_wer
            delta = f"{dw.delta:+.3f} [{dw.ci_low:+.3f}, {dw.ci_high:+.3f}]"
        else:
            delta = "(reference)"
        sim = (
            f"{_num(v.similarity.mean, '.3f')} / {_num(v.similarity.worst, '.3f')}" if v.similarity else "–"
        )
        d = v.distance
        lines.append(
            "| " + " | ".join([
                v.label.replace("|", "\\|"),
                _size(v.size_bytes),
                _num(er.wer, ".3f"),
                _num(er.cer, ".3f"),
                delta,
                sim,
                _num(d.log_mel_l1 if d else None, ".3f"),
                _num(d.snr_db if d else None, ".1f"),
                _num(d.mcd_db if d else None, ".2f"),
                f"{v.num_failed}/{len(er.sentences)}",
            ]) + " |"
        )
    lines.append("")
    lines.append(
        f"{len(result.sentences)} {result.language} sentences, corpus-level WER/CER with "
        f"{result.asr.get('model', 'ASR')} ({result.asr.get('compute_type', '')}); ΔWER vs the reference "
        f"with a paired bootstrap CI; failed sentences count as empty transcripts."
    )
    return "\n".join(lines)
