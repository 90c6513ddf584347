"""Russian front-end of the Vosk TTS models: text -> phonemes -> symbol ids.

Behaviour is equivalent to the ``vosk-tts`` runtime's ``Synth.g2p_noembed`` path (the one used by
models without BERT inputs), which is tested against the PyPI package as an oracle:

* The text is lower-cased and split into tokens at the punctuation marks ``, . ? ! ; : " ( )`` and
  at spaces; punctuation marks and spaces are kept as symbols (every space is one symbol, so two
  spaces give two). A lone ``-`` token is kept as the ``-`` symbol.
* A word found in the pronunciation dictionary (``word prob phonemes`` lines; the highest
  probability wins, the first of equal ones) takes the dictionary phonemes. Lookup is exact on the
  lower-cased word, including ``+``, ``ё`` and hyphens.
* Any other word goes through letter-to-sound rules: ``+`` marks the next vowel as stressed
  (``a1``; unstressed vowels are ``a0`` -- the two vowel reduction classes), a paired consonant
  before ``я ё ю и ь е`` is palatalized (``t`` -> ``tj``), and ``я ё ю е`` after a vowel, a sign,
  a hyphen or at the start of the word insert ``j``. Hyphens and the signs ``ь ъ`` produce no
  phoneme. ``ё`` is not stressed automatically (write ``+ё``), exactly as the runtime does.
* The phonemes are wrapped in ``^`` ... ``$`` and converted to ids with the model's
  ``phoneme_id_map`` (or the 62-symbol default of the Vosk Russian models), with a blank (id 0)
  between every two symbols.

Where the runtime crashes or silently produces garbage, this module defines the behaviour:

* Before the steps above the text is stripped and normalized: ``—``/``–`` -> ``-`` (the runtime
  does the em-dash itself), ``«» „ “ ”`` -> ``"``, ``…`` -> ``...``, tabs, line breaks and other
  white space -> a space.
* Digits raise :class:`~vitsq.errors.InputError` (numbers must be written as words); so do Latin
  letters (a Russian model cannot read them; Latin-only text gets its own message) and any other
  character outside the Russian alphabet, the punctuation above, ``+``, ``-`` and space.
* Empty text, or text with no Russian letter, raises :class:`~vitsq.errors.InputError`.
* Control characters other than tab and line breaks, and lone surrogates, raise
  :class:`~vitsq.errors.InputError` naming the character and its position
  (:func:`vitsq.text.validate.check_text_chars`).
* :meth:`RussianFrontend.text_to_ids` treats each non-empty line as one utterance, as the
  runtime treats its whole input, as long as its ids fit in ``max_tokens``
  (:data:`vitsq.limits.MAX_TOKENS_PER_UTTERANCE`); the runtime runs any length in one go, which
  costs memory quadratic in the length. A longer line is split into utterances of at most
  ``max_tokens`` ids at sentence ends ``. ? !``, then at ``, ; :``, then at spaces; a single
  longer word is cut where it reaches the cap. No symbol is dropped (only spaces at a cut).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from vitsq.errors import InputError, ModelLoadError
from vitsq.limits import MAX_TOKENS_PER_UTTERANCE
from vitsq.text.split import split_to_fit
from vitsq.text.validate import check_text_chars

if TYPE_CHECKING:
    from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

# The 62 symbols of the Vosk Russian models, in id order (vosk-tts training/vits2/text/symbols.py).
DEFAULT_SYMBOLS: tuple[str, ...] = (
    "_", "^", "$", " ", "!", '"', "(", ")", ",", "-", ".", ":", ";", "?",
    "a0", "a1", "b", "bj", "c", "ch", "d", "dj", "e0", "e1", "f", "fj", "g", "gj", "h", "hj",
    "i0", "i1", "j", "k", "kj", "l", "lj", "m", "mj", "n", "nj", "o0", "o1", "p", "pj",
    "r", "rj", "s", "sch", "sh", "sj", "t", "tj", "u0", "u1", "v", "vj", "y0", "y1",
    "z", "zh", "zj",
)
DEFAULT_PHONEME_ID_MAP: dict[str, tuple[int, ...]] = {s: (i,) for i, s in enumerate(DEFAULT_SYMBOLS)}

BOS, EOS = "^", "$"
BLANK_ID = 0  # the runtime interleaves a literal 0, whatever "_" maps to

RUSSIAN_LETTERS = frozenset("абвгдеёжзийклмнопрстуфхцчшщъыьэюя")
PUNCTUATION = ',.?!;:"() '  # split points, kept as symbols
_SPLIT_RE = re.compile(r'([,.?!;:"() ])')
_ALLOWED = RUSSIAN_LETTERS | frozenset(PUNCTUATION) | frozenset("+-")

# Letter-to-sound tables.
_PAIRED = {  # consonants with a soft ("j") variant
    "б": "b", "в": "v", "г": "g", "д": "d", "з": "z", "к": "k", "л": "l", "м": "m",
    "н": "n", "п": "p", "р": "r", "с": "s", "т": "t", "ф": "f", "х": "h",
}
_UNPAIRED = {"ж": "zh", "ц": "c", "ч": "ch", "ш": "sh", "щ": "sch", "й": "j"}
_VOWELS = {
    "а": "a", "я": "a", "у": "u", "ю": "u", "о": "o", "ё": "o",
    "э": "e", "е": "e", "и": "i", "ы": "y",
}
_SOFTENING = frozenset("яёюиье")  # a paired consonant before these is palatalized
_IOTATED = frozenset("яюеё")  # these start with "j" at a syllable start
_SYLLABLE_START = frozenset("#ъьаяоёуюэеиы-")  # after these, an iotated vowel gets "j"
_SILENT = frozenset("#-ьъ")  # produce no phoneme
_BOUNDARY = "#"

_NORMALIZE = str.maketrans({
    "—": "-", "–": "-",
    "«": '"', "»": '"', "„": '"', "“": '"', "”": '"',
    "…": "...",
})
_WHITESPACE_RE = re.compile(r"\s")


def rule_phonemes(word: str) -> list[str]:
    """Letter-to-sound rules for one lower-case word (``+`` before a stressed vowel allowed).

    >>> rule_phonemes("прив+ет")
    ['p', 'rj', 'i0', 'vj', 'e1', 't']
    """
    bad = sorted({ch for ch in word if ch not in RUSSIAN_LETTERS and ch not in "+-"})
    if bad:
        raise InputError(
            f"cannot apply Russian letter-to-sound rules to {word!r}: characters {''.join(bad)!r} "
            "are not lower-case Russian letters, '+' or '-'"
        )
    # 1. stress: "+" marks the character after it
    letters: list[tuple[str, bool]] = []  # (character, stressed)
    stress_next = False
    for ch in _BOUNDARY + word + _BOUNDARY:
        if ch == "+":
            stress_next = True
            continue
        letters.append((ch, stress_next))
        stress_next = False

    out: list[str] = []
    prev = ""
    for i, (ch, stressed) in enumerate(letters):
        nxt = letters[i + 1][0] if i + 1 < len(letters) else ""
        # 2. j insertion at a syllable start (prev is the previous *letter*, consonants excluded
        #    because none of them is in _SYLLABLE_START)
        if prev in _SYLLABLE_START and ch in _IOTATED:
            out.append("j")
        if ch in _VOWELS:
            # 3. vowel with its reduction class: 1 = stressed, 0 = unstressed
            out.append(_VOWELS[ch] + ("1" if stressed else "0"))
        elif ch in _PAIRED:
            # 4. palatalization of paired consonants
            out.append(_PAIRED[ch] + ("j" if nxt in _SOFTENING else ""))
        elif ch in _UNPAIRED:
            out.append(_UNPAIRED[ch])
        elif ch not in _SILENT:  # pragma: no cover - excluded by the check above
            out.append(ch)
        prev = ch
    return out


def load_dictionary(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Read a Vosk pronunciation dictionary: one ``word probability phoneme...`` entry per line.

    For a word listed several times the entry with the highest probability wins (the first of
    equal ones); as in the runtime, entries with a probability <= 0 are never chosen. Blank lines
    are skipped. A line with fewer than three fields or a probability that is not a finite
    number raises :class:`~vitsq.errors.ModelLoadError` naming the file and line number.
    """
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise ModelLoadError(f"cannot read pronunciation dictionary {path}: {exc}") from exc
    entries: dict[str, tuple[str, ...]] = {}
    best: dict[str, float] = {}
    with fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                items = line.split(maxsplit=2)
                if not items:
                    continue
                if len(items) < 3 or not items[2].split():
                    raise ModelLoadError(
                        f"{path}:{lineno}: bad dictionary line {line.rstrip()!r}: "
                        "expected 'word probability phoneme [phoneme ...]'"
                    )
                word, prob_s, phones = items
                try:
                    prob = float(prob_s)
                except ValueError:
                    prob = math.nan
                if not math.isfinite(prob):
                    raise ModelLoadError(
                        f"{path}:{lineno}: bad dictionary line {line.rstrip()!r}: probability "
                        f"{prob_s!r} is not a finite number"
                    )
                if best.get(word, 0.0) < prob:
                    entries[word] = tuple(phones.split())
                    best[word] = prob
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"{path}: pronunciation dictionary is not UTF-8: {exc}") from exc
    log.info("loaded %d dictionary words from %s", len(entries), path)
    return entries


