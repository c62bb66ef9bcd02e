"""The Ray backend against a real local Ray head on loopback: the same results as joblib, and a task whose
worker dies is retried. Skipped, with the reason, only where ray cannot be imported."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (extra [ray]); the Ray backend is untested here")

from banditroute.envs.reward_table import RewardTable  # noqa: E402
from banditroute.simulate.experiment import Experiment, PolicyRun, run_experiment  # noqa: E402
from banditroute.simulate.parallel import unordered_map  # noqa: E402
from banditroute.studies.embed_routing import run_embed_routing  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ray start --head --num-cpus 2`` on 127.0.0.1, stopped at the end; the driver connects to it."""
    exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command is not installed next to this Python")
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    tmp = tmp_path_factory.mktemp("ray")
    start = [exe, "start", "--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    start += ["--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(tmp)]
    subprocess.run(start, check=True, env=env, capture_output=True, timeout=180)
    address = f"127.0.0.1:{port}"
    os.environ["RAY_ADDRESS"] = address
    # Workers import this test module's helpers (the dying task) from the tests folder.
    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(TESTS)}})
    try:
        yield address
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)
        subprocess.run([exe, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_an_experiment_on_ray_equals_joblib(cluster: str, tmp_path: Path) -> None:
    exp = Experiment(
        env="lowrank",
        env_options={"n_arms": 3, "dim": 6, "rank": 2},
        policies=(PolicyRun("linucb"), PolicyRun("hpg"), PolicyRun("uniform")),
        T=300,
        seeds=(0, 1),
    )
    local = run_experiment(exp, tmp_path / "local", n_jobs=2, progress=False)
    remote = run_experiment(exp, tmp_path / "ray", n_jobs=2, progress=False, backend="ray")
    for label, traces in local.runs.items():
        for a, b in zip(traces, remote.runs[label], strict=True):
            for column in ("action", "prob", "reward", "value"):
                np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
    pd.testing.assert_frame_equal(local.summary.drop(columns="seconds"), remote.summary.drop(columns="seconds"))


def test_an_embedding_routing_sweep_on_ray_equals_joblib(cluster: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 200
    R = np.clip(rng.normal([0.5, 0.45, 0.6], 0.1, size=(n, 3)), 0, 1)
    table = RewardTable(
        rng.normal(size=(n, 5)),
        R,
        np.tile([0.001, 0.05, 0.051], (n, 1)),
        arm_names=("bm25", "dense", "cvx(bm25,dense;w=0.5)"),
        reward_range=(0.0, 1.0),
    )
    path = table.save(tmp_path / "t.npz")
    kwargs = {
        "seeds": 2,
        "orders": ("shuffle",),
        "context_dim": 4,
        "policies": (PolicyRun("safe-linucb"), PolicyRun("loglinear")),
        "jobs": 2,
        "progress": False,
        "expressiveness": False,
        "budget_fractions": (),
    }
    local = run_embed_routing(path, tmp_path / "local", **kwargs)  # type: ignore[arg-type]
    remote = run_embed_routing(path, tmp_path / "ray", backend="ray", **kwargs)  # type: ignore[arg-type]
    assert local.outcomes == remote.outcomes
    for label, traces in local.online["shuffle"].runs.items():
        for a, b in zip(traces, remote.online["shuffle"].runs[label], strict=True):
            np.testing.assert_array_equal(a.action, b.action)


def square_or_die(x: int, marker: str) -> int:
    """Kills its own worker process the first time it runs for ``x == 3`` (a marker file records that)."""
    flag = Path(marker)
    if x == 3 and not flag.exists():
        flag.write_text("died once")
        os._exit(1)
    return x * x


def test_a_task_whose_worker_dies_is_retried(cluster: str, tmp_path: Path) -> None:
    marker = tmp_path / "died"
    out = sorted(unordered_map(square_or_die, [(x, str(marker)) for x in range(6)], 2, "ray"))
    assert out == [0, 1, 4, 9, 16, 25] and marker.read_text() == "died once"
