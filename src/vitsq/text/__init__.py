"""Text front-ends: text -> symbol ids, per model family."""

from __future__ import annotations

from typing import Protocol

from vitsq.errors import UnsupportedError
from vitsq.models.config import VitsConfig


class Frontend(Protocol):
    language: str

    def text_to_ids(self, text: str) -> list[list[int]]:
        """One list of symbol ids per sentence; raises InputError if nothing is speakable."""


def make_frontend(config: VitsConfig, dictionary: str | None = None) -> Frontend:
    """Pick the front-end for a model config (espeak phonemes or the Russian G2P)."""
    if config.phoneme_type == "espeak":
        from vitsq.text.espeak import EspeakFrontend

        return EspeakFrontend(config)
    if config.phoneme_type == "vosk_ru":
        from vitsq.text.russian import RussianFrontend

        return RussianFrontend(config, dictionary=dictionary)
    raise UnsupportedError(
        f"phoneme_type {config.phoneme_type!r} has no front-end; supported: espeak, vosk_ru"
    )
