"""Logged bandit feedback: what off-policy evaluation reads.

A :class:`BanditLog` holds, for ``n`` logged decisions, the context, the chosen arm, the *full*
probability vector the behaviour policy drew it from, the reward the chosen arm earned and,
optionally, which arms were allowed (a candidate subset, retired models). The router service
exports its log as one (:meth:`banditroute.service.storage.Storage.export_log`); simulations make
one with :func:`collect_log`, which also returns every arm's expected reward, so the true value of
any target policy on the same rounds is known exactly ("evaluate the evaluators").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import (
    PROB_TOL,
    InputError,
    check_actions,
    check_contexts,
    check_generator,
    check_int,
    check_probs,
    check_rewards,
)
from banditroute.envs.base import Environment
from banditroute.policies.base import Policy


@dataclass(frozen=True, eq=False)
class BanditLog:
    """``n`` logged decisions with their rewards (validated on construction).

    Attributes:
        contexts: ``(n, d)`` shared contexts.
        actions: ``(n,)`` chosen arms.
        probs: ``(n, M)`` behaviour probability vectors; ``probs[i, actions[i]] > 0``.
        rewards: ``(n,)`` reward of the chosen arm.
        allowed: optional ``(n, M)`` boolean mask of the arms the behaviour could choose; the
            behaviour puts no mass outside it, and target policies are restricted to it.
        reward_range: ``(low, high)`` rewards lie in, or ``None``.
    """

    contexts: FloatArray
    actions: IntArray
    probs: FloatArray
    rewards: FloatArray
    allowed: np.ndarray | None = None
    reward_range: tuple[float, float] | None = (0.0, 1.0)

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 1:
            raise InputError(f"probs must have shape (n, M) with n, M >= 1, got {probs.shape}")
        n, M = probs.shape
        contexts = np.asarray(self.contexts, dtype=np.float64)
        if contexts.ndim != 2:
            raise InputError(f"contexts must have shape (n, d), got {contexts.shape}")
        contexts = check_contexts(contexts, M, contexts.shape[1])
        if contexts.shape[0] != n:
            raise InputError(f"contexts have {contexts.shape[0]} rows but probs {n}")
        probs = check_probs(probs, n, M)
        actions = check_actions(self.actions, n, M)
        rewards = check_rewards(self.rewards, n, self.reward_range)
        if np.any(probs[np.arange(n), actions] <= 0):
            raise InputError("every logged action must have positive probability under the behaviour policy")
        allowed = None
        if self.allowed is not None:
            allowed = np.asarray(self.allowed)
            if allowed.dtype != bool or allowed.shape != (n, M):
                raise InputError(f"allowed must be a boolean array of shape ({n}, {M})")
            if np.any(probs[~allowed] > 0):
                raise InputError("the behaviour put probability on an arm outside its allowed set")
        for name, value in [
            ("contexts", contexts),
            ("actions", actions),
            ("probs", probs),
            ("rewards", rewards),
            ("allowed", allowed),
        ]:
            if value is not None:
                value = np.array(value, copy=True)
                value.flags.writeable = False
            object.__setattr__(self, name, value)

    @property
    def n(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_arms(self) -> int:
        return int(self.probs.shape[1])

    @property
    def dim(self) -> int:
        return int(self.contexts.shape[1])

    def __len__(self) -> int:
        return self.n

    @property
    def propensities(self) -> FloatArray:
        """``probs[i, actions[i]]``: the behaviour's probability of each logged action."""
        return self.probs[np.arange(self.n), self.actions]

    def subset(self, idx: np.ndarray | slice) -> BanditLog:
        """The rows ``idx`` as a new log."""
        return BanditLog(
            contexts=self.contexts[idx],
            actions=self.actions[idx],
            probs=self.probs[idx],
            rewards=self.rewards[idx],
            allowed=None if self.allowed is None else self.allowed[idx],
            reward_range=self.reward_range,
        )

    def shards(self, k: int) -> list[BanditLog]:
        """``k`` consecutive, non-empty pieces (time windows) covering the log in order."""
        k = check_int(k, "k")
        if k > self.n:
            raise InputError(f"cannot cut {self.n} rows into {k} non-empty shards")
        return [self.subset(part) for part in np.array_split(np.arange(self.n), k)]


def valid_rows(
    contexts: FloatArray,
    actions: IntArray,
    probs: FloatArray,
    allowed: np.ndarray,
    rewards: FloatArray | None = None,
    reward_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Which of ``n`` logged rows a :class:`BanditLog` accepts, as a boolean ``(n,)`` mask.

    A row is valid when its context is finite, its probability vector is finite, non-negative, sums
    to one (within ``PROB_TOL``) and puts no mass outside the allowed arms, its action is an arm
    with positive probability and its reward (when given) is finite and inside ``reward_range``.
    The router checks each decision with this before logging it; readers of a log skip (and count)
    the rows that fail, which only a log damaged or edited outside the service can hold.
    """
    contexts = np.asarray(contexts, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    actions = np.asarray(actions)
    n, M = probs.shape
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.all(np.isfinite(contexts), axis=1) & np.all(np.isfinite(probs), axis=1)
        ok &= np.all(probs >= 0, axis=1) & (np.abs(probs.sum(axis=1) - 1.0) <= PROB_TOL)
        ok &= ~np.any((probs > 0) & ~np.asarray(allowed, dtype=bool), axis=1)
        in_range = (actions >= 0) & (actions < M)
        chosen = probs[np.arange(n), np.where(in_range, actions, 0)]
        ok &= in_range & (chosen > 0)
        if rewards is not None:
            r = np.asarray(rewards, dtype=np.float64)
            ok &= np.isfinite(r)
            if reward_range is not None:
                ok &= (r >= reward_range[0]) & (r <= reward_range[1])
    return np.asarray(ok, dtype=bool)


def collect_log(
    env: Environment, behaviour: Policy, n: int, rng: np.random.Generator, *, learn: bool = False
) -> tuple[BanditLog, FloatArray]:
    """Log ``n`` rounds of ``env`` chosen by ``behaviour``; returns ``(log, expected)``.

    ``expected`` is ``(n, M)``, every arm's expected reward on each logged round, so the value of
    a target with probabilities ``π`` on these rounds is ``mean(Σ_a π·expected)``. The behaviour is
    frozen unless ``learn=True`` (an adaptive logger: the per-round propensities are still the
    true ones, so IPS-type estimators stay unbiased).
    """
    n = check_int(n, "n")
    check_generator(rng)
    if env.spec.per_arm:
        raise InputError("off-policy logs need shared (d,) contexts, not per-arm feature rows")
    parts = []
    for rounds in env.stream(n, rng, chunk_size=1 if learn else 4096):
        decision = behaviour.act_batch(rounds.contexts, rng)
        chosen = rounds.rewards[np.arange(len(rounds)), decision.actions]
        if learn:
            behaviour.learn_batch(rounds.contexts, decision, chosen)
        parts.append((rounds.contexts, decision.actions, decision.probs, chosen, rounds.expected))
    contexts, actions, probs, rewards, expected = (np.concatenate(col) for col in zip(*parts, strict=True))
    log = BanditLog(contexts, actions, probs, rewards, reward_range=env.spec.reward_range)
    return log, expected
