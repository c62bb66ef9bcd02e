"""Per-query quality of a ranked list, for reward tables (issue: nDCG@10 for graded labels,
reciprocal rank / hit@k for single-answer sets; pluggable).

Judgements are held as a sparse ``n × N`` gain matrix (:class:`Judgements`); a ranked list is an
``(n, k)`` array of corpus positions, best first (``-1`` pads a list shorter than ``k``). Every
metric maps ``(gains at each rank (n, k), judgements)`` to ``n`` scores in ``[0, 1]``, all
vectorised. A document is *relevant* when its gain is > 0.

- ``ndcg``: DCG@k / ideal DCG@k with linear gains, ``Σ_r gain_r / log2(r + 1)`` (ranks from 1),
  the trec_eval / BEIR convention.
- ``rr``: 1 / rank of the first relevant document, 0 if none in the top k.
- ``hit``: 1 if a relevant document is in the top k.
- ``recall``: relevant documents in the top k / all relevant documents.

Register another metric by adding a function with the same signature to :data:`METRICS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError


@dataclass(frozen=True)
class Judgements:
    """Graded relevance as a CSR matrix ``gains[i, j]`` = gain of document ``j`` for query ``i`` (> 0 only)."""

    gains: sparse.csr_array

    @classmethod
    def from_qrels(
        cls, query_ids: Sequence[str], doc_ids: Sequence[str], qrels: Mapping[str, Mapping[str, float]]
    ) -> Judgements:
        """Build from ``qrels[query_id][doc_id] = gain``; gains <= 0 are dropped.

        Every query must have a relevant document (else nDCG is undefined) and every id must be known.
        """
        col = {d: j for j, d in enumerate(doc_ids)}
        if len(col) != len(doc_ids):
            raise InputError("doc_ids must be unique")
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i, qid in enumerate(query_ids):
            judged = qrels.get(qid)
            if judged is None:
                raise InputError(f"query {qid!r} has no judgements")
            for did, gain in judged.items():
                if did not in col:
                    raise InputError(f"judgement of query {qid!r} names unknown document {did!r}")
                if not np.isfinite(gain):
                    raise InputError(f"judgement of query {qid!r} for document {did!r} is not finite: {gain!r}")
                if gain > 0:
                    rows.append(i)
                    cols.append(col[did])
                    vals.append(float(gain))
        gains = sparse.csr_array((vals, (rows, cols)), shape=(len(query_ids), len(doc_ids)), dtype=np.float64)
        gains.sum_duplicates()
        empty = np.flatnonzero(np.diff(gains.indptr) == 0)
        if empty.size:
            raise InputError(f"query {query_ids[empty[0]]!r} has no relevant document (gain > 0)")
        return cls(gains)

    @property
    def n_queries(self) -> int:
        return int(self.gains.shape[0])

    @property
    def n_relevant(self) -> IntArray:
        """Relevant documents per query."""
        return np.diff(self.gains.indptr).astype(np.int64)

    def at(self, ranked: IntArray) -> FloatArray:
        """The gain of each ranked document, ``(n, k)``; ``-1`` (no document) has gain 0."""
        ranked = np.asarray(ranked)
        n, N = self.gains.shape
        if ranked.ndim != 2 or ranked.shape[0] != n or ranked.dtype.kind not in "iu":
            raise InputError(f"ranked must be an integer array of shape ({n}, k), got {ranked.dtype} {ranked.shape}")
        if np.any(ranked < -1) or np.any(ranked >= N):
            raise InputError(f"ranked positions must lie in [0, {N}) (or -1 for none)")
        # Look each (row, doc) pair up among the stored entries: CSR keys row*N + col are sorted.
        keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(self.gains.indptr)) * N + self.gains.indices
        query = np.arange(n, dtype=np.int64)[:, None] * N + ranked
        pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
        hit = (keys[pos] == query) & (ranked >= 0)
        return np.where(hit, self.gains.data[pos], 0.0)

    def ideal(self, k: int) -> FloatArray:
        """The best possible gains at ranks 1..k, ``(n, k)`` (each query's gains sorted descending)."""
        out = np.zeros((self.n_queries, k))
        counts = self.n_relevant
        rows = np.repeat(np.arange(self.n_queries), counts)
        order = np.lexsort((-self.gains.data, rows))  # by row, then gain descending
        rank = np.arange(len(rows)) - np.repeat(self.gains.indptr[:-1], counts)
        keep = rank < k
        out[rows[keep], rank[keep]] = self.gains.data[order][keep]
        return out


Metric = Callable[[FloatArray, Judgements], FloatArray]


def _discounts(k: int) -> FloatArray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg(gains_at_rank: FloatArray, judgements: Judgements) -> FloatArray:
    """Normalised discounted cumulative gain at k = ``gains_at_rank.shape[1]`` (linear gains)."""
    k = gains_at_rank.shape[1]
    disc = _discounts(k)
    return (gains_at_rank @ disc) / (judgements.ideal(k) @ disc)


def reciprocal_rank(gains_at_rank: FloatArray, judgements: Judgements) -> FloatArray:
    """1 / rank of the first relevant document in the top k, else 0."""
    relevant = gains_at_rank > 0
    first = relevant.argmax(axis=1)
    out: FloatArray = np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0)
    return out


def hit(gains_at_rank: FloatArray, judgements: Judgements) -> FloatArray:
    """1 when any relevant document is in the top k."""
    out: FloatArray = np.asarray((gains_at_rank > 0).any(axis=1), dtype=np.float64)
    return out


def recall(gains_at_rank: FloatArray, judgements: Judgements) -> FloatArray:
    """Share of the query's relevant documents found in the top k."""
    return (gains_at_rank > 0).sum(axis=1) / judgements.n_relevant


METRICS: dict[str, Metric] = {"ndcg": ndcg, "rr": reciprocal_rank, "hit": hit, "recall": recall}


def score(metric: str, ranked: IntArray, judgements: Judgements) -> FloatArray:
    """Per-query ``metric`` (a key of :data:`METRICS`) of ranked lists ``(n, k)``, in ``[0, 1]``."""
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[1] < 1:
        raise InputError(f"ranked must have shape (n, k) with k >= 1, got {ranked.shape}")
    return METRICS[metric](judgements.at(ranked), judgements)
