"""What to run on a reward table, and whether per-query routing will pay (``banditroute analyze``).

Issue 14 measured that on retrieval tables the value usually lies in the *arm set* (a fusion
pipeline beats every single retriever) and in cost trade-offs, not in per-query routing, whose
signal is weak. A user with a new table needs that answer before running any online experiment:

1. **Headroom** (:mod:`banditroute.analysis.headroom`): every arm's mean reward and cost, the best
   single retriever, the best fixed arm (usually a pipeline) and its margin over that retriever
   (paired bootstrap CI), the per-query oracle, ties.
2. **Predictability**: with full information, the best constant, log-linear and log-quadratic
   policies (:mod:`banditroute.analysis.expressiveness`) fitted on a random half and scored on the
   other half, over ``splits`` random splits; the split-to-split spread says how much of a gain is
   noise. Contexts are the table's, projected as the online study does
   (:func:`~banditroute.core.scaling.project_contexts`); λ is chosen on a validation part of the
   first split's training half and reused; fits use at most ``max_train`` training rows.
3. **Budget**: at fractions of the best arm's cost, the quality reachable by mixing fixed arms (the
   non-decreasing quality–cost hull, RouterBench) and by the per-query oracle under the same
   average cost (a ceiling no router reaches).
4. A plain **recommendation**, with a warning on tables too small to learn from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditroute.analysis.expressiveness import CLASSES, fit_class, fit_selected
from banditroute.analysis.headroom import Estimate, Headroom, routing_headroom
from banditroute.core.scaling import project_contexts
from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_int
from banditroute.costaware.quality_cost import hull
from banditroute.envs.reward_table import RewardTable

SMALL_TABLE = 200
FRACTIONS = (0.25, 0.5, 0.75)
NEAR_BEST = 0.98


@dataclass(frozen=True)
class Predictability:
    """Held-out mean reward of each class's full-information fit, one row per random split."""

    classes: tuple[str, ...]
    rewards: FloatArray  # (splits, len(classes))
    oracle: FloatArray  # (splits,)

    def gain(self, kind: str) -> FloatArray:
        """Per split: the class's held-out reward minus the constant policy's."""
        return self.rewards[:, self.classes.index(kind)] - self.rewards[:, self.classes.index("constant")]


@dataclass(frozen=True)
class BudgetPoint:
    """At ``fraction`` of the best arm's mean cost: quality of the best mix of fixed arms and of the oracle.

    The mix sends a random share ``dear_share`` of the queries to arm ``dear`` and the rest to arm
    ``cheap`` (the two quality–cost hull vertices around the budget; ``dear == cheap`` when one arm fits
    alone, ``-1`` when no arm does)."""

    fraction: float
    fixed_mix: float
    oracle: float
    cheap: int = -1
    dear: int = -1
    dear_share: float = 0.0


@dataclass(frozen=True)
class TableAnalysis:
    n_queries: int
    arm_names: tuple[str, ...]
    singles: tuple[bool, ...]  # arm is one retriever (not a pipeline)
    mean_cost: FloatArray | None
    headroom: Headroom
    best_single_retriever: int | None
    margin: Estimate | None  # best arm − best single retriever, paired
    predictability: Predictability | None
    budget: tuple[BudgetPoint, ...]
    recommendation: tuple[str, ...]
    warnings: tuple[str, ...]


def is_single(name: str) -> bool:
    """A single retriever's arm name has no pipeline syntax (:mod:`banditroute.data.pipelines`)."""
    return "(" not in name


