"""Ridge-regression policies: greedy / ε-greedy ridge, LinUCB and linear Thompson sampling.

All three keep, per model ``k``, the ridge statistics ``A_k = λI + Σ x xᵀ`` and ``b_k = Σ r x``
with ``A_k^{-1}`` maintained by Sherman–Morrison (one round) or Woodbury (a batch), and
``θ_k = A_k^{-1} b_k``. With ``shared=False`` (default, "disjoint" LinUCB of Li et al. 2010)
there is one model per arm; with ``shared=True`` one model is pooled over arms, which is the
right choice when arms come with their own feature rows (contexts ``(M, d)``).

They differ only in how scores become a distribution:

* greedy / ε-greedy: uniform over the arms maximising ``θᵀx``, mixed with ε-uniform;
* LinUCB: uniform over the maximisers of ``θᵀx + α·sqrt(xᵀA^{-1}x)`` (random tie-breaking);
* LinTS: ``P(arm = argmax of s)`` with ``s ~ N(θᵀx, v²·xᵀA^{-1}x)`` the posterior score
  distribution (Agrawal & Goyal 2013). The vector is a Monte-Carlo estimate from
  ``n_prob_samples`` draws of the *score* vector (an M-dim Gaussian, so no d×d Cholesky is
  ever needed), and the action is drawn from exactly that vector, so logged propensities are
  the true ones of the behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from banditroute.core.linalg import sherman_morrison, woodbury
from banditroute.core.sampling import argmax_uniform, mix_uniform, sample_categorical
from banditroute.core.types import BatchDecision, FloatArray, IntArray
from banditroute.core.validation import check_int, check_positive, check_unit_interval
from banditroute.policies.base import Policy


class RidgePolicy(Policy):
    """Greedy (``epsilon=0``) or ε-greedy ridge regression per arm.

    Args:
        lam: ridge regulariser λ (``A = λI`` initially).
        scale_lam_by_dim: use ``λ·d`` instead of ``λ`` (keeps the prior's trace per unit
            feature constant as ``d`` grows).
        epsilon: probability of a uniformly random arm.
        shared: one pooled model instead of one per arm.
    """

    name = "egreedy"

    def __init__(
        self,
        n_arms: int,
        dim: int,
        *,
        lam: float = 1.0,
        scale_lam_by_dim: bool = False,
        epsilon: float = 0.0,
        shared: bool = False,
        reward_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(n_arms, dim, reward_range=reward_range)
        lam = check_positive(lam, "lam")
        self.epsilon = check_unit_interval(epsilon, "epsilon")
        self.shared = bool(shared)
        self.scale_lam_by_dim = bool(scale_lam_by_dim)
        self.lam_eff = lam * dim if scale_lam_by_dim else lam
        self.config.update(lam=lam, scale_lam_by_dim=self.scale_lam_by_dim, epsilon=self.epsilon, shared=self.shared)
        k = 1 if self.shared else n_arms
        self.A = np.tile(np.eye(dim) * self.lam_eff, (k, 1, 1))
        self.A_inv = np.tile(np.eye(dim) / self.lam_eff, (k, 1, 1))
        self.b = np.zeros((k, dim))
        self.theta = np.zeros((k, dim))
        self.counts = np.zeros(n_arms, dtype=np.int64)

    # -------------------------------------------------------------- scores
    def _model_of_arm(self) -> IntArray:
        return np.zeros(self.n_arms, dtype=np.int64) if self.shared else np.arange(self.n_arms)

    def _means(self, X: FloatArray) -> FloatArray:
        """``θ_{k(a)}ᵀ x_a`` for every row and arm, shape ``(n, M)``."""
        theta = self.theta[self._model_of_arm()]  # (M, d)
        if self._shared_context(X):
            return X[:, 0, :] @ theta.T
        return np.einsum("nmd,md->nm", X, theta)

    def _variances(self, X: FloatArray) -> FloatArray:
        """``x_aᵀ A_{k(a)}^{-1} x_a`` for every row and arm, shape ``(n, M)``."""
        A_inv = self.A_inv[self._model_of_arm()]  # (M, d, d)
        if self._shared_context(X):
            X0 = X[:, 0, :]
            Z = X0 @ A_inv.transpose(1, 0, 2).reshape(self.dim, -1)  # (n, M*d)
            return np.einsum("nmd,nd->nm", Z.reshape(X0.shape[0], self.n_arms, self.dim), X0)
        return np.einsum("nmd,mde,nme->nm", X, A_inv, X)

    def _probs(self, X: FloatArray, rng: np.random.Generator) -> FloatArray:
        return mix_uniform(argmax_uniform(self._means(X)), self.epsilon)

    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        probs = self._probs(X, rng)
        return BatchDecision(actions=sample_categorical(probs, rng), probs=probs)

    # -------------------------------------------------------------- learning
    def _learn_batch(
        self, X: FloatArray, actions: IntArray, probs: FloatArray, rewards: FloatArray, info: Mapping[str, Any]
    ) -> None:
        rows = X[np.arange(X.shape[0]), actions]  # (n, d): the chosen arm's features
        models = self._model_of_arm()[actions]
        for k in np.unique(models):
            sel = models == k
            Xk, rk = rows[sel], rewards[sel]
            if Xk.shape[0] == 1:
                self.A_inv[k] = sherman_morrison(self.A_inv[k], Xk[0])
            else:
                self.A_inv[k] = woodbury(self.A_inv[k], Xk)
            self.A[k] += Xk.T @ Xk
            self.b[k] += rk @ Xk
            self.theta[k] = self.A_inv[k] @ self.b[k]
        np.add.at(self.counts, actions, 1)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"A": self.A, "A_inv": self.A_inv, "b": self.b, "theta": self.theta, "counts": self.counts}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.A, self.A_inv, self.b = state["A"], state["A_inv"], state["b"]
        self.theta, self.counts = state["theta"], state["counts"]


class LinUCB(RidgePolicy):
    """Disjoint LinUCB (Li et al. 2010): optimism ``θᵀx + α·sqrt(xᵀA^{-1}x)``, random tie-breaks.

    ``epsilon > 0`` mixes in uniform exploration so the logged propensities stay positive
    (useful when the log feeds off-policy evaluation).
    """

    name = "linucb"

    def __init__(self, n_arms: int, dim: int, *, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(n_arms, dim, **kwargs)
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.config["alpha"] = self.alpha

    def _probs(self, X: FloatArray, rng: np.random.Generator) -> FloatArray:
        width = np.sqrt(np.maximum(self._variances(X), 0.0))
        return mix_uniform(argmax_uniform(self._means(X) + self.alpha * width), self.epsilon)


class LinTS(RidgePolicy):
    """Linear Thompson sampling with posterior ``θ ~ N(θ̂, v² A^{-1})`` per model.

    Args:
        v: posterior scale.
        n_prob_samples: Monte-Carlo draws used to compute the decision's probability vector.
    """

    name = "lints"

    def __init__(self, n_arms: int, dim: int, *, v: float = 0.5, n_prob_samples: int = 512, **kwargs: Any) -> None:
        super().__init__(n_arms, dim, **kwargs)
        self.v = check_positive(v, "v")
        self.n_prob_samples = check_int(n_prob_samples, "n_prob_samples")
        self.config.update(v=self.v, n_prob_samples=self.n_prob_samples)

    def _probs(self, X: FloatArray, rng: np.random.Generator) -> FloatArray:
        mean = self._means(X)  # (n, M)
        n, M, K = X.shape[0], self.n_arms, self.n_prob_samples
        z = rng.standard_normal((n, K, M))
        if self.shared:
            # One pooled θ: arm scores are correlated, cov = v² X A^{-1} Xᵀ (M×M per row).
            cov = self.v**2 * np.einsum("nmd,de,nke->nmk", X, self.A_inv[0], X)
            L = np.linalg.cholesky(cov + 1e-12 * np.eye(M))
            scores = mean[:, None, :] + np.einsum("nij,nkj->nki", L, z)
        else:
            sd = self.v * np.sqrt(np.maximum(self._variances(X), 0.0))
            scores = mean[:, None, :] + sd[:, None, :] * z
        winners = np.argmax(scores, axis=-1)  # (n, K)
        counts = np.zeros((n, M))
        np.add.at(counts, (np.repeat(np.arange(n), K), winners.ravel()), 1.0)
        return mix_uniform(counts / K, self.epsilon)
