"""Reward tables: the seam between real data and learning, and the environment that replays them.

A :class:`RewardTable` holds, for ``n`` logged queries, the context (``n × d``), the reward every
model earned (``n × M``, full information) and optionally what every model cost. Embedding
routing, LLM routing and classification-to-bandit data all become reward tables;
:class:`RewardTableEnv` replays one in any order — i.i.d., shuffled passes, or adversarial
orders built from clusters of similar queries — so the same policies can be compared under
stationary and non-stationary arrival.

Tables are immutable (read-only arrays), validated on construction and saved as ``.npz``
(arrays plus a JSON header, no pickle); loading anything else raises :class:`InputError`.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.cluster.vq import kmeans2

from banditroute.core.types import EnvSpec, FloatArray, IntArray
from banditroute.core.validation import (
    InputError,
    check_finite,
    check_int,
    check_unit_interval,
)
from banditroute.envs.base import Environment, Rounds, chunks

FORMAT = "banditroute.RewardTable"
FORMAT_VERSION = 1
ORDERS = ("iid", "shuffle", "blocks", "periodic")


def _frozen_matrix(a: Any, name: str, shape: tuple[int | None, int | None]) -> FloatArray:
    """A read-only float64 copy of a 2-D array with the given shape (``None`` = any length)."""
    try:
        arr = np.array(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a numeric 2-D array") from None
    if arr.ndim != 2 or any(want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)):
        want_str = "(" + ", ".join("n" if w is None else str(w) for w in shape) + ")"
        raise InputError(f"{name} must have shape {want_str}, got {arr.shape}")
    check_finite(arr, name)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class RewardTable:
    """Full-information rewards of ``M`` models on ``n`` queries.

    Attributes:
        contexts: ``(n, d)`` query features (e.g. embeddings), ``n >= 1``.
        rewards: ``(n, M)`` reward of every model on every query.
        costs: optional ``(n, M)`` cost of every model on every query (e.g. USD per call).
        arm_names: one unique name per model; defaults to ``arm0, arm1, ...``.
        metadata: JSON-serialisable provenance (dataset, embedder, date...); stored as its JSON
            round trip, so what you read back after :meth:`load` equals what you read now.
        reward_range: optional declared ``(low, high)``; every reward must lie inside it.
        groups: optional label per row (e.g. the query's topic or domain), for adversarial orders
            that serve one group after another (``RewardTableEnv(clusters="groups")``).
        row_ids: optional unique id per row (e.g. the query id), to trace a row back to its source.
        post_features: optional ``(n, M, p)`` features a system learns only after running model
            ``m`` on query ``t`` (e.g. a retrieval pipeline's top score and score gap), for cascades
            that decide whether to escalate (:mod:`banditroute.costaware`); names in ``metadata``.
    """

    contexts: FloatArray
    rewards: FloatArray
    costs: FloatArray | None = None
    arm_names: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    reward_range: tuple[float, float] | None = None
    groups: tuple[str, ...] | None = None
    row_ids: tuple[str, ...] | None = None
    post_features: FloatArray | None = None

    def __post_init__(self) -> None:
        contexts = _frozen_matrix(self.contexts, "contexts", (None, None))
        n, _ = contexts.shape
        if n < 1 or contexts.shape[1] < 1:
            raise InputError(f"contexts must have at least one row and one column, got {contexts.shape}")
        rewards = _frozen_matrix(self.rewards, "rewards", (n, None))
        M = rewards.shape[1]
        if M < 1:
            raise InputError("rewards must have at least one column (arm)")
        costs = None if self.costs is None else _frozen_matrix(self.costs, "costs", (n, M))

        names = tuple(self.arm_names) if self.arm_names else tuple(f"arm{m}" for m in range(M))
        if len(names) != M or not all(isinstance(a, str) and a for a in names) or len(set(names)) != M:
            raise InputError(f"arm_names must be {M} unique non-empty strings, got {self.arm_names!r}")

        reward_range = self.reward_range
        if reward_range is not None:
            try:
                lo, hi = (float(v) for v in reward_range)
            except (TypeError, ValueError):
                raise InputError(f"reward_range must be (low, high), got {reward_range!r}") from None
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise InputError(f"reward_range must be finite with low < high, got {reward_range!r}")
            if np.any(rewards < lo) or np.any(rewards > hi):
                row, arm = np.argwhere((rewards < lo) | (rewards > hi))[0]
                raise InputError(
                    f"rewards outside reward_range [{lo}, {hi}]: e.g. row {row}, arm {arm} = {rewards[row, arm]}"
                )
            reward_range = (lo, hi)

        try:
            metadata = json.loads(json.dumps(dict(self.metadata), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InputError(f"metadata must be a JSON-serialisable mapping: {exc}") from None

        groups = _row_labels(self.groups, "groups", n)
        row_ids = _row_labels(self.row_ids, "row_ids", n)
        if row_ids is not None and len(set(row_ids)) != n:
            raise InputError("row_ids must be unique")

        post = None if self.post_features is None else _frozen_post(self.post_features, n, M)

        for name, value in [
            ("post_features", post),
            ("contexts", contexts),
            ("rewards", rewards),
            ("costs", costs),
            ("arm_names", names),
            ("metadata", metadata),
            ("reward_range", reward_range),
            ("groups", groups),
            ("row_ids", row_ids),
        ]:
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ shape
    @property
    def n_rows(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def n_arms(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def dim(self) -> int:
        return int(self.contexts.shape[1])

    def __len__(self) -> int:
        return self.n_rows

    # ------------------------------------------------------------------ slicing
    def subset(self, idx: Any) -> RewardTable:
        """The rows ``idx`` (integer indices, repeats allowed, or a length-``n`` boolean mask)."""
        arr = np.asarray(idx)
        if arr.dtype == bool:
            if arr.shape != (self.n_rows,):
                raise InputError(f"boolean row mask must have shape ({self.n_rows},), got {arr.shape}")
            arr = np.flatnonzero(arr)
        elif arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise InputError(f"row indices must be a 1-D integer array or boolean mask, got {arr.dtype} {arr.shape}")
        if arr.size == 0:
            raise InputError("subset must select at least one row")
        if np.any(arr < -self.n_rows) or np.any(arr >= self.n_rows):
            raise InputError(f"row indices must lie in [-{self.n_rows}, {self.n_rows})")
        return RewardTable(
            contexts=self.contexts[arr],
            rewards=self.rewards[arr],
            costs=None if self.costs is None else self.costs[arr],
            arm_names=self.arm_names,
            metadata=self.metadata,
            reward_range=self.reward_range,
            groups=None if self.groups is None else tuple(self.groups[i] for i in arr),
            row_ids=None if self.row_ids is None else tuple(self.row_ids[i] for i in arr),
            post_features=None if self.post_features is None else self.post_features[arr],
        )

    def split(self, frac: float, seed: int = 0) -> tuple[RewardTable, RewardTable]:
        """Random split into ``(first, rest)`` with ``round(frac · n)`` rows in ``first``; both non-empty."""
        frac = check_unit_interval(frac, "frac")
        k = round(frac * self.n_rows)
        if not 0 < k < self.n_rows:
            raise InputError(f"split(frac={frac}) of {self.n_rows} rows leaves an empty side")
        perm = np.random.default_rng(check_int(seed, "seed", minimum=0)).permutation(self.n_rows)
        return self.subset(np.sort(perm[:k])), self.subset(np.sort(perm[k:]))

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an ``.npz`` (arrays + JSON header, no pickle) atomically to exactly ``path``."""
        path = Path(path)
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "arm_names": list(self.arm_names),
            "metadata": self.metadata,
            "reward_range": None if self.reward_range is None else list(self.reward_range),
            "has_costs": self.costs is not None,
            "has_groups": self.groups is not None,
            "has_row_ids": self.row_ids is not None,
            "has_post_features": self.post_features is not None,
        }
        arrays = {"header": np.array(json.dumps(header)), "contexts": self.contexts, "rewards": self.rewards}
        if self.costs is not None:
            arrays["costs"] = self.costs
        if self.post_features is not None:
            arrays["post_features"] = self.post_features
        for key in ("groups", "row_ids"):
            labels = getattr(self, key)
            if labels is not None:
                arrays[key] = np.array(labels, dtype=np.str_)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RewardTable:
        """Read a table written by :meth:`save`; anything else (missing, truncated, corrupted,
        another format or version, inconsistent arrays) raises :class:`InputError`."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"reward table file not found: {path}")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise InputError("not an .npz archive")
            with loaded as npz:
                header = json.loads(str(npz["header"][()]))
                if not isinstance(header, dict) or header.get("format") != FORMAT:
                    raise InputError(f"not a {FORMAT} file")
                if header.get("version") != FORMAT_VERSION:
                    raise InputError(f"format version {header.get('version')!r}, expected {FORMAT_VERSION}")
                contexts, rewards = npz["contexts"], npz["rewards"]
                costs = npz["costs"] if header["has_costs"] else None
                groups = tuple(npz["groups"].tolist()) if header.get("has_groups") else None
                row_ids = tuple(npz["row_ids"].tolist()) if header.get("has_row_ids") else None
                post = npz["post_features"] if header.get("has_post_features") else None
            return cls(
                contexts=contexts,
                rewards=rewards,
                costs=costs,
                arm_names=tuple(header["arm_names"]),
                metadata=header["metadata"],
                reward_range=None if header["reward_range"] is None else tuple(header["reward_range"]),
                groups=groups,
                row_ids=row_ids,
                post_features=post,
            )
        except InputError as exc:
            raise InputError(f"cannot load reward table {path}: {exc}") from None
        except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
            raise InputError(f"cannot load reward table {path}: corrupted or not a reward table ({exc!r})") from None


def _frozen_post(a: Any, n: int, M: int) -> FloatArray:
    """A read-only finite float64 copy of an ``(n, M, p)`` array."""
    try:
        arr = np.array(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("post_features must be a numeric 3-D array") from None
    if arr.ndim != 3 or arr.shape[:2] != (n, M):
        raise InputError(f"post_features must have shape ({n}, {M}, p), got {arr.shape}")
    check_finite(arr, "post_features")
    arr.flags.writeable = False
    return arr


def _row_labels(labels: Any, name: str, n: int) -> tuple[str, ...] | None:
    """``None``, or a tuple of ``n`` non-empty strings."""
    if labels is None:
        return None
    if isinstance(labels, str):
        raise InputError(f"{name} must be a sequence of {n} strings, got one string")
    try:
        out = tuple(labels)
    except TypeError:
        raise InputError(f"{name} must be a sequence of {n} strings") from None
    if len(out) != n or not all(isinstance(v, str) and v for v in out):
        raise InputError(f"{name} must hold {n} non-empty strings (one per row), got {len(out)} values")
    return out


class RewardTableEnv(Environment):
    """Replay the rows of a :class:`RewardTable` (rewards = expected = the table row; no noise).

    Orders:
        ``"iid"``: rows drawn uniformly with replacement.
        ``"shuffle"``: consecutive passes, each a fresh random permutation of all rows.
        ``"blocks"`` (adversarial): passes that serve one cluster of similar queries after another
            (cluster order and rows within each cluster shuffled per pass), so the best arm
            shifts abruptly between blocks.
        ``"periodic"``: round ``t`` draws uniformly from cluster ``(t // period) mod K``, cycling.
    Clusters are k-means clusters of the contexts (``scipy.cluster.vq.kmeans2``, k-means++
    initialisation seeded from ``seed``), computed once here; with fewer distinct contexts than
    ``n_clusters``, or clusters that end up empty, ``labels`` holds ``K < n_clusters`` clusters,
    numbered ``0..K-1``. With ``clusters="groups"`` the clusters are instead the table's own row
    groups (e.g. SQuAD articles or the domains of a mixed stream: an adversarial topic order),
    numbered in sorted label order, and ``n_clusters`` is unused.

    Args:
        table: the reward table to replay.
        order: one of ``"iid"``, ``"shuffle"``, ``"blocks"``, ``"periodic"``.
        n_clusters: clusters requested for ``"blocks"`` and ``"periodic"`` (``<= n`` rows).
        period: rounds per cluster in ``"periodic"``.
        seed: integer seed of the clustering (the problem instance).
        clusters: ``"kmeans"`` (of the contexts) or ``"groups"`` (the table's ``groups`` labels).
    """

    def __init__(
        self,
        table: RewardTable,
        *,
        order: str = "iid",
        n_clusters: int = 8,
        period: int = 500,
        seed: int = 0,
        clusters: str = "kmeans",
    ) -> None:
        if not isinstance(table, RewardTable):
            raise InputError(f"table must be a RewardTable, got {type(table).__name__}")
        if order not in ORDERS:
            raise InputError(f"order must be one of {ORDERS}, got {order!r}")
        if clusters not in ("kmeans", "groups"):
            raise InputError(f"clusters must be 'kmeans' or 'groups', got {clusters!r}")
        if clusters == "groups" and table.groups is None:
            raise InputError("clusters='groups' needs a table with row groups (RewardTable.groups)")
        n_clusters = check_int(n_clusters, "n_clusters")
        self.period = check_int(period, "period")
        seed = check_int(seed, "seed", minimum=0)
        self.table = table
        self.order = order
        self.spec = EnvSpec(
            n_arms=table.n_arms,
            dim=table.dim,
            per_arm=False,
            reward_range=table.reward_range,
            arm_names=table.arm_names,
        )
        self.labels: IntArray | None = None
        if order in ("blocks", "periodic") and clusters == "groups":
            assert table.groups is not None
            self.labels = np.unique(np.array(table.groups), return_inverse=True)[1].astype(np.int64)
        elif order in ("blocks", "periodic"):
            if n_clusters > table.n_rows:
                raise InputError(f"n_clusters must be <= the number of rows ({table.n_rows}), got {n_clusters}")
            # k-means++ needs as many distinct points as clusters; empty clusters are dropped below.
            k = min(n_clusters, len(np.unique(table.contexts, axis=0)))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="One of the clusters is empty")
                _, raw = kmeans2(table.contexts, k, minit="++", seed=np.random.default_rng(seed))
            self.labels = np.unique(raw, return_inverse=True)[1].astype(np.int64)
        if self.labels is not None:
            # Rows grouped by cluster: cluster k is _by_cluster[_starts[k] : _starts[k] + _sizes[k]].
            self._by_cluster: IntArray = np.argsort(self.labels, kind="stable")
            self._sizes: IntArray = np.bincount(self.labels)
            self._starts: IntArray = np.concatenate([[0], np.cumsum(self._sizes)[:-1]])

    @property
    def n_clusters(self) -> int:
        """Number of non-empty clusters ``K`` (0 for orders that do not cluster)."""
        return 0 if self.labels is None else len(self._sizes)

    def _rows(self, idx: IntArray) -> Rounds:
        t = self.table
        return Rounds(
            contexts=t.contexts[idx],
            rewards=t.rewards[idx],
            expected=t.rewards[idx],
            costs=None if t.costs is None else t.costs[idx],
        )

    def _sample(self, n: int, rng: np.random.Generator) -> Rounds:
        """i.i.d. rows, one uniform per round (``Generator.random``), so chunking never changes them."""
        return self._rows(_uniform_index(rng.random(n), self.table.n_rows))

    def _stream(self, T: int, rng: np.random.Generator, chunk_size: int) -> Iterator[Rounds]:
        """Rounds in the chosen order; the round counter is local to this stream."""
        if self.order == "iid":
            yield from super()._stream(T, rng, chunk_size)
            return
        passes = self._passes(rng)
        pending = np.empty(0, dtype=np.int64)
        for start, n in chunks(T, chunk_size):
            if self.order == "periodic":
                k = (np.arange(start, start + n) // self.period) % self.n_clusters
                idx = self._by_cluster[self._starts[k] + _uniform_index(rng.random(n), self._sizes[k])]
            else:
                while len(pending) < n:
                    pending = np.concatenate([pending, next(passes)])
                idx, pending = pending[:n], pending[n:]
            yield self._rows(idx)

    def _passes(self, rng: np.random.Generator) -> Iterator[IntArray]:
        """Endless passes over all rows, each drawn only when the stream reaches it."""
        while True:
            if self.order == "shuffle":
                yield rng.permutation(self.table.n_rows)
            else:
                yield np.concatenate(
                    [
                        rng.permutation(self._by_cluster[self._starts[k] : self._starts[k] + self._sizes[k]])
                        for k in rng.permutation(self.n_clusters)
                    ]
                )


def _uniform_index(u: FloatArray, size: Any) -> IntArray:
    """``floor(u · size)`` for uniforms ``u`` in ``[0, 1)``: a uniform index below ``size``."""
    out: IntArray = np.minimum((u * size).astype(np.int64), np.asarray(size) - 1)
    return out
