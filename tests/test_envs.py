"""Environments: stream contract, exact expectations, replay orders and the reward-table file format."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from banditroute.core.validation import InputError
from banditroute.envs import Environment, LinearBandit, LowRankExperts, RewardTable, RewardTableEnv, Rounds
from banditroute.envs.lowrank import clipped_gaussian_mean


def blob_table(n_per: int = 30, n_blobs: int = 3, dim: int = 4, costs: bool = True) -> RewardTable:
    """Well-separated blobs of contexts; ``rewards[:, 0]`` is a unique row id in [0, 1) so a
    served round can be traced back to its row; ``blob`` is stored in the metadata."""
    rng = np.random.default_rng(123)
    n = n_per * n_blobs
    blob = np.repeat(np.arange(n_blobs), n_per)
    centres = 10.0 * np.eye(n_blobs, dim)
    contexts = centres[blob] + 0.1 * rng.standard_normal((n, dim))
    rewards = np.column_stack([np.arange(n) / n, rng.random(n), (blob == 1).astype(float)])
    return RewardTable(
        contexts=contexts,
        rewards=rewards,
        costs=rng.random((n, 3)) if costs else None,
        arm_names=("small", "medium", "large"),
        metadata={"source": "synthetic blobs", "blob": blob.tolist()},
        reward_range=(0.0, 1.0),
    )


TABLE = blob_table()
ROW_ID = len(TABLE)  # rewards[:, 0] * ROW_ID recovers the row index


def row_ids(r: Rounds) -> np.ndarray:
    return np.rint(r.rewards[:, 0] * ROW_ID).astype(int)


ENVS: dict[str, Callable[[], Environment]] = {
    "lowrank-isotropic-gaussian": lambda: LowRankExperts(queries="isotropic", reward_noise="gaussian", seed=1),
    "lowrank-clustered-bernoulli": lambda: LowRankExperts(queries="clustered", reward_noise="bernoulli", seed=1),
    "lowrank-drift-none": lambda: LowRankExperts(n_arms=3, queries="drift", drift_period=7, seed=1),
    "linear": lambda: LinearBandit(n_arms=5, dim=3, seed=1),
    "table-iid": lambda: RewardTableEnv(TABLE, order="iid"),
    "table-shuffle": lambda: RewardTableEnv(TABLE, order="shuffle"),
    "table-blocks": lambda: RewardTableEnv(TABLE, order="blocks", n_clusters=3),
    "table-periodic": lambda: RewardTableEnv(TABLE, order="periodic", n_clusters=3, period=11),
}
BUILT = {name: make() for name, make in ENVS.items()}


def concat(blocks: list[Rounds]) -> Rounds:
    costs = [b.costs for b in blocks]
    return Rounds(
        contexts=np.concatenate([b.contexts for b in blocks]),
        rewards=np.concatenate([b.rewards for b in blocks]),
        expected=np.concatenate([b.expected for b in blocks]),
        costs=None if costs[0] is None else np.concatenate(costs),  # type: ignore[arg-type]
    )


def assert_same(a: Rounds, b: Rounds) -> None:
    np.testing.assert_array_equal(a.contexts, b.contexts)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    np.testing.assert_array_equal(a.expected, b.expected)
    if a.costs is None:
        assert b.costs is None
    else:
        np.testing.assert_array_equal(a.costs, b.costs)


# ---------------------------------------------------------------------- stream contract, every env
@pytest.mark.parametrize("name", ENVS)
def test_shapes_and_dtypes(name: str) -> None:
    env = BUILT[name]
    M, d = env.spec.n_arms, env.spec.dim
    r = env.rounds(37, np.random.default_rng(0))
    assert len(r) == 37
    assert r.contexts.shape == ((37, M, d) if env.spec.per_arm else (37, d))
    assert r.rewards.shape == r.expected.shape == (37, M)
    for arr in (r.contexts, r.rewards, r.expected):
        assert arr.dtype == np.float64 and np.all(np.isfinite(arr))
    if env.spec.reward_range is not None:
        lo, hi = env.spec.reward_range
        assert np.all((r.rewards >= lo) & (r.rewards <= hi)) and np.all((r.expected >= lo) & (r.expected <= hi))
    assert (r.costs is not None) == (isinstance(env, RewardTableEnv) and TABLE.costs is not None)
    assert len(env.spec.names()) == M


@pytest.mark.parametrize("name", ENVS)
def test_same_rng_same_stream_different_rng_different_stream(name: str) -> None:
    env = BUILT[name]
    a = env.rounds(60, np.random.default_rng(5))
    assert_same(a, env.rounds(60, np.random.default_rng(5)))
    assert_same(a, ENVS[name]().rounds(60, np.random.default_rng(5)))  # a rebuilt env too
    b = env.rounds(60, np.random.default_rng(6))
    assert not np.array_equal(a.contexts, b.contexts)


@pytest.mark.parametrize("name", ENVS)
@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_chunked_stream_equals_one_block(name: str, chunk_size: int) -> None:
    env = BUILT[name]
    blocks = list(env.stream(100, np.random.default_rng(3), chunk_size=chunk_size))
    assert [len(b) for b in blocks[:-1]] == [chunk_size] * (len(blocks) - 1) and len(blocks[-1]) <= chunk_size
    assert_same(concat(blocks), env.rounds(100, np.random.default_rng(3)))


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(ENVS)), T=st.integers(1, 150), chunk_size=st.integers(1, 160))
def test_property_any_chunking_gives_the_same_rounds(name: str, T: int, chunk_size: int) -> None:
    env = BUILT[name]
    blocks = list(env.stream(T, np.random.default_rng(T), chunk_size=chunk_size))
    assert sum(map(len, blocks)) == T
    assert_same(concat(blocks), env.rounds(T, np.random.default_rng(T)))


@pytest.mark.parametrize("name", ["lowrank-drift-none", "table-blocks", "linear"])
@pytest.mark.parametrize(
    "args", [dict(T=0), dict(T=10, chunk_size=0), dict(T=2.5), dict(T=10, rng=np.random.RandomState(0))]
)
def test_stream_rejects_bad_arguments(name: str, args: dict) -> None:
    kwargs = {"rng": np.random.default_rng(0), **args}
    with pytest.raises(InputError):
        next(iter(BUILT[name].stream(**kwargs)))


def test_instance_seed_changes_the_problem_not_the_rounds_source() -> None:
    assert not np.allclose(LowRankExperts(seed=0).experts, LowRankExperts(seed=1).experts)
    np.testing.assert_array_equal(LowRankExperts(seed=4).experts, LowRankExperts(seed=4).experts)
    assert not np.allclose(LinearBandit(seed=0).theta, LinearBandit(seed=1).theta)


# ---------------------------------------------------------------------- low-rank experts
def test_expert_bases_are_orthonormal() -> None:
    env = LowRankExperts(n_arms=5, dim=12, rank=3, seed=2)
    assert env.experts.shape == (5, 12, 3)
    for U in env.experts:
        np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-12)


def slow_means(env: LowRankExperts, X: np.ndarray) -> np.ndarray:
    """Reference: clip(scale·||U_mᵀx||² + bias_m, 0, 1), one row and one expert at a time."""
    out = np.empty((len(X), env.spec.n_arms))
    for i, x in enumerate(X):
        for m, U in enumerate(env.experts):
            out[i, m] = min(max(env.scale * sum((U[:, j] @ x) ** 2 for j in range(env.rank)) + env.bias[m], 0.0), 1.0)
    return out


@pytest.mark.parametrize("queries", ["isotropic", "clustered", "drift"])
def test_expected_rewards_match_slow_reference(queries: str) -> None:
    env = LowRankExperts(
        n_arms=4, dim=6, rank=2, queries=queries, scale=1.3, bias=[-0.3, 0.0, 0.2, -0.2], drift_period=10, seed=3
    )
    r = env.rounds(80, np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(r.contexts, axis=1), 1.0, rtol=1e-12)
    ref = slow_means(env, r.contexts)
    np.testing.assert_allclose(r.expected, ref, atol=1e-12)
    np.testing.assert_array_equal(r.rewards, r.expected)  # reward_noise="none"
    np.testing.assert_allclose(env.expected_rewards(r.contexts), ref, atol=1e-12)
    if queries != "isotropic":  # clipping at both ends is exercised
        assert np.any(ref == 0.0) and np.any(ref == 1.0)


def test_clustered_queries_lie_near_one_expert_subspace() -> None:
    rng = np.random.default_rng(0)
    clustered = LowRankExperts(n_arms=4, dim=32, rank=2, queries="clustered", query_noise=0.1, seed=0)
    isotropic = LowRankExperts(n_arms=4, dim=32, rank=2, queries="isotropic", seed=0)
    best_c = clustered.rounds(500, rng).expected.max(axis=1)
    best_i = isotropic.rounds(500, rng).expected.max(axis=1)
    # Energy in the home subspace of a query x = normalise(U z + 0.1 g) is ≈ |z|²/(|z|² + 0.01·32) ≈ 0.86;
    # an isotropic query puts only ≈ s/d = 1/16 of its energy in any given 2-dim subspace.
    assert np.median(best_c) > 0.8 and np.median(best_i) < 0.3
    # Every expert is some query's home: the best expert is spread over all arms.
    assert set(np.argmax(clustered.rounds(200, rng).expected, axis=1)) == set(range(4))


def test_drift_schedule_switches_every_drift_period() -> None:
    env = LowRankExperts(n_arms=3, dim=16, rank=2, queries="drift", query_noise=0.05, drift_period=25, seed=4)
    assert sorted(env.drift_order) == [0, 1, 2]
    sched = env.drift_schedule(np.arange(150))
    np.testing.assert_array_equal(sched, np.repeat(np.tile(env.drift_order, 2), 25))
    assert np.all(sched[25::25] != sched[24:-1:25])  # switches exactly at multiples of drift_period
    # The queries follow the schedule: almost every query lies nearest its scheduled expert, and
    # the round counter restarts with every stream call.
    for seed in (9, 10):
        r = env.rounds(150, np.random.default_rng(seed))
        assert np.mean(np.argmax(r.expected, axis=1) == sched) > 0.95


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_clipped_gaussian_mean_matches_monte_carlo(sigma: float) -> None:
    mu = np.array([0.0, 0.02, 0.3, 0.5, 0.9, 1.0])
    eps = np.random.default_rng(0).standard_normal((400_000, 1))
    samples = np.clip(mu + sigma * eps, 0.0, 1.0)
    se = samples.std(axis=0) / np.sqrt(len(samples))
    assert np.all(np.abs(samples.mean(axis=0) - clipped_gaussian_mean(mu, sigma)) < 5 * se + 1e-12)


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
def test_noisy_rewards_are_unbiased_for_expected(noise: str) -> None:
    env = LowRankExperts(
        n_arms=3, dim=8, rank=2, queries="clustered", reward_noise=noise, reward_noise_scale=0.4, seed=5
    )
    r = env.rounds(20_000, np.random.default_rng(1))
    if noise == "bernoulli":
        assert set(np.unique(r.rewards)) == {0.0, 1.0}
        np.testing.assert_allclose(r.expected[:50], slow_means(env, r.contexts[:50]), atol=1e-12)
    else:
        mu = env.mean_rewards(r.contexts)
        np.testing.assert_allclose(r.expected, clipped_gaussian_mean(mu, 0.4))
        assert np.max(np.abs(r.expected - mu)) > 0.05  # clipping really shifts the mean
    resid = r.rewards - r.expected  # E[r - E[r|x]] = 0 per arm
    se = resid.std(axis=0) / np.sqrt(len(resid))
    assert np.all(np.abs(resid.mean(axis=0)) < 4 * se)


def test_expected_rewards_rejects_bad_queries() -> None:
    env = LowRankExperts(n_arms=3, dim=5)
    for bad in (np.ones(5), np.ones((2, 4)), np.ones((2, 3, 5)), np.full((2, 5), np.nan)):
        with pytest.raises(InputError):
            env.expected_rewards(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_arms=0),
        dict(n_arms=True),
        dict(dim=3, rank=4),
        dict(rank=0),
        dict(queries="spiral"),
        dict(query_noise=-0.1),
        dict(scale=0.0),
        dict(scale=float("inf")),
        dict(bias=[0.1, 0.2]),
        dict(bias=[0.0, 0.0, np.nan, 0.0]),
        dict(bias="high"),
        dict(reward_noise="poisson"),
        dict(reward_noise_scale=0.0),
        dict(drift_period=0),
        dict(seed=-1),
        dict(seed=1.5),
    ],
)
def test_lowrank_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(InputError):
        LowRankExperts(**kwargs)


# ---------------------------------------------------------------------- linear bandit
def test_linear_expected_is_theta_dot_x_with_gaussian_noise() -> None:
    env = LinearBandit(n_arms=6, dim=4, noise=0.5, seed=2)
    assert env.spec.per_arm and env.spec.reward_range is None
    np.testing.assert_allclose(np.linalg.norm(env.theta), 1.0)
    r = env.rounds(5000, np.random.default_rng(0))
    ref = np.array([[env.theta @ x for x in row] for row in r.contexts[:20]])
    np.testing.assert_allclose(r.expected[:20], ref, atol=1e-12)
    np.testing.assert_allclose(r.expected, r.contexts @ env.theta)
    resid = r.rewards - r.expected
    assert abs(resid.mean()) < 4 * 0.5 / np.sqrt(resid.size)
    assert abs(resid.std() - 0.5) < 0.01
    assert abs(r.contexts.std() - 1.0) < 0.01  # x ~ N(0, I)
    noiseless = LinearBandit(n_arms=6, dim=4, noise=0.0, seed=2).rounds(10, np.random.default_rng(0))
    np.testing.assert_array_equal(noiseless.rewards, noiseless.expected)


@pytest.mark.parametrize("kwargs", [dict(n_arms=0), dict(dim=-1), dict(noise=-1.0), dict(noise=np.nan), dict(seed=-3)])
def test_linear_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(InputError):
        LinearBandit(**kwargs)


# ---------------------------------------------------------------------- reward-table replay orders
def test_table_env_replays_rows_exactly_with_costs() -> None:
    env = RewardTableEnv(TABLE, order="iid")
    assert env.spec.arm_names == ("small", "medium", "large") and env.spec.reward_range == (0.0, 1.0)
    r = env.rounds(50, np.random.default_rng(0))
    ids = row_ids(r)
    np.testing.assert_array_equal(r.contexts, TABLE.contexts[ids])
    np.testing.assert_array_equal(r.rewards, TABLE.rewards[ids])
    np.testing.assert_array_equal(r.expected, r.rewards)
    assert TABLE.costs is not None and r.costs is not None
    np.testing.assert_array_equal(r.costs, TABLE.costs[ids])


def test_iid_order_draws_rows_uniformly() -> None:
    ids = row_ids(RewardTableEnv(TABLE, order="iid").rounds(18_000, np.random.default_rng(0)))
    counts = np.bincount(ids, minlength=len(TABLE))
    assert chisquare(counts).pvalue > 1e-3


def test_shuffle_passes_are_permutations() -> None:
    n = len(TABLE)
    ids = row_ids(RewardTableEnv(TABLE, order="shuffle").rounds(3 * n + 5, np.random.default_rng(0)))
    passes = ids[: 3 * n].reshape(3, n)
    for p in passes:
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    assert not np.array_equal(passes[0], passes[1])  # a fresh permutation each pass
    assert len(set(ids[3 * n :])) == 5


def test_blocks_serve_each_cluster_contiguously() -> None:
    env = RewardTableEnv(TABLE, order="blocks", n_clusters=3, seed=1)
    blob = np.array(TABLE.metadata["blob"])
    assert env.labels is not None and env.n_clusters == 3
    # k-means recovers the three well-separated blobs (up to relabelling).
    assert len({(a, b) for a, b in zip(env.labels, blob, strict=True)}) == 3
    n = len(TABLE)
    ids = row_ids(env.rounds(6 * n, np.random.default_rng(0))).reshape(6, n)
    cluster_orders = set()
    for p in ids:
        np.testing.assert_array_equal(np.sort(p), np.arange(n))  # each pass covers every row once
        labels = env.labels[p]
        runs = labels[np.r_[True, labels[1:] != labels[:-1]]]
        assert len(runs) == 3 and len(set(runs)) == 3  # one contiguous run per cluster
        cluster_orders.add(tuple(runs))
    assert len(cluster_orders) > 1  # the order of the clusters is reshuffled between passes
    for k in range(3):  # and so are the rows within each cluster
        assert not np.array_equal(ids[0][env.labels[ids[0]] == k], ids[1][env.labels[ids[1]] == k])


def test_periodic_switches_cluster_every_period() -> None:
    env = RewardTableEnv(TABLE, order="periodic", n_clusters=3, period=11, seed=0)
    assert env.labels is not None
    ids = row_ids(env.rounds(99, np.random.default_rng(0)))
    np.testing.assert_array_equal(env.labels[ids], (np.arange(99) // 11) % 3)
    assert len(set(ids[:11])) > 3  # rows within a cluster are drawn at random


def test_clusters_drop_empty_ones() -> None:
    # Two distinct points, four copies each: at most two of the five requested clusters are non-empty.
    dup = RewardTable(contexts=np.repeat([[0.0, 0.0], [5.0, 5.0]], 4, axis=0), rewards=np.zeros((8, 2)))
    env = RewardTableEnv(dup, order="blocks", n_clusters=5)
    assert env.labels is not None and 1 <= env.n_clusters <= 2
    np.testing.assert_array_equal(np.unique(env.labels), np.arange(env.n_clusters))
    served = env.rounds(16, np.random.default_rng(0)).contexts
    np.testing.assert_array_equal(np.sort(served[:, 0]), np.repeat([0.0, 5.0], 8))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(order="random"),
        dict(order="blocks", n_clusters=0),
        dict(order="blocks", n_clusters=len(TABLE) + 1),
        dict(order="periodic", period=0),
        dict(seed=-1),
    ],
)
def test_table_env_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(InputError):
        RewardTableEnv(TABLE, **kwargs)


def test_table_env_needs_a_reward_table() -> None:
    with pytest.raises(InputError, match="RewardTable"):
        RewardTableEnv(TABLE.rewards)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- RewardTable validation
GOOD = dict(contexts=np.ones((4, 2)), rewards=np.full((4, 3), 0.5))


@pytest.mark.parametrize(
    "change",
    [
        dict(contexts=np.full((4, 2), np.nan)),
        dict(rewards=np.array([[0.5, np.inf, 0.5]] * 4)),
        dict(costs=np.full((4, 3), np.nan)),
        dict(contexts=np.ones((5, 2))),
        dict(contexts=np.ones(4)),
        dict(contexts=np.ones((4, 0))),
        dict(rewards=np.ones((4, 3, 1))),
        dict(rewards=np.ones((4, 0))),
        dict(costs=np.ones((4, 2))),
        dict(contexts=np.ones((0, 2)), rewards=np.ones((0, 3))),
        dict(contexts=[["a", "b"]] * 4),
        dict(reward_range=(0.0, 0.4)),
        dict(reward_range=(1.0, 0.0)),
        dict(reward_range=(0.0, np.inf)),
        dict(reward_range="0-1"),
        dict(arm_names=("a", "b")),
        dict(arm_names=("a", "a", "b")),
        dict(arm_names=("a", "", "b")),
        dict(metadata={"when": object()}),
        dict(metadata={"x": float("nan")}),
    ],
)
def test_reward_table_rejects_bad_input(change: dict) -> None:
    with pytest.raises(InputError):
        RewardTable(**{**GOOD, **change})


def test_reward_table_out_of_range_message_names_the_cell() -> None:
    rewards = np.full((4, 3), 0.5)
    rewards[2, 1] = 1.5
    with pytest.raises(InputError, match=r"row 2, arm 1"):
        RewardTable(contexts=np.ones((4, 2)), rewards=rewards, reward_range=(0, 1))


def test_reward_table_is_an_immutable_copy() -> None:
    contexts = np.ones((4, 2))
    t = RewardTable(contexts=contexts, rewards=np.zeros((4, 3)), metadata={"a": (1, 2)})
    contexts[0, 0] = 7.0
    assert t.contexts[0, 0] == 1.0
    with pytest.raises(ValueError):
        t.rewards[0, 0] = 1.0
    assert t.arm_names == ("arm0", "arm1", "arm2") and t.metadata == {"a": [1, 2]}
    assert (t.n_rows, t.n_arms, t.dim, len(t)) == (4, 3, 2, 4)


# ---------------------------------------------------------------------- files
def assert_tables_equal(a: RewardTable, b: RewardTable) -> None:
    np.testing.assert_array_equal(a.contexts, b.contexts)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    if a.costs is None:
        assert b.costs is None
    else:
        np.testing.assert_array_equal(a.costs, b.costs)
    assert (a.arm_names, a.metadata, a.reward_range) == (b.arm_names, b.metadata, b.reward_range)


@pytest.mark.parametrize("costs", [True, False])
def test_save_load_round_trip(tmp_path: Path, costs: bool) -> None:
    table = blob_table(costs=costs)
    path = table.save(tmp_path / "table.bin")  # exactly this path: no ".npz" appended
    assert path == tmp_path / "table.bin" and sorted(p.name for p in tmp_path.iterdir()) == ["table.bin"]
    assert_tables_equal(RewardTable.load(path), table)
    no_range = RewardTable(contexts=table.contexts, rewards=table.rewards + 5.0)
    assert_tables_equal(RewardTable.load(no_range.save(tmp_path / "t2.npz")), no_range)


def _rewrite_npz(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    edit(arrays)
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return dst


def _set_header(arrays: dict, **changes: object) -> None:
    header = json.loads(str(arrays["header"][()]))
    header.update(changes)
    arrays["header"] = np.array(json.dumps(header))


def test_load_rejects_corrupted_truncated_and_foreign_files(tmp_path: Path) -> None:
    good = TABLE.save(tmp_path / "good.npz")
    data = good.read_bytes()
    bad: dict[str, Path] = {}

    def put(name: str, payload: bytes) -> None:
        bad[name] = tmp_path / name
        bad[name].write_bytes(payload)

    put("truncated", data[: len(data) // 2])
    put("empty", b"")
    flipped = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 40):
        flipped[i] ^= 0xFF
    put("flipped", bytes(flipped))
    put("text", b"query,reward\n1,0.5\n")
    np.save(tmp_path / "array.npy", np.ones((3, 3)))
    bad["npy"] = tmp_path / "array.npy"
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    bad["zip"] = tmp_path / "other.zip"
    bad["no-header"] = _rewrite_npz(good, tmp_path / "nh.npz", lambda a: a.pop("header"))
    bad["no-rewards"] = _rewrite_npz(good, tmp_path / "nr.npz", lambda a: a.pop("rewards"))
    bad["format"] = _rewrite_npz(good, tmp_path / "f.npz", lambda a: _set_header(a, format="other"))
    bad["version"] = _rewrite_npz(good, tmp_path / "v.npz", lambda a: _set_header(a, version=99))
    bad["header-json"] = _rewrite_npz(good, tmp_path / "hj.npz", lambda a: a.update(header=np.array("{oops")))
    bad["names"] = _rewrite_npz(good, tmp_path / "n.npz", lambda a: _set_header(a, arm_names=["x"]))
    bad["nan"] = _rewrite_npz(good, tmp_path / "nan.npz", lambda a: a.update(contexts=a["contexts"] * np.nan))
    bad["pickled"] = _rewrite_npz(good, tmp_path / "p.npz", lambda a: a.update(header=np.array([{}], dtype=object)))
    bad["missing"] = tmp_path / "does-not-exist.npz"
    bad["directory"] = tmp_path
    messages = {name: _load_error(path) for name, path in bad.items()}
    assert all(m is not None and "reward table" in m for m in messages.values()), messages


def _load_error(path: Path) -> str | None:
    """The InputError message of loading ``path``, or None if it loaded (other errors propagate)."""
    try:
        RewardTable.load(path)
    except InputError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------- slicing
def test_subset_and_split() -> None:
    sub = TABLE.subset(np.array([5, 0, 5]))
    np.testing.assert_array_equal(sub.rewards, TABLE.rewards[[5, 0, 5]])
    assert sub.arm_names == TABLE.arm_names and sub.reward_range == TABLE.reward_range
    assert TABLE.costs is not None and sub.costs is not None
    np.testing.assert_array_equal(sub.costs, TABLE.costs[[5, 0, 5]])
    mask = np.zeros(len(TABLE), dtype=bool)
    mask[[1, 2]] = True
    np.testing.assert_array_equal(TABLE.subset(mask).contexts, TABLE.contexts[[1, 2]])

    train, test = TABLE.split(0.7, seed=3)
    assert (len(train), len(test)) == (63, 27)
    ids = np.concatenate([np.rint(t.rewards[:, 0] * ROW_ID) for t in (train, test)]).astype(int)
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(TABLE)))
    assert_tables_equal(train, TABLE.split(0.7, seed=3)[0])
    assert not np.array_equal(train.rewards, TABLE.split(0.7, seed=4)[0].rewards)


@pytest.mark.parametrize("idx", [np.array([], dtype=int), np.array([0, 90]), np.array([0.0, 1.0]), np.ones(3, bool)])
def test_subset_rejects_bad_indices(idx: np.ndarray) -> None:
    with pytest.raises(InputError):
        TABLE.subset(idx)


@pytest.mark.parametrize("frac", [0.0, 1.0, 0.001, 1.5, -0.2, float("nan")])
def test_split_rejects_empty_sides(frac: float) -> None:
    with pytest.raises(InputError):
        TABLE.split(frac)
