"""Where two-stage rewards come from: Proposition 2's fixed items, and multi-label data as a bandit.

* **Synthetic linear** (docs/specs/two-stage.md, "Data"): ``θ*`` uniform on the sphere, fresh
  ``x_{t,a} ~ N(0, I)`` per item and round, reward ``<θ*, x_{t,a}> + N(0, σ²)`` — exactly
  :class:`banditroute.envs.linear.LinearBandit`, which the sweeps use as it is.
* :class:`FixedItems` — every round the same item features and mean rewards (plus optional noise):
  the setting of Proposition 2, whose two constructions are :data:`PROPOSITION_2`.
* **Multi-label classification → bandit**: each item is a label; a round samples one example, every
  item sees that example's features, and the reward of item ``a`` is 1 when label ``a`` applies
  (the paper's AmazonCat-13K setup). :func:`multilabel_table` turns a :class:`MultiLabel` data set
  into a :class:`~banditroute.envs.reward_table.RewardTable` (rows = examples, rewards = the label
  matrix), which :class:`~banditroute.envs.reward_table.RewardTableEnv` replays i.i.d.

Loaders: :func:`load_yeast` (river's bundled copy, the ``[twostage]`` extra) and
:func:`load_amazoncat` for users who have the Extreme Classification Repository files.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from banditroute.core.types import EnvSpec, FloatArray
from banditroute.core.validation import InputError, check_finite, check_int, check_positive
from banditroute.envs.base import Environment, Rounds
from banditroute.envs.reward_table import RewardTable

AMAZONCAT_URL = "http://manikvarma.org/downloads/XC/XMLRepository.html"
AMAZONCAT_ENV = "BANDITROUTE_AMAZONCAT"


class FixedItems(Environment):
    """The same item features ``(M, d)`` every round; reward ``means[a] + noise · N(0, 1)``.

    Args:
        features: ``(M, d)`` item feature rows (per-arm contexts).
        means: ``(M,)`` expected rewards.
        noise: standard deviation of the reward noise.
    """

    def __init__(self, features: FloatArray, means: FloatArray, *, noise: float = 0.0) -> None:
        F = check_finite(np.array(features, dtype=np.float64), "features")
        mu = check_finite(np.array(means, dtype=np.float64), "means")
        if F.ndim != 2 or mu.shape != (F.shape[0],):
            raise InputError(f"features must be (M, d) and means (M,), got {F.shape} and {mu.shape}")
        self.features, self.means = F, mu
        self.noise = check_positive(noise, "noise", allow_zero=True)
        self.spec = EnvSpec(n_arms=F.shape[0], dim=F.shape[1], per_arm=True, reward_range=None)

    def _sample(self, n: int, rng: np.random.Generator) -> Rounds:
        expected = np.broadcast_to(self.means, (n, len(self.means))).copy()
        contexts = np.broadcast_to(self.features, (n, *self.features.shape)).copy()
        return Rounds(
            contexts=contexts, rewards=expected + self.noise * rng.standard_normal(expected.shape), expected=expected
        )


@dataclass(frozen=True)
class Construction:
    """One of Proposition 2's examples: items, pools, the nominators' features, and what each mode picks.

    ``picks[mode]`` is the item (0-based) the second nominator proposes in the limit under training
    mode ``mode``; ``best`` is the best item of that pool.
    """

    features: tuple[tuple[float, ...], ...]
    means: tuple[float, ...]
    pools: tuple[tuple[int, ...], ...]
    nominator_features: tuple[int, ...]
    best: int
    picks: dict[str, int]

    def env(self, noise: float = 0.0) -> FixedItems:
        return FixedItems(np.array(self.features), np.array(self.means), noise=noise)


PROPOSITION_2 = {
    # Training-on-all fits the pool-2 nominator also to a1 = (0, −1) with reward 1/4, which drags the
    # weight of feature 3 down until a2 (1/2) beats a3 (1): on-all is wrong, on-own right.
    "on-all-fails": Construction(
        features=((1, 0, -1), (0, 1, 0), (0, 0, 1)),
        means=(1 / 4, 1 / 2, 1),
        pools=((0,), (1, 2)),
        nominator_features=(1, 2),
        best=2,
        picks={"all": 1, "own": 2},
    ),
    # Training-on-own sees a2 = (0, −1) → 1 and a4 = (0, 1) → 7/8 only, so the weight of feature 4 is
    # slightly negative and a3 (1/6) wins; on-all also sees a1 = (0, −1) → 3/4 and ranks a2 first.
    "on-own-fails": Construction(
        features=((1, 0, 0, -1), (0, 1, 0, -1), (0, 0, 1, 0), (0, 0, 0, 1)),
        means=(3 / 4, 1, 1 / 6, 7 / 8),
        pools=((0,), (1, 2, 3)),
        nominator_features=(2, 3),
        best=1,
        picks={"all": 1, "own": 2},
    ),
}


# ---------------------------------------------------------------------------------------- multi-label data
@dataclass(frozen=True, eq=False)
class MultiLabel:
    """A multi-label data set: features ``X`` ``(n, d)`` and the label matrix ``Y`` ``(n, L)`` (bool)."""

    X: FloatArray
    Y: np.ndarray
    name: str
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.Y.ndim != 2 or self.X.shape[0] != self.Y.shape[0] or self.Y.dtype != bool:
            raise InputError(f"X must be (n, d) and Y a boolean (n, L) matrix, got {self.X.shape} and {self.Y.shape}")
        check_finite(self.X, "X")
        if len(self.label_names) != self.Y.shape[1]:
            raise InputError("one label name per column of Y")

    def split(self, test_fraction: float, seed: int) -> tuple[MultiLabel, MultiLabel]:
        """Random ``(train, test)`` split of the examples."""
        n = self.X.shape[0]
        k = round(test_fraction * n)
        if not 0 < k < n:
            raise InputError(f"test_fraction={test_fraction} leaves an empty side of {n} examples")
        perm = np.random.default_rng(seed).permutation(n)
        test, train = np.sort(perm[:k]), np.sort(perm[k:])
        return (
            MultiLabel(self.X[train], self.Y[train], self.name, self.label_names),
            MultiLabel(self.X[test], self.Y[test], self.name, self.label_names),
        )


def load_yeast() -> MultiLabel:
    """Yeast (Elisseeff & Weston 2002; MULAN): 2,417 genes × 103 features, 14 functional classes.

    Read from the copy bundled with ``river`` (``pip install banditroute[twostage]``); no network.
    """
    try:
        from river.datasets import Yeast
    except ImportError:
        raise InputError("the Yeast data ships with river: pip install 'banditroute[twostage]'") from None
    with gzip.open(Yeast().path, "rt") as text:
        header = text.readline().strip().split(",")
        data = np.loadtxt(text, delimiter=",")
    labels = [i for i, h in enumerate(header) if h.startswith("Class")]
    feats = [i for i, h in enumerate(header) if h.startswith("Att")]
    return MultiLabel(data[:, feats], data[:, labels] == 1, "yeast", tuple(header[i] for i in labels))


def read_xc_file(
    path: str | os.PathLike[str], max_rows: int | None = None
) -> tuple[sparse.csr_matrix, list[list[int]], int]:
    """Read a file in the Extreme Classification Repository's sparse format.

    Format (e.g. AmazonCat-13K's ``train.txt``/``test.txt``): a header ``n_points n_features
    n_labels``, then one line per point: comma-separated 0-based label ids, a space, and
    ``feature:value`` pairs (0-based feature ids); a point without labels starts with the space.
    Returns ``(features as CSR (n, n_features), labels per point, n_labels)``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path} (AmazonCat-13K: download the BoW files from {AMAZONCAT_URL})")
    indptr: list[int] = [0]
    indices: list[int] = []
    values: list[float] = []
    labels: list[list[int]] = []
    with path.open() as fh:
        try:
            n_points, n_features, n_labels = (int(v) for v in fh.readline().split())
        except ValueError:
            raise InputError(f"{path}: first line must be 'n_points n_features n_labels'") from None
        for lineno, line in enumerate(fh, start=2):
            if max_rows is not None and len(labels) >= max_rows:
                break
            if not line.strip():
                continue
            head, _, rest = line.rstrip("\n").partition(" ")
            try:
                row_labels = [int(v) for v in head.split(",") if v]
                pairs = [p.split(":") for p in rest.split()]
                indices.extend(int(j) for j, _ in pairs)
                values.extend(float(v) for _, v in pairs)
            except ValueError:
                raise InputError(f"{path}:{lineno}: expected 'l1,l2 f:v f:v ...'") from None
            if any(not 0 <= lab < n_labels for lab in row_labels):
                raise InputError(f"{path}:{lineno}: label id outside [0, {n_labels})")
            labels.append(row_labels)
            indptr.append(len(indices))
    if indices and not 0 <= min(indices) <= max(indices) < n_features:
        raise InputError(f"{path}: feature id outside [0, {n_features})")
    if max_rows is None and len(labels) != n_points:
        raise InputError(f"{path}: header announces {n_points} points, found {len(labels)}")
    X = sparse.csr_matrix(
        (np.array(values), np.array(indices, dtype=np.int64), np.array(indptr)), shape=(len(labels), n_features)
    )
    return X, labels, n_labels


