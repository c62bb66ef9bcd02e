"""The policy contract, checked for every name in the registry (new policies are covered automatically).

* decisions carry a valid probability vector the action was drawn from, for shared ``(d,)`` and
  per-arm ``(M, d)`` contexts, one at a time and in batches;
* restricted to allowed arms, the vector is zero outside them and sums to one; argmax policies
  maximise over the allowed arms, the others renormalise (checked against slow references);
* same seed, same run, bit for bit; ``state_dict`` restores a policy exactly, also after a JSON or
  ``np.savez`` round trip;
* every bad argument to every public entry point raises ``InputError`` and changes nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import banditroute.twostage  # noqa: F401  (registers the two-stage policy, so it is covered too)
from banditroute.core.types import BatchDecision, Decision, EnvSpec
from banditroute.core.validation import InputError
from banditroute.policies.base import Policy
from banditroute.policies.registry import REGISTRY, make_policy

SPEC = EnvSpec(n_arms=3, dim=4)
M, D = SPEC.n_arms, SPEC.dim
NAMES = list(REGISTRY)
# Parameters a registered policy cannot be built without.
REQUIRED: dict[str, dict[str, Any]] = {"fixed": {"arm": 1}}
NAN, INF = float("nan"), float("inf")


def build(name: str) -> Policy:
    return make_policy(name, SPEC, **REQUIRED.get(name, {}))


def contexts(g: np.random.Generator, n: int, per_arm: bool) -> np.ndarray:
    X = g.normal(size=(n, M, D) if per_arm else (n, D))
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def run(policy: Policy, g: np.random.Generator, rounds: int = 12) -> list[Decision | BatchDecision]:
    """Interleave single and batched act/learn on shared and per-arm contexts; return the decisions."""
    out: list[Decision | BatchDecision] = []
    for t in range(rounds):
        per_arm = t % 2 == 1
        if t % 3 == 2:
            X = contexts(g, 5, per_arm)
            batch = policy.act_batch(X, g)
            policy.learn_batch(X, batch, g.random(5))
            out.append(batch)
        else:
            x = contexts(g, 1, per_arm)[0]
            decision = policy.act(x, g)
            policy.learn(x, decision, g.random())
            out.append(decision)
    return out


def trained(name: str, seed: int = 0) -> Policy:
    policy = build(name)
    run(policy, np.random.default_rng(seed))
    return policy


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["policy"] == b["policy"] and a["config"] == b["config"]
    assert a["state"].keys() == b["state"].keys()
    for key, value in a["state"].items():
        other = b["state"][key]
        assert value.dtype == other.dtype and value.shape == other.shape, key
        assert np.array_equal(value, other), key


def assert_same_decisions(a: list[Decision | BatchDecision], b: list[Decision | BatchDecision]) -> None:
    assert len(a) == len(b)
    for da, db in zip(a, b, strict=True):
        assert type(da) is type(db)
        if isinstance(da, Decision) and isinstance(db, Decision):
            assert da.action == db.action
        elif isinstance(da, BatchDecision) and isinstance(db, BatchDecision):
            assert np.array_equal(da.actions, db.actions)
        assert np.array_equal(da.probs, db.probs)


def assert_valid_probs(probs: np.ndarray, actions: np.ndarray) -> None:
    assert probs.shape[-1] == M and np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=1e-9)
    assert np.all((actions >= 0) & (actions < M))
    assert np.all(np.take_along_axis(probs.reshape(-1, M), actions.reshape(-1, 1), axis=1) > 0)


# ---------------------------------------------------------------------------------------- decisions
@pytest.mark.parametrize("per_arm", [False, True], ids=["shared", "per_arm"])
@pytest.mark.parametrize("name", NAMES)
def test_act_returns_valid_distribution(name: str, per_arm: bool) -> None:
    g = np.random.default_rng(1)
    for policy in (build(name), trained(name)):
        for x in contexts(g, 10, per_arm):
            decision = policy.act(x, g)
            assert isinstance(decision, Decision) and isinstance(decision.action, int)
            assert decision.probs.shape == (M,)
            assert_valid_probs(decision.probs, np.array(decision.action))


@pytest.mark.parametrize("per_arm", [False, True], ids=["shared", "per_arm"])
@pytest.mark.parametrize("name", NAMES)
def test_act_batch_returns_valid_distributions(name: str, per_arm: bool) -> None:
    g = np.random.default_rng(2)
    for policy in (build(name), trained(name)):
        batch = policy.act_batch(contexts(g, 16, per_arm), g)
        assert isinstance(batch, BatchDecision) and len(batch) == 16
        assert batch.actions.shape == (16,) and batch.actions.dtype.kind == "i"
        assert batch.probs.shape == (16, M)
        assert_valid_probs(batch.probs, batch.actions)
        for value in batch.info.values():
            assert np.asarray(value).shape[0] == 16


@pytest.mark.parametrize("name", NAMES)
def test_acting_does_not_change_state(name: str) -> None:
    policy = trained(name)
    before = policy.state_dict()
    g = np.random.default_rng(3)
    policy.act(contexts(g, 1, False)[0], g)
    policy.act_batch(contexts(g, 8, True), g)
    assert_same_state(before, policy.state_dict())


# ---------------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_bit_identical_runs(name: str) -> None:
    a, b = build(name), build(name)
    decisions_a = run(a, np.random.default_rng(4), rounds=20)
    decisions_b = run(b, np.random.default_rng(4), rounds=20)
    assert_same_decisions(decisions_a, decisions_b)
    assert_same_state(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_a_copy(name: str) -> None:
    policy = trained(name)
    state = policy.state_dict()
    for value in state["state"].values():
        value[...] = 0
    state["config"]["dim"] = -1
    fresh = policy.state_dict()
    assert fresh["config"]["dim"] == D
    policy.load_state_dict(fresh)  # still a valid, unchanged state


def _json_round_trip(state: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps({**state, "state": {k: v.tolist() for k, v in state["state"].items()}})
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _npz_round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    meta = json.dumps({"policy": state["policy"], "config": state["config"]})
    np.savez(buf, meta=np.array(meta), **{f"state_{k}": v for k, v in state["state"].items()})
    buf.seek(0)
    with np.load(buf) as npz:
        out: dict[str, Any] = json.loads(str(npz["meta"]))
        out["state"] = {k.removeprefix("state_"): npz[k] for k in npz.files if k.startswith("state_")}
    return out


@pytest.mark.parametrize("transport", ["memory", "json", "npz"])
@pytest.mark.parametrize("name", NAMES)
def test_restored_policy_makes_identical_future_decisions(name: str, transport: str) -> None:
    original = trained(name, seed=5)
    state = original.state_dict()
    state = {"memory": dict, "json": _json_round_trip, "npz": _npz_round_trip}[transport](state)
    restored = build(name)
    restored.load_state_dict(state)
    assert_same_state(original.state_dict(), restored.state_dict())
    future_a = run(original, np.random.default_rng(6))
    future_b = run(restored, np.random.default_rng(6))
    assert_same_decisions(future_a, future_b)
    assert_same_state(original.state_dict(), restored.state_dict())


# ---------------------------------------------------------------------------------------- allowed arms
def masks(g: np.random.Generator, n: int) -> np.ndarray:
    """``(n, M)`` random masks with at least one allowed arm per row, every pattern likely."""
    mask = g.random((n, M)) < 0.5
    mask[np.arange(n), g.integers(0, M, n)] = True
    return mask


ARGMAX = {"greedy", "egreedy", "linucb"}  # the ridge rules with an exact restriction
OWN_RULE = {"two-stage"}  # restricts each stage (its info must hold what the stages drew from): test_twostage_system.py
OWN_RULE |= {"safe-linucb", "safe-hpg"}  # the side that plays decides by its own rule: test_policies_conservative.py


@pytest.mark.parametrize("per_arm", [False, True], ids=["shared", "per_arm"])
@pytest.mark.parametrize("name", NAMES)
def test_restricted_decisions_stay_on_the_allowed_arms(name: str, per_arm: bool) -> None:
    g = np.random.default_rng(3)
    for policy in (build(name), trained(name)):
        before = policy.state_dict()
        X = contexts(g, 40, per_arm)
        allowed = masks(g, 40)
        batch = policy.act_batch(X, g, allowed=allowed)
        assert_valid_probs(batch.probs, batch.actions)
        assert np.all(batch.probs[~allowed] == 0) and np.all(allowed[np.arange(40), batch.actions])
        one = allowed[0]
        decision = policy.act(X[0], g, allowed=one)
        assert_valid_probs(decision.probs, np.array(decision.action))
        assert np.all(decision.probs[~one] == 0) and one[decision.action]
        shared_mask = policy.act_batch(X, g, allowed=one)  # an (M,) mask applies to every row
        assert np.all(shared_mask.probs[:, ~one] == 0)
        assert_same_state(before, policy.state_dict())  # deciding, restricted or not, learns nothing
        again = policy.act_batch(X, np.random.default_rng(9), allowed=allowed)
        assert_same_decisions([again], [policy.act_batch(X, np.random.default_rng(9), allowed=allowed)])


@pytest.mark.parametrize("per_arm", [False, True], ids=["shared", "per_arm"])
@pytest.mark.parametrize("name", sorted(set(NAMES) - ARGMAX - OWN_RULE))
def test_restriction_renormalises_the_policy_vector(name: str, per_arm: bool) -> None:
    """The default: the unrestricted vector (same generator state) renormalised over the allowed arms."""
    policy = trained(name)
    g = np.random.default_rng(4)
    X, allowed = contexts(g, 30, per_arm), masks(g, 30)
    full = policy.act_batch(X, np.random.default_rng(5)).probs
    restricted = policy.act_batch(X, np.random.default_rng(5), allowed=allowed).probs
    for i in range(30):
        kept = np.where(allowed[i], full[i], 0.0)
        want = kept / kept.sum() if kept.sum() > 0 else allowed[i] / allowed[i].sum()
        np.testing.assert_allclose(restricted[i], want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("per_arm", [False, True], ids=["shared", "per_arm"])
@pytest.mark.parametrize("name", sorted(ARGMAX))
def test_argmax_policies_maximise_over_the_allowed_arms(name: str, per_arm: bool) -> None:
    """Exactly the policy run on the subset: ties among the allowed maximisers, ε spread over the allowed arms
    (a never-trained slot with LinUCB's widest bound must not take the mass of the allowed ones)."""
    policy = make_policy(name, SPEC, epsilon=0.2)
    g = np.random.default_rng(6)
    X = contexts(g, 30, per_arm)
    policy.learn_batch(X, policy.act_batch(X, g, allowed=np.array([True, True, False])), g.random(30))
    allowed = masks(g, 30)
    p = policy.act_batch(X, g, allowed=allowed).probs
    scores = policy.means(X) + (getattr(policy, "alpha", 0.0) * policy.widths(X))
    for i in range(30):
        arms = np.flatnonzero(allowed[i])
        best = arms[scores[i, arms] >= scores[i, arms].max() - 1e-12 * max(1.0, abs(scores[i, arms].max()))]
        want = np.zeros(M)
        want[arms] = 0.2 / len(arms)
        want[best] += 0.8 / len(best)
        np.testing.assert_allclose(p[i], want, atol=1e-12)


def test_softmax_restriction_is_the_softmax_over_the_subset() -> None:
    spec = EnvSpec(4, D)
    g = np.random.default_rng(10)
    X = g.normal(size=(50, D))
    hpg = make_policy("hpg", spec)
    hpg.learn_batch(X, hpg.act_batch(X, g), g.random(50))
    allowed = np.array([True, False, True, False])
    logits = hpg.logits(np.broadcast_to(X[:, None, :], (50, 4, D)))[:, allowed]
    sub = np.exp(logits - logits.max(axis=1, keepdims=True))
    restricted = hpg.act_batch(X, g, allowed=allowed).probs
    np.testing.assert_allclose(restricted[:, allowed], sub / sub.sum(axis=1, keepdims=True))
    fixed = make_policy("fixed", spec, arm=1)  # no mass on the allowed arms: uniform over them
    np.testing.assert_allclose(fixed.act_batch(X, g, allowed=allowed).probs, np.tile([0.5, 0, 0.5, 0], (50, 1)))


# ---------------------------------------------------------------------------------------- bad input
@dataclass
class Good:
    """Valid arguments for the trained policy, which each bad case corrupts in one place."""

    x: np.ndarray
    X: np.ndarray
    decision: Decision
    batch: BatchDecision
    rewards: np.ndarray


def _good(policy: Policy) -> Good:
    g = np.random.default_rng(7)
    x, X = contexts(g, 1, False)[0], contexts(g, 4, True)
    return Good(x, X, policy.act(x, g), policy.act_batch(X, g), np.full(4, 0.5))


def _with_action(d: Decision, action: Any) -> Decision:
    return Decision(action=action, probs=d.probs, info=d.info)


def _with_probs(d: Decision, probs: Any) -> Decision:
    return Decision(action=d.action, probs=np.asarray(probs, dtype=float), info=d.info)


def _batch_with(b: BatchDecision, actions: Any = None, probs: Any = None) -> BatchDecision:
    return BatchDecision(
        actions=b.actions if actions is None else np.asarray(actions),
        probs=b.probs if probs is None else np.asarray(probs, dtype=float),
        info=b.info,
    )


def _nan_at(a: np.ndarray, value: float = NAN) -> np.ndarray:
    out = np.array(a, dtype=float, copy=True)
    out.flat[0] = value
    return out


RNG = np.random.default_rng(8)
BAD_CALLS: dict[str, Callable[[Policy, Good], Any]] = {
    # act
    "act/context-too-long": lambda p, ok: p.act(np.ones(D + 1), RNG),
    "act/context-wrong-arms": lambda p, ok: p.act(np.ones((M + 1, D)), RNG),
    "act/context-is-a-batch": lambda p, ok: p.act(np.ones((2, D)), RNG),
    "act/context-nan": lambda p, ok: p.act(_nan_at(ok.x), RNG),
    "act/context-inf": lambda p, ok: p.act(_nan_at(ok.x, INF), RNG),
    "act/per-arm-context-nan": lambda p, ok: p.act(_nan_at(ok.X[0]), RNG),
    "act/context-strings": lambda p, ok: p.act(["a"] * D, RNG),
    "act/rng-randomstate": lambda p, ok: p.act(ok.x, np.random.RandomState(0)),
    "act/rng-int": lambda p, ok: p.act(ok.x, 0),
    "act/rng-none": lambda p, ok: p.act(ok.x, None),
    # act_batch
    "act_batch/single-context": lambda p, ok: p.act_batch(ok.x, RNG),
    "act_batch/empty": lambda p, ok: p.act_batch(np.ones((0, D)), RNG),
    "act_batch/wrong-dim": lambda p, ok: p.act_batch(np.ones((3, D + 1)), RNG),
    "act_batch/wrong-arms": lambda p, ok: p.act_batch(np.ones((3, M + 1, D)), RNG),
    "act_batch/nan": lambda p, ok: p.act_batch(_nan_at(ok.X), RNG),
    "act_batch/inf": lambda p, ok: p.act_batch(_nan_at(ok.X, -INF), RNG),
    "act_batch/rng-seed": lambda p, ok: p.act_batch(ok.X, 42),
    "act/allowed-wrong-length": lambda p, ok: p.act(ok.x, RNG, allowed=np.ones(M + 1, dtype=bool)),
    "act/allowed-none-allowed": lambda p, ok: p.act(ok.x, RNG, allowed=np.zeros(M, dtype=bool)),
    "act/allowed-not-boolean": lambda p, ok: p.act(ok.x, RNG, allowed=np.ones(M)),
    "act/allowed-indices": lambda p, ok: p.act(ok.x, RNG, allowed=[0, 1]),
    "act_batch/allowed-wrong-rows": lambda p, ok: p.act_batch(ok.X, RNG, allowed=np.ones((5, M), dtype=bool)),
    "act_batch/allowed-empty-row": lambda p, ok: p.act_batch(
        ok.X, RNG, allowed=np.array([[True] * M, [False] * M, [True] * M, [True] * M])
    ),
    "act_batch/allowed-nan-context": lambda p, ok: p.act_batch(_nan_at(ok.X), RNG, allowed=np.ones(M, dtype=bool)),
    # learn
    "learn/context-wrong-shape": lambda p, ok: p.learn(np.ones(D + 1), ok.decision, 0.5),
    "learn/context-nan": lambda p, ok: p.learn(_nan_at(ok.x), ok.decision, 0.5),
    "learn/decision-is-batch": lambda p, ok: p.learn(ok.x, ok.batch, 0.5),
    "learn/decision-is-tuple": lambda p, ok: p.learn(ok.x, (ok.decision.action, ok.decision.probs), 0.5),
    "learn/decision-is-dict": lambda p, ok: p.learn(ok.x, {"action": 0, "probs": ok.decision.probs}, 0.5),
    "learn/unknown-arm": lambda p, ok: p.learn(ok.x, _with_action(ok.decision, M), 0.5),
    "learn/negative-arm": lambda p, ok: p.learn(ok.x, _with_action(ok.decision, -1), 0.5),
    "learn/fractional-arm": lambda p, ok: p.learn(ok.x, _with_action(ok.decision, 0.5), 0.5),
    "learn/probs-sum-not-one": lambda p, ok: p.learn(ok.x, _with_probs(ok.decision, ok.decision.probs * 0.5), 0.5),
    "learn/probs-negative": lambda p, ok: p.learn(ok.x, _with_probs(ok.decision, [1.5, -0.25, -0.25]), 0.5),
    "learn/probs-wrong-length": lambda p, ok: p.learn(ok.x, _with_probs(ok.decision, np.full(M + 1, 1 / (M + 1))), 0.5),
    "learn/probs-nan": lambda p, ok: p.learn(ok.x, _with_probs(ok.decision, _nan_at(ok.decision.probs)), 0.5),
    "learn/reward-above-range": lambda p, ok: p.learn(ok.x, ok.decision, 1.5),
    "learn/reward-below-range": lambda p, ok: p.learn(ok.x, ok.decision, -0.01),
    "learn/reward-nan": lambda p, ok: p.learn(ok.x, ok.decision, NAN),
    "learn/reward-inf": lambda p, ok: p.learn(ok.x, ok.decision, INF),
    "learn/reward-array": lambda p, ok: p.learn(ok.x, ok.decision, [0.5, 0.5]),
    "learn/reward-string": lambda p, ok: p.learn(ok.x, ok.decision, "good"),
    # learn_batch
    "learn_batch/decisions-is-single": lambda p, ok: p.learn_batch(ok.X[:1], ok.decision, ok.rewards[:1]),
    "learn_batch/decisions-is-list": lambda p, ok: p.learn_batch(ok.X, [ok.batch[i] for i in range(4)], ok.rewards),
    "learn_batch/contexts-nan": lambda p, ok: p.learn_batch(_nan_at(ok.X), ok.batch, ok.rewards),
    "learn_batch/contexts-wrong-shape": lambda p, ok: p.learn_batch(ok.X[..., :-1], ok.batch, ok.rewards),
    "learn_batch/fewer-contexts": lambda p, ok: p.learn_batch(ok.X[:3], ok.batch, ok.rewards),
    "learn_batch/fewer-rewards": lambda p, ok: p.learn_batch(ok.X, ok.batch, ok.rewards[:3]),
    "learn_batch/scalar-reward": lambda p, ok: p.learn_batch(ok.X, ok.batch, 0.5),
    "learn_batch/reward-out-of-range": lambda p, ok: p.learn_batch(ok.X, ok.batch, [0.5, 0.5, 0.5, 2.0]),
    "learn_batch/reward-nan": lambda p, ok: p.learn_batch(ok.X, ok.batch, [0.5, NAN, 0.5, 0.5]),
    "learn_batch/unknown-arm": lambda p, ok: p.learn_batch(
        ok.X, _batch_with(ok.batch, actions=[0, 1, 2, M]), ok.rewards
    ),
    "learn_batch/float-arms": lambda p, ok: p.learn_batch(
        ok.X, _batch_with(ok.batch, actions=[0, 1, 0.5, 1]), ok.rewards
    ),
    "learn_batch/probs-sum-not-one": lambda p, ok: p.learn_batch(
        ok.X, _batch_with(ok.batch, probs=ok.batch.probs * 2), ok.rewards
    ),
    "learn_batch/probs-wrong-shape": lambda p, ok: p.learn_batch(
        ok.X, _batch_with(ok.batch, probs=ok.batch.probs[:, :-1]), ok.rewards
    ),
    # load_state_dict: the generic corruptions (per-array ones are in the next test)
    "load/not-a-mapping": lambda p, ok: p.load_state_dict([("policy", p.name)]),
    "load/missing-state": lambda p, ok: p.load_state_dict({k: v for k, v in p.state_dict().items() if k != "state"}),
    "load/extra-key": lambda p, ok: p.load_state_dict({**p.state_dict(), "extra": 1}),
    "load/wrong-policy": lambda p, ok: p.load_state_dict({**p.state_dict(), "policy": "not-" + p.name}),
    "load/state-not-a-mapping": lambda p, ok: p.load_state_dict({**p.state_dict(), "state": [1, 2]}),
    "load/extra-array": lambda p, ok: p.load_state_dict(
        {**p.state_dict(), "state": {**p.state_dict()["state"], "bogus": np.zeros(2)}}
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_and_changes_nothing(name: str, case: str) -> None:
    policy = trained(name)
    ok = _good(policy)
    before = policy.state_dict()
    with pytest.raises(InputError):
        BAD_CALLS[case](policy, ok)
    assert_same_state(before, policy.state_dict())


def _changed(value: Any) -> Any:
    """A different value of the same kind, for corrupting a config entry."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-x"
    if value is None:
        return 1
    return [value, value]


def _corrupt_states(policy: Policy) -> dict[str, dict[str, Any]]:
    """Every mismatched or damaged variant of the policy's own state dict."""
    good = policy.state_dict()
    variants: dict[str, dict[str, Any]] = {}
    for key, value in good["config"].items():
        variants[f"config[{key}]"] = {**good, "config": {**good["config"], key: _changed(value)}}
    variants["config+extra"] = {**good, "config": {**good["config"], "extra": 1}}
    variants["config-missing"] = {**good, "config": {k: v for k, v in good["config"].items() if k != "dim"}}
    for key, value in good["state"].items():

        def with_array(new: Any, key: str = key) -> dict[str, Any]:
            return {**good, "state": {**good["state"], key: new}}

        variants[f"missing[{key}]"] = {**good, "state": {k: v for k, v in good["state"].items() if k != key}}
        variants[f"shape[{key}]"] = with_array(np.zeros((*value.shape, 2), dtype=value.dtype))
        variants[f"flat[{key}]"] = with_array(np.zeros(value.size + 1, dtype=value.dtype))
        variants[f"nan[{key}]"] = with_array(_nan_at(value))
        variants[f"inf[{key}]"] = with_array(_nan_at(value, INF))
        variants[f"strings[{key}]"] = with_array(np.full(value.shape, "x"))
    return variants


@pytest.mark.parametrize("name", NAMES)
def test_corrupt_state_dicts_are_rejected_and_change_nothing(name: str) -> None:
    policy = trained(name)
    before = policy.state_dict()
    variants = _corrupt_states(policy)
    assert len(variants) >= 5
    for label, state in variants.items():
        with pytest.raises(InputError):
            policy.load_state_dict(state)
            pytest.fail(f"{label} was accepted")
        assert_same_state(before, policy.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_bad_construction_is_rejected(name: str) -> None:
    for bad_spec in (EnvSpec(n_arms=0, dim=D), EnvSpec(n_arms=M, dim=0)):
        with pytest.raises(InputError):
            make_policy(name, bad_spec, **REQUIRED.get(name, {}))
    with pytest.raises(InputError):
        make_policy(name, SPEC, **REQUIRED.get(name, {}), no_such_parameter=1)


def test_unknown_policy_name_is_rejected() -> None:
    with pytest.raises(InputError, match="unknown policy"):
        make_policy("no-such-policy", SPEC)
