"""PILOT (Panda et al. 2025, arXiv 2508.21141): a preference prior, LinUCB on top, a knapsack budget.

docs/specs/llm-routing.md (PILOT), step by step:

1. **Query projection** ``ψ(q) = W φ(q) + b`` (``φ`` = the frozen embedding), learned with a cosine
   triplet loss ``max(0, m − cos(ψ_a, ψ_p) + cos(ψ_a, ψ_n))``: anchor ``a`` and positive ``p`` are
   queries on which LLM ``i`` beat LLM ``j``, the negative ``n`` one on which ``j`` beat ``i``.
2. **LLM vectors** ``θ_l`` with ``ψ`` frozen: for a preference (q, i, j, winner),
   ``P(i wins) = σ(s · (cos(ψ̂_q, θ_i) − cos(ψ̂_q, θ_j)))`` — the two-way softmax over scaled
   cosines — fitted by binary cross-entropy.
   Without human preferences the pairs are *pseudo-preferences* from a training split's scores
   (``i`` beats ``j`` on ``q`` iff ``score_i(q) > score_j(q)``; ties carry no preference).
   Both losses are minimised full-batch by L-BFGS (scipy) with analytic gradients, in numpy.
3. **Online**: LinUCB on ``x = (ψ̂(q), 1)``, one model per LLM, initialised from the prior —
   ``A_a = λ_a I``, ``b_a = λ_a θ_a^prior`` so that ``θ̂_a = θ_a^prior`` before any feedback.
   [ours] The reward model is the cosine made affine, ``x ᵀ θ_a = s_a cos(ψ̂, θ_a) + o_a``, with
   ``(s_a, o_a)`` the least-squares fit of the training qualities — the paper's cosine score is a
   preference scale, the router needs a quality scale.
4. **Budget**: :class:`~banditroute.costaware.knapsack.KnapsackPacer` with values = LinUCB's optimistic
   quality estimates (clipped to [0, 1]) and costs = the cost estimates; ``L, U`` from the
   training split's predicted-value-to-cost ratios.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from banditroute.core.types import Decision, FloatArray, IntArray
from banditroute.core.validation import InputError, check_int, check_positive
from banditroute.costaware.features import unit_rows
from banditroute.costaware.knapsack import ABSTAIN, KnapsackPacer, ratio_bounds
from banditroute.costaware.online import STOP, OnlineRouter, Split
from banditroute.costaware.routers import ucb_scores
from banditroute.policies.ridge import LinUCB

EPS = 1e-12


# ---------------------------------------------------------------------------------------------- preferences
@dataclass(frozen=True)
class Preferences:
    """Pairwise preferences ``(query, i, j, y)``: ``y = 1`` if LLM ``i`` won on that query, else 0."""

    query: IntArray
    i: IntArray
    j: IntArray
    y: FloatArray

    def __len__(self) -> int:
        return int(self.query.shape[0])


def pseudo_preferences(scores: FloatArray, *, tie_tol: float = 1e-9) -> Preferences:
    """Every pair ``i < j`` whose scores differ by more than ``tie_tol`` on a query, with its winner."""
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim != 2 or S.shape[1] < 2:
        raise InputError(f"scores must be (n, M >= 2), got shape {S.shape}")
    i, j = np.triu_indices(S.shape[1], k=1)
    diff = S[:, i] - S[:, j]  # (n, pairs)
    q, p = np.nonzero(np.abs(diff) > tie_tol)
    return Preferences(
        q.astype(np.int64), i[p].astype(np.int64), j[p].astype(np.int64), (diff[q, p] > 0).astype(np.float64)
    )


def sample_triplets(prefs: Preferences, n_triplets: int, rng: np.random.Generator) -> IntArray:
    """``(n_triplets, 3)`` query indices (anchor, positive, negative) from the preferences.

    An ordered pair (winner ``i``, loser ``j``) is drawn in proportion to how many queries ``i``
    won against ``j``; anchor and positive are two distinct such queries, the negative one on
    which ``j`` beat ``i``. Pairs lacking two wins one way or one the other way are skipped.
    """
    n_triplets = check_int(n_triplets, "n_triplets")
    M = int(max(prefs.i.max(), prefs.j.max())) + 1
    winner = np.where(prefs.y > 0, prefs.i, prefs.j)
    loser = np.where(prefs.y > 0, prefs.j, prefs.i)
    key = winner * M + loser  # one id per ordered (winner, loser) pair
    members = prefs.query[np.argsort(key, kind="stable")]  # queries grouped by key
    counts = np.bincount(key, minlength=M * M)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keys = np.arange(M * M)
    reverse = (keys % M) * M + keys // M  # the key of (loser, winner)
    weights = np.where((counts >= 2) & (counts[reverse] >= 1), counts, 0).astype(np.float64)
    if weights.sum() == 0:
        raise InputError("no LLM pair has two queries won by one side and one by the other: cannot build triplets")
    side = rng.choice(M * M, size=n_triplets, p=weights / weights.sum())
    other = reverse[side]
    a_pos = rng.integers(0, counts[side])
    p_pos = (a_pos + rng.integers(1, counts[side])) % counts[side]  # a different query of the same side
    n_pos = rng.integers(0, counts[other])
    return np.stack(
        [members[starts[side] + a_pos], members[starts[side] + p_pos], members[starts[other] + n_pos]], axis=1
    ).astype(np.int64)


# ---------------------------------------------------------------------------------------------- losses
def _cos_and_grads(U: FloatArray, V: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Row-wise ``cos(u, v)`` and its gradients with respect to ``u`` and ``v``."""
    nu = np.linalg.norm(U, axis=1, keepdims=True) + EPS
    nv = np.linalg.norm(V, axis=1, keepdims=True) + EPS
    Uh, Vh = U / nu, V / nv
    c = np.sum(Uh * Vh, axis=1)
    return c, (Vh - c[:, None] * Uh) / nu, (Uh - c[:, None] * Vh) / nv


