"""Online routing over retrieval pipelines, judged against the references a user would pick instead.

On a reward table whose arms are retrievers and pipelines of retrievers
(:mod:`banditroute.data.pipelines`), every online policy's run is compared, seed by seed on the same
stream, with

- the **best single retriever** and the **best fixed arm** (usually a fusion pipeline), both chosen
  in hindsight on the whole table — what a user would run after an offline evaluation;
- the **per-query oracle** (a ceiling).

Issue 14's bars: over the whole run, the safe router reaches ≥ 98% of the best fixed pipeline's
quality, and after its warm-up its running average never falls below the best single retriever's
running average on the same stream. :func:`pipeline_summary` measures both per seed against
fixed-arm reference runs of the same experiment (:func:`reference_runs`), with 95%
confidence intervals over seeds (each seed is another random arrival order, so the interval covers
the order as well as the policy's own randomness). :func:`budget_runs` adds the third bar: under a
budget of 50% of the best fixed pipeline's cost, a paced router
(:class:`~banditroute.costaware.routers.PacedRouter`) should keep ≥ 95% of its quality.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from banditroute.analysis.recommend import is_single
from banditroute.costaware.cascade import CascadeRouter
from banditroute.costaware.features import Featurizer
from banditroute.costaware.online import OnlineRouter, run_online
from banditroute.costaware.routers import PacedRouter
from banditroute.costaware.tables import table_split
from banditroute.envs.reward_table import RewardTable
from banditroute.simulate.experiment import PolicyRun
from banditroute.simulate.metrics import mean_ci, running_mean
from banditroute.simulate.runner import Trace

WARMUP = 200
BUDGET_FRACTIONS = (0.5,)
BEST_FIXED = "best-fixed"
BEST_SINGLE = "best-single-retriever"


@dataclass(frozen=True)
class References:
    """Arm indices of the best single retriever (``None`` without one) and of the best fixed arm."""

    best_single: int | None
    best_fixed: int
    best_fixed_pipeline: int | None

    @classmethod
    def of(cls, table: RewardTable) -> References:
        means = table.rewards.mean(axis=0)
        singles = [m for m, name in enumerate(table.arm_names) if is_single(name)]
        pipelines = [m for m in range(table.n_arms) if m not in singles]
        return cls(
            best_single=max(singles, key=lambda m: means[m]) if singles else None,
            best_fixed=int(np.argmax(means)),
            best_fixed_pipeline=max(pipelines, key=lambda m: means[m]) if pipelines else None,
        )


@dataclass(frozen=True)
class PolicyOutcome:
    """One policy over seeds: whole-run quality and cost relative to the best fixed arm, and safety.

    ``quality`` and ``cost`` are (mean, CI half-width) over seeds of the run's average reward / cost
    divided by the best fixed arm's on the same rounds; ``vs_best`` the paired difference in average
    reward (policy − best fixed arm); ``dips`` the number of seeds whose running average fell below
    the best single retriever's after ``warmup`` rounds, ``worst_dip`` the largest such shortfall, and
    ``last_below`` the last round (1-based, any seed) at which it was below: the warm-up after which
    no run fell below the best single retriever (0: never below).
    """

    label: str
    reward: tuple[float, float]
    quality: tuple[float, float]
    cost: tuple[float, float] | None
    vs_best: tuple[float, float]
    dips: int
    worst_dip: float
    last_below: int
    seeds: int


def reference_runs(refs: References) -> tuple[PolicyRun, ...]:
    """Fixed-arm runs of the references; with common random numbers they see each seed's rows too."""
    runs = [PolicyRun("fixed", {"arm": refs.best_fixed}, label=BEST_FIXED)]
    if refs.best_single is not None and refs.best_single != refs.best_fixed:
        runs.append(PolicyRun("fixed", {"arm": refs.best_single}, label=BEST_SINGLE))
    return tuple(runs)


