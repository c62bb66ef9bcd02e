"""Class expressiveness: the best policy of each class, fitted with full information.

The paper's offline claim (docs/specs/hpg.md §4–5) is about policy *classes*, not learning: with every
model's reward known on a training split, how close to the per-query oracle can the best
log-linear policy get, and how much closer the best log-quadratic one? Both are fitted by
maximising the expected reward on the train split,

    J(π) = (1/n) Σ_i Σ_m π(m|x_i) r_im − (λ/2) · penalty,

and compared on a held-out split by the sub-optimality gap
``E_q[max_m r(q,m)] − E_q E_{m~π}[r(q,m)]`` (the paper's metric; 68.0% lower for log-quadratic
than log-linear on ESCI).

Classes (``x̃ = (x, 1)``, so each class contains a per-model bias):

- ``constant``: the best single model on the train split (the "best model in hindsight").
- ``loglinear``: ``π(m|x) ∝ exp(w_mᵀx̃)``, penalty ``‖W‖_F²``.
- ``logquadratic``: ``π(m|x) ∝ exp(x̃ᵀΘ_m x̃)`` with ``Θ_m = A_m C_mᵀ`` of rank ``r``. The penalty
  ``‖A‖_F² + ‖C‖_F²`` is the variational form of the nuclear norm
  (``min_{AC^T=Θ} (‖A‖² + ‖C‖²)/2 = ‖Θ‖_*``), i.e. the same nuclear-norm geometry HPG constrains
  online. Rank ``r ≥ 1`` includes the log-linear class (``Θ_m = e_{d+1} w_mᵀ``).

The objective is non-convex in (A, C) and, for log-linear, concave only in the logits' span, so
both are solved by L-BFGS from a seeded start; λ is chosen on a validation part of the train split.
Contexts are standardised with train-split statistics. Everything is numpy/scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from banditroute.core.sampling import softmax
from banditroute.core.scaling import column_moments
from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_finite, check_int

CLASSES = ("constant", "loglinear", "logquadratic")


@dataclass(frozen=True)
class FittedPolicy:
    """Parameters of one fitted class; :meth:`probs` maps raw contexts to ``(n, M)`` probabilities."""

    kind: str
    mean: FloatArray
    scale: FloatArray
    params: FloatArray
    n_arms: int
    rank: int = 0
    lam: float = 0.0

    def features(self, X: FloatArray) -> FloatArray:
        return _augment(np.asarray(X, dtype=np.float64), self.mean, self.scale)

    def probs(self, X: FloatArray) -> FloatArray:
        return softmax(_logits(self.kind, self.params, self.features(X), self.n_arms, self.rank))


def _augment(X: FloatArray, mean: FloatArray, scale: FloatArray) -> FloatArray:
    """``x̃ = ((x − mean) / scale, 1)`` for every row: standardised features and the bias feature."""
    return np.hstack([(X - mean) / scale, np.ones((X.shape[0], 1))])


def _split_quadratic(params: FloatArray, D: int, M: int, r: int) -> tuple[FloatArray, FloatArray]:
    A = params[: M * D * r].reshape(M, D, r)
    C = params[M * D * r :].reshape(M, D, r)
    return A, C


def _logits(kind: str, params: FloatArray, Xt: FloatArray, M: int, r: int) -> FloatArray:
    n, D = Xt.shape
    if kind == "constant":
        return np.broadcast_to(params, (n, M)).copy()
    if kind == "loglinear":
        return Xt @ params.reshape(D, M)
    A, C = _split_quadratic(params, D, M, r)
    P = np.einsum("nd,mdr->nmr", Xt, A, optimize=True)
    Q = np.einsum("nd,mdr->nmr", Xt, C, optimize=True)
    return np.einsum("nmr,nmr->nm", P, Q, optimize=True)


def objective(
    kind: str, params: FloatArray, Xt: FloatArray, R: FloatArray, lam: float, r: int
) -> tuple[float, FloatArray]:
    """Negative regularised expected reward and its gradient (what L-BFGS minimises).

    ``∂J/∂logit_im = π_im (r_im − Σ_k π_ik r_ik) / n`` (softmax policy gradient with full information),
    chained through the class's logit map.
    """
    n, D = Xt.shape
    M = R.shape[1]
    logits = _logits(kind, params, Xt, M, r)
    pi = softmax(logits)
    value = float(np.sum(pi * R)) / n
    G = pi * (R - np.sum(pi * R, axis=1, keepdims=True)) / n  # dJ/dlogits
    penalty = 0.5 * lam * float(params @ params)
    if kind == "loglinear":
        grad = (Xt.T @ G).ravel()
    else:
        A, C = _split_quadratic(params, D, M, r)
        Q = np.einsum("nd,mdr->nmr", Xt, C, optimize=True)
        P = np.einsum("nd,mdr->nmr", Xt, A, optimize=True)
        gA = np.einsum("nm,nd,nmr->mdr", G, Xt, Q, optimize=True)
        gC = np.einsum("nm,nd,nmr->mdr", G, Xt, P, optimize=True)
        grad = np.concatenate([gA.ravel(), gC.ravel()])
    return -(value - penalty), -(grad - lam * params)


def fit_class(
    kind: str,
    X: FloatArray,
    R: FloatArray,
    *,
    lam: float,
    rank: int = 8,
    seed: int = 0,
    max_iter: int = 500,
) -> FittedPolicy:
    """The best policy of class ``kind`` on ``(X, R)`` under penalty ``lam`` (see the module docstring)."""
    if kind not in CLASSES:
        raise InputError(f"unknown policy class {kind!r}; known: {', '.join(CLASSES)}")
    X = check_finite(np.asarray(X, dtype=np.float64), "contexts")
    R = check_finite(np.asarray(R, dtype=np.float64), "rewards")
    if X.ndim != 2 or R.ndim != 2 or X.shape[0] != R.shape[0] or X.shape[0] < 2:
        raise InputError(f"need contexts (n, d) and rewards (n, M) with the same n ≥ 2, got {X.shape}, {R.shape}")
    rank = check_int(rank, "rank")
    M = R.shape[1]
    mean, scale = column_moments(X)
    if kind == "constant":
        params = np.full(M, -np.inf)
        params[int(np.argmax(R.mean(axis=0)))] = 0.0
        return FittedPolicy(kind, mean, scale, params, M)
    Xt = _augment(X, mean, scale)
    D = Xt.shape[1]
    rng = np.random.default_rng(seed)
    size = D * M if kind == "loglinear" else 2 * M * D * rank
    x0 = np.zeros(size) if kind == "loglinear" else 0.01 * rng.standard_normal(size)
    res = minimize(
        lambda p: objective(kind, p, Xt, R, lam, rank),
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    return FittedPolicy(kind, mean, scale, res.x, M, rank=rank if kind == "logquadratic" else 0, lam=lam)


def gap(probs: FloatArray, R: FloatArray) -> FloatArray:
    """Per-query sub-optimality ``max_m r_m − Σ_m π_m r_m``."""
    out: FloatArray = R.max(axis=1) - np.sum(probs * R, axis=1)
    return out


@dataclass
class ExpressivenessResult:
    """Held-out gaps (mean and 95% bootstrap CI) per class and the log-quadratic vs log-linear reduction."""

    n_train: int
    n_test: int
    gaps: dict[str, tuple[float, float, float]]
    reduction: tuple[float, float, float]  # relative gap reduction of logquadratic over loglinear, with CI
    chosen: dict[str, dict[str, float]] = field(default_factory=dict)
    oracle_reward: float = 0.0
    best_single_reward: float = 0.0


def fit_selected(
    kind: str, X: FloatArray, R: FloatArray, lams: Sequence[float], rank: int, seed: int, max_iter: int
) -> FittedPolicy:
    """Fit on 80% of the train split for each λ, keep the λ with the smallest validation gap, refit on all of it."""
    n = X.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(0.8 * n))
    fit_idx, val_idx = perm[:cut], perm[cut:]
    best_lam, best_gap = lams[0], np.inf
    for lam in lams:
        fitted = fit_class(kind, X[fit_idx], R[fit_idx], lam=lam, rank=rank, seed=seed, max_iter=max_iter)
        g = float(gap(fitted.probs(X[val_idx]), R[val_idx]).mean())
        if g < best_gap:
            best_lam, best_gap = lam, g
    return fit_class(kind, X, R, lam=best_lam, rank=rank, seed=seed, max_iter=max_iter)


def class_expressiveness(
    X: FloatArray,
    R: FloatArray,
    *,
    train_fraction: float = 0.5,
    lams: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
    rank: int = 8,
    seed: int = 0,
    max_iter: int = 500,
    n_boot: int = 1000,
) -> ExpressivenessResult:
    """Fit every class on a random train split, compare held-out gaps (paired bootstrap over test queries)."""
    X = np.asarray(X, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if not 0.0 < train_fraction < 1.0:
        raise InputError(f"train_fraction must be in (0, 1), got {train_fraction}")
    if not lams or any(not np.isfinite(lam) or lam < 0 for lam in lams):
        raise InputError(f"lams must be a non-empty list of finite values ≥ 0, got {list(lams)}")
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    cut = round(train_fraction * n)
    if cut < 5 or n - cut < 2:
        raise InputError(f"too few queries ({n}) for a train/test split at {train_fraction}")
    tr, te = perm[:cut], perm[cut:]
    per_query: dict[str, FloatArray] = {}
    chosen: dict[str, dict[str, float]] = {}
    for kind in CLASSES:
        fitted = fit_selected(kind, X[tr], R[tr], lams, rank, seed, max_iter)
        per_query[kind] = gap(fitted.probs(X[te]), R[te])
        chosen[kind] = {"lam": fitted.lam, "rank": float(fitted.rank)}
    boot = rng.integers(0, len(te), size=(n_boot, len(te)))

    def summary(values: FloatArray) -> tuple[float, float, float]:
        lo, hi = np.percentile(values, [2.5, 97.5])
        return float(values[0]), float(lo), float(hi)

    gaps = {kind: summary(np.concatenate([[g.mean()], g[boot].mean(axis=1)])) for kind, g in per_query.items()}
    ll = np.concatenate([[per_query["loglinear"].mean()], per_query["loglinear"][boot].mean(axis=1)])
    lq = np.concatenate([[per_query["logquadratic"].mean()], per_query["logquadratic"][boot].mean(axis=1)])
    with np.errstate(divide="ignore", invalid="ignore"):
        reduction = summary(np.where(ll > 0, (ll - lq) / ll, 0.0))
    return ExpressivenessResult(
        n_train=len(tr),
        n_test=len(te),
        gaps=gaps,
        reduction=reduction,
        chosen=chosen,
        oracle_reward=float(R[te].max(axis=1).mean()),
        best_single_reward=float(R[te][:, int(np.argmax(R[tr].mean(axis=0)))].mean()),
    )
