"""Baseline routers over the registry's policies, the hindsight oracle, and helpers for ridge policies.

- :class:`PolicyRouter` runs any registered policy (``fixed``, ``uniform``, ``linucb``,
  ``egreedy``, ``hpg``, ...) on the shared :class:`~banditroute.costaware.features.Featurizer`
  contexts. It is cost-unaware unless ``mu > 0``: it then learns from the penalised reward
  ``quality − μ · cost / c_ref`` (MixLLM's trade-off written as a reward; ``c_ref`` = mean
  training cost of the dearest arm), and sweeping ``μ`` traces its quality–cost curve.
- :class:`OracleRouter`: the per-query best arm in hindsight (cheapest among ties) — a reference
  that reads the hidden qualities, never a method.
- :func:`ucb_scores` and :func:`warm_start` reuse :class:`~banditroute.policies.ridge.RidgePolicy`'s
  own statistics, so routers never re-implement ridge regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from banditroute.core.types import BatchDecision, Decision, EnvSpec, FloatArray
from banditroute.core.validation import InputError, check_int, check_positive
from banditroute.costaware.features import Featurizer
from banditroute.costaware.online import STOP, OnlineRouter, Split
from banditroute.policies.base import Policy
from banditroute.policies.registry import make_policy
from banditroute.policies.ridge import RidgePolicy

WARM_START_CHUNK = 256


def ucb_scores(policy: RidgePolicy, x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``(θ_aᵀx, sqrt(xᵀA_a⁻¹x))`` for every arm at context ``x`` (shape ``(d,)``): the ridge mean
    and confidence width LinUCB combines, from the policy's own score functions."""
    X = np.asarray(x, dtype=np.float64)[None]
    return policy.means(X)[0], policy.widths(X)[0]


def warm_start(policy: Policy, X: FloatArray, rewards: FloatArray) -> None:
    """Feed full-information training data to ``policy``: every arm ``a`` learns ``rewards[:, a]`` on
    every row of ``X`` — shared contexts ``(n, d)``, or per-arm ones ``(n, M, d)`` of which arm ``a``
    learns on ``X[:, a]`` (``learn_batch`` in chunks, so the update is exactly the policy's own)."""
    X = np.asarray(X, dtype=np.float64)
    R = np.asarray(rewards, dtype=np.float64)
    if X.ndim not in (2, 3) or R.shape != (X.shape[0], policy.n_arms) or (X.ndim == 3 and X.shape[1] != policy.n_arms):
        raise InputError(
            f"warm_start needs X (n, d) or (n, {policy.n_arms}, d) and rewards (n, {policy.n_arms}),"
            f" got {X.shape}, {R.shape}"
        )
    for arm in range(policy.n_arms):
        for i in range(0, X.shape[0], WARM_START_CHUNK):
            rows = slice(i, i + WARM_START_CHUNK)
            n = X[rows].shape[0]
            probs = np.zeros((n, policy.n_arms))
            probs[:, arm] = 1.0
            policy.learn_batch(X[rows], BatchDecision(np.full(n, arm, dtype=np.int64), probs), R[rows, arm])


def reference_cost(train: Split) -> float:
    """``c_ref``: the mean training cost of the dearest LLM (scales cost penalties to quality units)."""
    return float(train.cost.mean(axis=0).max())


class PolicyRouter(OnlineRouter):
    """A registry policy on the shared contexts, optionally with a cost-penalised reward (module docstring).

    Args:
        policy: registry name (``banditroute policies``).
        featurizer: fitted :class:`Featurizer` (the same one for every contextual baseline).
        c_ref: cost scale of the penalty (see :func:`reference_cost`).
        mu: cost penalty ``μ >= 0`` (0: learn quality only).
        params: policy parameters (registry overrides).
        name: display name (default: the policy name, with ``μ`` when positive).
    """

    def __init__(
        self,
        policy: str,
        featurizer: Featurizer,
        *,
        c_ref: float = 1.0,
        mu: float = 0.0,
        params: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.policy_name = policy
        self.featurizer = featurizer
        self.c_ref = check_positive(c_ref, "c_ref")
        self.mu = check_positive(mu, "mu", allow_zero=True)
        self.params = dict(params or {})
        self.name = name or (policy if self.mu == 0 else f"{policy} μ={self.mu:g}")
        self.policy: Policy | None = None
        self._last: Decision | None = None

    def start(self, stream: Split, budget: float | None) -> None:
        self.X = self.featurizer.transform(stream.contexts)
        # Penalised rewards are unbounded below: declare no reward range.
        spec = EnvSpec(n_arms=stream.n_arms, dim=self.X.shape[1], reward_range=None if self.mu else (0.0, 1.0))
        self.policy = make_policy(self.policy_name, spec, **self.params)

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        assert self.policy is not None, "start() first"
        self._last = self.policy.act(self.X[t], rng)
        return self._last.action

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        assert self.policy is not None and self._last is not None
        if arm != self._last.action:  # the budget guard replaced the choice: learn from what was played
            self._last = Decision(arm, self._last.probs, self._last.info)
        self.policy.learn(self.X[t], self._last, quality - self.mu * cost / self.c_ref)


def fixed_router(arm: int, arm_name: str, featurizer: Featurizer) -> PolicyRouter:
    """Always the same LLM (the registry's ``fixed`` policy)."""
    return PolicyRouter("fixed", featurizer, params={"arm": check_int(arm, "arm", minimum=0)}, name=arm_name)


class OracleRouter(OnlineRouter):
    """The best LLM for each query in hindsight (cheapest among ties); reads hidden quality — a reference."""

    name = "oracle"

    def start(self, stream: Split, budget: float | None) -> None:
        order = np.lexsort((stream.est_cost, -stream.quality), axis=-1)  # per row: quality desc, cost asc
        self.best = order[:, 0]

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        return STOP if called else int(self.best[t])
