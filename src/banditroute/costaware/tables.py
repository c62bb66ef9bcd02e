"""Retrieval reward tables as cost-aware routing problems: a :class:`RewardTable` and its rows -> a :class:`Split`.

A retrieval table (``data/table_builder.py``, docs/architecture.md "Real data to reward tables") holds
per query the reward of every retriever (nDCG, RR, ...) and what every call cost (measured encode +
search time). The routers of :mod:`banditroute.costaware` need, besides, the cost *estimate* known
before a call and the *bound* that admits it under a budget:

- **estimate**: the retriever's mean cost over the *training* rows. A retriever's cost hardly depends
  on the query (one encoder pass and one index search of about the same size each time), so its
  per-arm mean is what a router can know before calling it; it is the same for every query.
- **bound**: ``max(actual, estimate)``. Measured timings fluctuate around the mean, so the mean alone
  would let the loop's budget guard admit a call that then costs a little more than it allowed for;
  on a replayed table the measured cost is at hand, and taking the larger of the two keeps the guard
  exact (:func:`~banditroute.costaware.online.run_online` never overspends). It is a replay device:
  a live system would bound by a high quantile of the training costs instead.

Post-call features (``post``, ``(n, M, p)`` for the table's rows: what calling a retriever reveals —
its list's top score, the top-1 − top-2 gap, ...) let a cascade decide whether to escalate from what
the first stage returned (:class:`~banditroute.costaware.cascade.CascadeRouter`, ``stop="model"``).
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError
from banditroute.costaware.online import Split
from banditroute.envs.reward_table import RewardTable


def table_split(table: RewardTable, rows: IntArray, *, train_rows: IntArray, post: FloatArray | None = None) -> Split:
    """The rows ``rows`` of ``table`` as a :class:`Split` (quality = rewards, cost = costs; module docstring).

    Args:
        table: a reward table with costs.
        rows: the table rows of the split, in serving order.
        train_rows: the training rows whose per-arm mean cost is the estimate (pass ``rows`` itself
            for the training split).
        post: optional post-call features of every table row, ``(table.n_rows, M, p)``.
    """
    if table.costs is None:
        raise InputError("a cost-aware split needs a reward table with costs")
    idx, train = (_rows(r, table.n_rows, name) for r, name in ((rows, "rows"), (train_rows, "train_rows")))
    cost = table.costs[idx]
    est = np.tile(table.costs[train].mean(axis=0), (idx.size, 1))
    if post is not None:
        post = np.asarray(post, dtype=np.float64)
        if post.ndim != 3 or post.shape[:2] != table.rewards.shape:
            raise InputError(f"post must have shape ({table.n_rows}, {table.n_arms}, p), got {post.shape}")
        post = post[idx]
    return Split(table.contexts[idx], table.rewards[idx], cost, est, np.maximum(cost, est), post)


def _rows(rows: IntArray, n: int, name: str) -> IntArray:
    """Validated 1-D integer row indices into a table of ``n`` rows (at least one)."""
    r = np.asarray(rows)
    if r.ndim != 1 or r.size == 0 or not np.issubdtype(r.dtype, np.integer):
        raise InputError(f"{name} must be a non-empty 1-D array of row indices, got shape {r.shape}, {r.dtype}")
    if r.min() < 0 or r.max() >= n:
        raise InputError(f"{name} must index rows 0..{n - 1}, got {int(r.min())}..{int(r.max())}")
    return r.astype(np.int64)
