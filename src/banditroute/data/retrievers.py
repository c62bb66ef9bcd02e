"""Retrievers: exact dense inner-product search over cached embeddings, and BM25 (bm25s).

Both implement :class:`~banditroute.data.interfaces.Retriever` (``index`` once, then ``search``),
so a lexical arm and a dense arm are interchangeable routing targets (docs/specs/hpg.md §4: each expert
is a retrieval model; its reward is the quality of its ranked list).

Ranking is deterministic: rows are sorted by score, best first, and equal scores are ordered by
corpus position (lower first), the same for both retrievers and for the optional FAISS backend's
exact index (up to ties beyond its widened candidate list). Dense search is exact and chunked over
queries and documents, so memory stays at ``query_chunk × doc_chunk`` scores however large the
corpus; it returns the same lists as a brute-force sort.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from banditroute.core.validation import InputError
from banditroute.data.cache import CachedEmbedder, EmbeddingCache
from banditroute.data.embedders.base import check_texts
from banditroute.data.interfaces import Embedder

DENSE_BACKENDS = ("exact", "faiss")
TERM = re.compile(r"(?u)\b\w\w+\b")
QUERY_BLOCK_SCORES = 1 << 22  # BM25 scores held at once (16 MiB of float32)


def check_k(k: Any, n_docs: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InputError(f"k must be an integer, got {type(k).__name__}")
    if not 1 <= k <= n_docs:
        raise InputError(f"k must be between 1 and the number of indexed documents ({n_docs}), got {k}")
    return int(k)


def select_topk(
    scores: NDArray[np.float32], cols: NDArray[np.int64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Per row, the ``k`` best (score desc, then column asc) of ``scores`` (n, c) with ids ``cols`` (n, c).

    ``np.partition`` finds each row's k-th best score in linear time; every entry at least that good is a
    candidate (ties at the boundary included), and one lexsort over the candidates of all rows
    orders them by (row, -score, id), so ties are broken by id exactly as a full sort would.
    """
    n, c = scores.shape
    if c > k:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        rows, pos = np.nonzero(scores >= kth[:, None])
    else:
        rows, pos = np.divmod(np.arange(n * c), c)
    cand_scores, cand_ids = scores[rows, pos], cols[rows, pos]
    order = np.lexsort((cand_ids, -cand_scores, rows))
    rows = rows[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within its row
    keep = order[rank < k]
    return cand_ids[keep].reshape(n, k), cand_scores[keep].reshape(n, k).astype(np.float32, copy=False)


def topk_inner_product(
    queries: NDArray[np.float32],
    docs: NDArray[np.float32],
    k: int,
    *,
    query_chunk: int = 256,
    doc_chunk: int = 16384,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact top-``k`` documents by inner product for every query, in blocks of ``query_chunk × doc_chunk``."""
    n_q, n_d = len(queries), len(docs)
    k = check_k(k, n_d)
    idx = np.empty((n_q, k), dtype=np.int64)
    val = np.empty((n_q, k), dtype=np.float32)
    for qs in range(0, n_q, query_chunk):
        q = queries[qs : qs + query_chunk]
        best_i = np.empty((len(q), 0), dtype=np.int64)
        best_s = np.empty((len(q), 0), dtype=np.float32)
        for ds in range(0, n_d, doc_chunk):
            block = q @ docs[ds : ds + doc_chunk].T
            ids = np.broadcast_to(np.arange(ds, ds + block.shape[1], dtype=np.int64), block.shape)
            best_i, best_s = select_topk(
                np.hstack([best_s, block]), np.hstack([best_i, ids]), min(k, best_i.shape[1] + block.shape[1])
            )
        idx[qs : qs + len(q)], val[qs : qs + len(q)] = best_i, best_s
    return idx, val


class DenseRetriever:
    """Exact inner-product search over an embedder's unit vectors (cosine similarity).

    Args:
        embedder: any :class:`~banditroute.data.interfaces.Embedder`.
        cache: an :class:`~banditroute.data.cache.EmbeddingCache`; corpus and queries are encoded
            through it (so a second run encodes nothing). ``None``: encode directly.
        backend: ``"exact"`` (numpy, chunked) or ``"faiss"`` (``faiss.IndexFlatIP``, exact, if the
            optional ``faiss-cpu`` package is installed; ties among its 2k+16 best re-ranked as in ``"exact"``).
        progress: show a progress bar while encoding uncached texts.
    """

    def __init__(
        self,
        embedder: Embedder,
        cache: EmbeddingCache | None = None,
        *,
        backend: str = "exact",
        query_chunk: int = 256,
        doc_chunk: int = 16384,
        progress: bool = False,
    ) -> None:
        if backend not in DENSE_BACKENDS:
            raise InputError(f"backend must be one of {DENSE_BACKENDS}, got {backend!r}")
        if query_chunk < 1 or doc_chunk < 1:
            raise InputError(f"query_chunk and doc_chunk must be positive, got {query_chunk}, {doc_chunk}")
        self.embedder: Embedder = CachedEmbedder(embedder, cache, progress=progress) if cache else embedder
        self.name = embedder.name
        self.backend = backend
        self.query_chunk, self.doc_chunk = query_chunk, doc_chunk
        self._docs: NDArray[np.float32] | None = None
        self._faiss: Any = None

    def index(self, documents: Sequence[str]) -> None:
        docs = self.embedder.encode_documents(check_texts(documents, "documents"))
        if self.backend == "faiss":
            try:
                import faiss
            except ImportError:
                raise InputError("backend 'faiss' needs the faiss-cpu package (pip install faiss-cpu)") from None
            self._faiss = faiss.IndexFlatIP(docs.shape[1])
            self._faiss.add(docs)
        self._docs = docs

    @property
    def n_docs(self) -> int:
        return 0 if self._docs is None else len(self._docs)

    def search(self, queries: Sequence[str], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if self._docs is None:
            raise InputError(f"{self.name}: call index(documents) before search")
        k = check_k(k, self.n_docs)
        return self.search_vectors(self.embedder.encode_queries(check_texts(queries, "queries")), k)

    def search_vectors(self, vectors: NDArray[np.float32], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` for already-encoded query vectors (n, dim)."""
        if self._docs is None:
            raise InputError(f"{self.name}: call index(documents) before search")
        q = np.asarray(vectors, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self._docs.shape[1] or not np.all(np.isfinite(q)):
            raise InputError(f"query vectors must be finite with shape (n, {self._docs.shape[1]}), got {q.shape}")
        k = check_k(k, self.n_docs)
        if self._faiss is None:
            return topk_inner_product(q, self._docs, k, query_chunk=self.query_chunk, doc_chunk=self.doc_chunk)
        # FAISS's order among equal scores is its own: widen the list, then re-rank by (score, position).
        wide = min(self.n_docs, 2 * k + 16)
        scores, ids = self._faiss.search(q, wide)
        return select_topk(scores.astype(np.float32), ids.astype(np.int64), k)


class BM25Retriever:
    """Okapi BM25 (Lucene variant; k1=1.5, b=0.75 by default) scored by the maintained ``bm25s`` package.

    Terms: lower-cased runs of two or more word characters (``(?u)\\b\\w\\w+\\b``, scikit-learn's and
    bm25s's default), English stop words (bm25s's list) removed, Snowball English stems (PyStemmer)
    when ``stem`` is true. Besides ``search``, :meth:`query_stats` gives cheap per-query lexical
    features for a router's context, the top BM25 score among them.
    """

    name = "bm25"
    STAT_NAMES = ("bm25_top", "bm25_gap", "n_terms", "matched_fraction", "mean_idf", "max_idf")

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, stem: bool = True) -> None:
        if not (k1 >= 0 and 0 <= b <= 1):
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        from bm25s.stopwords import STOPWORDS_EN

        self.k1, self.b, self.stem = k1, b, stem  # public settings: part of a results cache's fingerprint
        self._stop = frozenset(STOPWORDS_EN)
        self._stem: Any = None
        if stem:
            import Stemmer

            self._stem = Stemmer.Stemmer("english").stemWords
        self._model: Any = None
        self._idf: NDArray[np.float64] = np.zeros(0)
        self.n_docs = 0

    def terms(self, text: str) -> list[str]:
        """The BM25 terms of ``text`` (lower-cased, stop words removed, stemmed)."""
        words = [w for w in TERM.findall(text.lower()) if w not in self._stop]
        return list(self._stem(words)) if self._stem is not None and words else words

    def index(self, documents: Sequence[str]) -> None:
        import bm25s

        docs = [self.terms(t) for t in check_texts(documents, "documents")]
        model = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        model.index(docs, show_progress=False)
        df = np.zeros(len(model.vocab_dict))
        for term, count in Counter(t for d in docs for t in set(d)).items():
            df[model.vocab_dict[term]] = count
        self._idf = np.log1p((len(docs) - df + 0.5) / (df + 0.5))  # Lucene's BM25 idf
        self._model, self.n_docs = model, len(docs)

    def _query_ids(self, queries: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Per query: the ids of its terms found in the corpus vocabulary, and its number of terms."""
        if self._model is None:
            raise InputError("bm25: call index(documents) before search")
        terms = [self.terms(t) for t in check_texts(queries, "queries")]
        return [self._model.get_tokens_ids(t) for t in terms], [len(t) for t in terms]

    def scores(self, queries: Sequence[str]) -> NDArray[np.float32]:
        """BM25 score of every indexed document for every query, (n_queries, n_docs); 0 without a shared term."""
        ids, _ = self._query_ids(queries)
        out = np.zeros((len(ids), self.n_docs), dtype=np.float32)
        for i, row in enumerate(ids):
            if row:
                out[i] = self._model.get_scores_from_ids(row)
        return out

    def search(self, queries: Sequence[str], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if self._model is None:
            raise InputError("bm25: call index(documents) before search")
        k = check_k(k, self.n_docs)
        texts = check_texts(queries, "queries")
        idx = np.empty((len(texts), k), dtype=np.int64)
        val = np.empty((len(texts), k), dtype=np.float32)
        chunk = max(1, QUERY_BLOCK_SCORES // self.n_docs)  # bounded (chunk, n_docs) score blocks
        for start in range(0, len(texts), chunk):
            block = self.scores(texts[start : start + chunk])
            cols = np.broadcast_to(np.arange(self.n_docs, dtype=np.int64), block.shape)
            idx[start : start + len(block)], val[start : start + len(block)] = select_topk(block, cols, k)
        return idx, val

    def query_stats(self, queries: Sequence[str]) -> tuple[tuple[str, ...], NDArray[np.float64]]:
        """Cheap lexical features per query, (n, 6), columns named by :attr:`STAT_NAMES`.

        ``bm25_top``: the best BM25 score; ``bm25_gap``: best minus second best (how clear-cut the
        lexical match is; 0 with one document); ``n_terms``: terms after stop words;
        ``matched_fraction``: share of those terms that occur in the corpus; ``mean_idf`` /
        ``max_idf``: Lucene idf of the matched terms (0 when none matches).
        """
        texts = check_texts(queries, "queries")
        ids, n_terms = self._query_ids(texts)
        top = self.search(texts, min(2, self.n_docs))[1].astype(np.float64)
        out = np.zeros((len(texts), len(self.STAT_NAMES)))
        out[:, 0] = top[:, 0]
        out[:, 1] = top[:, 0] - top[:, 1] if top.shape[1] > 1 else 0.0
        out[:, 2] = n_terms
        for i, row in enumerate(ids):
            if row:
                out[i, 3] = len(row) / n_terms[i]
                out[i, 4] = self._idf[row].mean()
                out[i, 5] = self._idf[row].max()
        return self.STAT_NAMES, out
