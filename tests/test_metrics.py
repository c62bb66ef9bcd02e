"""Metrics on small hand-computed arrays, plus the CI's coverage and the regret/gap identity."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.simulate.metrics import (
    cumulative_regret,
    final_mean,
    final_window,
    instant_regret,
    mean_ci,
    moving_average,
    routing_shares,
    run_metrics,
    suboptimality_gap,
)

# Three rounds, three arms: expected reward of every arm, the policy's distribution, its choice.
EXPECTED = np.array([[0.2, 0.9, 0.5], [0.6, 0.1, 0.3], [0.4, 0.4, 1.0]])
PROBS = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
ACTIONS = np.array([0, 0, 1])
BEST = np.array([0.9, 0.6, 1.0])
CHOSEN = np.array([0.2, 0.6, 0.4])
VALUE = np.array([0.55, 0.6, 0.7])  # Σ_m π(m) E[r_m]: 0.1+0.45, 0.6, 0.1+0.1+0.5


def test_hand_arrays_are_consistent() -> None:
    np.testing.assert_allclose(EXPECTED.max(axis=1), BEST)
    np.testing.assert_allclose(EXPECTED[np.arange(3), ACTIONS], CHOSEN)
    np.testing.assert_allclose((PROBS * EXPECTED).sum(axis=1), VALUE)


def test_regret_against_per_context_oracle() -> None:
    np.testing.assert_allclose(instant_regret(BEST, CHOSEN), [0.7, 0.0, 0.6])
    np.testing.assert_allclose(cumulative_regret(BEST, CHOSEN), [0.7, 0.7, 1.3])
    # Seeds along axis 0: cumulative along time only.
    two = cumulative_regret(np.stack([BEST, BEST]), np.stack([CHOSEN, BEST]))
    np.testing.assert_allclose(two, [[0.7, 0.7, 1.3], [0.0, 0.0, 0.0]])


def test_suboptimality_gap_uses_the_distribution_not_the_draw() -> None:
    np.testing.assert_allclose(suboptimality_gap(BEST, VALUE), [0.35, 0.0, 0.3])


def test_gap_equals_instant_regret_for_one_hot_policies() -> None:
    """Deterministic policy: E_π[r] is the chosen arm's expected reward, so Σ gap = regret exactly."""
    onehot = np.eye(3)[ACTIONS]
    value = (onehot * EXPECTED).sum(axis=1)
    np.testing.assert_array_equal(suboptimality_gap(BEST, value), instant_regret(BEST, CHOSEN))
    np.testing.assert_allclose(np.cumsum(suboptimality_gap(BEST, value)), cumulative_regret(BEST, CHOSEN))


def test_expected_regret_equals_summed_gap() -> None:
    """E[R_T] = Σ_t g_t: drawing actions from PROBS many times, the mean regret matches the gap."""
    rng = np.random.default_rng(0)
    n = 200_000
    u = rng.random((n, 3, 1))
    actions = (u >= np.cumsum(PROBS, axis=1)).sum(axis=-1)  # (n, 3) draws from each row of PROBS
    chosen = EXPECTED[np.arange(3), actions]
    regret = cumulative_regret(BEST, chosen)[:, -1]
    gap_total = suboptimality_gap(BEST, VALUE).sum()
    assert abs(regret.mean() - gap_total) < 4 * regret.std() / np.sqrt(n)


def test_final_window() -> None:
    assert final_window(10) == 1
    assert final_window(15) == 2  # ceil(1.5)
    assert final_window(100, 0.25) == 25
    assert final_window(7, 0.0) == 1  # at least one round
    assert final_window(7, 1.0) == 7
    with pytest.raises(InputError):
        final_window(0)
    with pytest.raises(InputError):
        final_window(10, 1.5)


def test_final_mean() -> None:
    x = np.arange(20, dtype=float)
    assert final_mean(x) == pytest.approx(18.5)  # last 2 of 20
    np.testing.assert_allclose(final_mean(np.stack([x, 2 * x]), 0.5), [14.5, 29.0])


def test_moving_average_matches_a_loop() -> None:
    x = np.random.default_rng(1).random((2, 37))
    for window in (1, 5, 37, 50):
        ref = np.array([[row[max(0, t - window + 1) : t + 1].mean() for t in range(37)] for row in x])
        np.testing.assert_allclose(moving_average(x, window), ref, rtol=1e-12)
    with pytest.raises(InputError):
        moving_average(x, 0)


def test_routing_shares() -> None:
    np.testing.assert_allclose(routing_shares(np.array([0, 0, 2, 1]), 3), [0.5, 0.25, 0.25])
    per_seed = routing_shares(np.array([[0, 0], [1, 2]]), 3)
    np.testing.assert_allclose(per_seed, [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    with pytest.raises(InputError, match="actions"):
        routing_shares(np.array([0, 3]), 3)


def test_mean_ci_hand_value() -> None:
    # mean 2, sample sd 1, t_{0.975, 2} = 4.302652729911275 -> half = 4.3027 / sqrt(3).
    mean, half = mean_ci(np.array([1.0, 2.0, 3.0]))
    assert mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302652729911275 / np.sqrt(3))
    m, h = mean_ci(np.array([[1.0, 5.0], [3.0, 5.0]]), confidence=0.9)  # per column; t_{0.95,1} = 6.3138
    np.testing.assert_allclose(m, [2.0, 5.0])
    np.testing.assert_allclose(h, [6.313751514675043, 0.0])  # sd sqrt(2), n 2
    m1, h1 = mean_ci(np.array([4.0]))
    assert m1 == 4.0 and np.isnan(h1)
    with pytest.raises(InputError):
        mean_ci(np.array([]))
    with pytest.raises(InputError):
        mean_ci(np.array([1.0, 2.0]), confidence=2.0)


def test_mean_ci_coverage() -> None:
    """The Student-t interval covers the true mean ~95% of the time with 5 samples."""
    rng = np.random.default_rng(2)
    samples = rng.normal(3.0, 2.0, size=(5, 20_000))
    mean, half = mean_ci(samples)
    coverage = np.mean(np.abs(mean - 3.0) <= half)
    assert 0.94 < coverage < 0.96
    half_z = 1.96 * samples.std(axis=0, ddof=1) / np.sqrt(5)  # the normal interval under-covers
    assert np.mean(np.abs(mean - 3.0) <= half_z) < 0.9


def test_run_metrics() -> None:
    best, chosen, value = np.stack([BEST, BEST]), np.stack([CHOSEN, BEST]), np.stack([VALUE, BEST])
    reward = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    out = run_metrics(best, chosen, value, reward, final_fraction=0.5)  # final window: last 2 rounds
    np.testing.assert_allclose(out["regret"], [1.3, 0.0])
    np.testing.assert_allclose(out["gap"], [0.65 / 3, 0.0])
    np.testing.assert_allclose(out["final_gap"], [0.15, 0.0])
    np.testing.assert_allclose(out["reward"], [2 / 3, 0.0])
