"""What routers see of a query: reduced embedding features, and cost estimates before the call.

- :class:`Featurizer`: PCA of the training embeddings to ``k`` dimensions, rows scaled to unit
  norm, a one-hot of the query's k-means cluster and a constant 1 (a bias feature). Every contextual baseline
  (LinUCB, ε-greedy, HPG, MixLLM, the cascade) uses these same contexts; PILOT learns its own
  projection instead (:mod:`banditroute.llm.pilot`).
- :class:`CostModel`: when the cost is known before the call (prompt-priced tables) the estimate
  and bound are the cost itself. Otherwise MixLLM's length predictor in cost form: a ridge
  regression per LLM of log cost on ``(features, log prompt tokens, 1)``, fitted on the training
  split; the admission bound is ``margin ×`` the LLM's largest training cost (as a provider's
  max-tokens limit bounds a call) and never below the estimate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_int, check_positive


def unit_rows(X: FloatArray) -> FloatArray:
    """Rows scaled to unit Euclidean norm (zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    out: FloatArray = X / np.where(norms > 0, norms, 1.0)
    return out


class Featurizer:
    """``(unit PCA-k projection, one-hot of the nearest of K cluster centres, 1)``: ``k + K + 1`` features.

    PCA and k-means (``scipy.cluster.vq.kmeans2``, k-means++ seeded by ``seed``) are fitted on the
    training embeddings only. The cluster indicator is our frozen-embedding stand-in for MixLLM's
    tag-cluster fine-tuning, which pulls each query towards its domain centre [ours]: a linear
    reward model then holds one intercept per domain plus a linear trend within it, which on
    LLMRouter's table predicts per-query quality markedly better than the projection alone.
    ``clusters=0`` drops the indicator.
    """

    def __init__(self, k: int = 32, clusters: int = 32, seed: int = 0) -> None:
        self.k = check_int(k, "k")
        self.clusters = check_int(clusters, "clusters", minimum=0)
        self.seed = check_int(seed, "seed", minimum=0)
        self.mean: FloatArray | None = None
        self.components: FloatArray | None = None
        self.centres: FloatArray = np.zeros((0, 0))

    def fit(self, E: FloatArray) -> Featurizer:
        E = np.asarray(E, dtype=np.float64)
        if E.ndim != 2 or E.shape[0] < max(2, self.clusters):
            raise InputError(f"Featurizer.fit needs at least max(2, clusters) embedding rows, got shape {E.shape}")
        self.mean = E.mean(axis=0)
        _, _, Vt = np.linalg.svd(E - self.mean, full_matrices=False)
        self.components = Vt[: min(self.k, Vt.shape[0])]
        if self.clusters:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="One of the clusters is empty")
                self.centres, _ = kmeans2(E, self.clusters, minit="++", seed=np.random.default_rng(self.seed))
        return self

    @property
    def dim(self) -> int:
        if self.components is None:
            raise InputError("Featurizer is not fitted")
        return int(self.components.shape[0]) + self.clusters + 1

    def transform(self, E: FloatArray) -> FloatArray:
        if self.components is None or self.mean is None:
            raise InputError("Featurizer is not fitted")
        E = np.asarray(E, dtype=np.float64)
        Z = unit_rows((E - self.mean) @ self.components.T)
        onehot = np.zeros((E.shape[0], self.clusters))
        if self.clusters:
            dist = (E**2).sum(axis=1)[:, None] - 2 * E @ self.centres.T + (self.centres**2).sum(axis=1)
            onehot[np.arange(E.shape[0]), np.argmin(dist, axis=1)] = 1.0
        return np.hstack([Z, onehot, np.ones((E.shape[0], 1))])


@dataclass(frozen=True)
class CostModel:
    """Cost estimate and admission bound per (query, LLM) (module docstring).

    Build with :meth:`fit`; ``coef`` is ``None`` when costs are known before the call.
    """

    coef: FloatArray | None  # (M, p): log cost ≈ [features, log tokens, 1] @ coef[m]
    bound: FloatArray | None  # (M,): admission bound per LLM

    @classmethod
    def fit(
        cls,
        features: FloatArray,
        tokens: FloatArray,
        cost: FloatArray,
        *,
        known: bool,
        margin: float = 2.0,
        lam: float = 1.0,
    ) -> CostModel:
        if known:
            return cls(None, None)
        margin = check_positive(margin, "margin")
        Z = _design(features, tokens)
        y = np.log(np.maximum(np.asarray(cost, dtype=np.float64), 1e-12))  # (n, M)
        coef = np.asarray(
            np.linalg.solve(Z.T @ Z + check_positive(lam, "lam") * np.eye(Z.shape[1]), Z.T @ y).T, dtype=np.float64
        )
        return cls(coef, margin * np.asarray(cost).max(axis=0))

    def predict(self, features: FloatArray, tokens: FloatArray, actual: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(estimate, bound)``, each ``(n, M)``; ``actual`` is used only when the cost is known."""
        if self.coef is None or self.bound is None:
            return np.asarray(actual, dtype=np.float64), np.asarray(actual, dtype=np.float64)
        est = np.exp(_design(features, tokens) @ self.coef.T)
        return est, np.maximum(est, self.bound)


def _design(features: FloatArray, tokens: FloatArray) -> FloatArray:
    """``(features, log(1 + tokens), 1)``: the regressors of log cost, with an intercept."""
    F = np.asarray(features, dtype=np.float64)
    return np.hstack([F, np.log1p(np.asarray(tokens, dtype=np.float64))[:, None], np.ones((F.shape[0], 1))])
