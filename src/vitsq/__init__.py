"""vitsq: make VITS-family TTS models small and fast, and prove they still sound right."""

from __future__ import annotations

from vitsq.errors import InputError, ModelLoadError, UnsupportedError, VitsqError
from vitsq.synth import Audio, Synthesizer, load

__all__ = [
    "Audio",
    "Synthesizer",
    "load",
    "VitsqError",
    "InputError",
    "ModelLoadError",
    "UnsupportedError",
]
__version__ = "0.1.0"
