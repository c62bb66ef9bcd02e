"""EXP3 and the log-linear REINFORCE policy against slow references, gradient theory and simple learning tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditroute.core.types import BatchDecision, Decision
from banditroute.core.validation import InputError
from banditroute.policies.base import Policy
from banditroute.policies.exp3 import EXP3, tuned_gamma
from banditroute.policies.loglinear import LogLinearPG
from banditroute.policies.simple import Uniform

M, D = 4, 3


def _unit(g: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    X = g.normal(size=shape)
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _mean_reward(policy: Policy, X: np.ndarray, means: np.ndarray, seed: int) -> float:
    """Play ``policy`` on contexts ``X`` with Bernoulli rewards of mean ``means[t, arm]``; return the
    average *expected* reward of the chosen arms (lower variance than the realised one)."""
    g = np.random.default_rng(seed)
    total = 0.0
    for x, mu in zip(X, means, strict=True):
        decision = policy.act(x, g)
        policy.learn(x, decision, float(g.random() < mu[decision.action]))
        total += mu[decision.action]
    return total / len(X)


# ---------------------------------------------------------------------------------------- EXP3
@pytest.mark.parametrize("reward_range", [(0.0, 1.0), (-2.0, 3.0)])
def test_exp3_matches_direct_weight_reference(reward_range: tuple[float, float]) -> None:
    """Auer et al. (2002) Fig. 1 written with raw weights ``w`` (fine for a short run)."""
    lo, hi = reward_range
    gamma = 0.2
    policy = EXP3(M, D, gamma=gamma, reward_range=reward_range)
    g = np.random.default_rng(0)
    w = np.ones(M)
    for _ in range(40):
        p_ref = (1 - gamma) * w / w.sum() + gamma / M
        x = g.normal(size=D)
        decision = policy.act(x, g)
        np.testing.assert_allclose(decision.probs, p_ref, rtol=1e-12)
        reward = g.uniform(lo, hi)
        policy.learn(x, decision, reward)
        a = decision.action
        w[a] *= math.exp(gamma * ((reward - lo) / (hi - lo)) / p_ref[a] / M)
    np.testing.assert_allclose(policy.probs(), (1 - gamma) * w / w.sum() + gamma / M, rtol=1e-12)


def test_exp3_uses_the_decisions_propensity() -> None:
    """The estimate divides by the probability the action was drawn with, not the current one."""
    policy = EXP3(M, D, gamma=0.5)
    logged = np.array([0.1, 0.2, 0.3, 0.4])
    policy.learn(np.zeros(D), Decision(action=2, probs=logged), 0.6)
    expected = np.zeros(M)
    expected[2] = 0.5 * (0.6 / 0.3) / M
    np.testing.assert_allclose(policy.logw, expected - expected.max(), rtol=1e-12)


def test_exp3_learn_batch_equals_sequential_learn() -> None:
    g = np.random.default_rng(1)
    seq, bat = EXP3(M, D), EXP3(M, D)
    X = g.normal(size=(200, D))
    decisions = seq.act_batch(X, g)
    rewards = g.random(200)
    for t in range(200):
        seq.learn(X[t], decisions[t], rewards[t])
    for chunk in np.array_split(np.arange(200), 7):
        bat.learn_batch(X[chunk], BatchDecision(decisions.actions[chunk], decisions.probs[chunk]), rewards[chunk])
    np.testing.assert_allclose(bat.logw, seq.logw, rtol=1e-10, atol=1e-10)


def test_exp3_probabilities_never_below_gamma_over_m_and_never_overflow() -> None:
    """One arm always pays 1 over 10^5 rounds: the others' weights vanish, their probability stays γ/M."""
    gamma = 0.05
    policy = EXP3(M, D, gamma=gamma)
    g = np.random.default_rng(2)
    X = np.zeros((1000, D))
    for _ in range(100):
        batch = policy.act_batch(X, g)
        assert batch.probs.min() >= gamma / M * (1 - 1e-12)
        policy.learn_batch(X, batch, (batch.actions == 0).astype(float))
    assert np.all(np.isfinite(policy.logw)) and policy.logw.max() == 0.0
    assert policy.logw[1:].max() < -700  # exp() of these underflows: raw weights would not survive
    probs = policy.probs()
    np.testing.assert_allclose(probs[1:], gamma / M, rtol=1e-12)
    np.testing.assert_allclose(probs[0], 1 - gamma + gamma / M, rtol=1e-12)


