"""vitsq: make VITS-family TTS models small and fast, and prove they still sound right.

The toolkit in one import::

    import vitsq

    synth = vitsq.load("joe")                       # a Synthesizer (name or path; vitsq.available_models())
    audio = synth.synthesize("Hello.", vitsq.SynthesisConfig(length_scale=1.1))   # an Audio
    q = vitsq.quantize(synth, "ort-static")         # the measured preset; q.synthesize(...), q.save(dir)
    vitsq.export("joe", "piper", "joe.onnx")        # also "onnx", "vosk-dir", "executorch"
    vitsq.evaluate(synth, [q])                      # Whisper WER/CER, speaker similarity, distances
    vitsq.benchmark("joe", ["q=DIR"])               # RTF by batch size

User errors are :class:`VitsqError` subclasses. ``quantize``, ``export`` and ``evaluate`` are
functions here although subpackages of the same names exist (``vitsq.quantize.recipes``, ...):
this module imports the subpackages first, then binds the functions over their names; importing a
submodule later does not rebind them. Importing vitsq does not import torch.
"""

from __future__ import annotations

# Importing vitsq.evaluate.run (vitsq.export.api, vitsq.quantize.dispatch) first imports its package
# and sets the package attribute; the name is then rebound to the function (the openai/whisper pattern).
from vitsq.bench import run_benchmark as benchmark
from vitsq.errors import InputError, ModelLoadError, OutputError, UnsupportedError, VitsqError
from vitsq.evaluate.run import evaluate
from vitsq.export.api import export
from vitsq.quantize.dispatch import quantize
from vitsq.registry import available_models, load
from vitsq.synth import Audio, SynthesisConfig, Synthesizer

__all__ = [
    "load",
    "available_models",
    "quantize",
    "export",
    "evaluate",
    "benchmark",
    "Audio",
    "SynthesisConfig",
    "Synthesizer",
    "VitsqError",
    "InputError",
    "ModelLoadError",
    "OutputError",
    "UnsupportedError",
]
__version__ = "0.1.0"
