"""From a retrieval dataset and several retrievers to a reward table (hpg.md §4–5), and how much
routing could gain on it.

:func:`build_reward_table` indexes each corpus with every retriever (per domain for a mixed
stream: each query is retrieved only in its own corpus), retrieves the top ``k`` per query and
scores the list (:mod:`banditroute.data.relevance`), giving

- **rewards** ``n × M`` in ``[0, 1]``: the metric of every model on every query,
- **costs** ``n × M``: measured seconds per query: encoding the query plus searching the index.
  Search is timed over chunks of :data:`CHUNK` queries (shared equally within a chunk). A dense
  arm whose embedder records encode times in the embedding cache (``seconds_per_text``) has its
  queries encoded first and is charged the cache's measured mean encode time per query, so a
  re-run served from the cache still reports the real encode cost; other arms' encoding happens
  inside the timed search,
- **contexts** ``n × d``: the router's view of the query (see :func:`query_features`): the
  query embedding of a reference encoder (unit norm), optionally followed by cheap standardised
  features,
- per-row **groups** (SQuAD article, or the domain of a mixed stream) for adversarial
  topic-block orders, and the query ids as **row_ids**,
- provenance **metadata**: dataset and domains, models, metric, k, context, package versions.

Resumable: each (retriever, domain) result — ranked lists, scores, timings — is saved under
``cache_dir`` as soon as it is done, keyed by a hash of the retriever (:func:`fingerprint`), corpus
and queries; an
interrupted build continues from there, and a finished one is rebuilt for free (e.g. with another
metric, or a smaller ``k``). Embeddings themselves are cached by the embedders' own cache.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.core.scaling import column_moments
from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError, check_int
from banditroute.data.datasets.mixed import MixedDataset, parts_of
from banditroute.data.interfaces import Embedder, RetrievalDataset, Retriever
from banditroute.data.relevance import METRICS, Judgements, score
from banditroute.envs.reward_table import RewardTable

CHUNK = 64  # queries per timed search call
QUESTION_WORDS = ("what", "who", "when", "where", "which", "why", "how")
FEATURES = ("length", "bm25", "lexical", "qword", "domain")
_TOKEN = re.compile(r"\w+")


# ---------------------------------------------------------------------------------------- retrieval
@dataclass(frozen=True)
class RetrievalRun:
    """One retriever's results on one corpus: top-k positions, scores, seconds per query, index time."""

    positions: IntArray
    scores: FloatArray
    seconds: FloatArray
    index_seconds: float

    def top(self, k: int) -> RetrievalRun:
        return RetrievalRun(self.positions[:, :k], self.scores[:, :k], self.seconds, self.index_seconds)


