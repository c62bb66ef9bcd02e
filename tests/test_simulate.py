"""The runner against a slow reference loop, its seeding contract, and resumable experiments on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from banditroute.core.types import EnvSpec
from banditroute.core.validation import InputError
from banditroute.envs.base import Environment, Rounds
from banditroute.envs.registry import ENV_REGISTRY, make_env
from banditroute.envs.reward_table import RewardTable
from banditroute.policies.registry import make_policy
from banditroute.simulate.experiment import Experiment, PolicyRun, run_experiment, run_path
from banditroute.simulate.metrics import cumulative_regret, run_metrics, suboptimality_gap
from banditroute.simulate.results import read_trace, summarise, write_trace
from banditroute.simulate.runner import registry_factory, run_seed, seed_generators, simulate, stack

W = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])  # arm m's mean reward is W_m · x, x in [0, 1]²
COSTS = np.array([1.0, 2.0, 4.0])


class TinyEnv(Environment):
    """Three arms, two features, Bernoulli rewards with linear means, per-arm costs.

    One ``(n, 5)`` draw per block, so a stream cut into chunks equals the stream drawn at once.
    """

    def __init__(self, seed: int = 0) -> None:
        self.spec = EnvSpec(n_arms=3, dim=2, arm_names=("a", "b", "c"))
        self.shift = 0.05 * (seed % 3)  # a different "instance" per seed

    def _sample(self, n: int, rng: np.random.Generator) -> Rounds:
        u = rng.random((n, 5))
        X = u[:, :2]
        mean = np.clip(X @ W.T + self.shift, 0.0, 1.0)
        rewards = (u[:, 2:] < mean).astype(float)
        return Rounds(X, rewards, mean, np.tile(COSTS, (n, 1)))


def reference_run(policy_name: str, env: Environment, T: int, seed: int, batch_size: int, **params: object) -> dict:
    """The protocol written out slowly: one environment block, explicit loops, per-round bookkeeping."""
    env_rng, policy_rng = seed_generators(seed)
    policy = make_policy(policy_name, env.spec, **params)
    block = env.rounds(T, env_rng)
    out: dict[str, list[float]] = {k: [] for k in ("action", "prob", "reward", "expected", "best", "value", "cost")}
    for start in range(0, T, batch_size):
        rows = range(start, min(start + batch_size, T))
        X = block.contexts[start : rows[-1] + 1]
        if batch_size == 1:
            d = policy.act(X[0], policy_rng)
            decisions = [d]
            policy.learn(X[0], d, block.rewards[start, d.action])
        else:
            batch = policy.act_batch(X, policy_rng)
            decisions = [batch[i] for i in range(len(batch))]
            policy.learn_batch(
                X, batch, np.array([block.rewards[t, d.action] for t, d in zip(rows, decisions, strict=True)])
            )
        for t, d in zip(rows, decisions, strict=True):
            out["action"].append(d.action)
            out["prob"].append(d.probs[d.action])
            out["reward"].append(block.rewards[t, d.action])
            out["expected"].append(block.expected[t, d.action])
            out["best"].append(max(block.expected[t]))
            out["value"].append(sum(p * e for p, e in zip(d.probs, block.expected[t], strict=True)))
            out["cost"].append(block.costs[t, d.action])
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize(("policy", "batch_size"), [("loglinear", 1), ("linucb", 1), ("egreedy", 7), ("exp3", 16)])
def test_runner_matches_reference_loop(policy: str, batch_size: int) -> None:
    env = TinyEnv()
    trace = run_seed(registry_factory(policy), env, 200, seed=3, batch_size=batch_size, chunk_size=7 * 16)
    ref = reference_run(policy, env, 200, 3, batch_size)
    for column, values in trace.columns().items():
        np.testing.assert_allclose(values, ref[column], rtol=1e-12, atol=1e-12, err_msg=column)
    assert trace.seed == 3 and len(trace) == 200 and trace.seconds > 0


def test_same_seed_same_run_and_chunking_does_not_matter() -> None:
    env = TinyEnv()
    a = run_seed(registry_factory("loglinear"), env, 300, seed=5, batch_size=4)
    b = run_seed(registry_factory("loglinear"), env, 300, seed=5, batch_size=4, chunk_size=8)
    c = run_seed(registry_factory("loglinear"), env, 300, seed=6, batch_size=4)
    for column in a.columns():
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
    assert not np.array_equal(a.best, c.best)


def test_policies_see_the_same_rounds_for_a_seed() -> None:
    """Common random numbers: the environment's generator does not depend on the policy."""
    env = TinyEnv()
    u = run_seed(registry_factory("uniform"), env, 100, seed=1)
    f = run_seed(registry_factory("fixed", arm=2), env, 100, seed=1)
    np.testing.assert_array_equal(u.best, f.best)


