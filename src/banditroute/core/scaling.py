"""Column standardisation shared by reward-table features, router contexts and offline policy fits."""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray


def column_moments(X: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Per-column mean and standard deviation of ``X`` (n, d); a constant column gets std 1, so it maps to 0."""
    mean: FloatArray = X.mean(axis=0)
    std: FloatArray = X.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)