def _digest(*parts: Sequence[str] | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        for text in [part] if isinstance(part, str) else part:
            h.update(text.encode("utf-8"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()[:20]


def fingerprint(retriever: Retriever) -> list[str]:
    """What identifies a retriever's results: its class and name, its embedder's ``version`` (dense
    arms: package, truncation...), and its public scalar settings (e.g. BM25's ``k1``, ``b``)."""
    embedder = getattr(retriever, "embedder", None)
    settings = sorted(
        f"{key}={value!r}"
        for key, value in vars(retriever).items()
        if not key.startswith("_") and key != "n_docs" and isinstance(value, str | int | float | bool)
    )
    return [type(retriever).__qualname__, retriever.name, str(getattr(embedder, "version", "")), *settings]


def _cache_file(cache_dir: Path, retriever: Retriever, part: RetrievalDataset) -> Path:
    key = _digest(fingerprint(retriever), part.doc_ids, part.documents, part.queries)
    return cache_dir / "retrieval" / f"{part.name}-{_safe(retriever.name)}-{key}.npz"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _load_run(file: Path, n: int, k: int) -> RetrievalRun | None:
    """A cached run with at least ``k`` results for ``n`` queries, or ``None`` (missing, short or unreadable)."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as npz:
            run = RetrievalRun(npz["positions"], npz["scores"], npz["seconds"], float(npz["index_seconds"]))
    except (OSError, ValueError, KeyError, EOFError):
        return None  # a torn or foreign file: recompute and overwrite
    if run.positions.shape[0] != n or run.positions.shape[1] < k:
        return None
    return run.top(k)


def _save_run(file: Path, run: RetrievalRun) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                positions=run.positions,
                scores=run.scores,
                seconds=run.seconds,
                index_seconds=np.float64(run.index_seconds),
            )
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def retrieve(
    retriever: Retriever, part: RetrievalDataset, k: int, advance: Callable[[int], None] | None = None
) -> RetrievalRun:
    """Index ``part``'s corpus, then search its queries in timed chunks of :data:`CHUNK` (costs: module notes)."""
    n, N = len(part.queries), len(part.documents)
    start = time.perf_counter()
    retriever.index(part.documents)
    index_seconds = time.perf_counter() - start
    encode_seconds = _encode_queries_first(retriever, part.queries)
    positions = np.empty((n, k), dtype=np.int64)
    scores = np.empty((n, k), dtype=np.float64)
    seconds = np.empty(n)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        start = time.perf_counter()
        pos, sc = retriever.search(part.queries[lo:hi], k)
        seconds[lo:hi] = (time.perf_counter() - start) / (hi - lo) + encode_seconds
        pos, sc = np.asarray(pos), np.asarray(sc)
        if pos.shape != (hi - lo, k) or sc.shape != pos.shape or pos.dtype.kind not in "iu":
            raise InputError(
                f"retriever {retriever.name!r} returned positions {pos.dtype} {pos.shape} and scores {sc.shape}, "
                f"expected integer ({hi - lo}, {k}) arrays"
            )
        if np.any(pos < -1) or np.any(pos >= N):
            raise InputError(f"retriever {retriever.name!r} returned positions outside the corpus [0, {N})")
        positions[lo:hi], scores[lo:hi] = pos, sc
        if advance is not None:
            advance(hi - lo)
    return RetrievalRun(positions, scores, seconds, index_seconds)


def _encode_queries_first(retriever: Retriever, queries: Sequence[str]) -> float:
    """For a dense arm over a cached embedder: encode (or look up) its queries now and return the
    cache's measured encode seconds per query; 0 for any other arm (encoding is inside ``search``)."""
    embedder = getattr(retriever, "embedder", None)
    measured = getattr(embedder, "seconds_per_text", None)
    if embedder is None or not callable(measured):
        return 0.0
    embedder.encode_queries(queries)
    per_text = measured("query")
    return 0.0 if per_text is None else float(per_text)


def cached_retrieve(
    retriever: Retriever,
    part: RetrievalDataset,
    k: int,
    cache_dir: Path | None,
    advance: Callable[[int], None] | None = None,
) -> tuple[RetrievalRun, bool]:
    """:func:`retrieve`, reusing (and saving) the on-disk result when ``cache_dir`` is given.

    Returns the run and whether it was computed now (so ``retriever`` is indexed on ``part``).
    """
    file = None if cache_dir is None else _cache_file(cache_dir, retriever, part)
    if file is not None and (run := _load_run(file, len(part.queries), k)) is not None:
        if advance is not None:
            advance(len(part.queries))
        return run, False
    run = retrieve(retriever, part, k, advance)
    if file is not None:
        _save_run(file, run)
    return run, True


# ---------------------------------------------------------------------------------------- context
def query_features(
    queries: Sequence[str],
    names: Sequence[str],
    *,
    bm25_scores: FloatArray | None = None,
    lexical_stats: tuple[list[str], FloatArray] | None = None,
    domains: Sequence[str] = (),
) -> tuple[FloatArray, list[str]]:
    """Cheap per-query features, raw (unstandardised), and their column names.

    - ``length``: log(1 + number of word tokens).
    - ``bm25``: the BM25 top-1 score and the top-1 − top-2 margin (``bm25_scores`` (n, ≥2), best first):
      how strongly the query matches some document lexically.
    - ``lexical``: named per-query statistics of a lexical retriever (``lexical_stats`` = names,
      values (n, c)), e.g. :meth:`BM25Retriever.query_stats`'s term count, share of terms found in
      the corpus, mean and max idf.
    - ``qword``: one-hot of the first question word (what, who, when, where, which, why, how), or ``other``.
    - ``domain``: one-hot of the query's domain (mixed streams; ``domains`` one label per query).
    """
    unknown = [f for f in names if f not in FEATURES]
    if unknown:
        raise InputError(f"unknown context features {unknown}; known: {', '.join(FEATURES)}")
    n = len(queries)
    columns: list[FloatArray] = []
    labels: list[str] = []
    tokens = [_TOKEN.findall(q.lower()) for q in queries]
    for name in names:
        if name == "length":
            columns.append(np.log1p([len(t) for t in tokens])[:, None])
            labels.append("log_tokens")
        elif name == "bm25":
            if bm25_scores is None or bm25_scores.shape[0] != n or bm25_scores.shape[1] < 2:
                raise InputError("the bm25 feature needs a lexical retriever's top-2 scores per query")
            top = np.asarray(bm25_scores[:, :2], dtype=np.float64)
            columns.append(np.column_stack([top[:, 0], top[:, 0] - top[:, 1]]))
            labels += ["bm25_top", "bm25_margin"]
        elif name == "lexical":
            if lexical_stats is None or lexical_stats[1].shape[0] != n:
                raise InputError("the lexical feature needs a lexical retriever's query_stats per query")
            columns.append(np.asarray(lexical_stats[1], dtype=np.float64))
            labels += list(lexical_stats[0])
        elif name == "qword":
            first = [next((w for w in t if w in QUESTION_WORDS), "other") for t in tokens]
            vocab = [*QUESTION_WORDS, "other"]
            columns.append(np.array([[w == v for v in vocab] for w in first], dtype=np.float64).reshape(n, -1))
            labels += [f"qword_{v}" for v in vocab]
        else:
            if len(domains) != n:
                raise InputError("the domain feature needs one domain label per query")
            vocab = sorted(set(domains))
            columns.append(np.array([[d == v for v in vocab] for d in domains], dtype=np.float64).reshape(n, -1))
            labels += [f"domain_{v}" for v in vocab]
    return (np.hstack(columns) if columns else np.zeros((n, 0))), labels


def standardise(features: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, float]:
    """Z-score each column (constant columns become 0), then scale the block by 1/sqrt(columns).

    The scale gives the feature block an expected squared norm of 1, the same as a unit-norm
    embedding, so neither part of a concatenated context drowns the other. Returns
    ``(standardised, mean, std, scale)``; a new query ``f`` maps to ``(f − mean) / std · scale``.
    """
    mean, std = column_moments(features)
    scale = 1.0 / np.sqrt(max(features.shape[1], 1))
    return (features - mean) / std * scale, mean, std, scale


# ---------------------------------------------------------------------------------------- the build
def build_reward_table(
    dataset: RetrievalDataset | MixedDataset,
    retrievers: Sequence[Retriever],
    metric: str = "ndcg",
    k: int = 10,
    *,
    context: Embedder | None = None,
    features: Sequence[str] = (),
    lexical: Retriever | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> RewardTable:
    """The reward table of ``retrievers`` (the arms, in order) on ``dataset``.

    Args:
        dataset: one dataset, or a :class:`MixedDataset` (each query retrieved in its own corpus).
        retrievers: the arms; distinct names.
        metric: a key of :data:`banditroute.data.relevance.METRICS` (``ndcg``, ``rr``, ``hit``, ``recall``).
        k: list length scored.
        context: reference encoder whose query embedding is the router context; ``None`` for none.
        features: cheap query features appended to the context (:func:`query_features`), standardised
            (:func:`standardise`). With neither ``context`` nor ``features`` the context is a constant 1.
        lexical: the retriever whose scores give the ``bm25`` feature (and, through its
            ``query_stats(queries) -> (names, values)`` method, the ``lexical`` feature); default:
            the arm named ``bm25``.
        cache_dir: folder for resumable per-(retriever, domain) results; ``None`` keeps nothing.
        progress: show progress on stderr (bars on a terminal, else plain lines; see :func:`_progress`).
        extra_metadata: merged into the table's provenance metadata.
    """
    k = check_int(k, "k")
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if not retrievers:
        raise InputError("give at least one retriever (arm)")
    names = [r.name for r in retrievers]
    if len(set(names)) != len(names):
        raise InputError(f"retriever names must be distinct, got {names}")
    features = list(features)
    if {"bm25", "lexical"} & set(features) and lexical is None:
        lexical = next((r for r in retrievers if r.name == "bm25"), None)
        if lexical is None:
            raise InputError("the bm25/lexical features need a BM25 arm (named 'bm25') or lexical=<a BM25 retriever>")
    if "lexical" in features and not callable(getattr(lexical, "query_stats", None)):
        raise InputError(
            f"the lexical feature needs a retriever with query_stats(); {getattr(lexical, 'name', '')!r} has none"
        )
    parts = parts_of(dataset)
    cache = None if cache_dir is None else Path(cache_dir)
    mixed = isinstance(dataset, MixedDataset)

    queries = [q for p in parts for q in p.queries]
    n = len(queries)
    rewards = np.empty((n, len(retrievers)))
    costs = np.empty((n, len(retrievers)))
    index_seconds: dict[str, dict[str, float]] = {name: {} for name in names}
    lexical_scores: list[FloatArray] = []
    stat_names: list[str] = []
    stat_values: list[FloatArray] = []
    searchers = list(retrievers) + ([lexical] if lexical is not None and lexical not in retrievers else [])
    with _progress(progress) as bar:
        offset = 0
        for part in parts:
            judgements = Judgements.from_qrels(part.query_ids, part.doc_ids, part.qrels)
            rows = slice(offset, offset + len(part.queries))
            for retriever in searchers:
                advance = bar(f"{retriever.name} on {part.name}", len(part.queries))
                run, fresh = cached_retrieve(retriever, part, max(k, 2) if retriever is lexical else k, cache, advance)
                if retriever is lexical:
                    lexical_scores.append(run.scores)
                    if "lexical" in features:
                        if not fresh:  # served from the cache: the retriever has not indexed this corpus
                            retriever.index(part.documents)
                        stat_names, values = retriever.query_stats(part.queries)  # type: ignore[attr-defined]
                        keep = [j for j, s in enumerate(stat_names) if s not in ("bm25_top", "bm25_gap")]
                        stat_names = [stat_names[j] for j in keep]
                        stat_values.append(np.asarray(values, dtype=np.float64)[:, keep])
                if retriever in retrievers:
                    m = names.index(retriever.name)
                    rewards[rows, m] = score(metric, run.positions[:, :k], judgements)
                    costs[rows, m] = run.seconds
                    index_seconds[retriever.name][part.name] = run.index_seconds
            offset += len(part.queries)

        groups = _groups(dataset)
        row_ids = dataset.query_ids
        domains = [p.name for p in parts for _ in p.queries]
        raw, feature_names = query_features(
            queries,
            features,
            bm25_scores=np.vstack(lexical_scores) if lexical_scores else None,
            lexical_stats=(stat_names, np.vstack(stat_values)) if stat_values else None,
            domains=domains,
        )
        blocks = []
        if context is not None:
            advance = bar(f"context {context.name}", n)
            blocks.append(np.asarray(context.encode_queries(queries), dtype=np.float64))
            advance(n)
        scaled, mean, std, scale = standardise(raw)
        if raw.shape[1]:
            blocks.append(scaled)
        contexts = np.hstack(blocks) if blocks else np.ones((n, 1))

    meta = {
        "kind": "retrieval-routing",
        "dataset": dataset.name,
        "domains": {p.name: {"queries": len(p.queries), "documents": len(p.documents), **p.meta} for p in parts},
        "mixed": mixed,
        "metric": metric,
        "k": k,
        "arms": names,
        "context": {
            "encoder": None if context is None else context.name,
            "encoder_dim": None if context is None else int(getattr(context, "dim", 0)),
            "features": feature_names,
            "feature_mean": mean.tolist(),
            "feature_std": std.tolist(),
            "feature_scale": scale,
            "lexical": None if lexical is None else lexical.name,
        },
        "costs": "seconds per query: query encoding (the embedding cache's measured mean for cached dense arms) "
        f"+ wall time of Retriever.search over chunks of {CHUNK} queries / chunk size",
        "index_seconds": index_seconds,
        "groups": "domain" if mixed else ("topic" if groups is not None else None),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra_metadata or {}),
    }
    return RewardTable(
        contexts=contexts,
        rewards=rewards,
        costs=costs,
        arm_names=tuple(names),
        metadata=meta,
        reward_range=(0.0, 1.0),
        groups=groups,
        row_ids=tuple(row_ids),
    )


def _groups(dataset: RetrievalDataset | MixedDataset) -> tuple[str, ...] | None:
    """Domains for a mixed stream; the dataset's topics (e.g. SQuAD articles) otherwise, when it has them."""
    if isinstance(dataset, MixedDataset):
        return tuple(dataset.domains)
    return None if dataset.query_groups is None else tuple(dataset.query_groups)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for package in ("banditroute", "sentence-transformers", "onnxruntime", "bm25s", "torch"):
        with suppress(importlib_metadata.PackageNotFoundError):
            out[package] = importlib_metadata.version(package)
    return out


@contextmanager
def _progress(show: bool, every: float = 10.0) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """``bar(description, total)`` -> ``advance(steps)``, on stderr: rich progress bars on a terminal.

    Redirected to a file or a pipe, bars redrawn in place show only as blank lines, so there each step
    prints plain lines instead -- ``bm25 on scifact: 640/1109 queries (12.3 s)`` -- when it starts, at
    most every ``every`` seconds while it advances, and when it ends. ``show`` false: no-ops.
    """
    if not show:
        yield lambda description, total: lambda steps: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:

        def lines(description: str, total: int) -> Callable[[int], None]:
            start = last = time.perf_counter()
            done = 0
            console.out(f"{description}: 0/{total} queries", highlight=False)

            def advance(steps: int) -> None:
                nonlocal done, last
                done += steps
                now = time.perf_counter()
                if done >= total or now - last >= every:
                    last = now
                    console.out(f"{description}: {done}/{total} queries ({now - start:.1f} s)", highlight=False)

            return advance

        yield lines
        return

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:

        def bar(description: str, total: int) -> Callable[[int], None]:
            task = bars.add_task(description, total=total)
            return lambda steps: bars.advance(task, steps)

        yield bar


# ---------------------------------------------------------------------------------------- headroom
