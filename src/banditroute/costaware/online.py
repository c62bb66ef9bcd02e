"""The online routing loop every cost-aware router runs in: one query at a time, bandit feedback, a budget.

The arms are LLMs or retrievers alike (a :class:`Split` from an LLM dataset or from a retrieval
reward table, :mod:`banditroute.costaware.tables`). A :class:`OnlineRouter` sees a query, picks an
arm (``decide``), is told only that arm's quality and cost (``observe``; what else the call revealed,
its post-call features, it may read from the stream once the arm is called) and may pick again (a
cascade) up to ``max_steps`` times per query, or stop. The loop — not the router — enforces three
invariants, so no router can break them:

- at most ``max_steps`` calls per query, never the same arm twice within a query;
- with a budget ``B``, a call is made only if its cost bound fits what is left; otherwise the
  loop substitutes the cheapest affordable arm not yet called, or stops (an *override*, counted);
- total spend never exceeds ``B`` (checked after every call: :class:`BudgetExceeded`).

The answer to a query is that of the last arm called (quality 0 when none was); its cost is the
sum over calls. Decision latency is the wall-clock time of ``decide`` calls only.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError, check_finite, check_int

STOP = -1


class BudgetExceeded(AssertionError):
    """Spend went over the budget: an actual cost exceeded the bound it was admitted with."""


@dataclass(frozen=True, eq=False)
class Split:
    """Queries with full-information quality and cost, as a router may use them.

    Attributes:
        contexts: ``(n, d)`` query embeddings.
        quality: ``(n, M)`` quality of every arm (a router learns only the ones it calls online).
        cost: ``(n, M)`` actual cost of every call.
        est_cost: ``(n, M)`` cost estimate available *before* the call.
        upper_cost: ``(n, M)`` bound on the cost used to admit a call under a budget (``>= cost``).
        post: optional ``(n, M, p)`` post-call features: what calling arm ``m`` on query ``t``
            reveals besides its answer (for a retriever: its list's top score, the top-1 − top-2
            gap, ...). A router may read ``post[t, m]`` only once it has called ``m`` on ``t``.
    """

    contexts: FloatArray
    quality: FloatArray
    cost: FloatArray
    est_cost: FloatArray
    upper_cost: FloatArray
    post: FloatArray | None = None

    def __post_init__(self) -> None:
        n, M = np.shape(self.quality)
        for name in ("contexts", "quality", "cost", "est_cost", "upper_cost"):
            arr = check_finite(np.asarray(getattr(self, name), dtype=np.float64), name)
            want = (n,) if name == "contexts" else (n, M)
            if arr.shape[: len(want)] != want or arr.ndim != 2:
                raise InputError(f"{name} must have {n} rows (and {M} columns), got {arr.shape}")
            object.__setattr__(self, name, arr)
        if self.post is not None:
            post = check_finite(np.asarray(self.post, dtype=np.float64), "post")
            if post.ndim != 3 or post.shape[:2] != (n, M) or post.shape[2] < 1:
                raise InputError(f"post must have shape ({n}, {M}, p) with p >= 1, got {post.shape}")
            object.__setattr__(self, "post", post)

    @property
    def n_post(self) -> int:
        """``p``: post-call features per arm (0 without any)."""
        return 0 if self.post is None else int(self.post.shape[2])

    @property
    def n_rows(self) -> int:
        return int(self.quality.shape[0])

    @property
    def n_arms(self) -> int:
        return int(self.quality.shape[1])


class OnlineRouter(ABC):
    """A routing method; built fresh for each run from a training split, then :meth:`start` ed once."""

    name: str = "router"
    max_steps: int = 1

    def start(self, stream: Split, budget: float | None) -> None:
        """Called once before the first query with the whole stream (routers may precompute
        per-query features; they must not read ``quality`` or ``cost``, nor ``post`` of an arm before
        calling it) and the budget."""
        return None

    @abstractmethod
    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        """The arm to call next for query ``t`` (``called``: arms already called for it), or :data:`STOP`."""

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        """Feedback of the call just made: the answer's quality and its cost."""
        return None


@dataclass(frozen=True)
class RunRecord:
    """Per-query outcome of one run over a stream of ``n`` queries.

    Attributes:
        answer: arm whose answer was returned (``-1`` if none was called).
        quality: quality of the returned answer.
        cost: total cost of the query's calls.
        n_calls: calls made for the query.
        best: the per-query oracle quality (best arm in hindsight), for regret.
        decide_seconds: time spent in ``decide`` for the query.
        overrides: calls the budget guard had to replace or refuse.
        budget: the budget of the run (``None``: unlimited).
    """

    answer: IntArray
    quality: FloatArray
    cost: FloatArray
    n_calls: IntArray
    best: FloatArray
    decide_seconds: FloatArray
    overrides: int
    budget: float | None

    @property
    def spent(self) -> float:
        return float(self.cost.sum())


def run_online(
    router: OnlineRouter, stream: Split, rng: np.random.Generator, *, budget: float | None = None
) -> RunRecord:
    """Serve every query of ``stream`` in order with ``router`` (module docstring)."""
    if budget is not None and not (np.isfinite(budget) and budget > 0):
        raise InputError(f"budget must be a positive number or None, got {budget!r}")
    H = check_int(router.max_steps, "router.max_steps")
    n, M = stream.n_rows, stream.n_arms
    answer = np.full(n, -1, dtype=np.int64)
    quality, cost, seconds = np.zeros(n), np.zeros(n), np.zeros(n)
    n_calls = np.zeros(n, dtype=np.int64)
    overrides = 0
    spent = 0.0
    router.start(stream, budget)
    for t in range(n):
        called: list[int] = []
        for _ in range(H):
            t0 = time.perf_counter()
            arm = int(router.decide(t, tuple(called), rng))
            seconds[t] += time.perf_counter() - t0
            if arm == STOP:
                break
            if not 0 <= arm < M or arm in called:
                raise InputError(f"router {router.name!r} chose arm {arm} for query {t} (called: {called})")
            if budget is not None and spent + stream.upper_cost[t, arm] > budget:
                overrides += 1
                arm = _cheapest_affordable(stream.upper_cost[t], called, budget - spent)
                if arm == STOP:
                    break
            q, c = float(stream.quality[t, arm]), float(stream.cost[t, arm])
            spent += c
            if budget is not None and spent > budget * (1 + 1e-12):
                raise BudgetExceeded(f"{router.name}: spent {spent:.6g} > budget {budget:.6g} at query {t}")
            called.append(arm)
            answer[t], quality[t] = arm, q
            cost[t] += c
            router.observe(t, arm, q, c)
        n_calls[t] = len(called)
    return RunRecord(answer, quality, cost, n_calls, stream.quality.max(axis=1), seconds, overrides, budget)


def _cheapest_affordable(upper: FloatArray, called: Sequence[int], left: float) -> int:
    ok = upper <= left
    ok[list(called)] = False
    if not ok.any():
        return STOP
    return int(np.flatnonzero(ok)[np.argmin(upper[ok])])
