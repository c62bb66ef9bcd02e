"""What differs between the databases the router's log can live in, one object per database.

:class:`~banditroute.service.storage.Storage` speaks SQLAlchemy Core, the same schema and the same
statements on every database, except for what a :class:`Dialect` says: how an engine is made
(timeouts, SQLite's pragmas and ``0600`` file), the insert that ignores or replaces a conflicting
row, and which single-writer lock guards the log (:mod:`banditroute.service.writer_lock`). The
dialect is chosen by the URL's scheme (:func:`dialect_for`); a scheme without one is refused with a
message naming the supported ones, rather than taking another database's code path.
See docs/reliability.md for the timeouts and the locks.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from banditroute.core.validation import InputError

# pg_advisory_xact_lock keys serialising the next event id and the next feedback seq: fixed forever,
# distinct from the writer lock's (writer_lock.ADVISORY_KEY).
ID_LOCK_KEYS = {"decisions": 0x2F1C5E0B9A3D7462, "feedback": 0x2F1C5E0B9A3D7463}
_XACT_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")
_NOTIFY = sa.text("SELECT pg_notify(:channel, :payload)")


class Dialect(Protocol):
    """One database: its URL scheme (the SQLAlchemy backend name), engine set-up, upsert, writer lock."""

    name: ClassVar[str]
    writer_lock: ClassVar[Literal["flock", "advisory"]]  # a file lock next to the database / a database lock
    pre_ping: ClassVar[bool]  # test pooled connections before use (a server may have dropped them)
    notifications: ClassVar[bool]  # LISTEN / NOTIFY between connections

    def connect_args(self, timeout_s: float) -> dict[str, Any]:
        """DBAPI connect arguments bounding every statement by ``timeout_s``."""

    def prepare(self, engine: Engine, timeout_s: float) -> None:
        """Set up a new engine (files, per-connection settings) before its first connection."""

    def insert(self, table: sa.Table) -> Any:
        """An ``INSERT`` on ``table`` that offers ``on_conflict_do_nothing`` / ``on_conflict_do_update``."""

    def write_turn(self, engine: Engine, timeout_s: float) -> WriteTurn | None:
        """What a connection of ``engine`` takes before :meth:`serialize` and lets go after its commit
        or rollback, if the database's own lock wait is too coarse for the hot path (else ``None``)."""

    def serialize(self, conn: sa.Connection, table: str) -> None:
        """Begin a transaction that takes the next id of ``table`` (``MAX + 1``) so that concurrent
        writers, other processes included, take it one at a time, in commit order."""

    def notify(self, conn: sa.Connection, channel: str, payload: str) -> None:
        """Tell the connections listening on ``channel`` when this transaction commits (if supported)."""


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite engine (``None`` for other databases and in-memory SQLite)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


class SQLite:
    """WAL (readers never block the writer), ``synchronous=NORMAL`` (a commit survives the process
    being killed), ``busy_timeout``; a new database file is created ``0600``; ``flock`` writer lock."""

    name: ClassVar[str] = "sqlite"
    writer_lock: ClassVar[Literal["flock", "advisory"]] = "flock"
    pre_ping: ClassVar[bool] = False
    notifications: ClassVar[bool] = False

    def connect_args(self, timeout_s: float) -> dict[str, Any]:
        return {}

    def prepare(self, engine: Engine, timeout_s: float) -> None:
        path = sqlite_path(engine)
        if path is not None:
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # a new file is 0600
            except FileExistsError:
                pass  # an existing file keeps its mode
            except OSError as exc:
                raise InputError(f"cannot open the SQLite database {path}: {exc.strerror}") from None
        ms = _ms(timeout_s)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={ms}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    def insert(self, table: sa.Table) -> Any:
        return sqlite.insert(table)

    def write_turn(self, engine: Engine, timeout_s: float) -> WriteTurn | None:
        path = sqlite_path(engine)
        return None if path is None else WriteTurn(path.with_name(path.name + ".turn"), timeout_s)

    def serialize(self, conn: sa.Connection, table: str) -> None:
        """Nothing more to do: the inserting statement is the transaction's first, and SQLite takes its
        read snapshot together with the write lock for it (the :class:`WriteTurn` was taken first)."""

    def notify(self, conn: sa.Connection, channel: str, payload: str) -> None:
        return None