def pipeline_summary(runs: Mapping[str, Sequence[Trace]], *, warmup: int = WARMUP) -> list[PolicyOutcome]:
    """Each policy's :class:`PolicyOutcome`, paired seed by seed with the reference runs
    (:func:`reference_runs`) of the same experiment, which served the same rows."""
    fixed = {t.seed: t for t in runs[BEST_FIXED]}
    single = {t.seed: t for t in runs.get(BEST_SINGLE, runs[BEST_FIXED])}
    out = []
    for label, traces in runs.items():
        quality, cost, diff, dips, worst, last = [], [], [], 0, 0.0, 0
        for trace in traces:
            ref, base = fixed[trace.seed], single[trace.seed]
            quality.append(trace.expected.mean() / ref.expected.mean())
            diff.append(trace.expected.mean() - ref.expected.mean())
            if trace.cost is not None and ref.cost is not None:
                cost.append(trace.cost.mean() / ref.cost.mean())
            gap = running_mean(trace.expected) - running_mean(base.expected)
            below = np.flatnonzero(gap < 0)
            last = max(last, int(below[-1]) + 1 if below.size else 0)
            if len(trace.expected) > warmup:
                shortfall = -float(gap[warmup:].min())
                if shortfall > 0:
                    dips += 1
                    worst = max(worst, shortfall)
        out.append(
            PolicyOutcome(
                label=label,
                reward=_ci([t.expected.mean() for t in traces]),
                quality=_ci(quality),
                cost=_ci(cost) if cost else None,
                vs_best=_ci(diff),
                dips=dips,
                worst_dip=worst,
                last_below=last,
                seeds=len(traces),
            )
        )
    return out


@dataclass(frozen=True)
class BudgetOutcome:
    """A budgeted router at ``fraction`` of the best fixed arm's cost: quality and spend relative to that
    arm on the same rows ((mean, CI half-width) over seeds), and the worst spend / budget ratio."""

    router: str
    fraction: float
    quality: tuple[float, float]
    cost: tuple[float, float]
    max_spend: float
    answered: float
    seeds: int


def budget_runs(
    table: RewardTable,
    fractions: Sequence[float] = BUDGET_FRACTIONS,
    *,
    seeds: int = 5,
    routers: Sequence[Callable[[RewardTable], OnlineRouter]] = (),
) -> list[BudgetOutcome]:
    """``router`` under a total budget of ``fraction × n ×`` the best fixed arm's mean cost, one pass over
    each seed's random order, learning from bandit feedback only (:func:`~banditroute.costaware.online.run_online`
    enforces the budget; cost estimates are each arm's mean cost over the table, what a one-off benchmark
    of each pipeline gives before serving)."""
    if table.costs is None:
        return []
    refs = References.of(table)
    splits = []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(table.n_rows)
        splits.append(table_split(table, order, train_rows=order, post=table.post_features))
    out = []
    for fraction, router in itertools.product(fractions, routers or BUDGET_ROUTERS):
        quality, cost, spend, answered = [], [], [], []
        name = ""
        for seed, split in enumerate(splits):
            best_q, best_c = split.quality[:, refs.best_fixed], split.cost[:, refs.best_fixed]
            budget = fraction * float(best_c.sum())
            routed = router(table)
            name = routed.name
            record = run_online(routed, split, np.random.default_rng([seed, 1]), budget=budget)
            quality.append(record.quality.mean() / best_q.mean())
            cost.append(record.cost.sum() / best_c.sum())
            spend.append(record.spent / budget)
            answered.append(float((record.n_calls > 0).mean()))
        out.append(BudgetOutcome(name, fraction, _ci(quality), _ci(cost), max(spend), float(np.mean(answered)), seeds))
    return out


def paced_ucb(table: RewardTable) -> OnlineRouter:
    """Budget-paced UCB over the arms, ignoring the context (α = 0.5, dual step 0.5: chosen on the SciFact
    table among α ∈ {0.2, 0.5} × step ∈ {0.05, 0.5} and the contextual variant; docs/results/embedding-routing.md)."""
    return PacedRouter(contextual=False, alpha=0.5, eta=0.5)


def paced_linucb(table: RewardTable) -> OnlineRouter:
    """The contextual variant (LinUCB, α = 1 so that untried arms are tried), for comparison."""
    return PacedRouter(contextual=True, alpha=1.0, eta=0.5)


def escalating_cascade(table: RewardTable) -> OnlineRouter:
    """Cheapest arm first, then escalate to the next only when its UCB beats the answer's quality predicted
    from the first stage's post-retrieval features by more than its priced cost
    (:class:`~banditroute.costaware.cascade.CascadeRouter`, ``stop="model"``), from scratch: no warm start;
    its PCA context (16 components, no clusters) is fitted on the table's contexts, unsupervised."""
    rows = np.arange(table.n_rows)
    shape = table_split(table, rows, train_rows=rows, post=table.post_features)  # arms, post-features, c_ref
    featurizer = Featurizer(k=16, clusters=0).fit(table.contexts)
    return CascadeRouter(featurizer, shape, H=2, mode="budget", stop="model", mu=0.05, alpha=0.5, name="cascade")


BUDGET_ROUTERS: tuple[Callable[[RewardTable], OnlineRouter], ...] = (paced_ucb, paced_linucb, escalating_cascade)


def _ci(values: Sequence[float]) -> tuple[float, float]:
    mean, half = mean_ci(np.asarray(values, dtype=np.float64))
    return float(mean), float(half)
