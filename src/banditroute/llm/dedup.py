"""Duplicate questions across training and test queries, and splits that share no question.

A router evaluated on a question it was trained on measures memory, not routing: on LLMRouter a
quarter of an outside test file's questions occur word for word in ``dcrouter_train.json``
(docs/results/llm-routing.md). Three levels of "the same question":

- **exact**: identical text;
- **normalised**: identical after :func:`normalise` (lower case, every run of non-word
  characters one space) — catches re-formatting, punctuation and whitespace changes;
- **near**: query embeddings with cosine similarity at least ``threshold``
  (:data:`NEAR_DUPLICATE_COSINE`; the measurement behind it is in docs/results/llm-routing.md,
  "Duplicates") — catches light rewording.

:func:`overlap` marks the test queries that duplicate a training query at any level;
:func:`question_groups` joins the queries of one table into groups (connected components of the
duplicate relation), and :func:`split_by_question` splits a table by group, so the two sides
share no question at any level. :func:`similarity_profile` measures where the threshold goes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError, check_int, check_unit_interval
from banditroute.costaware.features import unit_rows

NEAR_DUPLICATE_COSINE = 0.95
_CHUNK = 1024
_NON_WORD = re.compile(r"\W+")


def normalise(text: str) -> str:
    """Lower case, every run of non-word characters (punctuation, whitespace) one space, stripped."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def _check(E: FloatArray, n: int, name: str) -> FloatArray:
    E = np.asarray(E, dtype=np.float64)
    if E.ndim != 2 or E.shape[0] != n or not np.all(np.isfinite(E)):
        raise InputError(f"{name} must be a finite ({n}, d) array, got shape {E.shape}")
    return unit_rows(E)


def nearest_similarity(E_query: FloatArray, E_ref: FloatArray) -> tuple[FloatArray, IntArray]:
    """For each row of ``E_query``: the largest cosine similarity to a row of ``E_ref``, and that row."""
    Q, R = unit_rows(np.asarray(E_query, dtype=np.float64)), unit_rows(np.asarray(E_ref, dtype=np.float64))
    best, arg = np.full(Q.shape[0], -np.inf), np.zeros(Q.shape[0], dtype=np.int64)
    for i in range(0, Q.shape[0], _CHUNK):
        S = Q[i : i + _CHUNK] @ R.T
        arg[i : i + _CHUNK] = S.argmax(axis=1)
        best[i : i + _CHUNK] = S.max(axis=1)
    return best, arg


@dataclass(frozen=True)
class Overlap:
    """Which test queries duplicate a training query, by level (boolean masks over the test rows).

    A query counts at the first level that matches: ``exact``, else ``normalised``, else ``near``.
    """

    exact: np.ndarray
    normalised: np.ndarray
    near: np.ndarray

    @property
    def any(self) -> np.ndarray:
        out: np.ndarray = self.exact | self.normalised | self.near
        return out

    def counts(self) -> dict[str, int]:
        return {
            "exact": int(self.exact.sum()),
            "normalised": int(self.normalised.sum()),
            "near": int(self.near.sum()),
            "total": int(self.any.sum()),
            "of": int(self.exact.size),
        }


def overlap(
    train_queries: Sequence[str],
    test_queries: Sequence[str],
    E_train: FloatArray | None = None,
    E_test: FloatArray | None = None,
    *,
    threshold: float = NEAR_DUPLICATE_COSINE,
) -> Overlap:
    """Test queries that occur in training (exact, normalised text, or embeddings at cosine >= ``threshold``;
    near-duplicates are looked for only when both embeddings are given)."""
    threshold = check_unit_interval(threshold, "threshold")
    train_exact = set(train_queries)
    train_norm = {normalise(q) for q in train_queries}
    exact = np.array([q in train_exact for q in test_queries], dtype=bool)
    norm = np.array([normalise(q) in train_norm for q in test_queries], dtype=bool) & ~exact
    near = np.zeros(len(test_queries), dtype=bool)
    if E_train is not None and E_test is not None:
        sim, _ = nearest_similarity(
            _check(E_test, len(test_queries), "E_test"), _check(E_train, len(train_queries), "E_train")
        )
        near = (sim >= threshold) & ~exact & ~norm
    return Overlap(exact, norm, near)


