"""From a retrieval dataset and several retrievers to a reward table (hpg.md §4–5), and how much
routing could gain on it.

:func:`build_reward_table` indexes each corpus with every retriever (per domain for a mixed
stream: each query is retrieved only in its own corpus), retrieves the top ``k`` per query and
scores the list (:mod:`banditroute.data.relevance`), giving

- **rewards** ``n × M`` in ``[0, 1]``: the metric of every model on every query,
- **costs** ``n × M``: measured seconds per query: encoding the query plus searching the index.
  Search is timed over chunks of :data:`CHUNK` queries (shared equally within a chunk). A dense
  arm over a cached embedder has its queries encoded (or read from the cache) first and is charged
  the encode time per query measured on :data:`ENCODE_SAMPLE` of *these* queries encoded afresh
  by the model itself (a cache-wide mean would mix in other collections' texts, e.g. long LLM
  prompts), so a run served from the cache still costs the real encoding; other arms' encoding
  happens inside the timed search. Each run's costs are saved with its results,
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
from banditroute.data.pipelines import (
    DEPTH,
    POST_FEATURES,
    Pipeline,
    RankedLists,
    Rescore,
    cosine_rescorer,
    parse_pipeline,
    rescoring_stages,
    run_pipeline,
)
from banditroute.data.relevance import METRICS, Judgements, score
from banditroute.envs.reward_table import RewardTable

CHUNK = 64  # queries per timed search call
ENCODE_SAMPLE = 128  # queries encoded afresh to measure a dense arm's encode cost
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
    _, encode_seconds = _encode_queries_first(retriever, part.queries)
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


def _encode_queries_first(retriever: Retriever, queries: Sequence[str]) -> tuple[FloatArray | None, float]:
    """For a dense arm over a cached embedder: encode (or look up) its queries now and return their
    vectors and the encode seconds per query measured on an evenly spaced sample of them; ``(None, 0)``
    for any other arm (its encoding happens inside ``search``)."""
    embedder = getattr(retriever, "embedder", None)
    timer = getattr(embedder, "time_queries", None)
    if embedder is None or not callable(timer):
        return None, 0.0
    vectors = np.asarray(embedder.encode_queries(queries), dtype=np.float64)
    step = max(1, len(queries) // ENCODE_SAMPLE)
    return vectors, float(timer(list(queries[::step][:ENCODE_SAMPLE])))


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
    pipelines: Sequence[Pipeline] | None = None,
    depth: int = DEPTH,
    context: Embedder | None = None,
    features: Sequence[str] = (),
    lexical: Retriever | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> RewardTable:
    """The reward table of ``pipelines`` (the arms, in order; default: each retriever alone) on ``dataset``.

    Args:
        dataset: one dataset, or a :class:`MixedDataset` (each query retrieved in its own corpus).
        retrievers: the components, distinct names: every retriever and re-scoring model the
            pipelines name (:mod:`banditroute.data.pipelines`); re-scoring models are dense retrievers.
        metric: a key of :data:`banditroute.data.relevance.METRICS` (``ndcg``, ``rr``, ``hit``, ``recall``).
        k: list length scored.
        pipelines: the arms; ``None``: one arm per retriever.
        depth: results per component from which fusions are derived (top ``depth``, capped at the
            corpus size); single-retriever arms only need ``k``.
        context: reference encoder whose query embedding is the router context; ``None`` for none.
        features: cheap query features appended to the context (:func:`query_features`), standardised
            (:func:`standardise`). With neither ``context`` nor ``features`` the context is a constant 1.
        lexical: the retriever whose scores give the ``bm25`` feature (and, through its
            ``query_stats(queries) -> (names, values)`` method, the ``lexical`` feature); default:
            the retriever named ``bm25``.
        cache_dir: folder for resumable per-(retriever, domain) results; ``None`` keeps nothing.
        progress: show progress on stderr (bars on a terminal, else plain lines; see :func:`_progress`).
        extra_metadata: merged into the table's provenance metadata.

    Besides rewards and costs the table holds each arm's post-retrieval features
    (:data:`~banditroute.data.pipelines.POST_FEATURES` of its final list, z-scored per arm over the
    table) for cascades that decide whether to escalate after a cheap first stage.
    """
    k = check_int(k, "k")
    depth = check_int(depth, "depth")
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    if not retrievers:
        raise InputError("give at least one retriever (arm)")
    by_name = {r.name: r for r in retrievers}
    if len(by_name) != len(retrievers):
        raise InputError(f"retriever names must be distinct, got {[r.name for r in retrievers]}")
    arms = list(pipelines) if pipelines is not None else [parse_pipeline(r.name) for r in retrievers]
    names = [a.name for a in arms]
    if not arms or len(set(names)) != len(names):
        raise InputError(f"give at least one arm, with distinct names; got {names}")
    missing = sorted({m for a in arms for m in a.models} - set(by_name))
    if missing:
        raise InputError(f"the arms need retrievers {missing}, which were not given")
    first_stage = [by_name[n] for n in dict.fromkeys(n for a in arms for n in a.retrievers)]
    rescoring = {stage.model: by_name[stage.model] for arm in arms for stage in rescoring_stages(arm)}
    deep = any(a.kind != "single" for a in arms)
    features = list(features)
    if {"bm25", "lexical"} & set(features) and lexical is None:
        lexical = by_name.get("bm25")
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
    rewards = np.empty((n, len(arms)))
    costs = np.empty((n, len(arms)))
    post = np.empty((n, len(arms), len(POST_FEATURES)))
    index_seconds: dict[str, dict[str, float]] = {r.name: {} for r in first_stage}
    lexical_scores: list[FloatArray] = []
    stat_names: list[str] = []
    stat_values: list[FloatArray] = []
    searchers = first_stage + ([lexical] if lexical is not None and lexical not in first_stage else [])
    with _progress(progress) as bar:
        offset = 0
        for part in parts:
            judgements = Judgements.from_qrels(part.query_ids, part.doc_ids, part.qrels)
            rows = slice(offset, offset + len(part.queries))
            n_docs = len(part.documents)
            want = min(max(k, depth) if deep else k, n_docs)
            lists: dict[str, RankedLists] = {}
            seconds: dict[str, FloatArray] = {}
            for retriever in searchers:
                advance = bar(f"{retriever.name} on {part.name}", len(part.queries))
                top = max(want, 2) if retriever is lexical else want
                run, fresh = cached_retrieve(retriever, part, min(top, n_docs), cache, advance)
                if retriever is lexical:
                    lexical_scores.append(run.scores)
                    if "lexical" in features:
                        if not fresh:  # served from the cache: the retriever has not indexed this corpus
                            retriever.index(part.documents)
                        stat_names, values = retriever.query_stats(part.queries)  # type: ignore[attr-defined]
                        keep = [j for j, s in enumerate(stat_names) if s not in ("bm25_top", "bm25_gap")]
                        stat_names = [stat_names[j] for j in keep]
                        stat_values.append(np.asarray(values, dtype=np.float64)[:, keep])
                if retriever in first_stage:
                    lists[retriever.name] = RankedLists(run.positions[:, :want], run.scores[:, :want])
                    seconds[retriever.name] = run.seconds
                    index_seconds[retriever.name][part.name] = run.index_seconds
            rescorers = {}
            for model, retriever in rescoring.items():
                rescorers[model], seconds[f"encode:{model}"] = _rescorer(retriever, part)
            for m, arm in enumerate(arms):
                result = run_pipeline(arm, lists, seconds, n_docs, k, rescorers)
                rewards[rows, m] = score(metric, result.positions, judgements)
                costs[rows, m] = result.seconds
                post[rows, m] = result.post
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
    post_mean, post_std = column_moments(post.reshape(n, -1))
    post = ((post.reshape(n, -1) - post_mean) / post_std).reshape(post.shape)

    meta = {
        "kind": "retrieval-routing",
        "dataset": dataset.name,
        "domains": {p.name: {"queries": len(p.queries), "documents": len(p.documents), **p.meta} for p in parts},
        "mixed": mixed,
        "metric": metric,
        "k": k,
        "arms": names,
        "components": [r.name for r in first_stage] + [m for m in rescoring if m not in index_seconds],
        "depth": depth if deep else k,
        "post_features": list(POST_FEATURES),
        "context": {
            "encoder": None if context is None else context.name,
            "encoder_dim": None if context is None else int(getattr(context, "dim", 0)),
            "features": feature_names,
            "feature_mean": mean.tolist(),
            "feature_std": std.tolist(),
            "feature_scale": scale,
            "lexical": None if lexical is None else lexical.name,
        },
        "costs": "seconds per query, summed over a pipeline's components: query encoding (for cached dense "
        f"retrievers measured on {ENCODE_SAMPLE} of the table's queries encoded afresh) + wall time of "
        f"Retriever.search over chunks of {CHUNK} queries / chunk size; plus the pipeline's own measured fusion / "
        "re-scoring time",
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
        post_features=post,
    )


def _rescorer(retriever: Retriever, part: RetrievalDataset) -> tuple[Rescore, FloatArray]:
    """Cosine scores of candidate positions by ``retriever``'s embedder, and its query-encoding seconds per query
    (measured as for a dense arm, see the module notes)."""
    embedder = getattr(retriever, "embedder", None)
    if embedder is None:
        raise InputError(f"re-scoring needs an embedding model; {retriever.name!r} is not one")
    vectors, per_text = _encode_queries_first(retriever, part.queries)
    queries = embedder.encode_queries(part.queries) if vectors is None else vectors  # an embedder without a cache
    rescore = cosine_rescorer(queries, embedder.encode_documents(part.documents))
    return rescore, np.full(len(part.queries), per_text)


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
