"""Routing headroom: how much a per-query router could gain over the best single model.

For a reward table it reports every model's mean reward, the best single model (in hindsight),
the per-query oracle, their difference, and on what share of queries each model is uniquely
best — each with a bootstrap confidence interval over queries. It is the first thing to look at:
without headroom no router can win, whatever its policy class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_int
from banditroute.envs.reward_table import RewardTable


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap confidence interval."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Headroom:
    """How much per-query routing could gain over always using one model (95% bootstrap CIs over queries).

    ``best_single`` is the best arm's mean, re-selected in every bootstrap sample (so its CI
    includes the selection); ``gap`` = oracle − best single, paired; ``unique_best[m]`` is the
    share of queries where arm ``m`` alone earns the highest reward; ``ties`` the share where the
    highest reward is shared (e.g. every arm finds the answer, or none does).
    """

    arm_names: tuple[str, ...]
    arm_means: tuple[Estimate, ...]
    best_arm: int
    best_single: Estimate
    oracle: Estimate
    gap: Estimate
    unique_best: tuple[Estimate, ...]
    ties: Estimate
    n_queries: int


def routing_headroom(
    table: RewardTable, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0, chunk: int = 100
) -> Headroom:
    """Best single model vs per-query oracle on ``table``, every number with a bootstrap CI.

    The bootstrap resamples queries (rows) ``n_boot`` times with multinomial weights, vectorised
    in blocks of ``chunk`` replicates so memory stays at ``chunk × n``.
    """
    n_boot = check_int(n_boot, "n_boot")
    if not 0 < level < 1:
        raise InputError(f"level must lie in (0, 1), got {level!r}")
    R = table.rewards
    n, M = R.shape
    best = R.max(axis=1)
    winners = best[:, None] == R
    unique = winners & (winners.sum(axis=1, keepdims=True) == 1)
    ties = ~unique.any(axis=1)
    # Columns: arm rewards (M), oracle (1), unique-best indicators (M), ties (1).
    stats = np.column_stack([R, best, unique, ties]).astype(np.float64)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, stats.shape[1]))
    for lo in range(0, n_boot, chunk):
        hi = min(lo + chunk, n_boot)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=hi - lo)
        boot[lo:hi] = weights @ stats / n
    point = stats.mean(axis=0)
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def estimate(value: float, samples: FloatArray) -> Estimate:
        low, high = np.percentile(samples, q)
        return Estimate(float(value), float(low), float(high))

    best_boot = boot[:, :M].max(axis=1)
    best_arm = int(np.argmax(point[:M]))
    return Headroom(
        arm_names=table.arm_names,
        arm_means=tuple(estimate(point[m], boot[:, m]) for m in range(M)),
        best_arm=best_arm,
        best_single=estimate(point[best_arm], best_boot),
        oracle=estimate(point[M], boot[:, M]),
        gap=estimate(point[M] - point[best_arm], boot[:, M] - best_boot),
        unique_best=tuple(estimate(point[M + 1 + m], boot[:, M + 1 + m]) for m in range(M)),
        ties=estimate(point[-1], boot[:, -1]),
        n_queries=n,
    )
