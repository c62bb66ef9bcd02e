"""The router's log behind one interface: SQLite (WAL, zero set-up) or PostgreSQL, by URL.

What differs between the two — engine set-up and timeouts, the insert-on-conflict, the writer
lock — is a :class:`~banditroute.service.dialects.Dialect` chosen by the URL's scheme; any other
scheme is refused.

Tables (SQLAlchemy Core, the same schema on both databases):

* ``decisions``: every routing decision — event id, optional client request id, time, kind
  (``route`` / ``search``), policy version, chosen slot, the *full* probability vector over the
  policy's slots, the allowed-slot mask, the context (float64 bytes) and the decision's ``info``
  (:func:`encode_info`; NULL for policies that carry none), which the learner hands back to the
  policy so that a policy needing it (``two-stage``) learns live and in replay alike, and the number of
  the router worker that decided (NULL for a single process).
* ``feedback``: one row per event at most (a unique event id makes a repeat a no-op); ``seq``
  numbers accepted feedback 1, 2, 3, ... without gaps — the order the policy learns in.
* ``checkpoints``: policy state (``.npz`` bytes) after learning rows ``1..seq``, with a checksum
  over ``seq`` and the state (:func:`checkpoint_checksum`); a checkpoint that fails it, or does not
  decode, is skipped for the next older one (:meth:`Storage.verified_checkpoints`) — the log itself
  can always be replayed. Older logs gain the column at start-up, their checkpoints unverifiable
  (and ``decisions.info``, their old decisions without it).
* ``models``: slot -> model name, active or retired; ``meta``: the settings the log was written
  under (a different policy cannot resume from it) and the learner's heartbeat.
* ``snapshots``: the policy states the learner publishes for router workers (``version`` = rows
  learned; only the newest few are kept), :mod:`banditroute.service.cluster`.

Event ids and feedback ``seq`` numbers are assigned by the database, in the statement that inserts
the row (``MAX + 1``; the first statement of its transaction, so SQLite takes its snapshot and the
write lock together, and PostgreSQL serialises it with a transaction-scoped advisory lock:
:meth:`~banditroute.service.dialects.Dialect.serialize`). Any number of processes can therefore
log decisions and feedback into one log: ids are never reused or skipped by a failed write, and
``seq`` order is commit order, the order the learner learns in.

SQLite connections use ``journal_mode=WAL`` (readers never block the writer) and
``synchronous=NORMAL``: a commit reaches the OS before it returns, so it survives the server
process being killed (not a power cut, which needs ``FULL``). A new SQLite file is created
``0600`` (SQLite gives its ``-wal``/``-shm`` files the database file's mode). Each thread opens its
own :class:`Storage` on the shared engine (:meth:`Storage.clone`); the service writes decisions and
feedback from one thread only.

Faults (docs/reliability.md): every public method runs inside :func:`_guarded`, which rolls the
connection back after *any* failed statement (a PostgreSQL connection is never left in
``InFailedSqlTransaction``), drops a broken connection (reconnected on the next call, with
exponential backoff) and turns operational failures — connection lost, disk full, I/O error, lock
or statement timeout, read-only database — into :class:`StorageUnavailable` (HTTP 503). Every
statement is bounded by ``[storage] timeout_s`` (SQLite ``busy_timeout``; PostgreSQL
``connect_timeout``, ``statement_timeout`` and ``lock_timeout``). The engine hides SQL parameters
from its error messages, and failures are logged as one line.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError
from banditroute.ope.log import BanditLog, valid_rows
from banditroute.service.dialects import Dialect, dialect_for, sqlite_path

log = logging.getLogger("banditroute.service")

DEFAULT_TIMEOUT_S = 5.0
RECONNECT_MIN_S = 0.05  # backoff between reconnection attempts: doubles per failure up to the max
RECONNECT_MAX_S = 1.0
# PostgreSQL SQLSTATE classes of operational faults: connection (08), resources such as disk full
# (53), operator intervention such as a shutdown (57), system errors (58), read-only transaction.
_PG_UNAVAILABLE = ("08", "53", "57", "58", "25006")

metadata = sa.MetaData()

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("request_id", sa.String(200), unique=True, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("policy_version", sa.BigInteger, nullable=False),
    sa.Column("action", sa.Integer, nullable=False),
    sa.Column("probs", sa.LargeBinary, nullable=False),
    sa.Column("allowed", sa.LargeBinary, nullable=False),
    sa.Column("context", sa.LargeBinary, nullable=False),
    sa.Column("info", sa.LargeBinary, nullable=True),  # encode_info(decision info); NULL when empty, and in old logs
    sa.Column("worker", sa.Integer, nullable=True),  # the router worker that decided; NULL for a single process
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.BigInteger, sa.ForeignKey("decisions.event_id"), unique=True, nullable=False),
    sa.Column("reward", sa.Float, nullable=False),
    sa.Column("cost", sa.Float, nullable=True),
    sa.Column("received_at", sa.Float, nullable=False),
)
checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
    sa.Column("checksum", sa.String(80), nullable=True),  # checkpoint_checksum(seq, state); NULL in old logs
)
snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("state", sa.LargeBinary, nullable=False),
)
models = sa.Table(
    "models",
    metadata,
    sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100), unique=True, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("retired_at", sa.Float, nullable=True),
)
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
# The LLM gateway's record of each attempt (one per logged decision of kind chat / fallback / forced):
# outcome, usage and cost; prompt and completion only with `[gateway] log_prompts` (docs/gateway.md).
attempts = sa.Table(
    "gateway_attempts",
    metadata,
    sa.Column("event_id", sa.BigInteger, sa.ForeignKey("decisions.event_id"), primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("key_hash", sa.String(80), nullable=True),
    sa.Column("profile", sa.String(100), nullable=True),
    sa.Column("upstream", sa.String(100), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("prompt_sha256", sa.String(80), nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=True),
    sa.Column("completion_tokens", sa.Integer, nullable=True),
    sa.Column("cost", sa.Float, nullable=True),
    sa.Column("latency_s", sa.Float, nullable=True),
    sa.Column("prompt", sa.Text, nullable=True),
    sa.Column("completion", sa.Text, nullable=True),
)


@dataclass(frozen=True)
class DecisionRecord:
    event_id: int
    request_id: str | None
    created_at: float
    kind: str
    policy_version: int
    action: int
    probs: FloatArray
    allowed: np.ndarray
    context: FloatArray
    info: dict[str, np.ndarray] = field(default_factory=dict)
    worker: int | None = None  # the worker process that decided (``serve --workers N``)


@dataclass(frozen=True)
class FeedbackRecord:
    seq: int
    event_id: int
    reward: float
    cost: float | None
    received_at: float


@dataclass(frozen=True)
class ModelRecord:
    slot: int
    name: str
    active: bool
    added_at: float
    retired_at: float | None


@dataclass(frozen=True)
class LearnRow:
    """A feedback row joined with its decision: one learning step's input."""

    seq: int
    context: FloatArray
    action: int
    probs: FloatArray
    reward: float
    info: dict[str, np.ndarray] = field(default_factory=dict)


