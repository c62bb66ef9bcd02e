"""SQuAD v1.1 as a retrieval set: each question's one relevant document is its gold paragraph.

Format: the official JSON, ``{"version": "1.1", "data": [{"title", "paragraphs": [{"context",
"qas": [{"id", "question", "answers"}]}]}]}``. The dev set (``dev-v1.1.json``) has 10,570
questions over 2,067 paragraphs of 48 Wikipedia articles. Paragraphs are deduplicated by text
(a question whose paragraph text occurs twice is relevant to the one shared document); each
query is labelled with its article title (``query_groups``), the topic used by adversarial
topic-block orders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from banditroute.core.validation import InputError
from banditroute.data.datasets.common import Source, add_unique, build_dataset, find_file, read_json
from banditroute.data.interfaces import RetrievalDataset

SOURCE = Source(
    url="https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json",
    layout="the SQuAD v1.1 JSON file (dev-v1.1.json) or a folder holding it",
)
DEV_QUERIES, DEV_PARAGRAPHS = 10_570, 2_067  # published size of dev-v1.1.json


def load_squad(path: str | Path, *, filename: str = "dev-v1.1.json") -> RetrievalDataset:
    """Read a SQuAD v1.1 JSON file (``path`` is the file or a folder holding ``filename``)."""
    file = find_file(path, filename, SOURCE)
    root = read_json(file)
    articles = root.get("data") if isinstance(root, dict) else None
    if not isinstance(articles, list):
        raise InputError(f"{file}: not SQuAD JSON (no top-level 'data' list)")

    doc_of_text: dict[str, str] = {}  # paragraph text -> doc id (deduplication)
    queries: dict[str, str] = {}
    groups: dict[str, str] = {}
    qrels: dict[str, dict[str, float]] = {}
    for a, article in enumerate(articles):
        title = _field(article, "title", str, file, f"data[{a}]")
        for p, paragraph in enumerate(_field(article, "paragraphs", list, file, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, file, where)
            doc_id = doc_of_text.setdefault(context, f"p{len(doc_of_text)}")
            for i, qa in enumerate(_field(paragraph, "qas", list, file, where)):
                qid = _field(qa, "id", str, file, f"{where}.qas[{i}]")
                add_unique(queries, qid, _field(qa, "question", str, file, f"{where}.qas[{i}]"), f"{file}: {where}")
                groups[qid] = title
                qrels[qid] = {doc_id: 1.0}
    documents = {doc_id: text for text, doc_id in doc_of_text.items()}
    version = str(root.get("version", "?"))
    return build_dataset(
        "squad", queries, documents, qrels, groups=groups, meta={"source": str(file), "version": version}
    )


def _field(obj: Any, key: str, kind: type, file: Path, where: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind):
        raise InputError(f"{file}: {where}.{key} missing or not a {kind.__name__}")
    return value
