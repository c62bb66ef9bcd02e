"""Ridge policies (greedy / ε-greedy, LinUCB, LinTS) against slow, direct reference computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from banditroute.core.linalg import add_gram_
from banditroute.core.types import BatchDecision, Decision
from banditroute.policies.ridge import LinTS, LinUCB, RidgePolicy

M, D = 3, 5
CLASSES = {"greedy": RidgePolicy, "linucb": LinUCB, "lints": LinTS}


def _contexts(g: np.random.Generator, n: int, per_arm: bool) -> np.ndarray:
    X = g.normal(size=(n, M, D) if per_arm else (n, D))
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _train(policy: RidgePolicy, T: int, per_arm: bool, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``T`` sequential act/learn rounds; returns the chosen arm's feature rows, actions and rewards."""
    g = np.random.default_rng(seed)
    theta_true = g.normal(size=(M, D))
    X = _contexts(g, T, per_arm)
    rows, actions, rewards = np.empty((T, D)), np.empty(T, dtype=np.int64), np.empty(T)
    for t in range(T):
        dec = policy.act(X[t], g)
        row = X[t, dec.action] if per_arm else X[t]
        r = float(np.clip(0.5 + 0.4 * theta_true[dec.action] @ row + 0.1 * g.normal(), 0.0, 1.0))
        policy.learn(X[t], dec, r)
        rows[t], actions[t], rewards[t] = row, dec.action, r
    return rows, actions, rewards


