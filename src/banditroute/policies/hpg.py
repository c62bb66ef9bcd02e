"""HPG — Hypentropy Policy Gradient: log-quadratic routing learned by online mirror descent.

The policy (Dai, Golrezaei & Jaillet 2026, "Policy Regret for Embedding Model Routing"; the
parameterisation is ours, see docs/specs/hpg.md) is

    π_Θ(m | x) = softmax_m(x̃_mᵀ Θ_m x̃_m),   x̃ = (x, 1),   Θ_m symmetric (D×D, D = d + 1).

One round of learning (docs/specs/hpg.md §3), with ``π`` the decision's probability vector (the distribution
the action ``a`` was really drawn from) and ``b`` the baseline:

1. REINFORCE gradient of ``V(Θ) = Σ_m π_Θ(m|x) r(m)``: ``Ĝ_m = (r − b)(1[m = a] − π(m)) x̃_m x̃_mᵀ``
   (rank one; unbiased for ``∇_{Θ_m} V`` since ``E_a[(1[m=a] − π(m)) r(a)] = π(m)(r(m) − V)``).
2. Mirror ascent in the dual: ``Y_m ← Y_m + η Ĝ_m`` with ``Y_m = ∇Φ_β(Θ_m)`` (spectral hypentropy,
   :mod:`banditroute.policies.hypentropy`), ``Θ_m = (∇Φ_β)^{-1}(Y_m)``.
3. Bregman projection onto ``Σ_m ||Θ_m||_* ≤ τ``: when violated, soft-threshold every dual
   eigenvalue by the ``ν`` of :func:`~banditroute.policies.hypentropy.projection_threshold`.

The dual matrices live behind the :class:`DualStore` seam: :class:`ExactDualStore` (dense ``Y``,
``numpy.linalg.eigh`` after every change — the reference) or the factored low-rank store of
:mod:`banditroute.policies.hpg_fast` (``mode="fast"``). ``learn_batch`` applies the rounds one
after the other: mirror steps do not commute with the projection, so a batched update would be a
different algorithm (the fast store may offer one; see its docstring).

Ablations under the same machinery [ours]:

* ``regularizer="euclidean"``: identity mirror map (online gradient ascent on Θ); with
  ``tau=None`` this is the "unconstrained" log-quadratic policy.
* ``features="linear"``: the log-linear class ``softmax_m(w_mᵀ x̃_m)``. A vector is the diagonal
  matrix ``diag(w)``, whose eigenvalues are its entries, so the spectral machinery becomes the
  entrywise hypentropy of Ghai et al. (2020) and the nuclear ball becomes the ℓ1 ball
  ``Σ_m ||w_m||_1 ≤ τ``: the gradient step adds ``η (r − b)(1[m=a] − π(m)) x̃_m`` to the dual.
* ``tau=None`` removes the constraint for any regulariser.

Hyper-parameters: ``tau`` bounds the logit range (``|x̃ᵀΘ_m x̃| ≤ ||Θ_m||_* ||x̃||²``), so a
near-deterministic policy needs per-model nuclear norms of order ``10·s`` and a small ``τ`` keeps
the policy soft; ``β·η`` is the initial (Euclidean) primal step and small ``β`` makes learning
multiplicative. Defaults (``τ = 100`` and ``TUNED``) are checked by the grid in
``benchmarks/hpg_experiments.py`` (``docs/results/hpg.md``: β and η < 3 hardly matter near them;
an inactive ball, ``τ >= 300``, gives a 3.5× lower final gap on low-rank experts, but ``τ = 100`` is
kept as the calibration of docs/results/hpg.md and so that the constraint binds). :class:`TheoryHPG` uses the
theory-style choice of :func:`theory_hyperparameters`; :class:`ParameterFreeHPG` sets all three itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from banditroute.core.sampling import sample_categorical, softmax
from banditroute.core.types import BatchDecision, FloatArray, IntArray
from banditroute.core.validation import InputError, check_int, check_positive
from banditroute.policies.base import Policy
from banditroute.policies.hypentropy import ball_norm, primal_eigenvalues, projection_threshold, soft_threshold

BASELINES = (None, "mean")
MODES = ("exact", "fast")
REGULARIZERS = ("hypentropy", "euclidean")
FEATURES = ("quadratic", "linear")
PROJECTION_RTOL = 1e-12  # relative slack before the projection acts (rounding; see HPG._project)
# Defaults per regulariser (with tau=100): the calibration of docs/results/hpg.md on low-rank experts (d=32, M=4, s=2),
# checked against the one-at-a-time grid of benchmarks/hpg_experiments.py.
TUNED: dict[str, dict[str, float]] = {
    "hypentropy": {"eta": 1.0, "beta": 0.01},
    "euclidean": {"eta": 1.0},
}


class DualStore(Protocol):
    """Per-model dual matrices Y_m (D×D symmetric, D = d+1) and their primal Θ_m = (∇Φ_β)^{-1}(Y_m)."""

    def logits(self, Xt: FloatArray) -> FloatArray:
        """``Xt`` (n, M, D) -> (n, M): ``x̃_mᵀ Θ_m x̃_m``."""
        ...

    def add_rank_one(self, coef: FloatArray, Xt: FloatArray) -> None:
        """``coef`` (M,), ``Xt`` (M, D): ``Y_m += coef_m x̃_m x̃_mᵀ``."""
        ...

    def dual_eigenvalues(self) -> list[FloatArray]:
        """One array per model (the nonzero ones suffice)."""
        ...

    def soft_threshold(self, nu: float) -> None:
        """``μ -> sign(μ)·max(|μ| − ν, 0)`` for every model (eigenvectors unchanged)."""
        ...

    def nuclear_norms(self) -> FloatArray:
        """(M,) ``||Θ_m||_* = Σ β sinh(|μ|)``."""
        ...

    def get_state(self) -> dict[str, np.ndarray]: ...

    def set_state(self, state: dict[str, np.ndarray]) -> None: ...


def quadratic_logits(Theta: FloatArray, Xt: FloatArray) -> FloatArray:
    """``x̃_mᵀ Θ_m x̃_m`` for ``Theta`` (M, D, D) and ``Xt`` (n, M, D); shared contexts in one product."""
    if Xt.strides[1] == 0:  # a broadcast view: every model sees the same x̃, one product per model, no copy of Θ
        X0 = Xt[:, 0, :]
        return np.einsum("mdn,nd->nm", Theta @ X0.T, X0)
    return np.einsum("nmd,mde,nme->nm", Xt, Theta, Xt)


def rank_one_terms(coef: FloatArray, Xt: FloatArray) -> FloatArray:
    """``coef_m x̃_m x̃_mᵀ`` stacked (M, D, D); a shared context (broadcast view) forms ``x̃x̃ᵀ`` once."""
    if Xt.strides[0] == 0:
        return coef[:, None, None] * np.outer(Xt[0], Xt[0])
    return coef[:, None, None] * (Xt[:, :, None] * Xt[:, None, :])


class ExactDualStore:
    """The reference store: each ``Y_m = V_m diag(μ_m) V_mᵀ`` in full eigen-form (``D`` pairs).

    ``add_rank_one`` forms the dense ``Y_m + c x̃x̃ᵀ`` and re-diagonalises it with
    ``numpy.linalg.eigh`` (``O(M D³)`` per round); ``soft_threshold`` changes ``μ`` only. Keeping the
    eigenpairs (not ``Y``) as the state costs one ``eigh`` per round and makes a restored store
    continue bit for bit. ``Θ_m = V_m diag(β sinh μ_m) V_mᵀ`` is cached between changes.

    Args:
        n_arms: number of models ``M``.
        D: matrix size ``d + 1``.
        beta: hypentropy scale ``β``.
    """

    def __init__(self, n_arms: int, D: int, beta: float) -> None:
        self.beta = beta
        self.mu = np.zeros((n_arms, D))
        self.V = np.tile(np.eye(D), (n_arms, 1, 1))
        self._theta: FloatArray | None = None

    def primal(self) -> FloatArray:
        """``Θ`` (M, D, D)."""
        if self._theta is None:
            self._theta = _compose(self.V, primal_eigenvalues(self.mu, self.beta))
        return self._theta

    def logits(self, Xt: FloatArray) -> FloatArray:
        return quadratic_logits(self.primal(), Xt)

    def add_rank_one(self, coef: FloatArray, Xt: FloatArray) -> None:
        Y = _compose(self.V, self.mu) + rank_one_terms(coef, Xt)
        self.mu, self.V = np.linalg.eigh(Y)
        self._theta = None

    def dual_eigenvalues(self) -> list[FloatArray]:
        return list(self.mu)

    def soft_threshold(self, nu: float) -> None:
        self.mu = soft_threshold(self.mu, nu)
        self._theta = None

    def nuclear_norms(self) -> FloatArray:
        return np.array([ball_norm(mu, self.beta) for mu in self.mu])

    def get_state(self) -> dict[str, np.ndarray]:
        return {"mu": self.mu, "V": self.V}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        V = state["V"]
        if not np.allclose(V.transpose(0, 2, 1) @ V, np.eye(V.shape[-1]), atol=1e-8):
            raise InputError("state['V'] must hold orthonormal eigenvector matrices")
        self.mu, self.V = state["mu"], V
        self._theta = None


class EuclideanDualStore:
    """Identity mirror map (``Θ = Y``): dense ``Y`` (M, D, D), eigenpairs computed only when asked.

    Online gradient ascent on ``Θ``; unconstrained it never diagonalises (``O(M D²)`` per round).
    With a radius the Euclidean projection onto the nuclear ball is again a soft-threshold of the
    eigenvalues, with ``Σ max(|μ| − ν, 0) = τ``.
    """

    def __init__(self, n_arms: int, D: int) -> None:
        self.Y = np.zeros((n_arms, D, D))
        self._eig: tuple[FloatArray, FloatArray] | None = None

    def _eigh(self) -> tuple[FloatArray, FloatArray]:
        if self._eig is None:
            mu, V = np.linalg.eigh(self.Y)
            self._eig = (mu, V)
        return self._eig

    def primal(self) -> FloatArray:
        """``Θ = Y`` (M, D, D)."""
        return self.Y

    def logits(self, Xt: FloatArray) -> FloatArray:
        return quadratic_logits(self.Y, Xt)

    def add_rank_one(self, coef: FloatArray, Xt: FloatArray) -> None:
        self.Y += rank_one_terms(coef, Xt)
        self._eig = None

    def dual_eigenvalues(self) -> list[FloatArray]:
        return list(self._eigh()[0])

    def soft_threshold(self, nu: float) -> None:
        mu, V = self._eigh()
        self.Y = _compose(V, soft_threshold(mu, nu))
        self._eig = None

    def nuclear_norms(self) -> FloatArray:
        return np.abs(self._eigh()[0]).sum(axis=1)

    def get_state(self) -> dict[str, np.ndarray]:
        return {"Y": self.Y}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if not np.array_equal(state["Y"], state["Y"].transpose(0, 2, 1)):
            raise InputError("state['Y'] must hold symmetric matrices")
        self.Y = state["Y"]
        self._eig = None


class LinearDualStore:
    """The log-linear class as diagonal matrices: dual vectors ``y`` (M, D), primal ``w = β sinh(y)``.

    Implements the :class:`DualStore` protocol with "eigenvalues" = coordinates, "rank-one update"
    = ``y_m += coef_m x̃_m`` and "nuclear norm" = ``||w_m||_1`` (module docstring); ``beta=None``
    is the identity map (``w = y``).
    """

    def __init__(self, n_arms: int, D: int, beta: float | None) -> None:
        self.beta = beta
        self.y = np.zeros((n_arms, D))

    def primal(self) -> FloatArray:
        return self.y if self.beta is None else primal_eigenvalues(self.y, self.beta)

    def logits(self, Xt: FloatArray) -> FloatArray:
        if Xt.strides[1] == 0:
            return Xt[:, 0, :] @ self.primal().T
        return np.einsum("nmd,md->nm", Xt, self.primal())

    def add_rank_one(self, coef: FloatArray, Xt: FloatArray) -> None:
        self.y += coef[:, None] * Xt

    def dual_eigenvalues(self) -> list[FloatArray]:
        return list(self.y)

    def soft_threshold(self, nu: float) -> None:
        self.y = soft_threshold(self.y, nu)

    def nuclear_norms(self) -> FloatArray:
        return np.array([ball_norm(y, self.beta) for y in self.y])

    def get_state(self) -> dict[str, np.ndarray]:
        return {"y": self.y}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.y = state["y"]


def _compose(V: FloatArray, w: FloatArray) -> FloatArray:
    """``V diag(w) Vᵀ`` for stacks ``V`` (M, D, D), ``w`` (M, D), made exactly symmetric."""
    A = (V * w[:, None, :]) @ V.transpose(0, 2, 1)
    return 0.5 * (A + A.transpose(0, 2, 1))


def _choice(value: Any, name: str, options: tuple[Any, ...]) -> Any:
    if value not in options:
        raise InputError(f"{name} must be one of {options}, got {value!r}")
    return value


def theory_hyperparameters(n_arms: int, dim: int, tau: float, horizon: int) -> dict[str, float]:
    """Theory-style ``β ≈ τ/(dM)`` and ``η = sqrt(log(1 + τ/β)/(τT))`` (docs/specs/hpg.md §3, [ours]).

    ``log(1 + τ/β)`` is the hypentropy's diameter over the ball divided by ``τ``; these are
    conservative (worst-case) values and learn far more slowly than ``TUNED`` on benign data.
    Raises :class:`InputError` on a non-positive count, radius or horizon.
    """
    n_arms, dim, horizon = check_int(n_arms, "n_arms"), check_int(dim, "dim"), check_int(horizon, "horizon")
    tau = check_positive(tau, "tau")
    beta = tau / (dim * n_arms)
    return {"beta": beta, "eta": math.sqrt(math.log1p(tau / beta) / (tau * horizon))}


class HPG(Policy):
    """Hypentropy policy gradient over the log-quadratic class (module docstring).

    Args:
        eta: step size ``η``; default ``TUNED[regularizer]["eta"]``.
        tau: nuclear-ball radius ``τ`` (``None``: unconstrained; the Euclidean projection is also
            a soft-threshold of the eigenvalues).
        beta: hypentropy scale ``β``; default ``TUNED``; must be ``None`` when Euclidean.
        baseline: ``None`` (``b = 0``) or ``"mean"`` (mean of the rewards of earlier rounds).
        mode: ``"exact"`` (:class:`ExactDualStore`) or ``"fast"`` (``hpg_fast.FactoredDualStore``).
        regularizer: ``"hypentropy"`` or ``"euclidean"`` (identity mirror map).
        features: ``"quadratic"`` (log-quadratic) or ``"linear"`` (log-linear ablation).
        fast_kwargs: keyword arguments of the fast store.
    """

    name = "hpg"

    def __init__(
        self,
        n_arms: int,
        dim: int,
        *,
        eta: float | None = None,
        tau: float | None = 100.0,
        beta: float | None = None,
        baseline: str | None = None,
        mode: str = "exact",
        regularizer: str = "hypentropy",
        features: str = "quadratic",
        fast_kwargs: Mapping[str, Any] | None = None,
        reward_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(n_arms, dim, reward_range=reward_range)
        self.regularizer = _choice(regularizer, "regularizer", REGULARIZERS)
        self.features = _choice(features, "features", FEATURES)
        self.mode = _choice(mode, "mode", MODES)
        self.baseline = _choice(baseline, "baseline", BASELINES)
        tuned = TUNED[self.regularizer]
        self.eta = check_positive(tuned["eta"] if eta is None else eta, "eta")
        self.tau = None if tau is None else check_positive(tau, "tau")
        if self.regularizer == "euclidean":
            if beta is not None:
                raise InputError("beta is the hypentropy scale; pass beta=None with regularizer='euclidean'")
            self.beta = None
        else:
            self.beta = check_positive(tuned["beta"] if beta is None else beta, "beta")
        self.fast_kwargs = dict(fast_kwargs or {})
        if self.mode == "fast" and (self.features, self.regularizer) != ("quadratic", "hypentropy"):
            raise InputError("mode='fast' supports the hypentropy log-quadratic policy only")
        if self.fast_kwargs and self.mode != "fast":
            raise InputError("fast_kwargs apply to mode='fast' only")
        self.config.update(
            eta=self.eta,
            tau=self.tau,
            beta=self.beta,
            baseline=self.baseline,
            mode=self.mode,
            regularizer=self.regularizer,
            features=self.features,
            fast_kwargs=self.fast_kwargs,
        )
        self.store = self._make_store()
        self.reward_sum = np.zeros(())
        self.n_rewards = np.zeros((), dtype=np.int64)

    def _make_store(self) -> DualStore:
        D = self.dim + 1
        if self.mode == "fast":
            from banditroute.policies.hpg_fast import FactoredDualStore

            assert self.beta is not None  # fast mode is hypentropy-only (checked in __init__)
            return FactoredDualStore(self.n_arms, D, self.beta, **self.fast_kwargs)
        if self.features == "linear":
            return LinearDualStore(self.n_arms, D, self.beta)
        if self.beta is None:
            return EuclideanDualStore(self.n_arms, D)
        return ExactDualStore(self.n_arms, D, self.beta)

    # -------------------------------------------------------------- policy
    def _augment(self, X: FloatArray) -> FloatArray:
        """``(n, M, d)`` -> ``(n, M, D)`` with the bias feature; shared contexts stay a broadcast view."""
        if self._shared_context(X):
            X0 = np.concatenate([X[:, 0, :], np.ones((X.shape[0], 1))], axis=1)
            return np.broadcast_to(X0[:, None, :], (X.shape[0], self.n_arms, self.dim + 1))
        return np.concatenate([X, np.ones((*X.shape[:2], 1))], axis=2)

    def logits(self, X: FloatArray) -> FloatArray:
        """``x̃_mᵀ Θ_m x̃_m`` for validated contexts ``(n, M, d)``, shape ``(n, M)``."""
        return self.store.logits(self._augment(X))

    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        probs = softmax(self.logits(X))
        return BatchDecision(actions=sample_categorical(probs, rng), probs=probs)

    # -------------------------------------------------------------- learning
    def _learn_batch(
        self, X: FloatArray, actions: IntArray, probs: FloatArray, rewards: FloatArray, info: Mapping[str, Any]
    ) -> None:
        Xt = self._augment(X)
        for t in range(actions.shape[0]):
            b = self.reward_sum / self.n_rewards if self.baseline == "mean" and self.n_rewards > 0 else 0.0
            coef = -probs[t]
            coef[actions[t]] += 1.0
            self._step(coef * (rewards[t] - b), Xt[t])
            self.reward_sum += rewards[t]
            self.n_rewards += 1

    def _step(self, grad_coef: FloatArray, xt: FloatArray) -> None:
        """Mirror step with gradient ``Σ_m grad_coef_m x̃_m x̃_mᵀ``, then the projection."""
        self.store.add_rank_one(self.eta * grad_coef, xt)
        self._project(self.tau)

    def _project(self, tau: float | None) -> bool:
        """Bregman projection onto the radius-``tau`` ball; returns whether it was active.

        Inactive while ``Σ ||Θ_m||_* <= τ (1 + 1e-12)``: a point the last projection put on the
        sphere reads a few ulps above ``τ`` after rounding, and projecting it again would only
        move it by rounding noise (and count as "active" for :class:`ParameterFreeHPG`).
        """
        if tau is None or self.store.nuclear_norms().sum() <= tau * (1 + PROJECTION_RTOL):
            return False
        nu = projection_threshold(np.concatenate(self.store.dual_eigenvalues()), tau, self.beta)
        self.store.soft_threshold(nu)
        return True

    def _get_state(self) -> dict[str, np.ndarray]:
        store = {f"store.{k}": v for k, v in self.store.get_state().items()}
        return {**store, "reward_sum": self.reward_sum, "n_rewards": self.n_rewards}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.store.set_state({k.removeprefix("store."): v for k, v in state.items() if k.startswith("store.")})
        self.reward_sum, self.n_rewards = state["reward_sum"], state["n_rewards"]


class TheoryHPG(HPG):
    """HPG with the theory-style ``β`` and ``η`` of :func:`theory_hyperparameters` for a horizon.

    Args:
        tau: nuclear-ball radius.
        horizon: planned number of rounds ``T``.
    """

    name = "hpg-theory"

    def __init__(self, n_arms: int, dim: int, *, tau: float = 100.0, horizon: int = 20_000, **kwargs: Any) -> None:
        theory = theory_hyperparameters(n_arms, dim, tau, horizon)  # validates all four first
        super().__init__(n_arms, dim, eta=theory["eta"], tau=tau, beta=theory["beta"], **kwargs)
        self.config["horizon"] = int(horizon)


class ParameterFreeHPG(HPG):
    """HPG with no user-set ``η``, ``τ`` or ``β`` (the paper claims such a mode; this mechanism is ours).

    * **Radius by doubling.** ``τ`` starts at ``τ₀ = 10·M``: a near-deterministic policy needs logit
      gaps of order 10, i.e. per-model nuclear norms of order ``10·s``, and ``s ≥ 1`` is unknown.
      Rounds are grouped in epochs of geometric length ``W₀·2^k`` (``W₀ = 100``); when the
      projection was active in at least half the rounds of an epoch — the iterate keeps pressing
      on the ball, so the comparator is likely outside it — ``τ`` doubles. So ``τ`` at most
      doubles ``log₂(T/W₀)`` times and never grows while the constraint is slack.
    * **β tied to τ₀**: ``β = τ₀/(D·M)``, the theory-style scale, fixed (changing ``β`` would
      re-map the dual).
    * **Step size, AdaGrad-style** (Duchi, Hazan & Singer 2011, in the form of the OMD bound
      ``regret ≤ R/η + η Σ_t g_t²/(2α)``): with ``g_t = ||Ĝ_t||_op = max_m |coef_m| ||x̃_m||²`` (the
      dual norm of the nuclear norm), ``R/α ≈ 2 τ log(1 + τ/β)·(τ+β)/τ`` the hypentropy's
      diameter over its strong-convexity modulus on the ball (Ghai et al. 2020), the bound-minimising
      ``η_t = sqrt(2 log(1 + τ_t/β)) / sqrt(Σ_{s≤t} g_s²)``, capped at ``1/max_{s≤t} g_s`` so no
      single dual step changes a primal eigenvalue by more than a factor ``e``.
    * **Mean-reward baseline by default** (``baseline="mean"``). Without one, every reward in
      ``[0, 1]`` is positive and reinforces whichever model was drawn; the first adaptive steps are
      the largest allowed, so the policy can lock onto one model before the others are tried —
      observed on 1 of 5 seeds of the dimension-free benchmark (d = 16: stuck on one expert within
      the first 2,000 rounds, final gap 0.54). With the baseline a below-average reward pushes the
      drawn model down. It costs a little at the end (final gap about 0.007 instead of 0.003 on the
      seeds that did not lock in; ``docs/results/hpg.md``).
    """

    name = "hpg-free"
    TAU0_PER_MODEL = 10.0
    FIRST_EPOCH = 100

    def __init__(
        self,
        n_arms: int,
        dim: int,
        *,
        baseline: str | None = "mean",
        mode: str = "exact",
        fast_kwargs: Mapping[str, Any] | None = None,
        reward_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        n_arms, dim = check_int(n_arms, "n_arms"), check_int(dim, "dim")
        tau0 = self.TAU0_PER_MODEL * n_arms
        beta = tau0 / ((dim + 1) * n_arms)
        super().__init__(
            n_arms,
            dim,
            eta=1.0,
            tau=tau0,
            beta=beta,
            baseline=baseline,
            mode=mode,
            fast_kwargs=fast_kwargs,
            reward_range=reward_range,
        )
        for key in ("eta", "tau", "regularizer", "features"):
            del self.config[key]
        self.tau_t = np.array(tau0)
        self.grad_sq_sum = np.zeros(())
        self.grad_max = np.zeros(())
        self.epoch = np.zeros(3, dtype=np.int64)  # (length, rounds so far, rounds with an active projection)
        self.epoch[0] = self.FIRST_EPOCH

    def step_size(self) -> float:
        """The current ``η_t`` (class docstring)."""
        if self.grad_max == 0:
            return 0.0
        assert self.beta is not None
        adagrad = np.sqrt(2.0 * np.log1p(self.tau_t / self.beta) / self.grad_sq_sum)
        return float(min(adagrad, 1.0 / self.grad_max))

    def _step(self, grad_coef: FloatArray, xt: FloatArray) -> None:
        g = float(np.max(np.abs(grad_coef) * np.einsum("md,md->m", xt, xt)))
        self.grad_sq_sum += g * g
        self.grad_max = np.maximum(self.grad_max, g)
        if g > 0:
            self.store.add_rank_one(self.step_size() * grad_coef, xt)
        active = self._project(float(self.tau_t))
        self.epoch[1:] += (1, int(active))
        if self.epoch[1] == self.epoch[0]:
            if 2 * self.epoch[2] >= self.epoch[0]:
                self.tau_t = self.tau_t * 2.0
            self.epoch[:] = (2 * self.epoch[0], 0, 0)

    def _get_state(self) -> dict[str, np.ndarray]:
        adaptive = {"tau_t": self.tau_t, "grad_sq_sum": self.grad_sq_sum, "grad_max": self.grad_max}
        return {**super()._get_state(), **adaptive, "epoch": self.epoch}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        super()._set_state(state)
        self.tau_t, self.grad_sq_sum, self.grad_max = state["tau_t"], state["grad_sq_sum"], state["grad_max"]
        self.epoch = state["epoch"]
