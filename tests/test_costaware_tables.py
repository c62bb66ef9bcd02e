"""The cost-aware routers on retrieval reward tables: table -> Split, budgets, and a cascade that escalates
from the first stage's post-retrieval features (docs/architecture.md, "Cost-aware routing")."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.costaware.cascade import CascadeRouter
from banditroute.costaware.features import Featurizer
from banditroute.costaware.online import Split, run_online
from banditroute.costaware.predicted import PredictedRouter, cross_fit
from banditroute.costaware.routers import PacedRouter, PolicyRouter, reference_cost
from banditroute.costaware.tables import table_split
from banditroute.envs.reward_table import RewardTable
from banditroute.llm.neighbours import KNNEstimator

ARMS = ("bm25", "minilm", "e5")
BASE_COST = np.array([0.01, 0.1, 1.0])  # seconds per call: nearly constant per retriever
# Topic t's nDCG per retriever: the cheap ones each win one topic, the dear one is good everywhere.
PROFILE = np.array([[0.8, 0.3, 0.75], [0.3, 0.8, 0.75], [0.3, 0.3, 0.8]])


def retrieval_table(n: int, seed: int) -> RewardTable:
    """``n`` queries on three topics (orthogonal context directions); rewards by :data:`PROFILE` plus
    noise, clipped to [0, 1]; costs the per-retriever base times 1 ± 5% timing noise."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 3, size=n)
    contexts = np.eye(8)[topic] + 0.2 * rng.standard_normal((n, 8))
    rewards = np.clip(PROFILE[topic] + 0.1 * rng.standard_normal((n, 3)), 0.0, 1.0)
    costs = BASE_COST * (1 + 0.05 * rng.uniform(-1, 1, size=(n, 3)))
    return RewardTable(
        contexts, rewards, costs, arm_names=ARMS, reward_range=(0.0, 1.0),
        groups=tuple(f"topic{t}" for t in topic), row_ids=tuple(f"q{i}" for i in range(n)),
    )  # fmt: skip


def test_table_split_takes_quality_and_cost_from_the_table_and_estimates_from_training_rows() -> None:
    table = retrieval_table(50, seed=0)
    train, rows = np.arange(0, 30), np.array([45, 31, 40])
    post = np.random.default_rng(1).random((50, 3, 2))
    split = table_split(table, rows, train_rows=train, post=post)
    np.testing.assert_array_equal(split.contexts, table.contexts[rows])
    np.testing.assert_array_equal(split.quality, table.rewards[rows])
    assert table.costs is not None
    np.testing.assert_array_equal(split.cost, table.costs[rows])
    np.testing.assert_allclose(split.est_cost, np.tile(table.costs[:30].mean(axis=0), (3, 1)))  # serving rows unseen
    np.testing.assert_array_equal(split.upper_cost, np.maximum(split.cost, split.est_cost))
    assert np.any(split.upper_cost > split.est_cost)  # the timing noise does exceed the mean somewhere
    assert split.post is not None and split.n_post == 2
    np.testing.assert_array_equal(split.post, post[rows])
    assert table_split(table, rows, train_rows=train).post is None

    no_costs = RewardTable(table.contexts, table.rewards)
    for call in (
        lambda: table_split(no_costs, rows, train_rows=train),
        lambda: table_split(table, np.array([0, 50]), train_rows=train),
        lambda: table_split(table, np.array([-1]), train_rows=train),
        lambda: table_split(table, np.array([0.5]), train_rows=train),
        lambda: table_split(table, rows, train_rows=np.array([], dtype=np.int64)),
        lambda: table_split(table, rows, train_rows=train, post=post[:, :2]),
        lambda: table_split(table, rows, train_rows=train, post=post[..., 0]),
    ):
        with pytest.raises(InputError):
            call()
    with pytest.raises(InputError):
        Split(split.contexts, split.quality, split.cost, split.est_cost, split.upper_cost, np.zeros((3, 3, 0)))
    with pytest.raises(InputError):
        Split(split.contexts, split.quality, split.cost, split.est_cost, split.upper_cost, np.full((3, 3, 1), np.nan))


