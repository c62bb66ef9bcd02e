"""Rank-one and low-rank inverse updates for ridge-regression statistics.

LinUCB and ridge policies keep ``A^{-1}`` with ``A = λI + Σ x xᵀ``; adding one observation is
the Sherman–Morrison identity ``(A + x xᵀ)^{-1} = A^{-1} - A^{-1}x xᵀA^{-1} / (1 + xᵀA^{-1}x)``
(O(d²) instead of an O(d³) inverse); adding ``k`` rows at once is the Woodbury identity.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray


def sherman_morrison(A_inv: FloatArray, x: FloatArray) -> FloatArray:
    """Return ``(A + x xᵀ)^{-1}`` given symmetric ``A^{-1}`` (new array; input untouched)."""
    Ax = A_inv @ x
    return A_inv - np.outer(Ax, Ax) / (1.0 + x @ Ax)


def woodbury(A_inv: FloatArray, X: FloatArray) -> FloatArray:
    """Return ``(A + XᵀX)^{-1}`` for rows ``X`` (k×d) given symmetric ``A^{-1}``.

    Costs O(k d² + k³); used for batched learning, where ``k`` rows hit the same arm.
    """
    AX = A_inv @ X.T  # d×k
    S = np.eye(X.shape[0]) + X @ AX
    out: FloatArray = A_inv - AX @ np.linalg.solve(S, AX.T)
    return 0.5 * (out + out.T)
