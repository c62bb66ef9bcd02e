"""The fast dual store of HPG: each dual matrix ``Y_m`` kept as a low-rank eigen-factorisation.

:class:`~banditroute.policies.hpg.ExactDualStore` keeps every ``Y_m`` as a dense ``D×D`` matrix and
re-diagonalises it after each change, ``O(M D³)`` per round — about a second at ``d = 768``. HPG
never needs that: ``Y_m`` starts at zero, changes by rank-one terms ``c·x̃x̃ᵀ`` and the Bregman
projection soft-thresholds its eigenvalues, which keeps it (and the primal ``Θ_m``) low rank. This
store keeps, per model,

    Y_m = V_m diag(μ_m) V_mᵀ,     V_m ∈ R^{D×r_m} orthonormal columns,  |μ_{m,1}| ≥ |μ_{m,2}| ≥ …,

and reads everything off it: ``Θ_m = V_m diag(β sinh μ_m) V_mᵀ`` (docs/specs/hpg.md §3; the capped
:func:`~banditroute.policies.hypentropy.primal_eigenvalues`), logits ``Σ_i λ_{m,i} (v_{m,i}ᵀx̃)²`` in
``O(D r)`` per model (one ``(n, D) @ (D, r)`` product per model for a batch of contexts), nuclear
norms ``Σ_i β sinh|μ_{m,i}|`` and the soft-threshold, which changes ``μ`` only and drops the pairs
that reach zero, so the rank is the number of live eigen-directions once the projection is active.

**Low-rank eigen-update** (a block version of the rank-one update of Bunch, Nielsen & Sorensen
1978; Brand 2006). ``k`` rank-one terms ``Σ_j c_j x_j x_jᵀ = Xᵀ diag(c) X`` are folded in at once:
split ``X = A Vᵀ + B Qᵀ`` with ``A = X V`` and ``Q ⊥ V`` an orthonormal basis of the residuals
(one classical Gram–Schmidt projection, then SVQB — Stathopoulos & Wu 2002 — on the residual
block; both are repeated once when the residuals are small or ill-conditioned: "twice is enough",
Giraud et al. 2005; residual directions below ``1e-7·max_j ||x_j||`` count as in the span), then

    Y + Xᵀ diag(c) X = [V Q] (diag(μ) ⊕ 0 + [A B]ᵀ diag(c) [A B]) [V Q]ᵀ,

so an ``(r+k)×(r+k)`` symmetric eigenproblem ``K = W diag(μ') Wᵀ`` (``K`` the middle factor) and the rotation
``V' = [V Q] W`` give the new factorisation exactly, in ``O(D r k + D k² + (r+k)³ + D (r+k) r')``
instead of ``O(D³)``. Eigenvalues below ``1e-13·max|μ'|`` (rounding noise) are dropped and, when
more than ``rank`` remain, the smallest-``|μ'|`` pairs: the only approximation, the best
rank-``rank`` approximation of the dual in every unitarily invariant norm. With ``rank >= D`` the
store equals the dense reference up to rounding (tests/test_hpg_fast.py checks 1e-8 against
``ExactDualStore``).

**Batched learning** [ours]: ``add_rank_one`` only records ``(c, x̃)``; the recorded terms are folded
in with one eigen-update every ``batch`` calls (docs/specs/hpg.md §3: eigenpairs refreshed every B
rounds). Between refreshes ``logits``, ``dual_eigenvalues`` and ``nuclear_norms`` describe the
dual as of the last refresh, and ``soft_threshold`` acts on that refresh's eigenpairs. HPG checks
the nuclear norm after every update, so it projects exactly at refreshes. The dual still receives
every gradient term, in order; the algorithm changes only in that (1) the projection is applied
once per ``batch`` updates, to their sum, and (2) decisions in between use parameters up to
``batch − 1`` rounds old — which ``act_batch`` over a chunk of ``batch`` contexts does anyway.
``batch=1`` is sequential HPG.

**Rounding**: each rotation by the orthogonal ``W`` from ``eigh`` lets ``VᵀV − I`` drift by a few
machine epsilons; every ``reorth_every`` refreshes the drift is measured and, above ``1e-12``, ``V``
is re-orthonormalised by ``V = QR`` with the exact change of basis ``diag(μ) → R diag(μ) Rᵀ`` (folded
into the next eigenproblem, so ``Y`` itself is unchanged).

**State**: fixed shapes, as :meth:`~banditroute.policies.base.Policy.load_state_dict` requires —
bases padded to ``min(D, rank)`` columns plus a rank vector, and the ``batch`` recorded terms.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_finite, check_int, check_positive
from banditroute.policies.hypentropy import primal_eigenvalues

_RESID_RTOL = 1e-7  # residual directions below this fraction of max_j ||x_j|| count as inside the span
_DROP_RTOL = 1e-13  # eigenvalues below this fraction of a model's largest |μ| are rounding noise
_ORTH_TOL = 1e-12  # max |VᵀV − I| that triggers re-orthonormalisation
_LOAD_ORTH_TOL = 1e-8  # a stored basis further from orthonormal than this is rejected as corrupt
_INT_KEYS = ("rank", "pending", "refreshes")


class FactoredDualStore:
    """Per-model dual matrices ``Y_m = V_m diag(μ_m) V_mᵀ`` with batched low-rank eigen-updates.

    Implements :class:`~banditroute.policies.hpg.DualStore` (see the module docstring).

    Args:
        n_arms: number of models ``M``.
        D: size of each dual matrix (``d + 1`` for HPG's augmented context ``x̃ = (x, 1)``).
        beta: hypentropy scale ``β`` of the inverse mirror map ``μ ↦ β sinh(μ)``.
        rank: most eigen-pairs kept per model (``>= D``: exact up to rounding).
        batch: rank-one updates folded in per eigen-update (``1``: sequential HPG).
        reorth_every: eigen-updates between orthonormality checks.
    """

    def __init__(self, n_arms: int, D: int, beta: float, *, rank: int = 64, batch: int = 1, reorth_every: int = 64):
        self.n_arms = check_int(n_arms, "n_arms")
        self.D = check_int(D, "D")
        self.beta = check_positive(beta, "beta")
        self.max_rank = check_int(rank, "rank")
        self.batch = check_int(batch, "batch")
        self.reorth_every = check_int(reorth_every, "reorth_every")
        M, R = self.n_arms, min(self.D, self.max_rank)
        self.V: FloatArray = np.zeros((M, self.D, R))  # eigenvectors; columns at index >= rank[m] are zero
        self.mu: FloatArray = np.zeros((M, R))  # dual eigenvalues, |μ| descending, zero beyond rank[m]
        self.rank = np.zeros(M, dtype=np.int64)
        self.coef_buf: FloatArray = np.zeros((self.batch, M))  # recorded, not yet folded-in rank-one terms
        self.x_buf: FloatArray = np.zeros((self.batch, M, self.D))
        self.pending = 0
        self.refreshes = 0  # drives the orthonormality-check schedule
        self._lam = np.zeros((M, R))  # primal eigenvalues β sinh(μ) (derived from mu)

    # ------------------------------------------------------------------ DualStore protocol
    def logits(self, Xt: FloatArray) -> FloatArray:
        """``x̃_mᵀ Θ_m x̃_m = Σ_i λ_{m,i} (v_{m,i}ᵀ x̃_m)²`` for ``Xt`` (n, M, D); shape (n, M)."""
        Xt = np.asarray(Xt, dtype=np.float64)
        if Xt.ndim != 3 or Xt.shape[1:] != (self.n_arms, self.D):
            raise InputError(f"Xt must have shape (n, {self.n_arms}, {self.D}), got {Xt.shape}")
        k = int(self.rank.max())
        if k == 0:
            return np.zeros(Xt.shape[:2])
        V = self.V[:, :, :k]
        # Shared contexts (a broadcast view): one (n, D) block times every basis; else per model.
        Z = Xt[:, 0, :] @ V if Xt.strides[1] == 0 else np.swapaxes(Xt, 0, 1) @ V  # (M, n, k)
        return np.einsum("mnk,mk->nm", Z * Z, self._lam[:, :k])

    def add_rank_one(self, coef: FloatArray, Xt: FloatArray) -> None:
        """``Y_m += coef_m x̃_m x̃_mᵀ`` for every model (``coef`` (M,), ``Xt`` (M, D)); visible after a refresh."""
        coef = check_finite(np.asarray(coef, dtype=np.float64), "coef")
        Xt = check_finite(np.asarray(Xt, dtype=np.float64), "Xt")
        if coef.shape != (self.n_arms,) or Xt.shape != (self.n_arms, self.D):
            raise InputError(
                f"coef must be ({self.n_arms},) and Xt ({self.n_arms}, {self.D}); got {coef.shape}, {Xt.shape}"
            )
        self.coef_buf[self.pending] = coef
        self.x_buf[self.pending] = Xt
        self.pending += 1
        if self.pending == self.batch:
            self._refresh()

    def dual_eigenvalues(self) -> list[FloatArray]:
        """The nonzero dual eigenvalues, one array per model (|μ| descending)."""
        return [self.mu[m, : self.rank[m]].copy() for m in range(self.n_arms)]

    def soft_threshold(self, nu: float) -> None:
        """``μ ← sign(μ)·max(|μ| − ν, 0)``; the pairs that reach zero leave the basis.

        Acts on the eigenpairs of the last refresh — the ones ``ν`` was computed from; recorded
        terms stay recorded and are added at the next refresh. HPG projects right after a refresh
        (nothing recorded); between refreshes the norms do not change, and HPG's projection
        tolerance (``hpg.PROJECTION_RTOL``) keeps it from re-projecting a point already on the ball.
        """
        nu = check_positive(nu, "nu", allow_zero=True)
        mu = np.sign(self.mu) * np.maximum(np.abs(self.mu) - nu, 0.0)
        # |μ| is sorted descending, so the zeroed pairs are a suffix of each basis.
        keep = np.count_nonzero(mu, axis=1)
        for m in np.flatnonzero(keep < self.rank):
            self.V[m, :, keep[m] :] = 0.0
        self._install(mu, keep)

    def nuclear_norms(self) -> FloatArray:
        """``||Θ_m||_* = Σ_i β sinh(|μ_{m,i}|)``, shape (M,)."""
        return np.abs(self._lam).sum(axis=1)

    def get_state(self) -> dict[str, np.ndarray]:
        """Fixed-shape arrays holding the whole store (bases padded to ``min(D, rank)`` columns)."""
        return {
            "V": self.V,
            "mu": self.mu,
            "rank": self.rank,
            "coef_buf": self.coef_buf,
            "x_buf": self.x_buf,
            "pending": np.array(self.pending, dtype=np.int64),
            "refreshes": np.array(self.refreshes, dtype=np.int64),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Install a ``get_state`` snapshot; rejects (changing nothing) an inconsistent one."""
        M, D, R, B = self.n_arms, self.D, self.mu.shape[1], self.batch
        shapes = {"V": (M, D, R), "mu": (M, R), "rank": (M,), "coef_buf": (B, M), "x_buf": (B, M, D)}
        shapes |= {"pending": (), "refreshes": ()}
        if set(state) != set(shapes):
            raise InputError(f"fast-store state must hold exactly the arrays {sorted(shapes)}")
        try:
            arr: dict[str, np.ndarray] = {
                k: np.array(v, dtype=np.int64 if k in _INT_KEYS else np.float64) for k, v in state.items()
            }
        except (TypeError, ValueError):
            raise InputError("fast-store state arrays must be numeric") from None
        for key, shape in shapes.items():
            if arr[key].shape != shape:
                raise InputError(f"fast-store state[{key!r}] has shape {arr[key].shape}, expected {shape}")
            check_finite(arr[key], f"fast-store state[{key!r}]")
        V, mu, rank = arr["V"], arr["mu"], arr["rank"]
        if np.any(rank < 0) or np.any(rank > R) or not 0 <= arr["pending"] < B or arr["refreshes"] < 0:
            raise InputError(f"fast-store ranks must lie in [0, {R}] and pending in [0, {B})")
        used = np.arange(R) < rank[:, None]  # (M, R) columns in use
        if np.any(V * ~used[:, None, :]) or np.any(mu * ~used) or np.any(np.diff(np.abs(mu), axis=1) > 0):
            raise InputError("fast-store eigenpairs must be sorted by |μ| descending and zero beyond the rank")
        gram = np.swapaxes(V, 1, 2) @ V - used[:, :, None] * np.eye(R)
        if np.max(np.abs(gram), initial=0.0) > _LOAD_ORTH_TOL:
            raise InputError("fast-store eigenvectors are not orthonormal")
        self.V, self.coef_buf, self.x_buf = V, arr["coef_buf"], arr["x_buf"]
        self.pending, self.refreshes = int(arr["pending"]), int(arr["refreshes"])
        self._install(mu, rank)

    # ------------------------------------------------------------------ internals
    def orthonormality_error(self) -> float:
        """``max_m max |V_mᵀV_m − I|`` over the columns in use (rounding drift; ~1e-15 when healthy)."""
        r = int(self.rank.max())
        V = self.V[:, :, :r]
        used = np.arange(r) < self.rank[:, None]
        return float(np.max(np.abs(np.swapaxes(V, 1, 2) @ V - used[:, :, None] * np.eye(r)), initial=0.0))

    def _install(self, mu: FloatArray, rank: np.ndarray) -> None:
        self.mu, self.rank = mu, rank.astype(np.int64)
        self._lam = primal_eigenvalues(mu, self.beta)

    def _refresh(self) -> None:
        """Fold the recorded terms in with one low-rank eigen-update (module docstring)."""
        k, r = self.pending, int(self.rank.max())
        X = np.swapaxes(self.x_buf[:k], 0, 1)  # (M, k, D)
        c = self.coef_buf[:k].T  # (M, k)
        self.pending = 0
        self.refreshes += 1
        V = self.V[:, :, :r]
        core = np.zeros((self.n_arms, r + k, r + k))
        core[:, :r, :r] = self.mu[:, :r, None] * np.eye(r)
        if self.refreshes % self.reorth_every == 0 and self.orthonormality_error() > _ORTH_TOL:
            V = V.copy()
            for m, rm in enumerate(self.rank):
                Q, Rq = np.linalg.qr(V[m, :, :rm])
                V[m, :, :rm], core[m, :rm, :rm] = Q, Rq @ core[m, :rm, :rm] @ Rq.T
        # Xᵀ = V Aᵀ + Z with Z ⊥ V, Z = Q C (SVQB); refined by a second pass when Z is ill-conditioned.
        Vt = np.swapaxes(V, 1, 2)
        A = X @ V  # (M, k, r)
        Z = np.swapaxes(X - A @ Vt, 1, 2) * (c != 0)[:, None, :]  # (M, D, k); terms with c = 0 add nothing
        scale = np.linalg.norm(X, axis=2).max(axis=1)  # (M,)
        Q, C, s = _svqb(Z, _RESID_RTOL * scale)
        if _needs_second_pass(s, scale):
            H = Vt @ Q  # (M, r, k)
            Q, C2, _ = _svqb(Q - V @ H, np.full(self.n_arms, 0.5))  # singular values are ≈ 1 (kept) or 0
            A = A + np.swapaxes(H @ C, 1, 2)
            C = C2 @ C
        G = np.concatenate([A, np.swapaxes(C, 1, 2)], axis=2)  # (M, k, r + k): rows x_j in the basis [V Q]
        core += np.swapaxes(G, 1, 2) @ (c[:, :, None] * G)
        self._diagonalise(np.concatenate([V, Q], axis=2), core)

    def _diagonalise(self, basis: FloatArray, core: FloatArray) -> None:
        """``Y = basis · core · basisᵀ`` -> eigenpairs: keep the ``rank`` largest ``|μ|`` above rounding noise."""
        mu, W = np.linalg.eigh(core)
        mags = np.abs(mu)
        order = np.argsort(-mags, axis=1, kind="stable")[:, : self.mu.shape[1]]
        mu = np.take_along_axis(mu, order, axis=1)
        alive = np.abs(mu) > _DROP_RTOL * mags.max(axis=1, keepdims=True)  # a prefix of each row
        keep = alive.sum(axis=1)
        r = int(keep.max())
        Wk = np.take_along_axis(W, order[:, None, :r], axis=2) * alive[:, None, :r]
        self.V[:, :, :r] = basis @ Wk
        self.V[:, :, r:] = 0.0
        out = np.zeros_like(self.mu)
        out[:, :r] = mu[:, :r] * alive[:, :r]
        self._install(out, keep)


def _svqb(Z: FloatArray, floor: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Orthonormal basis of the columns of ``Z`` (M, D, k): ``Z ≈ Q C`` (SVQB, Stathopoulos & Wu 2002).

    ``ZᵀZ = E diag(s²) Eᵀ`` gives ``Q = Z E diag(1/s)`` and ``C = diag(s) Eᵀ``; directions with
    ``s <= floor`` (per model) are dropped (their columns of ``Q``, rows of ``C`` and ``s`` are zero).
    The Gram matrix squares the condition number: ``Q`` is orthonormal to about ``ε·κ²``.
    """
    s2, E = np.linalg.eigh(np.swapaxes(Z, 1, 2) @ Z)
    keep = s2 > floor[:, None] ** 2
    s = np.sqrt(np.where(keep, s2, 1.0))
    Q = Z @ (E * (keep / s)[:, None, :])
    C = np.swapaxes(E * (keep * s)[:, None, :], 1, 2)
    return Q, C, np.where(keep, s, 0.0)


def _needs_second_pass(s: FloatArray, scale: FloatArray) -> bool:
    """Whether one projection + SVQB pass may have left ``[V Q]`` non-orthonormal beyond ~1e-13.

    One Gram–Schmidt pass leaves ``VᵀZ ≈ ε||x||``, so ``VᵀQ ≈ ε||x||/s_min``, and SVQB leaves
    ``QᵀQ − I ≈ εκ²``: both stay below ~256ε when every kept residual direction is at least 1/32
    of the largest context and ``κ(Z) <= 16`` (a relaxed form of Kahan's "twice is enough" test;
    Parlett 1980, §6-9). Otherwise a second pass — project ``Q`` on ``V`` again, SVQB again —
    restores orthonormality to rounding level, as in CGS2 / CholQR2.
    """
    kept = s > 0
    if not kept.any():
        return False
    smallest = np.where(kept, s, np.inf).min(axis=1)
    return bool(np.any(kept.any(axis=1) & ((32 * smallest < scale) | (s.max(axis=1) > 16 * smallest))))
