"""Any dataset in the BEIR layout (SciFact ships in it): a folder with

- ``corpus.jsonl``: one ``{"_id", "title", "text"}`` per line (document text = title + text),
- ``queries.jsonl``: one ``{"_id", "text"}`` per line,
- ``qrels/<split>.tsv`` (e.g. ``test.tsv``, ``train.tsv``): a header line, then
  ``query-id <TAB> corpus-id <TAB> score`` (graded).

The split defaults to ``test`` where the folder has one (the split BEIR reports results on), else
every split. Only queries judged relevant (score > 0) in the chosen split(s) are kept; the others
are counted in the dataset's ``meta`` (``queries_dropped`` of ``queries_read``) next to the
``splits`` used. Judgements that name an unknown query or document are an error naming the file
and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from banditroute.core.validation import InputError
from banditroute.data.datasets.common import Source, add_unique, build_dataset, numbered_lines, read_jsonl
from banditroute.data.interfaces import RetrievalDataset

SOURCE = Source(
    url="https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip",
    layout="a BEIR folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv (e.g. qrels/test.tsv)",
    example="scifact",
)


def load_beir(path: str | Path, *, splits: Sequence[str] | None = None, name: str | None = None) -> RetrievalDataset:
    """Read a BEIR folder; ``splits`` choose the judged queries (default ``test`` if present, else all).

    ``name`` (default: the folder's name) names the dataset and its download archive. A query
    judged in several splits keeps the highest score per document.
    """
    root = Path(path)
    name = name or root.name
    if not root.is_dir():
        raise SOURCE.missing(root, name)
    files = {f: root / f for f in ("corpus.jsonl", "queries.jsonl")}
    for file in files.values():
        if not file.is_file():
            raise SOURCE.missing(file, name)
    available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
    if not available:
        raise SOURCE.missing(root / "qrels" / "<split>.tsv", name)
    if splits is None:
        splits = ["test"] if "test" in available else available
    unknown = [s for s in splits if s not in available]
    if not splits or unknown:
        raise InputError(f"{root / 'qrels'}: no split {', '.join(unknown) or '(none given)'} (available: {available})")

    documents: dict[str, str] = {}
    for lineno, obj in read_jsonl(files["corpus.jsonl"], ("_id", "text")):
        title = obj.get("title") or ""
        if not isinstance(title, str):
            raise InputError(f"{files['corpus.jsonl']}:{lineno}: field 'title' is not a string")
        text = f"{title} {obj['text']}".strip() if title else obj["text"]
        add_unique(documents, obj["_id"], text, f"{files['corpus.jsonl']}:{lineno}")
    queries: dict[str, str] = {}
    for lineno, obj in read_jsonl(files["queries.jsonl"], ("_id", "text")):
        add_unique(queries, obj["_id"], obj["text"], f"{files['queries.jsonl']}:{lineno}")

    qrels: dict[str, dict[str, float]] = {}
    for split in splits:
        _read_qrels(root / "qrels" / f"{split}.tsv", queries, documents, qrels)
    return build_dataset(name, queries, documents, qrels, meta={"source": str(root), "splits": ",".join(splits)})


def _read_qrels(
    file: Path, queries: dict[str, str], documents: dict[str, str], qrels: dict[str, dict[str, float]]
) -> None:
    """Add ``file``'s judgements to ``qrels`` (max over duplicates); the first line is the header."""
    for lineno, line in numbered_lines(file):
        if lineno == 1 or not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 3:
            raise InputError(f"{file}:{lineno}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
        qid, did, score_text = (p.strip() for p in parts)
        try:
            score = float(score_text)
        except ValueError:
            raise InputError(f"{file}:{lineno}: score {score_text!r} is not a number") from None
        if qid not in queries:
            raise InputError(f"{file}:{lineno}: unknown query id {qid!r} (not in queries.jsonl)")
        if did not in documents:
            raise InputError(f"{file}:{lineno}: unknown corpus id {did!r} (not in corpus.jsonl)")
        judged = qrels.setdefault(qid, {})
        judged[did] = max(score, judged.get(did, score))
