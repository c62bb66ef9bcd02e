"""The records that flow between a policy, its environment and its learner.

:class:`EnvSpec` is what a policy is built for (arms, context dimension, reward range); it sits
here, on the ground floor, because policies, environments and the service all speak it.

Every decision carries the full probability vector it was drawn from, so any decision can be
logged and later used for off-policy evaluation (inverse propensity weighting needs
``probs[action]``; doubly-robust estimators need the whole vector).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Decision:
    """One routing decision.

    Attributes:
        action: index of the chosen arm (model), ``0 <= action < M``.
        probs: the length-``M`` probability vector ``action`` was sampled from (sums to one).
        info: policy-specific extras handed back at learn time (e.g. a log-probability); plain,
            serialisable values only.
    """

    action: int
    probs: FloatArray
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def propensity(self) -> float:
        """Probability of the chosen action under the policy that chose it."""
        return float(self.probs[self.action])

    @classmethod
    def certain(cls, action: int, n_arms: int) -> Decision:
        """``action`` taken with probability 1: what a router learns from when it, not the policy, chose
        the arm (a cascade's call, a budget pacer's pick)."""
        probs = np.zeros(n_arms)
        probs[action] = 1.0
        return cls(action, probs)


@dataclass(frozen=True)
class BatchDecision:
    """``n`` decisions taken with the same (frozen) policy parameters.

    Attributes:
        actions: shape ``(n,)`` chosen arms.
        probs: shape ``(n, M)``; row ``i`` is the distribution ``actions[i]`` was drawn from.
        info: per-row extras, each value an array with leading dimension ``n``.
    """

    actions: IntArray
    probs: FloatArray
    info: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    def __getitem__(self, i: int) -> Decision:
        return Decision(
            action=int(self.actions[i]),
            probs=self.probs[i],
            info={k: v[i] for k, v in self.info.items()},
        )

    @property
    def propensities(self) -> FloatArray:
        """``probs[i, actions[i]]`` for every row."""
        return self.probs[np.arange(len(self)), self.actions]

    @classmethod
    def stack(cls, decisions: list[Decision]) -> BatchDecision:
        """Stack single decisions (with identical info keys) into a batch."""
        if not decisions:
            raise ValueError("cannot stack an empty list of decisions")
        keys = decisions[0].info.keys()
        return cls(
            actions=np.array([d.action for d in decisions], dtype=np.int64),
            probs=np.stack([np.asarray(d.probs, dtype=np.float64) for d in decisions]),
            info={k: np.array([d.info[k] for d in decisions]) for k in keys},
        )


@dataclass(frozen=True)
class EnvSpec:
    """What a policy needs to know about an environment to be constructed for it.

    Attributes:
        n_arms: number of arms ``M``.
        dim: context dimension ``d``.
        per_arm: contexts are ``(M, d)`` (one feature row per arm) rather than ``(d,)``.
        reward_range: bounds of realised rewards, or ``None`` when unbounded.
        arm_names: display names of the arms (models).
    """

    n_arms: int
    dim: int
    per_arm: bool = False
    reward_range: tuple[float, float] | None = (0.0, 1.0)
    arm_names: tuple[str, ...] = ()

    def names(self) -> tuple[str, ...]:
        return self.arm_names or tuple(f"arm{m}" for m in range(self.n_arms))
