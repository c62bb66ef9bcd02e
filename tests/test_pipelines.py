"""Retrieval pipelines: the arm syntax, and fusion checked against a slow per-query reference."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.data.pipelines import (
    RankedLists,
    convex_parts,
    fuse,
    parse_pipeline,
    parse_pipelines,
    post_features,
    rrf_parts,
    run_pipeline,
    split_top,
)


# ------------------------------------------------------------------------------------------ syntax
def test_parse_single_fusions_and_rerank() -> None:
    assert parse_pipeline("bm25").name == "bm25"
    cvx = parse_pipeline("cvx(bm25, e5-small; w=0.4)")
    assert cvx.weights == pytest.approx((0.6, 0.4)) and cvx.norm == "minmax"
    assert cvx.name == "cvx(bm25,e5-small;w=0.4)"
    assert parse_pipeline(cvx.name) == cvx  # the canonical name parses back to the same pipeline
    three = parse_pipeline("cvx(bm25,a,b;w=0.2/0.3/0.5;norm=zscore)")
    assert three.weights == (0.2, 0.3, 0.5) and three.name == "cvx(bm25,a,b;w=0.2/0.3/0.5;norm=zscore)"
    rrf = parse_pipeline("rrf(bm25,minilm-l6)")
    assert rrf.rrf_k == 60 and rrf.name == "rrf(bm25,minilm-l6;k=60)"
    rr = parse_pipeline("rerank(rrf(bm25,glove-50;k=10),minilm-l6;n=50)")
    assert rr.first == parse_pipeline("rrf(bm25,glove-50;k=10)") and rr.n == 50
    assert rr.retrievers == ("bm25", "glove-50") and rr.models == ("bm25", "glove-50", "minilm-l6")
    assert parse_pipeline(rr.name) == rr


def test_split_top_respects_parentheses() -> None:
    assert split_top("bm25, cvx(bm25,e5;w=0.4) ,rrf(a,b),") == ["bm25", "cvx(bm25,e5;w=0.4)", "rrf(a,b)"]
    arms = parse_pipelines("bm25,minilm-l6,cvx(bm25,minilm-l6;w=0.5)")
    assert [a.kind for a in arms] == ["single", "single", "cvx"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cvx(bm25)", "at least two distinct"),
        ("cvx(bm25,bm25)", "at least two distinct"),
        ("cvx(bm25,e5;w=1.5)", "weights in [0, 1]"),
        ("cvx(bm25,e5,x;w=0.5/0.4/0.2)", "sum to 1"),
        ("cvx(bm25,e5;w=abc)", "w must be a number"),
        ("cvx(bm25,e5;norm=l2)", "norm must be one of"),
        ("cvx(bm25,e5;q=1)", "unknown option"),
        ("rrf(bm25,e5;k=-1)", "between 0"),
        ("mix(bm25,e5)", "unknown pipeline"),
        ("cvx(bm25,e5", "unbalanced"),
        ("bm25)", "unbalanced"),
        ("rerank(bm25)", "rerank takes"),
        ("cvx(bm25,e5;w)", "not key=value"),
        ("bm 25", "not a retriever"),
        ("cvx(bm25,\x00x)", "not a retriever"),
    ],
)
def test_bad_arms_are_clear_errors(text: str, says: str) -> None:
    with pytest.raises(InputError) as err:
        parse_pipelines(text)
    assert says in str(err.value)


def test_duplicate_arms_refused() -> None:
    with pytest.raises(InputError, match="listed twice"):
        parse_pipelines("rrf(a,b),rrf(a,b;k=60)")


# ------------------------------------------------------------------------------------------ fusion
def _lists(rng: np.random.Generator, n: int, L: int, n_docs: int) -> RankedLists:
    pos = np.stack([rng.choice(n_docs, size=L, replace=False) for _ in range(n)])
    scores = -np.sort(-rng.normal(size=(n, L)), axis=1)
    scores[:, -2:] = scores[:, -3:-2]  # ties inside a list
    return RankedLists(pos.astype(np.int64), scores.astype(np.float32))


def _reference(lists: list[RankedLists], kind: str, weights: list[float], norm: str, rrf_k: int, k: int):
    """Per query: every candidate's fused score summed component by component, ties by position."""
    out_pos, out_sc = [], []
    for i in range(lists[0].positions.shape[0]):
        per_component = []
        for c, ranked in enumerate(lists):
            pairs = [(int(p), float(v)) for p, v in zip(ranked.positions[i], ranked.scores[i], strict=True) if p >= 0]
            s = np.array([v for _, v in pairs])
            if kind == "rrf":
                per_component.append(({p: 1.0 / (rrf_k + r + 1) for r, (p, _) in enumerate(pairs)}, 0.0))
                continue
            if norm == "minmax":
                span = s.max() - s.min()
                z = (s - s.min()) / (span if span > 0 else 1.0)
            elif norm == "zscore":
                z = (s - s.mean()) / (s.std() if s.std() > 0 else 1.0)
            else:
                z = s
            per_component.append(
                ({p: weights[c] * v for (p, _), v in zip(pairs, z, strict=True)}, weights[c] * z.min())
            )
        candidates = set().union(*(values for values, _ in per_component))
        fused = {d: sum(values.get(d, missing) for values, missing in per_component) for d in candidates}
        ranked_docs = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        out_pos.append([d for d, _ in ranked_docs])
        out_sc.append([v for _, v in ranked_docs])
    return np.array(out_pos), np.array(out_sc)