def test_exp3_gamma_from_horizon() -> None:
    T = 10_000
    assert EXP3(M, D, horizon=T).gamma == pytest.approx(math.sqrt(M * math.log(M) / ((math.e - 1) * T)))
    assert tuned_gamma(M, 1) == 1.0
    assert EXP3(M, D).gamma == 0.1
    assert EXP3(M, D, gamma=0.3, horizon=T).gamma == 0.3  # an explicit gamma wins
    assert EXP3(M, D, horizon=T).config["horizon"] == T


@pytest.mark.parametrize(
    "kwargs",
    [{"gamma": 0.0}, {"gamma": 1.5}, {"gamma": float("nan")}, {"horizon": 0}, {"horizon": 2.5}, {"reward_range": None}],
)
def test_exp3_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        EXP3(M, D, **kwargs)  # type: ignore[arg-type]


def test_exp3_rejects_zero_propensity_without_changing_state() -> None:
    policy = EXP3(M, D)
    policy.learn(np.zeros(D), Decision(1, np.full(M, 1 / M)), 1.0)
    before = policy.logw.copy()
    with pytest.raises(InputError, match="probability 0"):
        policy.learn(np.zeros(D), Decision(0, np.array([0.0, 1.0, 0.0, 0.0])), 1.0)
    np.testing.assert_array_equal(policy.logw, before)


def test_exp3_beats_uniform_on_a_stochastic_problem() -> None:
    T = 3000
    means = np.tile([0.3, 0.4, 0.5, 0.6, 0.8], (T, 1))
    X = np.zeros((T, D))
    exp3 = EXP3(5, D, horizon=T)
    exp3_reward = _mean_reward(exp3, X, means, seed=3)
    uniform_reward = _mean_reward(Uniform(5, D), X, means, seed=3)
    assert uniform_reward == pytest.approx(0.52, abs=0.02)
    assert exp3_reward > uniform_reward + 0.12  # measured: 0.74 vs 0.52
    assert exp3.probs().argmax() == 4 and exp3.probs()[4] > 0.8


