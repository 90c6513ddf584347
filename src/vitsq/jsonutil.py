"""Turn results (dataclass dicts with numpy scalars, paths, infinities) into strict JSON values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(obj: Any, inf_as_string: bool = False) -> Any:
    """Recursively convert ``obj`` for ``json.dumps(..., allow_nan=False)``.

    NaN becomes null. Infinities become null, or ``"inf"``/``"-inf"`` with ``inf_as_string``
    (evaluation results keep SNR = inf for identical audio; benchmarks have no meaningful inf).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, inf_as_string) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, inf_as_string) for v in obj]
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return ("inf" if x > 0 else "-inf") if inf_as_string else None
        return x
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)
