"""``banditroute bench two-stage``: parse the grids, run the two-stage studies, print their tables.

:mod:`banditroute.studies.two_stage` runs the synthetic sweep (relative regret against ``d/s``,
nominator/ranker split against ``N``) and the same on real multi-label data (Yeast from river;
AmazonCat-13K for users with its files); with the ``[torch]`` extra,
:mod:`banditroute.studies.moe_pools` runs the Mixture-of-Experts pool-learning comparison. Every
finished run is a file under ``--out``: an interrupted command resumes where it stopped when run again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from banditroute.cli.app import BackendOpt, JobsOpt, QuietOpt, bench_app, console, user_errors
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


def _sweep(
    runs: list[Any], out: Path, figures: Path, name: str, rho: float, jobs: int, quiet: bool, backend: str
) -> None:
    from banditroute.studies.two_stage import run_study

    summary = run_study(runs, out, figures, name, rho, n_jobs=jobs, progress=not quiet, backend=backend)
    T, seeds = runs[0].T, len({r.seed for r in runs})
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
    backend: BackendOpt = "local",
    quiet: QuietOpt = False,
) -> None:
    """Two-stage recommenders (Hron et al. 2021): Figures 3–4 on synthetic and real data, and MoE pools.

    Defaults take a few minutes on 2 cores; the paper's full grid (docs/specs/two-stage.md) is e.g.
    `--arms 10,100,10000 --dims 5,10,20,40,80 --nominators 1,2,5,10,20 --noise 0.01,0.1,1.0
    --rho 0.2,0.4,0.6,0.8,1.0 --seeds 30`.
    """
    from banditroute.studies.two_stage import grid

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
        _sweep(runs, out, figures, "synthetic", split_rho, jobs, quiet, backend)
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
            _sweep(real_runs, out, figures, data, _list(real_rho, float, "--real-rho")[0], jobs, quiet, backend)
            if moe:
                _moe(data, out, figures, moe_seeds, moe_steps, jobs, quiet, backend)


def _moe(data: str, out: Path, figures: Path, seeds: int, steps: int, jobs: int, quiet: bool, backend: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        console.print("MoE pool learning skipped: it needs PyTorch (pip install 'banditroute[torch]')")
        return
    from banditroute.studies.moe_pools import run_study

    summary = run_study(data, out, figures, seeds=seeds, steps=steps, n_jobs=jobs, progress=not quiet, backend=backend)
    names = {"random": "random", "moe": "MoE", "distilled": "distilled", "popular": "popular"}
    columns = {"setting": "setting"} | {
        f"{m}_{k}": f"{names[m]} {k[0].upper()}@5" for m in names for k in ("precision", "recall")
    }
    console.print(_table(summary, f"{data}: learned (MoE) vs random pools, mean over {seeds} seeds", columns))