def _normalize_id_map(id_map: Mapping[str, int | Sequence[int]]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for sym, ids in id_map.items():
        out[str(sym)] = (int(ids),) if isinstance(ids, int) else tuple(int(i) for i in ids)
    return out


class RussianFrontend:
    """Vosk Russian G2P: text -> phonemes -> ids (see the module docstring for the rules).

    Args:
        config: the model's :class:`~vitsq.models.config.VitsConfig` (its ``phoneme_id_map``
            and ``add_blank`` are used); None = the 62-symbol default with blanks.
        dictionary: word -> phonemes, or the path of a Vosk ``dictionary`` file; None = rules only.
        phoneme_id_map: symbol -> id(s), overriding the config's map.
        add_blank: interleave the blank id 0 between symbols, overriding the config.
        max_tokens: most ids in one utterance of :meth:`text_to_ids` (longer lines are split).
    """

    language = "ru"

    #: One utterance per line, as vosk-tts synthesizes (streaming cuts the text at lines only).
    utterance_per_line = True

    def __init__(
        self,
        config: "VitsConfig | None" = None,
        dictionary: Mapping[str, Sequence[str]] | str | Path | None = None,
        *,
        phoneme_id_map: Mapping[str, int | Sequence[int]] | None = None,
        add_blank: bool | None = None,
        max_tokens: int = MAX_TOKENS_PER_UTTERANCE,
    ) -> None:
        if isinstance(dictionary, (str, Path)):
            dictionary = load_dictionary(dictionary)
        self.dictionary: Mapping[str, Sequence[str]] = dictionary or {}
        if phoneme_id_map is None and config is not None:
            phoneme_id_map = config.phoneme_id_map
        if add_blank is None:
            add_blank = config.add_blank if config is not None else True
        self.phoneme_id_map = _normalize_id_map(phoneme_id_map or DEFAULT_PHONEME_ID_MAP)
        self.add_blank = add_blank
        self.max_tokens = max_tokens
        for sym in (BOS, EOS):
            if sym not in self.phoneme_id_map:
                raise ModelLoadError(f"phoneme_id_map has no {sym!r} symbol; a Vosk Russian model needs '^' and '$'")

    @classmethod
    def from_files(
        cls,
        dictionary_path: str | Path | None = None,
        phoneme_id_map: Mapping[str, int | Sequence[int]] | None = None,
        add_blank: bool = True,
    ) -> "RussianFrontend":
        """Front-end with the dictionary file of a Vosk model folder (or rules only)."""
        return cls(None, dictionary_path, phoneme_id_map=phoneme_id_map, add_blank=add_blank)

    # ------------------------------------------------------------------ text
    @staticmethod
    def normalize(text: str) -> str:
        """Strip, map dashes/quotes/ellipsis/white space to the symbols the model knows."""
        text = text.strip().translate(_NORMALIZE)
        return _WHITESPACE_RE.sub(" ", text)

    @staticmethod
    def check_text(text: str) -> None:
        """Raise :class:`InputError` for text the Russian model cannot read (see module doc)."""
        low = text.lower()
        if not low.strip():
            raise InputError("text is empty: give some Russian text to synthesize")
        bad = [ch for ch in dict.fromkeys(low) if ch not in _ALLOWED]
        has_russian = any(ch in RUSSIAN_LETTERS for ch in low)
        latin = [ch for ch in bad if "a" <= ch <= "z"]
        digits = [ch for ch in bad if ch.isdigit()]
        if latin and not has_russian:
            raise InputError(
                f"text {text!r} has Latin letters only, but this is a Russian model: write it in "
                "Cyrillic (Russian letters а-я, ё)"
            )
        if latin:
            words = sorted({w for w in re.findall(r"[A-Za-z]+", text)})
            raise InputError(
                f"Latin letters are not supported by the Russian front-end: {', '.join(words)}; "
                "write these words in Cyrillic"
            )
        if digits:
            nums = sorted(set(re.findall(r"\d+", text)))
            raise InputError(
                f"digits are not supported by the Russian front-end: {', '.join(nums)}; write "
                "numbers as words (e.g. 25 -> двадцать пять)"
            )
        if bad:
            raise InputError(
                f"unsupported characters {''.join(bad)!r} in text: valid are Russian letters, "
                f"space, the punctuation {PUNCTUATION.strip()!r}, '-' and '+' (stress mark)"
            )
        if not has_russian:
            raise InputError(f"text {text!r} has no Russian letters: nothing to say")

    def phonemize(self, text: str) -> list[str]:
        """Phoneme symbols of one utterance, ``^`` ... ``$`` included (no blanks).

        Applies :meth:`normalize` and :meth:`check_text`; equals the runtime's phonemes for
        text the runtime supports.
        """
        text = self.normalize(check_text_chars(text))
        self.check_text(text)
        phonemes = [BOS]
        for token in _SPLIT_RE.split(text.lower()):
            if not token:
                continue
            if token in PUNCTUATION or token == "-":  # punctuation and spaces are symbols
                phonemes.append(token)
            elif token in self.dictionary:
                phonemes.extend(self.dictionary[token])
            else:
                phonemes.extend(rule_phonemes(token))
        phonemes.append(EOS)
        return phonemes

    def phonemes_to_ids(self, phonemes: Iterable[str]) -> list[int]:
        """Symbol ids with a blank between every two symbols (when ``add_blank``)."""
        ids: list[int] = []
        for i, p in enumerate(phonemes):
            try:
                sym_ids = self.phoneme_id_map[p]
            except KeyError:
                raise InputError(
                    f"phoneme {p!r} is not in the model's phoneme_id_map "
                    f"(valid symbols: {' '.join(sorted(self.phoneme_id_map))})"
                ) from None
            if i and self.add_blank:
                ids.append(BLANK_ID)
            ids.extend(sym_ids)
        return ids

    def utterance_ids(self, text: str) -> list[int]:
        """Ids of one utterance (the whole text), as ``Synth.g2p_noembed`` gives them."""
        return self.phonemes_to_ids(self.phonemize(text))

    def _cost(self, sym: str) -> int:
        """Ids one symbol adds inside an utterance: its own and the blank before it."""
        return len(self.phoneme_id_map.get(sym, (0,))) + (1 if self.add_blank else 0)

    def text_to_ids(self, text: str) -> list[list[int]]:
        """One id list per non-empty line of ``text``; a line over ``max_tokens`` ids is split."""
        check_text_chars(text)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise InputError("text is empty: give some Russian text to synthesize")
        out: list[list[int]] = []
        overhead = len(self.phoneme_id_map[BOS]) + len(self.phoneme_id_map[EOS]) + (1 if self.add_blank else 0)
        for ln in lines:
            phonemes = self.phonemize(ln)
            ids = self.phonemes_to_ids(phonemes)
            if len(ids) <= self.max_tokens:
                out.append(ids)
                continue
            pieces = split_to_fit(phonemes[1:-1], self._cost, overhead, self.max_tokens)
            log.info("split a line of %d ids into %d utterances of at most %d", len(ids), len(pieces), self.max_tokens)
            out.extend(self.phonemes_to_ids([BOS, *p, EOS]) for p in pieces)
        return out