def test_parallel_equals_serial() -> None:
    serial = simulate(registry_factory("lints"), TinyEnv, 100, [0, 4, 9], n_jobs=1, batch_size=2)
    parallel = simulate(registry_factory("lints"), TinyEnv, 100, [0, 4, 9], n_jobs=2, batch_size=2)
    assert [t.seed for t in parallel] == [0, 4, 9]
    for s, p in zip(serial, parallel, strict=True):
        for column in s.columns():
            np.testing.assert_array_equal(getattr(s, column), getattr(p, column))


def test_env_factory_gets_the_seed() -> None:
    seen: list[int] = []

    def factory(seed: int) -> Environment:
        seen.append(seed)
        return TinyEnv(seed)

    traces = simulate(registry_factory("uniform"), factory, 10, 3)
    assert seen == [0, 1, 2] and [t.seed for t in traces] == [0, 1, 2]


def test_deterministic_policy_regret_equals_summed_gap() -> None:
    trace = run_seed(registry_factory("fixed", arm=1), TinyEnv(), 500, seed=0)
    assert np.all(trace.prob == 1.0) and np.all(trace.action == 1)
    np.testing.assert_array_equal(trace.value, trace.expected)
    np.testing.assert_allclose(cumulative_regret(trace.best, trace.expected), np.cumsum(trace.best - trace.value))
    np.testing.assert_array_equal(trace.cost, np.full(500, 2.0))


def test_regret_minus_summed_gap_is_a_zero_mean_martingale() -> None:
    """R_T − Σ g_t = Σ (E_π[r|x_t] − E[r_{a_t}|x_t]) has mean zero; increments lie in [−1, 1] so
    Azuma–Hoeffding bounds each seed by sqrt(2 T log(2/δ)) and the seed mean by that / sqrt(S)."""
    T, S = 2000, 8
    traces = simulate(registry_factory("loglinear"), TinyEnv(), T, S, batch_size=10)
    diff = cumulative_regret(stack(traces, "best"), stack(traces, "expected"))[:, -1]
    diff -= suboptimality_gap(stack(traces, "best"), stack(traces, "value")).sum(axis=1)
    bound = np.sqrt(2 * T * np.log(2 / 1e-3))
    assert np.all(np.abs(diff) < bound)
    assert abs(diff.mean()) < bound / np.sqrt(S)
    assert np.any(diff != 0)  # a stochastic policy: the identity is not trivially exact


