"""The per-round path (``Policy.act``/``learn`` on one context) against the batch path: the
``*_row`` rules of ``core/sampling.py`` and ridge's ``_act_one``/``_learn_one`` must give the same
decisions, probability vectors and state bit for bit (docs/benchmarks.md, issue 16)."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.core import sampling
from banditroute.policies.ridge import LinTS, LinUCB, RidgePolicy


def _score_rows(rng: np.random.Generator) -> list[np.ndarray]:
    """Random rows, rows with exact and near ties (inside and just outside rtol), large scores."""
    rows = [rng.standard_normal(m) for m in (1, 2, 8, 33)]
    tied = rng.standard_normal(8)
    tied[[1, 5]] = tied.max()
    near = np.full(6, 3.0)
    near[2] += 3.0 * 1e-12 * 0.5
    near[4] -= 3.0 * 1e-12 * 2
    return [*rows, tied, near, np.zeros(4), rng.standard_normal(5) * 1e300]


@pytest.mark.parametrize("epsilon", [0.0, 0.05, 1.0])
def test_row_rules_equal_vectorised_bit_for_bit(epsilon: float) -> None:
    rng = np.random.default_rng(3)
    for scores in _score_rows(rng):
        greedy = sampling.argmax_uniform_row(scores.tolist())
        assert greedy is not None
        want = sampling.argmax_uniform(scores[None])[0]
        assert np.array(greedy).tobytes() == want.tobytes()
        probs = sampling.mix_uniform_row(greedy, epsilon)
        want = sampling.mix_uniform(want, epsilon)
        assert np.array(probs).tobytes() == want.tobytes()
        r1, r2 = np.random.default_rng(11), np.random.default_rng(11)
        assert [sampling.sample_categorical_row(probs, r1) for _ in range(200)] == [
            int(sampling.sample_categorical(want[None], r2)[0]) for _ in range(200)
        ]
        assert r1.random() == r2.random()  # the generators advanced alike


def test_row_argmax_refuses_non_finite_scores() -> None:
    for bad in (np.nan, np.inf, -np.inf):
        assert sampling.argmax_uniform_row([0.0, bad, 1.0]) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: LinUCB(8, 16, alpha=1.0),
        lambda: LinUCB(5, 12, alpha=0.3, epsilon=0.1, shared=True),
        lambda: RidgePolicy(8, 16, epsilon=0.2),
        lambda: LinTS(4, 6, n_prob_samples=32),
    ],
)
@pytest.mark.parametrize("per_arm", [False, True])
def test_act_learn_equal_batch_of_one(make, per_arm: bool) -> None:
    """``act``/``learn`` and ``act_batch``/``learn_batch`` on batches of one: same everything."""
    one, batch = make(), make()
    M, d = one.n_arms, one.dim
    data = np.random.default_rng(5)
    r1, r2 = np.random.default_rng(8), np.random.default_rng(8)
    for _ in range(300):
        x = data.standard_normal((M, d) if per_arm else d) / np.sqrt(d)
        reward = float(data.random())
        dec = one.act(x, r1)
        bd = batch.act_batch(x[None], r2)
        assert dec.action == int(bd.actions[0])
        assert np.asarray(dec.probs).tobytes() == bd.probs[0].tobytes()
        one.learn(x, dec, reward)
        batch.learn_batch(x[None], bd, [reward])
    for key, value in one.state_dict()["state"].items():
        assert value.tobytes() == batch.state_dict()["state"][key].tobytes(), key


def test_non_finite_scores_take_the_vectorised_path() -> None:
    """A context so large that LinUCB's scores overflow still gets the batch path's decision."""
    one, batch = LinUCB(4, 3), LinUCB(4, 3)
    x = np.array([1e200, -1e200, 1e200])
    r1, r2 = np.random.default_rng(0), np.random.default_rng(0)
    with np.errstate(all="ignore"):
        dec, bd = one.act(x, r1), batch.act_batch(x[None], r2)
    assert dec.action == int(bd.actions[0])
    assert np.array_equal(dec.probs, bd.probs[0], equal_nan=True)


def test_small_vector_checks_reject_exactly_the_bad_ones() -> None:
    """The Python-float checks of short vectors (``core/validation.py``): an overflowing sum of
    huge finite entries is still accepted; NaN, ±inf (also +inf and -inf together) still rejected;
    probabilities judged as before, with the same messages."""
    from banditroute.core.validation import InputError, check_context, check_probs

    huge = np.full(4, 1e308)
    assert check_context(huge, 2, 4) is huge
    for bad in ([np.nan, 0, 0, 0], [np.inf, 0, 0, 0], [np.inf, -np.inf, 0, 0]):
        with pytest.raises(InputError, match="context contains NaN or inf"):
            check_context(np.array(bad), 2, 4)
    assert check_probs(np.array([0.25, 0.75, 0.0]), None, 3) is not None
    with pytest.raises(InputError, match="probs contains NaN or inf"):
        check_probs(np.array([np.inf, -np.inf, 1.0]), None, 3)
    for bad in ([-0.5, 1.5, 0.0], [0.5, 0.5, 1e-3], [1e308, 1e308, -1e308]):
        with pytest.raises(InputError, match="non-negative and sum to one"):
            check_probs(np.array(bad), None, 3)
    long = np.full(100, 0.01)  # past the short-vector path: numpy's checks
    assert check_probs(long, None, 100) is not None
    long[3] = np.nan
    with pytest.raises(InputError, match="probs contains NaN or inf"):
        check_probs(long, None, 100)
