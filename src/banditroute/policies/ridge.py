"""Ridge-regression policies: greedy / ε-greedy ridge, LinUCB and linear Thompson sampling.

All three keep, per model ``k``, the ridge statistics ``b_k = Σ r x`` and ``A_k^{-1}`` for
``A_k = λI + Σ x xᵀ``, maintained in place by Sherman–Morrison (one row) or Woodbury (several rows
of a batch), and ``θ_k = A_k^{-1} b_k``. ``A_k`` itself is never read, so it is not stored: at
d = 768 keeping it cost a third of every update (one more d×d read-write per row).
With ``shared=False`` (default, "disjoint" LinUCB of Li et al. 2010) there is one model per
arm; with ``shared=True`` one model is pooled over arms, which is the right choice when arms
come with their own feature rows (contexts ``(M, d)``).

They differ only in how scores become a distribution:

* greedy / ε-greedy: uniform over the arms maximising ``θᵀx``, mixed with ε-uniform;
* LinUCB: uniform over the maximisers of ``θᵀx + α·sqrt(xᵀA^{-1}x)`` (random tie-breaking);
* LinTS: ``P(arm = argmax of s)`` with ``s ~ N(θᵀx, v²·xᵀA^{-1}x)`` the posterior score
  distribution (Agrawal & Goyal 2013). The vector is a Monte-Carlo estimate from
  ``n_prob_samples`` draws of the *score* vector (an M-dim Gaussian, so no d×d Cholesky is
  ever needed), and the action is drawn from exactly that vector, so logged propensities are
  the true ones of the behaviour.

Restricted to a set of allowed arms (``act_batch(..., allowed=mask)``), greedy and LinUCB take the
maximisers over the allowed arms' scores and spread ε uniformly over the allowed arms: exactly the
policy run on the subset. (A slot that was never trained has LinUCB's widest confidence bound;
renormalising the full argmax would leave nothing for the allowed arms.) LinTS renormalises its
win probabilities, the contract's default.

:meth:`RidgePolicy.means` and :meth:`RidgePolicy.widths` are the public scores (ridge mean and
confidence width per arm) for routers built on these statistics (``llm/``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from banditroute.core.linalg import sherman_morrison_, woodbury_
from banditroute.core.sampling import (
    argmax_uniform,
    argmax_uniform_row,
    mix_uniform,
    mix_uniform_row,
    sample_categorical,
    sample_categorical_row,
)
from banditroute.core.types import BatchDecision, Decision, FloatArray, IntArray
from banditroute.core.validation import check_contexts, check_int, check_positive, check_unit_interval
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
        self.A_inv = np.tile(np.eye(dim) / self.lam_eff, (k, 1, 1))
        self.b = np.zeros((k, dim))
        self.theta = np.zeros((k, dim))
        self.counts = np.zeros(n_arms, dtype=np.int64)
        self._models = np.zeros(n_arms, dtype=np.int64) if self.shared else np.arange(n_arms)

    # -------------------------------------------------------------- scores
    def means(self, X: Any) -> FloatArray:
        """Ridge means ``θ_{k(a)}ᵀ x_a``, shape ``(n, M)``, for contexts ``(n, d)`` or ``(n, M, d)``."""
        return self._means(self._broadcast(check_contexts(X, self.n_arms, self.dim)))

    def widths(self, X: Any) -> FloatArray:
        """Confidence widths ``sqrt(x_aᵀ A_{k(a)}^{-1} x_a)``, shape ``(n, M)``, for the same contexts."""
        variances = self._variances(self._broadcast(check_contexts(X, self.n_arms, self.dim)))
        out: FloatArray = np.sqrt(np.maximum(variances, 0.0))
        return out

    def _shared_rows(self, X: FloatArray) -> FloatArray | None:
        """The ``(n, d)`` contexts when every arm sees the same one, else ``None``. The score
        methods take contexts ``(n, M, d)`` and, from the per-round path (``_act_one``), an
        unbroadcast ``(n, d)``: building the broadcast view would cost more than the row's maths."""
        if X.ndim == 2:
            return X
        return X[:, 0, :] if self._shared_context(X) else None

    def _means(self, X: FloatArray) -> FloatArray:
        """``θ_{k(a)}ᵀ x_a`` for every row and arm, shape ``(n, M)``, for contexts ``(n, M, d)``
        (or ``(n, d)``, :meth:`_shared_rows`)."""
        theta = self.theta[self._models] if self.shared else self.theta  # (M, d)
        X0 = self._shared_rows(X)
        if X0 is not None:
            return X0 @ theta.T
        return np.einsum("nmd,md->nm", X, theta)

    def _variances(self, X: FloatArray) -> FloatArray:
        """``x_aᵀ A_{k(a)}^{-1} x_a`` for every row and arm, shape ``(n, M)``, for the contexts of :meth:`_means`.

        Written as products of the stored ``A^{-1}`` stack with the contexts, never an indexed
        copy of it: at d = 768 the M inverses are 38 MB, and reading them once is the cost of a
        decision.
        """
        n, X0 = X.shape[0], self._shared_rows(X)
        if self.shared:
            A_inv = self.A_inv[0]
            if X0 is not None:  # one model, one context: the same variance for every arm
                return np.repeat(np.einsum("nd,nd->n", X0 @ A_inv, X0)[:, None], self.n_arms, axis=1)
            rows = X.reshape(n * self.n_arms, self.dim)
            return np.einsum("nd,nd->n", rows @ A_inv, rows).reshape(n, self.n_arms)
        if X0 is not None:
            return np.einsum("mnd,nd->nm", X0 @ self.A_inv, X0)  # (M, n, d): one matmul per arm
        return np.einsum("mnd,nmd->nm", X.transpose(1, 0, 2) @ self.A_inv, X)

    def _scores(self, X: FloatArray) -> FloatArray:
        """What the greedy rule maximises, ``(n, M)``: the ridge means."""
        return self._means(X)

    def _score_row(self, X: FloatArray) -> list[float]:
        """``_scores`` of the single row of ``X`` as Python floats."""
        out: list[float] = self._scores(X)[0].tolist()
        return out

    def _probs(self, X: FloatArray, rng: np.random.Generator) -> FloatArray:
        return mix_uniform(argmax_uniform(self._scores(X)), self.epsilon)

    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        probs = self._probs(X, rng)
        return BatchDecision(actions=sample_categorical(probs, rng), probs=probs)

    def _act_one(self, X: FloatArray, rng: np.random.Generator) -> Decision:
        """``_act_batch`` on one row with the rule applied to Python floats (``core/sampling.py``'s
        ``*_row`` functions): the same operations, a third of the per-round cost at M = 8."""
        greedy = argmax_uniform_row(self._score_row(X))
        if greedy is None:  # a non-finite score: the vectorised rule decides how NaN/inf compare
            return super()._act_one(X, rng)
        probs = mix_uniform_row(greedy, self.epsilon)
        return Decision(action=sample_categorical_row(probs, rng), probs=np.array(probs))

    def _restricted_probs(self, X: FloatArray, mask: np.ndarray, rng: np.random.Generator) -> FloatArray:
        """Maximisers over the allowed arms, ε spread uniformly over them (module docstring)."""
        greedy = argmax_uniform(np.where(mask, self._scores(X), -np.inf))
        uniform = mask / mask.sum(axis=1, keepdims=True)
        out: FloatArray = (1.0 - self.epsilon) * greedy + self.epsilon * uniform
        return out

    # -------------------------------------------------------------- learning
    def _learn_batch(
        self, X: FloatArray, actions: IntArray, probs: FloatArray, rewards: FloatArray, info: Mapping[str, Any]
    ) -> None:
        """Sherman–Morrison for an arm hit by one row, Woodbury for several; all in place."""
        rows = X[np.arange(X.shape[0]), actions]  # (n, d): the chosen arm's features
        models = self._models[actions]
        for k in np.flatnonzero(np.bincount(models)):  # the models hit, in order
            sel = models == k
            self._update(int(k), rows[sel], rewards[sel])
        self.counts += np.bincount(actions, minlength=self.n_arms)

    def _learn_one(
        self, x: FloatArray, action: IntArray, probs: FloatArray, reward: FloatArray, info: Mapping[str, Any]
    ) -> None:
        """The per-round call: the chosen arm's features straight from ``x``, no grouping."""
        a = int(action)
        self._update(int(self._models[a]), (x if x.ndim == 1 else x[a])[None], reward[None])
        self.counts[a] += 1

    def _update(self, k: int, Xk: FloatArray, rk: FloatArray) -> None:
        """Add rows ``Xk`` with rewards ``rk`` to model ``k``: ``b += Xᵀr``, ``A^{-1} ← (A + XᵀX)^{-1}``
        in place, and ``θ = A^{-1}b`` read in the same pass over ``A^{-1}``."""
        b = self.b[k] + rk @ Xk
        if Xk.shape[0] == 1:
            self.theta[k] = sherman_morrison_(self.A_inv[k], Xk[0], b)
        else:
            self.theta[k] = woodbury_(self.A_inv[k], Xk, b)  # raises before any change if A^{-1} is not SPD
        self.b[k] = b

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"A_inv": self.A_inv, "b": self.b, "theta": self.theta, "counts": self.counts}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        # C order: the in-place BLAS updates of core.linalg work on C-ordered d×d blocks
        self.A_inv, self.b = np.ascontiguousarray(state["A_inv"]), state["b"]
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

    def _scores(self, X: FloatArray) -> FloatArray:
        """The optimistic scores ``θᵀx + α·sqrt(xᵀA^{-1}x)``."""
        width = np.sqrt(np.maximum(self._variances(X), 0.0))
        out: FloatArray = self._means(X) + self.alpha * width
        return out

    def _score_row(self, X: FloatArray) -> list[float]:
        """``_scores`` on one row with the elementwise steps on Python floats: the same IEEE
        operations in the same order. (``max`` may keep a ``-0.0`` where ``np.maximum`` gives
        ``0.0``; the score then differs only in the sign of a zero, which no comparison sees. A NaN
        variance stays NaN, and the caller's non-finite check sends the row to the batch path.)"""
        alpha = self.alpha
        means, variances = self._means(X)[0].tolist(), self._variances(X)[0].tolist()
        return [m + alpha * math.sqrt(max(v, 0.0)) for m, v in zip(means, variances, strict=True)]


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

    # Thompson sampling's vector is renormalised over the allowed arms, not argmaxed (module docstring),
    # and its single-row decision is the batch one (the greedy row rule does not apply).
    _restricted_probs = Policy._restricted_probs
    _act_one = Policy._act_one

    def _probs(self, X: FloatArray, rng: np.random.Generator) -> FloatArray:
        mean = self._means(X)  # (n, M)
        n, M, K = X.shape[0], self.n_arms, self.n_prob_samples
        z = rng.standard_normal((n, K, M))
        if self.shared:
            # One pooled θ: arm scores are correlated, cov = v² X A^{-1} Xᵀ (M×M per row).
            cov = self.v**2 * (X @ self.A_inv[0] @ X.transpose(0, 2, 1))
            L = np.linalg.cholesky(cov + 1e-12 * np.eye(M))
            scores = mean[:, None, :] + z @ L.transpose(0, 2, 1)  # each draw L z has covariance L Lᵀ = cov
        else:
            sd = self.v * np.sqrt(np.maximum(self._variances(X), 0.0))
            scores = mean[:, None, :] + sd[:, None, :] * z
        winners = np.argmax(scores, axis=-1)  # (n, K)
        counts = np.bincount((winners + M * np.arange(n)[:, None]).ravel(), minlength=n * M).reshape(n, M)
        return mix_uniform(counts / K, self.epsilon)
