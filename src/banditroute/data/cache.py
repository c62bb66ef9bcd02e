"""A content-addressed on-disk cache of text embeddings: encode each (model, text) once, ever.

Layout: one SQLite file per model *version* under ``<root>/`` (default
``$BANDITROUTE_CACHE_DIR/embeddings``, else ``~/.cache/banditroute/embeddings``), named after the
model and a hash of ``name@version``. A vector's key is ``sha256(role + NUL + text)`` (role: query or
document, since asymmetric models such as E5 encode the two differently); the row holds the
float32 vector and its CRC-32. Hence:

- **re-running costs nothing**: every text already cached is read back, none is re-encoded;
- **resumable**: missing texts are encoded batch by batch and each batch is committed at once, so
  an interrupted build loses at most the batch in flight and the next run encodes only the rest;
- **corruption is caught**: a row whose CRC, length or values are wrong is re-encoded and
  overwritten (with a warning); a file SQLite cannot read is a clear error naming the file to delete;
- **measured cost**: the cache also records how many texts of each role were encoded in how many
  seconds, so encode cost per text (the reward table's cost column) survives cached re-runs.

SQLite (WAL mode) makes concurrent readers and writers from several processes safe.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from banditroute.core.validation import InputError
from banditroute.data.interfaces import Embedder

CACHE_ENV = "BANDITROUTE_CACHE_DIR"
Role = Literal["query", "document"]
ROLES: tuple[Role, ...] = ("query", "document")
_LOOKUP_CHUNK = 500  # ids per SELECT ... IN (...): below SQLite's bound-parameter limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (id BLOB PRIMARY KEY, vec BLOB NOT NULL, crc INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS timing (role TEXT PRIMARY KEY, n_texts INTEGER NOT NULL, seconds REAL NOT NULL);
"""


