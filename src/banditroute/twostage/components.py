"""The linear models inside a two-stage system: one per nominator and one for the ranker.

Each stage models reward linearly, ``f(x, a) = <θ_{k(a)}, x_a>`` (spec: two_stage.md, "System"),
and must choose among a set of options that changes every round (a nominator among its pool, the
ranker among the candidates), so a component scores an arbitrary list of options given their
feature rows and parameter-vector ids:

* ``shared`` models (the synthetic setting): every item has its own feature row and all items
  share one ``θ`` (model id 0 for every item);
* disjoint models (classification converted to a bandit): every item sees the same query
  features and has its own ``θ_a`` (model id = the item), the usual per-arm linear bandit.

Two families:

* :class:`RidgeComponent` — UCB (``alpha > 0``: ``<θ̂, x_a> + α sqrt(x_aᵀ A^{-1} x_a)``) or greedy
  (``alpha = 0``), with uniform tie-breaking and optional ε-exploration. It is a
  :class:`~banditroute.policies.ridge.LinUCB` with one "arm" per model and ``λ`` multiplied by the
  input dimension, so the ridge statistics and their Sherman–Morrison updates are the project's
  one implementation.
* :class:`SoftmaxComponent` — the logistic policy ``log π_a = <θ, x_a> − log Σ_{a'} exp<θ, x_a'>``
  over the offered options, one REINFORCE step ``θ += η r ∇ log π_{a_t}`` per observed tuple.
  (``policies.loglinear.LogLinearPG`` keeps one weight vector per arm plus a bias, which cannot
  express one ``θ`` shared by items with their own features, hence this small class.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from banditroute.core.sampling import argmax_uniform, mix_uniform, softmax
from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import check_int, check_positive
from banditroute.policies.ridge import LinUCB


class Segments:
    """Consecutive groups along a 1-D array of options (the nominators' pools laid end to end).

    Group ``g`` is ``[starts[g], starts[g] + sizes[g])``; ``owner[i]`` is the group of option ``i``.
    Lets one call score, normalise and sample every pool at once instead of one pool at a time.
    """

    def __init__(self, sizes: IntArray) -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.owner = np.repeat(np.arange(len(self.sizes)), self.sizes)

    def max(self, v: FloatArray) -> FloatArray:
        out: FloatArray = np.maximum.reduceat(v, self.starts)
        return out

    def sum(self, v: FloatArray) -> FloatArray:
        out: FloatArray = np.add.reduceat(v, self.starts)
        return out

    def sample(self, probs: FloatArray, n_draws: int, rng: np.random.Generator) -> IntArray:
        """``(n_draws, groups)`` option indices, each drawn from its group's distribution in ``probs``.

        Inverse CDF on the running sum of all groups (one ``searchsorted``), clipped to the group
        so rounding can never leave it; one uniform per draw.
        """
        cdf = np.cumsum(probs)
        before = np.concatenate([[0.0], cdf])[self.starts]
        targets = before + rng.random((n_draws, len(self.sizes))) * (cdf[self.starts + self.sizes - 1] - before)
        idx = np.searchsorted(cdf, targets, side="right")
        out: IntArray = np.clip(idx, self.starts, self.starts + self.sizes - 1)
        return out


class Component(ABC):
    """A linear model over ``n_models`` parameter vectors of dimension ``dim`` that acts among offered options.

    ``needs_all_options``: whether :meth:`update` needs every offered option (policy gradients) or
    only the chosen one (ridge statistics).
    """

    needs_all_options: ClassVar[bool]
    n_models: int
    dim: int

    @abstractmethod
    def scores(self, F: FloatArray, models: IntArray) -> FloatArray:
        """Score of each option: ``F`` is ``(k, dim)`` option features, ``models`` their ``(k,)`` model ids."""

    @abstractmethod
    def distribution(self, scores: FloatArray, segments: Segments | None = None) -> FloatArray:
        """The distribution the component draws from: over the last axis, or within each of ``segments``."""

    @abstractmethod
    def update(self, F: FloatArray, models: IntArray, probs: FloatArray, chosen: Any, reward: float) -> None:
        """Learn from ``reward`` of option ``chosen`` among options ``F``/``models`` drawn with ``probs``."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Every mutable array (the arrays themselves; the caller copies)."""

    @abstractmethod
    def load(self, state: dict[str, np.ndarray]) -> None:
        """Install arrays shaped like :meth:`state`'s (already validated by the caller)."""


class RidgeComponent(LinUCB, Component):
    """LinUCB over models (``alpha = 0``: greedy ridge) that scores any list of options; ``λ`` scaled by ``dim``.

    It *is* a :class:`~banditroute.policies.ridge.LinUCB` whose arms are the parameter vectors: the
    statistics, their Sherman–Morrison updates and the state are the policy's own. The two-stage
    system validates its inputs once, then feeds observations to the policy's update hook.
    """

    needs_all_options = False

    def __init__(self, n_models: int, dim: int, *, lam: float, alpha: float, epsilon: float = 0.0) -> None:
        super().__init__(n_models, dim, alpha=alpha, lam=lam, scale_lam_by_dim=True, epsilon=epsilon, reward_range=None)
        self.n_models = self.n_arms

    def scores(self, F: FloatArray, models: IntArray) -> FloatArray:
        every = len(models) == self.n_models and np.array_equal(models, np.arange(self.n_models))
        means: FloatArray = np.einsum("kd,kd->k", F, self.theta if every else self.theta[models])
        if self.alpha == 0:
            return means
        if every:  # one row per model, in order: no gathered copy of the A^{-1} stack
            var = np.einsum("kd,kde,ke->k", F, self.A_inv, F)
        else:  # few models, many rows (shared θ): one matrix product per model
            var = np.empty(len(models))
            for m in np.unique(models):
                sel = models == m
                var[sel] = np.einsum("kd,kd->k", F[sel] @ self.A_inv[m], F[sel])
        out: FloatArray = means + self.alpha * np.sqrt(np.maximum(var, 0.0))
        return out

    def distribution(self, scores: FloatArray, segments: Segments | None = None) -> FloatArray:
        """Uniform over the (near-)maximisers, as :func:`~banditroute.core.sampling.argmax_uniform`, ε-mixed."""
        if segments is None:
            return mix_uniform(argmax_uniform(scores), self.epsilon)
        best = segments.max(scores)[segments.owner]
        ties = (scores >= best - 1e-12 * np.maximum(1.0, np.abs(best))).astype(np.float64)
        greedy = ties / segments.sum(ties)[segments.owner]
        out: FloatArray = (1.0 - self.epsilon) * greedy + self.epsilon / segments.sizes[segments.owner]
        return out

    def update(self, F: FloatArray, models: IntArray, probs: FloatArray, chosen: Any, reward: float) -> None:
        chosen = int(chosen)
        self.observe(F[chosen : chosen + 1], models[chosen : chosen + 1], np.array([reward]))

    def observe(self, rows: FloatArray, models: IntArray, rewards: FloatArray) -> None:
        """Add independent observations ``(rows[i], rewards[i])`` to models ``models[i]`` (inputs already validated)."""
        n = len(models)
        X = np.broadcast_to(rows[:, None, :], (n, self.n_models, self.dim))  # each row offered to every "arm"
        uniform = np.broadcast_to(1.0 / self.n_models, (n, self.n_models))  # unused by ridge updates
        self._learn_batch(X, np.asarray(models, dtype=np.int64), uniform, np.asarray(rewards, dtype=np.float64), {})

    def state(self) -> dict[str, np.ndarray]:
        return self._get_state()

    def load(self, state: dict[str, np.ndarray]) -> None:
        self._set_state(state)


class SoftmaxComponent(Component):
    """Logistic (softmax) policy over the offered options, trained by one REINFORCE step per tuple."""

    needs_all_options = True

    def __init__(self, n_models: int, dim: int, *, lr: float) -> None:
        self.n_models = check_int(n_models, "n_models")
        self.dim = check_int(dim, "dim")
        self.lr = check_positive(lr, "lr")
        self.theta = np.zeros((self.n_models, self.dim))

    def scores(self, F: FloatArray, models: IntArray) -> FloatArray:
        out: FloatArray = np.einsum("kd,kd->k", F, self.theta[models])
        return out

    def distribution(self, scores: FloatArray, segments: Segments | None = None) -> FloatArray:
        if segments is None:
            return softmax(scores)
        e = np.exp(scores - segments.max(scores)[segments.owner])
        out: FloatArray = e / segments.sum(e)[segments.owner]
        return out

    def update(self, F: FloatArray, models: IntArray, probs: FloatArray, chosen: Any, reward: float) -> None:
        """REINFORCE: ``θ += η r Σ_a (1[a = a_t] − π_a) x_a``, each term on the parameter vector of ``a``'s model.

        ``F``/``models``/``probs`` may hold several groups of options laid end to end (several
        nominators' pools, each with its own distribution); ``chosen`` then holds one index per
        group, and the steps, which touch disjoint parameter vectors, are taken together.
        """
        coef = -np.asarray(probs, dtype=np.float64)
        np.add.at(coef, np.asarray(chosen), 1.0)
        np.add.at(self.theta, models, (self.lr * reward * coef)[:, None] * F)

    def state(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.theta = state["theta"]


FAMILIES = ("ucb", "greedy", "pg")


def make_component(
    family: str, n_models: int, dim: int, *, lam: float, alpha: float, lr: float, epsilon: float
) -> Component:
    """``"ucb"`` / ``"greedy"`` (ridge, ``alpha = 0``) / ``"pg"`` (softmax REINFORCE) component."""
    if family == "pg":
        return SoftmaxComponent(n_models, dim, lr=lr)
    return RidgeComponent(n_models, dim, lam=lam, alpha=alpha if family == "ucb" else 0.0, epsilon=epsilon)
