"""Input bounds (vitsq.limits): long text is split into bounded utterances, control characters
are refused, and synthesis of long Russian text stays within a stated memory bound."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vitsq import limits
from vitsq.errors import InputError
from vitsq.text.russian import RussianFrontend
from vitsq.text.split import split_to_fit
from vitsq.text.validate import check_text_chars

RU_SENTENCE = "привет, как дела? всё хорошо, спасибо, дорогой друг. "
RU_20K = (RU_SENTENCE * 400)[: limits.MAX_TEXT_CHARS].strip()


def _symbols(fe: RussianFrontend, ids: list[int]) -> list[str]:
    inv = {v: k for k, v in fe.phoneme_id_map.items()}
    return [inv[(i,)] for i in ids[::2]]  # blanks sit at odd positions


def test_20k_char_russian_line_splits_into_bounded_utterances():
    fe = RussianFrontend()
    utts = fe.text_to_ids(RU_20K)
    assert len(RU_20K) > 19_900 and len(utts) > 30
    assert all(len(u) <= limits.MAX_TOKENS_PER_UTTERANCE for u in utts)
    # nothing dropped: the pieces' symbols are the whole line's, less the spaces at the cuts
    whole = [s for s in fe.phonemize(RU_20K)[1:-1] if s != " "]
    pieces = [s for u in utts for s in _symbols(fe, u)[1:-1] if s != " "]
    assert pieces == whole
    # cuts fall at sentence ends when sentences fit
    assert all(_symbols(fe, u)[-2] in ".?!" for u in utts[:-1])


def test_russian_split_prefers_clauses_then_words_then_cuts_a_long_word():
    fe = RussianFrontend(max_tokens=40)
    utts = [_symbols(fe, u) for u in fe.text_to_ids("всё хорошо, спасибо, дорогой друг мой. " + "а" * 40)]
    assert all(len(u) * 2 - 1 <= 40 for u in utts)
    assert utts[0][-2] == "," and utts[1][-2] == ","  # clause ends
    assert sum(u.count("a0") for u in utts) == 40 + 1  # the 40-letter "word" is cut, not dropped
    # a line within the cap stays one utterance, exactly as the vosk-tts runtime reads it
    assert RussianFrontend().text_to_ids("привет, мир! замок") == [RussianFrontend().utterance_ids("привет, мир! замок")]


def test_split_to_fit_costs_are_exact():
    pieces = split_to_fit(list("ab, cd. ef gh"), lambda s: 2, overhead=3, cap=11)
    assert all(3 + 2 * len(p) <= 11 for p in pieces)
    assert "".join("".join(p) for p in pieces).replace(" ", "") == "ab,cd.efgh"
    with pytest.raises(ValueError, match="cannot hold even one symbol"):
        split_to_fit(["a"], lambda s: 5, overhead=3, cap=7)


@pytest.mark.parametrize(
    "text, what, pos",
    [
        ("Hello.\0 long tail", "U+0000 (NUL)", 6),
        ("\ud800", "lone surrogate U+D800", 0),
        ("ok\x1b[31m", "U+001B (ESCAPE)", 2),
        ("a\x85b", "U+0085", 1),
    ],
)
def test_control_characters_and_surrogates_refused(text, what, pos):
    with pytest.raises(InputError) as exc:
        check_text_chars(text)
    msg = str(exc.value)
    assert what in msg and f"position {pos}" in msg
    msg.encode("utf-8")  # the message itself is printable
    with pytest.raises(InputError, match="position"):
        RussianFrontend().text_to_ids(text.replace("Hello", "привет").replace("ok", "да") + " да")
    assert check_text_chars("tab\tand\r\nlines") == "tab\tand\r\nlines"


def test_english_nul_refused_and_long_sentence_bounded(joe_torch):
    with pytest.raises(InputError, match=r"U\+0000 \(NUL\) at position 6"):
        joe_torch.frontend.text_to_ids("Hello.\0 long tail")
    long = "and then the cat, which was very tired, went to sleep on the warm mat " * 40 + "."
    utts = joe_torch.frontend.text_to_ids(long)
    assert len(utts) > 3 and all(len(u) <= limits.MAX_TOKENS_PER_UTTERANCE for u in utts)


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork + exec, so a child of
# a large pytest process would report the parent's memory as its own.
_PEAK_RSS = textwrap.dedent("""
    import json, re, sys
    import vitsq
    spec, text, kw = json.loads(sys.argv[1])
    m = vitsq.load(**spec)
    utts = m.text_to_ids(text)
    audio = m.synthesize(text, **kw)
    hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read())
    print(json.dumps({"peak_mb": int(hwm.group(1)) / 1024,
                      "samples": len(audio.samples), "ids": sum(map(len, utts)), "utterances": len(utts),
                      "hop": m.config.hop_length}))
""")


def _peak_rss(spec: dict, text: str, **kw) -> dict:
    """Synthesize in a fresh process; its peak resident memory (VmHWM) and output size."""
    r = subprocess.run([sys.executable, "-c", _PEAK_RSS, json.dumps([spec, text, kw])],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_long_russian_line_memory_is_bounded_tiny_model():
    """A 4000-character line (5.2 GB on the full model when read as one utterance) on the tiny
    fixture model: split into bounded utterances, run in bounded batches, under 1.5 GB peak."""
    fx = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "vosk_vits2"
    spec = {"spec": str(fx / "tiny_G_1.pth"), "config_path": str(fx / "tiny_config.json")}
    out = _peak_rss(spec, RU_20K[:4000])
    assert out["utterances"] >= 8
    assert out["samples"] >= out["ids"] * out["hop"]  # every id got at least one frame: nothing dropped
    assert out["peak_mb"] < 1500, out


@pytest.mark.slow
def test_max_utterance_memory_full_vosk_config():
    """vosk-ru-multi (full config, untrained random weights): one utterance at the token cap
    stays under 2.5 GB peak."""
    fe = RussianFrontend()
    text = RU_SENTENCE.strip()
    while len(fe.utterance_ids(text + " " + RU_SENTENCE.strip())) <= limits.MAX_TOKENS_PER_UTTERANCE:
        text += " " + RU_SENTENCE.strip()
    assert len(fe.text_to_ids(text)) == 1 and len(fe.utterance_ids(text)) > 0.9 * limits.MAX_TOKENS_PER_UTTERANCE
    out = _peak_rss({"spec": "vosk-ru-multi"}, text)
    assert out["utterances"] == 1 and out["samples"] >= out["ids"] * out["hop"]
    assert out["peak_mb"] < 2500, out
