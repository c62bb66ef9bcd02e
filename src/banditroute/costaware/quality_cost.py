"""LLM-routing metrics: quality and cost relative to the best single LLM, the quality–cost hull, AIQ.

- **Relative quality / cost** (PILOT, MixLLM): a router's mean quality as a fraction of the best
  single LLM's, and its mean cost as a fraction of that LLM's cost, on the same queries.
- **Non-decreasing convex hull** (RouterBench, Hu et al. 2024): from a router's (cost, quality)
  operating points, the upper concave envelope — any point between two operating points is
  reachable by routing a random share of queries with each — cut to be non-decreasing
  (spending more never has to lower quality: keep the better, cheaper point).
- **AIQ**: the area under that hull over a cost range ``[c_lo, c_hi]`` divided by its width; left
  of the router's cheapest point the hull is undefined and counts as zero quality, right of its
  most expensive point it stays flat.

Regret and confidence intervals come from :mod:`banditroute.simulate.metrics`.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_finite


def _points(costs: FloatArray, qualities: FloatArray) -> tuple[FloatArray, FloatArray]:
    c = check_finite(np.asarray(costs, dtype=np.float64).ravel(), "costs")
    q = check_finite(np.asarray(qualities, dtype=np.float64).ravel(), "qualities")
    if c.size == 0 or c.shape != q.shape:
        raise InputError(f"costs and qualities must be equal-length and non-empty, got {c.shape} and {q.shape}")
    return c, q


def hull(costs: FloatArray, qualities: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Vertices ``(cost, quality)`` of the non-decreasing upper convex hull, by increasing cost.

    The upper hull by Andrew's monotone chain, then truncated at its highest quality (the
    non-decreasing part; the curve is flat beyond it).
    """
    c, q = _points(costs, qualities)
    order = np.lexsort((-q, c))  # by cost, and at equal cost the best quality first
    hc: list[float] = []
    hq: list[float] = []
    for ci, qi in zip(c[order], q[order], strict=True):
        if hc and ci == hc[-1]:
            continue  # same cost, lower quality
        while len(hc) >= 2 and (hc[-1] - hc[-2]) * (qi - hq[-2]) - (hq[-1] - hq[-2]) * (ci - hc[-2]) >= 0:
            hc.pop()
            hq.pop()
        hc.append(float(ci))
        hq.append(float(qi))
    top = int(np.argmax(hq))
    return np.array(hc[: top + 1]), np.array(hq[: top + 1])


def hull_value(costs: FloatArray, qualities: FloatArray, at: FloatArray) -> FloatArray:
    """Quality of the hull at costs ``at`` (0 left of the cheapest point, flat right of the best)."""
    hc, hq = hull(costs, qualities)
    at = np.asarray(at, dtype=np.float64)
    out: FloatArray = np.where(at < hc[0], 0.0, np.interp(at, hc, hq))
    return out


def aiq(costs: FloatArray, qualities: FloatArray, c_lo: float, c_hi: float) -> float:
    """Average quality of the non-decreasing hull over ``[c_lo, c_hi]`` (RouterBench's AIQ)."""
    if not (np.isfinite(c_lo) and np.isfinite(c_hi) and c_lo < c_hi):
        raise InputError(f"AIQ needs a cost range c_lo < c_hi, got [{c_lo}, {c_hi}]")
    hc, hq = hull(costs, qualities)
    # Piecewise linear: integrate exactly on the breakpoints inside the range.
    xs = np.unique(np.concatenate([[c_lo, c_hi], hc[(hc > c_lo) & (hc < c_hi)]]))
    ys = hull_value(hc, hq, xs)
    # The jump from 0 to the first vertex: integrate from the vertex on, not across the step.
    if c_lo < hc[0] < c_hi:
        xs, ys = xs[xs >= hc[0]], ys[xs >= hc[0]]
    return float(np.trapezoid(ys, xs) / (c_hi - c_lo))


def best_quality_within(
    costs: FloatArray, qualities: FloatArray, max_cost: float, *, interpolate: bool = False
) -> float:
    """Best quality among operating points costing at most ``max_cost`` (``nan`` if none).

    With ``interpolate=True`` the hull value at ``max_cost`` (mixing two operating points)."""
    c, q = _points(costs, qualities)
    if interpolate:
        return float(hull_value(c, q, np.array(max_cost))) if c.min() <= max_cost else float("nan")
    ok = c <= max_cost
    return float(q[ok].max()) if ok.any() else float("nan")
