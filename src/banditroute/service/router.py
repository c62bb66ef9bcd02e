"""The router service's core, without HTTP: decide, log, accept feedback, manage models.

:class:`Router` ties the pieces together. A decision is taken by the *published* policy snapshot
(:mod:`banditroute.service.learner`) restricted to the allowed models
(``Policy.act(..., allowed=...)``, which validates the context), logged with its context, full
probability vector and ``info``, and answered with its event id. Feedback is validated against
the log (unknown event: 404, too late: 410, repeated: acknowledged, not learned again), committed
with the next learning sequence number and handed to the learner with the decision as logged.
The log assigns event ids and sequence numbers in the inserting statement
(:mod:`banditroute.service.storage`), so a write that fails
(:class:`~banditroute.service.storage.StorageUnavailable`, HTTP 503) is not answered and takes no
number, and the learning order is the commit order. See docs/reliability.md.

A router has one of three roles (``serve --workers N``, :mod:`banditroute.service.cluster`):

* ``single`` (plain ``serve``): decides, logs and learns in one process, holding the log's writer
  lock (:mod:`banditroute.service.writer_lock`), so a second ``single`` router is refused;
* ``learner``: holds the writer lock, learns the feedback any process committed, publishes snapshots
  and joins default rewards; it serves no requests;
* ``worker``: decides from the newest published snapshot and logs decisions and feedback; any number
  of them share the log with one learner.

Models live in *slots* of a policy built for ``capacity`` arms: a model added at run time takes
the next free slot (a cold start from the policy's prior), a retired one keeps its slot but is
never chosen again. Slot ``i`` always means the same model in the log.

The router only decides, logs and learns: what the dashboard shows of its log is
:mod:`banditroute.service.dashboard`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import numpy as np
import sqlalchemy as sa

import banditroute.twostage  # noqa: F401  (registers the two-stage policy)
from banditroute.core.types import EnvSpec, FloatArray
from banditroute.core.validation import InputError
from banditroute.data.interfaces import Embedder, Retriever
from banditroute.ope.log import valid_rows
from banditroute.policies.base import Policy
from banditroute.policies.registry import make_policy
from banditroute.service.cluster import Heartbeat, Joiner, LogFeed, SnapshotFollower, learner_seen
from banditroute.service.components import build_arms, build_embedder, load_corpus
from banditroute.service.config import ServiceConfig
from banditroute.service.learner import Learner
from banditroute.service.metrics import RouterMetrics
from banditroute.service.snapshots import decode_snapshot, snapshot_store
from banditroute.service.storage import (
    DecisionRecord,
    FeedbackRecord,
    LearnRow,
    ModelRecord,
    Storage,
    StorageUnavailable,
)
from banditroute.service.writer_lock import WriterLock

log = logging.getLogger("banditroute.service")

FAILURE_WINDOW_S = 10.0  # /healthz reports a storage call that failed this recently (and not since)
RECENT_DECISIONS = 4096  # decisions kept in memory for their feedback (at d = 384: about 13 MB)
WORKER_START_TIMEOUT_S = 60.0  # a worker waits this long for the learner's first snapshot

Role = Literal["single", "learner", "worker"]


INVALID_DECISION = (
    "the policy cannot give a valid probability vector for this context (is its magnitude absurd?); nothing was logged"
)


T = TypeVar("T")

ADD_MODEL_TRIES = 8  # slots tried by one add while other workers add models at the same moment


class NotFound(Exception):
    """HTTP 404."""


class Gone(Exception):
    """HTTP 410: feedback after the configured TTL."""


class Conflict(Exception):
    """HTTP 409: the request contradicts the current state (duplicate model, full capacity...)."""


@dataclass
class Retrieval:
    """Retrieval mode: the corpus ids and one indexed retriever per declared arm."""

    doc_ids: list[str]
    retrievers: dict[str, Retriever]
    k: int


class Router:
    """One router: policy, log, learner, models, optional embedder and retrievers (module docstring)."""

    def __init__(self, config: ServiceConfig, role: Role = "single", worker_index: int = 0) -> None:
        self.config = config
        self.role = role
        self.worker_index = worker_index
        self.learner: Learner | None = None
        self._worker = worker_index if role == "worker" else None  # logged with each decision
        self._threads: list[Any] = []  # the cluster pollers this role runs (service/cluster.py)
        self._accepted_seq = 0  # the highest seq this process accepted (single: the learn-lag gauge)
        self._recent: dict[int, DecisionRecord] = {}  # event id -> decision logged by this process, awaiting feedback
        self.capacity = config.capacity()
        self.reward_range = config.router.reward_range
        self.models: tuple[ModelRecord, ...] = ()
        self.metrics = RouterMetrics(lambda: {m.slot: m.name for m in self.models})
        self.metrics.process.labels = (role, str(worker_index), str(os.getpid()))
        self.embedder: Embedder | None = None
        self.retrieval: Retrieval | None = None
        self._snapshot: tuple[Policy, int] | None = None
        self._probe_lock = threading.Lock()
        self.running = False  # between start() and stop()
        self.started_at = time.time()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        cfg = self.config
        self.storage = Storage(cfg.storage.url, cfg.storage.timeout_s)
        first_snapshot = self._await_learner() if self.role == "worker" else None
        if first_snapshot is None:
            self._take_log()
        self._probe = self.storage.clone()  # /healthz's own connection: never queued behind a write
        if cfg.embedder is not None:
            self.embedder = build_embedder(cfg.embedder)
        dim = cfg.router.dim or int(self.embedder.dim)  # type: ignore[union-attr]
        if self.embedder is not None and int(self.embedder.dim) != dim:
            raise InputError(f"router.dim = {dim} but the embedder {self.embedder.name!r} gives {self.embedder.dim}")
        self.dim = dim
        self._check_settings()
        self._load_models()
        if cfg.retrieval is not None:
            doc_ids, texts = load_corpus(cfg.retrieval.corpus)
            self.retrieval = Retrieval(
                doc_ids, build_arms(cfg.retrieval.arms, texts), min(cfg.retrieval.k, len(doc_ids))
            )
        self.spec = EnvSpec(n_arms=self.capacity, dim=dim, reward_range=self.reward_range)
        if first_snapshot is not None:
            self._start_worker(first_snapshot)
        else:
            self._start_learner()
        first_event = self.storage.max_event_id() + 1
        self.rng = np.random.default_rng(
            [cfg.router.seed, first_event] + ([self.worker_index] if self.worker_index else [])
        )
        for thread in self._threads:
            thread.start()
        self.running = True

    def _take_log(self) -> None:
        """``single`` and ``learner``: the writer lock first, then the schema (also the write probe:
        a read-only database file or directory stops the start here)."""
        self.writer_lock = WriterLock(self.storage.engine)
        self.writer_lock.acquire()  # before anything is written: one writer per log
        self.storage.on_reconnect = self.writer_lock.ensure
        try:
            self.storage.create_schema()
            writer = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time(), "role": self.role}
            self.storage.set_meta("writer", json.dumps(writer))
        except StorageUnavailable as exc:
            raise InputError(f"cannot write to the log: {exc} (read-only database file or directory?)") from None

    def _await_learner(self) -> tuple[int, bytes]:
        """A worker starts on a log a learner has set up and published a snapshot into: that snapshot."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        self._snapshots = snapshot_store(self.storage.clone())
        while True:
            try:
                ready = self.storage.has_schema() and self.storage.get_meta("settings") is not None
                found = self._snapshots.latest() if ready else None
                if found is not None:
                    return found
            except (StorageUnavailable, sa.exc.SQLAlchemyError):  # no schema yet, or the database is starting
                pass
            if time.monotonic() > deadline:
                raise InputError(
                    f"no learner has published a policy snapshot into this log within {WORKER_START_TIMEOUT_S:g} s: "
                    "start `banditroute serve --role learner` on it first (or use `serve --workers N`)"
                )
            time.sleep(0.1)

    def _start_learner(self) -> None:
        cfg = self.config
        if self.role == "learner":  # the learner thread's own connection, or files beside a SQLite log
            self._snapshots = snapshot_store(self.storage.clone())
        publish = self._publish_copy if self.role == "single" else self._publish_shared
        self.learner = Learner(
            self.new_policy(),
            self.storage.clone(),
            batch=cfg.router.learn_batch,
            checkpoint_every=cfg.router.checkpoint_every,
            keep_checkpoints=cfg.router.keep_checkpoints,
            publish_interval_s=cfg.router.publish_interval_s,
            publish=publish,
            on_learn=self.metrics.on_learn,
        )
        replayed = self.learner.restore()
        if replayed:
            log.info("replayed %d feedback rows after the last checkpoint", replayed)
        self._accepted_seq = self.learner.received_seq
        learner = self.learner
        if self.role == "learner":
            feed = LogFeed(self.storage.clone(), cfg.poll_interval_s(), lambda: learner.received_seq, learner.submit)
            heartbeat = Heartbeat(self.storage.clone())
            heartbeat.step()  # before serving: the heartbeat tells a supervisor this learner is up
            self._threads += [feed, heartbeat]
            self.metrics.learn_lag.set_function(lambda: max(feed.fed_seq - learner.applied_seq, 0))
        else:  # learned rows lag the accepted ones: read at scrape time, so it returns to 0 once all is learned
            self.metrics.learn_lag.set_function(lambda: self._accepted_seq - learner.applied_seq)
        if cfg.router.default_reward is not None:
            store = self.storage.clone()
            self._threads.append(
                Joiner(
                    store, cfg.router.feedback_ttl_s, cfg.router.default_reward, functools.partial(self._join, store)
                )
            )
        learner.start()

    def _start_worker(self, first_snapshot: tuple[int, bytes]) -> None:
        self._load_snapshot(*first_snapshot)
        current = lambda: -1 if self._snapshot is None else self._snapshot[1]  # noqa: E731
        interval = self.config.poll_interval_s()
        follower = SnapshotFollower(
            self.storage.clone(), interval, current, self._snapshots, self._load_snapshot, self._merge_models
        )
        self._threads.append(follower)

    def stop(self) -> None:
        """Stop the threads and the learner (it learns what was accepted and checkpoints), close the log."""
        self.running = False
        for thread in self._threads:
            thread.stop()  # before the snapshot store they use is closed, below
        learner = self.learner
        if learner is not None:
            learner.stop()
            learner.storage.close()
        for store in ("_probe", "_snapshots"):
            if hasattr(self, store):
                getattr(self, store).close()  # after the threads that use them stopped
        if hasattr(self, "storage"):
            self.storage.dispose()
        if hasattr(self, "writer_lock"):
            self.writer_lock.release()

    def new_policy(self) -> Policy:
        return make_policy(self.config.policy.name, self.spec, **self.config.policy.params)

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {
            "policy": c.policy.name,
            "params": c.policy.params,
            "capacity": self.capacity,
            "dim": self.dim,
            "learn_batch": c.router.learn_batch,
            "reward_range": list(self.reward_range),
        }

    def _check_settings(self) -> None:
        """A log can only be resumed by a router that learns exactly as the one that wrote it (and a
        worker only joins a log learned with its own settings)."""
        mine = json.dumps(self._settings(), sort_keys=True)
        stored = self.storage.get_meta("settings")
        if stored is None and self.role != "worker":
            self.storage.set_meta("settings", mine)
        elif stored != mine:
            raise InputError(
                f"the log in this storage was written with settings {stored}, but this config has {mine}; "
                "point [storage] at a new database to start over"
            )

    def _load_models(self) -> None:
        """Models from the log; configured ones it does not know yet are added (first start, or new)."""
        self.models = tuple(self.storage.models())
        if self.role == "worker":  # the learner added the configured models
            return
        known = {m.name for m in self.models}
        for name in self.config.initial_models():
            if name not in known:
                self._insert_model(name)

    @property
    def published(self) -> tuple[Policy, int] | None:
        """The policy snapshot routing uses and its version (rows learned); ``None`` before start."""
        return self._snapshot

    def _publish(self, policy: Policy, version: int) -> None:
        """Route with ``policy`` (a copy no one else changes) from now on: one reference swap."""
        self._snapshot = (policy, version)
        self.metrics.policy_version.set(version)

    def _publish_copy(self, policy: Policy, version: int) -> None:
        """``single``: route with a copy of the learner's policy (on the learner thread)."""
        snapshot = self.new_policy()
        snapshot.load_state_dict(policy.state_dict())
        self._publish(snapshot, version)

    def _publish_shared(self, policy: Policy, version: int) -> None:
        """``learner``: publish the learner's state for the workers (:mod:`banditroute.service.snapshots`)."""
        self._snapshots.publish(version, policy.state_dict(), time.time())
        self.metrics.policy_version.set(version)

    def _load_snapshot(self, version: int, blob: bytes) -> None:
        """A worker swaps in a snapshot the learner published (one that does not load is skipped)."""
        try:
            policy = self.new_policy()
            policy.load_state_dict(decode_snapshot(blob))
        except (InputError, KeyError, ValueError, TypeError) as exc:
            log.warning(
                "snapshot %d does not load into this worker's policy (%s); keeping version %s",
                version,
                exc,
                None if self._snapshot is None else self._snapshot[1],
            )
            return
        self._publish(policy, version)

    def _merge_models(self, logged: list[ModelRecord]) -> None:
        """A worker learns of models added or retired through another process: slots only ever get
        added and models only ever retired, so the union of slots and the conjunction of ``active``
        never undoes a change this worker has just made itself."""
        mine = {m.slot: m for m in self.models}
        merged = []
        for m in logged:
            own = mine.pop(m.slot, None)
            merged.append(m if own is None or (own.active and not m.active) or own == m else own)
        merged.extend(mine.values())
        self.models = tuple(sorted(merged, key=lambda m: m.slot))

    def _join(self, store: Storage, event_id: int, reward: float) -> int | None:
        """The joiner's default reward for ``event_id`` (on the joiner's connection); a ``single``
        router hands it to its learner, a ``learner`` reads it back from the log like any row."""
        seq = store.insert_feedback(event_id, reward, None, time.time())
        if seq is None:
            return None
        self.metrics.on_feedback("default")
        if self.role == "single" and self.learner is not None:
            found = store.get_decision(event_id)
            assert found is not None
            rec = found[0]
            self.learner.submit(LearnRow(seq, rec.context, rec.action, rec.probs, reward, rec.info))
            self._accepted_seq = max(self._accepted_seq, seq)
        return seq

    # ------------------------------------------------------------------ helpers
    def _by_name(self, name: str) -> ModelRecord | None:
        return next((m for m in self.models if m.name == name), None)

    def _allowed(self, candidates: list[str] | None) -> np.ndarray:
        mask = np.zeros(self.capacity, dtype=bool)
        if candidates is None:
            for m in self.models:
                mask[m.slot] = m.active
            if not mask.any():
                raise Conflict("no active models")
            return mask
        if not candidates:
            raise InputError("candidates must name at least one model (or be omitted for all)")
        if len(set(candidates)) != len(candidates):
            raise InputError("candidates must not repeat a model")
        for i, name in enumerate(candidates):  # messages name the position, never echo the name
            found = self._by_name(name)
            if found is None:
                raise InputError(f"unknown model in candidates (position {i})")
            if not found.active:
                raise InputError(f"retired model in candidates (position {i})")
            mask[found.slot] = True
        return mask

    def _context(self, context: Any, query: str | None) -> FloatArray:
        """The request's context as an array: what only the service requires of it — one vector
        per decision (the log holds one; per-model feature rows are not served) within
        ``router.max_context_norm``. Its length and finiteness are the policy's to check, once,
        when it decides (:meth:`decide`)."""
        if (context is None) == (query is None):
            raise InputError("send exactly one of 'context' (a vector) and 'query' (text)")
        if query is not None:
            return self.embed(query)
        try:
            x = np.asarray(context, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("context must be a list of numbers") from None
        if x.ndim != 1:
            raise InputError(f"context must be a list of {self.dim} numbers, got shape {x.shape}")
        limit = self.config.router.max_context_norm
        with np.errstate(over="ignore", invalid="ignore"):  # an overflowing norm is inf; a NaN one is the policy's
            too_large = limit is not None and float(np.linalg.norm(x)) > limit
        if too_large:
            raise InputError(f"context norm exceeds router.max_context_norm = {limit:g}")
        return x

    def embed(self, query: str) -> FloatArray:
        if self.embedder is None:
            raise InputError("this router has no [embedder]: send a 'context' vector instead of 'query' text")
        if not query.strip():
            raise InputError("query must not be empty")
        start = time.perf_counter()
        x = np.asarray(self.embedder.encode_queries([query])[0], dtype=np.float64)
        self.metrics.embed_latency.observe(time.perf_counter() - start)
        return x

    def _response(self, rec: DecisionRecord) -> dict[str, Any]:
        names = {m.slot: m.name for m in self.models}
        return {
            "event_id": rec.event_id,
            "model": names[rec.action],
            "probs": {names[int(s)]: float(rec.probs[s]) for s in np.flatnonzero(rec.allowed)},
            "policy_version": rec.policy_version,
        }

    # ------------------------------------------------------------------ routing
    def _remember(self, rec: DecisionRecord) -> None:
        """Keep a just-logged decision for its feedback (the oldest of :data:`RECENT_DECISIONS` is dropped):
        feedback then need not read the decision back from the log (the gateway profile, docs/benchmarks.md)."""
        self._recent[rec.event_id] = rec
        if len(self._recent) > RECENT_DECISIONS:
            del self._recent[next(iter(self._recent))]

    def decide(self, x: FloatArray, allowed: np.ndarray, kind: str, request_id: str | None) -> DecisionRecord:
        """Decide among ``allowed`` for context ``x``, log it, return the record.

        The policy validates ``x`` (length, NaN/inf: :class:`InputError`, 422). Only a valid
        decision is logged (:func:`~banditroute.ope.log.valid_rows`): a context of absurd magnitude
        can overflow the policy's arithmetic into NaN probabilities, which would poison learning
        and off-policy evaluation of the log; it is refused with 422 instead.
        """
        start = time.perf_counter()
        assert self._snapshot is not None, "router not started"
        policy, version = self._snapshot
        with np.errstate(all="ignore"):  # overflow shows up as non-finite probabilities, checked next
            try:
                decision = policy.act(x, self.rng, allowed=allowed)
            except InputError:  # the context itself (its length, NaN or inf)
                raise
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):
                raise InputError(INVALID_DECISION) from None
        if not valid_rows(x[None], np.array([decision.action]), decision.probs[None], allowed[None])[0]:
            raise InputError(INVALID_DECISION)
        rec = DecisionRecord(
            event_id=0,  # the log gives it
            request_id=request_id,
            created_at=time.time(),
            kind=kind,
            policy_version=version,
            action=decision.action,
            probs=decision.probs,
            allowed=allowed,
            context=x,
            info=dict(decision.info),
            worker=self._worker,
        )
        rec = replace(rec, event_id=self._log("decisions", self.storage.insert_decision, rec))
        self._remember(rec)
        slot = rec.action
        self.metrics.on_decision(self.models[slot].name, kind, slot, time.perf_counter() - start)
        return rec

    def decide_batch(
        self, xs: list[FloatArray], allowed: list[np.ndarray], kinds: list[str], request_ids: list[str | None]
    ) -> list[DecisionRecord | InputError]:
        """:meth:`decide` for several requests at once, each of its own ``kinds[i]`` (the requests that
        queued for the writer thread: ``service/fastpath.py``'s ``Batcher``, for routes and for the gateway's
        decisions): one ``act_batch`` call validates and decides them all with the same snapshot, and one commit logs
        them before any is answered. The generator is drawn from row by row as ``n`` single decisions
        would draw from it (:mod:`banditroute.core.sampling`), so the decisions are those of the same
        requests decided one at a time from this snapshot. A request the policy refuses (length,
        NaN/inf) or whose decision is invalid gets its :class:`InputError` and changes nothing; a
        batch holding one is decided row by row, so the others are unaffected. A storage fault fails
        the whole batch (nothing of it logged)."""
        start = time.perf_counter()
        assert self._snapshot is not None, "router not started"
        if not all(x.shape == (self.dim,) for x in xs):  # the policy's own message for each bad row
            return [self._decide_one(*row) for row in zip(xs, allowed, kinds, request_ids, strict=True)]
        policy, version = self._snapshot
        X, masks = np.stack(xs), np.stack(allowed)
        with np.errstate(all="ignore"):  # overflow shows up as non-finite probabilities, checked next
            try:
                decisions = policy.act_batch(X, self.rng, allowed=masks)
            except (ValueError, FloatingPointError, np.linalg.LinAlgError):  # InputError included: row by row
                return [self._decide_one(*row) for row in zip(xs, allowed, kinds, request_ids, strict=True)]
        valid = valid_rows(X, decisions.actions, decisions.probs, masks)
        out: list[DecisionRecord | InputError] = []
        recs: list[DecisionRecord] = []
        now = time.time()
        for i in range(len(xs)):
            if not valid[i]:
                out.append(InputError(INVALID_DECISION))
                continue
            d = decisions[i]
            rec = DecisionRecord(
                0, request_ids[i], now, kinds[i], version, d.action, d.probs, masks[i], X[i], worker=self._worker
            )
            rec.info.update(d.info)
            recs.append(rec)
            out.append(rec)
        if recs:
            ids = iter(self._log("decisions", self.storage.insert_decisions, recs))
            out = [r if isinstance(r, InputError) else replace(r, event_id=next(ids)) for r in out]
            recs = [r for r in out if isinstance(r, DecisionRecord)]
            for rec in recs:
                self._remember(rec)
        elapsed = time.perf_counter() - start
        for rec in recs:
            self.metrics.on_decision(self.models[rec.action].name, rec.kind, rec.action, elapsed)
        return out

    def _log(self, rows: str, write: Callable[..., T], *args: Any) -> T:
        """``write(*args)``, a write of ``rows`` to the log, timed for ``banditroute_log_write_seconds``
        (the storage share of a decision or feedback) when it succeeds."""
        start = time.perf_counter()
        out = write(*args)
        self.metrics.on_log_write(rows, time.perf_counter() - start)
        return out

    def _decide_one(
        self, x: FloatArray, allowed: np.ndarray, kind: str, request_id: str | None
    ) -> DecisionRecord | InputError:
        try:
            return self.decide(x, allowed, kind, request_id)
        except InputError as exc:
            return exc

    def route_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """:meth:`route` for each request (keyword dicts), decided together (:meth:`decide_batch`);
        each result is the response or the exception that request alone raised (4xx). A request id
        repeated within the batch is answered after the batch is logged, as a retry."""
        out: list[dict[str, Any] | Exception | None] = [None] * len(requests)
        todo: list[tuple[int, FloatArray, np.ndarray, str | None]] = []
        ids: set[str] = set()
        retries: list[int] = []
        for i, req in enumerate(requests):
            request_id = req.get("request_id")
            if request_id is not None and request_id in ids:
                retries.append(i)
                continue
            try:
                rec = self._replayed(request_id, "route")
                if rec is not None:
                    out[i] = self._response(rec)
                    continue
                x = self._context(req.get("context"), req.get("query"))
                todo.append((i, x, self._allowed(req.get("candidates")), request_id))
            except (InputError, Conflict) as exc:
                out[i] = exc
                continue
            if request_id is not None:
                ids.add(request_id)
        if todo:
            xs, masks, request_ids = [t[1] for t in todo], [t[2] for t in todo], [t[3] for t in todo]
            results = self.decide_batch(xs, masks, ["route"] * len(todo), request_ids)
            for (i, *_), res in zip(todo, results, strict=True):
                out[i] = res if isinstance(res, Exception) else self._response(res)
        for i in retries:
            try:
                out[i] = self.route(**requests[i])
            except (InputError, Conflict) as exc:
                out[i] = exc
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    def _replayed(self, request_id: str | None, kind: str) -> DecisionRecord | None:
        """The decision already taken for this client request id (idempotent retries)."""
        if request_id is None:
            return None
        if not request_id or len(request_id) > 200:
            raise InputError("request_id must be 1 to 200 characters")
        rec = self.storage.decision_for_request(request_id)
        if rec is not None and rec.kind != kind:
            raise Conflict(f"this request_id was used for a {rec.kind} request")
        return rec

    def route(
        self,
        *,
        context: Any = None,
        query: str | None = None,
        candidates: list[str] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        rec = self._replayed(request_id, "route")
        if rec is None:
            x = self._context(context, query)
            rec = self.decide(x, self._allowed(candidates), "route", request_id)
        return self._response(rec)

    def search_decide(
        self, x: FloatArray, *, k: int | None = None, candidates: list[str] | None = None, request_id: str | None = None
    ) -> tuple[dict[str, Any], int]:
        """Route a search whose query embeds to ``x`` (:meth:`embed`); returns the response so far and
        ``k``. Embedding and retrieval (:meth:`search_items`) are slow: callers run them off the event loop."""
        if self.retrieval is None:
            raise NotFound("retrieval mode is not configured ([retrieval] in the router config)")
        k = self.retrieval.k if k is None else k
        if not 1 <= k <= len(self.retrieval.doc_ids):
            raise InputError(f"k must lie in [1, {len(self.retrieval.doc_ids)}]")
        rec = self._replayed(request_id, "search")
        if rec is None:
            rec = self.decide(x, self._allowed(candidates), "search", request_id)
        return self._response(rec), k

    def search_items(self, model: str, query: str, k: int) -> list[dict[str, Any]]:
        """The top-``k`` documents of ``model``'s retriever, best first."""
        assert self.retrieval is not None
        positions, scores = self.retrieval.retrievers[model].search([query], k)
        return [
            {"rank": r + 1, "doc_id": self.retrieval.doc_ids[int(p)], "score": float(s)}
            for r, (p, s) in enumerate(zip(positions[0], scores[0], strict=True))
        ]

    # ------------------------------------------------------------------ feedback
    def feedback(self, event_id: int, reward: float, cost: float | None = None) -> dict[str, Any]:
        """Accept ``reward`` (and ``cost``) for ``event_id``: ``accepted`` with the ``seq`` the log gave
        it, or ``duplicate`` with the first one's (first wins). :class:`InputError` for a bad value,
        :class:`NotFound` for an unknown event, :class:`Gone` after ``feedback_ttl_s``."""
        out = self.feedback_batch([{"event_id": event_id, "reward": reward, "cost": cost}])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def feedback_batch(self, items: list[dict[str, Any]]) -> list[dict[str, Any] | Exception]:
        """:meth:`feedback` for each item (``event_id``, ``reward``, optional ``cost``), the accepted
        ones logged in one commit (a group of feedback requests that queued while the writer thread
        was busy: one transaction instead of one each). Each result is the answer or the exception
        that item alone raised; a storage fault fails them all (nothing logged). Items are accepted
        in order, so of two for one event the first wins, as between two requests."""
        start = time.perf_counter()
        now = time.time()
        out: list[dict[str, Any] | Exception | None] = [None] * len(items)
        todo: list[tuple[int, int, DecisionRecord | None]] = []
        for i, item in enumerate(items):
            try:
                action, rec, seen = self._feedback_target(item["event_id"], item["reward"], item.get("cost"), now)
            except (InputError, NotFound, Gone) as exc:
                out[i] = exc
                continue
            if seen is None:
                todo.append((i, action, rec))
            else:
                out[i] = self._duplicate(seen)
        rows = [(items[i]["event_id"], float(items[i]["reward"]), items[i].get("cost")) for i, *_ in todo]
        seqs = self._log("feedback", self.storage.insert_feedbacks, rows, now) if rows else []
        elapsed = time.perf_counter() - start
        for (i, action, rec), (event_id, reward, _), seq in zip(todo, rows, seqs, strict=True):
            if seq is None:  # answered meanwhile, by another process or earlier in this group
                again = self.storage.feedback_state(event_id)
                assert again is not None and again[2] is not None
                out[i] = self._duplicate(again[2])
                continue
            if self.learner is not None:  # a worker's feedback reaches the learner through the log
                if rec is None:
                    found = self.storage.get_decision(event_id)
                    assert found is not None
                    rec = found[0]
                self.learner.submit(LearnRow(seq, rec.context, rec.action, rec.probs, reward, rec.info))
                self._accepted_seq = max(self._accepted_seq, seq)
            self.metrics.on_feedback("accepted", action, reward)
            self.metrics.feedback_latency.observe(elapsed)
            out[i] = {"status": "accepted", "event_id": event_id, "seq": seq}
        assert all(r is not None for r in out)
        return out  # type: ignore[return-value]

    def _feedback_target(
        self, event_id: int, reward: float, cost: float | None, now: float
    ) -> tuple[int, DecisionRecord | None, FeedbackRecord | None]:
        """After checking the values and the TTL: the decision's action, its record where this process
        still holds it, and its feedback so far."""
        lo, hi = self.reward_range
        if not math.isfinite(reward):
            raise InputError("reward must be a finite number (got NaN or inf)")
        if not lo <= reward <= hi:
            raise InputError(f"reward is outside the router's reward_range [{lo}, {hi}]")
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            raise InputError("cost must be a finite number >= 0")
        recent = self._recent.pop(event_id, None)
        if recent is not None and now - recent.created_at <= self.config.router.feedback_ttl_s:
            return recent.action, recent, None  # logged here, no feedback yet: a duplicate insert says otherwise
        found = self.storage.feedback_state(event_id)
        if found is None:
            self.metrics.on_feedback("unknown")
            raise NotFound("unknown event_id")
        created_at, action, seen = found
        if seen is None and now - created_at > self.config.router.feedback_ttl_s:
            self.metrics.on_feedback("expired")
            raise Gone(f"feedback came after the {self.config.router.feedback_ttl_s:g} s TTL")
        return action, None, seen

    def _duplicate(self, seen: FeedbackRecord) -> dict[str, Any]:
        self.metrics.on_feedback("duplicate")
        return {"status": "duplicate", "event_id": seen.event_id, "seq": seen.seq, "reward": seen.reward}

    # ------------------------------------------------------------------ models
    def list_models(self) -> list[dict[str, Any]]:
        return [
            {"name": m.name, "slot": m.slot, "active": m.active, "added_at": m.added_at, "retired_at": m.retired_at}
            for m in self.models
        ]

    def _insert_model(self, name: str) -> ModelRecord:
        if self.role == "worker":  # another worker may have added or retired models since the last poll
            self._merge_models(self.storage.models())
            if self._by_name(name) is not None:
                raise Conflict("a model of this name already exists")
        for _ in range(ADD_MODEL_TRIES):
            if len(self.models) >= self.capacity:
                raise Conflict(f"all {self.capacity} model slots are used (raise router.max_models for a new log)")
            rec = ModelRecord(len(self.models), name, True, time.time(), None)
            try:
                self.storage.add_model(rec.slot, rec.name, rec.added_at)
            except sa.exc.IntegrityError:  # another worker took this slot (or name) at the same moment
                self._merge_models(self.storage.models())
                if self._by_name(name) is not None:
                    raise Conflict("a model of this name was added at the same time by another process") from None
                continue  # another name took the slot: the next free one
            self.models = (*self.models, rec)
            return rec
        raise Conflict("other processes kept adding models at the same time; send the request again")

    def add_model(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str) or not 1 <= len(name) <= 100 or not name.strip():
            raise InputError("model name must be 1 to 100 characters")
        if self.retrieval is not None and name not in self.retrieval.retrievers:
            raise InputError("in retrieval mode a new model must be a declared [[retrieval.arms]] entry")
        existing = self._by_name(name)
        if existing is not None:
            state = "active" if existing.active else "retired (names are never reused)"
            raise Conflict(f"a model of this name already exists and is {state}")
        rec = self._insert_model(name)
        return {"name": rec.name, "slot": rec.slot, "active": True}

    def retire_model(self, name: str) -> dict[str, Any]:
        m = self._by_name(name)
        if m is None:
            raise NotFound("unknown model")
        if not m.active:
            raise Conflict("this model is already retired")
        if sum(x.active for x in self.models) == 1:
            raise Conflict("cannot retire the last active model")
        now = time.time()
        self.storage.retire_model(m.slot, now)
        self.models = tuple(
            ModelRecord(x.slot, x.name, False, x.added_at, now) if x.slot == m.slot else x for x in self.models
        )
        return {"name": name, "slot": m.slot, "active": False}

    # ------------------------------------------------------------------ observability
    def health(self) -> dict[str, Any]:
        """``status`` is ``ok`` only while this process can do its part and storage works: a probe
        read on the health check's own connection (bounded by ``[storage] timeout_s``; it never waits
        on the write lock or on a queued write) succeeds, and no connection of this process failed on
        its last call within :data:`FAILURE_WINDOW_S` (docs/reliability.md). A ``single`` router also
        needs its learner running. A ``worker`` keeps deciding while the learner is down, so it stays
        ``ok`` then, and says so: ``learner`` is ``down`` once its heartbeat is older than
        :data:`~banditroute.service.cluster.LEARNER_STALE_S` (``learner_seen_s_ago``)."""
        storage = self._probe_storage()
        stores = [self.storage] + ([self.learner.storage] if self.learner is not None else [])
        for store in stores:
            storage = storage or store.failing(FAILURE_WINDOW_S)
        out: dict[str, Any] = {"role": self.role}
        if self.learner is not None:
            learner_ok = self.learner.alive()
            out["learner"] = "running" if learner_ok else "stopped"
            out["pending_feedback"] = self._accepted_seq - self.learner.applied_seq
        else:
            learner_ok = all(t.alive() for t in self._threads)  # the snapshot follower
            state, age = self._learner_seen() if storage is None else ("unknown", None)
            out["learner"] = state
            out["learner_seen_s_ago"] = None if age is None else round(age, 3)
            out["worker"] = self.worker_index
        out["status"] = "ok" if learner_ok and storage is None else "degraded"
        out["storage"] = "ok" if storage is None else storage
        out["policy_version"] = self._snapshot[1] if self._snapshot else None
        return out

    def _learner_seen(self) -> tuple[str, float | None]:
        with self._probe_lock:
            try:
                return learner_seen(self._probe)
            except (StorageUnavailable, sa.exc.SQLAlchemyError):
                return "unknown", None

    def _probe_storage(self) -> str | None:
        """``None`` if the probe read succeeds, else why not."""
        if not self._probe_lock.acquire(timeout=self.config.storage.timeout_s):
            return "storage unavailable: the previous probe is still waiting"
        try:
            error = self._probe_once()
            if error is not None and not self._probe.connected:  # dropped (a database restart): once more, fresh
                error = self._probe_once()
            return error
        finally:
            self._probe_lock.release()

    def _probe_once(self) -> str | None:
        try:
            self._probe.probe()
        except (StorageUnavailable, sa.exc.SQLAlchemyError) as exc:
            return str(exc).splitlines()[0]
        return None
