"""The two-stage sweep: grids per spec, resumable runs, summaries, figures, and `banditroute bench two-stage`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from banditroute.cli.main import app
from banditroute.core.validation import InputError
from banditroute.studies.two_stage import (
    Run,
    grid,
    n_features_for,
    plot_relative_regret,
    plot_shares,
    run_sweep,
    summarise,
)

TINY = {"arms": (6,), "dims": (4,), "nominators": (1, 2), "rhos": (0.5, 1.0), "methods": ("ucb",), "T": 40, "seeds": 2}


def test_misspecification_maps_rho_to_a_feature_count() -> None:
    assert [n_features_for(r, 20) for r in (0.2, 0.4, 0.6, 0.8, 1.0)] == [4, 8, 12, 16, 20]
    assert n_features_for(0.01, 5) == 1
    for bad in (0.0, 1.5):
        with pytest.raises(InputError):
            n_features_for(bad, 10)


def test_grid_is_the_product_of_the_settings() -> None:
    runs = grid("linear", **{**TINY, "nominators": (1, 2, 7), "trainings": ("all", "own")})  # type: ignore[arg-type]
    # N = 7 > 6 items is skipped; the single stage has no training mode to vary
    assert {r.n_nominators for r in runs} == {1, 2}
    assert len(runs) == 2 * (1 + 2) * 2  # rho × (single + two-stage × trainings) × seeds
    assert {r.training for r in runs if r.n_nominators == 1} == {"all"}
    with pytest.raises(InputError):
        grid("linear", methods=("ucb", "bogus"))
    with pytest.raises(InputError):
        grid("mnist")


def test_sweep_runs_resume_and_pair_the_systems(tmp_path: Path) -> None:
    runs = grid("linear", **TINY)  # type: ignore[arg-type]
    first = run_sweep(runs, tmp_path, progress=False)
    assert len(first) == len(runs) == 8
    files = sorted((tmp_path / "runs").glob("*.json"))
    stamps = [f.stat().st_mtime_ns for f in files]
    # same seed -> same rounds: every system sees the same random-agent regret
    for _, group in first.groupby("seed"):
        assert np.allclose(group["random"], group["random"].iloc[0])
    np.testing.assert_allclose(first["regret"], first["nominator"] + first["ranker"])

    files[0].write_text("{damaged")
    again = run_sweep(runs, tmp_path, progress=False)
    assert [f.stat().st_mtime_ns for f in files[1:]] == stamps[1:]  # only the damaged run was redone
    key = ["n_nominators", "n_features", "seed"]
    a, b = first.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["regret"], b["regret"])  # and reproduced bit for bit

    summary = summarise(again)
    assert len(summary) == 4 and set(summary["seeds"]) == {2}
    assert np.all(summary.loc[summary["n_nominators"] == 1, "nominator_share"] == 1.0)
    plot_relative_regret(summary, tmp_path / "regret.png")
    plot_shares(summary, tmp_path / "shares.png", rho=0.5)
    assert (tmp_path / "regret.png").stat().st_size > 10_000 and (tmp_path / "shares.png").exists()
    with pytest.raises(InputError):
        plot_shares(summary, tmp_path / "none.png", rho=0.3)


def test_run_builds_the_papers_systems() -> None:
    run = Run("linear", "greedy", 10, 5, 2, 3, 0.1, "own", 10, 4)
    env = run.env(run.seed)
    system = run.system(env.spec)
    assert system.config["nominator"] == system.config["ranker"] == "greedy"
    assert system.config["lam"] == 0.01 and system.shared and system.config["allocation_seed"] == 4
    assert env.spec.n_arms == 10 and env.spec.dim == 5


def test_bench_two_stage_command_writes_figures_and_resumes(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["bench", "two-stage", "--out", str(tmp_path), "--seeds", "1", "--T", "30", "--arms", "6", "--dims", "4"]
    args += ["--nominators", "1,2", "--rho", "0.5,1.0", "--methods", "ucb", "--real", "none", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "regret / random" in result.output
    for name in ("twostage_synthetic_regret.png", "twostage_synthetic_shares.png", "synthetic_summary.csv"):
        assert (tmp_path / name).exists()
    assert runner.invoke(app, args).exit_code == 0  # everything already there: resumes without recomputing
    bad = runner.invoke(app, [*args[:-1], "--rho", "0"])
    assert bad.exit_code == 2 and "rho" in bad.output
