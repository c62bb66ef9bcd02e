"""Retrievers: chunked dense search equals a full sort (ties included); BM25 equals the textbook formula."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.core.validation import InputError
from banditroute.data.cache import EmbeddingCache
from banditroute.data.interfaces import Retriever
from banditroute.data.retrievers import BM25Retriever, DenseRetriever, select_topk, topk_inner_product
from fake_embedder import CountingEmbedder


def brute_force(queries: np.ndarray, docs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: full scores, sorted by (score desc, position asc)."""
    scores = (queries @ docs.T).astype(np.float32)
    order = np.array([np.lexsort((np.arange(len(docs)), -row))[:k] for row in scores])
    return order, np.take_along_axis(scores, order, axis=1)


@settings(max_examples=60, deadline=None)
@given(
    n_q=st.integers(1, 12),
    n_d=st.integers(1, 40),
    k_frac=st.floats(0, 1),
    q_chunk=st.integers(1, 5),
    d_chunk=st.integers(1, 17),
    levels=st.sampled_from([2, 3, 1000]),  # few levels: many exact ties
    seed=st.integers(0, 2**31),
)
def test_chunked_topk_equals_full_sort(n_q, n_d, k_frac, q_chunk, d_chunk, levels, seed):
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, levels, (n_q, 3)).astype(np.float32)
    docs = rng.integers(0, levels, (n_d, 3)).astype(np.float32)
    k = 1 + int(k_frac * (n_d - 1))
    idx, val = topk_inner_product(queries, docs, k, query_chunk=q_chunk, doc_chunk=d_chunk)
    ref_idx, ref_val = brute_force(queries, docs, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(val, ref_val)
    assert idx.dtype == np.int64 and val.dtype == np.float32


def test_select_topk_breaks_ties_by_position():
    scores = np.array([[1, 3, 3, 2, 3], [0, 0, 0, 0, 0]], dtype=np.float32)
    cols = np.broadcast_to(np.arange(5), scores.shape)
    idx, val = select_topk(scores, cols, 2)
    np.testing.assert_array_equal(idx, [[1, 2], [0, 1]])
    np.testing.assert_array_equal(val, [[3, 3], [0, 0]])


@pytest.fixture
def corpus():
    return [f"document {i} about topic {i % 7}" for i in range(60)]


def test_dense_retriever_matches_brute_force_and_uses_the_cache(tmp_path, corpus):
    model = CountingEmbedder(dim=16, batch_size=8)
    retriever = DenseRetriever(model, EmbeddingCache(tmp_path), query_chunk=4, doc_chunk=16)
    assert isinstance(retriever, Retriever) and retriever.name == "fake"
    retriever.index(corpus)
    queries = [*corpus[:5], "something else"]
    idx, val = retriever.search(queries, 7)
    Q = np.stack([model._vec(t, "query") for t in queries])
    D = np.stack([model._vec(t, "document") for t in corpus])
    ref_idx, ref_val = brute_force(Q, D, 7)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(val, ref_val, rtol=1e-6)

    again = CountingEmbedder(dim=16, batch_size=8)
    second = DenseRetriever(again, EmbeddingCache(tmp_path))
    second.index(corpus)
    np.testing.assert_array_equal(second.search(queries, 7)[0], idx)
    assert again.encoded == []  # everything came from the cache


def test_faiss_backend_equals_exact(corpus):
    pytest.importorskip("faiss")
    exact, flat = DenseRetriever(CountingEmbedder(dim=16)), DenseRetriever(CountingEmbedder(dim=16), backend="faiss")
    for r in (exact, flat):
        r.index(corpus)
    a, b = exact.search(corpus[:9], 10), flat.search(corpus[:9], 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5)


def test_dense_retriever_with_a_real_model_finds_the_paraphrase():
    from banditroute.data.embedders import EMBEDDERS, make_embedder

    if EMBEDDERS["minilm-l3"].missing():
        pytest.skip("minilm-l3 not installed")
    docs = [
        "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
        "Photosynthesis converts light energy into chemical energy in plants.",
        "The stock market fell sharply on Monday.",
    ]
    retriever = DenseRetriever(make_embedder("minilm-l3"))
    retriever.index(docs)
    idx, _ = retriever.search(["How do plants turn sunlight into energy?", "famous landmark in France"], 1)
    np.testing.assert_array_equal(idx[:, 0], [1, 0])


def reference_bm25(docs: list[list[str]], query: list[str], k1: float, b: float) -> np.ndarray:
    """Lucene BM25 written out: Σ_t idf(t) · tf / (tf + k1 (1 − b + b·|d|/avgdl)),
    idf(t) = ln(1 + (N − df + ½)/(df + ½))."""
    n = len(docs)
    avgdl = sum(map(len, docs)) / n
    df = Counter(t for d in docs for t in set(d))
    out = np.zeros(n)
    for j, d in enumerate(docs):
        tf = Counter(d)
        for t in query:
            if t in df:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                out[j] += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
    return out


DOCS = [
    "The quick brown fox jumps over the lazy dog.",
    "Supersonic aircraft wings generate shock waves at high Mach numbers.",
    "Boundary layer transition on a flat plate in supersonic flow.",
    "Foxes are small omnivorous mammals; a fox is quick.",
    "Heat transfer in hypersonic boundary layers.",
]


def test_bm25_scores_equal_the_formula_and_find_the_exact_match():
    bm25 = BM25Retriever(k1=1.2, b=0.75)
    assert isinstance(bm25, Retriever)
    bm25.index(DOCS)
    queries = ["supersonic boundary layer flow", "quick foxes", "the of and"]  # last: stop words only
    terms = [bm25.terms(d) for d in DOCS]
    assert terms[3][:2] == ["fox", "small"]  # stop words dropped, stems
    scores = bm25.scores(queries)
    for q, row in zip(queries, scores, strict=True):
        np.testing.assert_allclose(row, reference_bm25(terms, bm25.terms(q), 1.2, 0.75), rtol=1e-5)
    idx, val = bm25.search(queries, 3)
    assert idx[0, 0] == 2 and idx[1, 0] == 3
    np.testing.assert_array_equal(idx[2], [0, 1, 2])  # no shared term: all zero, ties by position
    assert np.all(val[:, :-1] >= val[:, 1:])
    exact = bm25.search([DOCS[4]], 1)[0]
    assert exact[0, 0] == 4


def test_bm25_query_stats():
    bm25 = BM25Retriever()
    bm25.index(DOCS)
    names, stats = bm25.query_stats(["supersonic boundary layer", "zebra quantum", "fox zebra"])
    col = {n: stats[:, i] for i, n in enumerate(names)}
    assert stats.shape == (3, 6) and names == BM25Retriever.STAT_NAMES
    np.testing.assert_allclose(
        col["bm25_top"], bm25.search(["supersonic boundary layer", "zebra quantum", "fox zebra"], 1)[1][:, 0]
    )
    np.testing.assert_array_equal(col["n_terms"], [3, 2, 2])
    np.testing.assert_allclose(col["matched_fraction"], [1, 0, 0.5])
    assert col["bm25_top"][1] == 0 and col["mean_idf"][1] == 0 and col["bm25_gap"][0] > 0
    assert col["max_idf"][0] >= col["mean_idf"][0] > 0


def test_bad_input():
    for retriever in (BM25Retriever(), DenseRetriever(CountingEmbedder())):
        with pytest.raises(InputError, match="before"):
            retriever.search(["q"], 1)
        with pytest.raises(InputError):
            retriever.index([])
        retriever.index(DOCS)
        for k in (0, -1, len(DOCS) + 1, 1.5, True):
            with pytest.raises(InputError, match="k must"):
                retriever.search(["q"], k)
        for queries in ([], "a string", [1], None):
            with pytest.raises(InputError):
                retriever.search(queries, 1)
    with pytest.raises(InputError):
        DenseRetriever(CountingEmbedder(), backend="annoy")
    with pytest.raises(InputError):
        BM25Retriever(b=2)
    dense = DenseRetriever(CountingEmbedder(dim=8))
    dense.index(DOCS)
    with pytest.raises(InputError, match="shape"):
        dense.search_vectors(np.zeros((2, 3), np.float32), 1)
