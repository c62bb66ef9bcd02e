"""The paper's experiment grids (Hron et al. 2021, Figures 3–4; docs/specs/two-stage.md, "Data"), resumable.

A sweep is a list of :class:`Run` s — one seed of one system on one problem. Each finished run is one
small JSON file under ``<out>/runs/`` (:mod:`banditroute.studies.runs`), so an interrupted sweep resumes where it
stopped and a larger grid reuses the runs it shares with a smaller one. Runs execute in parallel
(joblib), each fully determined by its fields: the problem instance (``θ*``), the pool and feature
allocation and the rounds all derive from ``seed``, so single- and two-stage systems with the same
seed face the same rounds.

``n_nominators = 1`` is the **single-stage nominator model**: one nominator over all items with the
same ``s`` features and no ranker choice; with ``s = d`` it is the full (well-specified) model.
Hyper-parameters are the paper's tuned values (:data:`PARAMS`). Figures: relative regret against
``d/s`` (one panel per setting, one line per ``N``) and the nominator/ranker split against ``N``.

Uses the ``[cli]`` extra (pandas, matplotlib, rich, joblib).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from banditroute.core.types import EnvSpec
from banditroute.core.validation import InputError, check_int
from banditroute.envs.base import Environment
from banditroute.envs.linear import LinearBandit
from banditroute.envs.reward_table import RewardTable, RewardTableEnv
from banditroute.simulate.metrics import mean_ci
from banditroute.studies.figures import finish_panels, panel_grid
from banditroute.studies.runs import run_missing, write_record
from banditroute.twostage.regret import run_regret
from banditroute.twostage.system import TwoStage

METHODS = ("ucb", "greedy", "pg")
DATASETS = ("linear", "yeast", "amazoncat")
# The paper's tuned values: synthetic (linear) and real data (AmazonCat-13K; used for Yeast too).
PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "synthetic": {
        "ucb": {"lam": 0.01, "alpha": 0.01},
        "greedy": {"lam": 0.01},
        "pg": {"lr": 1.0},
    },
    "real": {
        "ucb": {"lam": 1.0, "alpha": 0.001},
        "greedy": {"lam": 1.0},
        "pg": {"lr": 10.0},
    },
}


def n_features_for(rho: float, dim: int) -> int:
    """``s = max(1, ⌊ρ d⌋)`` [ours: the paper's ``⌊d/ρ⌋`` exceeds ``d`` for ``ρ < 1``]."""
    if not 0 < rho <= 1:
        raise InputError(f"misspecification rho must lie in (0, 1], got {rho}")
    return max(1, math.floor(rho * dim + 1e-9))


@dataclass(frozen=True)
class Run:
    """One seed of one system (``n_nominators = 1``: single stage) on one problem."""

    data: str
    method: str
    n_arms: int
    dim: int
    n_nominators: int
    n_features: int
    noise: float
    training: str
    T: int
    seed: int

    @property
    def key(self) -> str:
        """File name (without extension) identifying the run."""
        return (
            f"{self.data}-{self.method}-M{self.n_arms}-d{self.dim}-N{self.n_nominators}-s{self.n_features}"
            f"-sd{self.noise:g}-{self.training}-T{self.T}-seed{self.seed}"
        )

    def system(self, spec: EnvSpec) -> TwoStage:
        params = PARAMS["synthetic" if self.data == "linear" else "real"][self.method]
        return TwoStage(
            spec.n_arms,
            spec.dim,
            n_nominators=self.n_nominators,
            n_features=self.n_features,
            nominator=self.method,
            ranker=self.method,
            training=self.training,
            shared=self.data == "linear",
            allocation_seed=self.seed,
            n_prob_samples=1,  # sweeps need the served item, not fine-grained propensities
            reward_range=spec.reward_range,
            **params,
        )

    def env(self, seed: int) -> Environment:
        if self.data == "linear":
            return LinearBandit(self.n_arms, self.dim, noise=self.noise, seed=seed)
        return RewardTableEnv(multilabel_table_for(self.data), order="iid")


@lru_cache(maxsize=2)
def multilabel_table_for(data: str) -> RewardTable:
    """The reward table of a multi-label data set, built once per process (AmazonCat: ``$BANDITROUTE_AMAZONCAT``)."""
    from banditroute.twostage.envs import load_amazoncat, load_yeast, multilabel_table

    if data == "yeast":
        return multilabel_table(load_yeast())
    if data == "amazoncat":
        return multilabel_table(load_amazoncat())
    raise InputError(f"unknown data set {data!r}; known: {', '.join(DATASETS)}")


def grid(
    data: str,
    *,
    methods: Sequence[str] = METHODS,
    arms: Sequence[int] = (100,),
    dims: Sequence[int] = (20,),
    nominators: Sequence[int] = (1, 2, 5, 10),
    rhos: Sequence[float] = (0.2, 0.4, 0.6, 1.0),
    noises: Sequence[float] = (0.1,),
    trainings: Sequence[str] = ("all",),
    T: int = 1000,
    seeds: int | Iterable[int] = 3,
) -> list[Run]:
    """Every combination (``N`` larger than the number of items is skipped).

    For multi-label data ``arms`` and ``dims`` come from the data (labels, features) and ``noises``
    is ignored (the rewards are the labels).
    """
    if data not in DATASETS:
        raise InputError(f"unknown data set {data!r}; known: {', '.join(DATASETS)}")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise InputError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    seed_list = list(range(check_int(seeds, "seeds"))) if isinstance(seeds, int) else list(seeds)
    if data != "linear":
        table = multilabel_table_for(data)
        arms, dims, noises = (table.n_arms,), (table.dim,), (0.0,)
    runs: list[Run] = []
    for method in methods:
        for M in arms:
            for d in dims:
                for noise in noises:
                    for rho in rhos:
                        s = n_features_for(rho, d)
                        for N in nominators:
                            if N > M:
                                continue
                            for training in trainings if N > 1 else ("all",):
                                runs.extend(
                                    Run(data, method, M, d, N, s, noise, training, T, seed) for seed in seed_list
                                )
    return sorted(set(runs), key=lambda r: r.key)


# ---------------------------------------------------------------------------------------- running
def _run_one(run: Run, path: Path) -> dict[str, Any]:
    trace = run_regret(run.system, run.env, run.T, run.seed)
    return write_record(path, {**asdict(run), **trace.summary(), "seconds": trace.seconds})


def _is_record_of(record: dict[str, Any], args: tuple[Any, ...]) -> bool:
    run = args[0]
    return all(record.get(f.name) == getattr(run, f.name) for f in fields(Run))


def run_sweep(
    runs: Sequence[Run], out_dir: str | Path, *, n_jobs: int = 1, progress: bool = True, backend: str = "local"
) -> pd.DataFrame:
    """Run every run without a finished file in ``out_dir/runs``; return all their records as a table."""
    runs_dir = Path(out_dir) / "runs"
    tasks = [(runs_dir / f"{run.key}.json", (run,)) for run in runs]
    records = run_missing(
        tasks,
        _run_one,
        valid=_is_record_of,
        n_jobs=n_jobs,
        progress=progress,
        label="two-stage runs",
        backend=backend,
    )
    return pd.DataFrame(records)


def run_study(
    runs: Sequence[Run],
    out: Path,
    figures: Path,
    name: str,
    rho: float,
    *,
    n_jobs: int = 1,
    progress: bool = True,
    backend: str = "local",
) -> pd.DataFrame:
    """One sweep end to end: runs (resumed), ``<name>_summary.csv``, the regret and split figures; the summary."""
    summary = summarise(run_sweep(runs, out / name, n_jobs=n_jobs, progress=progress, backend=backend))
    summary.to_csv(out / f"{name}_summary.csv", index=False)
    T, seeds = runs[0].T, len({r.seed for r in runs})
    plot_relative_regret(
        summary, figures / f"twostage_{name}_regret.png", f"{name}: T={T}, {seeds} seeds, mean ± 95% CI"
    )
    plot_shares(summary, figures / f"twostage_{name}_shares.png", rho)
    return summary


SETTING = ["data", "method", "n_arms", "dim", "noise", "training"]


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% CI over seeds of relative regret and the nominator share, per system and setting."""
    rows = []
    keys = [*SETTING, "n_nominators", "n_features"]
    for key, group in results.groupby(keys, sort=True):
        setting: dict[str, Any] = dict(zip(keys, key, strict=True))
        rel, rel_ci = mean_ci(group["relative"].to_numpy())
        share = (group["nominator"] / group["regret"].where(group["regret"] > 0)).to_numpy()
        share_mean, share_ci = mean_ci(share)
        rows.append(
            {
                **setting,
                "d_over_s": setting["dim"] / setting["n_features"],
                "seeds": len(group),
                "relative": float(rel),
                "relative_ci": float(rel_ci),
                "nominator_rel": float(group["nominator"].sum() / group["random"].sum()),
                "ranker_rel": float(group["ranker"].sum() / group["random"].sum()),
                "nominator_share": float(share_mean),
                "nominator_share_ci": float(share_ci),
                "regret": float(group["regret"].mean()),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- figures
def _panels(summary: pd.DataFrame) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    return list(summary.groupby(SETTING, sort=False))


def _label(setting: tuple[Any, ...]) -> str:
    data, method, M, d, noise, training = setting
    noise_part = f", σ={noise:g}" if data == "linear" else ""
    return f"{data} · {method.upper()} · |A|={M}, d={d}{noise_part} · train-on-{training}"


def plot_relative_regret(summary: pd.DataFrame, path: Path, title: str = "") -> None:
    """Figure 3 style: relative regret (÷ uniformly random agent) against ``d/s``, one panel per setting."""
    panels = _panels(summary)
    fig, axes = panel_grid(len(panels))
    for ax, (setting, frame) in zip(axes, panels, strict=False):
        for N, line in frame.groupby("n_nominators"):
            line = line.sort_values("d_over_s")
            label = "single stage (nominator model)" if N == 1 else f"two stage, N={N}"
            style = {"color": "black", "ls": "--", "marker": "s"} if N == 1 else {"marker": "o"}
            ax.errorbar(line["d_over_s"], line["relative"], yerr=line["relative_ci"], label=label, capsize=2, **style)
        ticks = np.unique(frame["d_over_s"])
        ax.set(xscale="log", xlabel="d / s (misspecification)", ylabel="regret / random agent's", title=_label(setting))
        ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
        ax.minorticks_off()
        ax.title.set_fontsize("small")
        ax.grid(alpha=0.3)
    finish_panels(fig, axes, len(panels), title, path)


def plot_shares(summary: pd.DataFrame, path: Path, rho: float, title: str = "") -> None:
    """Figure 4 style: nominator and ranker regret (÷ random agent's, stacked) against ``N`` at ``s = ⌊ρ d⌋``."""
    at_rho = [n_features_for(rho, d) for d in summary["dim"]]
    panels = _panels(summary[summary["n_features"] == np.array(at_rho, dtype=np.int64)])
    if not panels:
        raise InputError(f"no runs with rho = {rho:g} to plot")
    fig, axes = panel_grid(len(panels))
    for ax, (setting, frame) in zip(axes, panels, strict=False):
        frame = frame.sort_values("n_nominators")
        x = np.arange(len(frame))
        ax.bar(x, frame["nominator_rel"], color="tab:orange", label="nominator regret")
        ax.bar(x, frame["ranker_rel"], bottom=frame["nominator_rel"], color="tab:blue", label="ranker regret")
        for xi, (total, share) in enumerate(
            zip(frame["nominator_rel"] + frame["ranker_rel"], frame["nominator_share"], strict=True)
        ):
            ax.annotate(f"{share:.0%}", (xi, total), ha="center", va="bottom", fontsize="x-small")
        ax.set_xticks(x, [str(n) for n in frame["n_nominators"]])
        ax.set_ylim(0, 1.12 * float((frame["nominator_rel"] + frame["ranker_rel"]).max()))  # room for the labels
        ax.set(xlabel="nominators N (1 = single stage)", ylabel="regret / random agent's", title=_label(setting))
        ax.title.set_fontsize("small")
        ax.grid(alpha=0.3, axis="y")
    default = f"Regret split at s = ⌊{rho:g}·d⌋ features per nominator (labels: nominator share)"
    finish_panels(fig, axes, len(panels), title or default, path)
