"""The seams between datasets, embedding models and retrievers.

A *retrieval dataset* is queries, a corpus and relevance judgements. An :class:`Embedder` maps
texts to unit vectors; a :class:`Retriever` (dense over an embedder, or lexical such as BM25)
indexes a corpus and returns the top-k document positions per query. A reward-table builder only
needs retrievers, so a lexical arm and a dense arm are interchangeable routing targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@runtime_checkable
class Embedder(Protocol):
    """A text embedding model. ``encode_*`` return float32 arrays of shape (len(texts), dim), rows L2-normalised."""

    name: str
    dim: int
    batch_size: int
    relative_cost: float  # measured or nominal encode cost per text, relative to the cheapest model

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def encode_documents(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@runtime_checkable
class Retriever(Protocol):
    """Indexes a corpus once, then returns for each query the top-k corpus positions, best first."""

    name: str

    def index(self, documents: Sequence[str]) -> None: ...

    def search(self, queries: Sequence[str], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """(positions (n, k) into the indexed documents, scores (n, k)), each row sorted best first."""
        ...


@dataclass(frozen=True)
class RetrievalDataset:
    """Queries, a corpus and graded relevance: ``qrels[query_id][doc_id] = grade`` (higher = more relevant).

    ``query_groups`` optionally labels each query with a topic (e.g. its SQuAD article), aligned
    with ``query_ids``; reward tables keep it for adversarial topic-block orders.
    """

    name: str
    query_ids: list[str]
    queries: list[str]
    doc_ids: list[str]
    documents: list[str]
    qrels: dict[str, dict[str, float]]
    meta: dict[str, str] = field(default_factory=dict)
    query_groups: list[str] | None = None
