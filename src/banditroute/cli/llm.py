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

from banditroute.cli.app import BackendOpt, JobsOpt, QuietOpt, app, bench_app, console, user_errors

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
    data: Annotated[str, typer.Option(help="Dataset format: llmrouter, routellm or paretobandit.")] = "llmrouter",
    data_dir: Annotated[
        Path | None,
        typer.Option(help=f"The dataset's file or folder, or a folder holding it (default: ${DATA_ENV})."),
    ] = None,
    train: Annotated[
        str | None, typer.Option(help="Training file or folder (with --test; '{seed}' is replaced by each seed).")
    ] = None,
    test: Annotated[
        str | None, typer.Option(help="Test file or folder, routed online (models joined by name).")
    ] = None,
    test_frac: Annotated[
        float | None, typer.Option(help="Split --data-dir by question (deduplicated), this share for testing.")
    ] = None,
    holdout_task: Annotated[
        str | None, typer.Option(help="Leave one task out: a task name, or 'all' (one seed per task).")
    ] = None,
    dedup: Annotated[bool, typer.Option(help="Drop test queries that occur in training (and report them).")] = True,
    near_threshold: Annotated[
        float, typer.Option(help="Embedding cosine at or above which two queries are the same question.")
    ] = 0.95,
    embedder: Annotated[str, typer.Option(help="Query embedder (see `banditroute models`).")] = "minilm-l6-int8",
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache folder (default: the user cache).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/llm-routing-DATA); reruns resume.")
    ] = None,
    seeds: Annotated[str, typer.Option(help="Seeds: a count (5), a range (0-4) or a list (0,3,7).")] = "5",
    train_frac: Annotated[float, typer.Option(help="Random split only: share of queries for training.")] = 0.5,
    families: Annotated[str, typer.Option(help="Comma-separated method families (default: all).")] = "",
    budgets: Annotated[
        str,
        typer.Option(
            help="Comma-separated budgets, fractions of the best LLM's cost (default: the data's cost range)."
        ),
    ] = "",
    max_queries: Annotated[int, typer.Option(help="Random split only: a seeded subsample of this many (0: all).")] = 0,
    jobs: JobsOpt = 1,
    backend: BackendOpt = "local",
    overwrite: Annotated[bool, typer.Option(help="Replace results of a different configuration in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """PILOT, MixLLM, kNN, task-aware routers, cascades and bandit baselines under budgets.

    Quality and cost are percentages of the best single LLM (chosen on the training split) on the
    same online stream. Writes runs/seed*.jsonl (resumable), summary.csv, aiq.csv,
    quality_cost.png and regret.png under --out.
    """
    with user_errors():
        from rich.table import Table

        from banditroute.core.validation import InputError
        from banditroute.llm.protocols import Protocol, default_budgets, parse_seeds
        from banditroute.studies.llm_routing import FAMILIES, LLMBenchConfig, load_inputs, run_benchmark

        fams = tuple(f.strip() for f in families.split(",") if f.strip()) or FAMILIES
        try:
            budget_list = tuple(float(b) for b in budgets.split(",") if b.strip())
        except ValueError:
            raise InputError(f"--budgets must be comma-separated numbers, got {budgets!r}") from None
        seed_list = parse_seeds(seeds)
        # Every option is checked before anything is loaded or embedded.
        config = LLMBenchConfig(
            dataset=data, train_frac=train_frac, seeds=seed_list, families=fams, max_queries=max_queries,
            budgets=budget_list or LLMBenchConfig.budgets,
        )  # fmt: skip
        root = None if train is not None else _resolve_data_dir(data, data_dir)
        protocol = Protocol(data, root, train, test, test_frac, holdout_task, dedup, near_threshold, max_queries)
        inputs = load_inputs(protocol, seed_list, embedder, cache_dir, progress=not quiet)
        first = inputs[seed_list[0]]
        config = replace(config, protocol=protocol.name, budgets=budget_list or default_budgets(first))
        for s in seed_list:
            if inputs[s].label:  # what was split and removed, also with --quiet
                console.print(f"seed {s}: {inputs[s].label}")
        out_dir = out or Path("runs") / f"llm-routing-{data}"
        result = run_benchmark(
            inputs, config, out_dir, n_jobs=jobs, progress=not quiet, overwrite=overwrite, backend=backend
        )

        n_rows = first.table.n_rows
        points = Table(title=f"{data}: {protocol.name}, {n_rows} queries, {first.table.n_arms} LLMs, "
                             f"seeds {seeds}, {embedder}")  # fmt: skip
        for col in ("method", "quality %", "cost %", "regret", "decide µs", "budget ok"):
            points.add_column(col, justify="left" if col == "method" else "right")
        for _, r in result.summary.iterrows():
            points.add_row(
                str(r.label),
                _pm(r.quality_pct, r.quality_pct_ci),
                _pm(r.cost_pct, r.cost_pct_ci),
                f"{r.regret:.0f}",
                f"{r.decide_us:.0f}",
                "–" if r.budget_ok is None or r.budget_ok != r.budget_ok else "yes" if r.budget_ok else "NO",
            )
        console.print(points)
        aiq = Table(title="AIQ over the single LLMs' cost range (% of the best LLM's quality)")
        for col in ("family", "AIQ %", "best quality % at cost ≤ 30%"):
            aiq.add_column(col, justify="left" if col == "family" else "right")
        for _, r in result.aiq.iterrows():
            aiq.add_row(str(r.family), _pm(r.aiq_pct, r.aiq_ci), _pm(r.best_quality_pct_at_cost_le_30, float("nan")))
        console.print(aiq)
        console.print(f"results: {result.out_dir}  (summary.csv, aiq.csv, {', '.join(p.name for p in result.figures)})")


def _pm(mean: float, half: float) -> str:
    """``mean ± half``; just the mean when the half-width is undefined (a single seed), "–" without a mean."""
    if mean != mean:
        return "–"
    return f"{mean:.1f}" if half != half else f"{mean:.1f} ± {half:.1f}"


@app.command("llm-split")
def llm_split(
    data: Annotated[Path, typer.Option(help="The file (or folder) to split.")],
    out: Annotated[Path, typer.Option(help="Output folder: OUT/SEED/train.* and test.* for each seed.")],
    dataset: Annotated[str, typer.Option(help="Its format: llmrouter or paretobandit.")] = "llmrouter",
    test_frac: Annotated[float, typer.Option(help="Share of the queries for the test file.")] = 0.2,
    seeds: Annotated[str, typer.Option(help="Seeds: a count (5), a range (0-4) or a list (0,3,7).")] = "1",
    near_threshold: Annotated[
        float, typer.Option(help="Embedding cosine at or above which two queries are the same question.")
    ] = 0.95,
    embedder: Annotated[str, typer.Option(help="Embedder for near-duplicates (see `banditroute models`).")] = (
        "minilm-l6-int8"
    ),
    cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache folder (default: the user cache).")] = None,
    similarity_report: Annotated[
        bool, typer.Option(help="Print the cosine of edited duplicates vs distinct questions (the threshold).")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Split a dataset file by question into training and test files that share no question.

    Exact, normalised-text and near-duplicate queries (embedding cosine ≥ --near-threshold) stay on
    one side. Run the result with `banditroute bench llm-routing --train OUT/{seed}/train.json
    --test OUT/{seed}/test.json --seeds ...`.
    """
    with user_errors():
        from rich.table import Table

        from banditroute.llm.protocols import parse_seeds
        from banditroute.studies.llm_routing import write_question_splits

        written, profile = write_question_splits(
            dataset, data, out, test_frac, parse_seeds(seeds), embedder, cache_dir,
            threshold=near_threshold, similarity_report=similarity_report, progress=not quiet,
        )  # fmt: skip
        if profile:
            report = Table(title=f"cosine similarity ({embedder}) on {data}; threshold {near_threshold:g}")
            for col in ("pairs", "n", "1%", "5%", "50%", "95%", "99%", "max", f"share ≥ {near_threshold:g}"):
                report.add_column(col, justify="left" if col == "pairs" else "right")
            for name, row in profile.items():
                report.add_row(name, *row)
            console.print(report)
        for line in written:
            console.print(line)
