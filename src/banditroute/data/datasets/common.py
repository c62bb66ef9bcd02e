"""What every dataset loader shares: finding files, reading lines and JSON with errors that point
at the file and line, and building a :class:`~banditroute.data.interfaces.RetrievalDataset`
whose judgements only name known queries and documents.

Loaders read a published format from a local path and never download; when a file is missing
the error says where the dataset comes from and which layout is expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.core.validation import InputError
from banditroute.data.interfaces import RetrievalDataset


@dataclass(frozen=True)
class Source:
    """Where a dataset is published and what a loader expects to find (shown when files are missing).

    ``url`` may hold a ``{name}`` placeholder (one archive per dataset, as BEIR publishes them):
    :meth:`download` fills it with the dataset's name, or without a name points at the folder of
    archives with ``example`` as an example, so no message ever shows a literal placeholder.
    """

    url: str
    layout: str
    example: str = ""

    def download(self, name: str | None = None) -> str:
        """The download location of dataset ``name`` (or of this source's datasets when no name is known)."""
        if "{name}" not in self.url:
            return self.url
        if name:
            return self.url.format(name=name)
        folder = self.url.partition("{name}")[0]
        return f"{folder} (one .zip per dataset, e.g. {self.url.format(name=self.example)})"

    def missing(self, what: Path | str, name: str | None = None) -> InputError:
        return InputError(f"{what} not found; expected {self.layout}. Download it from {self.download(name)}")


def find_file(path: str | Path, name: str, source: Source) -> Path:
    """``path`` itself when it is a file, else ``path/name``; a clear error when neither exists."""
    path = Path(path)
    if path.is_file():
        return path
    candidate = path / name
    if not candidate.is_file():
        raise source.missing(candidate if path.is_dir() else path)
    return candidate


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, line without its end-of-line)`` for a UTF-8 text file (CRLF tolerated)."""
    try:
        with path.open(encoding="utf-8", newline=None) as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_json(path: Path) -> Any:
    """A whole JSON document; a syntax error names the file, line and column."""
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` per non-blank line; each must be a JSON object with string fields ``required``."""
    for lineno, line in numbered_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: malformed JSON line ({exc.msg}, column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        for key in required:
            if not isinstance(obj.get(key), str):
                raise InputError(f"{path}:{lineno}: field {key!r} missing or not a string")
        yield lineno, obj


def add_unique(seen: dict[str, str], key: str, value: str, where: str) -> None:
    """``seen[key] = value``, refusing a second record with the same id."""
    if key in seen:
        raise InputError(f"{where}: duplicate id {key!r}")
    seen[key] = value


def build_dataset(
    name: str,
    queries: dict[str, str],
    documents: dict[str, str],
    qrels: dict[str, dict[str, float]],
    *,
    groups: dict[str, str] | None = None,
    meta: dict[str, str] | None = None,
) -> RetrievalDataset:
    """A dataset of the queries that have at least one relevant document (gain > 0), in ``queries`` order.

    ``qrels`` may hold zero or negative gains (judged not relevant); they are dropped, and so are the
    queries left without a relevant document: ``meta`` records how many of ``queries`` were read
    (``queries_read``) and dropped (``queries_dropped``), so a caller can say so. Every id in
    ``qrels`` must already have been checked against ``queries`` and ``documents`` by the loader
    (which knows the file and line to blame); this re-checks and refuses an empty result.
    """
    positive = {q: {d: float(g) for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
    positive = {q: docs for q, docs in positive.items() if docs}
    unknown_q = next((q for q in positive if q not in queries), None)
    unknown_d = next((d for docs in positive.values() for d in docs if d not in documents), None)
    if unknown_q is not None or unknown_d is not None:
        raise InputError(f"{name}: judgements name unknown query {unknown_q!r} or document {unknown_d!r}")
    query_ids = [q for q in queries if q in positive]
    if not query_ids:
        raise InputError(f"{name}: no query has a relevant document")
    return RetrievalDataset(
        name=name,
        query_ids=query_ids,
        queries=[queries[q] for q in query_ids],
        doc_ids=list(documents),
        documents=list(documents.values()),
        qrels={q: positive[q] for q in query_ids},
        meta={**(meta or {}), "queries_read": str(len(queries)), "queries_dropped": str(len(queries) - len(query_ids))},
        query_groups=None if groups is None else [groups[q] for q in query_ids],
    )


def describe(dataset: RetrievalDataset) -> str:
    """One line on what a loader used: queries and documents kept, split(s), queries dropped, sample.

    E.g. ``scifact: 300 queries, 5,183 documents; split test; dropped 809 of 1,109 queries (no relevant
    document in that split)``. Reads the ``meta`` keys the loaders and :func:`build_dataset` set.
    """
    meta = dataset.meta
    words = [f"{dataset.name}: {len(dataset.query_ids):,} queries, {len(dataset.documents):,} documents"]
    where = ""
    if "splits" in meta:
        chosen = meta["splits"].split(",")
        words.append(f"split{'s' if len(chosen) > 1 else ''} {', '.join(chosen)}")
        where = " in that split" if len(chosen) == 1 else " in those splits"
    if "splits_ignored" in meta:
        words.append(f"has no splits, so split {meta['splits_ignored']} does not apply: used whole")
    dropped, read = int(meta.get("queries_dropped", 0)), meta.get("queries_read")
    if dropped and read is not None:
        words.append(f"dropped {dropped:,} of {int(read):,} queries (no relevant document{where})")
    if "sampled" in meta:
        words.append(f"sampled {meta['sampled']}")
    return "; ".join(words)


def sample_queries(dataset: RetrievalDataset, n: int, seed: int = 0) -> RetrievalDataset:
    """``n`` queries drawn without replacement (seeded; kept in their original order), same corpus.

    Returns the dataset itself when it has at most ``n`` queries.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"the number of queries to keep must be an integer >= 1, got {n!r}")
    if len(dataset.query_ids) <= n:
        return dataset
    keep = sorted(np.random.default_rng(seed).choice(len(dataset.query_ids), size=n, replace=False).tolist())
    ids = [dataset.query_ids[i] for i in keep]
    return replace(
        dataset,
        query_ids=ids,
        queries=[dataset.queries[i] for i in keep],
        qrels={q: dataset.qrels[q] for q in ids},
        query_groups=None if dataset.query_groups is None else [dataset.query_groups[i] for i in keep],
        meta={**dataset.meta, "sampled": f"{n:,} of {len(dataset.query_ids):,} queries, seed {seed}"},
    )