def paired_difference(a: FloatArray, b: FloatArray, *, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Mean of ``a − b`` over queries with a 95% bootstrap CI (queries resampled, pairs kept)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = diff.size
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    low, high = np.percentile(weights @ diff / n, [2.5, 97.5])
    return Estimate(float(diff.mean()), float(low), float(high))


def predictability(
    table: RewardTable,
    *,
    splits: int = 10,
    context_dim: int = 16,
    max_train: int = 2000,
    lams: Sequence[float] = (1e-3, 1e-2, 1e-1),
    rank: int = 4,
    max_iter: int = 300,
    seed: int = 0,
) -> Predictability:
    """Full-information fits of every class over ``splits`` random halves (module docstring, point 2)."""
    splits = check_int(splits, "splits")
    n = table.n_rows
    if n < 10:
        raise InputError(f"predictability needs at least 10 queries, the table has {n}")
    X = project_contexts(table.contexts, min(check_int(context_dim, "context_dim"), table.dim))
    R = table.rewards
    rewards = np.empty((splits, len(CLASSES)))
    oracle = np.empty(splits)
    chosen: dict[str, float] = {}
    for s in range(splits):
        perm = np.random.default_rng([seed, s]).permutation(n)
        train, test = perm[: n // 2][:max_train], perm[n // 2 :]
        for c, kind in enumerate(CLASSES):
            if kind not in chosen:
                fitted = fit_selected(kind, X[train], R[train], lams, rank, seed, max_iter)
                chosen[kind] = fitted.lam
            else:
                fitted = fit_class(kind, X[train], R[train], lam=chosen[kind], rank=rank, seed=seed, max_iter=max_iter)
            rewards[s, c] = float(np.sum(fitted.probs(X[test]) * R[test]) / len(test))
        oracle[s] = float(R[test].max(axis=1).mean())
    return Predictability(CLASSES, rewards, oracle)


def budget_points(table: RewardTable, best: int, fractions: Sequence[float] = FRACTIONS) -> tuple[BudgetPoint, ...]:
    """Quality at fractions of arm ``best``'s mean cost: mixing fixed arms, and the per-query oracle."""
    if table.costs is None:
        return ()
    R, C = table.rewards, table.costs
    mean_cost, mean_reward = C.mean(axis=0), R.mean(axis=0)
    hc, hq = hull(mean_cost, mean_reward)
    # each hull vertex's arm: the cheapest arm at that (cost, quality) point
    arms = [int(np.flatnonzero((mean_cost == c) & (mean_reward == q))[0]) for c, q in zip(hc, hq, strict=True)]
    out = []
    for f in fractions:
        cap = f * mean_cost[best]
        oracle = oracle_within(R, C, cap)
        if cap < hc[0]:  # no arm fits: nothing is answered
            out.append(BudgetPoint(f, 0.0, oracle))
            continue
        hi = min(int(np.searchsorted(hc, cap, side="left")), len(hc) - 1)
        lo = max(hi - 1, 0) if hc[hi] > cap else hi
        share = 0.0 if hi == lo else float((cap - hc[lo]) / (hc[hi] - hc[lo]))
        value = float(hq[lo] + share * (hq[hi] - hq[lo]))
        out.append(BudgetPoint(f, value, oracle, arms[lo], arms[hi], share))
    return tuple(out)


def oracle_within(R: FloatArray, C: FloatArray, cap: float) -> float:
    """Mean reward of the per-query oracle whose mean cost is at most ``cap``: per query
    ``argmax r − μ·c`` with the smallest ``μ ≥ 0`` that fits (bisection; 0 when nothing fits)."""

    def at(mu: float) -> tuple[float, float]:
        pick = np.argmax(R - mu * C, axis=1)
        rows = np.arange(R.shape[0])
        return float(R[rows, pick].mean()), float(C[rows, pick].mean())

    value, cost = at(0.0)
    if cost <= cap:
        return value
    if C.min(axis=1).mean() > cap:
        return 0.0
    lo, hi = 0.0, 1.0
    while at(hi)[1] > cap:
        hi *= 4
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at(mid)[1] > cap else (lo, mid)
    return at(hi)[0]


def analyze(table: RewardTable, *, splits: int = 10, n_boot: int = 1000, seed: int = 0) -> TableAnalysis:
    """Headroom, predictability, budget and a recommendation for ``table`` (module docstring)."""
    room = routing_headroom(table, n_boot=n_boot, seed=seed)
    names = table.arm_names
    singles = tuple(is_single(a) for a in names)
    best = room.best_arm
    single_ids = [m for m in range(table.n_arms) if singles[m]]
    best_single = max(single_ids, key=lambda m: room.arm_means[m].mean) if single_ids else None
    margin = None
    if best_single is not None and best_single != best:
        margin = paired_difference(table.rewards[:, best], table.rewards[:, best_single], n_boot=n_boot, seed=seed)
    warnings = []
    if table.n_rows < SMALL_TABLE:
        warnings.append(
            f"only {table.n_rows} queries (< {SMALL_TABLE}): too few to learn a router from; every number below "
            "is noisy and an online router will spend most of the run exploring"
        )
    pred = predictability(table, splits=splits, seed=seed) if table.n_rows >= 10 and table.n_arms > 1 else None
    points = budget_points(table, best)
    mean_cost = None if table.costs is None else table.costs.mean(axis=0)
    advice = _recommend(table, room, best_single, margin, pred, points, mean_cost)
    return TableAnalysis(
        table.n_rows, names, singles, mean_cost, room, best_single, margin, pred, points, advice, tuple(warnings)
    )


def _recommend(
    table: RewardTable,
    room: Headroom,
    best_single: int | None,
    margin: Estimate | None,
    pred: Predictability | None,
    points: tuple[BudgetPoint, ...],
    mean_cost: FloatArray | None,
) -> tuple[str, ...]:
    names, best = table.arm_names, room.best_arm
    q_best = room.arm_means[best].mean
    lines = [f"Run {names[best]}: mean reward {room.arm_means[best]}."]
    if margin is not None and best_single is not None:
        verdict = "a real gain" if margin.low > 0 else "not distinguishable from it"
        relative = margin.mean / max(q_best - margin.mean, 1e-12)
        lines.append(
            f"It beats the best single retriever ({names[best_single]}, {room.arm_means[best_single].mean:.3f}) by "
            f"{margin.mean:+.3f} [{margin.low:+.3f}, {margin.high:+.3f}] ({relative:+.1%}): {verdict}."
        )
    if mean_cost is not None:
        near = [m for m in range(table.n_arms) if room.arm_means[m].mean >= NEAR_BEST * q_best]
        cheap = min(near, key=lambda m: mean_cost[m])
        if mean_cost[cheap] < 0.9 * mean_cost[best]:
            lines.append(
                f"Cheaper near-equal arm: {names[cheap]} reaches {room.arm_means[cheap].mean / q_best:.1%} of its "
                f"quality at {mean_cost[cheap] / mean_cost[best]:.0%} of its cost."
            )
    if pred is not None:
        gains = {kind: pred.gain(kind) for kind in ("loglinear", "logquadratic")}
        kind = max(gains, key=lambda k: gains[k].mean())
        g = gains[kind]
        wins = int((g > 0).sum())
        pays = wins >= 0.8 * len(g) and g.mean() > 2 * g.std(ddof=1) / np.sqrt(len(g)) and g.mean() > 0.005 * q_best
        lines.append(
            f"Per-query routing is {'expected' if pays else 'NOT expected'} to pay: the best class ({kind}) gains "
            f"{g.mean():+.4f} held-out reward over the best fixed arm (split-to-split sd {g.std(ddof=1):.4f}, "
            f"better in {wins}/{len(g)} splits), against an oracle headroom of {room.gap.mean:.3f}."
        )
        if not pays:
            lines.append("Run the fixed arm above; use a safe online router only to find it (safe-* policies).")
    for p in points:
        if p.fraction == 0.5 and p.dear >= 0:
            mix = (
                f"run {names[p.dear]} alone"
                if p.dear == p.cheap
                else f"send a random {p.dear_share:.0%} of queries to {names[p.dear]} and the rest to {names[p.cheap]}"
            )
            lines.append(
                f"At 50% of its cost: {mix}, for {p.fixed_mix / q_best:.1%} of its quality. The per-query oracle "
                f"under the same budget reaches {p.oracle / q_best:.1%}: a ceiling for a budgeted router, which must "
                "learn which queries need the dear arm (on our tables paced routers learned from scratch stayed "
                "below the mix: docs/results/embedding-routing.md)."
            )
    return tuple(lines)
