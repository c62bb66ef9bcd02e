"""`banditroute analyze`: headroom, predictability over random splits, budget, and the recommendation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from banditroute.analysis.recommend import analyze, budget_points, oracle_within, paired_difference
from banditroute.cli.main import app
from banditroute.envs.reward_table import RewardTable

ARMS = ("bm25", "dense", "cvx(bm25,dense;w=0.5)")


def _table(n: int, signal: bool, seed: int = 0) -> RewardTable:
    """Three arms; the fusion is best on average. With ``signal`` the best arm flips with the context's
    first feature (half the queries favour bm25 strongly), without it rewards are context-free noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    R = np.clip(rng.normal([0.5, 0.45, 0.56], 0.1, size=(n, 3)), 0, 1)
    if signal:
        lexical = X[:, 0] > 0
        R[lexical, 0] = np.clip(R[lexical, 0] + 0.3, 0, 1)
        R[~lexical, 1] = np.clip(R[~lexical, 1] + 0.3, 0, 1)
    C = np.tile([0.001, 0.05, 0.051], (n, 1))
    return RewardTable(X, R, C, arm_names=ARMS, reward_range=(0.0, 1.0), metadata={"metric": "ndcg", "k": 10})


def test_no_signal_recommends_the_fixed_pipeline() -> None:
    result = analyze(_table(600, signal=False), splits=10, n_boot=200)
    assert result.headroom.best_arm == 2 and result.best_single_retriever == 0
    assert result.margin is not None and result.margin.low > 0  # the fusion's gain is real
    assert result.predictability is not None and result.predictability.rewards.shape == (10, 3)
    text = " ".join(result.recommendation)
    assert "Run cvx(bm25,dense;w=0.5)" in text and "NOT expected to pay" in text and not result.warnings


def test_context_signal_is_found_and_pays() -> None:
    result = analyze(_table(600, signal=True), splits=10, n_boot=200)
    assert result.predictability is not None
    assert (result.predictability.gain("loglinear") > 0.05).all()  # every split sees it
    assert "routing is expected to pay" in " ".join(result.recommendation)


def test_small_tables_warn() -> None:
    result = analyze(_table(80, signal=False), splits=10, n_boot=100)
    assert result.warnings and "too few to learn" in result.warnings[0]


def test_budget_points_and_oracle_by_brute_force() -> None:
    table = _table(40, signal=True, seed=3)
    R, C = table.rewards, table.costs
    assert C is not None
    cap = 0.5 * C[:, 2].mean()
    # brute force over a fine grid of prices: the best oracle within the cap is what bisection finds
    best = 0.0
    for mu in np.concatenate([[0.0], np.geomspace(1e-3, 1e4, 4000)]):
        pick = np.argmax(R - mu * C, axis=1)
        rows = np.arange(len(R))
        if C[rows, pick].mean() <= cap:
            best = max(best, R[rows, pick].mean())
    assert oracle_within(R, C, cap) == pytest.approx(best, abs=1e-9)
    points = budget_points(table, 2)
    assert [p.fraction for p in points] == [0.25, 0.5, 0.75]
    assert all(p.fixed_mix <= p.oracle + 1e-12 for p in points)
    assert points[0].fixed_mix <= points[1].fixed_mix <= points[2].fixed_mix
    cost, quality = C.mean(axis=0), R.mean(axis=0)
    for p in points:  # the recommended mix of two fixed arms spends exactly the budget and earns the hull value
        w = p.dear_share
        assert 0 <= w <= 1 and p.cheap >= 0
        assert (1 - w) * cost[p.cheap] + w * cost[p.dear] == pytest.approx(p.fraction * cost[2])
        assert (1 - w) * quality[p.cheap] + w * quality[p.dear] == pytest.approx(p.fixed_mix)


def test_paired_difference_interval_covers_the_mean() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random(500) + 0.1, rng.random(500)
    est = paired_difference(a, b, n_boot=500)
    assert est.low < est.mean < est.high and abs(est.mean - 0.1 - (a - 0.1 - b).mean()) < 1e-12


def test_cli_analyze_prints_and_saves(tmp_path: Path) -> None:
    path = _table(300, signal=False).save(tmp_path / "t.npz")
    res = CliRunner().invoke(
        app, ["analyze", str(path), "--splits", "10", "--n-boot", "100", "--json", str(tmp_path / "a.json")]
    )
    assert res.exit_code == 0, res.output
    assert "Recommendation" in res.output and "Predictability" in res.output
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["n_queries"] == 300 and len(saved["predictability"]["rewards"]) == 10
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "missing.npz")])
    assert bad.exit_code == 2 and "not found" in bad.output
    (tmp_path / "junk.npz").write_bytes(b"junk")
    bad = CliRunner().invoke(app, ["analyze", str(tmp_path / "junk.npz")])
    assert bad.exit_code == 2 and "cannot load" in bad.output
