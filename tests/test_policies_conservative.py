"""The conservative wrapper (policies/conservative.py): safety after the warm-up, take-over when context pays.

The generic contract (valid vectors, reproducibility, state round trips, bad input) is in
test_policy_contract.py; its short runs stay inside the warm-up, so the same properties are
checked here with the candidate playing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from banditroute.core.types import BatchDecision, Decision, EnvSpec
from banditroute.core.validation import InputError
from banditroute.envs.reward_table import RewardTable
from banditroute.policies.conservative import Conservative
from banditroute.policies.registry import make_policy


def weak_table(n: int = 2000, d: int = 16, seed: int = 0) -> RewardTable:
    """Six arms, one clearly best on average (0.55 vs 0.50, 0.42, ...), almost no per-query signal,
    noisy rewards: a contextual learner from scratch is worse than the best arm for a long time."""
    g = np.random.default_rng(seed)
    means = np.array([0.55, 0.5, 0.42, 0.35, 0.3, 0.25])
    X = g.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    p = np.clip(means + X @ (0.05 * g.normal(size=(6, d))).T, 0, 1)
    return RewardTable(X, np.clip(p + 0.3 * g.normal(size=(n, 6)), 0, 1), reward_range=(0, 1))


def mixed_table(n: int = 3000, seed: int = 0) -> RewardTable:
    """Three domains (one-hot feature plus noise), a different best arm in each (0.7), and an arm that is
    best on average (0.5): only a contextual router can beat every fixed arm."""
    g = np.random.default_rng(seed)
    dom = g.integers(0, 3, n)
    X = np.hstack([np.eye(3)[dom], 0.3 * g.normal(size=(n, 4))])
    means = np.full((3, 5), 0.3)
    means[:, 3] = 0.5
    means[np.arange(3), np.arange(3)] = 0.7
    return RewardTable(X, np.clip(means[dom] + 0.25 * g.normal(size=(n, 5)), 0, 1), reward_range=(0, 1))


def replay(policy: Conservative, table: RewardTable, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One shuffled pass, one round at a time: (rows served, realised rewards, candidate flags)."""
    g = np.random.default_rng(seed)
    rows = g.permutation(table.n_rows)
    rewards, cand = np.empty(len(rows)), np.empty(len(rows), dtype=bool)
    for t, i in enumerate(rows):
        decision = policy.act(table.contexts[i], g)
        rewards[t], cand[t] = table.rewards[i, decision.action], decision.info["candidate"]
        policy.learn(table.contexts[i], decision, rewards[t])
    return rows, rewards, cand


def build(table: RewardTable, name: str = "safe-linucb", **kwargs: Any) -> Conservative:
    policy = make_policy(name, EnvSpec(table.n_arms, table.dim), **kwargs)
    assert isinstance(policy, Conservative)
    return policy


class Unconstrained(Conservative):
    """The wrapper with its safety check removed: the candidate plays every row after the warm-up."""

    def candidate_rows(self, n: int) -> int:
        return n if self.budget() > -np.inf else 0


BAD_CANDIDATES = {
    "fixed-worst-arm": {"base": "fixed", "base_kwargs": {"arm": 5}, "learn_from_fallback": False},
    "linucb-from-scratch": {},
}


