"""Sentence sets for calibration and evaluation, shipped as package data.

``src/vitsq/data/sentences/<lang>.txt`` hold sentences written for vitsq (one per line, ``#``
comments). Each sentence belongs to exactly one split, decided by a stable hash of its
*normalized* text (:func:`split_of`), so:

* the split of a sentence never depends on file order, Python's hash seed, or which other
  sentences exist, and two spellings of the same sentence ("Hello!" / "hello") land together;
* calibration (used to pick INT8 ranges) and evaluation (used to report quality) never overlap.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path

from vitsq.errors import InputError
from vitsq.evaluate.normalize import normalize

__all__ = [
    "LANGUAGES",
    "SPLITS",
    "CALIBRATION_PERCENT",
    "split_of",
    "all_sentences",
    "load_split",
    "read_sentence_file",
]

#: Languages with a shipped sentence set.
LANGUAGES = ("en", "ru")
#: Split names.
SPLITS = ("calibration", "evaluation")
#: Share of sentences (by hash bucket out of 100) assigned to calibration.
CALIBRATION_PERCENT = 30


def _key(sentence: str, language: str) -> str:
    return normalize(sentence, language)


def split_of(sentence: str, language: str) -> str:
    """The split (``calibration`` or ``evaluation``) a sentence belongs to, by sha256 of its normalized text."""
    digest = hashlib.sha256(f"vitsq-split-v1\n{_key(sentence, language)}".encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return "calibration" if bucket < CALIBRATION_PERCENT else "evaluation"


def _parse(text: str, source: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _check_language(language: str) -> str:
    lang = (language or "").lower().split("-")[0].split("_")[0]
    if lang not in LANGUAGES:
        raise InputError(
            f"no shipped sentence set for language {language!r}: shipped languages are {', '.join(LANGUAGES)} "
            f"(use a sentence file for other languages)"
        )
    return lang


@lru_cache(maxsize=None)
def all_sentences(language: str) -> tuple[str, ...]:
    """All shipped sentences of ``language`` in file order (duplicates by normalized text rejected)."""
    lang = _check_language(language)
    text = resources.files("vitsq").joinpath("data", "sentences", f"{lang}.txt").read_text(encoding="utf-8")
    sents = _parse(text, f"{lang}.txt")
    seen: dict[str, str] = {}
    for s in sents:
        k = _key(s, lang)
        if k in seen:
            raise InputError(f"duplicate sentence in {lang}.txt: {s!r} repeats {seen[k]!r}")
        seen[k] = s
    return tuple(sents)


def load_split(language: str, split: str = "evaluation", limit: int | None = None) -> list[str]:
    """Sentences of one split in file order; ``limit`` keeps the first N (an error if fewer exist)."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: valid splits are {', '.join(SPLITS)}")
    lang = _check_language(language)
    out = [s for s in all_sentences(lang) if split_of(s, lang) == split]
    if limit is not None:
        if limit < 1:
            raise InputError(f"number of sentences must be >= 1, got {limit}")
        if limit > len(out):
            raise InputError(f"asked for {limit} {split} sentences but the {lang} set has only {len(out)}")
        out = out[:limit]
    return out


def read_sentence_file(path: str | Path) -> list[str]:
    """Read a UTF-8 sentence file (one per line, ``#`` comments); empty files are an error."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"sentence file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"sentence file {p} is not UTF-8 text: {e}") from e
    sents = _parse(text, str(p))
    if not sents:
        raise InputError(f"sentence file {p} has no sentences (one sentence per line; '#' lines are comments)")
    return sents
