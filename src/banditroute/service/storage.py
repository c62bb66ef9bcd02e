"""The router's log behind one interface: SQLite (WAL, zero set-up) or PostgreSQL, by URL.

Tables (SQLAlchemy Core, the same schema on both databases):

* ``decisions``: every routing decision — event id, optional client request id, time, kind
  (``route`` / ``search``), policy version, chosen slot, the *full* probability vector over the
  policy's slots, the allowed-slot mask and the context (float64 bytes).
* ``feedback``: one row per event at most (a unique event id makes a repeat a no-op); ``seq``
  numbers accepted feedback 1, 2, 3, ... without gaps — the order the policy learns in.
* ``checkpoints``: policy state (``.npz`` bytes) after learning rows ``1..seq``.
* ``models``: slot -> model name, active or retired; ``meta``: the settings the log was written
  under (a different policy cannot resume from it).

SQLite connections use ``journal_mode=WAL`` (readers never block the writer) and
``synchronous=NORMAL``: a commit reaches the OS before it returns, so it survives the server
process being killed (not a power cut, which needs ``FULL``). Each thread opens its own
:class:`Storage` on the shared engine (:meth:`Storage.clone`); the service writes decisions and
feedback from one thread only.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError
from banditroute.ope.log import BanditLog

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


def _floats(blob: bytes) -> FloatArray:
    return np.frombuffer(blob, dtype=np.float64)


def _mask(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).astype(bool)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite connections get WAL, ``synchronous=NORMAL`` and a busy timeout."""
    try:
        engine = sa.create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise InputError(f"cannot use storage url {url.split('@')[-1]!r}: {exc}") from None
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