@pytest.mark.parametrize("candidate", list(BAD_CANDIDATES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_running_reward_stays_within_epsilon_of_the_best_fixed_arm_after_warmup(candidate: str, seed: int) -> None:
    """After the warm-up the running reward since then is at least (1 − ε − 0.02) × the best fixed arm's on
    the same queries at every round from 500 rounds after it, (1 − ε − 0.015) × at the end (the margin: the
    fallback's exploration and the noise of its mean), and 0.975 × over the whole run (measured: 0.983–0.985).
    Without the check both candidates fall far below (0.5–0.8, same seeds)."""
    table = weak_table(seed=seed)
    kwargs = BAD_CANDIDATES[candidate]
    policy = build(table, **kwargs)
    eps, warm = policy.epsilon, policy.warmup
    rows, rewards, cand = replay(policy, table, seed)
    best_arm = int(np.argmax(table.rewards.mean(axis=0)))
    fixed = table.rewards[rows, best_arm]
    ratio = np.cumsum(rewards[warm:]) / np.cumsum(fixed[warm:])
    assert ratio[500:].min() >= 1 - eps - 0.02, ratio[500:].min()
    assert ratio[-1] >= 1 - eps - 0.015
    assert rewards.sum() >= 0.975 * fixed.sum()
    assert cand[warm:].any()  # the budget did let the candidate play

    unsafe = Unconstrained(table.n_arms, table.dim, **{"base": "linucb", "learn_from_fallback": True, **kwargs})
    rows, rewards, _ = replay(unsafe, table, seed)
    ratio = np.cumsum(rewards[warm:]) / np.cumsum(table.rewards[rows, best_arm][warm:])
    assert ratio[500:].min() < 1 - eps - 0.15


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_contextual_candidate_takes_over_when_context_pays(seed: int) -> None:
    """Per-domain best arms: after the warm-up the budget grows, LinUCB plays almost every round of the
    last quarter, and the run earns at least 1.15 × the best fixed arm (the per-domain oracle is 1.4 ×)."""
    table = mixed_table(seed=seed)
    policy = build(table)
    rows, rewards, cand = replay(policy, table, seed)
    assert cand[-len(cand) // 4 :].mean() > 0.95
    best_fixed = table.rewards[rows].sum(axis=0).max()
    assert rewards.sum() >= 1.15 * best_fixed


def test_warmup_is_the_fallback_alone_and_the_fallback_learns_only_its_own_rounds() -> None:
    table = mixed_table(n=600)
    policy = build(table, warmup=50)
    rows, _, cand = replay(policy, table, 3)
    assert not cand[:50].any() and cand.any() and not cand.all()
    # the fallback's per-arm counts are its own plays only: one per fallback round
    assert policy.fallback.counts.sum() == (~cand).sum()
    assert policy.base.state_dict()["state"]["counts"].sum() == len(rows)  # ridge also learns from the fallback's


def test_each_decision_is_the_playing_sides_own_decision() -> None:
    """The vector is the chosen side's (restricted) vector, from the same generator state."""
    table = mixed_table(n=400)
    policy = build(table, warmup=20, epsilon=0.02)
    replay(policy, table, 4)
    k = policy.candidate_rows(10**6)
    n = k + 5
    assert 0 < k < 300
    g = np.random.default_rng(5)
    X = table.contexts[:n]
    allowed = g.random((n, 5)) < 0.6
    allowed[np.arange(n), g.integers(0, 5, n)] = True
    batch = policy.act_batch(X, np.random.default_rng(6), allowed=allowed)
    g = np.random.default_rng(6)
    want_c = policy.base.act_batch(X[:k], g, allowed=allowed[:k])
    want_f = policy.fallback.act_batch(np.ones((n - k, 1)), g, allowed=allowed[k:])
    np.testing.assert_array_equal(batch.probs, np.vstack([want_c.probs, want_f.probs]))
    np.testing.assert_array_equal(batch.actions, np.concatenate([want_c.actions, want_f.actions]))
    np.testing.assert_array_equal(batch.info["candidate"], np.arange(n) < k)


@pytest.mark.parametrize("name", ["safe-linucb", "safe-hpg"])
def test_restored_policy_continues_bit_for_bit_with_the_candidate_playing(name: str) -> None:
    table = mixed_table(n=300)
    original = build(table, name, warmup=10, epsilon=0.5)
    replay(original, table.subset(np.arange(150)), 7)
    restored = build(table, name, warmup=10, epsilon=0.5)
    restored.load_state_dict(original.state_dict())
    rest = table.subset(np.arange(150, 300))
    a, b = replay(original, rest, 8), replay(restored, rest, 8)
    assert a[2].any()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_batched_learning_equals_sequential_learning() -> None:
    table = mixed_table(n=200)
    one, many = build(table, warmup=10, epsilon=0.5), build(table, warmup=10, epsilon=0.5)
    replay(one, table.subset(np.arange(100)), 9)
    replay(many, table.subset(np.arange(100)), 9)
    X = table.contexts[100:116]
    batch = one.act_batch(X, np.random.default_rng(1))
    r = table.rewards[np.arange(100, 116), batch.actions]
    many.learn_batch(X, batch, r)
    for i in range(16):
        one.learn(X[i], batch[i], r[i])
    for key, value in one.state_dict()["state"].items():
        np.testing.assert_allclose(value, many.state_dict()["state"][key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "info",
    [{}, {"candidate": 2}, {"candidate": 0.5}, {"candidate": [1, 0]}, {"candidate": "yes"}],
    ids=["missing", "two", "fraction", "array", "string"],
)
def test_learn_rejects_a_decision_that_did_not_come_from_the_wrapper(info: dict[str, Any]) -> None:
    table = mixed_table(n=50)
    policy = build(table, warmup=5)
    replay(policy, table, 0)
    before = policy.state_dict()
    decision = policy.act(table.contexts[0], np.random.default_rng(0))
    with pytest.raises(InputError, match="candidate"):
        policy.learn(table.contexts[0], Decision(decision.action, decision.probs, info), 0.5)
    batch = policy.act_batch(table.contexts[:2], np.random.default_rng(0))
    with pytest.raises(InputError, match="candidate"):
        policy.learn_batch(table.contexts[:2], BatchDecision(batch.actions, batch.probs, {"candidate": [0, 2]}), [0, 1])
    after = policy.state_dict()["state"]
    assert all(np.array_equal(v, after[k]) for k, v in before["state"].items())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 1.0},
        {"epsilon": -0.1},
        {"warmup": -1},
        {"fallback_alpha": -1},
        {"base": "no-such-policy"},
        {"base_kwargs": {"no_such_parameter": 1}},
        {"reward_range": None},
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        make_policy("safe-linucb", EnvSpec(3, 4), **kwargs)