@pytest.fixture(scope="module")
def retrieval() -> tuple[Split, Split, Featurizer]:
    table = retrieval_table(1000, seed=2)
    train_rows, rows = np.arange(400), np.arange(400, 1000)
    post = np.random.default_rng(3).random((1000, 3, 2))  # uninformative here: only shapes matter
    train = table_split(table, train_rows, train_rows=train_rows, post=post)
    stream = table_split(table, rows, train_rows=train_rows, post=post)
    return train, stream, Featurizer(k=6, clusters=3).fit(train.contexts)


def test_cost_penalty_makes_a_policy_router_spend_less_on_retrieval(retrieval) -> None:  # type: ignore[no-untyped-def]
    train, stream, feat = retrieval
    c_ref = reference_cost(train)
    plain = run_online(PolicyRouter("linucb", feat, c_ref=c_ref), stream, np.random.default_rng(0))
    priced = run_online(PolicyRouter("linucb", feat, c_ref=c_ref, mu=0.5), stream, np.random.default_rng(0))
    assert priced.spent < 0.6 * plain.spent
    # μ = 0.5 still buys the dear retriever on topic 2, where the cheap ones lose 0.5 nDCG for 1 unit of cost.
    assert priced.quality.mean() > stream.quality[:, :2].mean(axis=0).max() + 0.15


def test_budgeted_routers_run_on_a_retrieval_table_and_respect_the_budget(retrieval) -> None:  # type: ignore[no-untyped-def]
    train, stream, feat = retrieval
    c_ref = reference_cost(train)
    knn = KNNEstimator(15).fit(train.contexts, train.quality)
    oof = cross_fit(lambda r: KNNEstimator(15).fit(train.contexts[r], train.quality[r]), train.contexts, train.n_rows)
    budget = 0.3 * stream.n_rows * float(BASE_COST[-1])
    routers = {
        "policy μ": PolicyRouter("linucb", feat, c_ref=c_ref, mu=0.5),
        "predicted (dual pacing)": PredictedRouter(copy.deepcopy(knn), stream.contexts, train, oof),
        "cascade knapsack": CascadeRouter(feat, train, H=2, mode="knapsack", success=0.6, warm=True),
        "cascade model stop": CascadeRouter(feat, train, H=2, mode="budget", stop="model", mu=0.5, warm=True),
    }
    affordable = stream.cost.mean(axis=0) <= budget / stream.n_rows
    best_affordable = stream.quality[:, affordable].mean(axis=0).max()
    records = {name: run_online(r, stream, np.random.default_rng(0), budget=budget) for name, r in routers.items()}
    for name, rec in records.items():
        assert rec.spent <= budget, name
        assert (rec.n_calls >= 1).mean() > 0.95, name  # the budget is paced, not spent on the first queries
        assert rec.quality.mean() > best_affordable, name  # routing beats any retriever the budget can pay for
    # The dual pacer keeps within the budget by itself: the loop's guard never had to step in.
    assert records["predicted (dual pacing)"].overrides == 0


@pytest.mark.parametrize("contextual", [True, False])
def test_paced_router_learns_from_scratch_and_tracks_the_budget(retrieval, contextual: bool) -> None:  # type: ignore[no-untyped-def]
    """No training split: the price starts at 0 and dual pacing alone keeps spending at the budget's rate."""
    _, stream, _ = retrieval
    budget = 0.3 * stream.n_rows * float(BASE_COST[-1])
    rec = run_online(PacedRouter(contextual=contextual, eta=0.5), stream, np.random.default_rng(0), budget=budget)
    assert rec.spent <= budget and rec.spent >= 0.8 * budget  # paced: most of the budget is used, none overspent
    assert (rec.n_calls == 1).mean() > 0.95
    affordable = stream.cost.mean(axis=0) <= budget / stream.n_rows
    assert rec.quality.mean() > stream.quality[:, affordable].mean(axis=0).max()
    if contextual:  # the cheap retrievers each win a topic: context pays, and the contextual router sees it
        assert rec.quality.mean() > 0.7
    free = run_online(PacedRouter(contextual=contextual), stream, np.random.default_rng(0))
    assert free.spent > budget  # without a budget the price stays 0: plain (Lin)UCB buys the dear retriever


