"""Multi-step arm selection: a cascade learned by greedy LinUCB (Poon et al. 2025, arXiv 2506.17670).

Each query is an interaction of up to ``H`` steps: pick an arm (an LLM, a retriever), observe the
call's outcome, stop or pick again; an arm is never called twice for one query. The evolving
context is (docs/specs/llm-routing.md, multi-step; [ours])
``x_h = (e, h/H, one-hot of the arms already called)``
with ``e`` the shared :class:`~banditroute.costaware.features.Featurizer` contexts. One disjoint
LinUCB (a registry policy's maths, via :func:`~banditroute.costaware.routers.ucb_scores`) scores
every step; it learns from every call.

Stopping rules (``stop``):

- ``"success"`` (the paper's, for LLMs): observe binary satisfaction (quality ≥ ``success``), stop
  on success, otherwise pick again; the LinUCB learns satisfaction.
- ``"model"`` [ours] (for retrieval, whose quality a system cannot see at query time): stop from
  what is known at query time only. The step context also holds the *post-call features* of the
  arms already called (:attr:`~banditroute.costaware.online.Split.post`: for a retriever its list's
  top score, top-1 − top-2 gap, ...),
  ``x_h = (e, h/H, one-hot of the called arms, post-features of the called arms)``;
  the LinUCB learns quality, and a second ridge model (the *answer model*) learns, from every call,
  the quality of the answer just obtained at the context after the call (its own post-features
  included). After a call the cascade continues to the arm ``b`` its mode picks next only if
  ``UCB_b(x_h) − q̂_answer(x_h) > μ · ĉ_b / c_ref`` (``ĉ_b``: the cost estimate; ``c_ref``: the
  dearest arm's mean training cost, :func:`~banditroute.costaware.routers.reference_cost`) —
  escalation is learned from the first stage's post-call features. Without post-features
  (``Split.post is None``) the same rule runs on ``(e, h/H, called)`` alone.

Modes (which arm is next):

- ``"greedy"``: the unused arm of highest UCB.
- ``"budget"``: rank unused arms by ``UCB / max(ĉ, ε)`` (``ĉ``: the cost estimate, which is the
  exact cost on prompt-priced tables) and drop those costing more than the query's allowance
  (cheap arms first: the classic cascade).
- ``"knapsack"`` (positional): at the first step choose a subset by 0/1 knapsack (value UCB,
  weight ``ĉ``, capacity the allowance), then call it in UCB order until the stopping rule stops.

Allowance [ours]: with a total budget ``B`` over ``Q`` queries, query ``t`` may spend an equal
share of what is left, ``(B − spent) / (Q − t)``; with no budget, ``∞``. When nothing fits at the
first step the cheapest arm is called if the total budget allows (so a query is never left
unanswered while money remains).

The answer returned is that of the last arm called; its cost is the sum of the calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditroute.core.types import Decision, FloatArray
from banditroute.core.validation import InputError, check_int, check_positive, check_unit_interval
from banditroute.costaware.features import Featurizer
from banditroute.costaware.knapsack import best_subset
from banditroute.costaware.online import STOP, OnlineRouter, Split
from banditroute.costaware.routers import reference_cost, ucb_scores, warm_start
from banditroute.policies.ridge import LinUCB, RidgePolicy

MODES = ("greedy", "budget", "knapsack")
STOPS = ("success", "model")
COST_FLOOR = 1e-12


class CascadeRouter(OnlineRouter):
    """Greedy multi-step LinUCB with optional budget-aware or knapsack planning (module docstring).

    Args:
        featurizer: fitted shared contexts.
        train: training split; with ``warm=True`` its first-step contexts and success labels (with
            ``stop="model"``: qualities) of every arm warm-start the LinUCB, and with ``stop="model"``
            the contexts after calling each arm first warm-start the answer model (full information,
            offline) [ours]. With ``stop="model"`` its ``post`` fixes the number of post-features.
        H: at most ``H`` calls per query (``1 <= H <= M``).
        mode: ``"greedy"``, ``"budget"`` or ``"knapsack"``.
        success: quality at or above which a call satisfies the query (``stop="success"``).
        alpha: LinUCB exploration width.
        stop: ``"success"`` or ``"model"``.
        mu: escalation price ``μ >= 0`` of ``stop="model"``.
    """

    def __init__(
        self,
        featurizer: Featurizer,
        train: Split,
        *,
        H: int = 3,
        mode: str = "greedy",
        success: float = 0.5,
        alpha: float = 0.5,
        warm: bool = False,
        stop: str = "success",
        mu: float = 0.0,
        name: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        if stop not in STOPS:
            raise InputError(f"stop must be one of {STOPS}, got {stop!r}")
        self.H = check_int(H, "H")
        if train.n_arms < self.H:
            raise InputError(f"H ({H}) cannot exceed the number of arms ({train.n_arms}): none is called twice")
        self.max_steps = self.H
        self.mode = mode
        self.featurizer = featurizer
        self.success = check_unit_interval(success, "success")
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.stop = stop
        self.mu = check_positive(mu, "mu", allow_zero=True)
        self.c_ref = reference_cost(train)
        self.name = name or (f"cascade-{mode} H={H}" + ("" if stop == "success" else f" stop=model μ={self.mu:g}"))
        self.M = train.n_arms
        self.p = train.n_post if stop == "model" else 0  # post-features per arm in the context
        self.dim = featurizer.dim + 1 + self.M + self.M * self.p
        # Success labels are binary; qualities (and the answer model's targets) may have any range.
        reward_range = (0.0, 1.0) if stop == "success" else None
        self.base = LinUCB(self.M, self.dim, alpha=self.alpha, reward_range=reward_range)
        self.answer_base = RidgePolicy(self.M, self.dim, reward_range=None) if stop == "model" else None
        if warm:
            E = featurizer.transform(train.contexts)
            if stop == "success":
                warm_start(self.base, self._contexts(E, 0, ()), (train.quality >= self.success).astype(np.float64))
            else:
                warm_start(self.base, self._contexts(E, 0, ()), train.quality)
                after = np.stack([self._contexts(E, 1, (a,), train.post) for a in range(self.M)], axis=1)
                assert self.answer_base is not None
                warm_start(self.answer_base, after, train.quality)

    def _contexts(self, E: FloatArray, h: int, called: Sequence[int], post: FloatArray | None = None) -> FloatArray:
        """``(e, h/H, one-hot(called)[, post-features of the called arms])`` for rows ``E`` (``(n, k)``,
        ``post`` ``(n, M, p)``) or one row (``(k,)``, ``post`` ``(M, p)``); only called arms' ``post`` is read."""
        E2 = np.atleast_2d(E)
        n = E2.shape[0]
        tail = np.zeros((n, 1 + self.M))
        tail[:, 0] = h / self.H
        idx = np.asarray(called, dtype=np.int64)
        tail[:, 1 + idx] = 1.0
        blocks = np.zeros((n, self.M, self.p))
        if self.p and idx.size:
            assert post is not None
            blocks[:, idx] = np.asarray(post).reshape(n, self.M, self.p)[:, idx]
        out = np.hstack([E2, tail, blocks.reshape(n, -1)])
        return out if E.ndim == 2 else out[0]

    def start(self, stream: Split, budget: float | None) -> None:
        self.E = self.featurizer.transform(stream.contexts)
        self.est = stream.est_cost
        self.Q = stream.n_rows
        self.budget = budget
        self.spent = 0.0
        if self.stop == "model" and stream.n_post != self.p:
            raise InputError(
                f"the stream has {stream.n_post} post-features per arm, the cascade was built for {self.p}"
            )
        self.post = stream.post
        self.policy = LinUCB(self.M, self.dim, alpha=self.alpha, reward_range=self.base.reward_range)
        self.policy.load_state_dict(self.base.state_dict())
        self.answer: RidgePolicy | None = None
        if self.answer_base is not None:
            self.answer = RidgePolicy(self.M, self.dim, reward_range=None)
            self.answer.load_state_dict(self.answer_base.state_dict())
        self._called: Sequence[int] = ()
        self._plan: list[int] = []
        self._query_spent = 0.0
        self._allowance = np.inf
        self._satisfied = False
        self._x: FloatArray | None = None

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        if not called:  # a new query
            self._query_spent, self._satisfied = 0.0, False
            self._allowance = np.inf if self.budget is None else (self.budget - self.spent) / (self.Q - t)
        elif self._satisfied:
            return STOP
        self._called = called
        self._x = self._contexts(self.E[t], len(called), called, None if self.post is None else self.post[t])
        mean, width = ucb_scores(self.policy, self._x)
        ucb = mean + self.alpha * width
        unused = np.ones(self.M, dtype=bool)
        unused[list(called)] = False
        left = self._allowance - self._query_spent
        cost = self.est[t]
        if self.mode == "greedy":
            arm = int(np.argmax(np.where(unused, ucb, -np.inf)))
        elif self.mode == "budget":
            ok = unused & (cost <= left)
            ratio = np.clip(ucb, 0.0, None) / np.maximum(cost, COST_FLOOR)
            arm = int(np.argmax(np.where(ok, ratio, -np.inf))) if ok.any() else STOP
        else:
            if not called:
                self._plan = best_subset(np.clip(ucb, 0.0, 1.0), cost, left).tolist()[: self.H]
            # the next planned arm not yet called (the loop's budget guard may have substituted one)
            arm = next((a for a in self._plan if a not in called), STOP)
        if arm != STOP and called and self.stop == "model" and not self._escalate(ucb[arm], cost[arm], called[-1]):
            return STOP
        if arm == STOP and not called and self.budget is not None:
            cheapest = int(np.argmin(cost))
            if cost[cheapest] <= self.budget - self.spent:
                arm = cheapest
        return arm

    def _escalate(self, ucb_next: float, cost_next: float, answer: int) -> bool:
        """``stop="model"``: is the next arm's optimism worth more than the current answer plus its price?"""
        assert self._x is not None and self.answer is not None
        q_answer = self.answer.means(self._x[None])[0, answer]
        return bool(ucb_next - q_answer > self.mu * cost_next / self.c_ref)

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        self.spent += cost
        self._query_spent += cost
        assert self._x is not None
        decision = Decision.certain(arm, self.M)
        if self.stop == "success":
            self._satisfied = quality >= self.success
            self.policy.learn(self._x, decision, float(self._satisfied))
            return
        assert self.answer is not None
        self.policy.learn(self._x, decision, quality)
        called = (*self._called, arm)
        post = None if self.post is None else self.post[t]
        self.answer.learn(self._contexts(self.E[t], len(called), called, post), decision, quality)
