"""Drive a policy over an environment for several seeds and record what happened each round.

One seed is one independent run: the environment's rounds and the policy's draws come from two
generators spawned from ``numpy.random.SeedSequence(seed)``, so a run is reproducible bit for bit,
independent of how many processes share the seeds, and — because the environment's generator does
not depend on the policy — every policy sees the *same* rounds for a given seed (common random
numbers, which makes policy comparisons paired).

The loop is the bandit protocol: ``act_batch`` on ``batch_size`` contexts with the current
parameters, then ``learn_batch`` with only the chosen arms' realised rewards. ``batch_size=1`` is
the fully online per-round protocol; larger batches model a service that updates every ``B``
requests. The environment's full-information block is used only for the record: the expected
reward of every arm gives exact regret and the policy's expected value ``probs · expected``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from banditroute.core.types import EnvSpec, FloatArray, IntArray
from banditroute.core.validation import InputError, check_int
from banditroute.envs.base import Environment
from banditroute.policies.base import Policy
from banditroute.policies.registry import REGISTRY, PolicyEntry

PolicyFactory = Callable[[EnvSpec], Policy]
EnvSource = Environment | Callable[[int], Environment]

DEFAULT_CHUNK = 4096


@dataclass(frozen=True)
class RegistryFactory:
    """Picklable ``EnvSpec -> Policy`` factory for a registry entry and parameter overrides.

    It carries the entry itself, looked up where the factory is made, so a worker process builds the
    policy even when the name was registered by a package the worker has not imported (``two-stage``).
    """

    name: str
    entry: PolicyEntry
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, spec: EnvSpec) -> Policy:
        return self.entry.build(self.name, spec, **self.params)


def registry_factory(name: str, **params: Any) -> RegistryFactory:
    """Factory for ``simulate``: builds ``make_policy(name, env.spec, **params)`` for each seed."""
    return RegistryFactory(name, REGISTRY.lookup(name), dict(params))


@dataclass(frozen=True)
class Trace:
    """What happened in each of the ``T`` rounds of one seed's run (arrays of length ``T``).

    Attributes:
        seed: the run's seed.
        action: chosen arm.
        prob: probability the policy gave the chosen arm (its propensity).
        reward: realised reward the policy learned from.
        expected: expected reward of the chosen arm.
        best: expected reward of the best arm for that round's context (the per-context oracle).
        value: the policy's expected reward ``Σ_m π_t(m|x_t) · expected_m`` before drawing.
        cost: cost of the chosen arm, or ``None`` when the environment has no costs.
        seconds: wall-clock time of the run (informational; not part of reproducibility).
    """

    seed: int
    action: IntArray
    prob: FloatArray
    reward: FloatArray
    expected: FloatArray
    best: FloatArray
    value: FloatArray
    cost: FloatArray | None = None
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def columns(self) -> dict[str, np.ndarray]:
        """The per-round arrays by name (``cost`` only when present)."""
        cols = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("seed", "seconds")}
        return {k: v for k, v in cols.items() if v is not None}


def stack(traces: Sequence[Trace], column: str) -> np.ndarray:
    """One column of several equal-length traces as a ``(seeds, T)`` array."""
    return np.stack([getattr(t, column) for t in traces])


def seed_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (environment, policy) generators for one run seed."""
    env_seq, policy_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(env_seq), np.random.default_rng(policy_seq)


