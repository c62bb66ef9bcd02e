"""``banditroute bench llm-routing``: budgeted LLM routing on a real quality/cost table.

A thin face over :mod:`banditroute.studies.llm_routing`: load the dataset, embed its queries with a
real local embedder (through the embedding cache, so re-runs encode nothing), run every method
over seeds and budgets, print the operating points and AIQ, and write CSVs and figures.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from banditroute.cli.app import JobsOpt, QuietOpt, bench_app, console, user_errors

DATA_ENV = "BANDITROUTE_LLM_DATA"


def _resolve_data_dir(data: str, data_dir: Path | None) -> Path:
    """``--data-dir`` (or ``$BANDITROUTE_LLM_DATA``) is the dataset's folder or a folder holding it."""
    from banditroute.core.validation import InputError

    root = data_dir or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None)
    if root is None:
        raise InputError(f"pass --data-dir (the {data} folder) or set {DATA_ENV}")
    return root / data if (root / data).is_dir() else root


@bench_app.command("llm-routing")
def llm_routing(
    data: Annotated[str, typer.Option(help="Dataset: llmrouter, routellm or paretobandit.")] = "llmrouter",
    data_dir: Annotated[
        Path | None, typer.Option(help=f"The dataset's folder, or its parent (default: ${DATA_ENV}).")
    ] = None,
    embedder: Annotated[str, typer.Option(help="Query embedder (see `banditroute models`).")] = "minilm-l6-int8",
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache folder (default: the user cache).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/llm-routing-DATA); reruns resume.")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds (random split + stream order each).")] = 5,
    train_frac: Annotated[float, typer.Option(help="Share of queries for offline training.")] = 0.5,
    families: Annotated[str, typer.Option(help="Comma-separated method families (default: all).")] = "",
    budgets: Annotated[str, typer.Option(help="Comma-separated budgets, fractions of the best LLM's cost.")] = "",
    max_queries: Annotated[int, typer.Option(help="Use a seeded subsample of this many queries (0: all).")] = 0,
    jobs: JobsOpt = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace results of a different configuration in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """PILOT, MixLLM, cascades and bandit baselines under budgets: quality–cost curves, AIQ, latency.

    Quality and cost are percentages of the best single LLM (chosen on the training split) on the
    same online stream. Writes runs/seed*.jsonl (resumable), summary.csv, aiq.csv,
    quality_cost.png and regret.png under --out.
    """
    with user_errors():
        from rich.table import Table

        from banditroute.core.validation import InputError
        from banditroute.studies.llm_routing import FAMILIES, LLMBenchConfig, load_routing_table, run_benchmark

        fams = tuple(f.strip() for f in families.split(",") if f.strip()) or FAMILIES
        try:
            budget_list = tuple(float(b) for b in budgets.split(",") if b.strip())
        except ValueError:
            raise InputError(f"--budgets must be comma-separated numbers, got {budgets!r}") from None
        config = LLMBenchConfig(
            dataset=data,
            train_frac=train_frac,
            seeds=seeds,
            families=fams,
            max_queries=max_queries,
        )
        if budget_list:
            config = replace(config, budgets=budget_list)
        routing, table = load_routing_table(
            data, _resolve_data_dir(data, data_dir), embedder, cache_dir, max_queries=max_queries, progress=not quiet
        )
        out_dir = out or Path("runs") / f"llm-routing-{data}"
        result = run_benchmark(
            table, routing.input_tokens, routing.cost_known, config, out_dir,
            n_jobs=jobs, progress=not quiet, overwrite=overwrite,
        )  # fmt: skip

        points = Table(title=f"{data}: {routing.n_rows} queries, {routing.n_arms} LLMs, {seeds} seeds, {embedder}")
        for col in ("method", "quality %", "cost %", "regret", "decide µs", "budget ok"):
            points.add_column(col, justify="left" if col == "method" else "right")
        for _, r in result.summary.iterrows():
            points.add_row(
                str(r.label),
                f"{r.quality_pct:.1f} ± {r.quality_pct_ci:.1f}",
                f"{r.cost_pct:.1f} ± {r.cost_pct_ci:.1f}",
                f"{r.regret:.0f}",
                f"{r.decide_us:.0f}",
                "yes" if r.budget_ok else "NO",
            )
        console.print(points)
        aiq = Table(title="AIQ over the single LLMs' cost range (% of the best LLM's quality)")
        for col in ("family", "AIQ %", "best quality % at cost ≤ 30%"):
            aiq.add_column(col, justify="left" if col == "family" else "right")
        for _, r in result.aiq.iterrows():
            aiq.add_row(str(r.family), f"{r.aiq_pct:.1f} ± {r.aiq_ci:.1f}", f"{r.best_quality_pct_at_cost_le_30:.1f}")
        console.print(aiq)
        console.print(f"results: {result.out_dir}  (summary.csv, aiq.csv, {', '.join(p.name for p in result.figures)})")
