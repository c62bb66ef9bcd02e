"""Streaming off-policy evaluation: sufficient statistics that add across shards, and intervals.

Each estimator of :mod:`banditroute.ope.estimators` is a mean of per-sample terms ``g_i`` (SNIPS:
a ratio with the importance weights ``w_i``). An estimator's whole state over a stream is
:class:`Moments` — the count, the means of ``(w, g)`` and their co-moments (merged with Chan,
Golub & LeVeque's parallel update, numerically stable) and the replicate sums of a Poisson
bootstrap — and two shards' moments add exactly (up to rounding) to the moments of their union,
as in vw-estimators, so a service can evaluate time windows or shards separately and merge.

Intervals (level ``1 − α``):

* ``normal``: CLT, ``ĝ ± z·s/√n``; SNIPS by the delta method on ``g − V w``.
* ``bootstrap``: percentile interval of the Poisson bootstrap (every row gets a ``Poisson(1)``
  weight per replicate; Hanley & MacGibbon 2006, Chamandy et al. 2012). Unlike resampling
  ``n`` of ``n`` rows, it streams: replicate sums add across shards.
* ``el``: the Euclidean member of the empirical-likelihood (Cressie–Read) family with the known
  moment ``E_μ[w] = 1`` as an extra constraint (Owen 2001, §3.15; the ``E[w] = 1`` constraint is
  the one of Karampatziakis, Mineiro & Ramdas 2021). Profiling the value (Qin & Lawless 1994),
  the statistic is quadratic and the interval is closed form: centred at the control-variate
  estimate ``ĝ − (C_gw / C_ww)(w̄ − 1)`` with half-width ``z·sqrt((C_gg − C_gw²/C_ww)/n)``
  (``C`` the biased covariances) — narrower than ``normal`` whenever ``g`` correlates with ``w``,
  and computable from the same sufficient statistics, which the log-likelihood member is not.

Every interval is clipped to the reward range when the log declares one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri

from banditroute.core.types import FloatArray
from banditroute.core.validation import (
    InputError,
    check_generator,
    check_int,
    check_probs,
    check_unit_interval,
)
from banditroute.ope.estimators import ESTIMATORS, Inputs, check_estimators, per_sample_terms
from banditroute.ope.log import BanditLog
from banditroute.ope.reward_model import cross_fit

INTERVALS = ("normal", "bootstrap", "el")
# CDF of Poisson(1) at 0..19 (the mass beyond 19 is below 1e-17): inverse-CDF draws are several
# times faster than Generator.poisson, and the bootstrap needs n × B of them per chunk.
_POISSON1_CDF = np.cumsum(np.exp(-1.0) / np.cumprod(np.r_[1.0, np.arange(1.0, 20.0)]))


def poisson1(rng: np.random.Generator, shape: tuple[int, ...]) -> FloatArray:
    """``Poisson(1)`` draws (as floats) by inverting the CDF with one uniform each."""
    out: FloatArray = np.searchsorted(_POISSON1_CDF, rng.random(shape), side="right").astype(np.float64)
    return out


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of ``n`` terms ``(w_i, g_i)`` (see the module docstring).

    Attributes:
        n: number of rows.
        mean: ``(2,)`` means of ``(w, g)``.
        comoment: ``(2, 2)`` ``Σ (z_i − z̄)(z_i − z̄)ᵀ`` for ``z = (w, g)``.
        boot: ``(B, 3)`` Poisson-bootstrap replicate sums ``(Σ P, Σ P w, Σ P g)``.
    """

    n: int
    mean: FloatArray
    comoment: FloatArray
    boot: FloatArray

    @classmethod
    def empty(cls, n_boot: int) -> Moments:
        return cls(0, np.zeros(2), np.zeros((2, 2)), np.zeros((n_boot, 3)))

    @classmethod
    def of(cls, w: FloatArray, g: FloatArray, boot_weights: FloatArray) -> Moments:
        """Moments of one chunk; ``boot_weights`` is ``(n, B)`` Poisson(1) draws."""
        z = np.stack([w, g], axis=1)
        mean = z.mean(axis=0)
        c = z - mean
        boot = np.stack([boot_weights.sum(axis=0), w @ boot_weights, g @ boot_weights], axis=1)
        return cls(len(w), mean, c.T @ c, boot)

    def __add__(self, other: Moments) -> Moments:
        if not isinstance(other, Moments) or other.boot.shape != self.boot.shape:
            raise InputError("can only add Moments with the same number of bootstrap replicates")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, comoment, self.boot + other.boot)

    # ------------------------------------------------------------------ summaries
    def value(self, ratio: bool) -> float:
        w_bar, g_bar = self.mean
        if not ratio:
            return float(g_bar)
        return float(g_bar / w_bar) if w_bar > 0 else float("nan")

    def std_error(self, ratio: bool) -> float:
        """CLT standard error (delta method for the ratio)."""
        if self.n < 2:
            return float("nan")
        S = self.comoment / (self.n - 1)
        if not ratio:
            return float(np.sqrt(max(S[1, 1], 0.0) / self.n))
        v, w_bar = self.value(True), self.mean[0]
        var = S[1, 1] - 2 * v * S[0, 1] + v * v * S[0, 0]
        return float(np.sqrt(max(var, 0.0) / self.n) / w_bar) if w_bar > 0 else float("nan")

    def effective_sample_size(self) -> float:
        """``(Σw)² / Σw²`` (Kish): how many on-policy samples the weighted log is worth."""
        sum_w2 = self.comoment[0, 0] + self.n * self.mean[0] ** 2
        return float((self.n * self.mean[0]) ** 2 / sum_w2) if sum_w2 > 0 else 0.0

    def interval(self, method: str, alpha: float, ratio: bool) -> tuple[float, float]:
        """A ``1 − α`` interval (module docstring); ``(nan, nan)`` when too few rows."""
        if method not in INTERVALS:
            raise InputError(f"interval must be one of {INTERVALS}, got {method!r}")
        z = float(ndtri(1 - alpha / 2))
        if self.n < 2:
            return float("nan"), float("nan")
        if method == "normal":
            v, se = self.value(ratio), self.std_error(ratio)
            return v - z * se, v + z * se
        if method == "bootstrap":
            num, den = self.boot[:, 2], self.boot[:, 1 if ratio else 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                reps = np.where(den > 0, num / den, np.nan)
            if np.all(np.isnan(reps)):
                return float("nan"), float("nan")
            lo, hi = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2])
            return float(lo), float(hi)
        C = self.comoment / self.n
        w_bar, g_bar = self.mean
        if C[0, 0] <= 1e-12 * max(1.0, w_bar * w_bar):  # constant weights: the constraint carries nothing
            centre, var = g_bar, C[1, 1]
        else:
            centre = g_bar - C[0, 1] / C[0, 0] * (w_bar - 1.0)
            var = C[1, 1] - C[0, 1] ** 2 / C[0, 0]
        half = z * np.sqrt(max(var, 0.0) / self.n)
        return float(centre - half), float(centre + half)


