"""Duplicate detection, question and task splits, train/test files joined by model name, split files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.llm.datasets import LLMRoutingData, load_llmrouter, load_paretobandit
from banditroute.llm.dedup import (
    EDITS,
    edit,
    normalise,
    overlap,
    question_groups,
    similarity_profile,
    split_by_question,
)
from banditroute.llm.protocols import parse_seeds
from banditroute.llm.splits import join_by_name, question_split, task_holdout, train_test, write_split
from llm_fakes import HashedBowEmbedder


def table(queries: list[str], arms: tuple[str, ...] = ("a", "b"), groups: list[str] | None = None) -> LLMRoutingData:
    n, M = len(queries), len(arms)
    q = (np.arange(n * M).reshape(n, M) % 7) / 7.0
    return LLMRoutingData(
        name="t", queries=tuple(queries), quality=q, cost=np.ones((n, M)) * (1 + np.arange(M)), arm_names=arms,
        groups=tuple(groups or ["g"] * n), input_tokens=np.ones(n), cost_known=True,
    )  # fmt: skip


def test_overlap_finds_exact_normalised_and_near_duplicates() -> None:
    assert normalise("  What IS 2+2?\n") == "what is 2 2"
    train = ["What is 2+2?", "Name a colour.", "Write a function to sort a list."]
    test = ["What is 2+2?", "what is 2 + 2", "Write a function to sort a list!!", "An unrelated question."]
    E_train = np.eye(4)[[0, 1, 2]]
    E_test = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0.2, 0, 0, 1.0]])
    found = overlap(train, test)  # text only
    assert found.exact.tolist() == [True, False, False, False]
    assert found.normalised.tolist() == [False, True, True, False]
    near = overlap(train, ["A rewording of the colour question"], E_train, np.array([[0, 0.99, 0.1, 0]]))
    assert near.near.tolist() == [True] and near.counts() == {
        "exact": 0,
        "normalised": 0,
        "near": 1,
        "total": 1,
        "of": 1,
    }
    assert not overlap(train, test, E_train, E_test).near[3]  # cosine 0.2: a different question


def test_question_split_keeps_duplicate_groups_on_one_side() -> None:
    base = [f"question number {i} about topic {i % 5}" for i in range(60)]
    queries = [*base, "Question number 3 about topic 3", "QUESTION NUMBER 7 ABOUT TOPIC 2!"]
    groups = question_groups(queries)
    assert groups[60] == groups[3] and groups[61] == groups[7] and np.unique(groups).size == 60
    for seed in range(5):
        tr, te = split_by_question(groups, 0.25, seed)
        assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == len(queries)
        assert not set(groups[tr]) & set(groups[te])
        assert abs(te.size - 0.25 * len(queries)) <= 2
        assert not overlap([queries[i] for i in tr], [queries[i] for i in te]).any.any()
    a, b = split_by_question(groups, 0.25, 1), split_by_question(groups, 0.25, 1)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], split_by_question(groups, 0.25, 2)[1])
    E = HashedBowEmbedder(32).encode_queries(queries)
    tt = question_split(table(queries), E, 0.2, 0)
    assert not set(question_groups(queries, E)[tt.train_idx]) & set(question_groups(queries, E)[tt.test_idx])
    with pytest.raises(InputError):
        split_by_question(groups, 1.0, 0)


def test_train_test_joins_models_by_name_and_removes_duplicates() -> None:
    train = table(["q one", "q two", "q three"], arms=("a", "b", "c"))
    test = table(["Q one!", "q four", "q five"], arms=("c", "a"))  # other order, b missing
    tr, te, dropped = join_by_name(train, test)
    assert tr.arm_names == te.arm_names == ("a", "c") and dropped == ("b",)
    np.testing.assert_array_equal(te.quality[:, 0], test.quality[:, 1])  # "a" is test's second column
    tt = train_test(train, test)
    assert tt.removed["normalised"] == 1 and tt.removed["total"] == 1
    assert [tt.data.queries[i] for i in tt.test_idx] == ["q four", "q five"]
    np.testing.assert_array_equal(tt.data.quality[tt.test_idx, 1], test.quality[1:, 0])  # "c"
    assert "removed 1 of 3" in tt.describe() and "dropped: b" in tt.describe()
    assert len(train_test(train, test, dedup=False).test_idx) == 3
    with pytest.raises(InputError, match="share no LLM"):
        join_by_name(train, table(["x"], arms=("z",)))
    with pytest.raises(InputError, match="nothing left"):
        train_test(train, table(["q one"], arms=("a",)))


def test_task_holdout_tests_on_an_unseen_task() -> None:
    data = table([f"q{i}" for i in range(12)], groups=["math"] * 4 + ["code"] * 8)
    tt = task_holdout(data, "math")
    assert {tt.data.groups[i] for i in tt.test_idx} == {"math"}
    assert "math" not in {tt.data.groups[i] for i in tt.train_idx} and len(tt.test_idx) == 4
    with pytest.raises(InputError, match="some but not all"):
        task_holdout(data, "poetry")


def test_split_files_round_trip_through_the_loaders(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    records = [{"question": f"question {i}?", "scores": {"x": i / 10, "y": 1 - i / 10}} for i in range(10)]
    (root / "my_scores.json").write_text(json.dumps(records))  # any file name
    (root / "default_llm.json").write_text(json.dumps({m: {"input_price": 1.0, "output_price": 2.0} for m in "xy"}))
    data = load_llmrouter(root)  # the folder's only scores file
    tt = question_split(data, None, 0.3, 0)
    paths = write_split(data, tt, tmp_path / "out")
    train, test = load_llmrouter(paths["train"]), load_llmrouter(paths["test"])
    assert train.n_rows + test.n_rows == 10 and not set(train.queries) & set(test.queries)
    np.testing.assert_allclose(test.quality, data.quality[tt.test_idx])
    with pytest.raises(InputError, match="looks like a scores file"):
        load_llmrouter(root / "my_scores.json", prices=root / "my_scores.json")
    with pytest.raises(InputError, match="looks like a price file"):
        load_llmrouter(root / "default_llm.json")

    # a raw U+2028 inside a prompt is one JSON line, not two
    lines = [{"prompt": f"p{i}\u2028x", "source": "s", "arms": {"a": {"reward": 0.5, "cost": 0.1}}} for i in range(6)]
    (tmp_path / "pb.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    pb = load_paretobandit(tmp_path / "pb.jsonl")
    out = write_split(pb, question_split(pb, None, 0.5, 1), tmp_path / "pb")
    assert load_paretobandit(out["train"]).n_rows + load_paretobandit(out["test"]).n_rows == 6


def test_parse_seeds() -> None:
    assert parse_seeds("5") == (0, 1, 2, 3, 4) and parse_seeds("2-4") == (2, 3, 4) and parse_seeds("0,3,7") == (0, 3, 7)
    for bad in ("0", "4-2", "1,1", "x", "-1"):
        with pytest.raises(InputError, match="--seeds"):
            parse_seeds(bad)


def test_similarity_profile_separates_edited_copies_from_other_questions() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(200)]
    queries = [" ".join(rng.choice(vocab, 12)) for _ in range(80)]
    emb = HashedBowEmbedder(256)
    prof = similarity_profile(queries, emb.encode_queries(queries), emb.encode_queries, n=40)
    assert set(prof) == {"random pairs", "nearest other question", *EDITS}
    assert prof["random pairs"].size > 90_000 and prof["nearest other question"].size == 40
    for kind in ("prefix", "word dropped", "word swapped"):  # bag of words: order-blind, one word of 12 changes
        assert np.median(prof[kind]) > 0.85 > np.quantile(prof["random pairs"], 0.999)
    assert edit("a b c d", "word swapped", np.random.default_rng(1)).split() != ["a", "b", "c", "d"]
    with pytest.raises(InputError):
        edit("a b c", "shout", rng)
