"""espeak-ng phoneme front-end for Piper voices (via ``piper-phonemize``).

Follows Piper's id conventions: ``^`` (BOS), then every phoneme followed by the pad symbol
``_``, then ``$`` (EOS). espeak-ng splits the text into sentences (clause ends ``.?!``); each
sentence becomes its own id sequence and is synthesized separately; a sentence longer than
``MAX_TOKENS_PER_UTTERANCE`` ids is split further at clause punctuation, then spaces
(:mod:`vitsq.text.split`). Control characters are refused before espeak-ng sees the text (it
would stop reading at a NUL).
"""

from __future__ import annotations

import logging
import unicodedata

from vitsq.errors import InputError
from vitsq.limits import MAX_TOKENS_PER_UTTERANCE
from vitsq.models.config import VitsConfig
from vitsq.text.split import CLAUSE_ENDS, SENTENCE_ENDS, SPACE, split_to_fit
from vitsq.text.validate import check_text_chars

log = logging.getLogger(__name__)

BOS, EOS, PAD = "^", "$", "_"


class EspeakFrontend:
    """Text -> phoneme ids for voices with ``phoneme_type = espeak``."""

    def __init__(self, config: VitsConfig, max_tokens: int = MAX_TOKENS_PER_UTTERANCE) -> None:
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

        text = unicodedata.normalize("NFC", check_text_chars(text))
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

    def _cost(self, ph: str) -> int:
        """Ids one phoneme adds (itself and its pad); phonemes the map lacks add none."""
        if ph not in self.id_map:
            return 0
        return len(self.id_map[ph]) + len(self.id_map[PAD])

    def text_to_ids(self, text: str) -> list[list[int]]:
        """Text -> ids per sentence, each at most ``max_tokens`` ids (longer ones are split)."""
        out: list[list[int]] = []
        overhead = len(self.id_map[BOS]) + len(self.id_map[PAD]) + len(self.id_map[EOS])
        for sent in self.phonemize(text):
            speakable = [p for p in sent if p in self.id_map and not p.isspace() and not unicodedata.category(p).startswith("P")]
            if not speakable:
                continue
            # espeak already split at sentence ends; prefer clause punctuation, then spaces
            levels = (SENTENCE_ENDS, CLAUSE_ENDS, frozenset(SPACE))
            for piece in split_to_fit(sent, self._cost, overhead, self.max_tokens, levels):
                out.append(self.phonemes_to_ids(piece))
        if not out:
            raise InputError(f"text {text[:60]!r} has no speakable symbols for voice {self.voice!r}")
        return out
