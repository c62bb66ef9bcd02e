"""Relevance metrics: hand-computed values, a slow per-query reference, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.data.relevance import METRICS, Judgements, score

DOCS = ["d0", "d1", "d2", "d3", "d4"]


@pytest.fixture
def judgements() -> Judgements:
    return Judgements.from_qrels(
        ["a", "b", "c"],
        DOCS,
        {"a": {"d1": 3, "d2": 1, "d0": 0}, "b": {"d3": 1}, "c": {"d4": 2, "d0": 2, "d1": 1}},
    )


def test_hand_computed_values(judgements: Judgements) -> None:
    ranked = np.array([[2, 1, 0], [0, 3, -1], [3, 2, 1]])
    np.testing.assert_array_equal(judgements.at(ranked), [[1, 3, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(judgements.ideal(3), [[3, 1, 0], [1, 0, 0], [2, 2, 1]])
    l2 = math.log2
    ndcg_a = (1 + 3 / l2(3)) / (3 + 1 / l2(3))
    ndcg_b = (1 / l2(3)) / 1
    ndcg_c = (1 / l2(4)) / (2 + 2 / l2(3) + 1 / l2(4))
    np.testing.assert_allclose(score("ndcg", ranked, judgements), [ndcg_a, ndcg_b, ndcg_c])
    np.testing.assert_allclose(score("rr", ranked, judgements), [1, 1 / 2, 1 / 3])
    np.testing.assert_allclose(score("hit", ranked, judgements), [1, 1, 1])
    np.testing.assert_allclose(score("recall", ranked, judgements), [1, 1, 1 / 3])
    # k = 1: only the first rank counts
    np.testing.assert_allclose(score("hit", ranked[:, :1], judgements), [1, 0, 0])
    np.testing.assert_allclose(score("ndcg", ranked[:, :1], judgements), [1 / 3, 0, 0])


def _reference(metric: str, ranking: list[int], gains: dict[int, float]) -> float:
    """One query, the textbook definitions, no numpy."""
    got = [gains.get(d, 0.0) if d >= 0 else 0.0 for d in ranking]
    relevant = [g > 0 for g in got]
    if metric == "ndcg":
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(got))
        ideal = sorted(gains.values(), reverse=True)[: len(ranking)]
        return dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    if metric == "rr":
        return next((1 / (r + 1) for r, rel in enumerate(relevant) if rel), 0.0)
    if metric == "hit":
        return float(any(relevant))
    return sum(relevant) / len(gains)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_matches_slow_reference_on_random_lists(metric: str) -> None:
    rng = np.random.default_rng(7)
    n, N, k = 200, 40, 10
    docs = [f"d{j}" for j in range(N)]
    qrels = {}
    for i in range(n):
        judged = rng.choice(N, size=rng.integers(1, 15), replace=False)
        qrels[f"q{i}"] = {docs[j]: float(rng.integers(1, 4)) for j in judged}
    ranked = np.array([rng.permutation(N)[:k] for _ in range(n)])
    ranked[rng.random((n, k)) < 0.05] = -1  # some padding
    judgements = Judgements.from_qrels(list(qrels), docs, qrels)
    got = score(metric, ranked, judgements)
    want = [
        _reference(metric, ranked[i].tolist(), {int(d[1:]): g for d, g in qrels[f"q{i}"].items()}) for i in range(n)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all((got >= 0) & (got <= 1))


def test_perfect_ranking_scores_one(judgements: Judgements) -> None:
    ideal = np.array([[1, 2, 0], [3, 0, 1], [0, 4, 1]])  # a: d1(3), d2(1); b: d3; c: d0(2), d4(2), d1(1)
    for metric in METRICS:
        np.testing.assert_allclose(score(metric, ideal, judgements), 1.0)


def test_bad_input(judgements: Judgements) -> None:
    with pytest.raises(InputError, match="unknown metric"):
        score("map", np.zeros((3, 2), dtype=np.int64), judgements)
    with pytest.raises(InputError, match="shape"):
        score("rr", np.zeros((2, 2), dtype=np.int64), judgements)
    with pytest.raises(InputError, match="integer"):
        score("rr", np.zeros((3, 2)), judgements)
    with pytest.raises(InputError, match="positions must lie"):
        score("rr", np.full((3, 2), 5), judgements)
    with pytest.raises(InputError, match="unknown document 'zz'"):
        Judgements.from_qrels(["a"], DOCS, {"a": {"zz": 1}})
    with pytest.raises(InputError, match="'a' has no relevant document"):
        Judgements.from_qrels(["a"], DOCS, {"a": {"d1": 0}})
    with pytest.raises(InputError, match="'b' has no judgements"):
        Judgements.from_qrels(["b"], DOCS, {})
    with pytest.raises(InputError, match="not finite"):
        Judgements.from_qrels(["a"], DOCS, {"a": {"d1": float("nan")}})
