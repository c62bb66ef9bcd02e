"""Full-information class fitting: gradients against finite differences, and the class ordering on
problems where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from banditroute.analysis.expressiveness import class_expressiveness, fit_class, gap, objective
from banditroute.core.validation import InputError


def quadratic_problem(n: int, d: int = 6, M: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rewards ||U_mᵀx||² of rank-1 experts: the oracle is log-quadratic, not log-linear (sign-symmetric)."""
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((d, M)))[0]
    X = rng.standard_normal((n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, (X @ U) ** 2


@pytest.mark.parametrize("kind", ["loglinear", "logquadratic"])
def test_gradient_matches_finite_differences(kind: str) -> None:
    rng = np.random.default_rng(1)
    X, R = quadratic_problem(40)
    Xt = np.hstack([X, np.ones((40, 1))])
    size = Xt.shape[1] * 3 * (1 if kind == "loglinear" else 2 * 2)
    p = 0.3 * rng.standard_normal(size)
    _, g = objective(kind, p, Xt, R, 0.05, 2)
    num = approx_fprime(p, lambda q: objective(kind, q, Xt, R, 0.05, 2)[0], 1e-6)
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-7)


def test_constant_is_best_single_arm() -> None:
    X, R = quadratic_problem(200)
    R[:, 1] += 0.2
    fitted = fit_class("constant", X, R, lam=0.0)
    probs = fitted.probs(X[:5])
    np.testing.assert_array_equal(probs, np.tile([0.0, 1.0, 0.0], (5, 1)))


def test_logquadratic_closes_most_of_the_gap_where_loglinear_cannot() -> None:
    X, R = quadratic_problem(600)
    res = class_expressiveness(X, R, lams=(1e-4, 1e-3), rank=2, max_iter=300, n_boot=200)
    ll, lq, const = res.gaps["loglinear"][0], res.gaps["logquadratic"][0], res.gaps["constant"][0]
    # x -> -x leaves every reward unchanged, so no linear score beats the best constant by much.
    assert ll > 0.6 * const
    assert lq < 0.35 * ll
    assert res.reduction[0] > 0.65 and res.reduction[1] <= res.reduction[0] <= res.reduction[2]
    assert res.n_train + res.n_test == 600


def test_loglinear_recovers_linear_oracle() -> None:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 4))
    R = (np.stack([X[:, 0], -X[:, 0], X[:, 1]], axis=1) > 0.5).astype(float)
    fitted = fit_class("loglinear", X, R, lam=1e-4)
    assert gap(fitted.probs(X), R).mean() < 0.5 * gap(np.full((500, 3), 1 / 3), R).mean()


def test_bad_input_is_rejected() -> None:
    X, R = quadratic_problem(20)
    with pytest.raises(InputError, match="unknown policy class"):
        fit_class("cubic", X, R, lam=0.1)
    with pytest.raises(InputError, match="same n"):
        fit_class("loglinear", X, R[:5], lam=0.1)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError):
        fit_class("loglinear", bad, R, lam=0.1)
    with pytest.raises(InputError, match="train_fraction"):
        class_expressiveness(X, R, train_fraction=1.0)
    with pytest.raises(InputError, match="lams"):
        class_expressiveness(X, R, lams=())
