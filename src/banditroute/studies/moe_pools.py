"""Learned vs random nominator pools on multi-label data (Hron et al. 2021, Section 5): a Mixture of
Experts whose gate learns the pools, against random pools and the five most common labels.

The grid is :data:`MOE_BASE` and its one-at-a-time variations (:data:`MOE_VARIATIONS`; the paper's
grid is their product, ``N`` capped by the items), every configuration over ``seeds`` seeds. Each
finished configuration is one JSON record (:mod:`banditroute.studies.runs`), so a rerun resumes.
Results and the number of seeds a claim needs: docs/results/two-stage.md. Needs ``[torch]``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from banditroute.studies.figures import new_figure
from banditroute.studies.runs import run_missing, write_record
from banditroute.studies.two_stage import multilabel_table_for

MOE_BASE: dict[str, Any] = {"n_experts": 5, "n_features": 10, "embed_dim": 10, "per_item": 500, "sigma2": 1.0}
# One setting changed at a time around MOE_BASE (the paper's grid, docs/specs/two-stage.md, is their product;
# N is capped by the items).
MOE_VARIATIONS: dict[str, tuple[Any, ...]] = {
    "n_features": (5, 25, 50, 100),
    "n_experts": (3, 10),
    "embed_dim": (5, 50),
    "per_item": (100, 750),
    "sigma2": (0.01,),
}


def moe_configs(n_items: int, dim: int, steps: int, seeds: int) -> list[Any]:
    """The MoE grid: ``MOE_BASE`` and its one-at-a-time variations, for every seed (infeasible ones dropped)."""
    from banditroute.twostage.moe import MoEConfig

    points = [dict(MOE_BASE)]
    for key, values in MOE_VARIATIONS.items():
        points.extend({**MOE_BASE, key: v} for v in values)
    feasible = [p for p in points if p["n_experts"] <= n_items and p["n_features"] <= dim]
    return [
        MoEConfig(**p, steps=steps, finetune_steps=steps // 2, batch_size=512, seed=s)
        for p in feasible
        for s in range(seeds)
    ]


def _moe_task(data: str, config: Any, path: Path) -> dict[str, Any]:
    import torch

    from banditroute.studies.two_stage import multilabel_table_for
    from banditroute.twostage.envs import MultiLabel
    from banditroute.twostage.moe import compare_pools

    torch.set_num_threads(1)
    table = multilabel_table_for(data)
    full = MultiLabel(table.contexts, table.rewards > 0.5, data, table.arm_names)
    train, test = full.split(config.test_fraction, seed=config.seed)
    return write_record(path, compare_pools(train, test, config))


MOE_METRICS = {f"{m}_{k}" for m in ("random", "moe", "distilled", "popular") for k in ("precision", "recall")}


def summarise_moe(frame: Any) -> Any:
    """Mean over seeds of each model's precision@5 and recall@5, per configuration."""
    keys = ["n_experts", "n_features", "embed_dim", "per_item", "sigma2"]
    summary = frame.groupby(keys, sort=False)[sorted(MOE_METRICS)].mean().reset_index()
    summary.insert(
        0,
        "setting",
        [
            f"N={r.n_experts} s={r.n_features} de={r.embed_dim} c={r.per_item} σ²={r.sigma2:g}"
            for r in summary.itertuples()
        ],
    )
    return summary


def plot_moe(summary: Any, path: Path, title: str) -> None:
    """Grouped bars: precision@5 and recall@5 of random pools, the MoE and distilled pools per configuration."""
    import numpy as np

    fig = new_figure((max(8, 0.9 * len(summary)), 6.5))
    axes = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(summary))
    for ax, metric in zip(axes, ("precision", "recall"), strict=True):
        for j, (model, label) in enumerate(
            (("random", "random pools"), ("moe", "MoE (gate mixture)"), ("distilled", "distilled hard pools"))
        ):
            ax.bar(x + (j - 1) * 0.27, summary[f"{model}_{metric}"], width=0.27, label=label)
        ax.plot(x, summary[f"popular_{metric}"], "k_", ms=22, mew=2, label="5 most common labels (no model)")
        low = float(summary[[f"{m}_{metric}" for m in ("random", "moe", "distilled")]].to_numpy().min())
        ax.set(ylabel=f"{metric}@5", ylim=(max(0.0, low - 0.1), None))
        ax.grid(alpha=0.3, axis="y")
    axes[1].set_xticks(x, summary["setting"], rotation=35, ha="right", fontsize="small")
    axes[0].legend(fontsize="small", ncols=4)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)


def _is_current(record: dict[str, Any], args: tuple[Any, ...]) -> bool:
    return set(record) >= MOE_METRICS  # records of an older version lack metrics: recompute them


def run_study(
    data: str,
    out: Path,
    figures: Path,
    *,
    seeds: int,
    steps: int,
    n_jobs: int = 1,
    progress: bool = True,
    backend: str = "local",
) -> Any:
    """The MoE comparison on ``data``: runs (resumed), ``<data>_moe_runs.csv``, ``<data>_moe_summary.csv`` and
    the figure; returns the summary (mean over seeds per configuration)."""
    import pandas as pd

    table = multilabel_table_for(data)
    configs = moe_configs(table.n_arms, table.dim, steps, seeds)
    moe_dir = out / f"{data}_moe"
    tasks = [
        (moe_dir / ("-".join(f"{k}{v}" for k, v in asdict(config).items()) + ".json"), (data, config))
        for config in configs
    ]
    records = run_missing(
        tasks,
        _moe_task,
        valid=_is_current,
        n_jobs=n_jobs,
        progress=progress,
        label=f"{data}: MoE vs random pools",
        backend=backend,
    )
    frame = pd.DataFrame(records)
    frame.to_csv(out / f"{data}_moe_runs.csv", index=False)
    summary = summarise_moe(frame)
    summary.to_csv(out / f"{data}_moe_summary.csv", index=False)
    plot_moe(
        summary,
        figures / f"twostage_{data}_moe.png",
        f"{data}: precision@5 / recall@5 on a held-out 30% ({seeds} seeds)",
    )
    return summary
