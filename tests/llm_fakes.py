"""Test doubles for the LLM-routing tests: a deterministic hashed bag-of-words embedder and small
synthetic routing problems whose best LLM depends on the query cluster."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from banditroute.costaware.online import Split


class HashedBowEmbedder:
    """Each word hashed (sha256) to one of ``dim`` signed buckets; rows L2-normalised. Deterministic."""

    name = "hashed-bow"
    batch_size = 64
    relative_cost = 1.0

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)

    encode_documents = encode_queries


def clustered_problem(
    n: int, rng: np.random.Generator, *, M: int = 4, d: int = 16, K: int = 4, noise: float = 0.1
) -> tuple[Split, np.ndarray]:
    """``n`` queries around ``K`` cluster centres in ``d`` dims; each cluster has its own quality
    profile over ``M`` LLMs (a different best LLM per cluster), plus noise; LLM ``m`` costs ``m + 1``
    units times a per-query length. Returns the split and the cluster labels."""
    centres = np.linalg.qr(np.random.default_rng(7).standard_normal((d, K)))[0].T  # fixed, orthonormal
    profile = np.full((K, M), 0.2)
    profile[np.arange(K), np.arange(K) % M] = 0.9
    profile[:, -1] = np.maximum(profile[:, -1], 0.7)  # the dearest LLM is decent everywhere
    labels = rng.integers(0, K, size=n)
    E = centres[labels] + 0.3 * rng.standard_normal((n, d)) / np.sqrt(d)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    quality = np.clip(profile[labels] + noise * rng.standard_normal((n, M)), 0.0, 1.0)
    length = rng.uniform(0.5, 1.5, size=n)
    cost = length[:, None] * (np.arange(M) + 1.0)
    return Split(E, quality, cost, cost, cost), labels
