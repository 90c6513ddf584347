"""Character checks every front-end applies before reading text.

Control characters are refused rather than stripped: espeak-ng reads text as a C string, so
everything after a NUL would vanish silently, and other controls have no pronunciation. Tab,
line feed and carriage return are ordinary white space and allowed. A lone surrogate (text
decoded with ``surrogateescape``, or a JSON ``"\\ud800"`` escape) is not valid Unicode and
cannot even be encoded for the phonemizer.
"""

from __future__ import annotations

import unicodedata

from vitsq.errors import InputError

#: control characters that are white space and allowed in text
ALLOWED_CONTROLS = frozenset("\t\n\r")

_CONTROL_NAMES = {
    0x00: "NUL", 0x07: "BEL", 0x08: "BACKSPACE", 0x0B: "VERTICAL TAB", 0x0C: "FORM FEED",
    0x1B: "ESCAPE", 0x7F: "DELETE", 0x85: "NEXT LINE",
}


def _describe(ch: str) -> str:
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate U+{code:04X} (not valid Unicode)"
    name = _CONTROL_NAMES.get(code) or unicodedata.name(ch, "")
    return f"the control character U+{code:04X}" + (f" ({name})" if name else "")


def check_text_chars(text: str) -> str:
    """Refuse control characters (other than tab and line breaks) and lone surrogates.

    Raises :class:`~vitsq.errors.InputError` naming the first such character (as ``U+XXXX``, so
    the message itself is printable) and its 0-based position, plus how many more there are.
    Returns ``text`` unchanged otherwise.
    """
    bad = [
        i for i, ch in enumerate(text)
        if (unicodedata.category(ch) in ("Cc", "Cs")) and ch not in ALLOWED_CONTROLS
    ]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(
            f"text has {_describe(text[bad[0]])} at position {bad[0]}{more}: remove it; text may "
            "contain printable characters, spaces, tabs and line breaks"
        )
    return text
