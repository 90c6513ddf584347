"""``vitsq.quantize(model, recipe)``: the one place that runs a recipe (dispatch on its type)."""

from __future__ import annotations

from typing import Any

from vitsq.errors import UnsupportedError
from vitsq.quantize.recipes import (
    RECIPES,
    EagerRecipe,
    OrtDynamicRecipe,
    OrtStaticRecipe,
    PT2ERecipe,
    best_for,
)


def quantize(model: Any, recipe: Any, calibration: Any = None, **options: Any):
    """Quantize ``model`` with ``recipe``; returns a :class:`~vitsq.quantize.artifact.QuantizedModel`
    whatever the recipe (synthesize with it: ``q.synthesize(text)``; write the artifact folder that
    ``vitsq.load`` reads: ``q.save(dir, force=False)``).

    ``model``: a torch-backend synthesizer (``vitsq.load(spec, backend="torch")``), or a bare
    VITS/VITS2 module. ``recipe``: a name (``"eager"``, ``"pt2e"``, ``"ort-static"``,
    ``"ort-dynamic"``) = the measured preset for this model family
    (:func:`vitsq.quantize.recipes.best_for`), or a recipe object (:class:`EagerRecipe`,
    :class:`PT2ERecipe`, :class:`OrtStaticRecipe`, :class:`OrtDynamicRecipe`) used as given.
    ``calibration``: a :class:`~vitsq.quantize.calibration.Calibration` (default: the shipped
    calibration split of the model's language, the model's inference settings, seed 0; ort-dynamic
    takes none). ``options``: passed to the recipe's implementation (eager: ``keep_float_layers``,
    ``progress``; pt2e: ``progress``; ONNX Runtime: ``flavor``, ``calib``).
    """
    synth = as_synthesizer(model)
    if isinstance(recipe, str):
        recipe = best_for(synth, recipe)
    if isinstance(recipe, EagerRecipe):
        from vitsq.quantize.eager import quantize_eager

        return quantize_eager(synth, recipe, calibration, **options)
    if isinstance(recipe, PT2ERecipe):
        from vitsq.quantize.pt2e import quantize_pt2e

        return quantize_pt2e(synth, recipe, calibration, **options)
    if isinstance(recipe, (OrtStaticRecipe, OrtDynamicRecipe)):
        from vitsq.quantize.ort import quantize_ort

        return quantize_ort(synth, recipe, calibration, **options)
    raise UnsupportedError(f"unknown recipe object {type(recipe).__name__}: use a recipe name "
                           f"({', '.join(RECIPES)}) or one of {', '.join(c.__name__ for c in RECIPES.values())}")


def as_synthesizer(obj: Any):
    """A torch-backend synthesizer for ``obj`` (returned unchanged if it already is one)."""
    from torch import nn

    from vitsq.backends.torch import TorchSynthesizer

    if isinstance(obj, TorchSynthesizer):
        return obj
    if isinstance(obj, nn.Module) and hasattr(obj, "config") and hasattr(obj, "infer"):
        from vitsq.text import make_frontend

        try:
            frontend = make_frontend(obj.config)
        except Exception:  # noqa: BLE001 - a model without a usable front-end still quantizes from ids
            frontend = None
        return TorchSynthesizer(obj, "model", frontend)
    raise UnsupportedError(f"quantize takes a torch-backend synthesizer or a VITS/VITS2 module, got "
                           f"{type(obj).__name__} (load the model with backend='torch')")
