"""The two-stage system: allocation per spec, Proposition 2, training modes, components against references.

The policy contract (valid distributions, reproducibility, state round trips, bad input) is checked
for ``two-stage`` by tests/test_policy_contract.py, which covers every registered policy.
"""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.core.types import Decision
from banditroute.core.validation import InputError
from banditroute.envs.linear import LinearBandit
from banditroute.policies.ridge import LinUCB
from banditroute.twostage.allocation import allocate_features, allocate_pools
from banditroute.twostage.components import Segments, SoftmaxComponent
from banditroute.twostage.envs import PROPOSITION_2, FixedItems
from banditroute.twostage.system import TwoStage


def play(system: TwoStage, env: FixedItems | LinearBandit, T: int, seed: int = 0) -> list[int]:
    """Online act/learn for ``T`` rounds; returns the served items."""
    rounds = env.rounds(T, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    served = []
    for x, rewards in zip(rounds.contexts, rounds.rewards, strict=True):
        d = system.act(x, rng)
        system.learn(x, d, rewards[d.action])
        served.append(d.action)
    return served


# ---------------------------------------------------------------------------------------- allocation
def reference_pools(n_items: int, N: int, rng: np.random.Generator) -> list[list[int]]:
    """The spec's words, literally: permute, cut into ⌊|A|/N⌋, remainder one by one to the first pools."""
    perm = list(rng.permutation(n_items))
    base = n_items // N
    pools = [perm[n * base : (n + 1) * base] for n in range(N)]
    for n, item in enumerate(perm[N * base :]):
        pools[n].append(item)
    return [sorted(p) for p in pools]


@pytest.mark.parametrize(("n_items", "N"), [(10, 3), (7, 7), (100, 20), (23, 5)])
def test_pools_partition_items_as_the_spec_says(n_items: int, N: int) -> None:
    pools = allocate_pools(n_items, N, np.random.default_rng(3))
    assert sorted(np.concatenate(pools).tolist()) == list(range(n_items))
    sizes = [len(p) for p in pools]
    assert sizes == sorted(sizes, reverse=True) and max(sizes) - min(sizes) <= 1
    # Same generator state -> the same pools as a literal reading of the spec.
    assert reference_pools(n_items, N, np.random.default_rng(3)) == [p.tolist() for p in pools]


@pytest.mark.parametrize(("d", "N", "s"), [(20, 4, 5), (20, 4, 8), (10, 3, 10), (80, 20, 16), (5, 5, 1)])
def test_feature_sets_have_disjoint_blocks_and_size_s(d: int, N: int, s: int) -> None:
    sets = allocate_features(d, N, s, np.random.default_rng(4))
    assert all(len(f) == s == len(set(f.tolist())) and f.max() < d for f in sets)
    block = min(s, d // N)
    # the permutation's blocks: nominator n owns perm[n·s' : (n+1)·s'], which no other nominator's block holds
    perm = np.random.default_rng(4).permutation(d)
    for n, f in enumerate(sets):
        assert set(perm[n * block : (n + 1) * block].tolist()) <= set(f.tolist())
    if s <= d // N:
        assert len(set(np.concatenate(sets).tolist())) == N * s  # pairwise disjoint


def test_bad_allocations_are_rejected() -> None:
    with pytest.raises(InputError, match="exceed"):
        TwoStage(3, 4, n_nominators=4)
    with pytest.raises(InputError, match="n_features"):
        TwoStage(6, 4, n_features=5)
    with pytest.raises(InputError, match="cover every item"):
        TwoStage(4, 3, pools=[[0, 1], [2]], feature_sets=[[0], [1]])
    with pytest.raises(InputError, match="same number of features"):
        TwoStage(4, 3, pools=[[0, 1], [2, 3]], feature_sets=[[0], [1, 2]])
    with pytest.raises(InputError, match="repeats"):
        TwoStage(4, 3, pools=[[0, 0, 1], [2, 3]], feature_sets=[[0], [1]])
    with pytest.raises(InputError, match="training"):
        TwoStage(4, 3, training="mine")


# ---------------------------------------------------------------------------------------- Proposition 2
def prop2_system(name: str, training: str) -> tuple[TwoStage, FixedItems]:
    c = PROPOSITION_2[name]
    env = c.env()
    system = TwoStage(
        env.spec.n_arms,
        env.spec.dim,
        n_nominators=2,
        nominator="greedy",
        ranker="greedy",
        training=training,
        epsilon=1.0,  # uniform logging: every pool item and candidate is served with positive frequency
        lam=1e-4,
        pools=c.pools,
        feature_sets=[c.nominator_features] * 2,
        reward_range=None,
    )
    return system, env


@pytest.mark.parametrize("training", ["all", "own", "proposal"])
@pytest.mark.parametrize("name", list(PROPOSITION_2))
def test_proposition_2_each_training_mode_fails_where_the_spec_says(name: str, training: str) -> None:
    """Under uniform exploration the pool-2 nominator converges to the least-squares fit of its
    training data; that fit proposes the wrong item exactly in the mode the construction targets."""
    c = PROPOSITION_2[name]
    system, env = prop2_system(name, training)
    served = np.array(play(system, env, 1500))
    scores = system.nominator_scores(env.features)[1]
    pick = c.pools[1][int(np.argmax(scores))]
    mode = "all" if training == "all" else "own"
    assert pick == c.picks[mode]
    assert (pick == c.best) == (mode != {"on-all-fails": "all", "on-own-fails": "own"}[name])

    # ... and the fit is exactly ridge regression on what that mode trains on (slow reference).
    F = env.features[:, list(c.nominator_features)]
    trained_on = np.ones(len(served), bool) if mode == "all" else np.isin(served, c.pools[1])
    rows, r = F[served[trained_on]], np.array(c.means)[served[trained_on]]
    theta = np.linalg.solve(1e-4 * 2 * np.eye(2) + rows.T @ rows, rows.T @ r)
    np.testing.assert_allclose(scores, F[list(c.pools[1])] @ theta, atol=1e-9)


# ---------------------------------------------------------------------------------------- training modes
def test_own_and_proposal_coincide_for_partitions_and_differ_for_overlapping_pools() -> None:
    env = LinearBandit(12, 6, noise=0.1, seed=1)
    states = {}
    for pools in ([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]], [[0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11]]):
        for training in ("own", "proposal"):
            system = TwoStage(12, 6, n_nominators=2, n_features=3, training=training, pools=pools, reward_range=None)
            play(system, env, 150)
            states[len(pools[0]), training] = system.state_dict()["state"]["nominators.b"]
    np.testing.assert_array_equal(states[6, "own"], states[6, "proposal"])
    assert not np.allclose(states[8, "own"], states[8, "proposal"])


def test_training_on_all_updates_every_nominator_each_round() -> None:
    env = LinearBandit(20, 8, noise=0.1, seed=2)
    counts = {}
    for training in ("all", "own"):
        system = TwoStage(20, 8, n_nominators=4, n_features=3, training=training, reward_range=None)
        play(system, env, 50)
        counts[training] = system.state_dict()["state"]["nominators.counts"]
    assert counts["all"].tolist() == [50] * 4
    assert counts["own"].sum() == 50  # exactly one pool holds the served item


def test_disjoint_models_cannot_learn_foreign_items_so_all_equals_own() -> None:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 6))
    states = []
    for training in ("all", "own"):
        system = TwoStage(5, 6, n_nominators=2, n_features=3, shared=False, training=training)
        g = np.random.default_rng(0)
        for x in X:
            d = system.act(x, g)
            system.learn(x, d, float(d.action == 1))
        states.append(system.state_dict()["state"])
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key])


