"""Categorical sampling, softmax and random tie-breaking, vectorised over rows.

Sampling uses one uniform draw per decision and the inverse CDF, which is both faster than
``Generator.choice`` and makes single and batched draws consume the generator identically.
"""

from __future__ import annotations

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