def triplet_loss(
    params: FloatArray, Phi: FloatArray, triplets: IntArray, k: int, margin: float, weight_decay: float
) -> tuple[float, FloatArray]:
    """Mean cosine triplet hinge of ``ψ = W φ + b`` plus ``weight_decay · ||W||²``; returns (loss, gradient)."""
    d = Phi.shape[1]
    W, b = params[: k * d].reshape(k, d), params[k * d :]
    Psi = Phi @ W.T + b
    a, p, n = triplets.T
    c_ap, g_a1, g_p = _cos_and_grads(Psi[a], Psi[p])
    c_an, g_a2, g_n = _cos_and_grads(Psi[a], Psi[n])
    hinge = margin - c_ap + c_an
    active = (hinge > 0)[:, None] / len(a)
    G = np.zeros_like(Psi)
    np.add.at(G, a, active * (g_a2 - g_a1))
    np.add.at(G, p, -active * g_p)
    np.add.at(G, n, active * g_n)
    loss = float(np.maximum(hinge, 0.0).mean() + weight_decay * np.sum(W * W))
    grad = np.concatenate([(G.T @ Phi + 2 * weight_decay * W).ravel(), G.sum(axis=0)])
    return loss, grad


def preference_loss(
    params: FloatArray, Psi_hat: FloatArray, prefs: Preferences, scale: float
) -> tuple[float, FloatArray]:
    """Mean BCE of ``σ(s (cos(ψ̂_q, θ_i) − cos(ψ̂_q, θ_j)))`` against the winners; returns (loss, gradient)."""
    k = Psi_hat.shape[1]
    Theta = params.reshape(-1, k)
    nt = np.linalg.norm(Theta, axis=1) + EPS
    C = Psi_hat @ (Theta / nt[:, None]).T  # (n, M) cosines (ψ̂ rows are unit)
    z = scale * (C[prefs.query, prefs.i] - C[prefs.query, prefs.j])
    # BCE with logits, stably: log(1 + e^z) − y z
    loss = float(np.mean(np.logaddexp(0.0, z) - prefs.y * z))
    dz = (1.0 / (1.0 + np.exp(-z)) - prefs.y) * scale / len(z)
    dC = np.zeros_like(C)
    np.add.at(dC, (prefs.query, prefs.i), dz)
    np.add.at(dC, (prefs.query, prefs.j), -dz)
    # dcos(ψ̂, θ)/dθ = (ψ̂ − cos θ̂) / ||θ||
    grad = (dC.T @ Psi_hat - (dC * C).sum(axis=0)[:, None] * (Theta / nt[:, None])) / nt[:, None]
    return loss, grad.ravel()


