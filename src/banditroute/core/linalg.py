"""Rank-one and low-rank inverse updates for ridge-regression statistics.

LinUCB and ridge policies keep ``A^{-1}`` with ``A = λI + Σ x xᵀ``; adding one observation is
the Sherman–Morrison identity ``(A + x xᵀ)^{-1} = A^{-1} - A^{-1}x xᵀA^{-1} / (1 + xᵀA^{-1}x)``
(O(d²) instead of an O(d³) inverse); adding ``k`` rows at once is the Woodbury identity.

Both are written as a symmetric low-rank downdate ``A^{-1} -= WᵀW`` and applied *in place* by one
BLAS call (``dger`` for one row, ``dgemm`` with ``β = 1`` for several): at d = 768 a d×d matrix
is 4.7 MB, and the update is memory-bound, so not allocating d×d temporaries is most of the
speed. The functions ending in ``_`` update their first argument; the others return a new array.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg.blas import dgemm, dger
from scipy.linalg.lapack import dpotrf, dtrtrs

from banditroute.core.types import FloatArray


def add_gram_(S: FloatArray, V: FloatArray, alpha: float = 1.0) -> None:
    """``S += alpha · VᵀV`` in place, for a square ``S`` and rows ``V`` (``(k, d)`` or ``(d,)``).

    A C-ordered ``S`` is handed to BLAS as its (Fortran-ordered) transpose, which BLAS updates
    without a copy; ``VᵀV`` is symmetric, so updating ``Sᵀ`` is the same update. A symmetric ``S``
    stays exactly symmetric (``tests/test_ridge.py`` checks it): for one row and ``alpha = ±1`` the
    rounded products ``v_i·v_j`` and ``v_j·v_i`` are equal, and the BLAS used sums the ``k`` terms
    of entries ``(i, j)`` and ``(j, i)`` in the same order, so no symmetrising pass is needed.
    """
    St = S.T
    if V.ndim == 1:
        out = dger(alpha, V, V, a=St, overwrite_a=True)
    else:
        out = dgemm(alpha, V, V, beta=1.0, c=St, trans_a=True, overwrite_c=True)
    if out is not St:  # S was not a writeable C-ordered float64 array, so the wrapper copied it
        S[...] = out.T


def sherman_morrison_(A_inv: FloatArray, x: FloatArray, v: FloatArray | None = None) -> FloatArray | None:
    """``A^{-1} ← (A + x xᵀ)^{-1}`` in place, for symmetric ``A^{-1}``: ``A^{-1} -= u uᵀ`` with
    ``u = A^{-1}x / sqrt(1 + xᵀA^{-1}x)``.

    With ``v``, also returns ``(A + x xᵀ)^{-1} v = A^{-1}v - u (uᵀv)``, read from ``A^{-1}`` in the
    same pass as ``A^{-1}x`` (ridge's ``θ = A^{-1} b`` at no extra pass over the d×d matrix).
    """
    P = (x[None] if v is None else np.array((x, v))) @ A_inv  # rows: xᵀA^{-1} (and vᵀA^{-1})
    c = 1.0 + x @ P[0]
    if not c > 0.0:
        raise np.linalg.LinAlgError(f"Sherman–Morrison update failed (1 + xᵀA⁻¹x = {c}): A^-1 is not positive definite")
    u = P[0] / math.sqrt(c)  # the correctly rounded root, as np.sqrt's, without a numpy scalar call
    add_gram_(A_inv, u, -1.0)
    return None if v is None else P[1] - u * (u @ v)


def woodbury_(A_inv: FloatArray, X: FloatArray, v: FloatArray | None = None) -> FloatArray | None:
    """``A^{-1} ← (A + XᵀX)^{-1}`` in place for rows ``X`` (k×d) and symmetric ``A^{-1}``.

    With ``S = I + X A^{-1} Xᵀ = L Lᵀ`` (Cholesky; ``S`` is SPD) and ``W = L^{-1} X A^{-1}`` (k×d),
    the Woodbury downdate ``A^{-1}Xᵀ S^{-1} X A^{-1}`` is ``WᵀW``. Costs O(k d² + k³). With ``v``,
    also returns ``(A + XᵀX)^{-1} v = A^{-1}v - Wᵀ(W v)`` (same pass over ``A^{-1}``). LAPACK is
    called directly: at small ``d`` numpy.linalg's wrappers cost more than the arithmetic.
    """
    k = X.shape[0]
    P = (X if v is None else np.vstack([X, v])) @ A_inv  # rows: X A^{-1} (and vᵀA^{-1})
    S = X @ P[:k].T
    S.flat[:: k + 1] += 1.0
    L, info = dpotrf(S, lower=True)
    if info == 0:
        W, info = dtrtrs(L, P[:k], lower=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"Woodbury update failed (LAPACK info {info}): A^-1 is not positive definite")
    add_gram_(A_inv, W, -1.0)
    return None if v is None else P[k] - (W @ v) @ W


def sherman_morrison(A_inv: FloatArray, x: FloatArray) -> FloatArray:
    """Return ``(A + x xᵀ)^{-1}`` given symmetric ``A^{-1}`` (new array; input untouched)."""
    out = np.array(A_inv, dtype=np.float64, order="C")
    sherman_morrison_(out, x)
    return out


def woodbury(A_inv: FloatArray, X: FloatArray) -> FloatArray:
    """Return ``(A + XᵀX)^{-1}`` for rows ``X`` (k×d) given symmetric ``A^{-1}`` (new array)."""
    out = np.array(A_inv, dtype=np.float64, order="C")
    woodbury_(out, X)
    return out
