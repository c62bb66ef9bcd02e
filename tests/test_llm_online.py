"""The online loop's invariants, the baseline routers, the cascade (terminates within H) and MixLLM."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from banditroute.core.validation import InputError
from banditroute.costaware.cascade import CascadeRouter
from banditroute.costaware.features import CostModel, Featurizer
from banditroute.costaware.online import STOP, BudgetExceeded, OnlineRouter, Split, run_online
from banditroute.costaware.routers import OracleRouter, PolicyRouter, fixed_router, reference_cost
from banditroute.llm.mixllm import MixLLMRouter, QueueSim
from llm_fakes import clustered_problem


class Scripted(OnlineRouter):
    """Calls the arms of ``plan`` in order, whatever happens (to test the loop's guards)."""

    def __init__(self, plan: Sequence[int], max_steps: int = 1) -> None:
        self.plan, self.max_steps = list(plan), max_steps
        self.seen: list[tuple[int, int, float, float]] = []

    def decide(self, t: int, called: Sequence[int], rng: np.random.Generator) -> int:
        return self.plan[len(called)] if len(called) < len(self.plan) else STOP

    def observe(self, t: int, arm: int, quality: float, cost: float) -> None:
        self.seen.append((t, arm, quality, cost))


@pytest.fixture
def problem(rng: np.random.Generator) -> tuple[Split, Split]:
    train, _ = clustered_problem(300, rng)
    stream, _ = clustered_problem(200, rng)
    return train, stream


def test_loop_records_answers_costs_and_feedback(problem: tuple[Split, Split], rng: np.random.Generator) -> None:
    _, stream = problem
    router = Scripted([2, 0], max_steps=2)
    rec = run_online(router, stream, rng)
    np.testing.assert_array_equal(rec.answer, 0)  # the last call answers
    np.testing.assert_allclose(rec.quality, stream.quality[:, 0])
    np.testing.assert_allclose(rec.cost, stream.cost[:, 2] + stream.cost[:, 0])
    assert rec.n_calls.tolist() == [2] * stream.n_rows and len(router.seen) == 2 * stream.n_rows
    np.testing.assert_allclose(rec.best, stream.quality.max(axis=1))
    assert np.all(rec.decide_seconds >= 0)


def test_loop_caps_calls_at_max_steps_and_refuses_repeats(problem: tuple[Split, Split], rng) -> None:  # type: ignore[no-untyped-def]
    _, stream = problem
    assert run_online(Scripted([0, 1, 2, 3], max_steps=2), stream, rng).n_calls.max() == 2
    with pytest.raises(InputError, match="chose arm"):
        run_online(Scripted([1, 1], max_steps=2), stream, rng)
    with pytest.raises(InputError, match="chose arm"):
        run_online(Scripted([7]), stream, rng)
    with pytest.raises(InputError):
        run_online(Scripted([0]), stream, rng, budget=-1.0)


def test_budget_guard_substitutes_affordable_calls_and_never_overspends(problem, rng) -> None:  # type: ignore[no-untyped-def]
    _, stream = problem
    dearest = stream.n_arms - 1
    budget = 0.3 * stream.cost[:, dearest].sum()
    rec = run_online(Scripted([dearest]), stream, rng, budget=budget)
    assert rec.spent <= budget and rec.overrides > 0
    assert set(np.unique(rec.answer)) <= {-1, 0, dearest}  # substitutes are the cheapest LLM
    # an actual cost above its admission bound is caught
    lying = Split(stream.contexts, stream.quality, stream.cost * 10, stream.est_cost, stream.upper_cost)
    with pytest.raises(BudgetExceeded):
        run_online(Scripted([dearest]), lying, rng, budget=budget)


def test_oracle_fixed_and_learning_routers(problem, rng) -> None:  # type: ignore[no-untyped-def]
    train, stream = problem
    oracle = run_online(OracleRouter(), stream, rng)
    np.testing.assert_allclose(oracle.quality, stream.quality.max(axis=1))
    feat = Featurizer(k=8).fit(train.contexts)
    fixed = run_online(fixed_router(1, "one", feat), stream, rng)
    assert np.all(fixed.answer == 1)
    uniform = run_online(PolicyRouter("uniform", feat), stream, rng).quality.mean()
    learned = run_online(PolicyRouter("linucb", feat, params={"alpha": 0.3}), stream, rng).quality.mean()
    assert learned > uniform + 0.1
    # a cost penalty moves a learner towards cheaper LLMs
    c_ref = reference_cost(train)
    cheap = run_online(PolicyRouter("linucb", feat, c_ref=c_ref, mu=4.0, params={"alpha": 0.3}), stream, rng)
    dear = run_online(PolicyRouter("linucb", feat, c_ref=c_ref, mu=0.0, params={"alpha": 0.3}), stream, rng)
    assert cheap.cost.mean() < dear.cost.mean()
    # under a budget the loop's guard overrides unaffordable choices; the policy learns from what was played
    for name in ("linucb", "loglinear"):
        budget = 0.3 * dear.cost.sum()
        guarded = run_online(PolicyRouter(name, feat), stream, rng, budget=budget)
        assert guarded.spent <= budget and guarded.overrides > 0


@pytest.mark.parametrize("mode", ["greedy", "budget", "knapsack"])
@pytest.mark.parametrize("H", [1, 2, 3])
def test_cascade_terminates_within_H_never_repeats_and_stops_on_success(problem, rng, mode: str, H: int) -> None:  # type: ignore[no-untyped-def]
    train, stream = problem
    feat = Featurizer(k=8).fit(train.contexts)
    router = CascadeRouter(feat, train, H=H, mode=mode, success=0.6, alpha=0.3)
    calls: list[tuple[int, int, float]] = []
    original = router.observe

    def spy(t: int, arm: int, quality: float, cost: float) -> None:
        calls.append((t, arm, quality))
        original(t, arm, quality, cost)

    router.observe = spy  # type: ignore[method-assign]
    budget = 0.5 * stream.cost.mean(axis=1).sum() if mode != "greedy" else None
    rec = run_online(router, stream, rng, budget=budget)
    assert rec.n_calls.max() <= H
    for t in range(stream.n_rows):
        mine = [(arm, q) for tt, arm, q in calls if tt == t]
        arms = [a for a, _ in mine]
        assert len(set(arms)) == len(arms)  # never the same LLM twice
        assert all(q < 0.6 for _, q in mine[:-1])  # only the last call may have succeeded
    if budget is not None:
        assert rec.spent <= budget


def test_cascade_escalates_after_failures(problem, rng) -> None:  # type: ignore[no-untyped-def]
    train, stream = problem
    feat = Featurizer(k=8).fit(train.contexts)
    one = run_online(CascadeRouter(feat, train, H=1, success=0.6, warm=True), stream, rng)
    three = run_online(CascadeRouter(feat, train, H=3, success=0.6, warm=True), stream, rng)
    assert np.mean(three.quality >= 0.6) > np.mean(one.quality >= 0.6)
    assert three.cost.mean() > one.cost.mean()
    with pytest.raises(InputError):
        CascadeRouter(feat, train, H=9)
    with pytest.raises(InputError):
        CascadeRouter(feat, train, mode="beam")


def test_queue_sim_accumulates_and_drains() -> None:
    q = QueueSim(np.array([2.0, 0.5]), interval=1.0)
    assert q.serve(0) == 0.0
    q.tick()
    assert q.serve(0) == 1.0  # 2 s of work, 1 s drained
    q.tick()
    np.testing.assert_allclose(q.wait, [2.0, 0.0])
    with pytest.raises(InputError):
        QueueSim(np.array([-1.0]))


def test_mixllm_trade_off_and_waiting_penalty(problem, rng) -> None:  # type: ignore[no-untyped-def]
    train, stream = problem
    feat = Featurizer(k=8).fit(train.contexts)
    runs = {lam: run_online(MixLLMRouter(feat, train, lam=lam), stream, rng) for lam in (0.1, 1.0, float("inf"))}
    costs = [runs[lam].cost.mean() for lam in (0.1, 1.0, float("inf"))]
    quals = [runs[lam].quality.mean() for lam in (0.1, 1.0, float("inf"))]
    assert costs[0] < costs[1] < costs[2] and quals[0] < quals[2]
    # A congested favourite: with the waiting penalty the router spreads the load and waits less.
    service = np.array([0.0, 0.0, 0.0, 3.0])
    calm = MixLLMRouter(feat, train, lam=float("inf"), service=service)
    busy = MixLLMRouter(feat, train, lam=float("inf"), service=service, beta=1.0, gamma=2.0, tau=2.0)
    run_online(calm, stream, rng)
    run_online(busy, stream, rng)
    assert np.mean(busy.waits) < 0.5 * np.mean(calm.waits)


def test_cost_model_estimates_unknown_costs_and_bounds_them(rng: np.random.Generator) -> None:
    n, M = 300, 3
    F = rng.standard_normal((n, 4))
    tokens = rng.integers(10, 1000, n).astype(float)
    cost = tokens[:, None] * np.array([1e-6, 1e-5, 1e-4]) * np.exp(0.1 * rng.standard_normal((n, M)))
    model = CostModel.fit(F, tokens, cost, known=False)
    est, upper = model.predict(F, tokens, cost)
    assert np.median(np.abs(np.log(est / cost))) < 0.2
    assert np.all(upper >= est) and np.all(upper >= cost)
    known = CostModel.fit(F, tokens, cost, known=True)
    assert known.predict(F, tokens, cost)[0] is not None
    np.testing.assert_array_equal(known.predict(F, tokens, cost)[1], cost)


def test_cascade_knapsack_plan_survives_budget_guard_substitutions(problem, rng) -> None:  # type: ignore[no-untyped-def]
    """Cost bounds far above the estimates make the loop substitute planned calls; the plan must skip
    LLMs already called instead of repeating one (a regression seen on RouteLLM with two LLMs)."""
    train, stream = problem
    wary = Split(stream.contexts, stream.quality, stream.cost, stream.est_cost, 4 * stream.upper_cost)
    feat = Featurizer(k=8).fit(train.contexts)
    budget = 0.5 * stream.cost.mean(axis=1).sum()
    rec = run_online(CascadeRouter(feat, train, H=3, mode="knapsack", success=0.95), wary, rng, budget=budget)
    assert rec.overrides > 0 and rec.spent <= budget and rec.n_calls.max() <= 3
