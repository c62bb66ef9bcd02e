"""The spectral hypentropy regulariser: mirror map, inverse, and the nuclear-ball Bregman projection.

Ghai, Hazan & Singer (2020), "Exponentiated Gradient Meets Gradient Descent", ALT, define for
``β > 0`` the scalar hypentropy

    φ_β(λ) = λ·arcsinh(λ/β) − sqrt(λ² + β²)                     (their eq. 4)

and, for a symmetric matrix ``Θ = U diag(λ) Uᵀ``, the spectral regulariser ``Φ_β(Θ) = Σ_i φ_β(λ_i)``.
Its gradient (the mirror map) and the inverse act on eigenvalues only:

    ∇Φ_β(Θ)        = U diag(arcsinh(λ/β)) Uᵀ,
    (∇Φ_β)^{-1}(Y) = V diag(β·sinh(μ)) Vᵀ          for Y = V diag(μ) Vᵀ.

Small ``β`` makes mirror descent multiplicative (exponentiated gradient), large ``β`` makes it
Euclidean near the origin (``φ_β(λ) ≈ λ²/(2β)`` for ``|λ| ≪ β``).

Bregman projection onto the nuclear ball ``Σ_m ||Θ_m||_* ≤ τ``: the KKT conditions give
``∇Φ_β(Θ) = Y − ν·∂||Θ||_*`` with shared eigenvectors, i.e. every dual eigenvalue is
soft-thresholded by one scalar ``ν ≥ 0`` chosen so that ``Σ β sinh(max(|μ| − ν, 0)) = τ``. The
left side is continuous and strictly decreasing in ``ν`` on ``[0, max|μ|]``; we locate the
bracket between two sorted breakpoints by bisection and then solve exactly inside it (closed form,
below), so the projected nuclear norm equals ``τ`` to rounding error. With ``beta=None`` the same
routine gives the Euclidean projection (``Σ max(|μ| − ν, 0) = τ``, identity mirror map).

Overflow guard [ours]: ``β sinh(μ)`` overflows for ``μ ≳ 710``. Primal eigenvalues are capped
at ``±LAMBDA_MAX = 1e100`` (computed as ``β sinh(min(|μ|, arcsinh(LAMBDA_MAX/β)))``), so logits
stay finite for any finite unit-scale context. A logit of ``1e100`` already makes the softmax
one-hot to double precision; the cap only matters when two models are both beyond it (they then
tie). It can only bind without a nuclear constraint (with one, ``|λ| ≤ τ``).
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray

LAMBDA_MAX = 1e100


def hypentropy(lam: FloatArray, beta: float) -> FloatArray:
    """Scalar hypentropy ``φ_β(λ)`` elementwise (Ghai et al. 2020, eq. 4)."""
    lam = np.asarray(lam, dtype=np.float64)
    return lam * np.arcsinh(lam / beta) - np.hypot(lam, beta)


def primal_eigenvalues(mu: FloatArray, beta: float) -> FloatArray:
    """``β sinh(μ)`` elementwise, capped at ``±LAMBDA_MAX`` (see the module docstring)."""
    mu_cap = np.arcsinh(LAMBDA_MAX / beta)
    return np.sign(mu) * beta * np.sinh(np.minimum(np.abs(mu), mu_cap))


def dual_eigenvalues(lam: FloatArray, beta: float) -> FloatArray:
    """``arcsinh(λ/β)`` elementwise: the mirror map on eigenvalues."""
    return np.arcsinh(np.asarray(lam, dtype=np.float64) / beta)


def _spectral(S: FloatArray, fn: object) -> FloatArray:
    """Apply an eigenvalue map to symmetric matrices ``S`` (``(..., D, D)``)."""
    w, V = np.linalg.eigh(S)
    out = (V * fn(w)[..., None, :]) @ np.swapaxes(V, -1, -2)  # type: ignore[operator]
    return 0.5 * (out + np.swapaxes(out, -1, -2))


def mirror_map(Theta: FloatArray, beta: float) -> FloatArray:
    """``∇Φ_β(Θ) = U diag(arcsinh(λ/β)) Uᵀ`` for symmetric ``Θ`` (batched over leading axes)."""
    return _spectral(Theta, lambda w: dual_eigenvalues(w, beta))


def inverse_mirror_map(Y: FloatArray, beta: float) -> FloatArray:
    """``(∇Φ_β)^{-1}(Y) = V diag(β sinh(μ)) Vᵀ`` for symmetric ``Y`` (batched over leading axes)."""
    return _spectral(Y, lambda w: primal_eigenvalues(w, beta))


def soft_threshold(mu: FloatArray, nu: float) -> FloatArray:
    """``sign(μ)·max(|μ| − ν, 0)`` elementwise."""
    return np.sign(mu) * np.maximum(np.abs(mu) - nu, 0.0)


def ball_norm(mu: FloatArray, beta: float | None) -> float:
    """``Σ β sinh(|μ|)`` (hypentropy) or ``Σ |μ|`` (``beta=None``): the primal nuclear norm of the dual ``μ``."""
    a = np.abs(mu)
    return float(a.sum() if beta is None else np.abs(primal_eigenvalues(a, beta)).sum())


def projection_threshold(mu: FloatArray, tau: float, beta: float | None) -> float:
    """The ``ν ≥ 0`` of the Bregman projection onto ``{Σ ||Θ_m||_* ≤ τ}`` (module docstring).

    Args:
        mu: all dual eigenvalues of all models, concatenated (zeros may be omitted).
        tau: radius ``τ > 0``.
        beta: hypentropy scale, or ``None`` for the Euclidean projection.

    Returns 0 when the ball already holds the primal point. Otherwise, with ``a`` the sorted
    ``|μ|`` (descending), bisection over breakpoints finds ``k`` with ``a_{k+1} ≤ ν < a_k``, and
    ``Σ_{i≤k} β sinh(a_i − ν) = τ`` is solved exactly: with ``c = a_1``, ``A = Σ e^{a_i−c}``,
    ``B = Σ e^{c−a_i}`` and ``z = e^{c−ν}`` it reads ``A z² − (2τ/β) z − B = 0``. All exponents
    stay below ``arcsinh(τ/β)``, so huge dual eigenvalues (``μ ≫ 710``) are handled exactly.
    Euclidean case: ``ν = (Σ_{i≤k} a_i − τ)/k``.
    """
    a = np.sort(np.abs(np.asarray(mu, dtype=np.float64)).ravel())[::-1]
    a = a[a > 0]
    if a.size == 0 or ball_norm(a, beta) <= tau:
        return 0.0

    def norm_at(nu: float) -> float:  # Σ ψ(max(a − ν, 0)), +inf on overflow (then certainly > τ)
        with np.errstate(over="ignore"):
            r = np.maximum(a - nu, 0.0)
            return float(r.sum() if beta is None else (beta * np.sinh(r)).sum())

    # Smallest j (0-based) with norm_at(a[j]) >= τ: ν lies in [a[j], a[j-1]); none -> [0, a[K-1]).
    lo, hi = 0, a.size  # norm_at(a[0]) = 0 < τ
    while lo < hi:
        mid = (lo + hi) // 2
        if norm_at(a[mid]) >= tau:
            hi = mid
        else:
            lo = mid + 1
    k = lo  # number of active eigenvalues
    top = a[:k]
    if beta is None:
        nu = (top.sum() - tau) / k
    else:
        c = top[0]
        A, B = np.exp(top - c).sum(), np.exp(c - top).sum()
        z = (tau / beta + np.hypot(tau / beta, np.sqrt(A * B))) / A
        nu = c - np.log(z)
    floor = a[k] if k < a.size else 0.0
    return float(np.clip(nu, floor, top[-1]))