class Storage:
    """The log on one connection (one per thread; see :meth:`clone`)."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self._insert = sqlite_insert if self.dialect == "sqlite" else postgresql_insert
        # Hot-path statements built once, so SQLAlchemy compiles each once (per-call construction
        # costs more than the database work).
        self._insert_decision = decisions.insert()
        self._select_decision = sa.select(
            decisions, feedback.c.seq, feedback.c.reward, feedback.c.cost, feedback.c.received_at
        ).select_from(decisions.outerjoin(feedback, feedback.c.event_id == decisions.c.event_id))
        self._insert_feedback = (
            self._insert(feedback).on_conflict_do_nothing(index_elements=["event_id"]).returning(feedback.c.seq)
        )  # a returned row means inserted (psycopg reports no rowcount here)
        try:
            self.conn = self.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise InputError(f"cannot open storage: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None

    @property
    def dialect(self) -> str:
        return str(self.engine.dialect.name)

    def clone(self) -> Storage:
        """Another connection to the same database (for another thread)."""
        return Storage(self.engine)

    def close(self) -> None:
        self.conn.close()

    def dispose(self) -> None:
        """Close this connection and every pooled one."""
        self.conn.close()
        self.engine.dispose()

    def create_schema(self) -> None:
        metadata.create_all(self.conn)
        self.conn.commit()

    # ------------------------------------------------------------------ meta and models
    def get_meta(self, key: str) -> str | None:
        value = self.conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()
        self.conn.rollback()
        return value

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(self._insert(meta).values(key=key, value=value).on_conflict_do_nothing())
        self.conn.execute(meta.update().where(meta.c.key == key).values(value=value))
        self.conn.commit()

    def models(self) -> list[ModelRecord]:
        rows = self.conn.execute(sa.select(models).order_by(models.c.slot)).all()
        self.conn.rollback()
        return [ModelRecord(r.slot, r.name, bool(r.active), r.added_at, r.retired_at) for r in rows]

    def add_model(self, slot: int, name: str, now: float) -> None:
        self.conn.execute(models.insert().values(slot=slot, name=name, active=True, added_at=now, retired_at=None))
        self.conn.commit()

    def retire_model(self, slot: int, now: float) -> None:
        self.conn.execute(models.update().where(models.c.slot == slot).values(active=False, retired_at=now))
        self.conn.commit()

    # ------------------------------------------------------------------ decisions and feedback
    def max_event_id(self) -> int:
        value = self.conn.execute(sa.select(sa.func.max(decisions.c.event_id))).scalar()
        self.conn.rollback()
        return int(value or 0)

    def max_seq(self) -> int:
        value = self.conn.execute(sa.select(sa.func.max(feedback.c.seq))).scalar()
        self.conn.rollback()
        return int(value or 0)

    def insert_decision(self, rec: DecisionRecord) -> None:
        self.conn.execute(
            self._insert_decision,
            {
                "event_id": rec.event_id,
                "request_id": rec.request_id,
                "created_at": rec.created_at,
                "kind": rec.kind,
                "policy_version": rec.policy_version,
                "action": rec.action,
                "probs": np.ascontiguousarray(rec.probs, dtype=np.float64).tobytes(),
                "allowed": np.ascontiguousarray(rec.allowed, dtype=np.uint8).tobytes(),
                "context": np.ascontiguousarray(rec.context, dtype=np.float64).tobytes(),
            },
        )
        self.conn.commit()

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
        )
        fb = None if row.seq is None else FeedbackRecord(row.seq, row.event_id, row.reward, row.cost, row.received_at)
        return rec, fb

    def get_decision(self, event_id: int) -> tuple[DecisionRecord, FeedbackRecord | None] | None:
        """The decision of ``event_id`` and its feedback (``None`` if none yet); ``None`` if unknown."""
        return self._decision(decisions.c.event_id == sa.bindparam("key"), {"key": event_id})

    def decision_for_request(self, request_id: str) -> DecisionRecord | None:
        found = self._decision(decisions.c.request_id == sa.bindparam("key"), {"key": request_id})
        return None if found is None else found[0]

    def insert_feedback(self, rec: FeedbackRecord) -> bool:
        """Insert unless the event already has feedback; True when inserted (and committed)."""
        params = {
            "seq": rec.seq,
            "event_id": rec.event_id,
            "reward": rec.reward,
            "cost": rec.cost,
            "received_at": rec.received_at,
        }
        inserted = self.conn.execute(self._insert_feedback, params).first() is not None
        self.conn.commit()
        return inserted

    def learn_rows(self, after_seq: int, chunk: int = 2048) -> Iterator[LearnRow]:
        """Feedback with ``seq > after_seq`` joined with its decision, in ``seq`` order."""
        last = after_seq
        while True:
            query = (
                sa.select(feedback.c.seq, decisions.c.context, decisions.c.action, decisions.c.probs, feedback.c.reward)
                .join(decisions, decisions.c.event_id == feedback.c.event_id)
                .where(feedback.c.seq > last)
                .order_by(feedback.c.seq)
                .limit(chunk)
            )
            rows = self.conn.execute(query).all()
            self.conn.rollback()
            for r in rows:
                yield LearnRow(r.seq, _floats(r.context), r.action, _floats(r.probs), r.reward)
            if len(rows) < chunk:
                return
            last = rows[-1].seq

    def counts(self) -> tuple[int, int]:
        """``(decisions, feedback)`` row counts."""
        n_dec = self.conn.execute(sa.select(sa.func.count()).select_from(decisions)).scalar()
        n_fb = self.conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar()
        self.conn.rollback()
        return int(n_dec or 0), int(n_fb or 0)

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

    def export_log(
        self, reward_range: tuple[float, float] | None, *, last: int | None = None, kind: str | None = None
    ) -> BanditLog | None:
        """Decisions that have feedback, oldest first (the last ``last`` of them), as a :class:`BanditLog`."""
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
        if not rows:
            return None
        return BanditLog(
            contexts=np.stack([_floats(r.context) for r in rows]),
            actions=np.array([r.action for r in rows], dtype=np.int64),
            probs=np.stack([_floats(r.probs) for r in rows]),
            rewards=np.array([r.reward for r in rows], dtype=np.float64),
            allowed=np.stack([_mask(r.allowed) for r in rows]),
            reward_range=reward_range,
        )

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, seq: int, state: bytes, now: float, keep: int) -> None:
        """Store the state after rows ``1..seq`` and drop all but the newest ``keep`` checkpoints."""
        self.conn.execute(
            self._insert(checkpoints).values(seq=seq, created_at=now, state=state).on_conflict_do_nothing()
        )
        newest = sa.select(checkpoints.c.seq).order_by(checkpoints.c.seq.desc()).limit(keep)
        self.conn.execute(checkpoints.delete().where(checkpoints.c.seq.not_in(newest)))
        self.conn.commit()

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        row = self.conn.execute(sa.select(checkpoints).order_by(checkpoints.c.seq.desc()).limit(1)).first()
        self.conn.rollback()
        return None if row is None else (int(row.seq), bytes(row.state))


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
