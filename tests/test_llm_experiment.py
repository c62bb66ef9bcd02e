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
from banditroute.studies.llm_routing import BUDGETED, FAMILIES, LLMBenchConfig, SeedInputs, read_rows, run_benchmark
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
    knn_ks=(5, 20),
    task_regs=(1e-2,),
    select_folds=3,
)


@pytest.fixture(scope="module")
def inputs() -> SeedInputs:
    split, labels = clustered_problem(160, np.random.default_rng(5))
    table = RewardTable(split.contexts, split.quality, split.cost, arm_names=("a", "b", "c", "d"), reward_range=(0, 1))
    queries = tuple(f"query {i} of kind {k}?" for i, k in enumerate(labels))
    return SeedInputs(table, np.full(table.n_rows, 100.0), True, queries, tuple(f"task{k}" for k in labels))


def test_benchmark_runs_every_family_within_budget_and_resumes(inputs: SeedInputs, tmp_path: Path) -> None:
    result = run_benchmark(inputs, CONFIG, tmp_path / "bench", progress=False)
    s = result.summary
    assert set(s.family) == set(FAMILIES)
    assert (s.seeds == 2).all()
    assert s[s.family.isin(BUDGETED)].budget_ok.all() and s[~s.family.isin(BUDGETED)].budget_ok.isna().all()
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
    run_benchmark(inputs, CONFIG, tmp_path / "bench", progress=False)
    rows = list(read_rows(seed0))
    assert [r["label"] for r in rows] == [json.loads(line)["label"] for line in lines]
    other = LLMBenchConfig(dataset="synthetic", seeds=1, families=("single",))
    with pytest.raises(InputError, match="different configuration"):
        run_benchmark(inputs, other, tmp_path / "bench", progress=False)


def test_bench_config_and_cli_reject_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        LLMBenchConfig(families=("nope",))
    with pytest.raises(InputError):
        LLMBenchConfig(budgets=(-0.1,))
    for bad in ({"train_frac": 1.0}, {"train_frac": 0.0}, {"seeds": (1, 1)}, {"seeds": (-1,)}):
        with pytest.raises(InputError):
            LLMBenchConfig(**bad)  # type: ignore[arg-type]
    assert LLMBenchConfig(seeds=3).seeds == (0, 1, 2)
    runner = CliRunner()
    res = runner.invoke(app, ["bench", "llm-routing", "--data", "nope", "--data-dir", str(tmp_path)])
    assert res.exit_code == 2 and "unknown LLM routing dataset" in res.output
    res = runner.invoke(app, ["bench", "llm-routing", "--data-dir", str(tmp_path / "none")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["bench", "llm-routing", "--data-dir", str(tmp_path), "--families", "pilot,bogus"])
    assert res.exit_code == 2 and "bogus" in res.output


def _write_llmrouter(path: Path, questions: list[str], models: tuple[str, ...], rng: np.random.Generator) -> None:
    recs = [
        {"question": q, "scores": {m: float(rng.uniform()) for m in models}, "task": q.split()[0]} for q in questions
    ]
    path.write_text(json.dumps(recs))


def test_cli_routes_a_separate_test_file_joined_by_model_name(tmp_path: Path) -> None:
    from banditroute.data.embedders import EMBEDDERS

    why = EMBEDDERS["minilm-l6-int8"].missing()
    if why is not None:
        pytest.skip(why)
    rng = np.random.default_rng(0)
    kinds = ("math", "code", "trivia")
    train_q = [f"{kinds[i % 3]} question number {i} about item {i * 7}" for i in range(60)]
    test_q = [f"{kinds[i % 3]} question number {i} about item {i * 7}" for i in range(60, 80)]
    (tmp_path / "data").mkdir()
    _write_llmrouter(tmp_path / "data" / "mine.json", train_q, ("cheap", "dear"), rng)
    _write_llmrouter(tmp_path / "data" / "held_out.json", [*test_q, train_q[0].upper() + "!"], ("dear", "cheap"), rng)
    prices = {"cheap": {"input_price": 0.1, "output_price": 0.1}, "dear": {"input_price": 1.0, "output_price": 1.0}}
    (tmp_path / "data" / "default_llm.json").write_text(json.dumps(prices))
    args = ["bench", "llm-routing", "--train", str(tmp_path / "data" / "mine.json"), "--test",
            str(tmp_path / "data" / "held_out.json"), "--seeds", "3-3", "--families", "single,knn", "--budgets", "0.5",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "-q"]  # fmt: skip
    res = CliRunner().invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "mine.json -> held_out.json: 60 train, 20 test; removed 1 of 21 test queries found in training" in text
    assert "(0 exact, 1 normalised text" in text
    assert "nan" not in res.output and "knn B=50%" in res.output
    rows = list(read_rows(tmp_path / "out" / "runs" / "seed3.jsonl"))
    assert {r["n_test"] for r in rows} == {20} and all(r["spent"] <= r["budget"] for r in rows if r["budget"])
    res = CliRunner().invoke(app, [*args[:-3], "--budgets", "0.3", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "--overwrite" in res.output
