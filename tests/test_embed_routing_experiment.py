"""The embedding-routing experiment on a small synthetic table: headroom maths, outputs, resume, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from banditroute.cli.main import app
from banditroute.core.scaling import project_contexts
from banditroute.core.validation import InputError
from banditroute.envs.reward_table import RewardTable
from banditroute.simulate.experiment import PolicyRun
from banditroute.studies.embed_routing import report_markdown, run_embed_routing


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 12))
    R = (rng.random((120, 3)) < np.array([0.3, 0.5, 0.6])).astype(float)
    path = tmp_path / "tiny.npz"
    RewardTable(contexts=X, rewards=R, arm_names=("a", "b", "c"), metadata={"dataset": "tiny"}).save(path)
    return path


def test_projection_is_unit_norm_and_low_dimensional() -> None:
    X = np.random.default_rng(1).standard_normal((50, 10)) * np.arange(1, 11)
    Z = project_contexts(X, 4)
    assert Z.shape == (50, 5)
    np.testing.assert_allclose(Z[:, -1], np.sqrt(0.5))
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0)


def test_runs_reports_and_resumes(table_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = {
        "seeds": 2,
        "passes": 1,
        "context_dim": 4,
        "policies": (PolicyRun("loglinear"), PolicyRun("uniform")),
        "jobs": 1,
        "progress": False,
        "expressiveness_options": {"lams": (1e-2,), "max_iter": 50, "rank": 2, "n_boot": 50},
    }
    result = run_embed_routing(table_path, out, **kwargs)  # type: ignore[arg-type]
    assert set(result.online) == {"shuffle", "blocks"}
    summary = result.online["shuffle"].summary
    assert set(summary["policy"]) == {"loglinear", "uniform", "best-fixed"}  # the best single arm is the best fixed
    best = summary.set_index("policy").loc["best-fixed"]
    assert result.headroom.best_arm == 2
    assert best["share_c"] == 1.0 and best["reward"] == pytest.approx(0.6, abs=0.2)
    outcomes = {o.label: o for o in result.outcomes["shuffle"]}
    assert outcomes["best-fixed"].quality == (1.0, 0.0) and outcomes["best-fixed"].dips == 0
    assert outcomes["uniform"].quality[0] < 1.0 and outcomes["uniform"].vs_best[0] < 0
    text = report_markdown(result)
    assert "per-query oracle" in text and "best-fixed" in text and "relative gap reduction" in text
    assert "% of best fixed quality" in text
    trace = out / "shuffle" / "runs" / "loglinear" / "seed0.parquet"
    stamp = trace.stat().st_mtime_ns
    again = run_embed_routing(table_path, out, **kwargs)  # type: ignore[arg-type]
    assert trace.stat().st_mtime_ns == stamp  # resumed: nothing recomputed
    assert again.online["shuffle"].summary.equals(summary)


def test_bad_input(table_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="orders"):
        run_embed_routing(table_path, tmp_path / "o", orders=("sideways",))
    with pytest.raises(InputError):
        run_embed_routing(tmp_path / "missing.npz", tmp_path / "o")
    res = CliRunner().invoke(app, ["bench", "embed-routing", "--table", str(tmp_path / "missing.npz"), "-q"])
    assert res.exit_code == 2 and "error" in res.output


def test_pipeline_summary_pairs_runs_and_counts_dips() -> None:
    from banditroute.simulate.runner import Trace
    from banditroute.studies.pipeline_routing import BEST_FIXED, BEST_SINGLE, pipeline_summary

    def trace(seed: int, expected: np.ndarray, cost: float) -> Trace:
        T = len(expected)
        z = np.zeros(T)
        return Trace(seed, np.zeros(T, dtype=np.int64), z + 1, expected, expected, z + 1, expected, z + cost, 0.0)

    T = 400
    fixed = [trace(s, np.full(T, 0.6), 2.0) for s in (0, 1)]
    single = [trace(s, np.full(T, 0.5), 1.0) for s in (0, 1)]
    late_dip = np.full(T, 0.7)
    late_dip[250:] = 0.0  # falls below the best single retriever's running average after the warm-up
    early_dip = np.full(T, 0.7)
    early_dip[:50] = 0.0  # below it only during the warm-up
    runs = {
        BEST_FIXED: fixed,
        BEST_SINGLE: single,
        "router": [trace(0, late_dip, 1.0), trace(1, early_dip, 1.0)],
    }
    out = {o.label: o for o in pipeline_summary(runs, warmup=200)}
    router = out["router"]
    assert router.dips == 1 and router.worst_dip == pytest.approx(0.5 - 0.7 * 250 / 400)
    assert router.last_below == T  # the late dip lasts to the end
    assert out[BEST_FIXED].last_below == 0
    assert router.cost == (pytest.approx(0.5), pytest.approx(0.0))
    want = np.mean([late_dip.mean(), early_dip.mean()]) / 0.6
    assert router.quality[0] == pytest.approx(want)
    assert out[BEST_SINGLE].dips == 0 and out[BEST_SINGLE].quality[0] == pytest.approx(0.5 / 0.6)
