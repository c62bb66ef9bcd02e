"""Off-policy estimators against slow reference code, unbiasedness, shard additivity, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtri

from banditroute.core.types import EnvSpec
from banditroute.core.validation import InputError
from banditroute.envs.lowrank import LowRankExperts
from banditroute.ope import ESTIMATORS, BanditLog, Moments, OPEAccumulator, collect_log, evaluate, target_probs
from banditroute.ope.estimators import DEFAULT_SHRINK, DEFAULT_TAU
from banditroute.ope.reward_model import RidgeRewardModel, cross_fit
from banditroute.policies.registry import make_policy

M, D = 4, 6


def random_log(rng: np.random.Generator, n: int = 400, allowed: bool = False) -> tuple[BanditLog, np.ndarray]:
    """A log from an arbitrary stochastic behaviour, and an arbitrary stochastic target on it."""
    X = rng.normal(size=(n, D))
    mask = rng.random((n, M)) < 0.8 if allowed else np.ones((n, M), dtype=bool)
    mask[np.arange(n), rng.integers(M, size=n)] = True
    beh = rng.dirichlet(np.ones(M), size=n) * mask
    beh /= beh.sum(axis=1, keepdims=True)
    actions = np.array([rng.choice(M, p=p) for p in beh])
    rewards = rng.random(n)
    tgt = rng.dirichlet(np.ones(M), size=n) * mask
    tgt /= tgt.sum(axis=1, keepdims=True)
    return BanditLog(X, actions, beh, rewards, allowed=mask if allowed else None), tgt


def reference_value(name: str, log: BanditLog, tgt: np.ndarray, q: np.ndarray) -> float:
    """Row-by-row textbook formulas (Dudík et al. 2011; Wang et al. 2017; Su et al. 2020)."""
    terms, weights = [], []
    for i in range(log.n):
        a, r = int(log.actions[i]), float(log.rewards[i])
        w = tgt[i, a] / log.probs[i, a]
        dm = sum(tgt[i, b] * q[i, b] for b in range(M))
        terms.append(
            {
                "ips": w * r,
                "snips": w * r,
                "dm": dm,
                "dr": dm + w * (r - q[i, a]),
                "switch-dr": dm + (w * (r - q[i, a]) if w <= DEFAULT_TAU else 0.0),
                "dr-os": dm + DEFAULT_SHRINK * w / (w * w + DEFAULT_SHRINK) * (r - q[i, a]),
            }[name]
        )
        weights.append(w)
    return sum(terms) / sum(weights) if name == "snips" else sum(terms) / log.n


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimators_match_reference_formulas(name: str, rng: np.random.Generator) -> None:
    log, tgt = random_log(rng, allowed=True)
    q = rng.random((log.n, M))
    got = evaluate(log, tgt, estimators=(name,), q_hat=q, n_boot=10)[name]
    assert got.value == pytest.approx(reference_value(name, log, tgt, q), rel=1e-12)
    assert got.n == log.n


def test_normal_and_el_intervals_match_their_closed_forms(rng: np.random.Generator) -> None:
    log, tgt = random_log(rng)
    est = evaluate(log, tgt, estimators=("ips", "snips"), n_boot=10, alpha=0.1)
    w = tgt[np.arange(log.n), log.actions] / log.propensities
    g = w * log.rewards
    z = ndtri(0.95)
    lo, hi = est["ips"].intervals["normal"]
    assert (lo + hi) / 2 == pytest.approx(g.mean()) and (hi - lo) / 2 == pytest.approx(
        z * g.std(ddof=1) / np.sqrt(log.n)
    )
    v = g.sum() / w.sum()  # SNIPS: delta method on g - V w
    lo, hi = est["snips"].intervals["normal"]
    assert (hi - lo) / 2 == pytest.approx(z * (g - v * w).std(ddof=1) / np.sqrt(log.n) / w.mean())
    C = np.cov(np.stack([w, g]), bias=True)  # Euclidean likelihood with E[w] = 1: control variate
    centre = g.mean() - C[0, 1] / C[0, 0] * (w.mean() - 1)
    half = z * np.sqrt((C[1, 1] - C[0, 1] ** 2 / C[0, 0]) / log.n)
    assert est["ips"].intervals["el"] == pytest.approx((centre - half, centre + half))
    assert est["ips"].intervals["el"] == est["snips"].intervals["el"]  # the same moment problem


def test_shards_add_up_to_the_whole(rng: np.random.Generator) -> None:
    log, tgt = random_log(rng, n=600)
    q = rng.random((log.n, M))
    names = tuple(ESTIMATORS)
    whole = OPEAccumulator(names, np.random.default_rng(1), n_boot=20)
    whole.update(log, tgt, q)
    parts = []
    for k, idx in enumerate(np.array_split(np.arange(log.n), 3)):
        acc = OPEAccumulator(names, np.random.default_rng(100 + k), n_boot=20)
        acc.update(log.subset(idx), tgt[idx], q[idx])
        parts.append(acc)
    merged = parts[0] + parts[1] + parts[2]
    a, b = whole.results(), merged.results()
    for name in names:
        assert b[name].n == log.n
        assert b[name].value == pytest.approx(a[name].value, rel=1e-12)
        assert b[name].std_error == pytest.approx(a[name].std_error, rel=1e-9)
        assert b[name].intervals["el"] == pytest.approx(a[name].intervals["el"], rel=1e-9)
        boot = merged.moments[name].boot  # replicate sums add: each shard's weights, summed
        assert np.allclose(boot, sum(p.moments[name].boot for p in parts))


def test_moments_merge_like_one_pass() -> None:
    z = np.random.default_rng(3).normal(size=(101, 2)) * [1.0, 1e6] + [1.0, 1e9]  # large offsets: stable merge
    ones = np.ones((101, 1))
    whole = Moments.of(z[:, 0], z[:, 1], ones)
    merged = Moments.of(z[:40, 0], z[:40, 1], ones[:40]) + Moments.of(z[40:, 0], z[40:, 1], ones[40:])
    assert merged.n == 101
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-14)
    np.testing.assert_allclose(merged.comoment, whole.comoment, rtol=1e-10)
    assert Moments.empty(1) + whole is whole


def test_ips_and_dr_are_unbiased_and_dm_is_not_when_the_model_is_wrong() -> None:
    env = LowRankExperts(M, D, 2, queries="clustered", query_noise=0.5, reward_noise="bernoulli", seed=4)
    target = make_policy("fixed", env.spec, arm=1)
    behaviour = make_policy("uniform", env.spec)
    errors: dict[str, list[float]] = {"ips": [], "dr": [], "dm": []}
    for seed in range(40):
        log, expected = collect_log(env, behaviour, 500, np.random.default_rng(seed))
        tgt = target_probs(target, log, np.random.default_rng(0))
        truth = float((tgt * expected).sum(axis=1).mean())
        q_bad = np.full((log.n, M), 0.9)  # a badly wrong reward model
        est = evaluate(log, tgt, estimators=("ips", "dr", "dm"), q_hat=q_bad, n_boot=5, seed=seed)
        for name in errors:
            errors[name].append(est[name].value - truth)
    for name in ("ips", "dr"):
        assert abs(np.mean(errors[name])) < 3 * np.std(errors[name]) / np.sqrt(40) + 1e-3
    assert np.mean(errors["dm"]) > 0.2


def test_cross_fitted_ridge_learns_a_linear_reward(rng: np.random.Generator) -> None:
    X = rng.normal(size=(2000, D))
    theta = rng.normal(size=(M, D)) * 0.1
    actions = rng.integers(M, size=2000)
    rewards = np.clip(0.5 + np.einsum("nd,nd->n", X, theta[actions]), 0, 1)
    log = BanditLog(X, actions, np.full((2000, M), 1 / M), rewards)
    q = cross_fit(log, folds=2)
    truth = np.clip(0.5 + X @ theta.T, 0, 1)
    assert np.abs(q - truth).mean() < 0.02
    with pytest.raises(InputError, match="not fitted"):
        RidgeRewardModel(M).predict(X)


# ---------------------------------------------------------------------- bad input
def test_bad_logs_are_rejected(rng: np.random.Generator) -> None:
    X, a, p, r = rng.normal(size=(5, D)), np.zeros(5, dtype=int), np.full((5, M), 1 / M), np.full(5, 0.5)
    BanditLog(X, a, p, r)
    zero = p.copy()
    zero[:, 0], zero[:, 1] = 0.0, 0.5
    cases = [
        ({"contexts": X[:4]}, "rows"),
        ({"contexts": np.where(X > 0, np.nan, X)}, "NaN"),
        ({"actions": np.full(5, M)}, "unknown arm"),
        ({"probs": p * 2}, "sum to one"),
        ({"probs": zero}, "positive probability"),
        ({"rewards": np.full(5, 1.5)}, "reward"),
        ({"allowed": np.zeros((5, M), dtype=bool)}, "outside its allowed"),
        ({"allowed": np.ones((5, M))}, "boolean"),
    ]
    for change, msg in cases:
        args = {"contexts": X, "actions": a, "probs": p, "rewards": r} | change
        with pytest.raises(InputError, match=msg):
            BanditLog(**args)


def test_bad_targets_and_configs_are_rejected(rng: np.random.Generator) -> None:
    log, tgt = random_log(rng, n=50, allowed=True)
    with pytest.raises(InputError, match="shape"):
        evaluate(log, tgt[:, :2], estimators=("ips",))
    with pytest.raises(InputError, match="NaN"):
        evaluate(log, np.full_like(tgt, np.nan), estimators=("ips",))
    outside = np.where(log.allowed, 0.0, 1.0)
    outside /= np.maximum(outside.sum(axis=1, keepdims=True), 1)
    rows = outside.sum(axis=1) > 0
    with pytest.raises(InputError, match="not allowed"):
        evaluate(log.subset(rows), outside[rows], estimators=("ips",))
    with pytest.raises(InputError, match="unknown or repeated"):
        evaluate(log, tgt, estimators=("ips", "magic"))
    with pytest.raises(InputError, match="non-empty"):
        evaluate(log, tgt, estimators=())
    acc = OPEAccumulator(("dr",), np.random.default_rng(0))
    with pytest.raises(InputError, match="q_hat is required"):
        acc.update(log, tgt)
    with pytest.raises(InputError, match="q_hat must be"):
        acc.update(log, tgt, np.full((log.n, M), np.inf))
    assert acc.n == 0  # rejected updates changed nothing
    with pytest.raises(InputError, match="same estimators"):
        acc + OPEAccumulator(("ips",), np.random.default_rng(0))
    with pytest.raises(InputError, match="params given"):
        OPEAccumulator(("ips",), np.random.default_rng(0), params={"dr": 1.0})
    with pytest.raises(InputError, match="alpha"):
        evaluate(log, tgt, estimators=("ips",), alpha=0.0)
    with pytest.raises(InputError, match="interval"):
        evaluate(log, tgt, estimators=("ips",), intervals=("wald",))
    with pytest.raises(InputError, match="shards"):
        log.shards(log.n + 1)
    with pytest.raises(InputError, match="policy is for"):
        target_probs(make_policy("uniform", EnvSpec(M + 1, D)), log, rng)
