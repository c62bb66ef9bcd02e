"""Evaluate the evaluators: estimator error and interval coverage against known truth.

On a reward table every model's reward on every query is known, so the value of a target policy
on the table — ``mean_i Σ_a π(a|x_i) r_i(a)`` over the evaluation rows — is exact. Each trial
draws a log of ``log_size`` rows i.i.d. from the evaluation rows, lets a behaviour policy choose
(and reveals only the chosen reward), and estimates the target's value from that log alone. Over
``n_logs`` seeded trials we report each estimator's bias, RMSE and the share of trials whose
interval covers the truth (the Open Bandit Pipeline's "evaluation of OPE" protocol, with
coverage added).

Behaviours and targets are frozen policies trained on a separate training split: targets
on-policy (they choose, the table reveals the chosen reward, they learn), the ε-greedy behaviour
as a greedy ridge fitted on a uniform log of the training split, then ε-mixed.

The report (:func:`run_report`; ``banditroute bench ope``, docs/results/ope.md). Reward table:
Bernoulli (0/1) rewards of 4 synthetic low-rank experts in d = 16 (6000 queries;
the expected rewards of :class:`~banditroute.envs.lowrank.LowRankExperts`, drawn once), split
30 / 70 into training and evaluation rows. Behaviours: uniform and ε-greedy (ε = 0.1) around a
ridge model; targets: LinUCB and fast HPG trained on-policy on the training rows. For logs of
1000 and 2000 rows, :func:`run_trials` gives every estimator's bias,
RMSE and interval coverage over ``n_logs`` seeded logs. Needs the ``[cli]`` extra (pandas,
matplotlib, rich).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.core.types import EnvSpec
from banditroute.core.validation import InputError, check_int
from banditroute.envs.lowrank import LowRankExperts
from banditroute.envs.reward_table import RewardTable, RewardTableEnv
from banditroute.ope.estimators import ESTIMATORS
from banditroute.ope.log import collect_log
from banditroute.ope.stream import INTERVALS, evaluate
from banditroute.ope.targets import fit_on_log, target_probs
from banditroute.policies.base import Policy
from banditroute.policies.registry import make_policy
from banditroute.studies.figures import new_figure


def train_on_table(policy: Policy, table: RewardTable, rounds: int, seed: int, batch_size: int = 16) -> Policy:
    """On-policy training: ``rounds`` i.i.d. rows of ``table``, the policy sees its chosen reward only."""
    rng = np.random.default_rng(seed)
    for block in RewardTableEnv(table).stream(rounds, rng, chunk_size=batch_size):
        decision = policy.act_batch(block.contexts, rng)
        policy.learn_batch(block.contexts, decision, block.rewards[np.arange(len(block)), decision.actions])
    return policy


def behaviour_policy(name: str, spec: EnvSpec, train: RewardTable, seed: int, epsilon: float = 0.1) -> Policy:
    """``"uniform"``, or ``"egreedy"``: greedy ridge fitted on a uniform log of ``train``, ε-mixed."""
    if name == "uniform":
        return make_policy("uniform", spec)
    if name == "egreedy":
        rng = np.random.default_rng(seed)
        warm, _ = collect_log(RewardTableEnv(train), make_policy("uniform", spec), train.n_rows, rng)
        return fit_on_log(make_policy("egreedy", spec, epsilon=epsilon), warm)
    raise InputError(f"behaviour must be 'uniform' or 'egreedy', got {name!r}")


@dataclass(frozen=True)
class Trial:
    """One estimate of one trial."""

    behaviour: str
    target: str
    seed: int
    estimator: str
    truth: float
    value: float
    covered: dict[str, bool]
    width: dict[str, float]


def run_trials(
    table: RewardTable,
    behaviours: Sequence[str],
    targets: dict[str, Callable[[EnvSpec], Policy]],
    *,
    n_logs: int = 100,
    log_size: int = 1000,
    train_frac: float = 0.3,
    train_rounds: int = 3000,
    alpha: float = 0.05,
    estimators: Sequence[str] = tuple(ESTIMATORS),
    n_boot: int = 200,
    seed: int = 0,
) -> Iterator[Trial]:
    """Every (behaviour, target, seed, estimator) trial; see the module docstring."""
    n_logs, log_size = check_int(n_logs, "n_logs"), check_int(log_size, "log_size")
    train, test = table.split(train_frac, seed=seed)
    env = RewardTableEnv(test)
    spec = env.spec
    trained = {name: train_on_table(factory(spec), train, train_rounds, seed) for name, factory in targets.items()}
    everything = np.ones(spec.n_arms, dtype=bool)
    truths = {
        name: float((pol.act_batch(test.contexts, np.random.default_rng(seed), allowed=everything).probs * test.rewards)
                    .sum(axis=1).mean())
        for name, pol in trained.items()
    }  # fmt: skip
    for b_name in behaviours:
        behaviour = behaviour_policy(b_name, spec, train, seed)
        for t in range(n_logs):
            rng = np.random.default_rng([seed, t])
            log, _ = collect_log(env, behaviour, log_size, rng)
            for t_name, policy in trained.items():
                probs = target_probs(policy, log, rng)
                for est in evaluate(
                    log, probs, estimators=tuple(estimators), alpha=alpha, n_boot=n_boot, seed=t
                ).values():
                    truth = truths[t_name]
                    yield Trial(
                        b_name,
                        t_name,
                        t,
                        est.estimator,
                        truth,
                        est.value,
                        {m: bool(lo <= truth <= hi) for m, (lo, hi) in est.intervals.items()},
                        {m: hi - lo for m, (lo, hi) in est.intervals.items()},
                    )


def summarise(trials: Sequence[Trial]) -> list[dict[str, Any]]:
    """One row per (behaviour, target, estimator): truth, bias, RMSE, coverage and mean width per interval."""
    groups: dict[tuple[str, str, str], list[Trial]] = {}
    for tr in trials:
        groups.setdefault((tr.behaviour, tr.target, tr.estimator), []).append(tr)
    order = list(ESTIMATORS)
    rows = []
    for (b, t, e), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], order.index(kv[0][2]))):
        err = np.array([g.value - g.truth for g in group])
        row: dict[str, Any] = {
            "behaviour": b,
            "target": t,
            "estimator": e,
            "logs": len(group),
            "truth": group[0].truth,
            "bias": float(err.mean()),
            "rmse": float(np.sqrt(np.mean(err**2))),
        }
        for m in INTERVALS:
            row[f"cover_{m}"] = float(np.mean([g.covered[m] for g in group]))
            row[f"width_{m}"] = float(np.mean([g.width[m] for g in group]))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------- the report
LOG_SIZES = (1000, 2000)


def synthetic_table(n: int = 6000, seed: int = 0) -> RewardTable:
    env = LowRankExperts(4, 16, 2, queries="clustered", query_noise=0.5, seed=seed)
    rounds = env.rounds(n, np.random.default_rng(seed))
    draws = np.random.default_rng(seed + 1).random(rounds.expected.shape) < rounds.expected
    return RewardTable(rounds.contexts, draws.astype(np.float64), reward_range=(0.0, 1.0))


def run_report(out: Path, *, n_logs: int, log_size: int | None = None, seed: int = 0, console: Any = None) -> Any:
    """Run the trials, write ``ope.csv`` and ``ope.png`` under ``out``; returns the summary frame."""
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

    fig = new_figure((11, 7))
    axes = fig.subplots(2, 2, sharey="row")
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
    fig.savefig(out / "ope.png", dpi=110)
    if console is not None:
        cols = ["log_size", "behaviour", "target", "estimator", "truth", "bias", "rmse", "cover_normal",
                "cover_bootstrap", "cover_el", "width_normal"]  # fmt: skip
        console.print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        console.print(f"wrote {out / 'ope.csv'} and {out / 'ope.png'}")
    return df
