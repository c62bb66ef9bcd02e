"""Quality–cost hull and AIQ: exact values on hand-made curves, invariants on random ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.core.validation import InputError
from banditroute.costaware.quality_cost import aiq, best_quality_within, hull, hull_value


def test_hull_drops_points_below_the_envelope_and_after_the_best_quality() -> None:
    c = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 2.0])
    q = np.array([0.2, 0.3, 0.8, 0.9, 0.7, 0.1])
    hc, hq = hull(c, q)
    # (2, 0.3) lies below the chord (1, 0.2)-(3, 0.8); (5, 0.7) is past the best; (2, 0.1) is dominated
    assert hc.tolist() == [1.0, 3.0, 4.0]
    assert hq.tolist() == [0.2, 0.8, 0.9]


def test_aiq_of_simple_curves() -> None:
    # A single point at cost 0 with quality 0.5: flat 0.5 over the whole range.
    assert aiq([0.0], [0.5], 0.0, 10.0) == pytest.approx(0.5)
    # A single point in the middle: zero to its left, flat right of it.
    assert aiq([5.0], [0.5], 0.0, 10.0) == pytest.approx(0.25)
    # A line from (0, 0) to (10, 1): the mean is 0.5.
    assert aiq([0.0, 10.0], [0.0, 1.0], 0.0, 10.0) == pytest.approx(0.5)
    # Part of the curve outside the range does not count.
    assert aiq([0.0, 20.0], [0.0, 1.0], 0.0, 10.0) == pytest.approx(0.25)
    with pytest.raises(InputError):
        aiq([1.0], [1.0], 2.0, 2.0)


def test_best_quality_within_a_cost_cap() -> None:
    c, q = np.array([10.0, 25.0, 40.0]), np.array([0.5, 0.8, 0.9])
    assert best_quality_within(c, q, 30.0) == 0.8
    assert np.isnan(best_quality_within(c, q, 5.0))
    assert best_quality_within(c, q, 32.5, interpolate=True) == pytest.approx(0.85)


def test_metrics_reject_bad_points() -> None:
    with pytest.raises(InputError):
        hull([1.0, 2.0], [1.0])
    with pytest.raises(InputError):
        hull([], [])
    with pytest.raises(InputError):
        hull([np.nan], [1.0])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_hull_is_concave_non_decreasing_and_dominates_every_point(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c, q = rng.uniform(0, 10, n), rng.uniform(0, 1, n)
    hc, hq = hull(c, q)
    assert np.all(np.diff(hc) > 0) and np.all(np.diff(hq) >= 0)
    slopes = np.diff(hq) / np.diff(hc)
    assert np.all(np.diff(slopes) <= 1e-9)  # concave
    assert np.all(hull_value(c, q, c) >= q - 1e-9)  # no operating point above its own hull
    # AIQ lies between 0 and the best quality, and adding a point never lowers it
    a = aiq(c, q, 0.0, 10.0)
    assert 0.0 <= a <= q.max() + 1e-12
    assert aiq(np.append(c, 5.0), np.append(q, 0.5), 0.0, 10.0) >= a - 1e-12
