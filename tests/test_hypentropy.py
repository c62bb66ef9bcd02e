"""The spectral hypentropy maths: mirror map and inverse, and the nuclear-ball Bregman projection.

Each invariant is checked against an independent computation: finite differences of the
regulariser, ``scipy.linalg.expm`` for ``β sinh``, and a generic constrained solver (SLSQP) for
the projection.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.policies.hypentropy import (
    LAMBDA_MAX,
    ball_norm,
    dual_eigenvalues,
    hypentropy,
    inverse_mirror_map,
    mirror_map,
    primal_eigenvalues,
    projection_threshold,
    soft_threshold,
)

betas = st.floats(1e-3, 10.0)
seeds = st.integers(0, 2**32 - 1)


def random_symmetric(g: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    A = g.normal(scale=scale, size=shape)
    return 0.5 * (A + np.swapaxes(A, -1, -2))


def spectral_regulariser(Theta: np.ndarray, beta: float) -> float:
    """``Φ_β(Θ) = Σ_i φ_β(λ_i(Θ))`` summed over a stack of models."""
    return float(hypentropy(np.linalg.eigvalsh(Theta), beta).sum())


def bregman(Theta: np.ndarray, ref: np.ndarray, beta: float) -> float:
    """``D_Φ(Θ, Θ̃) = Φ(Θ) − Φ(Θ̃) − <∇Φ(Θ̃), Θ − Θ̃>``."""
    grad = mirror_map(ref, beta)
    return spectral_regulariser(Theta, beta) - spectral_regulariser(ref, beta) - float(np.sum(grad * (Theta - ref)))


# ------------------------------------------------------------------------------ mirror map
@settings(max_examples=40, deadline=None)
@given(seed=seeds, beta=betas, D=st.integers(1, 6), scale=st.floats(1e-3, 50.0))
def test_mirror_map_and_inverse_are_inverses(seed: int, beta: float, D: int, scale: float) -> None:
    g = np.random.default_rng(seed)
    Theta = random_symmetric(g, (2, D, D), scale)
    np.testing.assert_allclose(inverse_mirror_map(mirror_map(Theta, beta), beta), Theta, rtol=1e-9, atol=1e-9 * scale)
    # Dual -> primal -> dual: Θ = V diag(β sinh μ) Vᵀ holds its small eigenvalues only to
    # ε·β·sinh(max|μ|), so the round trip is exact to about ε·e^{max|μ|} in the dual.
    Y = random_symmetric(g, (2, D, D), min(scale, 3.0))
    back = mirror_map(inverse_mirror_map(Y, beta), beta)
    atol = 1e-13 * np.exp(np.abs(np.linalg.eigvalsh(Y)).max())
    np.testing.assert_allclose(back, Y, rtol=1e-9, atol=atol)


def test_mirror_map_is_the_gradient_of_the_regulariser() -> None:
    g = np.random.default_rng(0)
    beta, h = 0.3, 1e-6
    Theta = random_symmetric(g, (4, 4), 1.0)
    grad = mirror_map(Theta, beta)
    for _ in range(5):
        E = random_symmetric(g, (4, 4), 1.0)
        fd = (spectral_regulariser(Theta + h * E, beta) - spectral_regulariser(Theta - h * E, beta)) / (2 * h)
        assert fd == pytest.approx(np.sum(grad * E), rel=1e-6)


def test_inverse_mirror_map_is_beta_sinh_of_the_matrix() -> None:
    g = np.random.default_rng(1)
    beta = 0.05
    Y = random_symmetric(g, (5, 5), 2.0)
    sinh = 0.5 * (scipy.linalg.expm(Y) - scipy.linalg.expm(-Y))
    np.testing.assert_allclose(inverse_mirror_map(Y, beta), beta * sinh, rtol=1e-9, atol=1e-10)


def test_primal_eigenvalues_are_capped_not_infinite() -> None:
    mu = np.array([-1e6, -800.0, -1.0, 0.0, 2.0, 720.0, 1e6])
    lam = primal_eigenvalues(mu, 0.01)
    assert np.all(np.isfinite(lam)) and np.abs(lam).max() == pytest.approx(LAMBDA_MAX)
    np.testing.assert_array_equal(np.sign(lam), np.sign(mu))
    np.testing.assert_allclose(lam[2:5], 0.01 * np.sinh(mu[2:5]))
    np.testing.assert_allclose(dual_eigenvalues(lam[2:5], 0.01), mu[2:5], atol=1e-12)


# ------------------------------------------------------------------------------ projection threshold
@settings(max_examples=60, deadline=None)
@given(
    seed=seeds,
    beta=st.one_of(st.none(), betas),
    K=st.integers(1, 40),
    spread=st.floats(0.01, 30.0),
    frac=st.floats(0.01, 0.99),
)
def test_projection_lands_on_the_ball(seed: int, beta: float | None, K: int, spread: float, frac: float) -> None:
    mu = np.random.default_rng(seed).normal(scale=spread, size=K)
    tau = frac * ball_norm(mu, beta)
    nu = projection_threshold(mu, tau, beta)
    assert nu > 0
    assert ball_norm(soft_threshold(mu, nu), beta) == pytest.approx(tau, rel=1e-9)


@pytest.mark.parametrize("beta", [None, 0.01, 1.0])
def test_projection_is_inactive_inside_the_ball(beta: float | None) -> None:
    mu = np.array([0.5, -0.2, 0.0, 1.0])
    norm = ball_norm(mu, beta)
    assert projection_threshold(mu, norm, beta) == 0.0
    assert projection_threshold(mu, 2 * norm, beta) == 0.0
    assert projection_threshold(np.zeros(3), 1.0, beta) == 0.0


def test_projection_threshold_with_huge_dual_eigenvalues() -> None:
    """``sinh`` of these overflows; the threshold is still exact (closed form inside the bracket)."""
    mu = np.array([1e4, 1e4 - 1.0, -1e4 + 0.5, 3.0, -700.0])
    beta, tau = 0.01, 50.0
    nu = projection_threshold(mu, tau, beta)
    kept = soft_threshold(mu, nu)
    assert np.count_nonzero(kept) == 3
    assert ball_norm(kept, beta) == pytest.approx(tau, rel=1e-9)


@pytest.mark.parametrize(("seed", "beta", "frac"), [(2, 0.5, 0.5), (3, 0.05, 0.3), (4, None, 0.6)])
def test_projection_matches_a_generic_convex_solver(seed: int, beta: float | None, frac: float) -> None:
    """M=2 models of size 3: the soft-threshold point equals argmin D_Φ(Θ, Θ̃) over the ball as found by
    SLSQP, with Θ_m = P_m − N_m, P_m, N_m ⪰ 0 (as A Aᵀ, B Bᵀ) and Σ tr(P_m + N_m) ≤ τ — a smooth
    formulation of the nuclear ball that assumes nothing about eigenvectors. ``beta=None``: the
    Euclidean projection, D = ½||Θ − Θ̃||²."""
    g = np.random.default_rng(seed)
    M, D = 2, 3
    Y = random_symmetric(g, (M, D, D), 1.5)
    mu, V = np.linalg.eigh(Y)
    tau = frac * sum(ball_norm(m, beta) for m in mu)
    nu = projection_threshold(mu.ravel(), tau, beta)
    projected = (V * soft_threshold(mu, nu)[:, None, :]) @ V.transpose(0, 2, 1)
    if beta is None:
        ref, ours = Y, projected

        def divergence(T: np.ndarray) -> float:
            return 0.5 * float(np.sum((T - ref) ** 2))

        def gradient(T: np.ndarray) -> np.ndarray:
            return T - ref

    else:
        b = beta
        ref, ours = inverse_mirror_map(Y, b), inverse_mirror_map(projected, b)  # Θ̃ and its projection

        def divergence(T: np.ndarray) -> float:
            return bregman(T, ref, b)

        def gradient(T: np.ndarray) -> np.ndarray:  # ∇_Θ D_Φ(Θ, Θ̃)
            return mirror_map(T, b) - Y

    def theta(z: np.ndarray) -> np.ndarray:
        A, B = z.reshape(2, M, D, D)
        return A @ A.transpose(0, 2, 1) - B @ B.transpose(0, 2, 1)

    def objective(z: np.ndarray) -> tuple[float, np.ndarray]:
        A, B = z.reshape(2, M, D, D)
        T = theta(z)
        G = gradient(T)  # chain rule through Θ = A Aᵀ − B Bᵀ
        return divergence(T), np.concatenate([(2 * G @ A).ravel(), (-2 * G @ B).ravel()])

    ball = {"type": "ineq", "fun": lambda z: tau - z @ z, "jac": lambda z: -2 * z}  # Σ tr(AAᵀ + BBᵀ) ≤ τ

    best = None
    for start in range(3):
        z0 = np.random.default_rng(start).normal(scale=0.3, size=2 * M * D * D)
        z0 *= min(1.0, np.sqrt(0.9 * tau) / np.linalg.norm(z0))
        res = scipy.optimize.minimize(
            objective, z0, jac=True, method="SLSQP", constraints=[ball], options={"maxiter": 2000, "ftol": 1e-14}
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    assert sum(np.abs(np.linalg.eigvalsh(t)).sum() for t in ours) == pytest.approx(tau, rel=1e-9)
    assert divergence(ours) <= best.fun + 1e-10
    np.testing.assert_allclose(theta(best.x), ours, atol=1e-5)
