"""vitsq: make VITS-family TTS models small and fast, and prove they still sound right.

``vitsq.load(spec)`` gives a :class:`Synthesizer` for a named model (:func:`models`) or a path;
``synth.synthesize(text, SynthesisConfig(...))`` gives an :class:`Audio`.
"""

from __future__ import annotations

from vitsq.errors import InputError, ModelLoadError, OutputError, UnsupportedError, VitsqError
from vitsq.synth import Audio, SynthesisConfig, Synthesizer, load


def models() -> dict[str, str]:
    """The models :func:`load` accepts by name (no path), each with a one-line description."""
    from vitsq.registry import available_models

    return available_models()


__all__ = [
    "Audio",
    "SynthesisConfig",
    "Synthesizer",
    "load",
    "models",
    "VitsqError",
    "InputError",
    "ModelLoadError",
    "OutputError",
    "UnsupportedError",
]
__version__ = "0.1.0"
