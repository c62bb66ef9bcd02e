"""One writer per log: the lock a router takes at start-up and holds while it runs.

Two routers appending to one log would both number feedback ``seq = n + 1`` and learn rows the
other accepted. So the writer takes, before it touches the log:

* SQLite: an exclusive ``flock`` on ``<database>.lock`` (created ``0600``) that holds the holder's
  pid, host and start time, for the message a second router prints;
* PostgreSQL: ``pg_try_advisory_lock`` on a dedicated connection whose ``application_name`` names
  the holder (advisory locks are per database, so other databases on the server are unaffected).

Both are released by the operating system or the database when the holder dies, ``kill -9``
included (the descriptor is closed; the backend of a closed connection ends), so a crash never
blocks a restart. A PostgreSQL restart drops the lock with its connection: :meth:`WriterLock.ensure`
takes it again (the router calls it after each reconnection) and refuses to go on writing if
another router took it meanwhile. See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from banditroute.core.validation import InputError
from banditroute.service.dialects import dialect_for, sqlite_path
from banditroute.service.storage import StorageUnavailable, describe

# pg_try_advisory_lock key: the 63-bit prefix of sha256("banditroute writer"), fixed forever.
ADVISORY_KEY = 0x2F1C5E0B9A3D7461
_HOLDERS = sa.text(
    "SELECT a.pid, a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
)


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}


def _who(holder: dict[str, Any]) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}"


class WriterLock:
    """The single-writer lock of the log behind ``engine`` (module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.kind = dialect_for(engine.url).writer_lock
        self.path = sqlite_path(engine)  # None for in-memory SQLite: nothing to share, no lock
        self._fd: int | None = None
        self._conn: sa.Connection | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`InputError` naming the router that holds it."""
        if self.kind == "flock" and self.path is not None:
            self._flock(self.path.with_name(self.path.name + ".lock"))
        elif self.kind == "advisory":
            try:
                self._advisory()
            except sa.exc.SQLAlchemyError as exc:
                raise InputError(f"cannot take the writer lock on the database: {describe(exc)}") from None

    def _flock(self, lock_path: Path) -> None:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InputError(f"cannot create the writer lock file {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.read(fd, 4096) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise InputError(
                f"another router ({_who(holder)}) is writing to {self.path}: it holds {lock_path}; "
                "stop it first (one writer per log)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        self._fd = fd

    def _advisory(self) -> None:
        me = _me()
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        name = f"banditroute router pid={me['pid']} host={me['host']}"[:63]
        conn.execute(sa.text("SELECT set_config('application_name', :name, false)"), {"name": name})
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY}).scalar():
            hi, lo = divmod(ADVISORY_KEY, 2**32)
            row = conn.execute(_HOLDERS, {"hi": hi, "lo": lo}).first()
            conn.close()
            holder = "unknown" if row is None else f"{row.application_name!r} (backend pid {row.pid})"
            raise InputError(
                f"another router ({holder}) holds the writer lock of database {self.engine.url.database!r}; "
                "stop it first (one writer per log)"
            )
        self._conn = conn

    def ensure(self) -> None:
        """After a reconnection: make sure the PostgreSQL lock is still held, taking it again if its
        connection died with a database restart; :class:`StorageUnavailable` if that fails."""
        if self.kind != "advisory":
            return
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT 1"))
                return
            except sa.exc.SQLAlchemyError:
                self._conn.invalidate()
                self._conn.close()
                self._conn = None
        try:
            self._advisory()
        except (InputError, sa.exc.SQLAlchemyError) as exc:
            raise StorageUnavailable(f"storage unavailable: writer lock lost: {exc}") from None

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # if the database is gone, so is the lock
                self._conn.close()  # the lock ends with its session
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays for the next holder
            self._fd = None