# ---------------------------------------------------------------------------------------------- the prior
@dataclass(frozen=True)
class PreferencePrior:
    """A trained PILOT prior: the projection, the LLM vectors and their quality calibration.

    Attributes:
        W, b: the projection ``ψ = W φ + b`` (``(k, d)``, ``(k,)``).
        theta: ``(M, k)`` unit LLM vectors.
        slope, offset: ``(M,)`` per-LLM affine map from cosine to quality (step 3, [ours]).
        preference_accuracy: share of the training pseudo-preferences the vectors order correctly.
    """

    W: FloatArray
    b: FloatArray
    theta: FloatArray
    slope: FloatArray
    offset: FloatArray
    preference_accuracy: float

    @property
    def dim(self) -> int:
        """Dimension of the online features ``(ψ̂, 1)``."""
        return int(self.W.shape[0]) + 1

    def features(self, E: FloatArray) -> FloatArray:
        """Online contexts ``x = (ψ̂(q), 1)`` for embeddings ``E`` (``(n, d)``)."""
        Psi = unit_rows(np.asarray(E, dtype=np.float64) @ self.W.T + self.b)
        return np.hstack([Psi, np.ones((Psi.shape[0], 1))])

    def vectors(self) -> FloatArray:
        """``θ_a^prior = (s_a θ̂_a, o_a)``, so that ``xᵀθ_a^prior = s_a cos(ψ̂, θ̂_a) + o_a``."""
        return np.hstack([self.slope[:, None] * self.theta, self.offset[:, None]])

    def predict(self, E: FloatArray) -> FloatArray:
        """Prior quality estimate of every LLM, ``(n, M)``."""
        return self.features(E) @ self.vectors().T


