"""Retrieval pipelines as routing arms: first-stage retrievers, a fusion, an optional second stage.

Single retrievers as arms rarely beat the best single retriever online, while fusing a lexical and
a dense list beats every single retriever by 5–12% nDCG@10 as a fixed choice (issue 14; BEIR
results in docs/results/embedding-routing.md). So an arm is a *pipeline*, written as

- ``bm25``, ``minilm-l6`` — one retriever (BM25 or any embedding model of ``banditroute models``);
- ``rrf(a,b,...;k=60)`` — reciprocal-rank fusion (Cormack et al. 2009): a document's score is
  ``Σ_c 1/(k + rank_c)`` over the components whose list holds it;
- ``cvx(a,b,...;w=0.4;norm=minmax)`` — convex fusion of normalised scores (Bruch et al. 2023,
  "An Analysis of Fusion Functions for Hybrid Retrieval"): ``Σ_c w_c · norm(s_c)``. ``w`` is
  the weight of the *last* component when there are two (``cvx(bm25,e5-small;w=0.4)`` is
  0.6·BM25 + 0.4·E5), or one weight per component joined by ``/`` (``w=0.2/0.3/0.5``); weights
  are non-negative and sum to 1. ``norm`` is ``minmax`` (default; each list scaled to [0, 1]),
  ``zscore`` or ``none``. A document missing from a component's list gets that list's lowest
  normalised score (for ``minmax`` 0), as if it ranked just below the list;
- ``rerank(P,model;n=100)`` — a second stage: the top ``n`` of pipeline ``P`` re-scored by the
  cosine similarity of an embedding model (its document vectors are computed at indexing time,
  so a query pays one query encoding and ``n`` inner products instead of a full dense search).

Arms of a CLI list are separated by commas outside parentheses:
``--models "bm25,minilm-l6-int8,cvx(bm25,minilm-l6-int8;w=0.5),rrf(bm25,minilm-l6-int8)"``.

Every component retrieves its top ``depth`` (100 by default) once per query (the table builder's
resumable cache, :mod:`banditroute.data.table_builder`); every pipeline is derived from those lists
(:func:`run_pipeline`), so ten fusions of two retrievers cost two searches. A pipeline's cost per
query is the measured cost of its components (each component's query encoding and search), plus the
measured time of its own fusion and re-scoring.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError

KINDS = ("single", "rrf", "cvx", "rerank")
NORMS = ("minmax", "zscore", "none")
RRF_K = 60
DEPTH = 100
POST_FEATURES = ("top_score", "top_gap", "mean_top_score")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$")


@dataclass(frozen=True)
class Pipeline:
    """A parsed pipeline (module docstring); :attr:`name` is its canonical spelling."""

    kind: str
    components: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    norm: str = "minmax"
    rrf_k: int = RRF_K
    first: Pipeline | None = None  # rerank: the first stage
    model: str = ""  # rerank: the re-scoring embedding model
    n: int = DEPTH  # rerank: candidates re-scored

    @property
    def name(self) -> str:
        if self.kind == "single":
            return self.components[0]
        if self.kind == "rrf":
            return f"rrf({','.join(self.components)};k={self.rrf_k})"
        if self.kind == "cvx":
            w = f"{self.weights[-1]:g}" if len(self.weights) == 2 else "/".join(f"{v:g}" for v in self.weights)
            norm = "" if self.norm == "minmax" else f";norm={self.norm}"
            return f"cvx({','.join(self.components)};w={w}{norm})"
        assert self.first is not None
        return f"rerank({self.first.name},{self.model};n={self.n})"

    @property
    def retrievers(self) -> tuple[str, ...]:
        """Every first-stage retriever this pipeline needs (in order, once each)."""
        names = self.first.retrievers if self.first is not None else self.components
        return tuple(dict.fromkeys(names))

    @property
    def models(self) -> tuple[str, ...]:
        """Every retriever or embedding model it needs, the re-scoring model included."""
        return tuple(dict.fromkeys((*self.retrievers, *([self.model] if self.model else []))))


def split_top(text: str) -> list[str]:
    """``text`` split at commas outside parentheses, items stripped, empty items dropped."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InputError(f"unbalanced ')' at character {i + 1} of {text!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth != 0:
        raise InputError(f"unbalanced '(' in {text!r}")
    items.append(text[start:].strip())
    return [item for item in items if item]


def parse_pipelines(text: str) -> list[Pipeline]:
    """Every arm of a comma-separated list (commas inside parentheses belong to the arm); names distinct."""
    arms = [parse_pipeline(item) for item in split_top(text)]
    if not arms:
        raise InputError("no arms given")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise InputError(f"an arm is listed twice: {names}")
    return arms


def parse_pipeline(text: str) -> Pipeline:
    """One arm (module docstring for the syntax); errors quote the arm and say what is wrong."""
    spec = text.strip()
    if "(" not in spec:
        return Pipeline("single", (_model_name(spec, spec),))
    head, _, rest = spec.partition("(")
    kind = head.strip().lower()
    if not rest.endswith(")"):
        raise InputError(f"arm {spec!r}: expected NAME(...) ending in ')'")
    body = rest[:-1]
    args_text, _, options_text = _split_options(body)
    args = split_top(args_text)
    options = _options(options_text, spec)
    if kind == "rerank":
        if len(args) != 2:
            raise InputError(f"arm {spec!r}: rerank takes a pipeline and an embedding model, rerank(P,model;n=100)")
        _allow(options, {"n"}, spec)
        n = _int_option(options.get("n", str(DEPTH)), "n", spec)
        return Pipeline("rerank", first=parse_pipeline(args[0]), model=_model_name(args[1], spec), n=n)
    if kind not in ("rrf", "cvx"):
        raise InputError(f"arm {spec!r}: unknown pipeline {kind!r}; known: rrf(...), cvx(...), rerank(...)")
    components = tuple(_model_name(a, spec) for a in args)
    if len(components) < 2 or len(set(components)) != len(components):
        raise InputError(f"arm {spec!r}: {kind} fuses at least two distinct retrievers, got {list(components)}")
    if kind == "rrf":
        _allow(options, {"k"}, spec)
        return Pipeline("rrf", components, rrf_k=_int_option(options.get("k", str(RRF_K)), "k", spec, minimum=0))
    _allow(options, {"w", "norm"}, spec)
    norm = options.get("norm", "minmax")
    if norm not in NORMS:
        raise InputError(f"arm {spec!r}: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return Pipeline("cvx", components, weights=_weights(options.get("w"), len(components), spec), norm=norm)


def _split_options(body: str) -> tuple[str, str, str]:
    """``args;options`` at the outermost level (a ';' inside a nested pipeline belongs to it)."""
    depth = 0
    for i, ch in enumerate(body):
        depth += ch == "("
        depth -= ch == ")"
        if ch == ";" and depth == 0:
            return body[:i], ";", body[i + 1 :]
    return body, "", ""


def _options(text: str, spec: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in [p.strip() for p in text.split(";") if p.strip()]:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise InputError(f"arm {spec!r}: option {item!r} is not key=value")
        if key.strip() in out:
            raise InputError(f"arm {spec!r}: option {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out


def _allow(options: Mapping[str, str], known: set[str], spec: str) -> None:
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"arm {spec!r}: unknown option(s) {unknown}; allowed: {sorted(known)}")


def _int_option(value: str, key: str, spec: str, minimum: int = 1) -> int:
    try:
        out = int(value)
    except ValueError:
        raise InputError(f"arm {spec!r}: {key} must be an integer, got {value!r}") from None
    if not minimum <= out <= 100_000:
        raise InputError(f"arm {spec!r}: {key} must be between {minimum} and 100000, got {out}")
    return out


def _weights(text: str | None, n: int, spec: str) -> tuple[float, ...]:
    if text is None:
        return tuple([1.0 / n] * n)
    try:
        values = [float(v) for v in text.split("/")]
    except ValueError:
        raise InputError(f"arm {spec!r}: w must be a number or numbers joined by '/', got {text!r}") from None
    if len(values) == 1 and n == 2:
        values = [1.0 - values[0], values[0]]
    if len(values) != n or not all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
        raise InputError(f"arm {spec!r}: w needs {n} weights in [0, 1] (or one, for two components), got {text!r}")
    if abs(sum(values) - 1.0) > 1e-9:
        raise InputError(f"arm {spec!r}: weights must sum to 1, got {values}")
    return tuple(values)


def _model_name(text: str, spec: str) -> str:
    name = text.strip()
    if not _NAME.match(name):
        raise InputError(f"arm {spec!r}: {name!r} is not a retriever or model name")
    return name


# ------------------------------------------------------------------------------------------ fusion
@dataclass(frozen=True)
class RankedLists:
    """Ranked lists for ``n`` queries: corpus positions (n, L) best first (``-1`` = no document) and scores."""

    positions: IntArray
    scores: FloatArray


def normalise(lists: RankedLists, how: str) -> tuple[FloatArray, FloatArray]:
    """Per-query normalised scores of ``lists`` and, per query, the value a missing document gets.

    ``minmax``: ``(s − min) / (max − min)`` (0 when all equal), missing → 0; ``zscore``:
    ``(s − mean) / std`` over the list, missing → the list's minimum; ``none``: raw, missing → minimum.
    """
    valid = lists.positions >= 0
    s = np.where(valid, lists.scores.astype(np.float64), np.nan)
    lo, hi = np.nanmin(s, axis=1, keepdims=True), np.nanmax(s, axis=1, keepdims=True)
    if how == "minmax":
        span = hi - lo
        out = (s - lo) / np.where(span > 0, span, 1.0)
    elif how == "zscore":
        mean, std = np.nanmean(s, axis=1, keepdims=True), np.nanstd(s, axis=1, keepdims=True)
        out = (s - mean) / np.where(std > 0, std, 1.0)
    elif how == "none":
        out = s
    else:
        raise InputError(f"norm must be one of {NORMS}, got {how!r}")
    return np.where(valid, out, 0.0), np.nanmin(np.where(valid, out, np.nan), axis=1)


def fuse(parts: Sequence[tuple[IntArray, FloatArray, FloatArray]], n_docs: int, k: int) -> tuple[IntArray, FloatArray]:
    """Top ``k`` of ``Σ_c value_c(doc)`` per query, where ``parts`` holds per component its positions
    (n, L_c), its values (n, L_c) and the value ``fill`` (n,) of a document absent from its list.

    Ties are broken by corpus position (lower first), as every retriever here does. Rows with fewer
    than ``k`` candidates are padded with position ``-1`` and score ``-inf``.
    """
    n = parts[0][0].shape[0]
    base = np.sum([fill for _, _, fill in parts], axis=0)  # (n,): a document absent from every list
    rows = np.concatenate([np.broadcast_to(np.arange(n)[:, None], p.shape).ravel() for p, _, _ in parts])
    docs = np.concatenate([p.ravel() for p, _, _ in parts])
    gain = np.concatenate([(v - fill[:, None]).ravel() for _, v, fill in parts])
    keep = docs >= 0
    keys = rows[keep].astype(np.int64) * (n_docs + 1) + docs[keep]
    unique, inverse = np.unique(keys, return_inverse=True)
    total = np.bincount(inverse, weights=gain[keep], minlength=len(unique))
    u_rows, u_docs = np.divmod(unique, n_docs + 1)
    score = total + base[u_rows]
    order = np.lexsort((u_docs, -score, u_rows))
    u_rows, u_docs, score = u_rows[order], u_docs[order], score[order]
    rank = np.arange(len(u_rows)) - np.searchsorted(u_rows, u_rows)
    take = rank < k
    positions = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf)
    positions[u_rows[take], rank[take]] = u_docs[take]
    scores[u_rows[take], rank[take]] = score[take]
    return positions, scores


def rrf_parts(lists: Sequence[RankedLists], rrf_k: int) -> list[tuple[IntArray, FloatArray, FloatArray]]:
    """Reciprocal-rank values ``1/(k + rank)`` (rank from 1) per component; an absent document gets 0."""
    out = []
    for ranked in lists:
        n, L = ranked.positions.shape
        values = np.broadcast_to(1.0 / (rrf_k + np.arange(1, L + 1)), (n, L))
        out.append((ranked.positions, np.where(ranked.positions >= 0, values, 0.0), np.zeros(n)))
    return out


def convex_parts(
    lists: Sequence[RankedLists], weights: Sequence[float], norm: str
) -> list[tuple[IntArray, FloatArray, FloatArray]]:
    """``w_c · norm(s_c)`` per component, with ``w_c ·`` its missing-document value."""
    out = []
    for ranked, w in zip(lists, weights, strict=True):
        values, fill = normalise(ranked, norm)
        out.append((ranked.positions, w * values, w * fill))
    return out


@dataclass(frozen=True)
class PipelineRun:
    """A pipeline's top ``k`` per query, its cost per query (seconds) and post-retrieval features."""

    positions: IntArray
    scores: FloatArray
    seconds: FloatArray
    post: FloatArray  # (n, len(POST_FEATURES))


Rescore = Callable[[IntArray], FloatArray]


def run_pipeline(
    pipeline: Pipeline,
    lists: Mapping[str, RankedLists],
    seconds: Mapping[str, FloatArray],
    n_docs: int,
    k: int,
    rescorers: Mapping[str, Rescore] | None = None,
) -> PipelineRun:
    """Derive ``pipeline``'s results from its components' ranked lists (``lists[name]``, each (n, depth)).

    ``seconds[name]`` is each component's measured cost per query, and ``seconds["encode:<model>"]``
    a re-scoring model's query encoding; ``rescorers[model](positions)`` returns that model's cosine
    scores of the given corpus positions (n, L) for every query. The pipeline's own fusion /
    re-scoring time is measured here and shared equally among the queries (a single retriever has
    none: its cost is exactly its run's).
    """
    start = time.perf_counter()
    positions, scores, paid = derive(pipeline, lists, n_docs, k, rescorers or {})
    own = 0.0 if pipeline.kind == "single" else (time.perf_counter() - start) / positions.shape[0]
    missing = [name for name in paid if name not in seconds]
    if missing:
        raise InputError(f"no measured cost for {missing} (pipeline {pipeline.name})")
    cost = np.sum([np.asarray(seconds[name], dtype=np.float64) for name in paid], axis=0) + own
    return PipelineRun(positions, scores, cost, post_features(scores))


def derive(
    pipeline: Pipeline, lists: Mapping[str, RankedLists], n_docs: int, k: int, rescorers: Mapping[str, Rescore]
) -> tuple[IntArray, FloatArray, list[str]]:
    """(positions, scores, the components whose cost it pays) of a pipeline, top ``k``, from its
    components' ranked lists and the re-scoring models' :func:`cosine_rescorer`."""
    unknown = [name for name in pipeline.retrievers if name not in lists]
    if unknown:
        raise InputError(f"pipeline {pipeline.name}: no results for retriever(s) {unknown}")
    if pipeline.kind == "single":
        ranked = lists[pipeline.components[0]]
        return ranked.positions[:, :k], ranked.scores[:, :k].astype(np.float64), [pipeline.components[0]]
    if pipeline.kind in ("rrf", "cvx"):
        comps = [lists[c] for c in pipeline.components]
        parts = (
            rrf_parts(comps, pipeline.rrf_k)
            if pipeline.kind == "rrf"
            else convex_parts(comps, pipeline.weights, pipeline.norm)
        )
        positions, scores = fuse(parts, n_docs, k)
        return positions, scores, list(pipeline.components)
    assert pipeline.first is not None
    if pipeline.model not in rescorers:
        raise InputError(f"pipeline {pipeline.name}: no re-scoring model {pipeline.model!r}")
    cand, _, paid = derive(pipeline.first, lists, n_docs, pipeline.n, rescorers)
    positions, scores = fuse([(cand, rescorers[pipeline.model](cand), np.zeros(cand.shape[0]))], n_docs, k)
    return positions, scores, [*paid, f"encode:{pipeline.model}"]


def post_features(scores: FloatArray) -> FloatArray:
    """Per query, what a system knows once it has the list: top score, top − second, mean of the list.

    Padding (``-inf``) is ignored; a list of one has gap 0.
    """
    finite = np.isfinite(scores)
    s = np.where(finite, scores, 0.0)
    top = s[:, 0]
    second = np.where(finite[:, 1], s[:, 1], top) if s.shape[1] > 1 else top
    mean = s.sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    return np.column_stack([top, top - second, mean])


def cosine_rescorer(queries: FloatArray, documents: FloatArray) -> Rescore:
    """Scores of candidate corpus positions (n, L) for each of ``n`` queries: the inner product of the
    query's and the document's unit vectors (``-1`` positions score 0)."""
    q, docs = np.asarray(queries, dtype=np.float64), np.asarray(documents, dtype=np.float64)

    def rescore(positions: IntArray) -> FloatArray:
        out: FloatArray = np.einsum("nd,nld->nl", q, docs[np.maximum(positions, 0)])
        return np.where(positions >= 0, out, 0.0)

    return rescore


class PipelineRetriever:
    """A pipeline as a :class:`~banditroute.data.interfaces.Retriever` (the service's retrieval mode).

    ``components`` maps every name the pipeline uses to a retriever that its owner indexes on the same
    corpus (the service indexes each declared arm once, so a fusion shares its components with the arms
    that expose them alone); a re-scoring model must be a dense retriever (it has an ``embedder``).
    :meth:`index` only keeps the corpus size and the re-scoring models' document vectors (through their
    embedding cache); :meth:`search` searches each component to ``depth`` and derives the pipeline's list.
    """

    def __init__(self, pipeline: Pipeline, components: Mapping[str, Any], *, depth: int = DEPTH) -> None:
        missing = [m for m in pipeline.models if m not in components]
        if missing:
            raise InputError(f"pipeline {pipeline.name}: no retriever named {missing}")
        self.pipeline, self.name, self.depth = pipeline, pipeline.name, depth
        self.components = {m: components[m] for m in pipeline.models}
        self.embedders = {}
        for stage in rescoring_stages(pipeline):
            embedder = getattr(self.components[stage.model], "embedder", None)
            if embedder is None:
                raise InputError(f"pipeline {pipeline.name}: re-scoring model {stage.model!r} is not a dense retriever")
            self.embedders[stage.model] = embedder
        self.n_docs = 0
        self._doc_vectors: dict[str, FloatArray] = {}

    def index(self, documents: Sequence[str]) -> None:
        self._doc_vectors = {m: np.asarray(e.encode_documents(documents)) for m, e in self.embedders.items()}
        self.n_docs = len(documents)

    def search(self, queries: Sequence[str], k: int) -> tuple[IntArray, NDArray[np.float32]]:
        if not self.n_docs:
            raise InputError(f"{self.name}: call index(documents) before search")
        if not 1 <= k <= self.n_docs:
            raise InputError(f"k must be between 1 and the number of indexed documents ({self.n_docs}), got {k}")
        depth = min(max(k, self.depth), self.n_docs)
        lists = {
            name: RankedLists(*map(np.asarray, self.components[name].search(queries, depth)))
            for name in self.pipeline.retrievers
        }
        rescorers = {
            m: cosine_rescorer(self.embedders[m].encode_queries(queries), self._doc_vectors[m]) for m in self.embedders
        }
        positions, scores, _ = derive(self.pipeline, lists, self.n_docs, k, rescorers)
        return positions, scores.astype(np.float32)


def rescoring_stages(pipeline: Pipeline | None) -> list[Pipeline]:
    """Every re-scoring stage of ``pipeline`` (nested first stages included)."""
    out = []
    while pipeline is not None:
        if pipeline.kind == "rerank":
            out.append(pipeline)
        pipeline = pipeline.first
    return out
