"""The budget machinery: Zhou et al.'s threshold, the online knapsack pacer (never over budget) and the 0/1 knapsack."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.core.validation import InputError
from banditroute.costaware.knapsack import ABSTAIN, KnapsackPacer, best_subset, ratio_bounds, threshold


def test_threshold_runs_from_L_to_U_continuously_and_monotonically() -> None:
    L, U = 2.0, 50.0
    z0 = 1 / (1 + math.log(U / L))
    z = np.linspace(0, 1, 2001)
    psi = threshold(z, L, U)
    assert psi[0] == L and psi[-1] == pytest.approx(U)
    assert np.all(psi[z <= z0] == L)
    assert np.all(np.diff(psi) >= -1e-12)
    assert float(threshold(z0 + 1e-9, L, U)) == pytest.approx(L, rel=1e-6)  # continuous at the kink
    assert float(threshold(1.7, L, U)) == pytest.approx(U)  # z is clipped
    assert np.all(threshold(z, 3.0, 3.0) == 3.0)


@st.composite
def streams(draw: st.DrawFn) -> tuple[float, int, np.ndarray, np.ndarray, np.ndarray, float, float]:
    Q = draw(st.integers(1, 40))
    M = draw(st.integers(1, 5))
    n_bins = draw(st.integers(1, Q))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-6, 1.0, 1e3]))
    costs = scale * rng.exponential(1.0, (Q, M)) * (rng.random((Q, M)) > 0.1)  # some free calls
    values = rng.uniform(-0.2, 1.0, (Q, M))
    actual = costs * rng.uniform(0.0, 1.0, (Q, M))  # actual <= the admission bound
    budget = draw(st.floats(1e-3, 3.0)) * scale * Q
    L = draw(st.floats(1e-3, 10.0)) / scale
    U = L * draw(st.floats(1.0, 1e4))
    return budget, n_bins, values, costs, actual, L, U


@settings(max_examples=150, deadline=None)
@given(streams())
def test_knapsack_threshold_never_lets_spend_exceed_the_budget(case) -> None:  # type: ignore[no-untyped-def]
    budget, n_bins, values, costs, actual, L, U = case
    pacer = KnapsackPacer(budget, len(values), n_bins, L, U)
    spent = 0.0
    for v, c, a in zip(values, costs, actual, strict=True):
        bin_left_before = pacer.bin_remaining
        arm = pacer.choose(v, c * 0.5, upper=c)  # estimates below the bound, as a predictor might give
        if arm == ABSTAIN:
            # abstaining is only allowed when even the cheapest call does not fit
            assert c.min() > pacer.remaining
            pacer.charge(0.0)
            continue
        eligible = pacer.eligible(v, c * 0.5, upper=c)
        if eligible.any():
            assert eligible[arm] and c[arm] <= bin_left_before
        spent += a[arm]
        pacer.charge(a[arm])
        assert pacer.spent <= budget * (1 + 1e-12)
    assert spent <= budget * (1 + 1e-12)


def test_pacer_picks_the_highest_value_eligible_llm_and_falls_back_to_the_cheapest() -> None:
    pacer = KnapsackPacer(budget=10.0, horizon=10, n_bins=1, L=1.0, U=100.0)
    # z = 0: everything with ratio >= L = 1 is eligible; the most valuable wins
    assert pacer.choose(np.array([0.9, 0.5, 0.2]), np.array([0.5, 0.1, 0.1])) == 0
    pacer.charge(9.5)  # z = 0.95: Ψ close to U
    assert pacer.choose(np.array([0.9, 0.5]), np.array([0.4, 0.2])) == 1  # nothing eligible -> cheapest
    assert pacer.choose(np.array([0.9, 0.5]), np.array([0.8, 0.6])) == ABSTAIN  # nothing fits the 0.5 left


def test_pacer_rolls_unspent_budget_over_to_later_bins() -> None:
    pacer = KnapsackPacer(budget=4.0, horizon=4, n_bins=4, L=1.0, U=10.0)
    assert pacer.bin_budget == pytest.approx(1.0)
    pacer.charge(0.0)  # bin 0 spends nothing
    assert pacer.current_bin == 1 and pacer.bin_budget == pytest.approx(2.0)
    pacer.charge(2.0)
    assert pacer.bin_budget == pytest.approx(1.0)  # bin 2: 2 left, minus bin 3's nominal 1
    pacer.charge(0.5)
    assert pacer.bin_budget == pytest.approx(1.5)  # the last bin takes everything left


def test_ratio_bounds_are_quantiles_of_positive_ratios() -> None:
    v = np.array([[1.0, 2.0], [0.0, 4.0]])
    c = np.array([[1.0, 1.0], [1.0, 0.0]])
    L, U = ratio_bounds(v, c, quantile=0.0)
    assert (L, U) == (1.0, 2.0)  # zero value / zero cost pairs are ignored
    with pytest.raises(InputError):
        ratio_bounds(np.zeros(3), np.ones(3))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget": 0.0},
        {"budget": float("nan")},
        {"horizon": 0},
        {"n_bins": 11},
        {"L": 2.0, "U": 1.0},
        {"L": 0.0},
    ],
)
def test_pacer_rejects_bad_configuration(kwargs: dict[str, float]) -> None:
    args = {"budget": 1.0, "horizon": 10, "n_bins": 2, "L": 1.0, "U": 2.0, **kwargs}
    with pytest.raises(InputError):
        KnapsackPacer(**args)  # type: ignore[arg-type]


def test_pacer_rejects_bad_calls_and_changes_nothing() -> None:
    pacer = KnapsackPacer(1.0, 2, 1, 1.0, 2.0)
    for v, c, u in [
        (np.ones(2), np.ones(3), None),
        (np.ones(2), -np.ones(2), None),
        (np.ones(2), np.ones(2), np.zeros(2)),  # bound below the estimate
        (np.array([np.nan, 1.0]), np.ones(2), None),
    ]:
        with pytest.raises(InputError):
            pacer.choose(v, c, u)
    with pytest.raises(InputError):
        pacer.charge(-1.0)
    assert pacer.t == 0 and pacer.spent == 0.0
    pacer.charge(0.1)
    pacer.charge(0.1)
    with pytest.raises(InputError, match="horizon"):
        pacer.charge(0.1)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 7), st.integers(0, 2**32 - 1), st.floats(0.0, 5.0))
def test_best_subset_matches_brute_force(M: int, seed: int, capacity: float) -> None:
    rng = np.random.default_rng(seed)
    v = rng.uniform(-0.5, 1.0, M)
    w = rng.uniform(0.0, 2.0, M)
    chosen = best_subset(v, w, capacity)
    best = 0.0
    for r in range(M + 1):
        for subset in itertools.combinations(range(M), r):
            if w[list(subset)].sum() <= capacity:
                best = max(best, v[list(subset)].sum())
    assert v[chosen].sum() == pytest.approx(best)
    assert w[chosen].sum() <= capacity
    assert np.all(np.diff(v[chosen]) <= 0)  # in value order


def test_best_subset_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        best_subset(np.ones(3), np.ones(2), 1.0)
    with pytest.raises(InputError):
        best_subset(np.ones(17), np.ones(17), 1.0)
    with pytest.raises(InputError):
        best_subset(np.ones(2), -np.ones(2), 1.0)