class PostgreSQL:
    """Connect, statement and lock timeouts; connections pinged before use; advisory writer lock."""

    name: ClassVar[str] = "postgresql"
    writer_lock: ClassVar[Literal["flock", "advisory"]] = "advisory"
    pre_ping: ClassVar[bool] = True
    notifications: ClassVar[bool] = True

    def connect_args(self, timeout_s: float) -> dict[str, Any]:
        ms = _ms(timeout_s)
        return {
            "connect_timeout": max(1, math.ceil(timeout_s)),
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        }

    def prepare(self, engine: Engine, timeout_s: float) -> None:
        return None

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def write_turn(self, engine: Engine, timeout_s: float) -> WriteTurn | None:
        return None  # serialize's advisory lock waits in the server's queue, woken at the holder's commit

    def serialize(self, conn: sa.Connection, table: str) -> None:
        """A transaction-scoped advisory lock per table (released by the commit), bounded by ``lock_timeout``."""
        conn.execute(_XACT_LOCK, {"key": ID_LOCK_KEYS[table]})

    def notify(self, conn: sa.Connection, channel: str, payload: str) -> None:
        conn.execute(_NOTIFY, {"channel": channel, "payload": payload})


class WriteTurn:
    """The turn to write a SQLite log, between processes: an exclusive ``flock`` on ``<database>.turn``
    taken before a hot-path write transaction (decisions, feedback) and let go after its commit or
    rollback.

    Without it, router workers writing one SQLite log at the same moment meet SQLite's busy handler,
    which sleeps 1, 2, 5, 10, 15... ms between tries (``sqlite3_busy_timeout``): most of a worker's
    decision p99 (docs/benchmarks.md, "Router workers over one log"). The turn is polled every 20 to
    500 µs instead, and holding it means SQLite's lock is free for us (the other writers of the hot
    path hold the turn while they hold that lock). Waiting longer than ``timeout_s`` is the database
    being locked, a storage fault (503). The kernel lets go of a killed process's turn.
    """

    FIRST_PAUSE_S, MAX_PAUSE_S = 2e-5, 5e-4

    def __init__(self, path: Path, timeout_s: float) -> None:
        self.path, self.timeout_s = path, timeout_s
        self.held = False
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InputError(f"cannot create the write turn file {path}: {exc.strerror}") from None
        weakref.finalize(self, os.close, self._fd)  # closed with its Storage

    def take(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        pause = self.FIRST_PAUSE_S
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    waited = f"database is locked: no write turn within {self.timeout_s:g} s ({self.path.name})"
                    raise sa.exc.OperationalError(None, None, sqlite3.OperationalError(waited)) from None
                time.sleep(pause)
                pause = min(2 * pause, self.MAX_PAUSE_S)

    def release(self) -> None:
        if self.held:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self.held = False


DIALECTS: dict[str, Dialect] = {d.name: d for d in (SQLite(), PostgreSQL())}


def _ms(timeout_s: float) -> int:
    return max(1, int(timeout_s * 1000))


def dialect_for(url: str | sa.URL) -> Dialect:
    """The dialect of a database URL (``sqlite:///...``, ``postgresql+psycopg://...``), by its scheme."""
    try:
        backend = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError as exc:
        raise InputError(f"cannot use storage url {str(url).split('@')[-1]!r}: {exc}") from None
    try:
        return DIALECTS[backend]
    except KeyError:
        supported = ", ".join(f"{name}://" for name in DIALECTS)
        raise InputError(f"unsupported storage url scheme {backend!r}: use one of {supported}") from None
