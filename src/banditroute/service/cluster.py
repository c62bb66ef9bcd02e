"""The background threads that let several processes share one log (``serve --workers N``, issue 16).

The decision-service architecture of Vowpal Wabbit's Decision Service / Azure Personalizer — rank,
log, join, train, broadcast — on the router's own log (docs/architecture.md):

* **Router workers** (``role = "worker"``, any number, on any host that reaches the database) decide
  in-process from the newest policy snapshot and write decisions and feedback straight into the
  log; the log numbers them (:mod:`banditroute.service.storage`), so writers never collide. A
  :class:`SnapshotFollower` polls for a newer snapshot and for model changes made through another
  worker, and swaps them in; every decision logs the version it used (``policy_version``).
* **One learner** (``role = "learner"``, holding the writer lock: the lease) follows the log's
  feedback in ``seq`` order (:class:`LogFeed`), learns it in the fixed groups of
  :mod:`banditroute.service.learner` — so its state is always a function of the log alone, equal to a
  clean replay — checkpoints, publishes numbered snapshots (:mod:`banditroute.service.snapshots`:
  files beside a SQLite log, the log's table on PostgreSQL) and beats a heartbeat the workers'
  ``/healthz`` reports. While it is down the workers keep deciding
  from the last snapshot and accepting feedback; a restarted learner restores its checkpoint,
  replays the rest once and publishes again.
* **The joiner** (:class:`Joiner`, in whichever process learns) gives a decision whose reward window
  (``router.feedback_ttl_s``) ended without feedback ``router.default_reward``, as a feedback row of
  the log like any other (off when it is ``None``, the default). Duplicates: the first feedback of an
  event wins, whoever wrote it; later ones are acknowledged, not learned.

Workers poll (``[cluster] poll_interval_s``, 50 ms: a directory listing or one indexed ``MAX``
read) and the learner polls the log for feedback likewise; on PostgreSQL a ``NOTIFY`` at each
published snapshot and each accepted feedback row wakes them at once (:class:`Wakeup`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from banditroute.service.snapshots import SnapshotStore
from banditroute.service.storage import (
    FEEDBACK_CHANNEL,
    SNAPSHOT_CHANNEL,
    LearnRow,
    ModelRecord,
    Storage,
    StorageUnavailable,
    describe,
)

log = logging.getLogger("banditroute.service")

HEARTBEAT_S = 1.0  # the learner writes its heartbeat this often
LEARNER_STALE_S = 5.0  # a worker's /healthz reports the learner down after this long without one
JOIN_CHUNK = 1000
LEARNER_META = "learner"  # the meta key of the learner's heartbeat
STOP_CHECK_S = 0.25  # a poller blocked on LISTEN looks at its stop flag this often


class Wakeup:
    """Waits for a ``NOTIFY`` on ``channel`` (PostgreSQL) or a timeout, whichever comes first; without
    a channel, or elsewhere (SQLite), it only sleeps. A listening connection that fails is dropped with
    one warning and opened again a second later; meanwhile the poller only polls."""

    def __init__(self, storage: Storage, channel: str | None) -> None:
        self.storage, self.channel = storage, channel
        self._listener: Any = None  # a DBAPI connection that LISTENs, opened on first wait
        self._listen_after = 0.0

    def wait(self, timeout_s: float, stop: threading.Event) -> None:
        """Return after ``timeout_s``, at a notification, or soon after ``stop`` is set."""
        if self.channel is not None and self._listener is None and time.monotonic() >= self._listen_after:
            self._listener = self.storage.listen(self.channel)
            self._listen_after = time.monotonic() + 1.0
        if self._listener is None:
            stop.wait(timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        try:
            while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
                for _ in self._listener.driver_connection.notifies(timeout=min(left, STOP_CHECK_S), stop_after=1):
                    return
        except Exception as exc:  # the database restarted or the connection broke: poll until it is back
            log.warning("listening on %s failed (%s); polling", self.channel, describe(exc))
            self.close()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.invalidate()  # never back into the pool, LISTEN and all


class _Poller:
    """A daemon thread calling ``step()`` every ``interval_s`` on its own connection ``storage`` until
    stopped (then the connection is closed), and at once when ``channel`` is notified (:class:`Wakeup`);
    a storage fault is logged (once per outage) and retried at the next tick, any other error is logged
    and retried likewise."""

    name = "banditroute-poller"

    def __init__(self, storage: Storage, interval_s: float, channel: str | None = None) -> None:
        self.storage = storage
        self.interval_s = interval_s
        self.wakeup = Wakeup(storage, channel)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.final()
        self.wakeup.close()
        self.storage.close()

    def final(self) -> None:
        """Runs once after the thread stopped, before the connection closes."""

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _pause(self) -> bool:
        """Wait for the next tick (or a notification); ``True`` once stopped."""
        self.wakeup.wait(self.interval_s, self._stop)
        return self._stop.is_set()

    def _run(self) -> None:
        while not self._pause():
            try:
                self.step()
            except StorageUnavailable as exc:
                if not self._failing:
                    log.warning("%s: %s; retrying", self.name, exc)
                self._failing = True
                continue
            except Exception:
                log.exception("%s: unexpected error; retrying", self.name)
                continue
            self._failing = False

    def step(self) -> None:
        raise NotImplementedError


class SnapshotFollower(_Poller):
    """A worker's view of the learner: loads each newer snapshot (``snapshots.latest(current())``,
    :mod:`banditroute.service.snapshots`) with ``load(version, blob)`` and hands the log's model table
    to ``on_models`` at every tick; a tick comes early when the store is told of a new snapshot."""

    name = "banditroute-snapshots"

    def __init__(
        self,
        storage: Storage,
        interval_s: float,
        current: Callable[[], int],
        snapshots: SnapshotStore,
        load: Callable[[int, bytes], None],
        on_models: Callable[[list[ModelRecord]], None],
    ) -> None:
        super().__init__(storage, interval_s, SNAPSHOT_CHANNEL)
        self._current, self.snapshots, self._load, self._on_models = current, snapshots, load, on_models

    def step(self) -> None:
        found = self.snapshots.latest(self._current())
        if found is not None:
            self._load(*found)
        self._on_models(self.storage.models())


class LogFeed(_Poller):
    """The learner process's input: feedback rows the workers committed, in ``seq`` order, handed to
    ``submit`` (the learner skips what it already has). It only reads (WAL readers never wait)."""

    name = "banditroute-logfeed"

    def __init__(
        self, storage: Storage, interval_s: float, after: Callable[[], int], submit: Callable[[LearnRow], None]
    ):
        super().__init__(storage, interval_s, FEEDBACK_CHANNEL)
        self._after, self._submit = after, submit
        self.fed_seq = 0  # the highest seq read from the log (the learn-lag gauge)

    def final(self) -> None:
        """Feed what the log holds now once more: the learner's final checkpoint (it stops after
        this) then covers every row the workers committed before the stop."""
        try:
            self.step()
        except StorageUnavailable as exc:  # a restart replays them
            log.warning("%s: last read before stopping failed: %s", self.name, exc)

    def step(self) -> None:
        start = max(self.fed_seq, self._after())
        for row in self.storage.learn_rows(start):
            self._submit(row)
            self.fed_seq = row.seq


class Heartbeat(_Poller):
    """The learner's heartbeat in ``meta`` every :data:`HEARTBEAT_S` (its pid, host and the time), on a
    thread of its own: a write can wait for the workers' writes (SQLite's busy wait is not fair), and
    the feed must not wait with it."""

    name = "banditroute-heartbeat"

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage, HEARTBEAT_S)

    def step(self) -> None:
        beat = {"pid": os.getpid(), "host": socket.gethostname(), "seen_at": time.time()}
        self.storage.set_meta(LEARNER_META, json.dumps(beat))


def _last_beat(storage: Storage) -> tuple[int, float] | None:
    """``(pid, seen_at)`` of the learner's last heartbeat (``None`` before any, or if unreadable)."""
    raw = storage.get_meta(LEARNER_META)
    try:
        beat = None if raw is None else json.loads(raw)
        return None if beat is None else (int(beat["pid"]), float(beat["seen_at"]))
    except (ValueError, KeyError, TypeError):
        return None


