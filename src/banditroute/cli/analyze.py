"""``banditroute analyze TABLE``: what to run on a reward table, and whether routing will pay.

A thin face over :func:`banditroute.analysis.recommend.analyze`: prints the arms (mean reward with
its CI, share of queries each alone wins, cost), the best single retriever against the best fixed
arm, the full-information predictability of each policy class over random splits, the quality
reachable at fractions of the best arm's cost, and a plain recommendation; ``--json`` saves it all.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from banditroute.cli.app import app, console, err_console, user_errors


@app.command("analyze")
def analyze_table(
    table: Annotated[Path, typer.Argument(help="A reward table (.npz) from `banditroute build-table` or any loader.")],
    splits: Annotated[
        int, typer.Option(help="Random train/test halves for the predictability fits (≥ 10 advised).")
    ] = 10,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the splits and the bootstrap.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every number to this JSON file.")] = None,
) -> None:
    """Headroom, predictability and budget of a reward table, ending in a plain recommendation.

    Example: `banditroute analyze tables/scifact.npz`. Fits run with full information (every arm's
    reward known), so they bound what an online router can learn; they take about a minute on 10,000 queries.
    """
    from banditroute.analysis.recommend import analyze
    from banditroute.envs.reward_table import RewardTable

    with user_errors():
        loaded = RewardTable.load(table)
        result = analyze(loaded, splits=splits, n_boot=n_boot, seed=seed)
        for line in result.warnings:
            err_console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
        room = result.headroom
        meta = loaded.metadata
        arms = Table(
            title=f"{table}: {result.n_queries} queries, {meta.get('metric', 'reward')}@{meta.get('k', '')} "
            "(mean [95% bootstrap CI])"
        )
        for col in ("arm", "kind", "mean reward", "uniquely best on", "ms / query"):
            arms.add_column(col, justify="left" if col in ("arm", "kind") else "right")
        for m, name in enumerate(result.arm_names):
            mark = " (best)" if m == room.best_arm else (" (best single)" if m == result.best_single_retriever else "")
            cost = "" if result.mean_cost is None else f"{result.mean_cost[m] * 1e3:.3f}"
            kind = "retriever" if result.singles[m] else "pipeline"
            arms.add_row(name + mark, kind, str(room.arm_means[m]), f"{room.unique_best[m].mean:.1%}", cost)
        arms.add_section()
        if result.margin is not None:
            arms.add_row("best − best single retriever", "", str(result.margin), "", "")
        arms.add_row("per-query oracle", "", str(room.oracle), f"ties: {room.ties.mean:.1%}", "")
        arms.add_row("oracle − best arm", "", str(room.gap), "", "")
        console.print(arms)
        pred = result.predictability
        if pred is not None:
            fits = Table(title=f"Predictability: full-information fits, held-out halves, {len(pred.oracle)} splits")
            for col in ("class", "held-out reward (mean ± sd)", "min … max", "gain over constant"):
                fits.add_column(col, justify="left" if col == "class" else "right")
            for c, kind in enumerate(pred.classes):
                r = pred.rewards[:, c]
                gain = (
                    "" if kind == "constant" else f"{pred.gain(kind).mean():+.4f} ± {pred.gain(kind).std(ddof=1):.4f}"
                )
                fits.add_row(kind, f"{r.mean():.4f} ± {r.std(ddof=1):.4f}", f"{r.min():.4f} … {r.max():.4f}", gain)
            fits.add_row("oracle", f"{pred.oracle.mean():.4f}", "", "")
            console.print(fits)
        if result.budget:
            best_name = result.arm_names[room.best_arm]
            budget = Table(title=f"Quality at a fraction of {best_name}'s cost")
            for col in ("cost fraction", "mix of fixed arms", "per-query oracle (ceiling)"):
                budget.add_column(col, justify="right")
            q = room.arm_means[room.best_arm].mean
            for p in result.budget:
                budget.add_row(
                    f"{p.fraction:.0%}",
                    f"{p.fixed_mix:.4f} ({p.fixed_mix / q:.1%})",
                    f"{p.oracle:.4f} ({p.oracle / q:.1%})",
                )
            console.print(budget)
        console.print("[bold]Recommendation[/]")
        for line in result.recommendation:
            console.print(f"- {line}", highlight=False)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(asdict(result), default=_jsonable, indent=1) + "\n")
            console.print(f"analysis: {json_out}")


def _jsonable(value: object) -> object:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
