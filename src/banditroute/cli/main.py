"""The ``banditroute`` command line: simulate, demo, and list policies and environments.

A thin face over :mod:`banditroute.simulate.experiment`: it parses options, builds an
:class:`~banditroute.simulate.experiment.Experiment`, runs it and prints the summary. Bad input
(an unknown name, a malformed ``key=value``, a parameter a policy rejects) ends with a one-line
message and exit status 2, never a traceback.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from banditroute.cli.app import (
    BackendOpt,
    JobsOpt,
    QuietOpt,
    app,
    console,
    parse_options,
    parse_policy_options,
    user_errors,
)
from banditroute.core.validation import InputError
from banditroute.envs.registry import ENV_REGISTRY
from banditroute.policies.registry import REGISTRY

BASELINES = ("uniform", "egreedy", "linucb", "lints", "exp3", "loglinear")
# The product headline: clustered queries near one of M=4 experts' rank-2 subspaces in d=32.
DEMO_ENV: dict[str, Any] = {"n_arms": 4, "dim": 32, "rank": 2, "queries": "clustered", "query_noise": 0.1}
DEMO_T = 20_000
DEMO_SEEDS = 4
DEMO_REAL_SEEDS = 5


def _run(
    env: str,
    env_options: dict[str, Any],
    policies: Sequence[str],
    policy_options: dict[str, dict[str, Any]],
    *,
    T: int,
    seeds: int,
    batch_size: int,
    out: Path,
    jobs: int,
    quiet: bool,
    overwrite: bool,
    title: str,
    backend: str = "local",
) -> None:
    from banditroute.simulate.experiment import Experiment, PolicyRun, run_experiment

    if seeds < 1:
        raise InputError(f"--seeds must be at least 1, got {seeds}")
    exp = Experiment(
        env=env,
        env_options=env_options,
        policies=tuple(PolicyRun(p, policy_options.get(p, {})) for p in policies),
        T=T,
        seeds=tuple(range(seeds)),
        batch_size=batch_size,
    )
    result = run_experiment(
        exp, out, n_jobs=jobs, progress=not quiet, overwrite=overwrite, title=title, backend=backend
    )
    console.print(result.table(title))
    console.print(
        "mean ± 95% CI over seeds · regret: cumulative vs the per-context oracle · gap: oracle − E_π[reward]"
        f" (run average / final {exp.final_fraction:.0%})",
        style="dim",
        markup=False,
    )
    console.print(f"results: {result.out_dir}  (summary.csv, figure: {result.figure})")


@app.command()
def simulate(
    env: Annotated[str, typer.Option(help="Environment name (see `banditroute envs`).")] = "lowrank",
    policies: Annotated[
        str, typer.Option(help="Comma-separated policy names (see `banditroute policies`).")
    ] = ",".join(BASELINES),
    T: Annotated[int, typer.Option("--T", "-T", help="Rounds per run.")] = 20_000,
    seeds: Annotated[
        int, typer.Option(help="Number of seeds 0..N-1; each is a new problem instance unless --env-opt seed=K.")
    ] = 8,
    out: Annotated[Path | None, typer.Option(help="Run directory (default: runs/ENV); rerunning resumes.")] = None,
    jobs: JobsOpt = -1,
    batch_size: Annotated[int, typer.Option(help="Decisions between policy updates (1 = fully online).")] = 1,
    env_opt: Annotated[
        list[str] | None,
        typer.Option(help="Environment option key=value (repeatable), e.g. dim=64, path=table.npz, seed=0."),
    ] = None,
    policy_opt: Annotated[
        list[str] | None,
        typer.Option(help="Policy parameter name.key=value (repeatable), e.g. linucb.alpha=0.5."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the results of a different experiment in --out.")] = False,
    backend: BackendOpt = "local",
    quiet: QuietOpt = False,
) -> None:
    """Compare policies on one environment over several seeds; print and save the summary.

    Writes one Parquet file per (policy, seed) under --out (an interrupted run resumes), then
    summary.csv and regret.png (cumulative regret and sub-optimality gap with 95% CI bands).
    """
    with user_errors():
        names = [p.strip() for p in policies.split(",") if p.strip()]
        if not names:
            raise InputError("--policies is empty")
        if len(set(names)) != len(names):
            raise InputError(f"--policies lists a name twice: {policies}")
        _run(
            env,
            parse_options(env_opt or [], "--env-opt"),
            names,
            parse_policy_options(policy_opt or [], names),
            T=T,
            seeds=seeds,
            batch_size=batch_size,
            out=out or Path("runs") / env,
            jobs=jobs,
            quiet=quiet,
            overwrite=overwrite,
            title=f"{env}: T={T}, {seeds} seeds",
            backend=backend,
        )


def demo_policies() -> list[str]:
    """Every HPG variant registered (``hpg*``), then the baselines."""
    return [name for name in REGISTRY if name.startswith("hpg")] + list(BASELINES)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    synthetic: Annotated[
        bool, typer.Option(help="The synthetic HPG demo (low-rank expert routing) instead of the real-data one.")
    ] = False,
    table: Annotated[
        Path | None, typer.Option(help="Another reward table of retrieval pipelines (default: the shipped one).")
    ] = None,
    T: Annotated[int, typer.Option("--T", "-T", help="Rounds per run (--synthetic only).")] = DEMO_T,
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (arrival orders).")] = None,
    jobs: JobsOpt = -1,
    overwrite: Annotated[
        bool, typer.Option(help="Replace results of a different (e.g. older) demo configuration in --out.")
    ] = True,
    quiet: QuietOpt = False,
) -> None:
    """The main job: route among real retrieval pipelines on a real table shipped in the package.

    Replays real queries (SciFact claims and SQuAD questions) with the nDCG@10 and measured cost of
    single retrievers (BM25, embedding models) and fusion pipelines, learning online from bandit
    feedback; prints quality and cost against the best single retriever, the best fixed pipeline and
    the per-query oracle, and writes demo.png under --out. `--synthetic`: HPG against the baselines on
    low-rank expert routing (M=4 experts on rank-2 subspaces of d=32; the oracle is quadratic in the
    query, so linear policies are misspecified).
    """
    with user_errors():
        if not synthetic:
            _real_demo(out, table, seeds or DEMO_REAL_SEEDS, jobs, quiet)
            return
        names = demo_policies()
        _run(
            "lowrank",
            dict(DEMO_ENV),
            names,
            {},
            T=T,
            seeds=seeds or DEMO_SEEDS,
            batch_size=1,
            out=out,
            jobs=jobs,
            quiet=quiet,
            overwrite=overwrite,
            title="Low-rank routing (M=4 experts, d=32, rank 2, clustered queries): "
            f"T={T}, {seeds or DEMO_SEEDS} seeds",
        )


def _real_demo(out: Path, table: Path | None, seeds: int, jobs: int, quiet: bool) -> None:
    from banditroute.studies.retrieval_demo import demo_rows, run_demo

    result = run_demo(out, table=table, seeds=seeds, jobs=jobs, progress=not quiet)
    study = result.study
    view = Table(
        title=f"Routing among retrieval pipelines — {study.n_queries} queries, {len(study.headroom.arm_names)} "
        "arms: one pass from scratch, bandit feedback only, "
        f"{seeds} arrival orders (mean ± 95% CI)"
    )
    for col in ("router / reference", "nDCG@10", "% of best fixed", "cost % of best fixed", "below best single until"):
        view.add_column(col, justify="left" if col.startswith("router") else "right")
    for row in demo_rows(study):
        reward, cost = row["reward"], row.get("cost")
        view.add_row(
            row["name"],
            f"{reward[0]:.4f}" + (f" ± {reward[1]:.4f}" if reward[1] else ""),
            f"{row['quality']:.1%}",
            "" if cost is None else f"{cost[0]:.0%} ± {cost[1]:.0%}",
            row.get("below", ""),
        )
    console.print(view)
    console.print(f"figure: {result.figure}   traces and summary: {out / 'shuffle'}")


def _defaults(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'(required)' if v is inspect.Parameter.empty else v!r}" for k, v in params.items())


@app.command("policies")
def list_policies() -> None:
    """List the registered policies with what they are and their defaults."""
    table = Table(title="Policies (use with --policies; set parameters with --policy-opt name.key=value)")
    for col in ("Name", "What it is", "Defaults"):
        table.add_column(col)
    for name, entry in REGISTRY.items():
        table.add_row(name, entry.summary, _defaults(entry.defaults))
    console.print(table)


@app.command("envs")
def list_envs() -> None:
    """List the registered environments with their options and defaults."""
    table = Table(title="Environments (use with --env; set options with --env-opt key=value)")
    for col in ("Name", "What it is", "Options (defaults)"):
        table.add_column(col)
    with user_errors():
        for name, entry in ENV_REGISTRY.items():
            table.add_row(name, entry.summary, _defaults(entry.options()))
    console.print(table)


import banditroute.twostage  # noqa: E402, F401  (registers the two-stage policy)
from banditroute.cli import analyze as _analyze  # noqa: E402, F401  (registers its commands)
from banditroute.cli import build_table as _build_table  # noqa: E402, F401  (registers its commands)
from banditroute.cli import embed_routing as _embed_routing  # noqa: E402, F401  (registers its commands)
from banditroute.cli import init as _init  # noqa: E402, F401  (registers its commands)
from banditroute.cli import llm as _llm  # noqa: E402, F401  (registers its commands)
from banditroute.cli import models as _models  # noqa: E402, F401  (registers its commands)
from banditroute.cli import serve as _serve  # noqa: E402, F401  (registers its commands)
from banditroute.cli import twostage as _twostage  # noqa: E402, F401  (registers its commands)
