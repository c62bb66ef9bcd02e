"""Budgets: the online multiple-choice knapsack threshold (PILOT's budget policy) and a 0/1 knapsack.

**Online multiple-choice knapsack** (Zhou, Chakrabarty & Lukose 2008; PILOT, Panda et al. 2025,
docs/specs/llm-routing.md, PILOT step 3). Each query offers one item per LLM — value ``v_l`` (predicted quality), weight
``ĉ_l`` (cost) — and at most one is taken. With ``z`` the fraction of the current bin's budget
already spent, an LLM is *eligible* iff

    v_l / ĉ_l ≥ Ψ(z),   Ψ(z) = L                        for z ≤ 1 / (1 + ln(U/L)),
                        Ψ(z) = (U e / L)^z · (L / e)    above,

where ``[L, U]`` bounds the value-to-cost ratio; the router takes the eligible LLM of highest
value. Ψ rises from ``L`` to ``U`` as the bin fills, so early queries may buy quality and late
ones only bargains. The horizon of ``Q`` queries is split into ``N`` bins of ``⌈Q/N⌉`` queries and
budget ``B/N`` each; unspent budget rolls over: bin ``k`` may spend everything not yet spent
minus the nominal ``B/N`` of every later bin.

Hard budget [ours]: an LLM is eligible only if it also fits the bin's remaining budget; when
none is eligible the router falls back to the cheapest LLM (spec: [ours]) if it fits the *total*
remaining budget (borrowing from later bins), and otherwise abstains (``-1``: no call, no cost).
Affordability is checked with a cost upper bound (the known cost, or a conservative estimate
when costs are only known after the call), so total spend never exceeds ``B`` while actual
costs stay below their bounds.

**Dual pacing** (:class:`DualPacer`, [ours] for LLM routing): the Lagrangian alternative —
price cost at ``μ`` per unit of ``scale`` and route by ``value − μ · cost / scale``; after each
query take a projected subgradient step on the dual, ``μ ← max(0, μ + η (c_t − ρ) / scale)``
with ``ρ = B / Q`` the per-query budget rate (Balseiro, Lu & Mirrokni 2020, "Dual mirror
descent for online allocation problems", Euclidean mirror map): overspending raises the price,
underspending lowers it — ``μ`` integrates the overspend so far.
"""

from __future__ import annotations

import math

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError, check_finite, check_int, check_positive

ABSTAIN = -1
MAX_SUBSET_ARMS = 16


def threshold(z: float | FloatArray, L: float, U: float) -> FloatArray:
    """Ψ(z) of Zhou et al. (2008) for spent fraction ``z`` (clipped to [0, 1]) and ratio bounds ``L <= U``."""
    L, U = _check_bounds(L, U)
    z = np.clip(np.asarray(z, dtype=np.float64), 0.0, 1.0)
    if U == L:
        return np.full_like(z, L)
    z0 = 1.0 / (1.0 + math.log(U / L))
    out: FloatArray = np.where(z <= z0, L, (U * math.e / L) ** z * (L / math.e))
    return out


def ratio_bounds(values: FloatArray, costs: FloatArray, quantile: float = 0.01) -> tuple[float, float]:
    """``(L, U)`` from value-to-cost ratios seen offline: their ``quantile`` and ``1 - quantile``.

    Only pairs with positive value and cost count (the others are never or always eligible).
    """
    v, c = np.asarray(values, dtype=np.float64).ravel(), np.asarray(costs, dtype=np.float64).ravel()
    ok = (v > 0) & (c > 0)
    if not ok.any():
        raise InputError("ratio_bounds needs at least one pair with positive value and cost")
    ratios = v[ok] / c[ok]
    L, U = np.quantile(ratios, [quantile, 1.0 - quantile])
    return float(L), float(max(U, L))


