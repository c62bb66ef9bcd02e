"""The LLM-routing benchmark end to end on a small synthetic table: every family runs, budgets hold, resume works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from banditroute.cli.main import app
from banditroute.core.validation import InputError
from banditroute.envs.reward_table import RewardTable
from banditroute.studies.llm_routing import BUDGETED, FAMILIES, LLMBenchConfig, read_rows, run_benchmark
from llm_fakes import clustered_problem

CONFIG = LLMBenchConfig(
    dataset="synthetic",
    seeds=2,
    budgets=(0.3, 1.0),
    mus=(0.0, 2.0),
    lams=(1.0, float("inf")),
    horizons=(1, 2),
    k=6,
    pilot_dim=4,
    pilot_triplets=2000,
    pilot_max_iter=40,
)


@pytest.fixture(scope="module")
def table() -> RewardTable:
    split, _ = clustered_problem(160, np.random.default_rng(5))
    return RewardTable(split.contexts, split.quality, split.cost, arm_names=("a", "b", "c", "d"), reward_range=(0, 1))


def test_benchmark_runs_every_family_within_budget_and_resumes(table: RewardTable, tmp_path: Path) -> None:
    tokens = np.full(table.n_rows, 100.0)
    result = run_benchmark(table, tokens, True, CONFIG, tmp_path / "bench", progress=False)
    s = result.summary
    assert set(s.family) == set(FAMILIES)
    assert (s.seeds == 2).all() and s.budget_ok.all()
    single_d = s[s.label == "d"].iloc[0]  # the dearest LLM is the reference (best on average)
    assert single_d.quality_pct == pytest.approx(100.0) and single_d.cost_pct == pytest.approx(100.0)
    oracle = s[s.family == "oracle"].iloc[0]
    assert (s.quality_pct <= oracle.quality_pct + 1e-9).all()
    budgeted = s[s.family.isin(BUDGETED)]
    assert (budgeted[budgeted.value == 0.3].cost_pct <= 30.0 + 1e-6).all()
    assert set(result.aiq.family) == set(FAMILIES) - {"oracle", "random"}
    assert all(p.is_file() for p in result.figures)
    assert (tmp_path / "bench" / "summary.csv").is_file()

    # Resume: nothing is recomputed, a torn last line is ignored, another config is refused.
    seed0 = tmp_path / "bench" / "runs" / "seed0.jsonl"
    lines = seed0.read_text().splitlines()
    seed0.write_text("\n".join(lines[:-1]) + '\n{"torn')
    run_benchmark(table, tokens, True, CONFIG, tmp_path / "bench", progress=False)
    rows = list(read_rows(seed0))
    assert [r["label"] for r in rows] == [json.loads(line)["label"] for line in lines]
    other = LLMBenchConfig(dataset="synthetic", seeds=1, families=("single",))
    with pytest.raises(InputError, match="different configuration"):
        run_benchmark(table, tokens, True, other, tmp_path / "bench", progress=False)


def test_bench_config_and_cli_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        LLMBenchConfig(families=("nope",))
    with pytest.raises(InputError):
        LLMBenchConfig(budgets=(-0.1,))
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "llm-routing", "--data", "nope", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "unknown LLM routing dataset" in res.output
    res = runner.invoke(app, ["bench", "llm-routing", "--data-dir", str(tmp_path / "none")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["bench", "llm-routing", "--data-dir", str(tmp_path), "--families", "pilot,bogus"])
    assert res.exit_code == 2 and "bogus" in res.output
