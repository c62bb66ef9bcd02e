"""A deterministic stand-in for an embedding model, shared by the cache and retriever tests."""

from __future__ import annotations

import hashlib

import numpy as np


class CountingEmbedder:
    """A deterministic fake model: a text's vector is a hash-seeded unit vector; counts what it encodes."""

    def __init__(self, dim: int = 8, batch_size: int = 4, version: str = "1", fail_on_batch: int | None = None):
        self.name, self.dim, self.batch_size, self.relative_cost, self.version = "fake", dim, batch_size, 1.0, version
        self.encoded: list[str] = []
        self.batches = 0
        self.fail_on_batch = fail_on_batch

    def _vec(self, text: str, role: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(f"{role}|{text}".encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def _encode(self, texts, role):
        self.batches += 1
        if self.fail_on_batch is not None and self.batches == self.fail_on_batch:
            raise KeyboardInterrupt("simulated crash")
        self.encoded.extend(texts)
        return np.stack([self._vec(t, role) for t in texts])

    def encode_queries(self, texts):
        return self._encode(texts, "query")

    def encode_documents(self, texts):
        return self._encode(texts, "document")