def learner_pid(storage: Storage) -> int | None:
    """The pid in the learner's last heartbeat (``None`` before any)."""
    beat = _last_beat(storage)
    return None if beat is None else beat[0]


def learner_seen(storage: Storage) -> tuple[str, float | None]:
    """``("running" | "down", seconds since the learner's last heartbeat)`` as the log tells it."""
    beat = _last_beat(storage)
    if beat is None:
        return "down", None
    age = max(0.0, time.time() - beat[1])
    return ("running" if age <= LEARNER_STALE_S else "down"), age


class Joiner(_Poller):
    """Default rewards (module docstring): every tick, each decision older than ``window_s`` that has
    no feedback gets ``reward`` through ``accept(event_id, reward)`` (the log's own insert, so a client's
    feedback racing it is a duplicate of whichever came first)."""

    name = "banditroute-joiner"

    def __init__(self, storage: Storage, window_s: float, reward: float, accept: Callable[[int, float], object]):
        super().__init__(storage, min(max(window_s / 10, 0.05), 1.0))
        self.window_s, self.reward, self._accept = window_s, reward, accept
        self.after_event = 0

    def step(self) -> None:
        through = self.storage.settled_through(self.after_event, time.time() - self.window_s)
        while self.after_event < through:
            ids = self.storage.unanswered(self.after_event, through, JOIN_CHUNK)
            for event_id in ids:
                self._accept(event_id, self.reward)
            self.after_event = ids[-1] if len(ids) == JOIN_CHUNK else through
