"""The single writer of the policy: learns accepted feedback in order, checkpoints, publishes.

Feedback is numbered ``seq = 1, 2, 3, ...`` when it is accepted (committed to the log). The
learner applies it in that order and in *fixed* groups — group ``g`` is rows ``(g−1)B+1 .. gB``
for ``B = learn_batch`` — with one ``learn_batch`` call per group. The policy state after
``seq`` rows is therefore a function of the log alone: a server that learned live, a server that
crashed, restored its last checkpoint and replayed the rest (:meth:`Learner.restore`), and an
offline replay of the whole log hold the same state, bit for bit (the grouping matters: ridge
policies use Sherman–Morrison for one row and Woodbury for several, which round differently).

Routing never waits on learning: the learner owns its policy object and, after learning,
*publishes* it — the router copies it (``state_dict`` into a fresh policy) for routing through one
atomic reference swap, or writes it out for router workers (:mod:`banditroute.service.snapshots`) —
at most every ``publish_interval_s``, and at most ``publish_interval_s`` after the last row learned
(the learner wakes up for it when no more feedback comes). Publishing copies the
whole state (4.7 MB for LinUCB at d = 384, M = 4: 5 ms), so under steady feedback it must not follow
every row: docs/benchmarks.md, "issue 16", measured it at 163 publishes/s before this bound.
Checkpoints (every ``checkpoint_every`` rows, at group boundaries, and at shutdown) bound how much a
restart replays.

A storage fault (:class:`~banditroute.service.storage.StorageUnavailable`) while checkpointing or
reading a gap from the log does not stop the learner: it retries with exponential backoff until the
database answers again (the rows it holds stay queued, in order); the router's ``/healthz`` shows
the fault meanwhile. Only an unexpected error stops it (``failed``), and health then says so.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

from banditroute.core.types import BatchDecision
from banditroute.core.validation import InputError
from banditroute.policies.base import Policy
from banditroute.service.storage import (
    RECONNECT_MAX_S,
    RECONNECT_MIN_S,
    LearnRow,
    Storage,
    StorageUnavailable,
    encode_state,
)

log = logging.getLogger("banditroute.service")

_STOP = object()
T = TypeVar("T")


class _Stopping(Exception):
    """Stop was requested while a storage call was being retried (the log keeps the rows)."""


def learn_group(policy: Policy, rows: list[LearnRow]) -> None:
    """One learning step on a group of rows (the same call live and in replay).

    Each row's logged decision ``info`` (what a policy such as ``two-stage`` needs back) is stacked
    into the batch's; rows that do not all carry the same keys (a log from before decisions carried
    ``info``) give none. A group the policy rejects (it cannot happen with rows the API validated,
    but an old or hand-edited log could hold one) is skipped with a warning — in live learning and
    in replay alike.
    """
    decision = BatchDecision(
        actions=np.array([r.action for r in rows], dtype=np.int64),
        probs=np.stack([r.probs for r in rows]),
        info=_stacked_info(rows),
    )
    try:
        policy.learn_batch(np.stack([r.context for r in rows]), decision, np.array([r.reward for r in rows]))
    except InputError as exc:
        log.warning("skipped learning rows %d..%d: %s", rows[0].seq, rows[-1].seq, exc)


def _stacked_info(rows: list[LearnRow]) -> dict[str, np.ndarray]:
    keys = set(rows[0].info)
    if any(set(r.info) != keys for r in rows):
        return {}
    try:
        return {k: np.stack([r.info[k] for r in rows]) for k in keys}
    except ValueError:  # shapes differ: a damaged log; the policy refuses the group (warning)
        return {}


def replay(policy: Policy, rows: Iterable[LearnRow], batch: int) -> tuple[int, list[LearnRow]]:
    """Learn ``rows`` in groups of ``batch``; returns ``(last seq learned or -1, incomplete last group)``."""
    group: list[LearnRow] = []
    last = -1
    for row in rows:
        group.append(row)
        if len(group) == batch:
            learn_group(policy, group)
            last = row.seq
            group = []
    return last, group


class Learner:
    """Applies feedback to ``policy`` on its own thread (module docstring).

    Args:
        policy: the learning copy (owned by the learner from now on).
        storage: a connection of the learner's own (checkpoints, replay).
        batch: rows per learning step.
        checkpoint_every: rows between checkpoints.
        keep_checkpoints: checkpoints kept in the store.
        publish_interval_s: least time between two published snapshots while busy.
        publish: called with ``(policy, version)`` (``version`` = rows learned) on the learner's thread;
            ``policy`` is the learner's own: copy what must outlive the call.
        on_learn: optional callback ``(rows, seconds)`` after each step (metrics).
    """

    def __init__(
        self,
        policy: Policy,
        storage: Storage,
        *,
        batch: int,
        checkpoint_every: int,
        keep_checkpoints: int,
        publish_interval_s: float,
        publish: Callable[[Policy, int], None],
        on_learn: Callable[[int, float], None] | None = None,
    ) -> None:
        self.policy = policy
        self.storage = storage
        self.batch = batch
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.publish_interval_s = publish_interval_s
        self._publish_cb = publish
        self._on_learn = on_learn
        self.applied_seq = 0
        self.checkpoint_seq = 0
        self.pending: list[LearnRow] = []
        self.failed = False
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._published_at = 0.0
        self._published_seq = -1

    @property
    def received_seq(self) -> int:
        """Highest seq handed to the learner (learned or waiting for its group)."""
        return self.applied_seq + len(self.pending)

    # ------------------------------------------------------------------ start-up
    def restore(self) -> int:
        """Load the newest sound checkpoint and replay the later feedback; returns rows replayed.

        A corrupt checkpoint (checksum, decoding) or one covering rows the log does not hold is
        skipped with a warning for the next older one, and without any the whole log is replayed —
        replay is always correct, a checkpoint only saves time. A sound checkpoint that does not
        load into the configured policy stops start-up: the config, not the checkpoint, is wrong.
        """
        logged = self.storage.max_seq()
        for seq, state in self.storage.verified_checkpoints():
            if seq > logged:
                log.warning("skipping the checkpoint at row %d: the log holds only %d rows", seq, logged)
                continue
            if seq % self.batch:
                raise InputError(f"checkpoint at row {seq} is not at a learn_batch={self.batch} boundary")
            try:
                self.policy.load_state_dict(state)
            except (InputError, KeyError, ValueError, TypeError) as exc:
                raise InputError(f"the stored policy checkpoint does not fit this config: {exc}") from None
            self.applied_seq = self.checkpoint_seq = seq
            break
        start = self.applied_seq
        last, self.pending = replay(self.policy, self.storage.learn_rows(start), self.batch)
        self.applied_seq = max(start, last)
        self._publish()
        return self.received_seq - start

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="banditroute-learner", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ live
    def submit(self, row: LearnRow) -> None:
        """Hand over accepted feedback, from any thread: a row whose predecessors have not arrived yet
        makes the learner read them from the log (they are committed: ``seq`` is commit order), and a
        row it already has is skipped, so every row is learned once, in ``seq`` order."""
        self._queue.put(row)

    def stop(self, timeout: float = 30.0) -> None:
        """Learn everything submitted, write a final checkpoint, stop the thread."""
        if self._thread is not None:
            self._stopping.set()  # a storage call being retried gives up: the log keeps the rows
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        if not self.failed and self.applied_seq > self.checkpoint_seq:
            try:
                self._checkpoint()
            except StorageUnavailable as exc:  # a restart replays from the previous checkpoint
                log.warning("final checkpoint skipped: %s", exc)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.failed

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._publish_due())
                except queue.Empty:  # learned rows wait for no more feedback: publish them now
                    self._publish()
                    continue
                items = [item]
                while not self._queue.empty() and len(items) < 4096:
                    items.append(self._queue.get())
                stop = any(i is _STOP for i in items)
                self._accept([i for i in items if isinstance(i, LearnRow)])
                if self.applied_seq != self._published_seq and (
                    stop or time.monotonic() - self._published_at >= self.publish_interval_s
                ):
                    self._publish()
                if self.applied_seq - self.checkpoint_seq >= self.checkpoint_every:
                    self._retrying("checkpoint", self._checkpoint)
                if stop:
                    return
        except _Stopping:
            return
        except Exception:  # the service reports itself unhealthy; the log keeps every row for a restart
            self.failed = True
            log.exception("learner stopped on an unexpected error")

    def _publish_due(self) -> float | None:
        """Seconds until unpublished learned rows are due for publishing (``None``: nothing to publish)."""
        if self.applied_seq == self._published_seq:
            return None
        return max(0.0, self._published_at + self.publish_interval_s - time.monotonic())

    def _accept(self, rows: list[LearnRow]) -> None:
        for row in rows:
            expected = self.received_seq + 1
            if row.seq < expected:
                continue
            if row.seq > expected:  # never expected; recover the gap from the log
                for r in self._retrying("reading the log", functools.partial(self._gap, expected, row.seq)):
                    self._add(r)
            self._add(row)

    def _gap(self, first: int, end: int) -> list[LearnRow]:
        """Rows ``first .. end - 1`` from the log."""
        return [r for r in self.storage.learn_rows(first - 1) if r.seq < end]

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, retried with exponential backoff while storage is unavailable."""
        delay = RECONNECT_MIN_S
        while True:
            try:
                return call()
            except StorageUnavailable as exc:
                log.warning("learner: %s failed (%s); retrying in %.2f s", what, exc, delay)
            if self._stopping.wait(delay):
                raise _Stopping
            delay = min(2 * delay, RECONNECT_MAX_S)

    def _add(self, row: LearnRow) -> None:
        self.pending.append(row)
        if len(self.pending) == self.batch:
            start = time.perf_counter()
            learn_group(self.policy, self.pending)
            self.applied_seq += len(self.pending)
            if self._on_learn is not None:
                self._on_learn(len(self.pending), time.perf_counter() - start)
            self.pending = []

    def _publish(self) -> None:
        """Publish the policy; a storage fault (the learner role publishes into the log) is
        retried after another ``publish_interval_s``, whether or not more feedback comes."""
        self._published_at = time.monotonic()
        try:
            self._publish_cb(self.policy, self.applied_seq)
        except StorageUnavailable as exc:
            log.warning("learner: publishing version %d failed (%s); retrying", self.applied_seq, exc)
            self._published_at += RECONNECT_MIN_S  # not in a tight loop when publish_interval_s = 0
            return
        self._published_seq = self.applied_seq

    def _checkpoint(self) -> None:
        self.storage.save_checkpoint(
            self.applied_seq, encode_state(self.policy.state_dict()), time.time(), self.keep_checkpoints
        )
        self.checkpoint_seq = self.applied_seq
