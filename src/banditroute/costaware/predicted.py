"""Routing on per-LLM quality estimates: warm start from training data, optional online learning, a budget.

:class:`PredictedRouter` routes query ``t`` to ``argmax_l q̂_l(x_t) − μ ĉ_l / c_ref`` among the
LLMs whose cost bound fits what is left of the budget, where ``q̂`` comes from any
:class:`QualityEstimator` fitted on the training split (kNN, task-aware, ...), ``ĉ`` is the
cost estimate known before the call and ``c_ref`` the dearest LLM's mean training cost. With a
budget, ``μ`` is set by dual pacing (:class:`~banditroute.costaware.knapsack.DualPacer`, as
``mixllm-budget``) started at the price that meets the budget on *out-of-fold* training
predictions (in-sample kNN predictions would include the query itself); without one, ``μ = 1/λ``.
``learn=True`` feeds each observed quality back to the estimator (bandit feedback: the called
LLM only) — warm start + online; ``learn=False`` is the warm start alone.

:func:`cross_fit` gives the out-of-fold predictions and :func:`select` picks an estimator's
settings (k, weighting, regularisation, ...) by validation on the training split only: the
candidate whose out-of-fold routing has the best quality at cost ≤ each of ``targets`` (fractions
of the best LLM's cost), averaged over the targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError, check_int, check_positive
from banditroute.costaware.knapsack import ABSTAIN, DualPacer, calibrate_price
from banditroute.costaware.online import STOP, OnlineRouter, Split
from banditroute.costaware.quality_cost import best_quality_within
from banditroute.costaware.routers import reference_cost

PRICES = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 121)])
TARGETS = (0.2, 0.25, 0.3)


class QualityEstimator(Protocol):
    """Per-LLM quality estimates on feature rows, updated online with bandit feedback."""

    @property
    def n_arms(self) -> int: ...

    def predict(self, X: FloatArray) -> FloatArray: ...

    def update(self, x: FloatArray, arm: int, quality: float) -> None: ...


Build = Callable[[IntArray], QualityEstimator]


def cross_fit(build: Build, X: FloatArray, n_rows: int, *, folds: int = 5, seed: int = 0) -> FloatArray:
    """Out-of-fold predictions ``(n_rows, M)``: each of ``folds`` random folds predicted by an estimator
    ``build(rows)`` fitted on the other folds (``X``: the estimator's feature rows)."""
    folds = check_int(folds, "folds", minimum=2)
    fold = np.random.default_rng(seed).permutation(n_rows) % folds
    out: FloatArray | None = None
    for f in range(folds):
        est = build(np.flatnonzero(fold != f))
        pred = est.predict(X[fold == f])
        if out is None:
            out = np.zeros((n_rows, pred.shape[1]))
        out[fold == f] = pred
    assert out is not None
    return out


def routing_score(pred: FloatArray, quality: FloatArray, cost: FloatArray, targets: Sequence[float] = TARGETS) -> float:
    """Mean over ``targets`` of the best quality (% of the best LLM's) that routing by
    ``argmax(pred − μ cost / c_ref)`` reaches at cost ≤ target × the best LLM's, over the price grid."""
    ref = int(np.argmax(quality.mean(axis=0)))
    rows = np.arange(quality.shape[0])
    c_ref = float(cost.mean(axis=0).max())
    q_pct, c_pct = [], []
    for mu in PRICES:
        arm = np.argmax(pred - mu * cost / c_ref, axis=1)
        q_pct.append(100 * quality[rows, arm].mean() / quality[:, ref].mean())
        c_pct.append(100 * cost[rows, arm].mean() / cost[:, ref].mean())
    best = [best_quality_within(np.array(c_pct), np.array(q_pct), 100 * t) for t in targets]
    return float(np.nanmean(np.where(np.isnan(best), 0.0, best)))


def select(
    candidates: dict[str, Build], X: FloatArray, quality: FloatArray, cost: FloatArray, *, folds: int = 5, seed: int = 0
) -> tuple[str, FloatArray, dict[str, float]]:
    """``(best label, its out-of-fold predictions, every candidate's score)`` by :func:`routing_score`."""
    if not candidates:
        raise InputError("select needs at least one candidate")
    scores: dict[str, float] = {}
    preds: dict[str, FloatArray] = {}
    for label, build in candidates.items():
        preds[label] = cross_fit(build, X, quality.shape[0], folds=folds, seed=seed)
        scores[label] = routing_score(preds[label], quality, cost)
    best = max(scores, key=lambda k: scores[k])
    return best, preds[best], scores


class PredictedRouter(OnlineRouter):
    """Route by estimated quality minus priced cost (module docstring).

    Args:
        estimator: fitted on the training split (mutated online when ``learn``; pass a fresh copy per run).
        X_stream: the estimator's feature rows of the stream queries.
        train: the training split (cost scale, pacing calibration).
        oof_pred: out-of-fold predictions of the training split (``(n_train, M)``).
        learn: update the estimator with the feedback of every call.
        lam: trade-off without a budget (``μ = 1/λ``; ``inf``: quality only).
        pace_eta: dual step of the budget pacing.
    """

    def __init__(
        self,
        estimator: QualityEstimator,
        X_stream: FloatArray,
        train: Split,
        oof_pred: FloatArray,
        *,
        learn: bool = True,
        lam: float = float("inf"),
        pace_eta: float = 0.01,
        name: str = "predicted",
    ) -> None:
        self.estimator = estimator
        self.X = np.asarray(X_stream, dtype=np.float64)
        self.c_ref = reference_cost(train)
        self.oof = np.asarray(oof_pred, dtype=np.float64)
        if self.oof.shape != train.quality.shape:
            raise InputError(
                f"oof_pred must have the training split's shape {train.quality.shape}, got {self.oof.shape}"
            )
        self.train_cost = train.est_cost
        self.learn = learn
        self.mu_fixed = 0.0 if np.isinf(lam) else 1.0 / check_positive(lam, "lam")
        self.pace_eta = check_positive(pace_eta, "pace_eta", allow_zero=True)
        self.name = name

    def start(self, stream: Split, budget: float | None) -> None:
        if self.X.shape[0] != stream.n_rows:
            raise InputError(f"X_stream has {self.X.shape[0]} rows for a stream of {stream.n_rows}")
        self.est, self.upper = stream.est_cost, stream.upper_cost
        self.pacer: DualPacer | None = None
        if budget is not None:
            mu0 = calibrate_price(self.oof, self.train_cost, budget / stream.n_rows, self.c_ref)
            self.pacer = DualPacer(budget, stream.n_rows, mu0, eta=self.pace_eta, scale=self.c_ref)

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        if called:
            return STOP
        q = self.estimator.predict(self.X[t : t + 1])[0]
        mu = self.mu_fixed if self.pacer is None else self.pacer.mu
        s = q - mu * self.est[t] / self.c_ref
        if self.pacer is not None:
            arm = self.pacer.choose(s, self.upper[t])
            return STOP if arm == ABSTAIN else arm
        return int(np.argmax(s))

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        if self.pacer is not None:
            self.pacer.charge(cost)
        if self.learn:
            self.estimator.update(self.X[t], arm, quality)
