"""The embedding-routing experiment (docs/specs/hpg.md §4–5) on saved reward tables.

For one reward table (queries × retrieval arms — single retrievers and pipelines of them,
:mod:`banditroute.data.pipelines` — reward = retrieval quality of each arm on each query) it
reports, with 95% confidence intervals:

1. **Routing headroom**: every arm's mean reward, the best fixed arm and its margin over the best
   single retriever, the per-query oracle.
2. **Class expressiveness**: the best constant, log-linear and log-quadratic policies fitted with
   full information on a train split, compared on the test split
   (:mod:`banditroute.analysis.expressiveness`; the paper reports 68.0% lower gap for
   log-quadratic than log-linear on ESCI).
3. **Online learning** under bandit feedback, in shuffled passes and in an adversarial order:
   the safe (conservative) routers, HPG (tuned and parameter-free), log-linear PG, LinUCB,
   ε-greedy, EXP3 (constant) and uniform, with fixed runs of the best fixed arm and the best single
   retriever on the same rows, over several seeds, through the same
   :func:`~banditroute.simulate.experiment.run_experiment` as every other experiment (so runs are
   resumable and saved as Parquet); each policy is scored against those references
   (:mod:`banditroute.studies.pipeline_routing`).
4. **Under a budget**: paced routers at fractions of the best fixed arm's cost.

Router context. The table's context (a reference encoder's query embedding, possibly with cheap
query features) is standardised, projected on its top ``context_dim`` principal directions,
scaled to unit norm and given a constant feature (the whole row then has norm 1). Unit norm
matches HPG's assumption ``‖x‖ ≤ 1`` (the nuclear radius τ then bounds the logit range) and the
low dimension keeps exact HPG and LinUCB affordable; the projection is unsupervised (it never
sees rewards), fitted on the table's queries, and saved beside the results so every policy sees
the same contexts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banditroute.analysis.expressiveness import ExpressivenessResult, class_expressiveness
from banditroute.analysis.headroom import Headroom, routing_headroom
from banditroute.core.scaling import project_contexts
from banditroute.core.validation import InputError, check_int
from banditroute.envs.reward_table import RewardTable
from banditroute.simulate.experiment import Experiment, ExperimentResult, PolicyRun, run_experiment
from banditroute.studies.pipeline_routing import (
    BUDGET_FRACTIONS,
    WARMUP,
    BudgetOutcome,
    PolicyOutcome,
    References,
    budget_runs,
    pipeline_summary,
    reference_runs,
)

ORDERS = ("shuffle", "blocks")
DEFAULT_POLICIES: tuple[PolicyRun, ...] = (
    PolicyRun("safe-linucb"),
    PolicyRun("safe-hpg"),
    PolicyRun("hpg"),
    PolicyRun("hpg-free"),
    PolicyRun("loglinear"),
    PolicyRun("linucb"),
    PolicyRun("egreedy"),
    PolicyRun("exp3"),
    PolicyRun("uniform"),
)


@dataclass
class EmbedRoutingResult:
    table: str
    n_queries: int
    headroom: Headroom
    expressiveness: ExpressivenessResult | None
    online: dict[str, ExperimentResult]
    references: References
    outcomes: dict[str, list[PolicyOutcome]]
    budget: list[BudgetOutcome]


def prepare(table_path: Path, out_dir: Path, context_dim: int) -> tuple[Path, RewardTable]:
    """Load the table, write its projected-context copy to ``out_dir/table.npz`` (reused when present)."""
    table = RewardTable.load(table_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    projected = out_dir / "table.npz"
    projection = f"pca{context_dim}+unit+const"
    meta = {**dict(table.metadata), "source_table": str(table_path), "context_projection": projection}
    if projected.exists():
        existing = RewardTable.load(projected)
        if dict(existing.metadata) == json.loads(json.dumps(meta)) and existing.rewards.shape == table.rewards.shape:
            return projected, existing
    reward_range = table.reward_range
    if reward_range is None:  # retrieval metrics live in [0, 1]; EXP3 and HPG's baseline need the range
        if table.rewards.min() < 0.0 or table.rewards.max() > 1.0:
            raise InputError(f"{table_path}: rewards outside [0, 1] and no reward_range declared")
        reward_range = (0.0, 1.0)
    new = RewardTable(
        contexts=project_contexts(table.contexts, min(context_dim, table.dim)),
        rewards=table.rewards,
        costs=table.costs,
        arm_names=table.arm_names,
        metadata=meta,
        reward_range=reward_range,
        groups=table.groups,
        row_ids=table.row_ids,
        post_features=table.post_features,
    )
    new.save(projected)
    return projected, new


def run_embed_routing(
    table_path: Path,
    out_dir: Path,
    *,
    seeds: int = 5,
    passes: int = 1,
    orders: Sequence[str] = ORDERS,
    context_dim: int = 32,
    policies: Sequence[PolicyRun] = DEFAULT_POLICIES,
    n_clusters: int = 8,
    jobs: int = -1,
    progress: bool = True,
    expressiveness: bool = True,
    expressiveness_options: dict[str, Any] | None = None,
    budget_fractions: Sequence[float] = BUDGET_FRACTIONS,
    backend: str = "local",
) -> EmbedRoutingResult:
    """Headroom, class expressiveness and online runs for one table; everything lands under ``out_dir``."""
    seeds = check_int(seeds, "seeds")
    passes = check_int(passes, "passes")
    bad = sorted(set(orders) - set(ORDERS))
    if bad or not orders:
        raise InputError(f"orders must be a non-empty subset of {ORDERS}, got {list(orders)}")
    path, table = prepare(table_path, out_dir, context_dim)
    room = routing_headroom(table)
    expr = (
        class_expressiveness(table.contexts, table.rewards, **(expressiveness_options or {}))
        if expressiveness
        else None
    )
    refs = References.of(table)
    runs = (*policies, *reference_runs(refs))
    online: dict[str, ExperimentResult] = {}
    # The adversarial order serves one topic/domain after another when the table labels them,
    # otherwise one k-means cluster of the contexts after another.
    clusters = "groups" if table.groups is not None else "kmeans"
    for order in orders:
        options: dict[str, Any] = {"path": str(path.resolve()), "order": order}
        if order == "blocks":
            options.update(clusters=clusters, n_clusters=n_clusters)
        exp = Experiment(
            env="table",
            env_options=options,
            policies=tuple(runs),
            T=passes * table.n_rows,
            seeds=tuple(range(seeds)),
        )
        online[order] = run_experiment(
            exp,
            out_dir / order,
            n_jobs=jobs,
            progress=progress,
            overwrite=False,
            title=f"{table_path.stem}: {order} order",
            backend=backend,
        )
    outcomes = {order: pipeline_summary(res.runs) for order, res in online.items()}
    budget = budget_runs(table, budget_fractions, seeds=seeds)
    return EmbedRoutingResult(str(table_path), table.n_rows, room, expr, online, refs, outcomes, budget)


def _ci(v: tuple[float, float, float], digits: int = 3) -> str:
    return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"


_ONLINE_COLUMNS = (("reward", 4), ("gap", 4), ("final_gap", 4), ("regret", 1))


def report_markdown(result: EmbedRoutingResult) -> str:
    """The result as Markdown tables (what docs/results/embedding-routing.md collects per table)."""
    room, expr = result.headroom, result.expressiveness
    lines = [
        f"### {Path(result.table).stem} ({result.n_queries} queries)",
        "",
        "**Headroom** (mean reward, 95% CI)",
        "",
    ]
    lines += ["| model | mean reward | uniquely best on |", "|---|---:|---:|"]
    for name, mean, share in zip(room.arm_names, room.arm_means, room.unique_best, strict=True):
        mark = " (best fixed)" if name == room.arm_names[room.best_arm] else ""
        lines.append(f"| {name}{mark} | {mean} | {share.mean:.1%} |")
    lines.append(f"| **per-query oracle** | {room.oracle} | ties: {room.ties.mean:.1%} |")
    lines.append(f"| oracle − best fixed | {room.gap} | |")
    refs = result.references
    if refs.best_single is not None and refs.best_fixed_pipeline is not None:
        pipe, single = room.arm_means[refs.best_fixed_pipeline].mean, room.arm_means[refs.best_single].mean
        lines += [
            "",
            f"Best fixed pipeline {room.arm_names[refs.best_fixed_pipeline]}: {pipe:.4f}, "
            f"{(pipe - single) / single:+.1%} over the best single retriever {room.arm_names[refs.best_single]} "
            f"({single:.4f}).",
        ]
    if expr is not None:
        lines += ["", f"**Class expressiveness** (full information; train {expr.n_train} / test {expr.n_test} queries;"]
        lines += [
            "held-out sub-optimality gap, 95% bootstrap CI)",
            "",
            "| class | test gap | chosen λ |",
            "|---|---:|---:|",
        ]
        for kind, g in expr.gaps.items():
            lines.append(f"| {kind} | {_ci(g, 4)} | {expr.chosen[kind]['lam']:g} |")
        lines += ["", f"Log-quadratic vs log-linear relative gap reduction: **{_ci(expr.reduction)}**", ""]
    for order, res in result.online.items():
        s = res.summary
        lines += [
            f"**Online, {order} order** (T = {int(s['T'].iloc[0])}, {int(s['seeds'].iloc[0])} seeds; mean ± 95% CI)"
        ]
        lines += ["", "| policy | avg reward | gap (run avg) | final gap | regret |", "|---|---:|---:|---:|---:|"]
        for _, row in s.sort_values("reward", ascending=False).iterrows():
            cells = [f"{row[k]:.{dg}f} ± {row[k + '_ci']:.{dg}f}" for k, dg in _ONLINE_COLUMNS]
            lines.append(f"| {row['policy']} | " + " | ".join(cells) + " |")
        lines += ["", f"Figure: `{res.figure}`", ""]
        lines += outcome_markdown(result.outcomes[order], room.arm_names[refs.best_fixed])
    if result.budget:
        lines += [
            "**Under a budget** (a fraction of the best fixed arm's total cost; one pass per seed, "
            f"{result.budget[0].seeds} seeds; mean ± 95% CI)",
            "",
            "| router | budget | % of best fixed quality | % of its cost | max spend / budget | queries answered |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for b in result.budget:
            lines.append(
                f"| {b.router} | {b.fraction:.0%} | {b.quality[0]:.1%} ± {b.quality[1]:.1%} | "
                f"{b.cost[0]:.0%} ± {b.cost[1]:.0%} | {b.max_spend:.3f} | {b.answered:.1%} |"
            )
        lines.append("")
    return "\n".join(lines)


def outcome_markdown(outcomes: Sequence[PolicyOutcome], best_fixed: str) -> list[str]:
    """Each policy against the best fixed arm and the best single retriever on the same rows."""
    lines = [
        f"Against the best fixed arm ({best_fixed}) on the same rows (mean ± 95% CI over seeds); dips: seeds whose",
        f"running average fell below the best single retriever's after {WARMUP} rounds (worst shortfall); last",
        "below: the last round at which any seed's running average was below the best single retriever's.",
        "",
        "| policy | % of best fixed quality | % of its cost | reward − best fixed | dips | last below |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for o in sorted(outcomes, key=lambda o: -o.quality[0]):
        cost = "" if o.cost is None else f"{o.cost[0]:.0%} ± {o.cost[1]:.0%}"
        dips = f"{o.dips}/{o.seeds}" + (f" ({o.worst_dip:.4f})" if o.dips else "")
        lines.append(
            f"| {o.label} | {o.quality[0]:.1%} ± {o.quality[1]:.1%} | {cost} | "
            f"{o.vs_best[0]:+.4f} ± {o.vs_best[1]:.4f} | {dips} | {o.last_below} |"
        )
    return [*lines, ""]
