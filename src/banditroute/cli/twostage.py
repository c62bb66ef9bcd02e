"""``banditroute bench two-stage``: the two-stage recommender experiments and figures (issue 6).

Runs the synthetic sweep (relative regret against ``d/s``, nominator/ranker split against ``N``),
the same on real multi-label data (Yeast from river; AmazonCat-13K for users with its files) and,
with the ``[torch]`` extra, the Mixture-of-Experts pool-learning comparison. Every finished run is
a file under ``--out``: an interrupted command resumes where it stopped when run again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from banditroute.cli.app import JobsOpt, QuietOpt, bench_app, console, user_errors
from banditroute.core.validation import InputError


def _list(text: str, kind: type, name: str) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{name} must be a comma-separated list of {kind.__name__}s, got {text!r}") from None
    if not values:
        raise InputError(f"{name} is empty")
    return values


def _table(frame: Any, title: str, columns: dict[str, str]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for header in columns.values():
        table.add_column(header, justify="right")
    for _, row in frame.iterrows():
        table.add_row(*(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns))
    return table


REGRET_COLUMNS = {
    "method": "method",
    "n_nominators": "N",
    "n_features": "s",
    "d_over_s": "d/s",
    "relative": "regret / random",
    "relative_ci": "± 95% CI",
    "nominator_share": "nominator share",
}


def _sweep(runs: list[Any], out: Path, figures: Path, name: str, rho: float, jobs: int, quiet: bool) -> None:
    from banditroute.twostage.sweep import plot_relative_regret, plot_shares, run_sweep, summarise

    results = run_sweep(runs, out / name, n_jobs=jobs, progress=not quiet)
    summary = summarise(results)
    summary.to_csv(out / f"{name}_summary.csv", index=False)
    T, seeds = runs[0].T, len({r.seed for r in runs})
    plot_relative_regret(
        summary, figures / f"twostage_{name}_regret.png", f"{name}: T={T}, {seeds} seeds, mean ± 95% CI"
    )
    plot_shares(summary, figures / f"twostage_{name}_shares.png", rho)
    console.print(
        _table(summary, f"{name}: regret relative to a uniformly random agent (T={T}, {seeds} seeds)", REGRET_COLUMNS)
    )


@bench_app.command("two-stage")
def two_stage(
    out: Annotated[Path, typer.Option(help="Run directory; rerunning resumes.")] = Path("runs/two-stage"),
    figures: Annotated[Path | None, typer.Option(help="Where the PNGs go (default: --out).")] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per configuration.")] = 3,
    T: Annotated[int, typer.Option("--T", "-T", help="Rounds per synthetic run.")] = 1000,
    methods: Annotated[str, typer.Option(help="Components (both stages): ucb, greedy, pg.")] = "ucb,greedy,pg",
    arms: Annotated[str, typer.Option(help="Synthetic numbers of items |A| (spec: 10,100,10000).")] = "100",
    dims: Annotated[str, typer.Option(help="Synthetic feature dimensions d (spec: 5,10,20,40,80).")] = "20",
    nominators: Annotated[str, typer.Option(help="Numbers of nominators N; 1 = single stage.")] = "1,2,5,10",
    rho: Annotated[
        str, typer.Option(help="Misspecification ρ: nominators see s = ⌊ρ d⌋ features.")
    ] = "0.2,0.4,0.6,1.0",
    noise: Annotated[str, typer.Option(help="Synthetic reward noise sd (spec: 0.01,0.1,1.0).")] = "0.1",
    training: Annotated[str, typer.Option(help="Nominator training: all, own, proposal.")] = "all",
    shares_rho: Annotated[float, typer.Option(help="ρ of the nominator/ranker split figure (nearest in --rho).")] = 0.4,
    real: Annotated[str, typer.Option(help="Real multi-label data: yeast, amazoncat, none.")] = "yeast",
    real_T: Annotated[int, typer.Option("--real-T", help="Rounds per real-data run.")] = 2000,
    real_rho: Annotated[str, typer.Option(help="ρ on real data.")] = "0.2,0.5,1.0",
    real_nominators: Annotated[str, typer.Option(help="N on real data.")] = "1,2,5",
    amazoncat: Annotated[
        Path | None, typer.Option(help="AmazonCat-13K BoW file (or $BANDITROUTE_AMAZONCAT) for --real amazoncat.")
    ] = None,
    moe: Annotated[
        bool, typer.Option(help="Mixture-of-Experts pool learning on the real data (needs [torch]).")
    ] = True,
    moe_seeds: Annotated[int, typer.Option(help="Seeds per MoE configuration.")] = 3,
    moe_steps: Annotated[int, typer.Option(help="Training steps per MoE / random-pool model.")] = 300,
    jobs: JobsOpt = 2,
    quiet: QuietOpt = False,
) -> None:
    """Two-stage recommenders (Hron et al. 2021): Figures 3–4 on synthetic and real data, and MoE pools.

    Defaults take a few minutes on 2 cores; the spec's full grid is e.g. `--arms 10,100,10000 --dims
    5,10,20,40,80 --nominators 1,2,5,10,20 --noise 0.01,0.1,1.0 --rho 0.2,0.4,0.6,0.8,1.0 --seeds 30`.
    """
    from banditroute.twostage.sweep import grid

    with user_errors():
        out.mkdir(parents=True, exist_ok=True)
        figures = figures or out
        figures.mkdir(parents=True, exist_ok=True)
        if amazoncat is not None:
            os.environ["BANDITROUTE_AMAZONCAT"] = str(amazoncat)
        method_list = _list(methods, str, "--methods")
        trainings = _list(training, str, "--training")
        rhos = _list(rho, float, "--rho")
        split_rho = min(rhos, key=lambda r: abs(r - shares_rho))  # the grid's ρ nearest to --shares-rho
        runs = grid(
            "linear",
            methods=method_list,
            arms=_list(arms, int, "--arms"),
            dims=_list(dims, int, "--dims"),
            nominators=_list(nominators, int, "--nominators"),
            rhos=rhos,
            noises=_list(noise, float, "--noise"),
            trainings=trainings,
            T=T,
            seeds=seeds,
        )
        _sweep(runs, out, figures, "synthetic", split_rho, jobs, quiet)
        for data in _list(real, str, "--real"):
            if data == "none":
                continue
            real_runs = grid(
                data,
                methods=method_list,
                nominators=_list(real_nominators, int, "--real-nominators"),
                rhos=_list(real_rho, float, "--real-rho"),
                trainings=trainings,
                T=real_T,
                seeds=seeds,
            )
            _sweep(real_runs, out, figures, data, _list(real_rho, float, "--real-rho")[0], jobs, quiet)
            if moe:
                _moe(data, out, figures, moe_seeds, moe_steps, jobs, quiet)


MOE_BASE: dict[str, Any] = {"n_experts": 5, "n_features": 10, "embed_dim": 10, "per_item": 500, "sigma2": 1.0}
# One setting changed at a time around MOE_BASE (the spec's grid is their product; N is capped by the items).
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

    from banditroute.twostage.envs import MultiLabel
    from banditroute.twostage.moe import compare_pools
    from banditroute.twostage.sweep import multilabel_table_for

    torch.set_num_threads(1)
    table = multilabel_table_for(data)
    full = MultiLabel(table.contexts, table.rewards > 0.5, data, table.arm_names)
    train, test = full.split(config.test_fraction, seed=config.seed)
    record = compare_pools(train, test, config)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return record


def _moe(data: str, out: Path, figures: Path, seeds: int, steps: int, jobs: int, quiet: bool) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        console.print("MoE pool learning skipped: it needs PyTorch (pip install 'banditroute[torch]')")
        return
    from dataclasses import asdict

    import pandas as pd

    from banditroute.simulate.parallel import progress_bar, unordered_map
    from banditroute.twostage.sweep import multilabel_table_for

    table = multilabel_table_for(data)
    configs = moe_configs(table.n_arms, table.dim, steps, seeds)
    moe_dir = out / f"{data}_moe"
    moe_dir.mkdir(parents=True, exist_ok=True)
    records, todo = [], []
    for config in configs:
        path = moe_dir / ("-".join(f"{k}{v}" for k, v in asdict(config).items()) + ".json")
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and set(record) >= MOE_METRICS:
            records.append(record)
        else:  # missing, damaged, or written by an older version: recompute
            todo.append((data, config, path))
    with progress_bar(not quiet) as bar:
        task = bar.add_task(f"{data}: MoE vs random pools", total=len(configs), completed=len(records))
        for record in unordered_map(_moe_task, todo, jobs):
            records.append(record)
            bar.update(task, advance=1)
    frame = pd.DataFrame(records)
    frame.to_csv(out / f"{data}_moe_runs.csv", index=False)
    summary = summarise_moe(frame)
    summary.to_csv(out / f"{data}_moe_summary.csv", index=False)
    plot_moe(
        summary,
        figures / f"twostage_{data}_moe.png",
        f"{data}: precision@5 / recall@5 on a held-out 30% ({seeds} seeds)",
    )
    names = {"random": "random", "moe": "MoE", "distilled": "distilled", "popular": "popular"}
    columns = {"setting": "setting"} | {
        f"{m}_{k}": f"{names[m]} {k[0].upper()}@5" for m in names for k in ("precision", "recall")
    }
    console.print(_table(summary, f"{data}: learned (MoE) vs random pools, mean over {seeds} seeds", columns))


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(8, 0.9 * len(summary)), 6.5), layout="constrained")
    FigureCanvasAgg(fig)
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
