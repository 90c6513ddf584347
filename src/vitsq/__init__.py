"""vitsq: make VITS-family TTS models small and fast, and prove they still sound right.

``vitsq.load(spec)`` gives a :class:`Synthesizer` for a named model (:func:`available_models`) or a path;
``synth.synthesize(text, SynthesisConfig(...))`` gives an :class:`Audio`.
"""

from __future__ import annotations

from vitsq.errors import InputError, ModelLoadError, OutputError, UnsupportedError, VitsqError
from vitsq.synth import Audio, SynthesisConfig, Synthesizer, load


def available_models() -> dict[str, str]:
    """The models :func:`load` accepts by name (no path), each with a one-line description.

    (Not ``vitsq.models``: that name is the subpackage of model code.)
    """
    from vitsq import registry

    return registry.available_models()


__all__ = [
    "Audio",
    "SynthesisConfig",
    "Synthesizer",
    "load",
    "available_models",
    "VitsqError",
    "InputError",
    "ModelLoadError",
    "OutputError",
    "UnsupportedError",
]
__version__ = "0.1.0"
