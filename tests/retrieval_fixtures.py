"""Small retrieval datasets written in their published formats, and fake models, for the data tests."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

CRLF = "\r\n"


def write_squad(root: Path) -> Path:
    """Two articles, three distinct paragraphs (one repeated), five questions."""
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "Rivers",
                "paragraphs": [
                    {
                        "context": "The Nile is the longest river in Africa.",
                        "qas": [
                            {"id": "q1", "question": "Which is the longest river in Africa?", "answers": []},
                            {"id": "q2", "question": "Where does the Nile flow?", "answers": []},
                        ],
                    },
                    {
                        "context": "The Amazon carries the most water.",
                        "qas": [{"id": "q3", "question": "What river carries the most water?", "answers": []}],
                    },
                ],
            },
            {
                "title": "Mountains",
                "paragraphs": [
                    {
                        "context": "Everest is the highest mountain.",
                        "qas": [{"id": "q4", "question": "Who climbed the highest mountain first?", "answers": []}],
                    },
                    {  # the same text as the first paragraph: deduplicated into one document
                        "context": "The Nile is the longest river in Africa.",
                        "qas": [{"id": "q5", "question": "How long is the Nile?", "answers": []}],
                    },
                ],
            },
        ],
    }
    root.mkdir(parents=True, exist_ok=True)
    file = root / "dev-v1.1.json"
    file.write_text(json.dumps(data, indent=1))
    return file


def write_beir(root: Path) -> Path:
    """Four documents, four queries; test.tsv judges q1 (graded), q2 (one 0 score), q3; train.tsv judges q4."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    docs = [
        {"_id": "d1", "title": "Vitamin D", "text": "Vitamin D lowers fracture risk."},
        {"_id": "d2", "title": "", "text": "Aspirin reduces heart attacks."},
        {"_id": "d3", "title": "Sleep", "text": "Sleep loss impairs memory."},
        {"_id": "d4", "title": "Coffee", "text": "Coffee raises alertness."},
    ]
    queries = [
        {"_id": "q1", "text": "vitamin D and bones"},
        {"_id": "q2", "text": "aspirin heart"},
        {"_id": "q3", "text": "sleep and memory"},
        {"_id": "q4", "text": "coffee alertness"},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t1\nq2\td2\t0\nq3\td3\t1\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq4\td4\t1\n")
    return root


def write_cranfield(root: Path) -> Path:
    """Three records (one empty, one with a stray marker inside its abstract), three queries, graded judgements."""
    root.mkdir(parents=True, exist_ok=True)
    docs = [
        ".I 1", ".T", "wing flutter", ".A", "smith", ".B", "j. ae. 1958", ".W", "wing flutter .",
        "flutter of wings at high speed .",
        ".I 2", ".T", "heat transfer", ".A", "jones", ".B", "naca", ".W", "heat transfer in slabs .",
        ".A", "stray marker line continues the abstract .",
        ".I 3", ".T", ".A", ".B", ".W",
    ]  # fmt: skip
    (root / "cran.all.1400").write_text(CRLF.join(docs) + CRLF, newline="")
    queries = [".I 001", ".W", "what about wing flutter .", ".I 004", ".W", "heat transfer in slabs .",
               ".I 009", ".W", "something unjudged ."]  # fmt: skip
    (root / "cran.qry").write_text("\n".join(queries) + "\n")
    # query 1: doc 1 grade 1 (gain 4), doc 2 grade 4 (gain 1); query 2: doc 2 grade 2, doc 1 -1 (dropped),
    # doc 3 (empty record, dropped); query 3: only a grade-5 line (dropped -> query left out).
    (root / "cranqrel").write_text("1 1 1 \n1 2 4 \n2 2 2 \n2 1 -1\n2 3 3\n3 1 5\n")
    return root


def write_esci(root: Path) -> Path:
    """ESCI examples and products parquet files with the official columns (two locales, both splits)."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    rows = [  # query_id, query, product_id, locale, label, small_version, split
        (1, "red running shoes", "P1", "us", "E", 1, "train"),
        (1, "red running shoes", "P2", "us", "S", 1, "train"),
        (1, "red running shoes", "P3", "us", "I", 1, "train"),
        (2, "usb c cable", "P4", "us", "C", 0, "test"),
        (2, "usb c cable", "P5", "us", "E", 0, "test"),
        (3, "only irrelevant", "P3", "us", "I", 1, "test"),
        (4, "zapatos rojos", "P1", "es", "E", 1, "train"),
    ]
    examples = pd.DataFrame(
        rows, columns=["query_id", "query", "product_id", "product_locale", "esci_label", "small_version", "split"]
    )
    examples.insert(0, "example_id", range(len(examples)))
    examples["large_version"] = 1
    examples.to_parquet(root / "shopping_queries_dataset_examples.parquet", index=False)
    products = pd.DataFrame(
        [
            ("P1", "Runner shoe", "desc", "fast", "Acme", "red", "us"),
            ("P2", "Trail shoe", None, "grip", "Acme", "blue", "us"),
            ("P3", "Frying pan", "", "", None, None, "us"),
            ("P4", "USB charger", "", "", "Volt", "black", "us"),
            ("P5", "USB-C cable", "", "1 m", "Volt", "white", "us"),
            ("P1", "Zapatilla", "", "", "Acme", "rojo", "es"),
        ],
        columns=["product_id", "product_title", "product_description", "product_bullet_point", "product_brand",
                 "product_color", "product_locale"],
    )  # fmt: skip
    products.to_parquet(root / "shopping_queries_dataset_products.parquet", index=False)
    return root


_WORD = re.compile(r"\w+")


def _tokens(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class OverlapRetriever:
    """Ranks documents by shared lowercase words (ties: lower position first); counts its calls."""

    def __init__(self, name: str = "overlap", *, reverse: bool = False) -> None:
        self.name = name
        self.reverse = reverse  # rank worst first: a deliberately bad arm
        self._corpora: list[list[str]] = []
        self._searched = 0

    @property
    def corpora(self) -> list[list[str]]:
        """Every corpus indexed so far (properties, not attributes: cache keys skip them)."""
        return self._corpora

    @property
    def searched(self) -> int:
        """Queries searched so far."""
        return self._searched

    def index(self, documents: Sequence[str]) -> None:
        self.docs = [_tokens(d) for d in documents]
        self._corpora.append(list(documents))

    def search(self, queries: Sequence[str], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        self._searched += len(queries)
        scores = np.array([[len(_tokens(q) & d) for d in self.docs] for q in queries], dtype=np.float32)
        if self.reverse:
            scores = -scores
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        if order.shape[1] < k:  # a corpus smaller than k: pad with -1
            order = np.pad(order, ((0, 0), (0, k - order.shape[1])), constant_values=-1)
        top = np.take_along_axis(scores, np.maximum(order, 0), axis=1)
        return order.astype(np.int64), np.where(order >= 0, top, 0).astype(np.float32)


class HashEmbedder:
    """Hashed bag of words in 16 dimensions, unit norm: a deterministic stand-in for a real encoder."""

    name = "hash16"
    dim = 16
    batch_size = 8
    relative_cost = 1.0

    def _encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[i, sum(map(ord, word)) % self.dim] += 1.0
            out[i, 0] += 1e-3  # never the zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode(texts)

    def encode_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode(texts)