def default_cache_dir() -> Path:
    """``$BANDITROUTE_CACHE_DIR``, else ``~/.cache/banditroute`` (models and embeddings live below it)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "banditroute").expanduser()


def model_key(embedder: Embedder) -> str:
    """``name@version``: vectors of another version (package, truncation, ...) are never reused."""
    return f"{embedder.name}@{getattr(embedder, 'version', 'unversioned')}"


def text_key(text: str, role: Role) -> bytes:
    return hashlib.sha256(f"{role}\0{text}".encode()).digest()


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise InputError(f"role must be one of {ROLES}, got {role!r}")
    return role


class _Store:
    """One model's SQLite file; every SQLite failure becomes an InputError naming the file."""

    def __init__(self, path: Path, key: str, dim: int) -> None:
        self.path, self.dim = path, dim
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard():
            self.db = sqlite3.connect(path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            with self.db:
                self.db.execute("INSERT OR IGNORE INTO meta VALUES ('model', ?), ('dim', ?)", (key, str(dim)))
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("model") != key or meta.get("dim") != str(dim):
            raise InputError(
                f"embedding cache {path} belongs to {meta.get('model')!r} (dim {meta.get('dim')}), "
                f"not {key!r} (dim {dim}); delete it or use another cache folder"
            )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"embedding cache {self.path} is unreadable or corrupted ({exc}); delete it and run again to recompute"
            ) from None

    def get(self, ids: Sequence[bytes]) -> tuple[dict[bytes, NDArray[np.float32]], int]:
        """The valid cached vectors among ``ids``, and how many rows were found corrupted."""
        found: dict[bytes, NDArray[np.float32]] = {}
        bad = 0
        with self._guard():
            for start in range(0, len(ids), _LOOKUP_CHUNK):
                chunk = ids[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                for rid, blob, crc in self.db.execute(f"SELECT id, vec, crc FROM vectors WHERE id IN ({marks})", chunk):
                    vec = np.frombuffer(blob, dtype=np.float32) if len(blob) == 4 * self.dim else None
                    if vec is None or zlib.crc32(blob) != crc or not np.all(np.isfinite(vec)):
                        bad += 1
                        continue
                    found[bytes(rid)] = vec
        return found, bad

    def put(self, ids: Sequence[bytes], vectors: NDArray[np.float32], role: Role, seconds: float) -> None:
        """Store one encoded batch and its encode time in one transaction (the unit of resumption)."""
        rows = []
        for rid, vec in zip(ids, vectors, strict=True):
            blob = np.ascontiguousarray(vec, dtype=np.float32).tobytes()
            rows.append((rid, blob, zlib.crc32(blob)))
        with self._guard(), self.db:
            self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
            self.db.execute(
                "INSERT INTO timing VALUES (?, ?, ?) ON CONFLICT(role) DO UPDATE SET "
                "n_texts = n_texts + excluded.n_texts, seconds = seconds + excluded.seconds",
                (role, len(rows), seconds),
            )

    def timing(self, role: Role) -> tuple[int, float]:
        with self._guard():
            row = self.db.execute("SELECT n_texts, seconds FROM timing WHERE role = ?", (role,)).fetchone()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    def __len__(self) -> int:
        with self._guard():
            return int(self.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        self.db.close()


class EmbeddingCache:
    """Embeddings on disk under ``root``, keyed by model version and text hash."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir() / "embeddings"
        self._stores: dict[str, _Store] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root}  # open SQLite connections stay behind; a worker process opens its own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]

    def path_for(self, embedder: Embedder) -> Path:
        key = model_key(embedder)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder.name)
        return self.root / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sqlite"

    def _store(self, embedder: Embedder) -> _Store:
        key = model_key(embedder)
        if key not in self._stores:
            self._stores[key] = _Store(self.path_for(embedder), key, int(embedder.dim))
        return self._stores[key]

    def encode(
        self, embedder: Embedder, texts: Sequence[str], *, role: Role, progress: bool = False
    ) -> NDArray[np.float32]:
        """Vectors of ``texts`` (n, dim): cached ones read back, the rest encoded, stored and returned."""
        from banditroute.data.embedders.base import check_texts

        texts = check_texts(texts)
        role = _check_role(role)
        store = self._store(embedder)
        ids = [text_key(t, role) for t in texts]
        first: dict[bytes, int] = {}
        for i, rid in enumerate(ids):
            first.setdefault(rid, i)
        found, bad = store.get(list(first))
        if bad:
            warnings.warn(f"{store.path}: {bad} corrupted cached vectors; re-encoding them", stacklevel=2)
        todo = sorted((i for rid, i in first.items() if rid not in found), key=lambda i: len(texts[i]))
        if todo:
            found.update(self._encode_missing(embedder, store, [texts[i] for i in todo], role, progress))
        return np.stack([found[rid] for rid in ids]).astype(np.float32, copy=False)

    def _encode_missing(
        self, embedder: Embedder, store: _Store, texts: list[str], role: Role, progress: bool
    ) -> dict[bytes, NDArray[np.float32]]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        encode = embedder.encode_queries if role == "query" else embedder.encode_documents
        out: dict[bytes, NDArray[np.float32]] = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task(f"encode {len(texts)} {role}s with {embedder.name}", total=len(texts))
            for start in range(0, len(texts), embedder.batch_size):
                batch = texts[start : start + embedder.batch_size]
                t0 = time.perf_counter()
                vectors = np.asarray(encode(batch), dtype=np.float32)
                seconds = time.perf_counter() - t0
                if vectors.shape != (len(batch), embedder.dim) or not np.all(np.isfinite(vectors)):
                    raise RuntimeError(f"{embedder.name} returned {vectors.shape} or non-finite values for a batch")
                ids = [text_key(t, role) for t in batch]
                store.put(ids, vectors, role, seconds)
                out.update(zip(ids, vectors, strict=True))
                bar.advance(task, len(batch))
        return out

    def seconds_per_text(self, embedder: Embedder, role: Role) -> float | None:
        """Mean measured encode time per text of ``role`` over everything this cache encoded (None: none yet)."""
        n, seconds = self._store(embedder).timing(_check_role(role))
        return seconds / n if n else None

    def count(self, embedder: Embedder) -> int:
        """How many vectors (both roles) are cached for this model version."""
        return len(self._store(embedder))

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()


class CachedEmbedder:
    """An :class:`~banditroute.data.interfaces.Embedder` that reads and fills an :class:`EmbeddingCache`."""

    def __init__(self, embedder: Embedder, cache: EmbeddingCache, *, progress: bool = False) -> None:
        self.inner, self.cache, self.progress = embedder, cache, progress
        self.name, self.dim, self.batch_size = embedder.name, embedder.dim, embedder.batch_size
        self.relative_cost = embedder.relative_cost
        self.version: Any = getattr(embedder, "version", "unversioned")

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.cache.encode(self.inner, texts, role="query", progress=self.progress)

    def encode_documents(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.cache.encode(self.inner, texts, role="document", progress=self.progress)

    def seconds_per_text(self, role: Role) -> float | None:
        return self.cache.seconds_per_text(self.inner, role)

    def time_queries(self, texts: Sequence[str]) -> float:
        """Seconds per text to encode ``texts`` as queries with the model itself, bypassing the cache
        (what serving these queries costs; the cache's own timing averages every text it ever encoded)."""
        if not texts:
            return 0.0
        start = time.perf_counter()
        self.inner.encode_queries(texts)
        return (time.perf_counter() - start) / len(texts)
