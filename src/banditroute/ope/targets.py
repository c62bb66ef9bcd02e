"""Target policies for off-policy evaluation: their probabilities on a log's contexts.

A target is any :class:`~banditroute.policies.base.Policy`, evaluated *frozen* (its parameters do
not change while it is evaluated): its probability vectors on the logged contexts, restricted to
the arms that were allowed at each logged decision (``Policy.act_batch(..., allowed=...)``).
Learning policies are made targets by training them first — on-policy on another slice of a
reward table, or on an earlier part of the log with :func:`fit_on_log`.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import BatchDecision, FloatArray
from banditroute.core.validation import InputError
from banditroute.ope.log import BanditLog
from banditroute.policies.base import Policy


def target_probs(policy: Policy, log: BanditLog, rng: np.random.Generator) -> FloatArray:
    """``(n, M)`` probabilities of ``policy`` on the log's contexts (restricted to the allowed arms)."""
    if (policy.n_arms, policy.dim) != (log.n_arms, log.dim):
        raise InputError(f"policy is for {policy.n_arms} arms, d={policy.dim}; the log has {log.n_arms}, d={log.dim}")
    allowed = np.ones(log.n_arms, dtype=bool) if log.allowed is None else log.allowed
    return policy.act_batch(log.contexts, rng, allowed=allowed).probs


def fit_on_log(policy: Policy, log: BanditLog, *, batch_size: int = 256) -> Policy:
    """Train ``policy`` on the logged decisions, in order (returns it).

    Ridge policies (greedy, LinUCB, LinTS) fit their per-arm regressions on whatever was played,
    which is sound off-policy. Policy-gradient policies (HPG, log-linear, EXP3) receive the
    *behaviour's* probabilities as the decision's, so their gradient is importance-weighted by
    nothing: a rough warm start, not an unbiased off-policy gradient.
    """
    for start in range(0, log.n, batch_size):
        rows = slice(start, start + batch_size)
        decision = BatchDecision(actions=log.actions[rows], probs=log.probs[rows])
        policy.learn_batch(log.contexts[rows], decision, log.rewards[rows])
    return policy
