"""Baselines that do not learn: the uniformly random router and the always-the-same-model router.

They anchor every comparison (a learner must beat ``uniform``; ``fixed`` is "just use model k")
and, because they still log their probability vector, a log collected with ``uniform`` is the
ideal input for off-policy evaluation of any other policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from banditroute.core.sampling import sample_categorical
from banditroute.core.types import BatchDecision, FloatArray
from banditroute.core.validation import InputError, check_int
from banditroute.policies.base import Policy, StatelessMixin


class Uniform(StatelessMixin, Policy):
    """Choose every arm with probability ``1/M``, whatever the context."""

    name = "uniform"

    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        probs = np.full((X.shape[0], self.n_arms), 1.0 / self.n_arms)
        return BatchDecision(actions=sample_categorical(probs, rng), probs=probs)


class FixedArm(StatelessMixin, Policy):
    """Always choose arm ``arm``; the logged distribution is the one-hot vector on it.

    Args:
        arm: index of the arm (model) to route every query to, ``0 <= arm < M``.
    """

    name = "fixed"

    def __init__(self, n_arms: int, dim: int, *, arm: int, **kwargs: Any) -> None:
        super().__init__(n_arms, dim, **kwargs)
        arm = check_int(arm, "arm", minimum=0)
        if arm >= self.n_arms:
            raise InputError(f"arm must lie in [0, {self.n_arms}), got {arm}")
        self.arm = arm
        self.config["arm"] = arm

    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        n = X.shape[0]
        probs = np.zeros((n, self.n_arms))
        probs[:, self.arm] = 1.0
        return BatchDecision(actions=np.full(n, self.arm, dtype=np.int64), probs=probs)