def question_groups(
    queries: Sequence[str], E: FloatArray | None = None, *, threshold: float = NEAR_DUPLICATE_COSINE
) -> IntArray:
    """A group id per query: connected components of "same normalised text or cosine >= ``threshold``"."""
    threshold = check_unit_interval(threshold, "threshold")
    n = len(queries)
    if n == 0:
        raise InputError("question_groups needs at least one query")
    first: dict[str, int] = {}
    rows, cols = [], []
    for i, q in enumerate(queries):
        j = first.setdefault(normalise(q), i)
        if j != i:
            rows.append(i)
            cols.append(j)
    if E is not None:
        U = _check(E, n, "E")
        for i in range(0, n, _CHUNK):
            r, c = np.nonzero(U[i : i + _CHUNK] @ U.T >= threshold)
            rows += (r + i).tolist()
            cols += c.tolist()
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    out: IntArray = labels.astype(np.int64)
    return out


def split_by_question(groups: IntArray, test_frac: float, seed: int) -> tuple[IntArray, IntArray]:
    """``(train rows, test rows)``: whole groups go to one side, in a seeded random order, until the test
    side holds ``test_frac`` of the rows (at least one group on each side). Both sorted."""
    groups = np.asarray(groups, dtype=np.int64)
    test_frac = check_unit_interval(test_frac, "test_frac")
    check_int(seed, "seed", minimum=0)
    ids = np.unique(groups)
    if ids.size < 2 or not 0 < test_frac < 1:
        raise InputError(
            f"a split needs 0 < test_frac < 1 and at least two question groups, got {test_frac}, {ids.size}"
        )
    sizes = np.bincount(groups)
    order = np.random.default_rng(seed).permutation(ids)
    cum = np.cumsum(sizes[order])
    n_test = int(np.clip(np.searchsorted(cum, test_frac * groups.size) + 1, 1, ids.size - 1))
    is_test = np.isin(groups, order[:n_test])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


# ---------------------------------------------------------------------------------------------- threshold
EDITS = ("case+punctuation", "prefix", "word dropped", "word swapped")


def edit(text: str, kind: str, rng: np.random.Generator) -> str:
    """A duplicate of ``text`` as another file might hold it: re-cased and re-punctuated, with a prompt
    prefix, with one word dropped, or with two neighbouring words swapped."""
    words = text.split()
    if kind == "case+punctuation":
        return _NON_WORD.sub(" ", text).strip().upper()
    if kind == "prefix":
        return f"Question: {text}\nAnswer:"
    if len(words) < 3:
        return text + " ?"
    i = int(rng.integers(0, len(words) - 1))
    if kind == "word dropped":
        return " ".join(words[:i] + words[i + 1 :])
    if kind == "word swapped":
        return " ".join([*words[:i], words[i + 1], words[i], *words[i + 2 :]])
    raise InputError(f"unknown edit {kind!r}; known: {', '.join(EDITS)}")


def similarity_profile(
    queries: Sequence[str],
    E: FloatArray,
    encode: Callable[[list[str]], np.ndarray],
    *,
    n: int = 300,
    seed: int = 0,
) -> dict[str, FloatArray]:
    """Cosine similarities that place the near-duplicate threshold, on one table's queries ``E``:

    - ``"random pairs"``: 100,000 random pairs of distinct queries (what must stay below it);
    - ``"nearest other question"``: each of ``n`` queries against its most similar query with another
      normalised text (the hardest true negatives: template siblings, same passage);
    - one entry per :data:`EDITS`: ``n`` queries against an edited copy of themselves, embedded by
      ``encode`` (true duplicates, which must land above it).
    """
    rng = np.random.default_rng(seed)
    U = _check(E, len(queries), "E")
    m = len(queries)
    a, b = rng.integers(0, m, 100_000), rng.integers(0, m, 100_000)
    keep = a != b
    pick = rng.choice(m, min(n, m), replace=False)
    S = U[pick] @ U.T
    norm = [normalise(q) for q in queries]
    same = np.array([[norm[i] == norm[j] for j in range(m)] for i in pick])
    out: dict[str, FloatArray] = {
        "random pairs": np.einsum("ij,ij->i", U[a[keep]], U[b[keep]]),
        "nearest other question": np.where(same, -np.inf, S).max(axis=1),
    }
    for kind in EDITS:
        V = unit_rows(np.asarray(encode([edit(queries[i], kind, rng) for i in pick]), dtype=np.float64))
        out[kind] = np.einsum("ij,ij->i", U[pick], V)
    return out
