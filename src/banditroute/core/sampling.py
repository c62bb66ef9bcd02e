"""Categorical sampling, softmax and random tie-breaking, vectorised over rows.

Sampling uses one uniform draw per decision and the inverse CDF, which is both faster than
``Generator.choice`` and makes single and batched draws consume the generator identically.

The ``*_row`` functions are the same rules for one row of Python floats: a per-round decision
over a handful of arms costs a dozen numpy calls of about a microsecond each, most of it call
overhead, while the same IEEE operations on floats cost a fraction of that. They perform exactly
the operations of their vectorised twins, in the same order, so their results are bit-identical
(``tests/test_single_row.py`` compares them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from banditroute.core.types import FloatArray, IntArray


def sample_categorical(probs: FloatArray, rng: np.random.Generator) -> IntArray:
    """Draw one index per row of ``probs`` (shape ``(..., M)``) by inverse CDF."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[:-1])[..., None] * cdf[..., -1:]
    idx = (u >= cdf).sum(axis=-1)
    return np.minimum(idx, probs.shape[-1] - 1).astype(np.int64)


def softmax(logits: FloatArray, axis: int = -1) -> FloatArray:
    """Numerically stable softmax: finite, valid probabilities for any finite logits."""
    with np.errstate(over="ignore", invalid="ignore"):  # |logit| near 1e308: the shift overflows to -inf
        z = logits - np.max(logits, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def argmax_uniform(scores: FloatArray, rtol: float = 1e-12) -> FloatArray:
    """Uniform distribution over the (near-)maximisers of each row: how a greedy policy with
    random tie-breaking actually chooses, written as the probability vector it draws from."""
    best = scores.max(axis=-1, keepdims=True)
    ties = scores >= best - rtol * np.maximum(1.0, np.abs(best))
    return ties / ties.sum(axis=-1, keepdims=True)


def mix_uniform(probs: FloatArray, epsilon: float) -> FloatArray:
    """``(1 - ε) p + ε / M``: ε-exploration as an explicit distribution."""
    return (1.0 - epsilon) * probs + epsilon / probs.shape[-1]


def sample_categorical_row(probs: Sequence[float], rng: np.random.Generator) -> int:
    """:func:`sample_categorical` for one row: the same cumulative sums, the same single uniform draw."""
    cdf = list(accumulate(probs))
    u = rng.random() * cdf[-1]
    return min(sum(u >= c for c in cdf), len(cdf) - 1)


def argmax_uniform_row(scores: Sequence[float], rtol: float = 1e-12) -> list[float] | None:
    """:func:`argmax_uniform` for one row; ``None`` when a score is NaN or infinite (Python's
    ``max`` does not order NaN as numpy does: the caller takes the vectorised path then)."""
    if not math.isfinite(sum(scores)):  # finite iff every score is (or an overflow: also the slow path)
        return None
    best = max(scores)
    threshold = best - rtol * max(1.0, abs(best))
    ties = [s >= threshold for s in scores]
    k = sum(ties)
    return [t / k for t in ties]


def mix_uniform_row(probs: Sequence[float], epsilon: float) -> list[float]:
    """:func:`mix_uniform` for one row."""
    share = epsilon / len(probs)
    return [(1.0 - epsilon) * p + share for p in probs]