@dataclass(frozen=True)
class Estimate:
    """One estimator's result: value, standard error, intervals and diagnostics."""

    estimator: str
    value: float
    std_error: float
    n: int
    intervals: dict[str, tuple[float, float]]
    effective_sample_size: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "std_error": self.std_error,
            "n": self.n,
            "ess": self.effective_sample_size,
            **{f"{m}_lo": lo for m, (lo, _) in self.intervals.items()},
            **{f"{m}_hi": hi for m, (_, hi) in self.intervals.items()},
        }


@dataclass
class OPEAccumulator:
    """Streaming evaluation of one target policy by several estimators at once.

    Feed chunks with :meth:`update` (each with the target's probabilities on that chunk and,
    for model-based estimators, reward-model predictions); add accumulators of different shards
    or time windows with ``+``; read :meth:`results` at any time. All estimators share the same
    bootstrap weights, so their replicates are paired.

    Args:
        estimators: names from :data:`~banditroute.ope.estimators.ESTIMATORS`.
        n_boot: Poisson-bootstrap replicates.
        params: per-estimator tuning parameter (switch-DR's ``τ``, DR-OS's ``λ``).
        reward_range: intervals are clipped into it.
        rng: generator of the bootstrap weights (give each shard its own).
    """

    estimators: tuple[str, ...]
    rng: np.random.Generator
    n_boot: int = 200
    params: dict[str, float] = field(default_factory=dict)
    reward_range: tuple[float, float] | None = (0.0, 1.0)
    moments: dict[str, Moments] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.estimators = check_estimators(list(self.estimators))
        self.n_boot = check_int(self.n_boot, "n_boot")
        check_generator(self.rng)
        if set(self.params) - set(self.estimators):
            raise InputError(
                f"params given for estimators not evaluated: {sorted(set(self.params) - set(self.estimators))}"
            )
        if not self.moments:
            self.moments = {name: Moments.empty(self.n_boot) for name in self.estimators}

    @property
    def n(self) -> int:
        return self.moments[self.estimators[0]].n

    def update(self, log: BanditLog, target: Any, q_hat: Any = None) -> None:
        """Add a chunk: ``target`` ``(n, M)`` are the target's probabilities on its rows."""
        target = check_probs(target, log.n, log.n_arms)
        if log.allowed is not None and np.any(target[~log.allowed] > 0):
            raise InputError("the target puts probability on arms that were not allowed")
        if q_hat is not None:
            q_hat = np.asarray(q_hat, dtype=np.float64)
            if q_hat.shape != (log.n, log.n_arms) or not np.all(np.isfinite(q_hat)):
                raise InputError(f"q_hat must be a finite array of shape ({log.n}, {log.n_arms})")
        elif any(ESTIMATORS[name].needs_model for name in self.estimators):
            raise InputError("q_hat is required by the model-based estimators (dm, dr, switch-dr, dr-os)")
        inputs = Inputs(log.actions, log.rewards, log.probs, target, q_hat)
        w = inputs.weights
        boot = poisson1(self.rng, (log.n, self.n_boot))
        for name in self.estimators:
            g = per_sample_terms(name, inputs, self.params.get(name))
            self.moments[name] = self.moments[name] + Moments.of(w, g, boot)

    def __add__(self, other: OPEAccumulator) -> OPEAccumulator:
        if not isinstance(other, OPEAccumulator) or (other.estimators, other.n_boot, other.params) != (
            self.estimators,
            self.n_boot,
            self.params,
        ):
            raise InputError("can only add accumulators with the same estimators, n_boot and params")
        merged = {name: self.moments[name] + other.moments[name] for name in self.estimators}
        return OPEAccumulator(self.estimators, self.rng, self.n_boot, self.params, self.reward_range, merged)

    def results(self, alpha: float = 0.05, intervals: tuple[str, ...] = INTERVALS) -> dict[str, Estimate]:
        alpha = check_unit_interval(alpha, "alpha")
        if not 0 < alpha < 1:
            raise InputError(f"alpha must lie in (0, 1), got {alpha}")
        unknown = set(intervals) - set(INTERVALS)
        if unknown:
            raise InputError(f"unknown interval methods {sorted(unknown)}; known: {INTERVALS}")
        out = {}
        for name in self.estimators:
            m, ratio = self.moments[name], ESTIMATORS[name].ratio
            bounds = {method: self._clip(m.interval(method, alpha, ratio)) for method in intervals}
            out[name] = Estimate(name, m.value(ratio), m.std_error(ratio), m.n, bounds, m.effective_sample_size())
        return out

    def _clip(self, interval: tuple[float, float]) -> tuple[float, float]:
        if self.reward_range is None:
            return interval
        lo, hi = self.reward_range
        return float(np.clip(interval[0], lo, hi)), float(np.clip(interval[1], lo, hi))


def evaluate(
    log: BanditLog,
    target: Any,
    *,
    estimators: tuple[str, ...] = tuple(ESTIMATORS),
    q_hat: Any = None,
    folds: int = 2,
    alpha: float = 0.05,
    intervals: tuple[str, ...] = INTERVALS,
    n_boot: int = 200,
    params: dict[str, float] | None = None,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Evaluate a target (probabilities ``(n, M)`` on the log's rows) with every estimator.

    Without ``q_hat``, model-based estimators use a cross-fitted ridge reward model
    (:func:`~banditroute.ope.reward_model.cross_fit`).
    """
    estimators = check_estimators(list(estimators))
    if q_hat is None and any(ESTIMATORS[name].needs_model for name in estimators):
        q_hat = cross_fit(log, folds=folds, seed=seed)
    acc = OPEAccumulator(
        estimators, np.random.default_rng(seed), n_boot, dict(params or {}), reward_range=log.reward_range
    )
    acc.update(log, target, q_hat)
    return acc.results(alpha, intervals)