def fit_preference_prior(
    E: FloatArray,
    scores: FloatArray,
    rng: np.random.Generator,
    *,
    dim: int = 32,
    n_triplets: int = 20_000,
    margin: float = 0.3,
    weight_decay: float = 1e-4,
    scale: float = 10.0,
    max_iter: int = 200,
    max_pairs: int = 200_000,
) -> PreferencePrior:
    """Steps 1–2 of PILOT on training embeddings ``E`` (``(n, d)``) and scores (``(n, M)``), plus the calibration.

    The projection starts from the top-``dim`` principal directions of ``E`` (centred), so the
    triplet loss refines a sensible subspace instead of a random one.
    """
    E = np.asarray(E, dtype=np.float64)
    S = np.asarray(scores, dtype=np.float64)
    if E.ndim != 2 or S.ndim != 2 or E.shape[0] != S.shape[0] or E.shape[0] < 3:
        raise InputError(f"E (n, d) and scores (n, M) need the same n >= 3 rows, got {E.shape} and {S.shape}")
    k = min(check_int(dim, "dim"), E.shape[1])
    prefs = pseudo_preferences(S)
    if len(prefs) > max_pairs:  # a uniform subsample keeps the BCE step's cost bounded
        keep = np.sort(rng.choice(len(prefs), size=max_pairs, replace=False))
        prefs = Preferences(prefs.query[keep], prefs.i[keep], prefs.j[keep], prefs.y[keep])

    # Step 1: projection by the cosine triplet loss.
    mean = E.mean(axis=0)
    _, _, Vt = np.linalg.svd(E - mean, full_matrices=False)
    W0 = Vt[:k]
    x0 = np.concatenate([W0.ravel(), -W0 @ mean])
    triplets = sample_triplets(prefs, n_triplets, rng)
    res = minimize(
        triplet_loss,
        x0,
        args=(
            E,
            triplets,
            k,
            check_positive(margin, "margin"),
            check_positive(weight_decay, "weight_decay", allow_zero=True),
        ),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": check_int(max_iter, "max_iter")},
    )
    W, b = res.x[: k * E.shape[1]].reshape(k, -1), res.x[k * E.shape[1] :]
    Psi_hat = unit_rows(E @ W.T + b)

    # Step 2: LLM vectors by BCE on the preferences; start each at the mean ψ̂ of its won queries.
    M = S.shape[1]
    won = np.zeros((E.shape[0], M))
    np.add.at(won, (prefs.query, np.where(prefs.y > 0, prefs.i, prefs.j)), 1.0)
    theta0 = unit_rows(won.T @ Psi_hat + 1e-6 * rng.standard_normal((M, k)))
    res = minimize(
        preference_loss,
        theta0.ravel(),
        args=(Psi_hat, prefs, check_positive(scale, "scale")),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    theta = unit_rows(res.x.reshape(M, k))
    C = Psi_hat @ theta.T
    accuracy = float(np.mean((C[prefs.query, prefs.i] > C[prefs.query, prefs.j]) == (prefs.y > 0)))

    # Calibration [ours]: quality ≈ slope · cos + offset per LLM, least squares on the training split.
    slope, offset = np.empty(M), np.empty(M)
    for a in range(M):
        design = np.stack([C[:, a], np.ones(len(C))], axis=1)
        slope[a], offset[a] = np.linalg.lstsq(design, S[:, a], rcond=None)[0]
    return PreferencePrior(W, b, theta, slope, offset, accuracy)


# ---------------------------------------------------------------------------------------------- online
class PriorLinUCB(LinUCB):
    """LinUCB whose models start at a prior: ``A_a = λ_a I``, ``b_a = λ_a θ_a^prior`` (docs/specs/llm-routing.md,
    PILOT step 2).

    Args:
        prior: ``(M, d)`` prior parameter vectors ``θ_a^prior``.
        strength: ``λ_a`` — trust in the prior (a scalar or one per arm, each > 0); with a zero
            prior this is plain LinUCB with ``lam = λ``.
        alpha: LinUCB's exploration width.
    """

    name = "prior-linucb"

    def __init__(
        self, n_arms: int, dim: int, *, prior: Any, strength: Any = 1.0, alpha: float = 1.0, **kwargs: Any
    ) -> None:
        prior_arr = np.array(prior, dtype=np.float64)
        lam = np.broadcast_to(np.asarray(strength, dtype=np.float64), (n_arms,)).copy()
        if prior_arr.shape != (n_arms, dim) or not np.all(np.isfinite(prior_arr)):
            raise InputError(f"prior must be a finite ({n_arms}, {dim}) array, got shape {prior_arr.shape}")
        if not np.all(np.isfinite(lam)) or np.any(lam <= 0):
            raise InputError(f"strength must be > 0 (scalar or one per arm), got {strength!r}")
        super().__init__(n_arms, dim, alpha=alpha, lam=1.0, **kwargs)
        self.config.update(strength=lam.tolist())
        self.A_inv = np.eye(dim) / lam[:, None, None]
        self.b = lam[:, None] * prior_arr
        self.theta = prior_arr.copy()


class PilotRouter(OnlineRouter):
    """PILOT: the preference prior, LinUCB initialised from it, and the knapsack budget (module docstring).

    Args:
        prior: a :class:`PreferencePrior` from the training split.
        train: the training split (for the knapsack's ratio bounds).
        strength: ``λ_a``, trust in the prior (``use_prior=False``: plain LinUCB on ``ψ̂`` with ``λ = 1``).
        alpha: LinUCB exploration width.
        n_bins: knapsack bins over the stream.
        learn: keep learning online (``False``: the prior alone, an ablation).
    """

    def __init__(
        self,
        prior: PreferencePrior,
        train: Split,
        *,
        strength: float = 100.0,
        alpha: float = 0.1,
        n_bins: int = 10,
        use_prior: bool = True,
        learn: bool = True,
        name: str = "pilot",
    ) -> None:
        self.prior = prior
        self.strength = check_positive(strength, "strength")
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.n_bins = check_int(n_bins, "n_bins")
        self.use_prior = bool(use_prior)
        self.learn = bool(learn)
        self.name = name
        values = np.clip(prior.predict(train.contexts), 0.0, 1.0) if use_prior else train.quality
        self.L, self.U = ratio_bounds(values, train.est_cost)

    def start(self, stream: Split, budget: float | None) -> None:
        self.X = self.prior.features(stream.contexts)
        self.est, self.upper = stream.est_cost, stream.upper_cost
        M, d = stream.n_arms, self.X.shape[1]
        prior = self.prior.vectors() if self.use_prior else np.zeros((M, d))
        self.policy = PriorLinUCB(
            M, d, prior=prior, strength=self.strength if self.use_prior else 1.0, alpha=self.alpha
        )
        n_bins = min(self.n_bins, stream.n_rows)
        self.pacer = None if budget is None else KnapsackPacer(budget, stream.n_rows, n_bins, self.L, self.U)

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        if called:
            return STOP
        mean, width = ucb_scores(self.policy, self.X[t])
        value = mean + self.alpha * width
        if self.pacer is None:
            return int(np.argmax(value))
        arm = self.pacer.choose(np.clip(value, 0.0, 1.0), self.est[t], self.upper[t])
        if arm == ABSTAIN:
            self.pacer.charge(0.0)
            return STOP
        return arm

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        if self.pacer is not None:
            self.pacer.charge(cost)
        if self.learn:
            probs = np.zeros(self.policy.n_arms)
            probs[arm] = 1.0
            self.policy.learn(self.X[t], Decision(arm, probs), quality)
