"""The image model's first step for bench/kinds.py: a list of PIL images -> float32 pixels.

A file of its own beside the bench, as a notebook user keeps a helper beside the notebook:
nbserve saves this module by value with the model (nbserve/_bundle.py ``notebook_code``), so
its server needs no bench/ on its path; the hand-written baseline imports it from bench/, the
``--working-dir`` of its ``bentoml serve``. numpy only, so either pickle is small.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pixels(images: Any) -> np.ndarray:
    """(batch, width * height * bands) float32 in [0, 1], one row per image."""
    return np.stack([np.asarray(img, dtype=np.float32).ravel() / 255 for img in images])