def _direct_stats(
    rows: np.ndarray, actions: np.ndarray, rewards: np.ndarray, lam: float, shared: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``A_k = λI + Σ x xᵀ`` and ``b_k = Σ r x`` over the rounds that hit model ``k``, by brute force."""
    k = 1 if shared else M
    A = np.stack([lam * np.eye(D) for _ in range(k)])
    b = np.zeros((k, D))
    for x, a, r in zip(rows, actions, rewards, strict=True):
        m = 0 if shared else a
        A[m] += np.outer(x, x)
        b[m] += r * x
    return A, b


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize(("shared", "per_arm"), [(False, False), (False, True), (True, True)])
def test_statistics_match_direct_ridge_after_1000_updates(name: str, shared: bool, per_arm: bool) -> None:
    policy = CLASSES[name](M, D, lam=0.7, shared=shared, epsilon=0.1)
    rows, actions, rewards = _train(policy, 1000, per_arm, seed=1)
    A, b = _direct_stats(rows, actions, rewards, 0.7, shared)
    for k in range(A.shape[0]):
        A_inv = np.linalg.inv(A[k])
        assert _rel_err(policy.A_inv[k], A_inv) < 1e-8
        np.testing.assert_array_equal(policy.A_inv[k], policy.A_inv[k].T)  # updates keep it exactly symmetric
        assert _rel_err(policy.b[k], b[k]) < 1e-12
        assert _rel_err(policy.theta[k], np.linalg.solve(A[k], b[k])) < 1e-8
    np.testing.assert_array_equal(policy.counts, np.bincount(actions, minlength=M))


@pytest.mark.parametrize("per_arm", [False, True])
def test_linucb_scores_match_slow_per_arm_loop(per_arm: bool) -> None:
    alpha = 0.8
    policy = LinUCB(M, D, alpha=alpha, lam=1.3)
    rows, actions, rewards = _train(policy, 200, per_arm, seed=2)
    A, b = _direct_stats(rows, actions, rewards, 1.3, shared=False)
    X = _contexts(np.random.default_rng(3), 25, per_arm)
    reference = np.empty((25, M))
    for i in range(25):
        for m in range(M):
            x = X[i, m] if per_arm else X[i]
            A_inv = np.linalg.inv(A[m])
            reference[i, m] = (A_inv @ b[m]) @ x + alpha * np.sqrt(x @ A_inv @ x)
    Xb = policy._broadcast(X)
    scores = policy._means(Xb) + alpha * np.sqrt(policy._variances(Xb))
    np.testing.assert_allclose(scores, reference, rtol=1e-9)
    # continuous scores: no ties, so the decision is the one-hot argmax of the reference
    probs = policy.act_batch(X, np.random.default_rng(4)).probs
    np.testing.assert_array_equal(probs, np.eye(M)[reference.argmax(axis=1)])


@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize(("shared", "per_arm"), [(False, False), (False, True), (True, False), (True, True)])
def test_variances_match_slow_quadratic_forms(shared: bool, per_arm: bool, n: int) -> None:
    """Every branch of ``_variances``: one or M models, shared or per-arm contexts, one or many rows."""
    policy = LinUCB(M, D, shared=shared)
    _train(policy, 100, per_arm, seed=15)
    X = _contexts(np.random.default_rng(16), n, per_arm)
    reference = np.empty((n, M))
    for i in range(n):
        for m in range(M):
            x = X[i, m] if per_arm else X[i]
            reference[i, m] = x @ policy.A_inv[0 if shared else m] @ x
    np.testing.assert_allclose(policy._variances(policy._broadcast(X)), reference, rtol=1e-12)


def test_in_place_updates_at_larger_dim_match_direct_solve() -> None:
    """d = 96 (BLAS blocks differently than at d = 5): 1,000 rows in chunks of uneven size, so both
    Sherman–Morrison and Woodbury run, against a direct inverse and solve."""
    d, lam, g = 96, 0.5, np.random.default_rng(17)
    policy = LinUCB(M, d, lam=lam)
    X = g.normal(size=(1000, d)) / np.sqrt(d)
    actions, rewards = g.integers(0, M, 1000), g.random(1000)
    start = 0
    for size in [1] * 100 + [3, 64, 1, 250, 17, 1, 200, 364]:
        sl = slice(start, start + size)
        policy.learn_batch(X[sl], BatchDecision(actions[sl], np.full((size, M), 1 / M)), rewards[sl])
        start += size
    assert start == 1000
    for k in range(M):
        Xk, rk = X[actions == k], rewards[actions == k]
        A = lam * np.eye(d) + Xk.T @ Xk
        assert _rel_err(policy.A_inv[k], np.linalg.inv(A)) < 1e-8
        np.testing.assert_array_equal(policy.A_inv[k], policy.A_inv[k].T)
        assert _rel_err(policy.theta[k], np.linalg.solve(A, rk @ Xk)) < 1e-8


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_add_gram_updates_any_memory_layout(layout: str, rows: int) -> None:
    """``S += α VᵀV`` in place: by BLAS on C-ordered ``S``, by a fallback copy on any other layout."""
    g = np.random.default_rng(18)
    B = g.normal(size=(6, 6))
    S0 = B @ B.T
    if layout == "C":
        S = S0.copy()
    elif layout == "F":
        S = np.asfortranarray(S0)
    else:
        S = np.zeros((6, 12))[:, ::2]
        S[...] = S0
    V = g.normal(size=(rows, 6)) if rows > 1 else g.normal(size=6)
    V2 = np.atleast_2d(V)
    add_gram_(S, V, -0.5)
    np.testing.assert_allclose(S, S0 - 0.5 * V2.T @ V2, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("rows", [1, 4])
def test_update_of_a_corrupt_inverse_raises_and_changes_nothing(rows: int) -> None:
    """A loaded ``A^{-1}`` that is not positive definite cannot be updated; the state stays as loaded."""
    policy = LinUCB(M, D)
    state = policy.state_dict()
    state["state"]["A_inv"] = np.tile(-2.0 * np.eye(D), (M, 1, 1))
    policy.load_state_dict(state)
    X = _contexts(np.random.default_rng(21), rows, per_arm=False)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        policy.learn_batch(X, BatchDecision(np.zeros(rows, dtype=np.int64), np.full((rows, M), 1 / M)), np.ones(rows))
    for key, value in state["state"].items():
        np.testing.assert_array_equal(policy.state_dict()["state"][key], value, err_msg=key)


def test_loaded_fortran_ordered_state_learns_identically() -> None:
    g = np.random.default_rng(19)
    policy = LinUCB(M, D)
    _train(policy, 50, per_arm=False, seed=20)
    state = policy.state_dict()
    twin = LinUCB(M, D)
    twin.load_state_dict({**state, "state": {k: np.asfortranarray(v) for k, v in state["state"].items()}})
    X = _contexts(g, 40, per_arm=False)
    for p in (policy, twin):
        p.learn_batch(X[:30], BatchDecision(np.arange(30) % M, np.full((30, M), 1 / M)), np.linspace(0, 1, 30))
        for t in range(30, 40):
            p.learn(X[t], Decision(action=t % M, probs=np.full(M, 1 / M)), 0.5)
    for key, value in policy.state_dict()["state"].items():
        np.testing.assert_array_equal(twin.state_dict()["state"][key], value, err_msg=key)


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize(("shared", "per_arm"), [(False, False), (False, True), (True, True)])
def test_learn_batch_equals_sequential_learn(name: str, shared: bool, per_arm: bool) -> None:
    g = np.random.default_rng(5)
    seq, bat = (CLASSES[name](M, D, shared=shared) for _ in range(2))
    X = _contexts(g, 300, per_arm)
    dec = seq.act_batch(X, g)
    rewards = g.random(300)
    for t in range(300):
        seq.learn(X[t], dec[t], rewards[t])
    start = 0
    for size in (1, 2, 50, 7, 140, 100):  # uneven chunks: Sherman–Morrison and Woodbury paths
        sl = slice(start, start + size)
        bat.learn_batch(X[sl], BatchDecision(dec.actions[sl], dec.probs[sl]), rewards[sl])
        start += size
    assert start == 300
    s, b = seq.state_dict()["state"], bat.state_dict()["state"]
    for key in s:
        np.testing.assert_allclose(b[key], s[key], rtol=1e-9, atol=1e-12, err_msg=key)


def test_shared_model_pools_feedback_across_arms() -> None:
    """With ``shared=True`` a reward on one arm moves every arm's estimate; disjoint models do not."""
    pooled, disjoint = LinUCB(M, D, shared=True), LinUCB(M, D, shared=False)
    assert pooled.A_inv.shape == (1, D, D) and disjoint.A_inv.shape == (M, D, D)
    rows = np.tile(np.ones(D) / np.sqrt(D), (M, 1))  # per-arm contexts, identical features for every arm
    for policy in (pooled, disjoint):
        policy.learn(rows, Decision(action=0, probs=np.full(M, 1 / M)), 1.0)
    Xb = pooled._broadcast(rows[None])
    pooled_means, disjoint_means = pooled._means(Xb)[0], disjoint._means(Xb)[0]
    assert np.all(pooled_means > 0) and np.all(pooled_means == pooled_means[0])
    assert disjoint_means[0] > 0 and np.all(disjoint_means[1:] == 0)
    np.testing.assert_array_equal(pooled.counts, [1, 0, 0])


def test_scale_lam_by_dim() -> None:
    plain, scaled = RidgePolicy(M, D, lam=2.0), RidgePolicy(M, D, lam=2.0, scale_lam_by_dim=True)
    np.testing.assert_array_equal(plain.A_inv[0], np.eye(D) / 2.0)
    np.testing.assert_allclose(scaled.A_inv[0], np.eye(D) / (2.0 * D))
    assert scaled.config["scale_lam_by_dim"] is True and scaled.config["lam"] == 2.0
    rows, actions, rewards = _train(scaled, 100, per_arm=False, seed=6)
    A, _ = _direct_stats(rows, actions, rewards, 2.0 * D, shared=False)
    for k in range(M):
        assert _rel_err(scaled.A_inv[k], np.linalg.inv(A[k])) < 1e-8


def _lints_reference(policy: LinTS, x: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """P(arm wins) by sampling whole parameter vectors θ ~ N(θ̂, v² A^{-1}) with a Cholesky factor."""
    g = np.random.default_rng(seed)
    X = np.broadcast_to(x, (M, D)) if x.ndim == 1 else x
    if policy.shared:
        L = np.linalg.cholesky(policy.v**2 * policy.A_inv[0])
        thetas = policy.theta[0] + g.standard_normal((draws, D)) @ L.T  # (draws, D)
        scores = thetas @ X.T
    else:
        scores = np.empty((draws, M))
        for m in range(M):
            L = np.linalg.cholesky(policy.v**2 * policy.A_inv[m])
            thetas = policy.theta[m] + g.standard_normal((draws, D)) @ L.T
            scores[:, m] = thetas @ X[m]
    return np.bincount(scores.argmax(axis=1), minlength=M) / draws


@pytest.mark.parametrize(("shared", "per_arm"), [(False, False), (False, True), (True, True)])
def test_lints_probs_match_full_posterior_sampling(shared: bool, per_arm: bool) -> None:
    policy = LinTS(M, D, v=0.5, n_prob_samples=20_000, shared=shared)
    _train(policy, 15, per_arm, seed=7)
    g = np.random.default_rng(8)
    X = _contexts(g, 4, per_arm)
    references = np.stack([_lints_reference(policy, x, 20_000, seed=9) for x in X])
    # the posterior must leave real doubt for the comparison to mean something
    assert references.max(axis=1).min() < 0.9
    for x, reference in zip(X, references, strict=True):
        np.testing.assert_allclose(policy.act(x, g).probs, reference, atol=0.025)


@pytest.mark.parametrize("name", list(CLASSES))
def test_ties_at_initialisation_are_broken_uniformly(name: str) -> None:
    policy = CLASSES[name](M, D)
    X = _contexts(np.random.default_rng(10), 3000, per_arm=False)
    batch = policy.act_batch(X, np.random.default_rng(11))
    if name != "lints":  # LinTS probabilities are Monte-Carlo estimates, uniform only in expectation
        np.testing.assert_array_equal(batch.probs, np.full((3000, M), 1 / M))
    else:
        np.testing.assert_allclose(batch.probs.mean(axis=0), 1 / M, atol=0.01)
    counts = np.bincount(batch.actions, minlength=M)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_epsilon_mixes_uniform_exploration() -> None:
    policy = RidgePolicy(M, D, epsilon=0.3)
    _train(policy, 50, per_arm=False, seed=12)
    probs = policy.act_batch(_contexts(np.random.default_rng(13), 20, per_arm=False), np.random.default_rng(14)).probs
    np.testing.assert_allclose(probs.min(axis=1), 0.1)
    np.testing.assert_allclose(probs.max(axis=1), 0.8)
