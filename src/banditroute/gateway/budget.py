"""Per-API-key and per-profile budgets, per UTC day and month, paced by the LLM benchmark's dual pacer.

Each (owner, period) has a :class:`~banditroute.costaware.knapsack.DualPacer` over the period: budget ``B``,
horizon ``Q`` = ``expected_requests`` per day (times the days of a month), per-request rate
``ρ = B / Q`` as its cost unit, started at price ``μ = 0``; every answered request charges its
cost, and the pacer raises ``μ`` while the owner spends faster than ``ρ`` per request and lowers
it otherwise (Balseiro, Lu & Mirrokni 2020; see :mod:`banditroute.costaware.knapsack`). Admission,
*before* the call, of each upstream ``l`` with cost bound ``u_l`` (prompt tokens × input price +
max output tokens × output price):

- hard: ``u_l <= remaining`` of every period, so spend never exceeds a budget while actual costs
  stay below their bounds;
- paced: ``μ · u_l / ρ <= 1`` — at price ``μ`` a call whose cost outweighs the largest reward (1)
  is not worth making, so the dearest upstreams go first as the price rises. When pacing excludes every
  affordable upstream the cheapest affordable one stays allowed (as the knapsack's fallback), so a
  key is slowed to cheap upstreams, not cut off, until its budget is truly spent: then 429.

Concurrent requests cannot overspend together: admission *holds* the largest admitted bound until the
request is settled with its actual cost (:meth:`Budgets.settle`), and what is held counts as spent for
every other admission meanwhile. The state lives in memory; at start the gateway books again the costs
of the current month's answered attempts from its log (``gateway_attempts``), so a restart neither
forgets spending nor resets a period (the pacer's price restarts from that replay). Holds are per
process: router workers (``serve --workers N``) also book each other's costs as their attempt rows
reach the log (:mod:`~banditroute.gateway.shared`, which states the bound on what they can overspend).
"""

from __future__ import annotations

import calendar
import threading
import time
from dataclasses import dataclass

import numpy as np

from banditroute.costaware.knapsack import DualPacer
from banditroute.gateway.config import Budget

PACE_ETA = 0.05  # dual step per request, in units of the rate ρ


class BudgetSpent(Exception):
    """HTTP 429: the key's (or profile's) budget for this period is spent."""


@dataclass
class _Period:
    key: str  # "day:2026-12-03" or "month:2026-12"
    pacer: DualPacer


def _periods(now: float) -> dict[str, tuple[str, int]]:
    t = time.gmtime(now)
    return {
        "day": (time.strftime("%Y-%m-%d", t), 1),
        "month": (time.strftime("%Y-%m", t), calendar.monthrange(t.tm_year, t.tm_mon)[1]),
    }


class Budgets:
    """Budgets of many owners (``key:<hash>``, ``profile:<name>``); thread-safe."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], _Period] = {}
        self._held: dict[str, float] = {}  # per owner: bounds held by admitted, unsettled requests
        self._holds: dict[str, int] = {}  # per owner: how many (none left: nothing held, no rounding residue)
        self._lock = threading.Lock()

    def _pacers(self, owner: str, budget: Budget, now: float) -> dict[str, DualPacer]:
        """The pacer of each limited period (``day``, ``month``) that contains ``now``."""
        out = {}
        for kind, (stamp, days) in _periods(now).items():
            limit = getattr(budget, kind)
            if limit is None:
                continue
            cur = self._state.get((owner, kind))
            if cur is None or cur.key != stamp:
                horizon = budget.expected_requests * days
                cur = _Period(stamp, DualPacer(limit, horizon, 0.0, eta=PACE_ETA, scale=limit / horizon))
                self._state[(owner, kind)] = cur
            out[kind] = cur.pacer
        return out

    def admit(
        self, owner: str, budget: Budget, bounds: np.ndarray, now: float | None = None
    ) -> tuple[np.ndarray, float]:
        """The upstreams whose cost bound this owner may spend now (module docstring) and the amount
        now held for the request (their largest bound; give it back with :meth:`settle`); raises
        :class:`BudgetSpent` when no upstream fits what is left."""
        now = time.time() if now is None else now
        with self._lock:
            pacers = self._pacers(owner, budget, now)
            held = self._held.get(owner, 0.0)
            ok = np.isfinite(bounds)
            paced = ok.copy()
            finite = np.where(ok, bounds, 0.0)
            for p in pacers.values():
                ok &= finite <= p.remaining - held
                paced &= p.mu * finite / p.scale <= 1.0
            if not ok.any():
                raise BudgetSpent("the budget of this API key or profile is spent for the current period")
            if (ok & paced).any():
                out = ok & paced
            else:
                out = np.zeros(bounds.shape, dtype=bool)
                out[np.flatnonzero(ok)[np.argmin(bounds[ok])]] = True
            amount = float(finite[out].max())
            self._held[owner] = held + amount
            self._holds[owner] = self._holds.get(owner, 0) + 1
            return out, amount

    def settle(self, owner: str, budget: Budget, held: float, cost: float | None, now: float | None = None) -> None:
        """Release what :meth:`admit` held and book the request's actual cost (``None``: no call was paid)."""
        with self._lock:
            self._holds[owner] = left = self._holds.get(owner, 0) - 1
            self._held[owner] = max(0.0, self._held.get(owner, 0.0) - held) if left > 0 else 0.0
        if cost is not None:
            self.charge(owner, budget, cost, now)

    def charge(
        self, owner: str, budget: Budget, cost: float, now: float | None = None, at: float | None = None
    ) -> None:
        """Book ``cost`` into the owner's periods of ``now``; a cost incurred ``at`` another time (a row of
        the log) counts only in those of them that contain ``at`` too: yesterday's is not today's."""
        now = time.time() if now is None else now
        current, when = _periods(now), _periods(now if at is None else at)
        with self._lock:
            for kind, p in self._pacers(owner, budget, now).items():
                if when[kind][0] != current[kind][0]:
                    continue
                if p.t < p.horizon:
                    p.charge(cost)
                else:  # more requests than expected: keep counting spend (the price stays)
                    p.spent += cost

    def held(self, owner: str) -> float:
        """What admitted requests of this owner hold now (bounds of requests not yet settled)."""
        with self._lock:
            return self._held.get(owner, 0.0)

    def spent(self, owner: str, budget: Budget, now: float | None = None) -> dict[str, float]:
        now = time.time() if now is None else now
        with self._lock:
            return {k: p.spent for k, p in self._pacers(owner, budget, now).items()}
