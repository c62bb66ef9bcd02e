"""The command line: help for everything, small real runs, and clean failures on bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from banditroute.cli.app import parse_options, parse_policy_options, parse_value
from banditroute.cli.main import app, demo_policies
from banditroute.core.validation import InputError
from banditroute.envs.registry import ENV_REGISTRY
from banditroute.envs.reward_table import RewardTable
from banditroute.policies.registry import REGISTRY

runner = CliRunner()


def invoke(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_help_documents_every_command_and_option() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    for command in ("simulate", "demo", "policies", "envs"):
        assert command in top.output
        sub = invoke(command, "--help")
        assert sub.exit_code == 0, sub.output
    sim = invoke("simulate", "--help").output
    for option in ("--env", "--policies", "--T", "--seeds", "--out", "--jobs", "--batch-size", "--env-opt"):
        assert option in sim
    assert "--policy-opt" in sim and "name.key=value" in sim


def test_policies_and_envs_list_the_registries() -> None:
    out = invoke("policies").output
    assert all(name in out for name in REGISTRY)
    out = invoke("envs").output
    assert all(name in out for name in ENV_REGISTRY) and "query_noise" in out


def test_parse_values_and_options() -> None:
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("1e-3") == 0.001
    assert parse_value("true") is True and parse_value("None") is None
    assert parse_value("[0.1, 0]") == [0.1, 0] and parse_value("clustered") == "clustered"
    assert parse_options(["dim=8", "queries=drift"], "--env-opt") == {"dim": 8, "queries": "drift"}
    assert parse_policy_options(["linucb.alpha=0.5", "linucb.lam=2"], ["linucb"]) == {
        "linucb": {"alpha": 0.5, "lam": 2}
    }
    with pytest.raises(InputError, match="key=value"):
        parse_options(["dim"], "--env-opt")
    with pytest.raises(InputError, match=r"name\.key=value"):
        parse_policy_options(["alpha=1"], ["linucb"])
    with pytest.raises(InputError, match="not in --policies"):
        parse_policy_options(["lints.v=1"], ["linucb"])


def test_simulate_runs_writes_results_and_resumes(tmp_path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--env", "linear", "--policies", "uniform,linucb", "-T", "200", "--seeds", "2"]
    args += ["--out", str(out), "--jobs", "1", "--batch-size", "5", "-q"]
    args += ["--env-opt", "n_arms=5", "--env-opt", "dim=3", "--policy-opt", "linucb.shared=true"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "uniform" in result.output and "linucb" in result.output and "regret.png" in result.output
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["policy"]) == ["uniform", "linucb"] and (summary["T"] == 200).all()
    config = json.loads((out / "config.json").read_text())
    assert config["experiment"]["env_options"] == {"n_arms": 5, "dim": 3}
    assert config["policies"]["linucb"]["shared"] is True
    again = invoke(*args)  # everything on disk: resumes instantly with the same table
    assert again.exit_code == 0 and pd.read_csv(out / "summary.csv").equals(summary)
    changed = invoke(*[a if a != "200" else "100" for a in args])
    assert changed.exit_code == 2 and "different experiment" in changed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "uniform,nope"], "unknown policy 'nope'"),
        (["--policies", "uniform,uniform"], "twice"),
        (["--policies", ","], "empty"),
        (["--env", "nope"], "unknown environment"),
        (["--env-opt", "dim"], "key=value"),
        (["--env-opt", "dimension=3"], "unknown option"),
        (["--env-opt", "queries=sideways"], "queries"),
        (["--policy-opt", "greedy.lam=1"], "not in --policies"),
        (["--policies", "linucb", "--policy-opt", "linucb.alpha=-1"], "alpha"),
        (["--policies", "linucb", "--policy-opt", "linucb.colour=1"], "bad parameters"),
        (["-T", "0"], "T must"),
        (["--seeds", "0"], "--seeds"),
        (["--batch-size", "0"], "batch_size"),
        (["--jobs", "0"], "n_jobs"),
        (["--env", "table", "--env-opt", "path=/nonexistent/t.npz"], "not found"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(tmp_path, args: list[str], message: str) -> None:
    result = invoke("simulate", "--out", str(tmp_path / "x"), "-T", "10", "--seeds", "1", "-q", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_type_errors_from_typer_are_clean() -> None:
    result = invoke("simulate", "-T", "many")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_demo_includes_every_hpg_variant(tmp_path) -> None:
    names = demo_policies()
    assert [n for n in REGISTRY if n.startswith("hpg")] == [n for n in names if n.startswith("hpg")]
    assert {"uniform", "linucb", "loglinear"} <= set(names)
    out = tmp_path / "demo"
    result = invoke("demo", "--synthetic", "--out", str(out), "-T", "60", "--seeds", "1", "--jobs", "1", "-q")
    assert result.exit_code == 0, result.output
    assert (out / "regret.png").is_file()
    assert list(pd.read_csv(out / "summary.csv")["policy"]) == names
    config = json.loads((out / "config.json").read_text())["experiment"]
    assert config["env"] == "lowrank" and config["env_options"]["dim"] == 32
    assert config["env_options"]["queries"] == "clustered"


def test_real_data_demo_on_a_given_table(tmp_path) -> None:
    """The real-data demo's comparison on a small table with pipeline arms (the shipped one: test_demo_table)."""
    rng = np.random.default_rng(0)
    n = 300
    R = np.clip(rng.normal([0.5, 0.4, 0.6], 0.1, size=(n, 3)), 0, 1)
    C = np.tile([0.001, 0.05, 0.051], (n, 1))
    names = ("bm25", "dense", "cvx(bm25,dense;w=0.5)")
    table = RewardTable(rng.normal(size=(n, 5)), R, C, arm_names=names, reward_range=(0.0, 1.0))
    path = table.save(tmp_path / "t.npz")
    out = tmp_path / "demo"
    result = invoke("demo", "--table", str(path), "--out", str(out), "--seeds", "2", "--jobs", "1", "-q")
    assert result.exit_code == 0, result.output
    for words in ("per-query oracle", "best fixed arm:", "best single retriever:", "linucb", "% of best fixed"):
        assert words in result.output
    summary = pd.read_csv(out / "shuffle" / "summary.csv").set_index("policy")
    assert summary.loc["best-fixed", "share_cvx(bm25,dense;w=0.5)"] == 1.0
    assert summary.loc["best-single-retriever", "share_bm25"] == 1.0
    assert (out / "demo.png").is_file() and (out / "shuffle" / "summary.csv").is_file()


def test_demo_table_is_shipped_and_matches_its_readme() -> None:
    from banditroute.studies.retrieval_demo import demo_table

    path = demo_table()
    table = RewardTable.load(path)
    readme = (path.parent / "README.md").read_text()
    assert table.n_rows == 2000 and set(table.groups or ()) == {"squad", "scifact"}
    for arm in table.arm_names:
        assert f"`{arm}`" in readme
    assert table.costs is not None and np.all(table.costs > 0) and table.post_features is not None
    assert table.metadata["metric"] == "ndcg" and table.metadata["k"] == 10
    assert 1.0 <= path.stat().st_size / 1e6 <= 8.0  # "a few MB"
