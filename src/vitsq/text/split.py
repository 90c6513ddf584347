"""Split an over-long utterance into pieces of at most ``cap`` model ids.

Both front-ends phonemize first and split the symbol list, so the cost of a piece is exact:
``overhead`` ids (BOS, EOS, ...) plus each symbol's own cost (its ids and, with blanks, one
blank). Pieces prefer the strongest boundary available: sentence ends, then clause
punctuation, then spaces; a single "word" longer than the cap is cut where it reaches the cap.
Every symbol ends up in exactly one piece (spaces at a cut are dropped), so nothing is lost.
"""

from __future__ import annotations

from typing import Callable, Sequence

SENTENCE_ENDS = frozenset(".?!")
CLAUSE_ENDS = frozenset(",;:")
SPACE = " "


def split_to_fit(
    symbols: Sequence[str],
    cost: Callable[[str], int],
    overhead: int,
    cap: int,
    levels: Sequence[frozenset[str]] = (SENTENCE_ENDS, CLAUSE_ENDS, frozenset(SPACE)),
) -> list[list[str]]:
    """Pieces of ``symbols`` whose ``overhead + sum(cost(s))`` is at most ``cap`` each."""
    if overhead + max((cost(s) for s in symbols), default=0) > cap:
        raise ValueError(f"cap {cap} cannot hold even one symbol (overhead {overhead})")
    pieces = _split(list(symbols), cost, cap - overhead, list(levels))
    return [p for p in (_strip(p) for p in pieces) if p]


def _split(symbols: list[str], cost: Callable[[str], int], budget: int,
           levels: list[frozenset[str]]) -> list[list[str]]:
    if sum(cost(s) for s in symbols) <= budget:
        return [symbols]
    if not levels:
        return _hard_cut(symbols, cost, budget)
    out: list[list[str]] = []
    cur: list[str] = []
    cur_cost = 0
    for unit in _units(symbols, levels[0]):
        c = sum(cost(s) for s in unit)
        if cur_cost + c <= budget:
            cur.extend(unit)
            cur_cost += c
            continue
        if cur:
            out.append(cur)
        if c <= budget:
            cur, cur_cost = list(unit), c
        else:
            out.extend(_split(unit, cost, budget, levels[1:]))
            cur, cur_cost = [], 0
    if cur:
        out.append(cur)
    return out


def _units(symbols: list[str], ends: frozenset[str]) -> list[list[str]]:
    """Cut after each run of ``ends`` symbols (a run like ``?!`` or ``...`` stays together)."""
    units: list[list[str]] = []
    start = 0
    for i, s in enumerate(symbols):
        if s in ends and (i + 1 == len(symbols) or symbols[i + 1] not in ends):
            units.append(symbols[start:i + 1])
            start = i + 1
    if start < len(symbols):
        units.append(symbols[start:])
    return units


def _hard_cut(symbols: list[str], cost: Callable[[str], int], budget: int) -> list[list[str]]:
    out: list[list[str]] = []
    cur: list[str] = []
    cur_cost = 0
    for s in symbols:
        c = cost(s)
        if cur and cur_cost + c > budget:
            out.append(cur)
            cur, cur_cost = [], 0
        cur.append(s)
        cur_cost += c
    if cur:
        out.append(cur)
    return out


def _strip(piece: list[str]) -> list[str]:
    start, end = 0, len(piece)
    while start < end and piece[start] == SPACE:
        start += 1
    while end > start and piece[end - 1] == SPACE:
        end -= 1
    return piece[start:end]


_PIECE_BREAK = None


def sentence_pieces(text: str, lines_only: bool = False) -> list[str]:
    """``text`` cut after sentence ends (``.?!…`` then whitespace) and at line breaks, for a
    front-end to phonemize one piece at a time (streaming starts on the first sentence without
    waiting for the others). A piece with no letter or digit joins the one before it, so no text
    is dropped; joined again, the pieces are the text up to the whitespace at the cuts.
    ``lines_only``: cut at line breaks only (a front-end whose utterance is a line, as vosk-tts)."""
    import re

    global _PIECE_BREAK
    if _PIECE_BREAK is None:
        _PIECE_BREAK = re.compile(r"(?<=[.?!\u2026])\s+|\s*\n\s*")
    pieces: list[str] = []
    for piece in (re.split(r"\s*\n\s*", text) if lines_only else _PIECE_BREAK.split(text)):
        if not piece or piece.isspace():
            continue
        if pieces and not any(ch.isalnum() for ch in piece):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    if len(pieces) > 1 and not any(ch.isalnum() for ch in pieces[0]):
        pieces[:2] = [f"{pieces[0]} {pieces[1]}"]
    return pieces