# ---------------------------------------------------------------------------------------- components
def test_single_nominator_with_all_features_is_linucb_on_all_items() -> None:
    """N = 1, s = d: the ranker has one candidate, the nominator is LinUCB with one shared θ and λ·d."""
    env = LinearBandit(15, 5, noise=0.5, seed=3)
    system = TwoStage(15, 5, n_nominators=1, lam=0.1, alpha=0.5, reward_range=None)
    served = play(system, env, 200)
    linucb = LinUCB(15, 5, lam=0.1, alpha=0.5, shared=True, scale_lam_by_dim=True, reward_range=None)
    rounds = env.rounds(200, np.random.default_rng(0))
    rng = np.random.default_rng(9)
    expected = []
    for x, rewards in zip(rounds.contexts, rounds.rewards, strict=True):
        d = linucb.act(x, rng)
        linucb.learn(x, d, rewards[d.action])
        expected.append(d.action)
    assert served == expected
    np.testing.assert_allclose(system.state_dict()["state"]["nominators.theta"], linucb.theta, atol=1e-10)


def test_softmax_component_takes_the_reinforce_step() -> None:
    rng = np.random.default_rng(6)
    comp = SoftmaxComponent(1, 4, lr=0.3)
    comp.theta = rng.standard_normal((1, 4))
    F, models = rng.standard_normal((5, 4)), np.zeros(5, dtype=np.int64)
    p = comp.distribution(comp.scores(F, models))
    logp = F @ comp.theta[0] - np.log(np.exp(F @ comp.theta[0]).sum())
    np.testing.assert_allclose(p, np.exp(logp))
    # slow reference: numerical gradient of log π_2 times η r
    eps, grad = 1e-6, np.zeros(4)
    for j in range(4):
        e = np.zeros(4)
        e[j] = eps
        up, down = F @ (comp.theta[0] + e), F @ (comp.theta[0] - e)
        grad[j] = ((up[2] - np.log(np.exp(up).sum())) - (down[2] - np.log(np.exp(down).sum()))) / (2 * eps)
    before = comp.theta.copy()
    comp.update(F, models, p, 2, 0.7)
    np.testing.assert_allclose(comp.theta[0] - before[0], 0.3 * 0.7 * grad, atol=1e-8)