def test_paced_router_prices_cost_against_quality() -> None:
    """With a budget too small for the dear arm on more than a fifth of the queries, it is bought on about
    that share (dual pacing), and the untried arms are all tried first (optimism)."""
    n = 2000
    rng = np.random.default_rng(0)
    quality = np.clip(np.column_stack([0.5 + 0.1 * rng.standard_normal(n), 0.9 + 0.05 * rng.standard_normal(n)]), 0, 1)
    table = RewardTable(np.ones((n, 1)), quality, np.tile([0.01, 1.0], (n, 1)))
    split = table_split(table, np.arange(n), train_rows=np.arange(n))
    router = PacedRouter(contextual=False, eta=0.5)
    rec = run_online(router, split, np.random.default_rng(1), budget=0.2 * n)
    share = (rec.answer == 1).mean()
    assert 0.15 < share <= 0.2 + 1e-9 and rec.answer[:2].tolist() == [0, 1]


def escalation_problem(n: int, seed: int) -> Split:
    """Two retrievers: a cheap one whose answer is good (nDCG ≈ 0.9) exactly when its list's top score
    (post-feature 0) is above 0.5 and poor (≈ 0.1) otherwise, and a dear one that is always fair (≈ 0.8).
    Post-feature 1 and the query context are noise. The best cascade calls the cheap one first and
    escalates exactly when its top score is low."""
    rng = np.random.default_rng(seed)
    post = rng.random((n, 2, 2))
    quality = np.empty((n, 2))
    quality[:, 0] = np.where(post[:, 0, 0] > 0.5, 0.9, 0.1) + 0.05 * rng.standard_normal(n)
    quality[:, 1] = 0.8 + 0.05 * rng.standard_normal(n)
    cost = np.array([0.05, 1.0]) * (1 + 0.02 * rng.uniform(-1, 1, size=(n, 2)))
    table = RewardTable(rng.standard_normal((n, 4)), np.clip(quality, 0, 1), cost)
    return table_split(table, np.arange(n), train_rows=np.arange(n), post=post)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("warm", [False, True])
def test_model_stop_learns_to_escalate_when_the_first_stage_looks_poor(seed: int, warm: bool) -> None:
    train, stream = escalation_problem(300, 100 + seed), escalation_problem(1500, 200 + seed)
    feat = Featurizer(k=3, clusters=0).fit(train.contexts)
    router = CascadeRouter(feat, train, H=2, mode="budget", stop="model", mu=0.4, alpha=0.5, warm=warm)
    rec = run_online(router, stream, np.random.default_rng(seed))
    assert stream.post is not None
    assert np.all(rec.n_calls >= 1) and np.all(stream.cost[np.arange(1500), rec.answer] > 0)
    first = np.where(rec.n_calls == 1, rec.answer, 0)
    assert np.mean(first == 0) > 0.99  # cheap first: a single call is (almost) always the cheap retriever
    late = slice(0, 1500) if warm else slice(750, 1500)  # cold: judge once it has learned
    top, escalated = stream.post[late, 0, 0], rec.n_calls[late] == 2
    assert escalated[top < 0.4].mean() > 0.85
    assert escalated[top > 0.6].mean() < 0.15
    # Quality close to always-dear at a fraction of its cost; far above the cheap retriever alone.
    assert rec.quality[late].mean() > stream.quality[late, 1].mean()
    assert rec.cost[late].mean() < 0.7 * stream.cost[late, 1].mean()
    assert rec.quality[late].mean() > stream.quality[late, 0].mean() + 0.25


def test_model_stop_needs_the_post_features_it_was_built_for() -> None:
    train = escalation_problem(100, 0)
    feat = Featurizer(k=3, clusters=0).fit(train.contexts)
    bare = Split(train.contexts, train.quality, train.cost, train.est_cost, train.upper_cost)
    with pytest.raises(InputError):
        run_online(CascadeRouter(feat, train, H=2, stop="model"), bare, np.random.default_rng(0))
    with pytest.raises(InputError):
        CascadeRouter(feat, train, H=2, stop="quality")
    # Without post-features the rule runs on (e, h/H, called) alone; the success stop ignores them.
    for router in (CascadeRouter(feat, bare, H=2, stop="model"), CascadeRouter(feat, bare, H=2, warm=True)):
        rec = run_online(router, bare, np.random.default_rng(0))
        assert np.all((rec.n_calls >= 1) & (rec.n_calls <= 2))
