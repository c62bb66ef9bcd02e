"""Regret decomposition (total = nominator + ranker every round), the random-agent baseline, and the
synthetic acceptance claims: two stages beat the misspecified single stage; the nominators' share of
regret falls as N grows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from banditroute.core.types import EnvSpec
from banditroute.envs.linear import LinearBandit
from banditroute.policies.registry import make_policy
from banditroute.twostage.regret import DecompositionError, RegretTrace, decompose, run_regret
from banditroute.twostage.system import TwoStage

M, D, S, T = 100, 20, 8, 1000  # s = ⌊0.4 d⌋: misspecified nominators


def system(N: int, seed: int = 0, **kw: Any) -> Callable[[EnvSpec], TwoStage]:
    def factory(spec: EnvSpec) -> TwoStage:
        return TwoStage(
            spec.n_arms, spec.dim, n_nominators=N, n_features=S, allocation_seed=seed, reward_range=None, **kw
        )

    return factory


def linear(seed: int) -> LinearBandit:
    return LinearBandit(M, D, noise=0.1, seed=seed)


def test_decompose_checks_the_identity_and_the_signs() -> None:
    assert decompose(1.0, 0.75, 0.5) == (0.5, 0.25, 0.25)
    with pytest.raises(DecompositionError):
        decompose(1.0, 0.5, 0.75)  # served an item better than every candidate: not a candidate
    with pytest.raises(DecompositionError):
        decompose(1.0, 1.5, 0.5)  # a candidate better than the best item


def test_every_round_splits_into_nominator_and_ranker_regret() -> None:
    trace = run_regret(system(4, nominator="pg", ranker="greedy"), linear, 200, seed=3)
    np.testing.assert_allclose(trace.total, trace.nominator + trace.ranker, atol=1e-12)
    assert np.all(trace.nominator >= -1e-12) and np.all(trace.ranker >= -1e-12)
    assert trace.nominator.sum() > 0 and trace.ranker.sum() > 0
    summary = trace.summary()
    assert summary["regret"] == pytest.approx(summary["nominator"] + summary["ranker"])


def test_random_agent_regret_is_its_exact_expectation_on_the_same_rounds() -> None:
    env = linear(1)
    trace = run_regret(lambda spec: make_policy("uniform", spec), env, 3000, seed=1)
    assert np.all(trace.nominator == 0)  # a single-stage policy: the candidate set is every item
    rounds = env.rounds(3000, np.random.default_rng(np.random.SeedSequence(1).spawn(2)[0]))
    np.testing.assert_allclose(trace.random, rounds.expected.max(axis=1) - rounds.expected.mean(axis=1))
    assert trace.summary()["relative"] == pytest.approx(1.0, abs=0.03)


def test_relative_regret_of_an_empty_trace_part() -> None:
    zeros = np.zeros(3)
    assert np.isnan(RegretTrace(0, zeros, zeros, zeros, zeros).summary()["relative"])


def test_two_stage_beats_the_misspecified_single_stage_and_nominator_share_falls_with_n() -> None:
    """Fixed seed 0, UCB + UCB, |A| = 100, d = 20, s = 8, T = 1000 (the spec's setting and tuning)."""
    runs = {N: run_regret(system(N), linear, T, seed=0).summary() for N in (1, 2, 5, 10)}
    assert runs[1]["ranker"] == 0  # single stage: one candidate, served as is
    for N in (2, 5, 10):
        assert runs[N]["regret"] < runs[1]["regret"]
    shares = [runs[N]["nominator"] / runs[N]["regret"] for N in (2, 5, 10)]
    assert shares[0] > shares[1] > shares[2]
    assert runs[10]["relative"] < 0.5 * runs[1]["relative"]