def test_segments_normalise_and_sample_within_each_pool() -> None:
    seg = Segments(np.array([1, 3, 2]))
    probs = np.array([1.0, 0.2, 0.0, 0.8, 0.5, 0.5])
    draws = seg.sample(probs, 20_000, np.random.default_rng(7))
    assert draws.shape == (20_000, 3)
    assert np.all(draws[:, 0] == 0) and set(np.unique(draws[:, 1])) == {1, 3}
    np.testing.assert_allclose(np.mean(draws[:, 1] == 3), 0.8, atol=0.01)
    np.testing.assert_allclose(np.mean(draws[:, 2] == 4), 0.5, atol=0.015)


def test_decision_probs_are_the_served_items_distribution() -> None:
    """``probs`` averages the ranker's distributions over K sampled candidate sets: with softmax
    stages it estimates the exact marginal (enumerated here over every candidate set), and the
    served items follow it."""
    rng = np.random.default_rng(8)
    system = TwoStage(6, 4, n_nominators=3, nominator="pg", ranker="pg", reward_range=None)
    F = rng.standard_normal((6, 4))
    for _ in range(30):  # make the softmaxes non-uniform
        d = system.act(F, rng)
        system.learn(F, d, float(F[d.action, 0] > 0))
    softmax = [np.exp(s) / np.exp(s).sum() for s in system.nominator_scores(F)]
    exact = np.zeros(6)
    for choice in np.ndindex(*(len(p) for p in system.pools)):
        cands = np.array([pool[c] for pool, c in zip(system.pools, choice, strict=True)])
        p_set = np.prod([sm[c] for sm, c in zip(softmax, choice, strict=True)])
        logits = F[cands] @ system.ranker.theta[0]
        np.add.at(exact, cands, p_set * np.exp(logits) / np.exp(logits).sum())
    decisions = [system.act(F, rng) for _ in range(2000)]
    np.testing.assert_allclose(np.mean([d.probs for d in decisions], axis=0), exact, atol=0.01)
    np.testing.assert_allclose(np.bincount([d.action for d in decisions], minlength=6) / 2000, exact, atol=0.03)
    assert not np.allclose(exact, exact[0])  # the test is not about a uniform distribution


