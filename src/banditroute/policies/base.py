"""The policy contract: a pure, seeded state machine behind one validated API.

A policy never reads files, clocks or global random state. ``act`` draws with the
``numpy.random.Generator`` it is handed, returns a :class:`Decision` with the full probability
vector, and ``learn`` consumes that decision. The public methods validate every argument before
calling the subclass hooks, so a rejected call leaves the policy unchanged.

Allowed arms are part of the call: ``act_batch(X, rng, allowed=mask)`` decides among the arms
``mask`` allows (candidate subsets, models added or retired at run time, a logged decision's
choices in off-policy evaluation). The decision's vector is zero outside ``mask`` and is what the
action is drawn from, so it is the right propensity to log and to learn from. By default it is the
policy's vector renormalised over the allowed arms (for a softmax this *is* the softmax over the
subset; a row with no mass on them becomes uniform over them); argmax policies override
:meth:`Policy._restricted_probs` to take the maximum over the allowed arms only (see
``policies/ridge.py``), and a policy whose decisions carry ``info`` overrides
:meth:`Policy._act_restricted` to run its own rule on the allowed arms (``twostage/system.py``).

Batch semantics: ``act_batch`` decides ``n`` contexts with the *current* parameters (as a
service does between updates); ``learn_batch`` applies the same update as ``n`` sequential
``learn`` calls in row order, vectorised where the maths allows.

Contexts are ``(d,)`` — shared by all arms — or ``(M, d)`` — one feature row per arm
("action-dependent features"); subclasses receive them as an ``(n, M, d)`` broadcast view.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from banditroute.core.sampling import sample_categorical
from banditroute.core.types import BatchDecision, Decision, FloatArray, IntArray
from banditroute.core.validation import (
    InputError,
    check_actions,
    check_allowed,
    check_context,
    check_contexts,
    check_generator,
    check_int,
    check_probs,
    check_rewards,
)


class Policy(ABC):
    """Base class of every routing policy.

    Args:
        n_arms: number of arms ``M`` (models to route between).
        dim: context dimension ``d``.
        reward_range: ``(low, high)`` rewards must lie in, or ``None`` for any finite reward.
    """

    name: ClassVar[str] = "policy"

    def __init__(self, n_arms: int, dim: int, *, reward_range: tuple[float, float] | None = (0.0, 1.0)) -> None:
        self.n_arms = check_int(n_arms, "n_arms", minimum=1)
        self.dim = check_int(dim, "dim", minimum=1)
        if reward_range is not None:
            lo, hi = (float(v) for v in reward_range)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise InputError(f"reward_range must be (low, high) with low < high, got {reward_range!r}")
            reward_range = (lo, hi)
        self.reward_range = reward_range
        self.config: dict[str, Any] = {"n_arms": self.n_arms, "dim": self.dim, "reward_range": reward_range}

    # ------------------------------------------------------------------ public, validated API
    def act(self, x: Any, rng: np.random.Generator, *, allowed: Any = None) -> Decision:
        """Choose an arm for context ``x`` (among ``allowed``, an ``(M,)`` boolean mask, if given);
        the decision holds the distribution it was drawn from."""
        X = check_context(x, self.n_arms, self.dim)[None]
        if allowed is None:  # the per-round call: no batch of one to build and unpack
            return self._act_one(X, check_generator(rng))
        return self._decide(X, check_generator(rng), allowed)[0]

    def act_batch(self, X: Any, rng: np.random.Generator, *, allowed: Any = None) -> BatchDecision:
        """Decide ``n`` contexts at once with the current parameters, among the arms ``allowed``
        (``(M,)`` or ``(n, M)`` booleans; ``None``: every arm)."""
        return self._decide(check_contexts(X, self.n_arms, self.dim), check_generator(rng), allowed)

    def learn(self, x: Any, decision: Decision, reward: Any) -> None:
        """Update from the reward of the arm chosen in ``decision`` (bandit feedback)."""
        if not isinstance(decision, Decision):
            raise InputError(f"decision must be a Decision, got {type(decision).__name__}")
        x = check_context(x, self.n_arms, self.dim)
        a = check_actions(decision.action, None, self.n_arms)
        p = check_probs(decision.probs, None, self.n_arms)
        r = check_rewards(reward, None, self.reward_range)
        self._learn_one(x, a, p, r, self._check_info(decision.info, 1, batched=False))

    def learn_batch(self, X: Any, decisions: BatchDecision, rewards: Any) -> None:
        """Same result as ``learn`` on each row in order (up to float rounding)."""
        if not isinstance(decisions, BatchDecision):
            raise InputError(f"decisions must be a BatchDecision, got {type(decisions).__name__}")
        Xb = self._broadcast(check_contexts(X, self.n_arms, self.dim))
        n = Xb.shape[0]
        a = check_actions(decisions.actions, n, self.n_arms)
        p = check_probs(decisions.probs, n, self.n_arms)
        r = check_rewards(rewards, n, self.reward_range)
        self._learn_batch(Xb, a, p, r, self._check_info(decisions.info, n, batched=True))

    def state_dict(self) -> dict[str, Any]:
        """Full state: ``{"policy", "config", "state"}``; arrays are copies."""
        return {
            "policy": self.name,
            "config": dict(self.config),
            "state": {k: np.array(v, copy=True) for k, v in self._get_state().items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict``; rejects (and changes nothing on) a mismatched or corrupt one."""
        if not isinstance(state, Mapping) or set(state) != {"policy", "config", "state"}:
            raise InputError("state must be a mapping with keys 'policy', 'config', 'state'")
        if state["policy"] != self.name:
            raise InputError(f"state is for policy {state['policy']!r}, not {self.name!r}")
        if _normalise(state["config"]) != _normalise(self.config):
            raise InputError(f"state config {state['config']!r} differs from this policy's {self.config!r}")
        current = self._get_state()
        new = state["state"]
        if not isinstance(new, Mapping) or set(new) != set(current):
            raise InputError(f"state arrays must be exactly {sorted(current)}")
        arrays: dict[str, np.ndarray] = {}
        for key, ref in current.items():
            ref = np.asarray(ref)
            try:
                raw = np.asarray(new[key])
                # NaN, inf or fractions cast to an integer array would be silently corrupted: reject them
                float_to_int = ref.dtype.kind in "iu" and raw.dtype.kind == "f"
                if float_to_int and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
                    raise ValueError("non-integral values for an integer array")
                arr = np.array(raw, dtype=ref.dtype, copy=True)
            except (TypeError, ValueError):
                raise InputError(f"state[{key!r}] has the wrong type") from None
            if arr.shape != ref.shape:
                raise InputError(f"state[{key!r}] has shape {arr.shape}, expected {ref.shape}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise InputError(f"state[{key!r}] contains NaN or inf")
            arrays[key] = arr
        self._set_state(arrays)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"

    def _decide(self, X: FloatArray, rng: np.random.Generator, allowed: Any) -> BatchDecision:
        """``act``/``act_batch`` on validated contexts ``(n, d)`` or ``(n, M, d)``."""
        Xb = self._broadcast(X)
        if allowed is None:
            return self._act_batch(Xb, rng)
        return self._act_restricted(Xb, check_allowed(allowed, Xb.shape[0], self.n_arms), rng)

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _act_batch(self, X: FloatArray, rng: np.random.Generator) -> BatchDecision:
        """Decide rows of ``X`` (``(n, M, d)``, validated) with the current parameters."""

    @abstractmethod
    def _learn_batch(
        self, X: FloatArray, actions: IntArray, probs: FloatArray, rewards: FloatArray, info: Mapping[str, Any]
    ) -> None:
        """Apply the updates of ``n`` validated rounds, in order."""

    def _learn_one(
        self, x: FloatArray, action: IntArray, probs: FloatArray, reward: FloatArray, info: Mapping[str, Any]
    ) -> None:
        """Apply one validated round: context ``(d,)`` or ``(M, d)``, 0-d ``action`` and ``reward``,
        ``(M,)`` ``probs``. Default: ``_learn_batch`` on a batch of one; a policy overrides it to
        skip building that batch, with the same update."""
        self._learn_batch(self._broadcast(x[None]), action[None], probs[None], reward[None], info)

    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]:
        """Every mutable array of the policy (scalars as 0-d arrays)."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Install validated copies of the arrays from ``_get_state``."""

    def _act_one(self, X: FloatArray, rng: np.random.Generator) -> Decision:
        """Decide the single row of ``X`` (``(1, d)`` or ``(1, M, d)``, validated, *not* broadcast)
        among all arms, as ``_act_batch`` would. Default: that batch of one; a policy overrides it
        with a single-row path doing the same floating-point operations, so that ``act`` and
        ``act_batch`` decide alike bit for bit (``policies/ridge.py``, ``tests/test_single_row.py``)."""
        return self._act_batch(self._broadcast(X), rng)[0]

    def _act_restricted(self, X: FloatArray, mask: np.ndarray, rng: np.random.Generator) -> BatchDecision:
        """Decide rows of ``X`` among the arms ``mask`` (``(n, M)``) allows. Default: draw from
        :meth:`_restricted_probs`; a policy whose decisions carry ``info`` for learning overrides
        this so that restricted decisions carry it too (``twostage/system.py``)."""
        probs = self._restricted_probs(X, mask, rng)
        return BatchDecision(actions=sample_categorical(probs, rng), probs=probs)

    def _restricted_probs(self, X: FloatArray, mask: np.ndarray, rng: np.random.Generator) -> FloatArray:
        """``(n, M)`` distribution over the allowed arms (``mask``, ``(n, M)``, at least one per row).

        Default: the policy's own vector renormalised over ``mask``; a row with no mass there becomes
        uniform over it. For EXP3's γ-mixture or LinTS's win probabilities this is a valid
        distribution, not the algorithm re-derived on the subset.
        """
        probs = self._act_batch(X, rng).probs * mask
        mass = probs.sum(axis=1, keepdims=True)
        empty = mass[:, 0] <= 0
        probs[empty] = mask[empty]
        mass[empty] = mask[empty].sum(axis=1, keepdims=True)
        out: FloatArray = probs / mass
        return out

    def _check_info(self, info: Mapping[str, Any], n: int, *, batched: bool) -> dict[str, Any]:
        """Validate the info a decision carries back; default: nothing is needed."""
        return {}

    # ------------------------------------------------------------------ helpers
    def _broadcast(self, X: FloatArray) -> FloatArray:
        """``(n, d)`` -> read-only ``(n, M, d)`` view; ``(n, M, d)`` passes through."""
        if X.ndim != 2:
            return X
        shape = (X.shape[0], self.n_arms, self.dim)
        if not X.flags.c_contiguous:
            return np.broadcast_to(X[:, None, :], shape)
        # the same view as np.broadcast_to's, built directly: a third of its cost, which matters per round
        view: FloatArray = np.ndarray(shape, X.dtype, X, 0, (X.strides[0], 0, X.strides[1]))
        view.flags.writeable = False
        return view

    def _shared_context(self, X: FloatArray) -> bool:
        """True when every arm sees the same features (a broadcast view), enabling cheaper maths."""
        return X.strides[1] == 0


def _normalise(config: Any) -> Any:
    """Compare configs across JSON round-trips (tuples become lists)."""
    if isinstance(config, Mapping):
        return {k: _normalise(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_normalise(v) for v in config]
    return config


class StatelessMixin:
    """For policies with no learnable state (uniform, fixed arm)."""

    def _get_state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        return None

    def _learn_batch(self, *args: Any) -> None:
        return None
