"""Multi-step LLM selection: a cascade learned by greedy LinUCB (Poon et al. 2025, arXiv 2506.17670).

Each query is an interaction of up to ``H`` steps: pick an LLM, observe binary satisfaction
(quality ≥ ``success``), stop on success, otherwise pick again. On a static quality table the
evolving context is (docs/specs/llm-routing.md, multi-step; [ours])
``x_h = (e, h/H, one-hot of the LLMs that already failed)``
with ``e`` the shared :class:`~banditroute.costaware.features.Featurizer` contexts, and an LLM is
never called twice for one query. One disjoint LinUCB (a registry policy's maths, via
:func:`~banditroute.costaware.routers.ucb_scores`) scores every step; it learns from every call.

Modes:

- ``"greedy"``: the unused LLM of highest UCB.
- ``"budget"``: rank unused LLMs by ``UCB / max(ĉ, ε)`` (``ĉ``: the cost estimate, which is the
  exact cost on prompt-priced tables) and drop those costing more than the query's allowance.
- ``"knapsack"`` (positional): at the first step choose a subset by 0/1 knapsack (value UCB,
  weight ``ĉ``, capacity the allowance), then call it in UCB order until one succeeds.

Allowance [ours]: with a total budget ``B`` over ``Q`` queries, query ``t`` may spend an equal
share of what is left, ``(B − spent) / (Q − t)``; with no budget, ``∞``. When nothing fits at the
first step the cheapest LLM is called if the total budget allows (so a query is never left
unanswered while money remains).

The answer returned is that of the last LLM called; its cost is the sum of the calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditroute.core.types import Decision, FloatArray
from banditroute.core.validation import InputError, check_int, check_positive, check_unit_interval
from banditroute.costaware.features import Featurizer
from banditroute.costaware.knapsack import best_subset
from banditroute.costaware.online import STOP, OnlineRouter, Split
from banditroute.costaware.routers import ucb_scores, warm_start
from banditroute.policies.ridge import LinUCB

MODES = ("greedy", "budget", "knapsack")
COST_FLOOR = 1e-12


class CascadeRouter(OnlineRouter):
    """Greedy multi-step LinUCB with optional budget-aware or knapsack planning (module docstring).

    Args:
        featurizer: fitted shared contexts.
        train: training split; with ``warm=True`` its first-step contexts and success labels of
            every LLM warm-start the LinUCB (full information, offline) [ours].
        H: at most ``H`` calls per query (``1 <= H <= M``).
        mode: ``"greedy"``, ``"budget"`` or ``"knapsack"``.
        success: quality at or above which a call satisfies the query.
        alpha: LinUCB exploration width.
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
        name: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        self.H = check_int(H, "H")
        if train.n_arms < self.H:
            raise InputError(f"H ({H}) cannot exceed the number of LLMs ({train.n_arms}): none is called twice")
        self.max_steps = self.H
        self.mode = mode
        self.featurizer = featurizer
        self.success = check_unit_interval(success, "success")
        self.alpha = check_positive(alpha, "alpha", allow_zero=True)
        self.name = name or f"cascade-{mode} H={H}"
        self.M = train.n_arms
        self.dim = featurizer.dim + 1 + self.M
        self.base = LinUCB(self.M, self.dim, alpha=self.alpha)
        if warm:
            X0 = self._contexts(featurizer.transform(train.contexts), 0, ())
            warm_start(self.base, X0, (train.quality >= self.success).astype(np.float64))

    def _contexts(self, E: FloatArray, h: int, failed: Sequence[int]) -> FloatArray:
        """``(e, h/H, one-hot(failed))`` for rows ``E`` (``(n, k)``) or one row (``(k,)``)."""
        E2 = np.atleast_2d(E)
        tail = np.zeros((E2.shape[0], 1 + self.M))
        tail[:, 0] = h / self.H
        tail[:, 1 + np.asarray(failed, dtype=np.int64)] = 1.0
        out = np.hstack([E2, tail])
        return out if E.ndim == 2 else out[0]

    def start(self, stream: Split, budget: float | None) -> None:
        self.E = self.featurizer.transform(stream.contexts)
        self.est = stream.est_cost
        self.Q = stream.n_rows
        self.budget = budget
        self.spent = 0.0
        self.policy = LinUCB(self.M, self.dim, alpha=self.alpha)
        self.policy.load_state_dict(self.base.state_dict())
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
        self._x = self._contexts(self.E[t], len(called), called)
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
            # the next planned LLM not yet called (the loop's budget guard may have substituted one)
            arm = next((a for a in self._plan if a not in called), STOP)
        if arm == STOP and not called and self.budget is not None:
            cheapest = int(np.argmin(cost))
            if cost[cheapest] <= self.budget - self.spent:
                arm = cheapest
        return arm

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        self.spent += cost
        self._query_spent += cost
        self._satisfied = quality >= self.success
        assert self._x is not None
        onehot = np.zeros(self.M)
        onehot[arm] = 1.0
        self.policy.learn(self._x, Decision(arm, onehot), float(self._satisfied))
