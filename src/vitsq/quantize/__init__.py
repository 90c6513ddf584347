"""INT8 post-training quantization: recipes, calibration, coverage, sensitivity, artifacts.

Entry point: :func:`vitsq.quantize.recipes.quantize` (re-exported here), which dispatches on the
recipe type (:class:`EagerRecipe`, :class:`PT2ERecipe`, :class:`OrtStaticRecipe`,
:class:`OrtDynamicRecipe`).
"""

from vitsq.quantize.recipes import (
    RECIPES,
    EagerRecipe,
    OrtDynamicRecipe,
    OrtStaticRecipe,
    PT2ERecipe,
    quantize,
    recipe_from_dict,
)

__all__ = ["RECIPES", "EagerRecipe", "PT2ERecipe", "OrtStaticRecipe", "OrtDynamicRecipe", "quantize",
           "recipe_from_dict"]
