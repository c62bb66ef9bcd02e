"""Baseline routers over the registry's policies, the hindsight oracle, and helpers for ridge policies.

- :class:`PolicyRouter` runs any registered policy (``fixed``, ``uniform``, ``linucb``,
  ``egreedy``, ``hpg``, ...) on the shared :class:`~banditroute.costaware.features.Featurizer`
  contexts. It is cost-unaware unless ``mu > 0``: it then learns from the penalised reward
  ``quality − μ · cost / c_ref`` (MixLLM's trade-off written as a reward; ``c_ref`` = mean
  training cost of the dearest arm), and sweeping ``μ`` traces its quality–cost curve.
- :class:`PacedRouter`: budget-paced LinUCB from scratch — ``argmax UCB_a(x) − μ · ĉ_a / c_ref``
  over the arms whose cost bound fits, with the price ``μ`` set online by dual pacing
  (:class:`~banditroute.costaware.knapsack.DualPacer`, Balseiro, Lu & Mirrokni 2020) so that
  spending tracks the budget's per-query rate; it needs no training split, so it serves retrieval
  tables learned from bandit feedback alone as well as LLM streams.
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
from banditroute.costaware.knapsack import ABSTAIN, DualPacer
from banditroute.costaware.online import STOP, OnlineRouter, Split
from banditroute.policies.base import Policy
from banditroute.policies.registry import make_policy
from banditroute.policies.ridge import LinUCB, RidgePolicy

WARM_START_CHUNK = 256
UNTRIED_LAM = 1e-6  # a non-contextual UCB's ridge: sample means, and an untried arm's bound ~ 1000


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


class PacedRouter(OnlineRouter):
    """Budget-paced LinUCB learning quality from bandit feedback only (module docstring).

    Args:
        featurizer: fitted contexts, or ``None`` to use the stream's contexts as they are.
        contextual: ``False`` routes on a constant feature (a per-arm UCB on the sample means, with a
            negligible ridge so an untried arm has an infinite bound and is tried first) — the better
            choice when per-query signal is weak (``banditroute analyze`` says so).
        alpha: LinUCB exploration width. Rewards in [0, 1] and a ridge prior mean of 0 make an untried
            arm's bound ``alpha · ‖x‖``; below the best arm's mean it is never tried, so ``alpha`` must
            stay ≥ 1 with unit-norm contexts.
        mu0: starting price, in quality units per ``c_ref`` of cost (no training data calibrates it;
            the pacer raises it as soon as spending runs ahead of the budget's rate).
        eta: dual step size.
        name: display name.

    Without a budget the price stays 0 (plain LinUCB). ``c_ref`` is the dearest arm's cost estimate.
    """

    def __init__(
        self,
        featurizer: Featurizer | None = None,
        *,
        contextual: bool = True,
        alpha: float = 1.0,
        mu0: float = 0.0,
        eta: float = 0.05,
        name: str | None = None,
    ) -> None:
        self.featurizer = featurizer
        self.contextual = bool(contextual)
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.mu0 = check_positive(mu0, "mu0", allow_zero=True)
        self.eta = check_positive(eta, "eta", allow_zero=True)
        self.name = name or ("paced-linucb" if self.contextual else "paced-ucb")
        self.pacer: DualPacer | None = None

    def start(self, stream: Split, budget: float | None) -> None:
        if not self.contextual:
            self.X = np.ones((stream.n_rows, 1))
        else:
            self.X = stream.contexts if self.featurizer is None else self.featurizer.transform(stream.contexts)
        self.est, self.upper = stream.est_cost, stream.upper_cost
        self.c_ref = max(float(stream.est_cost.mean(axis=0).max()), 1e-12)
        lam = 1.0 if self.contextual else UNTRIED_LAM
        self.policy = LinUCB(stream.n_arms, self.X.shape[1], alpha=self.alpha, lam=lam)
        self.pacer = (
            None if budget is None else DualPacer(budget, stream.n_rows, self.mu0, eta=self.eta, scale=self.c_ref)
        )

    @property
    def price(self) -> float:
        """The current price ``μ`` of one ``c_ref`` of cost (0 without a budget)."""
        return 0.0 if self.pacer is None else self.pacer.mu

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        if called:
            return STOP
        mean, width = ucb_scores(self.policy, self.X[t])
        score = mean + self.alpha * width - self.price * self.est[t] / self.c_ref
        if self.pacer is None:
            return int(np.argmax(score))
        arm = self.pacer.choose(score, self.upper[t])
        return STOP if arm == ABSTAIN else arm

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        self.policy.learn(self.X[t], Decision.certain(arm, self.policy.n_arms), quality)
        if self.pacer is not None:
            self.pacer.charge(cost)


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