@pytest.mark.parametrize("norm", ["minmax", "zscore", "none"])
def test_convex_fusion_equals_reference(norm: str) -> None:
    rng = np.random.default_rng(3)
    lists = [_lists(rng, 40, 12, 30), _lists(rng, 40, 12, 30), _lists(rng, 40, 8, 30)]
    weights = [0.5, 0.3, 0.2]
    pos, sc = fuse(convex_parts(lists, weights, norm), 30, 10)
    want_pos, want_sc = _reference(lists, "cvx", weights, norm, 0, 10)
    np.testing.assert_allclose(sc, want_sc, atol=1e-9)
    np.testing.assert_array_equal(pos, want_pos)


def test_rrf_equals_reference_and_handles_padding() -> None:
    rng = np.random.default_rng(4)
    a, b = _lists(rng, 25, 10, 20), _lists(rng, 25, 10, 20)
    b.positions[:, -3:] = -1  # a short list (fewer documents than the depth)
    pos, sc = fuse(rrf_parts([a, b], 60), 20, 5)
    want_pos, want_sc = _reference([a, b], "rrf", [], "", 60, 5)
    np.testing.assert_allclose(sc, want_sc)
    np.testing.assert_array_equal(pos, want_pos)


def test_fuse_pads_when_fewer_candidates_than_k() -> None:
    lists = RankedLists(np.array([[2, 0, -1]]), np.array([[3.0, 1.0, 0.0]]))
    pos, sc = fuse(rrf_parts([lists], 60), 5, 4)
    assert pos.tolist() == [[2, 0, -1, -1]] and np.isneginf(sc[0, 2:]).all()


def test_run_pipeline_costs_add_components_and_rerank_rescored() -> None:
    rng = np.random.default_rng(5)
    lists = {"bm25": _lists(rng, 30, 20, 50), "dense": _lists(rng, 30, 20, 50)}
    seconds = {"bm25": np.full(30, 0.001), "dense": np.full(30, 0.05), "encode:model": np.full(30, 0.02)}
    single = run_pipeline(parse_pipeline("bm25"), lists, seconds, 50, 10)
    np.testing.assert_array_equal(single.positions, lists["bm25"].positions[:, :10])
    fused = run_pipeline(parse_pipeline("cvx(bm25,dense;w=0.5)"), lists, seconds, 50, 10)
    assert np.all(fused.seconds >= 0.051) and np.all(fused.seconds < 0.06)
    table = rng.normal(size=(30, 50))
    rerank = run_pipeline(
        parse_pipeline("rerank(bm25,model;n=20)"),
        lists,
        seconds,
        50,
        10,
        rescorers={"model": lambda p: np.take_along_axis(table, np.maximum(p, 0), axis=1)},
    )
    for i in range(30):  # the re-scored top 10 of BM25's 20 candidates
        cand = lists["bm25"].positions[i]
        want = sorted(cand.tolist(), key=lambda d: (-table[i, d], d))[:10]
        assert rerank.positions[i].tolist() == want
    assert np.all(rerank.seconds >= 0.021)
    with pytest.raises(InputError, match="no results for retriever"):
        run_pipeline(parse_pipeline("rrf(bm25,other)"), lists, seconds, 50, 10)


def test_post_features() -> None:
    post = post_features(np.array([[3.0, 1.0, 0.5], [2.0, -np.inf, -np.inf]]))
    np.testing.assert_allclose(post, [[3.0, 2.0, 1.5], [2.0, 0.0, 2.0]])
