"""Regret of a two-stage system, split exactly into the nominators' part and the ranker's part.

With ``μ_t(a)`` the expected reward of item ``a`` in round ``t``, ``C_t`` the candidate set and
``a_t`` the served item (spec: two_stage.md, "System"):

    total_t     = max_a μ_t(a)        − μ_t(a_t)
    nominator_t = max_a μ_t(a)        − max_{c ∈ C_t} μ_t(c)     (the best item was not proposed)
    ranker_t    = max_{c ∈ C_t} μ_t(c) − μ_t(a_t)                (the best candidate was not served)

so ``total = nominator + ranker`` in every round, both parts non-negative; :func:`decompose`
checks this every round and raises if it ever fails (it would mean the served item is not a
candidate). A policy without a candidate set (single stage) has ``C_t`` = all items: all of its
regret is the ranker's.

Regret is also reported relative to a **uniformly random agent** on the same rounds, whose
expected regret is exact: ``max_a μ_t(a) − mean_a μ_t(a)`` (no sampling), so the ratio compares
both on the same context draws (the paper's normalisation for its real-data plots).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from banditroute.core.types import EnvSpec, FloatArray
from banditroute.core.validation import InputError, check_int
from banditroute.envs.base import Environment
from banditroute.policies.base import Policy
from banditroute.simulate.runner import seed_generators

TOLERANCE = 1e-9
BLOCK_FLOATS = 1 << 22  # rounds are generated in blocks of about this many numbers (32 MB)


class DecompositionError(RuntimeError):
    """``total = nominator + ranker`` failed, or a part was negative: a bug, never bad input."""


def decompose(best: float, candidate_best: float, served: float) -> tuple[float, float, float]:
    """``(total, nominator, ranker)`` regret of one round; checks the identity and the signs."""
    total, nominator, ranker = best - served, best - candidate_best, candidate_best - served
    scale = TOLERANCE * max(1.0, abs(best), abs(served))
    if abs(total - (nominator + ranker)) > scale or nominator < -scale or ranker < -scale:
        raise DecompositionError(
            f"regret decomposition failed: total {total!r}, nominator {nominator!r}, ranker {ranker!r}"
        )
    return total, nominator, ranker


@dataclass(frozen=True)
class RegretTrace:
    """Per-round regret parts of one seed's run (arrays of length ``T``)."""

    seed: int
    total: FloatArray
    nominator: FloatArray
    ranker: FloatArray
    random: FloatArray  # the uniformly random agent's expected regret on the same rounds
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        """Cumulative regret of each part, the random agent's, and the ratio total / random."""
        total, random = float(self.total.sum()), float(self.random.sum())
        return {
            "regret": total,
            "nominator": float(self.nominator.sum()),
            "ranker": float(self.ranker.sum()),
            "random": random,
            "relative": total / random if random > 0 else float("nan"),
        }


def run_regret(
    policy_factory: Callable[[EnvSpec], Policy],
    env: Environment | Callable[[int], Environment],
    T: int,
    seed: int,
) -> RegretTrace:
    """One online run (act, then learn from the served item's reward), decomposing regret every round.

    The environment's and the policy's generators come from ``seed`` exactly as in
    :func:`banditroute.simulate.runner.run_seed`, so every system run with the same seed sees the same
    rounds (paired comparisons, and the random agent is evaluated on those same rounds).
    """
    T = check_int(T, "T")
    seed = check_int(seed, "seed", minimum=0)
    environment = env if isinstance(env, Environment) else env(seed)
    policy = policy_factory(environment.spec)
    if not isinstance(policy, Policy):
        raise InputError(f"policy_factory must return a Policy, got {type(policy).__name__}")
    env_rng, policy_rng = seed_generators(seed)
    M, d = environment.spec.n_arms, environment.spec.dim
    chunk = max(1, BLOCK_FLOATS // (M * (d + 2)))
    parts = np.empty((4, T))
    start, t = time.perf_counter(), 0
    for block in environment.stream(T, env_rng, chunk):
        for i in range(len(block)):
            x, mu = block.contexts[i], block.expected[i]
            decision = policy.act(x, policy_rng)
            policy.learn(x, decision, block.rewards[i, decision.action])
            candidates = decision.info.get("candidates")
            best = float(mu.max())
            candidate_best = best if candidates is None else float(mu[np.asarray(candidates)].max())
            parts[:3, t] = decompose(best, candidate_best, float(mu[decision.action]))
            parts[3, t] = best - float(mu.mean())
            t += 1
    if t != T:
        raise InputError(f"environment streamed {t} rounds, expected {T}")
    return RegretTrace(seed, parts[0], parts[1], parts[2], parts[3], time.perf_counter() - start)