def test_forged_decision_info_is_rejected_and_changes_nothing() -> None:
    env = LinearBandit(8, 4, noise=0.1, seed=4)
    system = TwoStage(8, 4, n_nominators=2, nominator="pg", reward_range=None)
    play(system, env, 20)
    x = env.rounds(1, np.random.default_rng(3)).contexts[0]
    d = system.act(x, np.random.default_rng(0))
    before = system.state_dict()
    other = int(next(a for a in range(8) if system.position[0, a] >= 0 and a != d.info["candidates"][0]))
    bad_infos = {
        "missing": {k: v for k, v in d.info.items() if k != "slot"},
        "foreign-candidate": {**d.info, "candidates": np.array([system.pools[1][0], system.pools[0][0]])},
        "slot-out-of-range": {**d.info, "slot": 2},
        "ranker-probs": {**d.info, "ranker_probs": np.array([0.7, 0.7])},
        "nominator-probs-nan": {**d.info, "nominator_probs": np.full_like(d.info["nominator_probs"], np.nan)},
        "float-candidates": {**d.info, "candidates": d.info["candidates"].astype(float)},
        "action-not-served": {
            **d.info,
            "candidates": np.array([other, d.info["candidates"][1]]),
            "slot": 1 - d.info["slot"],
        },
    }
    for label, info in bad_infos.items():
        with pytest.raises(InputError):
            system.learn(x, Decision(action=d.action, probs=d.probs, info=info), 0.5)
            pytest.fail(label)
    after = system.state_dict()
    for key, value in before["state"].items():
        np.testing.assert_array_equal(value, after["state"][key])


def test_restricted_decisions_run_each_stage_on_the_allowed_items_and_stay_learnable() -> None:
    """``act(..., allowed=)``: nominators propose among their pool's allowed items (a pool with none
    proposes as usual), the ranker serves only allowed candidates — against the exact sum over
    candidate pairs — and the decision's ``info`` is accepted by ``learn`` (the service learns from it)."""
    g = np.random.default_rng(11)
    system = TwoStage(6, 3, n_nominators=2, nominator="pg", ranker="pg", pools=[[0, 1, 2], [3, 4, 5]],
                      feature_sets=[[0, 1], [1, 2]], n_prob_samples=20_000, reward_range=None)  # fmt: skip
    for _ in range(30):  # spread the parameters so that every distribution is far from uniform
        x = g.normal(size=(6, 3))
        d = system.act(x, g)
        system.learn(x, d, float(g.normal()))
    x = g.normal(size=(6, 3))
    assert_same = np.testing.assert_array_equal
    full = system.act(x, np.random.default_rng(1))
    same = system.act(x, np.random.default_rng(1), allowed=np.ones(6, dtype=bool))
    assert_same(full.probs, same.probs)  # everything allowed: the unrestricted decision, bit for bit
    for allowed in ([True, False, True, False, False, False], [False, True, False, True, True, False]):
        mask = np.array(allowed)
        pools = []
        for scores, pool in zip(system.nominator_scores(x), system.pools, strict=True):
            keep = mask[pool] if mask[pool].any() else np.ones(len(pool), dtype=bool)
            p = np.where(keep, np.exp(scores - scores.max()), 0.0)
            pools.append(dict(zip(pool.tolist(), p / p.sum(), strict=True)))
        ranker = {a: float(system.ranker.scores(x[[a]], np.zeros(1, dtype=np.int64))[0]) for a in range(6)}
        exact = np.zeros(6)
        for c0, p0 in pools[0].items():
            for c1, p1 in pools[1].items():
                served = [c for c in (c0, c1) if mask[c]]
                w = np.exp([ranker[c] for c in served])
                for c, r in zip(served, w / w.sum(), strict=True):
                    exact[c] += p0 * p1 * r
        d = system.act(x, np.random.default_rng(2), allowed=mask)
        assert np.all(d.probs[~mask] == 0) and mask[d.action]
        np.testing.assert_allclose(d.probs, exact, atol=0.01)
        system.learn(x, d, 0.5)  # its info is the stages' own draws: accepted
