"""``banditroute bench ope``: the evaluate-the-evaluators table and figure (docs/results/ope.md).

Reward table: Bernoulli (0/1) rewards of 4 synthetic low-rank experts in d = 16 (6000 queries;
the expected rewards of :class:`~banditroute.envs.lowrank.LowRankExperts`, drawn once), split
30 / 70 into training and evaluation rows. Behaviours: uniform and ε-greedy (ε = 0.1) around a
ridge model; targets: LinUCB and fast HPG trained on-policy on the training rows. For logs of
1000 and 2000 rows, :func:`~banditroute.ope.experiments.run_trials` gives every estimator's bias,
RMSE and interval coverage over ``n_logs`` seeded logs. Needs the ``[cli]`` extra (pandas,
matplotlib, rich).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from banditroute.envs.lowrank import LowRankExperts
from banditroute.envs.reward_table import RewardTable
from banditroute.ope.experiments import run_trials, summarise
from banditroute.policies.registry import make_policy

LOG_SIZES = (1000, 2000)


def synthetic_table(n: int = 6000, seed: int = 0) -> RewardTable:
    env = LowRankExperts(4, 16, 2, queries="clustered", query_noise=0.5, seed=seed)
    rounds = env.rounds(n, np.random.default_rng(seed))
    draws = np.random.default_rng(seed + 1).random(rounds.expected.shape) < rounds.expected
    return RewardTable(rounds.contexts, draws.astype(np.float64), reward_range=(0.0, 1.0))


def run_report(out: Path, *, n_logs: int, log_size: int | None = None, seed: int = 0, console: Any = None) -> Any:
    """Run the trials, write ``ope.csv`` and ``ope.png`` under ``out``; returns the summary frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    targets = {"linucb": lambda s: make_policy("linucb", s), "hpg-fast": lambda s: make_policy("hpg", s, mode="fast")}
    table = synthetic_table(seed=seed)
    frames = []
    for size in (log_size,) if log_size else LOG_SIZES:
        trials = run_trials(table, ["uniform", "egreedy"], targets, n_logs=n_logs, log_size=size, seed=seed)
        rows = summarise(list(trials))
        frames.append(pd.DataFrame(rows).assign(log_size=size))
    df = pd.concat(frames, ignore_index=True)
    df.to_csv(out / "ope.csv", index=False)

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey="row")
    for col, behaviour in enumerate(("uniform", "egreedy")):
        sub = df[(df.behaviour == behaviour) & (df.log_size == df.log_size.min())]
        for target, marker in (("linucb", "o"), ("hpg-fast", "s")):
            t = sub[sub.target == target]
            axes[0, col].plot(t.estimator, t.rmse, marker=marker, label=target)
            axes[1, col].plot(t.estimator, t.cover_normal, marker=marker, label=f"{target}, normal")
            axes[1, col].plot(t.estimator, t.cover_el, marker=marker, linestyle=":", label=f"{target}, EL")
        axes[0, col].set_title(f"{behaviour} logging, {int(df.log_size.min())} rows, {n_logs} logs")
        axes[1, col].axhline(0.95, color="grey", linewidth=0.8)
        axes[1, col].axhline(0.90, color="grey", linewidth=0.8, linestyle="--")
        axes[1, col].set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("RMSE")
    axes[1, 0].set_ylabel("95% interval coverage")
    axes[0, 0].legend()
    axes[1, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "ope.png", dpi=110)
    plt.close(fig)
    if console is not None:
        cols = ["log_size", "behaviour", "target", "estimator", "truth", "bias", "rmse", "cover_normal",
                "cover_bootstrap", "cover_el", "width_normal"]  # fmt: skip
        console.print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        console.print(f"wrote {out / 'ope.csv'} and {out / 'ope.png'}")
    return df
