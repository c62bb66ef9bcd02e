"""Input checks shared by every public entry point.

Each check raises :class:`InputError` (a ``ValueError``) with a message that names the argument
and what was wrong, *before* any state is touched, so a rejected call changes nothing.

They sit on every policy call, so they are written for a single small row too: ufunc reductions
rather than the ``np.all`` wrappers and array methods, one reduction where two were used, and a
small 1-D array (a per-round context or probability vector, at most ``_SMALL`` entries) checked on
its Python floats, where a numpy call costs more than the arithmetic. At d = 16 this cut the
per-round validation from about 60 % of ``act`` + ``learn`` (docs/benchmarks.md). What is rejected
is unchanged (``tests/test_policy_contract.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from banditroute.core.types import FloatArray, IntArray

PROB_TOL = 1e-6

_all, _min, _sum = np.logical_and.reduce, np.minimum.reduce, np.add.reduce
_SMALL = 64  # 1-D arrays up to this length are checked on Python floats (module docstring)


class InputError(ValueError):
    """Raised when an argument has the wrong shape, type or value."""


def check_generator(rng: Any) -> np.random.Generator:
    """Policies take randomness only as an explicit ``numpy.random.Generator``."""
    if not isinstance(rng, np.random.Generator):
        raise InputError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), got {type(rng).__name__}"
        )
    return rng


def _as_float(a: Any, name: str) -> FloatArray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric: {exc}") from None
    return arr


def check_finite(arr: FloatArray, name: str) -> FloatArray:
    # A small vector whose Python sum is finite has finite entries (NaN and ±inf propagate through
    # the sum, which, unlike numpy's, never warns); a sum that overflowed is checked entry by entry.
    if arr.ndim == 1 and arr.shape[0] <= _SMALL and math.isfinite(sum(arr.tolist())):
        return arr
    if not _all(np.isfinite(arr), axis=None):  # the ufunc's reduce: ``.all()`` adds a Python wrapper
        raise InputError(f"{name} contains NaN or inf")
    return arr


def check_context(x: Any, n_arms: int, dim: int) -> FloatArray:
    """A context is ``(d,)`` (shared by all arms) or ``(M, d)`` (one feature row per arm)."""
    arr = _as_float(x, "context")
    if arr.shape not in ((dim,), (n_arms, dim)):
        raise InputError(f"context must have shape ({dim},) or ({n_arms}, {dim}), got {arr.shape}")
    return check_finite(arr, "context")


def check_contexts(X: Any, n_arms: int, dim: int) -> FloatArray:
    """A batch of contexts is ``(n, d)`` or ``(n, M, d)`` with ``n >= 1``."""
    arr = _as_float(X, "contexts")
    if arr.ndim not in (2, 3) or arr.shape[1:] not in ((dim,), (n_arms, dim)) or arr.shape[0] < 1:
        raise InputError(f"contexts must have shape (n, {dim}) or (n, {n_arms}, {dim}) with n >= 1, got {arr.shape}")
    return check_finite(arr, "contexts")


def check_allowed(allowed: Any, n: int, n_arms: int) -> np.ndarray:
    """Allowed arms: ``(M,)`` or ``(n, M)`` booleans with at least one allowed arm per row -> ``(n, M)``."""
    arr = np.asarray(allowed)
    if arr.dtype != bool or arr.shape not in ((n_arms,), (n, n_arms)):
        raise InputError(f"allowed must be a boolean array of shape ({n_arms},) or ({n}, {n_arms})")
    if not arr.any(axis=-1).all():
        raise InputError("at least one arm must be allowed")
    return np.broadcast_to(arr, (n, n_arms))


def check_rewards(r: Any, n: int | None, reward_range: tuple[float, float] | None) -> FloatArray:
    """Rewards must be finite and, when the policy declares a range, inside it."""
    if n is None and isinstance(r, float):  # the per-round call: a Python or numpy float needs no array checks
        if not math.isfinite(r):
            raise InputError("reward contains NaN or inf")
        if reward_range is not None and not reward_range[0] <= r <= reward_range[1]:
            raise InputError(f"reward outside the policy's reward_range [{reward_range[0]}, {reward_range[1]}]")
        return np.array(r)
    arr = _as_float(r, "reward")
    if n is None:
        if arr.ndim != 0:
            raise InputError(f"reward must be a scalar, got shape {arr.shape}")
    elif arr.shape != (n,):
        raise InputError(f"rewards must have shape ({n},), got {arr.shape}")
    check_finite(arr, "reward")
    if reward_range is not None:
        lo, hi = reward_range
        if arr.min() < lo or arr.max() > hi:
            raise InputError(f"reward outside the policy's reward_range [{lo}, {hi}]")
    return arr


def check_actions(a: Any, n: int | None, n_arms: int) -> IntArray:
    """Actions are integer arm indices in ``[0, M)``."""
    if n is None and type(a) is int:  # the per-round call (a Decision's action)
        if not 0 <= a < n_arms:
            raise InputError(f"unknown arm: actions must lie in [0, {n_arms})")
        return np.array(a, dtype=np.int64)
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"action must be an integer arm index, got dtype {arr.dtype}")
    if n is None and arr.ndim != 0:
        raise InputError(f"action must be a scalar, got shape {arr.shape}")
    if n is not None and arr.shape != (n,):
        raise InputError(f"actions must have shape ({n},), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_arms):
        raise InputError(f"unknown arm: actions must lie in [0, {n_arms})")
    return arr.astype(np.int64)


def check_probs(p: Any, n: int | None, n_arms: int) -> FloatArray:
    """Probability vectors: right length, non-negative, finite, each summing to one."""
    arr = _as_float(p, "probs")
    want = (n_arms,) if n is None else (n, n_arms)
    if arr.shape != want:
        raise InputError(f"probs must have shape {want}, got {arr.shape}")
    check_finite(arr, "probs")
    low = min(arr.tolist()) if n is None and n_arms <= _SMALL else _min(arr, axis=None)  # all finite here
    # numpy's sum in both cases, so that a vector at the tolerance is judged as it always was
    if low < 0 or (abs(_sum(arr) - 1.0) if n is None else np.abs(_sum(arr, axis=-1) - 1.0).max()) > PROB_TOL:
        raise InputError("probs must be non-negative and sum to one")
    return arr


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Hyper-parameter check: a finite number > 0 (or >= 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise InputError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_unit_interval(value: Any, name: str) -> float:
    v = check_positive(value, name, allow_zero=True)
    if v > 1:
        raise InputError(f"{name} must lie in [0, 1], got {value!r}")
    return v