class MiscountingEnv(TinyEnv):
    """Breaks the stream contract by yielding ``T + extra`` rounds."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def stream(self, T: int, rng: np.random.Generator, chunk_size: int = 4096) -> Iterator[Rounds]:
        yield self._sample(T + self.extra, rng)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"T": 0}, "T must"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "distinct"),
        ({"seeds": [-1]}, "seed"),
        ({"seeds": "abc"}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 3, "chunk_size": 10}, "multiple"),
        ({"n_jobs": 0}, "n_jobs"),
    ],
)
def test_simulate_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"T": 10, "seeds": 1, **kwargs}
    with pytest.raises(InputError, match=match):
        simulate(registry_factory("uniform"), TinyEnv(), **args)


def test_run_seed_rejects_bad_env_policy_and_short_streams() -> None:
    with pytest.raises(InputError, match="env must be"):
        run_seed(registry_factory("uniform"), lambda seed: "not an env", 10, 0)
    with pytest.raises(InputError, match="must return a Policy"):
        run_seed(lambda spec: object(), TinyEnv(), 10, 0)
    with pytest.raises(InputError, match="env must be"):
        run_seed(registry_factory("uniform"), "lowrank", 10, 0)
    with pytest.raises(InputError, match="streamed 9 rounds"):
        run_seed(registry_factory("uniform"), MiscountingEnv(-1), 10, 0)
    with pytest.raises(InputError, match="more than the 10 rounds"):
        run_seed(registry_factory("uniform"), MiscountingEnv(1), 10, 0)
    with pytest.raises(InputError, match="unknown policy"):
        run_seed(registry_factory("nope"), TinyEnv(), 10, 0)


# ---------------------------------------------------------------- environment registry


def test_env_registry_builds_and_validates(tmp_path) -> None:
    assert set(ENV_REGISTRY) >= {"lowrank", "linear", "table"}
    assert "query_noise" in ENV_REGISTRY["lowrank"].options()
    env = make_env("lowrank", dim=8, rank=1, seed=3)
    assert env.spec.dim == 8
    with pytest.raises(InputError, match="unknown environment"):
        make_env("nope")
    with pytest.raises(InputError, match="unknown option"):
        make_env("linear", dimension=3)
    with pytest.raises(InputError, match="needs option"):
        make_env("table")
    with pytest.raises(InputError, match="not found"):
        make_env("table", path=str(tmp_path / "missing.npz"))
    rng = np.random.default_rng(0)
    table = RewardTable(contexts=rng.random((20, 3)), rewards=rng.random((20, 2)), arm_names=("x", "y"))
    path = table.save(tmp_path / "t.npz")
    replay = make_env("table", path=str(path), order="shuffle")
    assert replay.spec.names() == ("x", "y")
    assert set(ENV_REGISTRY["table"].options()) >= {"path", "order", "seed"}


# ---------------------------------------------------------------- experiments on disk


def small_experiment(**changes: object) -> Experiment:
    config = {
        "env": "lowrank",
        "env_options": {"dim": 6, "rank": 1, "n_arms": 3},
        "policies": (PolicyRun("uniform"), PolicyRun("loglinear", {"eta": 1.0})),
        "T": 120,
        "seeds": (0, 1),
        "batch_size": 4,
    }
    return Experiment(**{**config, **changes})


def test_experiment_writes_runs_summary_and_figure(tmp_path) -> None:
    exp = small_experiment()
    result = run_experiment(exp, tmp_path / "run", progress=False)
    out = tmp_path / "run"
    assert json.loads((out / "config.json").read_text())["experiment"] == exp.to_dict()
    assert Experiment.from_dict(exp.to_dict()) == exp
    for policy, seed in exp.tasks():
        assert run_path(out, policy.key, seed).is_file()
    assert not list(out.glob("runs/*/.*"))  # no temporary files left
    assert (out / "regret.png").stat().st_size > 10_000
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["policy"]) == ["uniform", "loglinear"]
    shares = summary[[c for c in summary if c.startswith("share_")]]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    # The summary's regret is the seed mean of the trace's regret (the files hold what was run).
    traces = result.runs["loglinear"]
    per_seed = run_metrics(*(stack(traces, c) for c in ("best", "expected", "value", "reward")))
    assert summary.loc[1, "regret"] == pytest.approx(per_seed["regret"].mean())
    direct = run_seed(registry_factory("loglinear", eta=1.0), exp.env_factory(), 120, 1, batch_size=4)
    np.testing.assert_array_equal(traces[1].action, direct.action)


def test_experiment_resumes_and_refuses_other_configs(tmp_path) -> None:
    out = tmp_path / "run"
    exp = small_experiment()
    first = run_experiment(exp, out, progress=False)
    kept = run_path(out, "uniform", 0)
    redo = run_path(out, "loglinear", 1)
    mtime = kept.stat().st_mtime_ns
    redo.unlink()  # an interrupted run: this (policy, seed) never finished
    (redo.parent / ".seed1.parquet.123.tmp").write_bytes(b"partial")
    second = run_experiment(exp, out, progress=False, n_jobs=2)
    assert kept.stat().st_mtime_ns == mtime  # complete files are not recomputed
    assert not (redo.parent / ".seed1.parquet.123.tmp").exists()
    pd.testing.assert_frame_equal(first.summary.drop(columns="seconds"), second.summary.drop(columns="seconds"))

    with pytest.raises(InputError, match=r"different experiment.*differs in: T"):
        run_experiment(small_experiment(T=100), out, progress=False)
    other = run_experiment(small_experiment(T=100), out, progress=False, overwrite=True)
    assert other.runs["uniform"][0].action.shape == (100,)


def test_experiment_reports_damaged_files_and_foreign_dirs(tmp_path) -> None:
    out = tmp_path / "run"
    exp = small_experiment(policies=(PolicyRun("uniform"),), seeds=(0,))
    run_experiment(exp, out, progress=False)
    run_path(out, "uniform", 0).write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"cannot read run file .*seed0\.parquet"):
        run_experiment(exp, out, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"no config\.json"):
        run_experiment(exp, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_trace_files_round_trip_and_length_is_checked(tmp_path) -> None:
    trace = run_seed(registry_factory("uniform"), TinyEnv(), 50, seed=2)
    path = tmp_path / "t.parquet"
    write_trace(trace, path)
    back = read_trace(path, T=50)
    assert back.seed == 2 and back.seconds == trace.seconds
    for column, values in trace.columns().items():
        np.testing.assert_array_equal(getattr(back, column), values)
    with pytest.raises(InputError, match="50 rounds instead of 60"):
        read_trace(path, T=60)
    summary = summarise({"u": [trace, back]}, TinyEnv().spec.names())
    assert summary.loc[0, "cost"] == pytest.approx(trace.cost.mean())
    assert summary.loc[0, "regret_ci"] == 0.0  # identical seeds: no spread


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"env": "nope"}, "unknown environment"),
        ({"policies": ()}, "at least one policy"),
        ({"policies": (PolicyRun("nope"),)}, "unknown policy"),
        ({"policies": (PolicyRun("uniform"), PolicyRun("uniform"))}, "distinct"),
        ({"policies": (PolicyRun("uniform", label="a/b"),)}, "label"),
        ({"T": 0}, "T must"),
        ({"final_fraction": 2.0}, "final_fraction"),
    ],
)
def test_experiment_rejects_bad_configs(changes: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        small_experiment(**changes)


def test_bad_policy_parameters_fail_before_anything_is_written(tmp_path) -> None:
    exp = small_experiment(policies=(PolicyRun("linucb", {"alpha": -1.0}),))
    with pytest.raises(InputError, match="alpha"):
        run_experiment(exp, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError, match="unknown option"):
        run_experiment(small_experiment(env_options={"dimm": 3}), tmp_path / "run", progress=False)


def test_registry_factories_work_in_processes_that_did_not_register_the_policy(tmp_path: Path) -> None:
    """``two-stage`` is registered by importing ``banditroute.twostage``; a worker process that never
    imported it must still build the policy from a pickled factory."""
    import pickle
    import subprocess
    import sys

    import banditroute.twostage  # noqa: F401  (registers two-stage here, in the parent)
    from banditroute.simulate.runner import registry_factory

    factory_file = tmp_path / "factory.pkl"
    factory_file.write_bytes(pickle.dumps(registry_factory("two-stage")))
    child = (
        "import pickle, sys; from banditroute.core.types import EnvSpec; "
        "from banditroute.policies.registry import REGISTRY; assert 'two-stage' not in REGISTRY; "
        f"policy = pickle.loads(open({str(factory_file)!r}, 'rb').read())(EnvSpec(6, 3, per_arm=True)); "
        "print(policy.name)"
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "two-stage"