class KnapsackPacer:
    """The online multiple-choice knapsack with bins and roll-over (module docstring).

    A plain state machine: :meth:`choose` picks an LLM (or :data:`ABSTAIN`) for one query's
    values and costs, :meth:`charge` books what the call actually cost.

    Args:
        budget: total budget ``B > 0`` over the horizon.
        horizon: number of queries ``Q``.
        n_bins: number of bins ``N`` (``1 <= N <= Q``).
        L, U: bounds of the value-to-cost ratio, ``0 < L <= U``.
    """

    def __init__(self, budget: float, horizon: int, n_bins: int, L: float, U: float) -> None:
        self.budget = check_positive(budget, "budget")
        self.horizon = check_int(horizon, "horizon")
        self.n_bins = check_int(n_bins, "n_bins")
        if self.n_bins > self.horizon:
            raise InputError(f"n_bins ({n_bins}) must be <= horizon ({horizon})")
        self.L, self.U = _check_bounds(L, U)
        self.bin_size = math.ceil(self.horizon / self.n_bins)
        self.t = 0
        self.spent = 0.0
        self._bin = 0
        self._spent_before_bin = 0.0

    # ------------------------------------------------------------------ budget state
    @property
    def current_bin(self) -> int:
        return min(self.t // self.bin_size, self.n_bins - 1)

    @property
    def remaining(self) -> float:
        """Budget not yet spent, over the whole horizon."""
        return self.budget - self.spent

    def _roll(self) -> None:
        if self.current_bin != self._bin:
            self._bin = self.current_bin
            self._spent_before_bin = self.spent

    @property
    def bin_budget(self) -> float:
        """This bin's allowance: all unspent budget minus the nominal ``B/N`` of every later bin."""
        self._roll()
        later = self.n_bins - 1 - self._bin
        return self.budget - self._spent_before_bin - later * self.budget / self.n_bins

    @property
    def bin_remaining(self) -> float:
        self._roll()
        return self.bin_budget - (self.spent - self._spent_before_bin)

    @property
    def fill(self) -> float:
        """``z``: fraction of this bin's allowance already spent (1 when the allowance is gone)."""
        allowance = self.bin_budget
        if allowance <= 0:
            return 1.0
        return min(1.0, (self.spent - self._spent_before_bin) / allowance)

    # ------------------------------------------------------------------ decisions
    def eligible(self, values: FloatArray, costs: FloatArray, upper: FloatArray | None = None) -> np.ndarray:
        """LLMs with ``v/ĉ >= Ψ(z)`` whose cost bound fits the bin's remaining budget."""
        v, c, u = self._check(values, costs, upper)
        psi = float(threshold(self.fill, self.L, self.U))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(c > 0, v / np.where(c > 0, c, 1.0), np.where(v >= 0, np.inf, -np.inf))
        mask: np.ndarray = (ratio >= psi) & (u <= self.bin_remaining)
        return mask

    def choose(self, values: FloatArray, costs: FloatArray, upper: FloatArray | None = None) -> int:
        """The eligible LLM of highest value (ties: cheaper); else the cheapest affordable; else ``-1``."""
        v, c, u = self._check(values, costs, upper)
        mask = self.eligible(v, c, u)
        if mask.any():
            order = np.lexsort((c, -v))  # by value desc, then cost asc
            return int(order[np.argmax(mask[order])])
        cheapest = int(np.lexsort((-v, u))[0])  # by cost bound asc, then value desc
        return cheapest if u[cheapest] <= self.remaining else ABSTAIN

    def charge(self, cost: float) -> None:
        """Book the actual cost of this query's call (0 when it abstained) and move to the next query."""
        cost = check_positive(cost, "cost", allow_zero=True)
        if self.t >= self.horizon:
            raise InputError(f"the pacer's horizon of {self.horizon} queries is used up")
        self._roll()
        self.spent += cost
        self.t += 1

    def _check(
        self, values: FloatArray, costs: FloatArray, upper: FloatArray | None
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        v = check_finite(np.asarray(values, dtype=np.float64), "values")
        c = check_finite(np.asarray(costs, dtype=np.float64), "costs")
        u = c if upper is None else check_finite(np.asarray(upper, dtype=np.float64), "upper")
        if v.ndim != 1 or v.shape != c.shape or u.shape != c.shape or v.size == 0:
            raise InputError(f"values, costs and upper must be equal-length 1-D arrays, got {v.shape}, {c.shape}")
        if np.any(c < 0) or np.any(u < c):
            raise InputError("costs must be >= 0 and upper bounds >= costs")
        return v, c, u


def best_subset(values: FloatArray, weights: FloatArray, capacity: float) -> IntArray:
    """0/1 knapsack by enumeration: the arms of maximum total value with total weight <= capacity.

    Exact for up to :data:`MAX_SUBSET_ARMS` arms (all ``2^M`` subsets at once); ties go to the
    lighter subset. Returns the chosen arm indices sorted by value, highest first (empty when
    nothing fits or no value is positive).
    """
    v = check_finite(np.asarray(values, dtype=np.float64), "values")
    w = check_finite(np.asarray(weights, dtype=np.float64), "weights")
    if v.ndim != 1 or v.shape != w.shape or not 1 <= v.size <= MAX_SUBSET_ARMS:
        raise InputError(f"values and weights must be equal-length 1-D arrays of 1..{MAX_SUBSET_ARMS} arms")
    if np.any(w < 0):
        raise InputError("weights must be >= 0")
    M = v.size
    members = (np.arange(2**M)[:, None] >> np.arange(M)) & 1  # (2^M, M) 0/1 membership
    total_v, total_w = members @ v, members @ w
    total_v = np.where(total_w <= capacity, total_v, -np.inf)
    best = np.lexsort((total_w, -total_v))[0]
    if not np.isfinite(total_v[best]) or total_v[best] <= 0:
        return np.empty(0, dtype=np.int64)
    chosen = np.flatnonzero(members[best])
    return chosen[np.argsort(-v[chosen], kind="stable")].astype(np.int64)


def _check_bounds(L: float, U: float) -> tuple[float, float]:
    L, U = check_positive(L, "L"), check_positive(U, "U")
    if U < L:
        raise InputError(f"ratio bounds must satisfy 0 < L <= U, got L={L}, U={U}")
    return L, U


class DualPacer:
    """Dual (Lagrangian) budget pacing by projected subgradient steps (module docstring).

    Args:
        budget: total budget ``B > 0``; horizon: queries ``Q``.
        mu0: initial price ``μ >= 0`` (e.g. calibrated offline on the training split).
        eta: step size of the dual update.
        scale: the cost unit of ``μ`` (e.g. the mean cost of the dearest LLM).
    """

    def __init__(self, budget: float, horizon: int, mu0: float, *, eta: float = 0.01, scale: float = 1.0) -> None:
        self.budget = check_positive(budget, "budget")
        self.horizon = check_int(horizon, "horizon")
        self.mu = check_positive(mu0, "mu0", allow_zero=True)
        self.eta = check_positive(eta, "eta", allow_zero=True)
        self.scale = check_positive(scale, "scale")
        self.rate = self.budget / self.horizon
        self.spent = 0.0
        self.t = 0

    @property
    def remaining(self) -> float:
        return self.budget - self.spent

    def choose(self, scores: FloatArray, upper: FloatArray) -> int:
        """The highest-scoring LLM whose cost bound ``upper`` fits the remaining budget; when none fits,
        :data:`ABSTAIN` (and the query is booked at zero spend)."""
        s = np.where(np.asarray(upper) <= self.remaining, np.asarray(scores, dtype=np.float64), -np.inf)
        if not np.isfinite(s).any():
            self.charge(0.0)
            return ABSTAIN
        return int(np.argmax(s))

    def charge(self, cost: float) -> None:
        """Book this query's spend (0 if it abstained) and update the price."""
        cost = check_positive(cost, "cost", allow_zero=True)
        if self.t >= self.horizon:
            raise InputError(f"the pacer's horizon of {self.horizon} queries is used up")
        self.spent += cost
        self.t += 1
        self.mu = max(0.0, self.mu + self.eta * (cost - self.rate) / self.scale)


def calibrate_price(pred: FloatArray, cost: FloatArray, rate: float, scale: float) -> float:
    """The smallest price ``μ`` (0, then a log grid 10⁻³…10³) at which routing every row to
    ``argmax(pred − μ · cost / scale)`` spends at most ``rate`` per row on average (10³ if none does):
    the starting price of :class:`DualPacer`, set offline on training predictions."""
    pred, cost = np.asarray(pred, dtype=np.float64), np.asarray(cost, dtype=np.float64)
    rows = np.arange(pred.shape[0])
    for mu in np.concatenate([[0.0], np.logspace(-3, 3, 121)]):
        if cost[rows, np.argmax(pred - mu * cost / scale, axis=1)].mean() <= rate:
            return float(mu)
    return 1e3
