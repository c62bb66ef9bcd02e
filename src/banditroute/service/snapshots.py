r"""Where the learner publishes policy snapshots for router workers, and their wire format.

A snapshot is the learner's whole policy state after ``version`` feedback rows (LinUCB at d = 384,
M = 4: 4.7 MB), published every ``router.publish_interval_s`` while feedback flows and read by every
worker, so its cost is paid several times a second (docs/benchmarks.md, issue 16):

* :class:`FileSnapshots` — a SQLite log lives on one host, so its snapshots are files in a ``0700``
  directory beside the database (``router.db.snapshots/``), each written to a temporary name and
  renamed into place (a reader never sees half a file). Publishing costs a few milliseconds; storing
  the same bytes in the SQLite log cost 32 ms and grew its WAL.
* :class:`LogSnapshots` — with PostgreSQL, workers may run on other hosts: the log's ``snapshots``
  table (:meth:`~banditroute.service.storage.Storage.publish_snapshot`), whose commit also sends
  ``NOTIFY banditroute_snapshot``, so a worker loads it as soon as it is told
  (:class:`~banditroute.service.cluster.Wakeup`), polling only as a fallback.

Both keep the newest :data:`~banditroute.service.storage.SNAPSHOTS_KEPT`. The format
(:func:`encode_snapshot`) is a JSON header and the arrays' raw bytes: decoding is a zero-copy view
(``numpy.frombuffer``) that ``Policy.load_state_dict`` validates and copies, where the ``.npz`` of
checkpoints spends 12 ms encoding and 4 ms checking zip CRCs. A snapshot is a cache of the log —
a learner that restarts republishes — so it carries no checksum of its own; one that does not decode
or load is skipped by the worker (it keeps the previous one).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from banditroute.core.validation import InputError
from banditroute.service.dialects import sqlite_path
from banditroute.service.storage import SNAPSHOTS_KEPT, Storage

MAGIC = b"BRSNAP1\n"
_LENGTH = struct.Struct("<Q")
SUFFIX = ".snap"


def encode_snapshot(state: dict[str, Any]) -> bytes:
    """A ``state_dict`` as ``MAGIC``, the header's length, a JSON header (policy, config, and each array's
    name, dtype, shape) and the arrays' C-order bytes, in header order."""
    arrays = {k: np.ascontiguousarray(v) for k, v in state["state"].items()}
    header = json.dumps(
        {
            "policy": state["policy"],
            "config": state["config"],
            "arrays": [[k, a.dtype.str, list(a.shape)] for k, a in arrays.items()],
        }
    ).encode()
    return b"".join([MAGIC, _LENGTH.pack(len(header)), header, *(a.tobytes() for a in arrays.values())])


def decode_snapshot(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_snapshot` (arrays are read-only views of ``blob``); :class:`InputError`
    for anything else."""
    try:
        if not blob.startswith(MAGIC):
            raise ValueError("not a banditroute snapshot")
        (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
        offset = len(MAGIC) + _LENGTH.size
        header = json.loads(blob[offset : offset + length])
        offset += length
        arrays = {}
        for key, dtype, shape in header["arrays"]:
            dt = np.dtype(dtype)
            if dt.hasobject:
                raise ValueError("object arrays are not allowed")
            count = int(np.prod(shape, dtype=np.int64))
            arrays[key] = np.frombuffer(blob, dtype=dt, count=count, offset=offset).reshape(shape)
            offset += count * dt.itemsize
        if offset != len(blob):
            raise ValueError("trailing or missing bytes")
        return {"policy": header["policy"], "config": header["config"], "state": arrays}
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise InputError(f"corrupted policy snapshot: {exc}") from None


class SnapshotStore(Protocol):
    def publish(self, version: int, state: dict[str, Any], now: float) -> None:
        """Publish the state after ``version`` rows (replacing one of the same version)."""

    def latest(self, newer_than: int = -1) -> tuple[int, bytes] | None:
        """``(version, blob)`` of the newest snapshot if newer than ``newer_than``, else ``None``."""

    def close(self) -> None: ...


class LogSnapshots:
    """Snapshots in the log's ``snapshots`` table (any database; workers on other hosts)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def publish(self, version: int, state: dict[str, Any], now: float) -> None:
        self.storage.publish_snapshot(version, encode_snapshot(state), now)

    def latest(self, newer_than: int = -1) -> tuple[int, bytes] | None:
        return self.storage.latest_snapshot(newer_than)

    def close(self) -> None:
        self.storage.close()


class FileSnapshots:
    """Snapshots as files ``<version>.snap`` in ``directory`` (module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _versions(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(n[: -len(SUFFIX)]) for n in names if n.endswith(SUFFIX) and n[: -len(SUFFIX)].isdigit())

    def publish(self, version: int, state: dict[str, Any], now: float) -> None:
        self.directory.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".publishing-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(encode_snapshot(state))
            os.replace(tmp, self.directory / f"{version:020d}{SUFFIX}")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        for old in self._versions()[:-SNAPSHOTS_KEPT]:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{old:020d}{SUFFIX}").unlink()

    def latest(self, newer_than: int = -1) -> tuple[int, bytes] | None:
        for version in reversed(self._versions()):
            if version <= newer_than:
                return None
            try:
                return version, (self.directory / f"{version:020d}{SUFFIX}").read_bytes()
            except FileNotFoundError:  # pruned between listing and reading: an older one is not newer
                continue
        return None

    def close(self) -> None:
        return None


def snapshot_store(storage: Storage) -> SnapshotStore:
    """Files beside a SQLite log's database, else the log's table (module docstring)."""
    path = sqlite_path(storage.engine)
    if path is not None:
        storage.close()
        return FileSnapshots(path.with_name(path.name + ".snapshots"))
    return LogSnapshots(storage)
