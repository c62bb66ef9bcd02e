"""What every embedding adapter shares: input checks, offline mode, batching and normalisation.

An adapter subclasses :class:`BaseEmbedder` and implements one method, ``_encode_batch``, which
turns at most ``batch_size`` texts into raw vectors. The base class validates the input, sorts the
texts by length so each batch pads little (then restores the caller's order), and returns float32
rows of unit L2 norm, so inner product = cosine similarity (docs/specs/hpg.md §4: models are compared by
retrieval quality on the same queries).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from banditroute.core.validation import InputError

# Hugging Face libraries look for updates on the hub unless told not to; nothing here may use the network.
# (Their weight-loading progress bars are switched off too: the embedding cache shows its own.)
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def force_offline() -> None:
    """Forbid Hugging Face libraries any network access (set before they are imported)."""
    os.environ.update(OFFLINE_ENV)


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """A non-empty sequence of strings (a bare string is rejected: it is one text, not a list)."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence | np.ndarray):
        raise InputError(f"{name} must be a list of strings, got {type(texts).__name__}")
    out = list(texts)
    if not out:
        raise InputError(f"{name} is empty: need at least one text")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputError(f"{name}[{i}] must be a string, got {type(text).__name__}")
    return out


def l2_normalise(vectors: Any, dim: int, who: str) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm, as float32; a model output of the wrong shape or with NaN is a bug."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise RuntimeError(f"{who} returned shape {arr.shape}, expected (n, {dim})")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise RuntimeError(f"{who} returned a NaN, infinite or zero vector")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


class BaseEmbedder(ABC):
    """An :class:`~banditroute.data.interfaces.Embedder` built from a per-batch encoder.

    Attributes: ``name`` (registry short name), ``dim``, ``batch_size``, ``relative_cost`` (nominal
    encode cost per text relative to the cheapest model; measured costs come from the embedding
    cache), ``version`` (the model package version plus every setting that changes the vectors,
    e.g. truncation; part of the cache key).
    """

    name: str
    dim: int
    batch_size: int
    relative_cost: float
    version: str

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode_all(check_texts(texts), is_query=True)

    def encode_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self._encode_all(check_texts(texts), is_query=False)

    def _encode_all(self, texts: list[str], *, is_query: bool) -> NDArray[np.float32]:
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            raw = self._encode_batch([texts[i] for i in rows], is_query=is_query)
            out[rows] = l2_normalise(raw, self.dim, self.name)
        return out

    @abstractmethod
    def _encode_batch(self, texts: list[str], *, is_query: bool) -> NDArray[np.floating[Any]]:
        """Raw (not necessarily normalised) vectors for at most ``batch_size`` texts, shape (n, dim)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, version={self.version!r})"
