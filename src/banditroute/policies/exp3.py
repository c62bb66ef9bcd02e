"""EXP3: exponential weights for adversarial (non-stochastic) bandits, ignoring the context.

Auer, Cesa-Bianchi, Freund & Schapire (2002), "The nonstochastic multiarmed bandit problem",
SIAM J. Comput. 32(1), algorithm Exp3 (Fig. 1). With ``M`` arms and weights ``w``:

* play ``p = (1 - γ) w / Σ w + γ / M``;
* observe ``r ∈ [0, 1]`` for the played arm ``a`` and form the importance-weighted estimate
  ``r̂_a = r / p_a`` (unbiased for every arm's reward, 0 for unplayed arms);
* update ``w_a ← w_a · exp(γ r̂_a / M)``.

Corollary 3.2: for a horizon ``T`` (an upper bound on the best arm's total reward when rewards
lie in [0, 1]), ``γ = min(1, sqrt(M ln M / ((e - 1) T)))`` gives expected regret at most
``2 sqrt(e - 1) sqrt(T M ln M)`` against the best fixed arm, for *any* reward sequence.

The weights are kept as ``log w`` shifted so the largest is 0, so nothing overflows however long
the run. ``p_a`` is taken from the decision being learned (the distribution the action was
really drawn from), which makes ``learn_batch`` equal to sequential ``learn`` and keeps the
estimate unbiased when decisions are taken in batches with frozen weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from banditroute.core.sampling import mix_uniform, sample_categorical, softmax
from banditroute.core.types import BatchDecision, FloatArray, IntArray
from banditroute.core.validation import InputError, check_int, check_positive
from banditroute.policies.base import Policy

DEFAULT_GAMMA = 0.1


def tuned_gamma(n_arms: int, horizon: int) -> float:
    """Auer et al. (2002), Corollary 3.2: ``min(1, sqrt(M ln M / ((e - 1) T)))``."""
    return min(1.0, math.sqrt(n_arms * math.log(n_arms) / ((math.e - 1.0) * horizon)))


class EXP3(Policy):
    """Context-free EXP3 with uniform exploration rate ``γ``.

    Args:
        gamma: exploration rate in ``(0, 1]``; every arm keeps probability at least ``γ/M``.
            When omitted: the theory-tuned value for ``horizon`` if given, else 0.1.
        horizon: planned number of rounds ``T``, used only to tune ``gamma``. The config records
            the ``gamma`` in use, so a policy rebuilt from its config is identical.
        reward_range: rewards are rescaled from this (finite) range to ``[0, 1]``.
    """

    name = "exp3"

    def __init__(
        self,
        n_arms: int,
        dim: int,
        *,
        gamma: float | None = None,
        horizon: int | None = None,
        reward_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(n_arms, dim, reward_range=reward_range)
        if self.reward_range is None:
            raise InputError("EXP3 needs bounded rewards: give a finite reward_range")
        self._low, self._span = self.reward_range[0], self.reward_range[1] - self.reward_range[0]
        if horizon is not None:
            horizon = check_int(horizon, "horizon")
        if gamma is None:
            gamma = tuned_gamma(self.n_arms, horizon) if horizon is not None and self.n_arms > 1 else DEFAULT_GAMMA
        self.gamma = check_positive(gamma, "gamma")
        if self.gamma > 1.0:
            raise InputError(f"gamma must lie in (0, 1], got {gamma!r}")
        self.config.update(gamma=self.gamma, horizon=horizon)
        self.logw = np.zeros(self.n_arms)

    def probs(self) -> FloatArray:
        """The current distribution ``(1 - γ) softmax(log w) + γ/M`` (the same for every context)."""
        return mix_uniform(softmax(self.logw), self.gamma)

    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        probs = np.tile(self.probs(), (X.shape[0], 1))
        return BatchDecision(actions=sample_categorical(probs, rng), probs=probs)

    def _learn_batch(
        self, X: FloatArray, actions: IntArray, probs: FloatArray, rewards: FloatArray, info: Mapping[str, Any]
    ) -> None:
        propensities = probs[np.arange(actions.shape[0]), actions]
        if np.any(propensities <= 0.0):
            raise InputError("EXP3 cannot learn from an action its decision gave probability 0")
        estimates = (rewards - self._low) / self._span / propensities
        np.add.at(self.logw, actions, self.gamma * estimates / self.n_arms)
        self.logw -= self.logw.max()

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"logw": self.logw}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.logw = state["logw"]
