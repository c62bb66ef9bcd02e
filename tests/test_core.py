"""Core numerics and contracts: validation error paths, sampling, softmax, tie-breaking, inverse updates, decisions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from banditroute.core.linalg import sherman_morrison, woodbury
from banditroute.core.sampling import argmax_uniform, mix_uniform, sample_categorical, softmax
from banditroute.core.types import BatchDecision, Decision
from banditroute.core.validation import (
    InputError,
    check_actions,
    check_context,
    check_contexts,
    check_generator,
    check_int,
    check_positive,
    check_probs,
    check_rewards,
    check_unit_interval,
)

M, D = 3, 4
NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------------------------------- validation
def test_input_error_is_a_value_error() -> None:
    assert issubclass(InputError, ValueError)


def test_check_generator() -> None:
    g = np.random.default_rng(0)
    assert check_generator(g) is g
    for bad in (np.random.RandomState(0), 0, None, np.random):
        with pytest.raises(InputError, match=r"numpy\.random\.Generator"):
            check_generator(bad)


def test_check_context_accepts_shared_and_per_arm() -> None:
    assert check_context([1, 2, 3, 4], M, D).dtype == np.float64
    assert check_context(np.ones((M, D)), M, D).shape == (M, D)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.ones(D + 1), "shape"),
        (np.ones((M + 1, D)), "shape"),
        (np.ones((1, D)), "shape"),
        (np.ones((1, M, D)), "shape"),
        (1.0, "shape"),
        (np.array([1.0, NAN, 0.0, 0.0]), "NaN or inf"),
        (np.array([1.0, INF, 0.0, 0.0]), "NaN or inf"),
        (np.full((M, D), -INF), "NaN or inf"),
        (["a", "b", "c", "d"], "numeric"),
        ({"x": 1}, "numeric"),
    ],
)
def test_check_context_rejects(x: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_context(x, M, D)


def test_check_contexts_accepts_shared_and_per_arm() -> None:
    assert check_contexts(np.ones((5, D)), M, D).shape == (5, D)
    assert check_contexts(np.ones((5, M, D)), M, D).shape == (5, M, D)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.ones(D), "shape"),
        (np.ones((0, D)), "n >= 1"),
        (np.ones((5, D + 1)), "shape"),
        (np.ones((5, M + 1, D)), "shape"),
        (np.ones((5, M, D, 1)), "shape"),
        (np.array([[0.0, 0.0, 0.0, NAN]]), "NaN or inf"),
        (np.array([[0.0, INF, 0.0, 0.0]]), "NaN or inf"),
        ([["a", "b", "c", "d"]], "numeric"),
    ],
)
def test_check_contexts_rejects(X: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_contexts(X, M, D)


def test_check_rewards_accepts_range_bounds_and_unbounded() -> None:
    assert check_rewards(0.0, None, (0.0, 1.0)) == 0.0
    assert check_rewards(1.0, None, (0.0, 1.0)) == 1.0
    np.testing.assert_array_equal(check_rewards([0.0, 0.5, 1.0], 3, (0.0, 1.0)), [0.0, 0.5, 1.0])
    assert check_rewards(1e6, None, None) == 1e6


@pytest.mark.parametrize(
    ("r", "n", "match"),
    [
        ([0.5], None, "scalar"),
        (0.5, 2, "shape"),
        ([0.5, 0.5, 0.5], 2, "shape"),
        (NAN, None, "NaN or inf"),
        (INF, None, "NaN or inf"),
        ([0.5, NAN], 2, "NaN or inf"),
        (-1e-9, None, "reward_range"),
        (1.0 + 1e-9, None, "reward_range"),
        ([0.5, 2.0], 2, "reward_range"),
        ("high", None, "numeric"),
    ],
)
def test_check_rewards_rejects(r: object, n: int | None, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_rewards(r, n, (0.0, 1.0))


def test_check_rewards_unbounded_still_rejects_non_finite() -> None:
    with pytest.raises(InputError, match="NaN or inf"):
        check_rewards(INF, None, None)


def test_check_actions_accepts_ints_and_integral_floats() -> None:
    assert check_actions(2, None, M) == 2
    assert check_actions(np.int32(1), None, M) == 1
    assert check_actions(2.0, None, M) == 2
    out = check_actions([0.0, 2.0], 2, M)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [0, 2])


@pytest.mark.parametrize(
    ("a", "n", "match"),
    [
        (M, None, "unknown arm"),
        (-1, None, "unknown arm"),
        ([0, M], 2, "unknown arm"),
        (1.5, None, "integer"),
        (NAN, None, "integer"),
        ("1", None, "integer"),
        (True, None, "integer"),
        ([0, 1], None, "scalar"),
        ([0, 1], 3, "shape"),
        (0, 1, "shape"),
    ],
)
def test_check_actions_rejects(a: object, n: int | None, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_actions(a, n, M)


def test_check_probs_accepts_within_tolerance() -> None:
    check_probs([0.2, 0.3, 0.5 + 1e-7], None, M)
    check_probs(np.full((2, M), 1 / M), 2, M)


@pytest.mark.parametrize(
    ("p", "n", "match"),
    [
        ([0.5, 0.5], None, "shape"),
        (np.full((2, M), 1 / M), None, "shape"),
        (np.full(M, 1 / M), 2, "shape"),
        ([0.5, 0.5, NAN], None, "NaN or inf"),
        ([1.5, -0.5, 0.0], None, "non-negative"),
        ([0.3, 0.3, 0.3], None, "sum to one"),
        ([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0]], 2, "sum to one"),
    ],
)
def test_check_probs_rejects(p: object, n: int | None, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_probs(p, n, M)


def test_check_positive() -> None:
    assert check_positive("2.5", "lam") == 2.5
    assert check_positive(0, "alpha", allow_zero=True) == 0.0
    for bad in (0, -1, NAN, INF, "abc", None, [1.0]):
        with pytest.raises(InputError, match="lam"):
            check_positive(bad, "lam")
    with pytest.raises(InputError, match=">= 0"):
        check_positive(-1e-12, "alpha", allow_zero=True)


def test_check_int() -> None:
    assert check_int(3, "T") == 3
    assert check_int(np.int64(3), "T") == 3
    assert check_int(0, "arm", minimum=0) == 0
    for bad in (0, -2, True, 3.0, "3", None):
        with pytest.raises(InputError, match="T must be an integer >= 1"):
            check_int(bad, "T")


def test_check_unit_interval() -> None:
    assert check_unit_interval(0, "eps") == 0.0
    assert check_unit_interval(1, "eps") == 1.0
    for bad in (-0.1, 1.0 + 1e-12, NAN, "x"):
        with pytest.raises(InputError, match="eps"):
            check_unit_interval(bad, "eps")


# ---------------------------------------------------------------------------------------- sampling
def test_sample_categorical_frequencies_match_probs() -> None:
    probs = np.array([0.1, 0.2, 0.0, 0.3, 0.4])
    n = 20_000
    draws = sample_categorical(np.tile(probs, (n, 1)), np.random.default_rng(7))
    counts = np.bincount(draws, minlength=probs.size)
    assert counts[2] == 0  # a zero-probability arm is never drawn
    support = probs > 0
    _, p_value = stats.chisquare(counts[support], n * probs[support])
    assert p_value > 1e-3


def test_sample_categorical_batch_equals_row_by_row_with_same_seed() -> None:
    """One uniform per decision: a batch consumes the generator exactly like sequential draws."""
    probs = softmax(np.random.default_rng(0).normal(size=(50, 4)))
    batch = sample_categorical(probs, np.random.default_rng(3))
    g = np.random.default_rng(3)
    rows = [int(sample_categorical(p, g)) for p in probs]
    np.testing.assert_array_equal(batch, rows)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(0.0, 10.0)), st.integers(0, 2**32 - 1))
def test_sample_categorical_draws_only_supported_arms(weights: np.ndarray, seed: int) -> None:
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    probs = np.tile(weights / weights.sum(), (16, 1))
    draws = sample_categorical(probs, np.random.default_rng(seed))
    assert draws.dtype == np.int64
    assert np.all((draws >= 0) & (draws < weights.size))
    assert np.all(probs[0, draws] > 0)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # 1e308 - (-1e308) -> -inf, by design
def test_softmax_survives_huge_logits() -> None:
    np.testing.assert_array_equal(softmax(np.array([1e300, -1e300, 0.0])), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(softmax(np.array([1e300, 1e300])), [0.5, 0.5])
    np.testing.assert_array_equal(softmax(np.array([-1e300, -1e300, -1e300, -1e300])), [0.25] * 4)
    out = softmax(np.array([[1e308, -1e308], [-1e308, 1e308]]))
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 1.0]])


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)), elements=st.floats(-1e300, 1e300)))
def test_softmax_is_always_a_distribution(logits: np.ndarray) -> None:
    p = softmax(logits)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    # the largest logit always gets the largest probability
    np.testing.assert_array_equal(p[np.arange(p.shape[0]), logits.argmax(-1)], p.max(-1))


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 6), elements=st.floats(-30, 30)),
    st.floats(-1e3, 1e3),
)
def test_softmax_matches_definition_and_is_shift_invariant(logits: np.ndarray, shift: float) -> None:
    reference = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(softmax(logits), reference, rtol=1e-12)
    np.testing.assert_allclose(softmax(logits + shift), reference, rtol=1e-9)


def test_argmax_uniform_splits_ties() -> None:
    np.testing.assert_array_equal(argmax_uniform(np.array([1.0, 3.0, 3.0])), [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(argmax_uniform(np.zeros(4)), [0.25] * 4)
    np.testing.assert_array_equal(argmax_uniform(np.array([[2.0, 1.0], [5.0, 5.0]])), [[1.0, 0.0], [0.5, 0.5]])
    # near-ties within the relative tolerance count as ties, clear gaps do not
    np.testing.assert_array_equal(argmax_uniform(np.array([1e6, 1e6 * (1 - 1e-14)])), [0.5, 0.5])
    np.testing.assert_array_equal(argmax_uniform(np.array([1.0, 1.0 - 1e-9])), [1.0, 0.0])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=st.sampled_from([-1.0, 0.0, 0.5, 2.0])))
def test_argmax_uniform_is_uniform_on_maximisers(scores: np.ndarray) -> None:
    p = argmax_uniform(scores)
    best = scores == scores.max()
    np.testing.assert_allclose(p[best], 1.0 / best.sum())
    assert np.all(p[~best] == 0.0)


def test_mix_uniform_floors_every_arm() -> None:
    p = mix_uniform(np.array([1.0, 0.0, 0.0, 0.0]), 0.2)
    np.testing.assert_allclose(p, [0.85, 0.05, 0.05, 0.05])
    np.testing.assert_array_equal(mix_uniform(np.array([0.3, 0.7]), 0.0), [0.3, 0.7])


# ---------------------------------------------------------------------------------------- inverse updates
def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_sherman_morrison_matches_direct_inverse_over_1000_updates() -> None:
    g = np.random.default_rng(11)
    d, lam = 6, 0.5
    A = lam * np.eye(d)
    A_inv = np.eye(d) / lam
    for t in range(1000):
        x = g.normal(size=d)
        before = A_inv.copy()
        A_new_inv = sherman_morrison(A_inv, x)
        np.testing.assert_array_equal(A_inv, before)  # input untouched
        A_inv = A_new_inv
        A += np.outer(x, x)
        if t % 100 == 99:
            assert _rel_err(A_inv, np.linalg.inv(A)) < 1e-8
    assert _rel_err(A_inv, np.linalg.inv(A)) < 1e-8


def test_woodbury_matches_direct_inverse_over_1000_rows() -> None:
    g = np.random.default_rng(12)
    d, lam = 6, 1.0
    A = lam * np.eye(d)
    A_inv = np.eye(d) / lam
    done = 0
    while done < 1000:
        k = min(int(g.integers(1, 25)), 1000 - done)
        X = g.normal(size=(k, d))
        A_inv = woodbury(A_inv, X)
        A += X.T @ X
        done += k
        assert _rel_err(A_inv, np.linalg.inv(A)) < 1e-8
        np.testing.assert_array_equal(A_inv, A_inv.T)


def test_woodbury_of_one_row_equals_sherman_morrison() -> None:
    g = np.random.default_rng(13)
    B = g.normal(size=(5, 5))
    A_inv = np.linalg.inv(B @ B.T + np.eye(5))
    x = g.normal(size=5)
    np.testing.assert_allclose(woodbury(A_inv, x[None]), sherman_morrison(A_inv, x), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------- decisions
def _decisions() -> list[Decision]:
    return [
        Decision(0, np.array([0.5, 0.25, 0.25]), {"logp": -0.69, "step": 1}),
        Decision(2, np.array([0.1, 0.1, 0.8]), {"logp": -0.22, "step": 2}),
        Decision(1, np.array([0.0, 1.0, 0.0]), {"logp": 0.0, "step": 3}),
    ]


def test_decision_propensity() -> None:
    assert Decision(2, np.array([0.1, 0.1, 0.8])).propensity == 0.8


def test_batch_decision_stack_getitem_round_trip() -> None:
    decisions = _decisions()
    batch = BatchDecision.stack(decisions)
    assert len(batch) == 3
    assert batch.actions.dtype == np.int64
    np.testing.assert_array_equal(batch.actions, [0, 2, 1])
    np.testing.assert_array_equal(batch.probs, np.stack([d.probs for d in decisions]))
    np.testing.assert_array_equal(batch.info["step"], [1, 2, 3])
    for i, original in enumerate(decisions):
        row = batch[i]
        assert isinstance(row, Decision)
        assert row.action == original.action and isinstance(row.action, int)
        np.testing.assert_array_equal(row.probs, original.probs)
        assert dict(row.info) == dict(original.info)


def test_batch_decision_propensities() -> None:
    batch = BatchDecision.stack(_decisions())
    np.testing.assert_array_equal(batch.propensities, [0.5, 0.8, 1.0])
    np.testing.assert_array_equal(batch.propensities, [batch[i].propensity for i in range(len(batch))])


def test_batch_decision_stack_rejects_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        BatchDecision.stack([])