# ---------------------------------------------------------------------------------------- LogLinearPG
def _reference_probs(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``π(m) ∝ exp(w_mᵀ (x_m, 1))`` one arm at a time."""
    rows = np.broadcast_to(x, (M, D)) if x.ndim == 1 else x
    logits = np.array([W[m] @ np.append(rows[m], 1.0) for m in range(M)])
    e = np.exp(logits - logits.max())
    return e / e.sum()


@pytest.mark.parametrize("baseline", ["mean", None])
@pytest.mark.parametrize("per_arm", [False, True])
def test_loglinear_matches_slow_reinforce_loop(baseline: str | None, per_arm: bool) -> None:
    eta = 0.7
    policy = LogLinearPG(M, D, eta=eta, baseline=baseline)
    g = np.random.default_rng(4)
    W = np.zeros((M, D + 1))
    past: list[float] = []
    for _ in range(60):
        x = _unit(g, (M, D) if per_arm else (D,))
        decision = policy.act(x, g)
        pi = _reference_probs(W, x)
        np.testing.assert_allclose(decision.probs, pi, rtol=1e-10)
        r = float(g.random())
        b = float(np.mean(past)) if past and baseline == "mean" else 0.0
        for m in range(M):
            row = np.append(x[m] if per_arm else x, 1.0)
            W[m] += eta * (r - b) * (float(m == decision.action) - pi[m]) * row
        policy.learn(x, decision, r)
        past.append(r)
        np.testing.assert_allclose(policy.weights, W, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("per_arm", [False, True])
def test_loglinear_learn_batch_equals_sequential_learn(per_arm: bool) -> None:
    g = np.random.default_rng(5)
    seq, bat = LogLinearPG(M, D), LogLinearPG(M, D)
    X = _unit(g, (300, M, D) if per_arm else (300, D))
    decisions = seq.act_batch(X, g)
    rewards = g.random(300)
    for t in range(300):
        seq.learn(X[t], decisions[t], rewards[t])
    for chunk in np.array_split(np.arange(300), 9):
        bat.learn_batch(X[chunk], BatchDecision(decisions.actions[chunk], decisions.probs[chunk]), rewards[chunk])
    np.testing.assert_allclose(bat.weights, seq.weights, rtol=1e-10, atol=1e-12)
    assert bat.n_rewards == seq.n_rewards == 300
    np.testing.assert_allclose(bat.reward_sum, rewards.sum(), rtol=1e-12)


def test_loglinear_mean_baseline_bookkeeping() -> None:
    """``b_t`` is the mean of earlier rewards (0 at the very first round), across batch boundaries."""
    policy = LogLinearPG(M, D)
    np.testing.assert_allclose(policy._baselines(np.array([0.2, 0.4, 0.9])), [0.0, 0.2, 0.3], rtol=1e-15)
    x = np.ones(D) / math.sqrt(D)
    batch = policy.act_batch(np.tile(x, (3, 1)), np.random.default_rng(6))
    policy.learn_batch(np.tile(x, (3, 1)), batch, [0.2, 0.4, 0.9])
    assert policy.n_rewards == 3 and policy.reward_sum == pytest.approx(1.5)
    np.testing.assert_allclose(policy._baselines(np.array([1.0, 0.0])), [0.5, 0.625])
    assert np.all(LogLinearPG(M, D, baseline=None)._baselines(np.array([0.3, 0.8])) == 0.0)


def test_loglinear_constant_reward_stops_learning_only_with_a_baseline() -> None:
    """With the mean baseline a constant reward has zero advantage after the first round."""
    g = np.random.default_rng(7)
    X = _unit(g, (20, D))
    with_b, without_b = LogLinearPG(M, D), LogLinearPG(M, D, baseline=None)
    for policy in (with_b, without_b):
        policy.learn(X[0], policy.act(X[0], g), 0.7)
        after_first = policy.weights.copy()
        assert np.any(after_first != 0)
        for x in X[1:]:
            policy.learn(x, policy.act(x, g), 0.7)
        changed = not np.allclose(policy.weights, after_first, rtol=0, atol=1e-12)
        assert changed == (policy is without_b)


@pytest.mark.parametrize("baseline", [None, "mean"])
@pytest.mark.parametrize("per_arm", [False, True])
def test_reinforce_update_is_an_unbiased_gradient(baseline: str | None, per_arm: bool) -> None:
    """E_a~π[(r(a) - b)(e_a - π) x̃] = ∇V(w) with V(w) = Σ_m π(m) r(m), whose exact gradient is
    ∂V/∂w_k = π(k) (r(k) - V) x̃_k (differentiate the softmax)."""
    g = np.random.default_rng(8)
    x = _unit(g, (M, D) if per_arm else (D,))
    r = np.array([0.9, 0.1, 0.5, 0.3])
    policy = LogLinearPG(M, D, eta=1.0, baseline=baseline)
    policy.weights = g.normal(scale=0.5, size=(M, D + 1))
    w0 = policy.weights.copy()
    pi = _reference_probs(w0, x)
    rows = np.column_stack([np.broadcast_to(x, (M, D)), np.ones(M)])
    exact = (pi * (r - pi @ r))[:, None] * rows

    N = 200_000
    X = np.broadcast_to(x, (N, *x.shape))
    batch = policy.act_batch(X, g)
    np.testing.assert_allclose(batch.probs[0], pi, rtol=1e-10)
    policy.learn_batch(X, batch, r[batch.actions])
    estimate = (policy.weights - w0) / N
    # Monte-Carlo error ~ 1/sqrt(N) ≈ 2e-3 per entry; the exact gradient has entries of order 0.1
    np.testing.assert_allclose(estimate, exact, atol=6e-3)
    assert np.abs(exact).max() > 0.05


def test_loglinear_learns_a_two_cluster_problem() -> None:
    """Queries from two clusters; arm 0 is best for one, arm 1 for the other (arm 2 is never best)."""
    T = 2000
    g = np.random.default_rng(9)
    centre = _unit(g, (D,))
    cluster = g.integers(2, size=T)
    X = np.where(cluster[:, None] == 0, centre, -centre) + 0.2 * g.normal(size=(T, D))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    means = np.where(cluster[:, None] == 0, [0.8, 0.2, 0.4], [0.2, 0.8, 0.4])
    loglinear = LogLinearPG(3, D)
    learned = _mean_reward(loglinear, X, means, seed=10)
    uniform = _mean_reward(Uniform(3, D), X, means, seed=10)
    assert uniform == pytest.approx(0.467, abs=0.02)
    assert learned > uniform + 0.2  # measured: 0.74 vs 0.47
    final = loglinear.act_batch(np.stack([centre, -centre]), g).probs
    assert final[0, 0] > 0.8 and final[1, 1] > 0.8


@pytest.mark.parametrize("kwargs", [{"eta": 0.0}, {"eta": -1.0}, {"eta": float("inf")}, {"baseline": "median"}])
def test_loglinear_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        LogLinearPG(M, D, **kwargs)  # type: ignore[arg-type]