def _chunk_for(batch_size: int, chunk_size: int | None) -> int:
    """Environment blocks hold whole batches, so batches never straddle two blocks."""
    if chunk_size is None:
        return max(1, DEFAULT_CHUNK // batch_size) * batch_size
    chunk_size = check_int(chunk_size, "chunk_size")
    if chunk_size % batch_size:
        raise InputError(f"chunk_size ({chunk_size}) must be a multiple of batch_size ({batch_size})")
    return chunk_size


def run_seed(
    policy_factory: PolicyFactory,
    env: EnvSource,
    T: int,
    seed: int,
    *,
    batch_size: int = 1,
    chunk_size: int | None = None,
) -> Trace:
    """One run of ``T`` rounds: a fresh policy (and a fresh environment when ``env`` is a factory)."""
    T = check_int(T, "T")
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size")
    chunk = _chunk_for(batch_size, chunk_size)
    environment = env(seed) if callable(env) and not isinstance(env, Environment) else env
    if not isinstance(environment, Environment):
        raise InputError(f"env must be an Environment or a callable(seed) -> Environment, got {type(env).__name__}")
    policy = policy_factory(environment.spec)
    if not isinstance(policy, Policy):
        raise InputError(f"policy_factory must return a Policy, got {type(policy).__name__}")
    env_rng, policy_rng = seed_generators(seed)

    action = np.empty(T, dtype=np.int64)
    prob, reward, expected, best, value = (np.empty(T) for _ in range(5))
    cost = None
    start = time.perf_counter()
    t = 0
    for block in environment.stream(T, env_rng, chunk):
        n = len(block)
        if t + n > T:
            raise InputError(f"environment streamed more than the {T} rounds asked for")
        probs = np.empty((n, environment.spec.n_arms))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            X = block.contexts[i:j]
            decision = policy.act_batch(X, policy_rng)
            policy.learn_batch(X, decision, block.rewards[np.arange(i, j), decision.actions])
            action[t + i : t + j] = decision.actions
            probs[i:j] = decision.probs
        rows, chosen = np.arange(n), action[t : t + n]
        prob[t : t + n] = probs[rows, chosen]
        reward[t : t + n] = block.rewards[rows, chosen]
        expected[t : t + n] = block.expected[rows, chosen]
        best[t : t + n] = block.expected.max(axis=1)
        value[t : t + n] = np.einsum("nm,nm->n", probs, block.expected)
        if block.costs is not None:
            cost = np.empty(T) if cost is None else cost
            cost[t : t + n] = block.costs[rows, chosen]
        t += n
    if t < T:
        raise InputError(f"environment streamed {t} rounds, expected {T}")
    seconds = time.perf_counter() - start
    return Trace(seed, action, prob, reward, expected, best, value, cost, seconds)


def check_seeds(seeds: int | Iterable[int]) -> list[int]:
    """``seeds`` is a count ``S`` (seeds ``0..S-1``) or explicit distinct non-negative integers."""
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return list(range(check_int(seeds, "seeds")))
    try:
        out = [check_int(s, "seed", minimum=0) for s in seeds]  # type: ignore[union-attr]
    except TypeError:
        raise InputError(f"seeds must be a count or a list of integers, got {seeds!r}") from None
    if not out or len(set(out)) != len(out):
        raise InputError(f"seeds must be a non-empty list of distinct integers, got {out}")
    return out


def simulate(
    policy_factory: PolicyFactory,
    env: EnvSource,
    T: int,
    seeds: int | Iterable[int],
    *,
    batch_size: int = 1,
    n_jobs: int = 1,
    chunk_size: int | None = None,
) -> list[Trace]:
    """Run ``policy_factory``'s policy on ``env`` for ``T`` rounds per seed; one :class:`Trace` per seed.

    Args:
        policy_factory: ``EnvSpec -> Policy`` (e.g. :func:`registry_factory`); called once per seed.
        env: an environment (the same problem instance for every seed) or ``seed -> Environment``
            (a new instance per seed).
        T: rounds per seed.
        seeds: a count ``S`` (seeds ``0..S-1``) or explicit seeds.
        batch_size: decisions taken with frozen parameters between updates (1 = fully online).
        n_jobs: processes running seeds in parallel (joblib; ``-1`` = all cores). Results do not
            depend on it.
        chunk_size: rounds the environment generates at once (a multiple of ``batch_size``).
    """
    seed_list = check_seeds(seeds)
    check_int(T, "T")
    check_int(batch_size, "batch_size")
    _chunk_for(batch_size, chunk_size)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise InputError(f"n_jobs must be a positive integer or -1, got {n_jobs!r}")
    if n_jobs == 1 or len(seed_list) == 1:
        return [run_seed(policy_factory, env, T, s, batch_size=batch_size, chunk_size=chunk_size) for s in seed_list]
    from joblib import Parallel, delayed

    traces: list[Trace] = Parallel(n_jobs=n_jobs)(
        delayed(run_seed)(policy_factory, env, T, s, batch_size=batch_size, chunk_size=chunk_size) for s in seed_list
    )
    return traces
