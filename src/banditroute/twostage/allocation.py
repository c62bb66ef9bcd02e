"""How items and features are shared out among the nominators (spec: two_stage.md, "System").

* **Pools.** Permute the items at random, cut the permutation into ``N`` consecutive pools of
  ``⌊|A|/N⌋`` items and hand the remainder out one by one to the first nominators, so pool sizes
  differ by at most one and the pools partition the items.
* **Features** (misspecification). Permute the ``d`` features; nominator ``n`` gets the disjoint
  block ``perm[n·s' : (n+1)·s']`` with ``s' = min(s, ⌊d/N⌋)``, then is filled up to ``s``
  features with ``s − s'`` features drawn without replacement from the ``d − s'`` not in its
  block. Every nominator therefore sees ``s`` distinct features, and the blocks guarantee that the
  nominators jointly see as many different features as ``s`` and ``N`` allow.

Both take an explicit ``numpy.random.Generator``; :func:`allocate` derives the two generators from
one integer seed so a system's allocation is a pure function of its configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from banditroute.core.types import IntArray
from banditroute.core.validation import InputError, check_generator, check_int


def allocate_pools(n_items: int, n_nominators: int, rng: np.random.Generator) -> list[IntArray]:
    """Random partition of ``range(n_items)`` into ``n_nominators`` pools (sorted item ids each)."""
    n_items = check_int(n_items, "n_items")
    n_nominators = check_int(n_nominators, "n_nominators")
    if n_nominators > n_items:
        raise InputError(f"n_nominators ({n_nominators}) must not exceed the number of items ({n_items})")
    perm = check_generator(rng).permutation(n_items)
    base = n_items // n_nominators
    pools = [list(perm[n * base : (n + 1) * base]) for n in range(n_nominators)]
    for n, item in enumerate(perm[n_nominators * base :]):  # the remainder, one by one
        pools[n].append(item)
    return [np.sort(np.array(p, dtype=np.int64)) for p in pools]


def allocate_features(dim: int, n_nominators: int, n_features: int, rng: np.random.Generator) -> list[IntArray]:
    """``n_nominators`` feature subsets of size ``n_features`` out of ``dim`` (sorted indices each)."""
    dim = check_int(dim, "dim")
    n_nominators = check_int(n_nominators, "n_nominators")
    s = check_int(n_features, "n_features")
    if s > dim:
        raise InputError(f"n_features ({s}) must not exceed dim ({dim})")
    check_generator(rng)
    perm = rng.permutation(dim)
    block = min(s, dim // n_nominators)
    out = []
    for n in range(n_nominators):
        own = perm[n * block : (n + 1) * block]
        rest = np.setdiff1d(np.arange(dim), own)  # the d − s' features not in this block
        fill = rng.choice(rest, size=s - block, replace=False)
        out.append(np.sort(np.concatenate([own, fill])).astype(np.int64))
    return out


def allocate(
    n_items: int, dim: int, n_nominators: int, n_features: int, seed: int
) -> tuple[list[IntArray], list[IntArray]]:
    """``(pools, feature_sets)`` from one integer ``seed`` (independent streams for each)."""
    seed = check_int(seed, "allocation_seed", minimum=0)
    pool_seq, feature_seq = np.random.SeedSequence(seed).spawn(2)
    pools = allocate_pools(n_items, n_nominators, np.random.default_rng(pool_seq))
    features = allocate_features(dim, n_nominators, n_features, np.random.default_rng(feature_seq))
    return pools, features


def check_index_sets(sets: Any, size: int, name: str, *, cover: bool) -> list[IntArray]:
    """Validate user-given pools (``cover=True``: together they must hold every item) or feature sets.

    Each set is a non-empty list of distinct integers in ``[0, size)``. Pools may overlap (then the
    two training-on-own definitions differ, see :mod:`banditroute.twostage.system`).
    """
    if isinstance(sets, (str, bytes)) or not isinstance(sets, Sequence) or len(sets) == 0:
        raise InputError(f"{name} must be a non-empty list of index lists")
    out = []
    for i, raw in enumerate(sets):
        arr = np.asarray(raw)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
            raise InputError(f"{name}[{i}] must be a non-empty list of integers, got {raw!r}")
        if np.any(arr < 0) or np.any(arr >= size):
            raise InputError(f"{name}[{i}] has indices outside [0, {size})")
        if len(np.unique(arr)) != arr.size:
            raise InputError(f"{name}[{i}] repeats an index")
        out.append(np.sort(arr).astype(np.int64))
    if cover:
        missing = np.setdiff1d(np.arange(size), np.concatenate(out))
        if missing.size:
            raise InputError(f"{name} must cover every item; missing {missing[:10].tolist()}")
    return out