def _floats(blob: bytes) -> FloatArray:
    return np.frombuffer(blob, dtype=np.float64)


def _mask(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).astype(bool)


SNAPSHOTS_KEPT = 3  # published snapshots kept: a worker loading one is never racing its deletion
SNAPSHOT_CHANNEL = "banditroute_snapshot"  # PostgreSQL NOTIFY channels: a snapshot published,
FEEDBACK_CHANNEL = "banditroute_feedback"  # feedback accepted (they wake workers and the learner)


def _answer(row: Any, event_id: int) -> FeedbackRecord | None:
    """The feedback columns of a decision row joined with its feedback (``None``: no feedback yet)."""
    return None if row.seq is None else FeedbackRecord(row.seq, event_id, row.reward, row.cost, row.received_at)


class StorageUnavailable(Exception):
    """The database cannot serve the call now (connection lost, disk full, I/O error, timeout,
    read-only): HTTP 503. Nothing of the failed call was kept; a later call may succeed."""


def describe(exc: BaseException) -> str:
    """One line naming a database error: its type and the first line of its message (no SQL
    parameters: engines are made with ``hide_parameters=True``)."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0] if lines else 'no message'}"


def is_unavailable(exc: Exception) -> bool:
    """Whether ``exc`` is an operational fault of the database rather than a bad statement."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    return sqlstate.startswith(_PG_UNAVAILABLE)


