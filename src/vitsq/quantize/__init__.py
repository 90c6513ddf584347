"""INT8 post-training quantization: recipes, calibration, coverage, sensitivity, artifacts.

Entry point: :func:`vitsq.quantize.dispatch.quantize` (``vitsq.quantize(model, recipe)``), which
dispatches on the recipe type (:class:`EagerRecipe`, :class:`PT2ERecipe`, :class:`OrtStaticRecipe`,
:class:`OrtDynamicRecipe`; a name means the measured preset, :func:`best_for`) and returns a
:class:`~vitsq.quantize.artifact.QuantizedModel`. Importing this package is cheap (no torch).
"""

from vitsq.quantize.dispatch import quantize
from vitsq.quantize.recipes import (
    RECIPES,
    EagerRecipe,
    OrtDynamicRecipe,
    OrtStaticRecipe,
    PT2ERecipe,
    best_for,
    recipe_from_dict,
)

__all__ = ["RECIPES", "EagerRecipe", "PT2ERecipe", "OrtStaticRecipe", "OrtDynamicRecipe", "best_for", "quantize",
           "recipe_from_dict"]
