"""Decide among an allowed subset of arms: candidate subsets, models added or retired at run time.

The router service builds its policy over a fixed number of *slots* (``max_models``) and lets a
request name a subset of the models; off-policy evaluation restricts a target policy to the arms
that were allowed when each logged decision was taken. :func:`restricted_act_batch` returns the
distribution over the allowed arms (zeros elsewhere, rows summing to one) and a draw from it:

* **Argmax policies** (greedy / ε-greedy ridge, LinUCB): the maximisers are taken over the allowed
  arms' scores, and ε-exploration is uniform over the allowed arms — exactly the policy run on
  the subset. (A slot that was never trained has LinUCB's widest confidence bound; without this
  it would win every argmax and leave nothing for the allowed arms.)
* **Every other policy** (softmax policies: HPG, log-linear, EXP3; LinTS): the policy's vector
  renormalised over the allowed arms. For a softmax this *is* the softmax over the subset; for
  EXP3's γ-mixture and LinTS's win probabilities it is a valid distribution, not the algorithm
  re-derived on the subset. A row with no mass on the allowed arms becomes uniform over them.

The returned vector is what the action is drawn from, so it is the right propensity to log and
to learn from (policy gradients differentiate the restricted softmax).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from banditroute.core.sampling import argmax_uniform, sample_categorical
from banditroute.core.types import BatchDecision, FloatArray
from banditroute.core.validation import InputError, check_contexts, check_generator
from banditroute.policies.base import Policy
from banditroute.policies.ridge import LinTS, LinUCB, RidgePolicy


def check_allowed(allowed: Any, n: int, n_arms: int) -> np.ndarray:
    """``(M,)`` or ``(n, M)`` booleans with at least one allowed arm per row -> ``(n, M)``."""
    arr = np.asarray(allowed)
    if arr.dtype != bool or arr.shape not in ((n_arms,), (n, n_arms)):
        raise InputError(f"allowed must be a boolean array of shape ({n_arms},) or ({n}, {n_arms})")
    arr = np.broadcast_to(arr, (n, n_arms))
    if not np.all(arr.any(axis=1)):
        raise InputError("at least one arm must be allowed")
    return arr


def restricted_probs(policy: Policy, X: Any, allowed: Any, rng: np.random.Generator) -> FloatArray:
    """``(n, M)`` probability vectors of ``policy`` restricted to ``allowed`` (module docstring)."""
    check_generator(rng)
    Xv = check_contexts(X, policy.n_arms, policy.dim)
    mask = check_allowed(allowed, Xv.shape[0], policy.n_arms)
    if isinstance(policy, RidgePolicy) and not isinstance(policy, LinTS):
        Xb = policy._broadcast(Xv)
        scores = policy._means(Xb)
        if isinstance(policy, LinUCB):
            scores = scores + policy.alpha * np.sqrt(np.maximum(_variances(policy, Xv), 0.0))
        greedy = argmax_uniform(np.where(mask, scores, -np.inf))
        uniform = mask / mask.sum(axis=1, keepdims=True)
        out: FloatArray = (1.0 - policy.epsilon) * greedy + policy.epsilon * uniform
        return out
    probs = policy.act_batch(Xv, rng).probs * mask
    mass = probs.sum(axis=1, keepdims=True)
    empty = mass[:, 0] <= 0
    probs[empty] = mask[empty]
    mass[empty] = mask[empty].sum(axis=1, keepdims=True)
    out = probs / mass
    return out


def _variances(policy: RidgePolicy, X: FloatArray) -> FloatArray:
    """``xᵀA_k^{-1}x`` per row and arm, ``(n, M)``. For shared contexts this is one batched
    ``A^{-1} @ Xᵀ`` product on the stored matrices (no ``M·d²`` copy, which at d = 384 costs more
    than the product); per-arm contexts use the policy's own computation."""
    if X.ndim == 3:
        return policy._variances(X)
    Z = np.matmul(policy.A_inv, X.T)  # (k, d, n): k = M, or 1 pooled model
    var = np.einsum("kdn,nd->nk", Z, X)
    return var if var.shape[1] == policy.n_arms else np.repeat(var, policy.n_arms, axis=1)


def restricted_act_batch(policy: Policy, X: Any, allowed: Any, rng: np.random.Generator) -> BatchDecision:
    """Decide ``n`` contexts among the allowed arms; the decision carries the restricted vector."""
    probs = restricted_probs(policy, X, allowed, rng)
    return BatchDecision(actions=sample_categorical(probs, rng), probs=probs)
