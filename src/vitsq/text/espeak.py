"""espeak-ng phoneme front-end for Piper voices (via ``piper-phonemize``).

Follows Piper's id conventions: ``^`` (BOS), then every phoneme followed by the pad symbol
``_``, then ``$`` (EOS). espeak-ng splits the text into sentences (clause ends ``.?!``); each
sentence becomes its own id sequence and is synthesized separately.
"""

from __future__ import annotations

import logging
import unicodedata

from vitsq.errors import InputError
from vitsq.models.config import VitsConfig

log = logging.getLogger(__name__)

BOS, EOS, PAD = "^", "$", "_"


class EspeakFrontend:
    """Text -> phoneme ids for voices with ``phoneme_type = espeak``."""

    def __init__(self, config: VitsConfig, max_tokens: int = 1000) -> None:
        self.voice = config.espeak_voice or config.language or "en-us"
        self.id_map = dict(config.phoneme_id_map)
        self.language = config.language
        self.max_tokens = max_tokens
        for sym in (BOS, EOS, PAD):
            if sym not in self.id_map:
                raise InputError(f"phoneme_id_map lacks the required symbol {sym!r} (needs ^, $ and _)")

    def phonemize(self, text: str) -> list[list[str]]:
        """Text -> one list of phonemes per sentence."""
        from piper_phonemize import phonemize_espeak

        text = unicodedata.normalize("NFC", text)
        sentences = phonemize_espeak(text, self.voice)
        return [s for s in sentences if s]

    def phonemes_to_ids(self, phonemes: list[str]) -> list[int]:
        ids = [*self.id_map[BOS], *self.id_map[PAD]]
        missing: list[str] = []
        for ph in phonemes:
            if ph not in self.id_map:
                # Piper's runtime drops these too; keep identical ids but say so.
                missing.append(ph)
                continue
            ids.extend(self.id_map[ph])
            ids.extend(self.id_map[PAD])
        ids.extend(self.id_map[EOS])
        if missing:
            log.warning("phonemes not in the voice's map were dropped: %s", "".join(sorted(set(missing))))
        return ids

    def text_to_ids(self, text: str) -> list[list[int]]:
        """Text -> ids per sentence; over-long sentences are split at word boundaries."""
        out: list[list[int]] = []
        for sent in self.phonemize(text):
            speakable = [p for p in sent if p in self.id_map and not p.isspace() and not unicodedata.category(p).startswith("P")]
            if not speakable:
                continue
            for piece in _split_long(sent, self.max_tokens // 2 - 2):
                out.append(self.phonemes_to_ids(piece))
        if not out:
            raise InputError(f"text {text[:60]!r} has no speakable symbols for voice {self.voice!r}")
        return out


def _split_long(phonemes: list[str], limit: int) -> list[list[str]]:
    """Split a phoneme list longer than ``limit`` at the last space before the limit."""
    pieces = []
    while len(phonemes) > limit:
        cut = max((i for i, p in enumerate(phonemes[:limit]) if p == " "), default=limit)
        cut = cut if cut > 0 else limit
        pieces.append(phonemes[:cut])
        phonemes = phonemes[cut:]
        while phonemes and phonemes[0] == " ":
            phonemes = phonemes[1:]
    if phonemes:
        pieces.append(phonemes)
    return pieces