def make_engine(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Engine:
    """An engine for ``url`` whose statements wait at most ``timeout_s``, set up by its
    :class:`~banditroute.service.dialects.Dialect` (an unsupported scheme is an :class:`InputError`)."""
    dialect = dialect_for(url)
    try:
        engine = sa.create_engine(
            url, pool_pre_ping=dialect.pre_ping, hide_parameters=True, connect_args=dialect.connect_args(timeout_s)
        )
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise InputError(f"cannot use storage url {url.split('@')[-1]!r}: {exc}") from None
    dialect.prepare(engine, timeout_s)
    return engine


P = ParamSpec("P")
R = TypeVar("R")


def _guarded(method: Callable[P, R]) -> Callable[P, R]:
    """Run a :class:`Storage` method; on any error roll back (drop a broken connection), log one
    line and raise :class:`StorageUnavailable` for operational faults, the error otherwise (a value
    the driver cannot bind raises before the statement runs: rolled back all the same)."""

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        store: Storage = args[0]  # type: ignore[assignment]
        try:
            result = method(*args, **kwargs)
        except StorageUnavailable:
            store.last_failure_at = time.monotonic()
            raise
        except Exception as exc:
            raise store._failed(method.__name__, exc) from None
        finally:  # after the commit or the rollback
            if store.turn is not None:
                store.turn.release()
        store.last_success_at = time.monotonic()
        return result

    return run


class Storage:
    """The log on one connection (one per thread; see :meth:`clone`), rolled back after any failure
    and reconnected after a broken connection (module docstring)."""

    def __init__(self, url_or_engine: str | Engine, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.engine = make_engine(url_or_engine, timeout_s) if isinstance(url_or_engine, str) else url_or_engine
        self.timeout_s = timeout_s
        self.last_failure_at = -math.inf  # time.monotonic() of the last failed / successful call
        self.last_success_at = -math.inf
        self.last_error = ""
        self.on_reconnect: Callable[[], None] | None = None  # runs after each reconnection
        self._backoff = 0.0
        self._retry_at = -math.inf
        self.dialect: Dialect = dialect_for(self.engine.url)
        self.turn = self.dialect.write_turn(self.engine, timeout_s)  # taken by _serialize, let go by _guarded
        self._insert = self.dialect.insert
        # Hot-path statements built once, so SQLAlchemy compiles each once (per-call construction
        # costs more than the database work).
        next_event = sa.select(sa.func.coalesce(sa.func.max(decisions.c.event_id), 0) + 1).scalar_subquery()
        self._insert_decision = decisions.insert()
        self._insert_next_decision = decisions.insert().values(event_id=next_event).returning(decisions.c.event_id)
        answered = decisions.outerjoin(feedback, feedback.c.event_id == decisions.c.event_id)
        answer_columns = (feedback.c.seq, feedback.c.reward, feedback.c.cost, feedback.c.received_at)
        self._select_decision = sa.select(decisions, *answer_columns).select_from(answered)
        self._select_answer = (  # what feedback needs of its decision (feedback_state)
            sa.select(decisions.c.created_at, decisions.c.action, *answer_columns)
            .select_from(answered)
            .where(decisions.c.event_id == sa.bindparam("key"))
        )
        next_seq = sa.select(sa.func.coalesce(sa.func.max(feedback.c.seq), 0) + 1).scalar_subquery()
        self._insert_feedback = (
            self._insert(feedback)
            .values(seq=next_seq)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(feedback.c.seq)
        )  # a returned row means inserted (psycopg reports no rowcount here)
        self._decisions_after = (  # polled by every gateway worker (decisions_after)
            sa.select(decisions.c.event_id, decisions.c.created_at)
            .where(
                decisions.c.event_id > sa.bindparam("after"),
                decisions.c.kind.in_(sa.bindparam("kinds", expanding=True)),
            )
            .order_by(decisions.c.event_id)
            .limit(sa.bindparam("limit"))
        )
        self._conn: sa.Connection | None
        try:
            self._conn = self.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            hint = " (is the database file or its directory read-only?)" if sqlite_path(self.engine) else ""
            raise InputError(f"cannot open storage: {describe(exc)}{hint}") from None

    def clone(self) -> Storage:
        """Another connection to the same database (for another thread)."""
        return Storage(self.engine, self.timeout_s)

    @property
    def conn(self) -> sa.Connection:
        """The connection, reconnected after a fault (at most once per backoff interval)."""
        if self._conn is None:
            now = time.monotonic()
            if now < self._retry_at:
                raise StorageUnavailable(f"storage unavailable: reconnecting after {self.last_error}")
            try:
                self._conn = self.engine.connect()
            except sa.exc.SQLAlchemyError as exc:
                self._backoff = min(max(2 * self._backoff, RECONNECT_MIN_S), RECONNECT_MAX_S)
                self._retry_at = now + self._backoff
                self.last_error = describe(exc)
                raise StorageUnavailable(f"storage unavailable: {self.last_error}") from None
            self._backoff = 0.0
            log.info("storage: reconnected")
            if self.on_reconnect is not None:
                try:
                    self.on_reconnect()
                except StorageUnavailable as exc:
                    self._conn.close()
                    self._conn = None
                    self.last_error = str(exc)
                    raise
        return self._conn

    def _serialize(self, table: str) -> None:
        """Begin a write that takes the next id of ``table`` (:meth:`Dialect.serialize`), after the
        write turn where the dialect has one; :func:`_guarded` lets go of the turn."""
        if self.turn is not None:
            self.turn.take()
        self.dialect.serialize(self.conn, table)

    @property
    def connected(self) -> bool:
        """Whether a connection is open (``False`` after a fault dropped it, until the next call)."""
        return self._conn is not None

    def _failed(self, op: str, exc: Exception) -> Exception:
        """Roll back after ``exc`` (drop the connection if that fails too) and say what to raise."""
        self.last_failure_at = time.monotonic()
        self.last_error = describe(exc)
        log.warning("storage: %s failed: %s", op, self.last_error)
        conn = self._conn
        broken = getattr(exc, "connection_invalidated", False)
        if conn is not None and not broken:
            try:
                conn.rollback()
            except sa.exc.SQLAlchemyError:
                broken = True
        if conn is not None and (broken or conn.invalidated):
            self._conn = None
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # already gone; the pool discards it
                conn.close()
        if is_unavailable(exc):
            return StorageUnavailable(f"storage unavailable: {self.last_error}")
        return exc

    def failing(self, within_s: float) -> str | None:
        """The last error if the last call failed less than ``within_s`` seconds ago, else ``None``."""
        recent = time.monotonic() - self.last_failure_at < within_s
        return self.last_error if recent and self.last_failure_at > self.last_success_at else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def dispose(self) -> None:
        """Close this connection and every pooled one."""
        self.close()
        self.engine.dispose()

    @_guarded
    def probe(self) -> None:
        """A cheap read (health checks): it never waits on the write lock (WAL readers don't)."""
        self.conn.execute(sa.select(meta.c.key).limit(1)).first()
        self.conn.rollback()

    @_guarded
    def has_schema(self) -> bool:
        """Whether a router has set this log up, with the tables of this version (``snapshots``)."""
        found = sa.inspect(self.conn).has_table(snapshots.name)
        self.conn.rollback()
        return bool(found)

    @_guarded
    def create_schema(self) -> None:
        """The tables, and the nullable columns a log written by an older version lacks: ``checksum``
        of ``checkpoints`` (its old checkpoints stay unverifiable: skipped, the log replayed), and
        ``info`` and ``worker`` of ``decisions`` (its old decisions carry none, as before)."""
        metadata.create_all(self.conn)
        added = ((checkpoints, checkpoints.c.checksum), (decisions, decisions.c.info), (decisions, decisions.c.worker))
        for table, column in added:
            if column.name not in {c["name"] for c in sa.inspect(self.conn).get_columns(table.name)}:
                kind = column.type.compile(dialect=self.engine.dialect)
                self.conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
        self.conn.commit()

    # ------------------------------------------------------------------ meta and models
    @_guarded
    def get_meta(self, key: str) -> str | None:
        value = self.conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()
        self.conn.rollback()
        return value

    @_guarded
    def meta_under(self, prefix: str) -> dict[str, str]:
        """Every ``meta`` entry whose key starts with ``prefix``."""
        rows = self.conn.execute(
            sa.select(meta.c.key, meta.c.value).where(meta.c.key.startswith(prefix, autoescape=True))
        )
        out = {key: value for key, value in rows}
        self.conn.rollback()
        return out

    @_guarded
    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(self._insert(meta).values(key=key, value=value).on_conflict_do_nothing())
        self.conn.execute(meta.update().where(meta.c.key == key).values(value=value))
        self.conn.commit()

    @_guarded
    def models(self) -> list[ModelRecord]:
        rows = self.conn.execute(sa.select(models).order_by(models.c.slot)).all()
        self.conn.rollback()
        return [ModelRecord(r.slot, r.name, bool(r.active), r.added_at, r.retired_at) for r in rows]

    @_guarded
    def add_model(self, slot: int, name: str, now: float) -> None:
        self.conn.execute(models.insert().values(slot=slot, name=name, active=True, added_at=now, retired_at=None))
        self.conn.commit()

    @_guarded
    def retire_model(self, slot: int, now: float) -> None:
        self.conn.execute(models.update().where(models.c.slot == slot).values(active=False, retired_at=now))
        self.conn.commit()

    # ------------------------------------------------------------------ decisions and feedback
    @_guarded
    def max_event_id(self) -> int:
        value = self.conn.execute(sa.select(sa.func.max(decisions.c.event_id))).scalar()
        self.conn.rollback()
        return int(value or 0)

    @_guarded
    def max_seq(self) -> int:
        value = self.conn.execute(sa.select(sa.func.max(feedback.c.seq))).scalar()
        self.conn.rollback()
        return int(value or 0)

    def insert_decision(self, rec: DecisionRecord) -> int:
        """Log one decision; returns the event id the log gave it (``rec.event_id`` is ignored)."""
        return self.insert_decisions([rec])[0]

    @_guarded
    def insert_decisions(self, recs: list[DecisionRecord]) -> list[int]:
        """Log decisions in one commit (a micro-batch of routes: all or none); returns their event
        ids, consecutive, assigned by the log (module docstring; ``rec.event_id`` is ignored)."""
        rows = [
            {
                "request_id": rec.request_id,
                "created_at": rec.created_at,
                "kind": rec.kind,
                "policy_version": rec.policy_version,
                "action": rec.action,
                "probs": np.ascontiguousarray(rec.probs, dtype=np.float64).tobytes(),
                "allowed": np.ascontiguousarray(rec.allowed, dtype=np.uint8).tobytes(),
                "context": np.ascontiguousarray(rec.context, dtype=np.float64).tobytes(),
                "info": encode_info(rec.info),
                "worker": rec.worker,
            }
            for rec in recs
        ]
        self._serialize("decisions")
        first = int(self.conn.execute(self._insert_next_decision, rows[0]).scalar_one())
        if len(rows) > 1:
            self.conn.execute(self._insert_decision, [{**r, "event_id": first + i} for i, r in enumerate(rows) if i])
        self.conn.commit()
        return list(range(first, first + len(rows)))

    @_guarded
    def insert_attempts(self, rows: list[dict[str, Any]]) -> None:
        """Gateway attempts (``attempts`` table; their decisions are already logged), in one commit."""
        self.conn.execute(attempts.insert(), rows)
        self.conn.commit()

    @_guarded
    def attempts(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Gateway attempts created at or after ``since`` (a UNIX time), in event order."""
        stmt = sa.select(attempts).where(attempts.c.created_at >= since).order_by(attempts.c.event_id)
        rows = [dict(r) for r in self.conn.execute(stmt).mappings()]
        self.conn.rollback()
        return rows

    @_guarded
    def decisions_after(self, after_event: int, kinds: Sequence[str], limit: int) -> list[tuple[int, float]]:
        """``(event_id, created_at)`` of the decisions of these kinds with ids above ``after_event``, in
        order, at most ``limit``: ids grow in commit order, so a caller that keeps the last id reads each
        decision once (the gateway follows other router workers' requests by them)."""
        params = {"after": after_event, "kinds": list(kinds), "limit": limit}
        rows = self.conn.execute(self._decisions_after, params).all()
        self.conn.rollback()
        return [(int(r.event_id), float(r.created_at)) for r in rows]

    @_guarded
    def attempt_costs(self, event_ids: Sequence[int], chunk: int = 500) -> list[dict[str, Any]]:
        """``event_id``, ``created_at``, ``key_hash``, ``profile`` and ``cost`` of the gateway attempt rows
        of these events, for those that have one (by primary key, ``chunk`` ids per statement)."""
        cols = (attempts.c.event_id, attempts.c.created_at, attempts.c.key_hash, attempts.c.profile, attempts.c.cost)
        out: list[dict[str, Any]] = []
        for i in range(0, len(event_ids), chunk):
            stmt = sa.select(*cols).where(attempts.c.event_id.in_(list(event_ids[i : i + chunk])))
            out += [dict(r) for r in self.conn.execute(stmt).mappings()]
        self.conn.rollback()
        return out

    @_guarded
    def _decision(self, where: Any, params: dict[str, Any]) -> tuple[DecisionRecord, FeedbackRecord | None] | None:
        row = self.conn.execute(self._select_decision.where(where), params).first()
        self.conn.rollback()
        if row is None:
            return None
        rec = DecisionRecord(
            row.event_id,
            row.request_id,
            row.created_at,
            row.kind,
            row.policy_version,
            row.action,
            _floats(row.probs),
            _mask(row.allowed),
            _floats(row.context),
            decode_info(row.info),
            row.worker,
        )
        return rec, _answer(row, row.event_id)

    def get_decision(self, event_id: int) -> tuple[DecisionRecord, FeedbackRecord | None] | None:
        """The decision of ``event_id`` and its feedback (``None`` if none yet); ``None`` if unknown."""
        return self._decision(decisions.c.event_id == sa.bindparam("key"), {"key": event_id})

    @_guarded
    def feedback_state(self, event_id: int) -> tuple[float, int, FeedbackRecord | None] | None:
        """``(created_at, action, feedback so far)`` of ``event_id``'s decision, ``None`` if unknown:
        what accepting feedback needs, without reading and decoding the context (a third of
        :meth:`get_decision`'s cost; a worker's feedback for another worker's decision)."""
        row = self.conn.execute(self._select_answer, {"key": event_id}).first()
        self.conn.rollback()
        return None if row is None else (row.created_at, row.action, _answer(row, event_id))

    def decision_for_request(self, request_id: str) -> DecisionRecord | None:
        found = self._decision(decisions.c.request_id == sa.bindparam("key"), {"key": request_id})
        return None if found is None else found[0]

    def insert_feedback(self, event_id: int, reward: float, cost: float | None, now: float) -> int | None:
        """Accept feedback for ``event_id`` unless it already has some: returns the ``seq`` the log
        gave it (committed), or ``None`` for a repeat (first wins)."""
        return self.insert_feedbacks([(event_id, reward, cost)], now)[0]

    @_guarded
    def insert_feedbacks(self, rows: Sequence[tuple[int, float, float | None]], now: float) -> list[int | None]:
        """:meth:`insert_feedback` for ``(event_id, reward, cost)`` rows in order, in one commit (a
        group of feedback requests: all or none); a later row for an event already answered, in
        the log or earlier in ``rows``, gets ``None``."""
        self._serialize("feedback")
        out: list[int | None] = []
        for event_id, reward, cost in rows:
            params = {"event_id": event_id, "reward": reward, "cost": cost, "received_at": now}
            seq = self.conn.execute(self._insert_feedback, params).scalar()
            out.append(None if seq is None else int(seq))
        if any(seq is not None for seq in out):
            self.dialect.notify(self.conn, FEEDBACK_CHANNEL, "")  # delivered at the commit
        self.conn.commit()
        return out

    @_guarded
    def settled_through(self, after_event: int, cutoff: float) -> int:
        """The largest event id ``L >= after_event`` such that every decision up to ``L`` was made
        before ``cutoff`` (a UNIX time): the one before the first later decision, else the last one.
        A decision logged from now on gets a larger id, so ids up to ``L`` are final."""
        first_open = self.conn.execute(
            sa.select(sa.func.min(decisions.c.event_id)).where(
                decisions.c.event_id > after_event, decisions.c.created_at >= cutoff
            )
        ).scalar()
        last = self.conn.execute(sa.select(sa.func.max(decisions.c.event_id))).scalar() if first_open is None else None
        self.conn.rollback()
        return max(after_event, int(first_open) - 1 if first_open is not None else int(last or 0))

    @_guarded
    def unanswered(self, after_event: int, through: int, limit: int) -> list[int]:
        """Event ids in ``(after_event, through]`` of decisions without feedback, in order, at most
        ``limit`` (the joiner's default rewards, :mod:`banditroute.service.cluster`)."""
        query = (
            sa.select(decisions.c.event_id)
            .select_from(decisions.outerjoin(feedback, feedback.c.event_id == decisions.c.event_id))
            .where(decisions.c.event_id > after_event, decisions.c.event_id <= through, feedback.c.seq.is_(None))
            .order_by(decisions.c.event_id)
            .limit(limit)
        )
        ids = self.conn.execute(query).scalars().all()
        self.conn.rollback()
        return [int(i) for i in ids]

    def learn_rows(self, after_seq: int, chunk: int = 2048) -> Iterator[LearnRow]:
        """Feedback with ``seq > after_seq`` joined with its decision, in ``seq`` order."""
        last = after_seq
        while True:
            rows = self._learn_chunk(last, chunk)
            for r in rows:
                yield LearnRow(r.seq, _floats(r.context), r.action, _floats(r.probs), r.reward, decode_info(r.info))
            if len(rows) < chunk:
                return
            last = rows[-1].seq

    @_guarded
    def _learn_chunk(self, after_seq: int, chunk: int) -> list[Any]:
        query = (
            sa.select(
                feedback.c.seq,
                decisions.c.context,
                decisions.c.action,
                decisions.c.probs,
                feedback.c.reward,
                decisions.c.info,
            )
            .join(decisions, decisions.c.event_id == feedback.c.event_id)
            .where(feedback.c.seq > after_seq)
            .order_by(feedback.c.seq)
            .limit(chunk)
        )
        rows = self.conn.execute(query).all()
        self.conn.rollback()
        return list(rows)

    @_guarded
    def counts(self) -> tuple[int, int]:
        """``(decisions, feedback)`` row counts."""
        n_dec = self.conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar()
        n_fb = self.conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar()
        self.conn.rollback()
        return int(n_dec or 0), int(n_fb or 0)

    @_guarded
    def recent(self, limit: int) -> dict[str, np.ndarray]:
        """The last ``limit`` decisions: ``created_at``, ``action`` and ``reward`` (NaN without feedback)."""
        query = (
            sa.select(decisions.c.created_at, decisions.c.action, feedback.c.reward)
            .select_from(decisions.outerjoin(feedback, feedback.c.event_id == decisions.c.event_id))
            .order_by(decisions.c.event_id.desc())
            .limit(limit)
        )
        rows = self.conn.execute(query).all()[::-1]
        self.conn.rollback()
        return {
            "created_at": np.array([r.created_at for r in rows], dtype=np.float64),
            "action": np.array([r.action for r in rows], dtype=np.int64),
            "reward": np.array([np.nan if r.reward is None else r.reward for r in rows], dtype=np.float64),
        }

    @_guarded
    def export_log(
        self, reward_range: tuple[float, float] | None, *, last: int | None = None, kind: str | None = None
    ) -> tuple[BanditLog | None, int]:
        """Decisions that have feedback, oldest first (the last ``last`` of them), as a :class:`BanditLog`,
        and the number of invalid rows left out of it (:func:`valid_log_rows`)."""
        query = (
            sa.select(
                decisions.c.context, decisions.c.action, decisions.c.probs, decisions.c.allowed, feedback.c.reward
            )
            .join(feedback, feedback.c.event_id == decisions.c.event_id)
            .order_by(decisions.c.event_id.desc())
        )
        if kind is not None:
            query = query.where(decisions.c.kind == kind)
        if last is not None:
            query = query.limit(last)
        rows = self.conn.execute(query).all()[::-1]
        self.conn.rollback()
        return valid_log_rows(rows, reward_range)

    # ------------------------------------------------------------------ snapshots (router workers)
    @_guarded
    def publish_snapshot(self, version: int, state: bytes, now: float) -> None:
        """Store the policy state after ``version`` rows for the workers (replacing one of the same
        version: a restarted learner republishes) and keep only the newest :data:`SNAPSHOTS_KEPT`."""
        self.dialect.notify(self.conn, SNAPSHOT_CHANNEL, str(version))  # delivered at the commit
        self._replace_keeping_newest(snapshots.c.version, {"version": version, "created_at": now, "state": state},
                                     SNAPSHOTS_KEPT)  # fmt: skip

    def listen(self, channel: str) -> Any:
        r"""A pooled DBAPI connection of its own that ``LISTEN``\ s on ``channel`` (PostgreSQL; its
        ``driver_connection.notifies()`` yields the notifications), or ``None`` where the database has
        no notifications or cannot be reached now."""
        if not self.dialect.notifications:
            return None
        try:
            raw = self.engine.raw_connection()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("storage: cannot open a listening connection: %s", describe(exc))
            return None
        try:
            driver: Any = raw.driver_connection
            driver.autocommit = True
            driver.execute(f"LISTEN {channel}")
        except Exception as exc:
            log.warning("storage: LISTEN failed: %s", describe(exc))
            raw.invalidate()
            return None
        return raw

    @_guarded
    def latest_snapshot(self, newer_than: int = -1) -> tuple[int, bytes] | None:
        """``(version, state)`` of the newest published snapshot if its version is above
        ``newer_than``, else ``None`` (a cheap poll: the blob is read only when it is new)."""
        version = self.conn.execute(sa.select(sa.func.max(snapshots.c.version))).scalar()
        if version is None or version <= newer_than:
            self.conn.rollback()
            return None
        state = self.conn.execute(sa.select(snapshots.c.state).where(snapshots.c.version == version)).scalar()
        self.conn.rollback()
        return None if state is None else (int(version), bytes(state))

    # ------------------------------------------------------------------ checkpoints
    @_guarded
    def save_checkpoint(self, seq: int, state: bytes, now: float, keep: int) -> None:
        """Store the state after rows ``1..seq`` with its checksum (replacing one at the same ``seq``,
        which may be a damaged one) and drop all but the newest ``keep`` checkpoints."""
        row = {"seq": seq, "created_at": now, "state": state, "checksum": checkpoint_checksum(seq, state)}
        self._replace_keeping_newest(checkpoints.c.seq, row, keep)

    def _replace_keeping_newest(self, key: sa.Column[Any], row: dict[str, Any], keep: int) -> None:
        """Insert ``row`` (replacing the row with the same ``key``) and delete all but the ``keep`` rows
        with the largest ``key``, in one commit."""
        table = key.table
        insert = self._insert(table).values(**row)
        self.conn.execute(insert.on_conflict_do_update(index_elements=[key.name], set_=row))
        newest = sa.select(key).order_by(key.desc()).limit(keep)
        self.conn.execute(table.delete().where(key.not_in(newest)))
        self.conn.commit()

    @_guarded
    def checkpoint_seqs(self) -> list[int]:
        """The ``seq`` of every stored checkpoint, newest first."""
        seqs = self.conn.execute(sa.select(checkpoints.c.seq).order_by(checkpoints.c.seq.desc())).scalars().all()
        self.conn.rollback()
        return [int(q) for q in seqs]

    @_guarded
    def checkpoint(self, seq: int) -> tuple[bytes, str | None] | None:
        """The state blob and stored checksum of the checkpoint at ``seq`` (``None`` if there is none)."""
        row = self.conn.execute(sa.select(checkpoints).where(checkpoints.c.seq == seq)).first()
        self.conn.rollback()
        return None if row is None else (bytes(row.state), row.checksum)

    def verified_checkpoints(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """The stored checkpoints that verify and decode, newest first, as ``(seq, state_dict)``; a
        corrupt one (:class:`CorruptCheckpoint`) is skipped with a warning naming its ``seq``."""
        for seq in self.checkpoint_seqs():
            found = self.checkpoint(seq)
            if found is None:  # pruned since listed
                continue
            try:
                yield seq, verify_checkpoint(seq, *found)
            except CorruptCheckpoint as exc:
                log.warning("skipping the checkpoint at row %d: %s", seq, exc)


class CorruptCheckpoint(InputError):
    """A stored checkpoint whose checksum is missing or wrong, or whose state does not decode."""


def checkpoint_checksum(seq: int, state: bytes) -> str:
    """``sha256:<hex>`` of the row count a checkpoint covers and its state blob (a blob moved to
    another ``seq`` fails too)."""
    return "sha256:" + hashlib.sha256(f"{seq}:".encode() + state).hexdigest()


def verify_checkpoint(seq: int, state: bytes, checksum: str | None) -> dict[str, Any]:
    """The decoded state of a checkpoint whose checksum matches; :class:`CorruptCheckpoint` otherwise."""
    if checksum is None:
        raise CorruptCheckpoint("corrupt or unverifiable checkpoint: it has no checksum (written before checksums)")
    if not hmac.compare_digest(checksum, checkpoint_checksum(seq, state)):
        raise CorruptCheckpoint("corrupt checkpoint: its state does not match its checksum")
    try:
        return decode_state(state)
    except InputError as exc:
        raise CorruptCheckpoint(f"corrupt checkpoint: {exc}") from None


def valid_log_rows(rows: Sequence[Any], reward_range: tuple[float, float] | None) -> tuple[BanditLog | None, int]:
    """The rows (``context``, ``action``, ``probs``, ``allowed``, ``reward``) that form a valid log,
    and how many were left out: undecodable blobs, shapes unlike the log's, and rows failing
    :func:`~banditroute.ope.log.valid_rows`. The service never logs such rows; a damaged or
    hand-edited database can hold them, and one of them must not stop every off-policy estimate."""
    decoded = []
    for r in rows:
        try:
            decoded.append((_floats(r.context), int(r.action), _floats(r.probs), _mask(r.allowed), float(r.reward)))
        except (ValueError, TypeError):
            continue
    if not decoded:
        return None, len(rows)
    shape = Counter((len(c), len(p)) for c, _, p, _, _ in decoded).most_common(1)[0][0]
    decoded = [row for row in decoded if (len(row[0]), len(row[2])) == shape and len(row[3]) == shape[1]]
    contexts, actions, probs, allowed, rewards = (np.array(col) for col in zip(*decoded, strict=True))
    ok = valid_rows(contexts, actions, probs, allowed, rewards, reward_range)
    skipped = len(rows) - int(ok.sum())
    if skipped:
        log.warning("off-policy log: skipped %d invalid rows of %d", skipped, len(rows))
    if not ok.any():
        return None, skipped
    log_ = BanditLog(
        contexts=contexts[ok],
        actions=actions[ok].astype(np.int64),
        probs=probs[ok],
        rewards=rewards[ok],
        allowed=allowed[ok].astype(bool),
        reward_range=reward_range,
    )
    return log_, skipped


def encode_state(state: dict[str, Any]) -> bytes:
    """A policy ``state_dict`` as ``.npz`` bytes (arrays, plus the name and config as JSON; no pickle)."""
    buf = io.BytesIO()
    header = json.dumps({"policy": state["policy"], "config": state["config"]})
    arrays = {f"state.{k}": np.asarray(v) for k, v in state["state"].items()}
    np.savez(buf, header=np.array(header), **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_state(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`encode_state`; a damaged blob raises :class:`InputError`."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            header = json.loads(str(npz["header"][()]))
            arrays = {k.removeprefix("state."): npz[k] for k in npz.files if k.startswith("state.")}
        return {"policy": header["policy"], "config": header["config"], "state": arrays}
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise InputError(f"corrupted policy checkpoint: {exc!r}") from None


def encode_info(info: Mapping[str, Any]) -> bytes | None:
    """One decision's ``info`` (the extras a policy needs back at learn time, e.g. the two-stage
    system's candidate set) as ``.npz`` bytes — arrays with their dtype and shape, exactly; no
    pickle — or ``None`` when it is empty (most policies)."""
    if not info:
        return None
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in info.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def decode_info(blob: bytes | None) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_info`. A damaged blob gives ``{}``: the policy then refuses the row's
    learning group with a warning (:func:`~banditroute.service.learner.learn_group`), live and in
    replay alike, as it does for a log written before decisions carried ``info``."""
    if blob is None:
        return {}
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        log.warning("a logged decision's info does not decode; its learning group will be skipped")
        return {}
