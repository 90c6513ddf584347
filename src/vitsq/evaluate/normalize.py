"""Text normalization applied to both the reference sentence and the ASR hypothesis before scoring.

The goal is *consistency*: the same spoken content written two ways ("5" / "five", "Hello!" /
"hello", "ёлка" / "елка") should compare equal, so WER measures what the listener hears rather
than spelling conventions. Both sides always go through the same function.

English: NFKC, lower case, ``&`` -> "and", ``$N`` -> "N dollars", ``N%`` -> "N percent",
ordinals (``21st``) and cardinals (``1,250``, ``3.5``, ``7:05``) spelled out, hyphens split words,
apostrophes dropped ("don't" -> "dont"), other punctuation removed.

Russian: NFKC, lower case, ``ё`` -> ``е``, stress marks (``+`` and the combining acute U+0301)
removed, cardinals spelled out in the nominative (``25`` -> "двадцать пять", ``3,5`` -> "три целых
пять"), ``%`` -> "процентов", hyphens split words, punctuation removed.

Other languages get the language-independent part (case, punctuation, whitespace).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "number_to_words_en", "number_to_words_ru", "ordinal_en"]

_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_EN_ORD_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _en_below_1000(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_EN_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_EN_TENS[n // 10])
        n %= 10
        if n:
            words.append(_EN_ONES[n])
    elif n or not words:
        words.append(_EN_ONES[n])
    return words


def number_to_words_en(n: int) -> str:
    """Cardinal number in English words, without "and": 1250 -> "one thousand two hundred fifty"."""
    if n < 0:
        return "minus " + number_to_words_en(-n)
    if n < 1000:
        return " ".join(_en_below_1000(n))
    words: list[str] = []
    for value, name in _EN_SCALES:
        if n >= value:
            words += _en_below_1000(n // value) + [name]
            n %= value
    if n:
        words += _en_below_1000(n)
    return " ".join(words)


def ordinal_en(n: int) -> str:
    """Ordinal number in English words: 21 -> "twenty first"."""
    words = number_to_words_en(n).split()
    last = words[-1]
    if last in _EN_ORD_IRREGULAR:
        words[-1] = _EN_ORD_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


_RU_ONES_M = "ноль один два три четыре пять шесть семь восемь девять".split()
_RU_ONES_F = "ноль одна две три четыре пять шесть семь восемь девять".split()
_RU_TEENS = (
    "десять одиннадцать двенадцать тринадцать четырнадцать пятнадцать шестнадцать семнадцать "
    "восемнадцать девятнадцать"
).split()
_RU_TENS = "_ _ двадцать тридцать сорок пятьдесят шестьдесят семьдесят восемьдесят девяносто".split()
_RU_HUNDREDS = "_ сто двести триста четыреста пятьсот шестьсот семьсот восемьсот девятьсот".split()
# (value, feminine?, forms for 1 / 2-4 / 5+)
_RU_SCALES = (
    (10**9, False, ("миллиард", "миллиарда", "миллиардов")),
    (10**6, False, ("миллион", "миллиона", "миллионов")),
    (1000, True, ("тысяча", "тысячи", "тысяч")),
)


def _ru_plural(n: int, forms: tuple[str, str, str]) -> str:
    if n % 100 in range(11, 15):
        return forms[2]
    if n % 10 == 1:
        return forms[0]
    if n % 10 in (2, 3, 4):
        return forms[1]
    return forms[2]


def _ru_below_1000(n: int, feminine: bool) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words.append(_RU_HUNDREDS[n // 100])
        n %= 100
    if 10 <= n < 20:
        words.append(_RU_TEENS[n - 10])
        return words
    if n >= 20:
        words.append(_RU_TENS[n // 10])
        n %= 10
    if n or not words:
        words.append((_RU_ONES_F if feminine else _RU_ONES_M)[n])
    return words


def number_to_words_ru(n: int) -> str:
    """Cardinal number in Russian words, nominative: 2021 -> "две тысячи двадцать один"."""
    if n < 0:
        return "минус " + number_to_words_ru(-n)
    if n == 0:
        return "ноль"
    words: list[str] = []
    for value, feminine, forms in _RU_SCALES:
        if n >= value:
            k = n // value
            # a leading single unit is not spoken: 1250 -> "тысяча двести пятьдесят"
            head = [] if (k == 1 and not words) else _ru_below_1000(k, feminine)
            words += head + [_ru_plural(k, forms)]
            n %= value
    if n:
        words += _ru_below_1000(n, False)
    return " ".join(words)


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_DASHES = re.compile(r"[\u2010-\u2015\-]")
_NON_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def _base(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    return text


def _finish(text: str) -> str:
    text = _DASHES.sub(" ", text)
    text = text.replace("'", "")
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _digits_to_words(text: str, cardinal, point_word: str, decimal_sep: str) -> str:
    def decimal(m: re.Match[str]) -> str:
        whole, frac = m.group(1), m.group(2)
        return f" {cardinal(int(whole))} {point_word} {' '.join(cardinal(int(d)) for d in frac)} "

    text = re.sub(rf"(\d+){re.escape(decimal_sep)}(\d+)", decimal, text)
    return re.sub(r"\d+", lambda m: f" {cardinal(int(m.group(0)))} ", text)


def _normalize_en(text: str) -> str:
    text = _base(text)
    text = text.replace("&", " and ")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,250 -> 1250
    text = re.sub(r"\$(\d+)\.(\d\d)\b", r"\1 dollars \2 cents", text)
    text = re.sub(r"\$(\d+(?:\.\d+)?)", r"\1 dollars", text)
    text = re.sub(r"(\d)\s*%", r"\1 percent", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {ordinal_en(int(m.group(1)))} ", text)

    def clock(m: re.Match[str]) -> str:
        h, mm = int(m.group(1)), m.group(2)
        if mm == "00":
            return f" {number_to_words_en(h)} "
        minutes = ("oh " + number_to_words_en(int(mm[1]))) if mm[0] == "0" else number_to_words_en(int(mm))
        return f" {number_to_words_en(h)} {minutes} "

    text = re.sub(r"\b(\d{1,2}):(\d\d)\b", clock, text)
    text = _digits_to_words(text, number_to_words_en, "point", ".")
    return _finish(text)


def _normalize_ru(text: str) -> str:
    text = _base(text)
    text = text.replace("ё", "е").replace("+", "").replace("\u0301", "")
    text = re.sub(r"(?<=\d)[ \u00a0](?=\d{3}\b)", "", text)  # 1 250 -> 1250
    text = re.sub(r"(\d)\s*%", r"\1 процентов", text)
    text = _digits_to_words(text, number_to_words_ru, "целых", ",")
    return _finish(text)


def normalize(text: str, language: str) -> str:
    """Normalize ``text`` for scoring in ``language`` (``en``, ``ru``; others: generic rules)."""
    lang = (language or "").lower().split("-")[0].split("_")[0]
    if lang == "en":
        return _normalize_en(text)
    if lang == "ru":
        return _normalize_ru(text)
    return _finish(_base(text).replace("\u0301", ""))
