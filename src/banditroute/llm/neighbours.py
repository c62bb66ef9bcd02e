"""k-nearest-neighbour quality estimates: per LLM, the mean quality over the k most similar known queries.

The baseline recent router benchmarks ask for (a tuned kNN matches most learned routers: Hu et
al. 2024, RouterBench, arXiv 2403.12031; Li 2025, "Rethinking predictive LLM routing:
when simple kNN beats complex learned routers", arXiv 2505.12601). Similarity is the
cosine of the query embeddings; ``weighting="uniform"`` averages the k neighbours,
``"similarity"`` weights each by its (positive) cosine.

**Per LLM**: every LLM keeps its own memory of ``(embedding, quality)`` — the training queries
(full information) plus, online, the queries it was called on with the quality observed — so
one LLM's estimate never depends on another's data and an LLM can be added (a new column of
training scores, or none at all) without touching the others. Online learning is adding to the
called LLM's memory (bandit feedback: only that LLM learns).
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_int
from banditroute.costaware.features import unit_rows

WEIGHTINGS = ("uniform", "similarity")
_CHUNK = 1024


def _weighted_top(S: FloatArray, V: FloatArray, k: int, weighting: str) -> FloatArray:
    """Per row of ``S`` (similarities to the memory, ``(n, m)``), the weighted mean of the rows of ``V``
    (``(m, M)``: a value per memory entry and column) over the ``min(k, m)`` most similar entries: ``(n, M)``."""
    k = min(k, S.shape[1])
    top = np.argpartition(-S, k - 1, axis=1)[:, :k]
    vals = V[top]  # (n, k, M)
    if weighting == "uniform":
        out: FloatArray = vals.mean(axis=1)
        return out
    w = np.maximum(np.take_along_axis(S, top, axis=1), 1e-6)[:, :, None]
    out = (w * vals).sum(axis=1) / w.sum(axis=1)
    return out


class KNNEstimator:
    """Per-LLM kNN quality estimates (module docstring).

    Args:
        k: neighbours averaged.
        weighting: ``"uniform"`` or ``"similarity"``.
        prior: estimate of an LLM whose memory is empty.
    """

    def __init__(self, k: int = 20, weighting: str = "uniform", prior: float = 0.5) -> None:
        self.k = check_int(k, "k")
        if weighting not in WEIGHTINGS:
            raise InputError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.weighting = weighting
        self.prior = float(prior)
        self.base = np.zeros((0, 0))
        self.base_values = np.zeros((0, 0))
        self.extra_keys: list[FloatArray] = []
        self.extra_values: list[FloatArray] = []

    @property
    def name(self) -> str:
        return f"knn k={self.k} {self.weighting}"

    def fit(self, X: FloatArray, quality: FloatArray) -> KNNEstimator:
        """Every LLM's memory = the training embeddings ``X`` ``(n, d)`` with its column of ``quality`` ``(n, M)``
        (stored once, shared; online additions are kept per LLM)."""
        X = np.asarray(X, dtype=np.float64)
        Q = np.asarray(quality, dtype=np.float64)
        if X.ndim != 2 or Q.ndim != 2 or Q.shape[0] != X.shape[0] or not np.all(np.isfinite(X)):
            raise InputError(f"KNNEstimator.fit needs finite X (n, d) and quality (n, M), got {X.shape}, {Q.shape}")
        self.base, self.base_values = unit_rows(X), Q.copy()
        self.extra_keys = [np.zeros((0, X.shape[1])) for _ in range(Q.shape[1])]
        self.extra_values = [np.zeros(0) for _ in range(Q.shape[1])]
        return self

    @property
    def n_arms(self) -> int:
        return int(self.base_values.shape[1])

    def predict(self, X: FloatArray) -> FloatArray:
        """``(n, M)`` estimated quality of every LLM on the rows of ``X``."""
        if not self.extra_keys:
            raise InputError("KNNEstimator is not fitted")
        U = unit_rows(np.asarray(X, dtype=np.float64))
        out = np.full((U.shape[0], self.n_arms), self.prior)
        grown = [a for a in range(self.n_arms) if self.extra_values[a].size]
        for i in range(0, U.shape[0], _CHUNK):
            S_base = U[i : i + _CHUNK] @ self.base.T
            if self.base.shape[0]:  # one neighbour search serves every LLM without online additions
                out[i : i + _CHUNK] = _weighted_top(S_base, self.base_values, self.k, self.weighting)
            for a in grown:
                S = np.hstack([S_base, U[i : i + _CHUNK] @ self.extra_keys[a].T])
                V = np.concatenate([self.base_values[:, a], self.extra_values[a]])[:, None]
                out[i : i + _CHUNK, a] = _weighted_top(S, V, self.k, self.weighting)[:, 0]
        return out

    def update(self, x: FloatArray, arm: int, quality: float) -> None:
        """Bandit feedback: only LLM ``arm``'s memory gains ``(x, quality)``."""
        u = unit_rows(np.asarray(x, dtype=np.float64).reshape(1, -1))
        self.extra_keys[arm] = np.vstack([self.extra_keys[arm], u])
        self.extra_values[arm] = np.append(self.extra_values[arm], float(quality))
