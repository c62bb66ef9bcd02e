"""``banditroute bench embed-routing``: the embedding-routing experiment on saved reward tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from banditroute.cli.app import BackendOpt, JobsOpt, QuietOpt, bench_app, console, user_errors
from banditroute.core.validation import InputError


@bench_app.command("embed-routing")
def embed_routing(
    table: Annotated[list[Path], typer.Option(help="Reward table(s) from `banditroute build-table` (repeatable).")],
    out: Annotated[Path, typer.Option(help="Results directory; one sub-directory per table. Reruns resume.")] = Path(
        "runs/embed-routing"
    ),
    seeds: Annotated[int, typer.Option(help="Seeds per (policy, order).")] = 5,
    passes: Annotated[int, typer.Option(help="Passes over the table's queries per run (T = passes × n).")] = 1,
    orders: Annotated[str, typer.Option(help="Comma-separated arrival orders: shuffle, blocks.")] = "shuffle,blocks",
    context_dim: Annotated[int, typer.Option(help="Principal components of the router context kept.")] = 32,
    policies: Annotated[
        str | None, typer.Option(help="Comma-separated policies (default: safe-linucb, safe-hpg, hpg, ... uniform).")
    ] = None,
    expressiveness: Annotated[
        bool, typer.Option(help="Fit the policy classes with full information (slow on large tables).")
    ] = True,
    budget: Annotated[
        str, typer.Option(help="Budgets for the paced routers, as fractions of the best fixed arm's cost.")
    ] = "0.5",
    jobs: JobsOpt = -1,
    backend: BackendOpt = "local",
    quiet: QuietOpt = False,
) -> None:
    """Headroom, class expressiveness and online policies (HPG vs baselines) on each table.

    Writes, per table, the projected-context table, Parquet traces per (order, policy, seed),
    summary.csv and regret.png per order, and report.md with every number and its 95% CI.
    """
    from banditroute.simulate.experiment import PolicyRun
    from banditroute.studies.embed_routing import DEFAULT_POLICIES, report_markdown, run_embed_routing

    with user_errors():
        order_list = [o.strip() for o in orders.split(",") if o.strip()]
        runs = (
            DEFAULT_POLICIES
            if policies is None
            else tuple(PolicyRun(p.strip()) for p in policies.split(",") if p.strip())
        )
        fractions = tuple(_fraction(f) for f in budget.split(",") if f.strip())
        if not table:
            raise InputError("give at least one --table")
        for path in table:
            result = run_embed_routing(
                path,
                out / path.stem,
                seeds=seeds,
                passes=passes,
                orders=order_list,
                context_dim=context_dim,
                policies=runs,
                expressiveness=expressiveness,
                budget_fractions=fractions,
                jobs=jobs,
                backend=backend,
                progress=not quiet,
            )
            text = report_markdown(result)
            (out / path.stem / "report.md").write_text(text + "\n")
            console.print(Markdown(text))


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--budget takes fractions like 0.5, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise InputError(f"--budget fractions must lie in (0, 1], got {value}")
    return value