def load_amazoncat(
    path: str | os.PathLike[str] | None = None,
    *,
    n_categories: int = 100,
    n_features: int = 400,
    embeddings: str | os.PathLike[str] | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> MultiLabel:
    """AmazonCat-13K (McAuley & Leskovec 2013) as the paper uses it: ``n_categories`` categories, ``n_features`` dims.

    Args:
        path: the BoW file (``train.txt`` or ``test.txt`` of ``AmazonCat-13K.bow``) from the Extreme
            Classification Repository (see ``AMAZONCAT_URL``); default: ``$BANDITROUTE_AMAZONCAT``.
        n_categories: keep the ``n_categories`` most frequent categories, and the examples having at
            least one of them [ours: the paper does not say which 100].
        n_features: context dimension. The paper embeds the review texts with BERT and keeps the
            first 400 dimensions; pass those as ``embeddings`` (a ``.npy`` of shape
            ``(n_points, >= n_features)``, rows aligned with the file). Without it the BoW rows
            (L2-normalised) are reduced by a seeded signed feature hash (count sketch).
        max_rows: read only the first rows (quick looks at the 1.2 M-example file).
        seed: seed of the feature hash.
    """
    if path is None:
        path = os.environ.get(AMAZONCAT_ENV)
        if not path:
            raise InputError(f"give the AmazonCat-13K BoW file path or set ${AMAZONCAT_ENV} (files: {AMAZONCAT_URL})")
    n_categories = check_int(n_categories, "n_categories")
    n_features = check_int(n_features, "n_features")
    bow, labels, n_labels = read_xc_file(path, max_rows)
    counts = np.bincount(
        np.concatenate([np.asarray(lab, dtype=np.int64) for lab in labels] or [np.empty(0, np.int64)]),
        minlength=n_labels,
    )
    if np.count_nonzero(counts) < n_categories:
        raise InputError(f"{path}: only {np.count_nonzero(counts)} categories occur, {n_categories} requested")
    keep = np.sort(np.argsort(-counts, kind="stable")[:n_categories])
    column = np.full(n_labels, -1)
    column[keep] = np.arange(n_categories)
    Y = np.zeros((len(labels), n_categories), dtype=bool)
    for i, lab in enumerate(labels):
        cols = column[np.asarray(lab, dtype=np.int64)] if lab else np.empty(0, dtype=np.int64)
        Y[i, cols[cols >= 0]] = True
    if embeddings is not None:
        E = np.load(embeddings, allow_pickle=False, mmap_mode="r")
        too_few_rows = E.shape[0] < bow.shape[0] if max_rows is not None else E.shape[0] != bow.shape[0]
        if E.ndim != 2 or too_few_rows or E.shape[1] < n_features:
            raise InputError(f"embeddings must be (n_points, >= {n_features}), got {E.shape}")
        X = np.array(E[: bow.shape[0], :n_features], dtype=np.float64)
    else:
        X = hash_features(bow, n_features, seed)
    rows = Y.any(axis=1)
    return MultiLabel(X[rows], Y[rows], "amazoncat-13k", tuple(f"cat{c}" for c in keep))


def hash_features(bow: sparse.csr_matrix, n_features: int, seed: int) -> FloatArray:
    """Signed feature hashing (count sketch) of L2-normalised sparse rows to ``n_features`` dense dims.

    Inner products are preserved in expectation, so similar reviews stay similar.
    """
    rng = np.random.default_rng(seed)
    D = bow.shape[1]
    sketch = sparse.csr_matrix(
        (rng.choice([-1.0, 1.0], size=D), (np.arange(D), rng.integers(0, n_features, size=D))), shape=(D, n_features)
    )
    norms = np.sqrt(np.asarray(bow.multiply(bow).sum(axis=1))).ravel()
    normalised = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ bow
    return np.asarray((normalised @ sketch).todense())


def multilabel_table(data: MultiLabel, *, standardise: bool = True) -> RewardTable:
    """Reward table of the bandit: contexts = (z-scored) features, reward of item ``a`` = 1 if label ``a`` applies."""
    X = data.X
    if standardise:
        sd = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return RewardTable(
        contexts=X,
        rewards=data.Y.astype(np.float64),
        arm_names=data.label_names,
        metadata={"dataset": data.name, "standardised": standardise},
        reward_range=(0.0, 1.0),
    )
