"""What one router worker's gateway learns of the others' spending through the log (``serve --workers N``).

Budgets live in each process's memory (:mod:`~banditroute.gateway.budget`); every worker writes the
attempt rows of the requests it answered to the shared log (``gateway_attempts``, in groups every
:data:`~banditroute.gateway.core.FLUSH_S`). :class:`SpendReader` reads the rows the *other* workers
wrote, every ``[cluster] poll_interval_s``, so that each worker's budgets book every worker's costs
(a worker runs it when the config has budgets: without any there is nothing to share).

Rows do not land in event order: a row is written when its request ends, and its event id is its
decision's, taken when the request started. So the reader follows the *decisions* of the gateway's
kinds, whose ids grow in commit order (:meth:`~banditroute.service.storage.Storage.decisions_after`):
each new one is *pending* until its attempt row is read (by primary key,
:meth:`~banditroute.service.storage.Storage.attempt_costs`); a pending decision younger than
:data:`RECENT_S` is looked up at every refresh, an older one (a long stream) every
:data:`RECHECK_EVERY` refreshes, and one without a row after :data:`PENDING_S` is dropped (its worker
crashed, its client left mid-call, or its row was lost to a storage fault: no cost was booked). Each
refresh costs two indexed reads proportional to the requests started and in flight since the last.

**The overspend bound.** Admission holds are per process, and a worker sees another's costs only once
they are in the log and read: it cannot see the other workers' requests in flight (their holds) nor
what they answered within about ``FLUSH_S + poll_interval_s`` (50 ms + 50 ms by default). A budget can
therefore be exceeded only by what the other workers admitted that this one had not yet seen: with
``N`` workers, spend ≤ budget + (N − 1) × (budget − the spend every worker had seen). A client that
waits for each answer and sends its next request more than ``FLUSH_S + poll_interval_s`` later never
overspends; one ``serve`` process is exact, as before (it runs no reader).
"""

from __future__ import annotations

from typing import Any

from banditroute.service.storage import Storage

KINDS = ("chat", "fallback", "forced")  # the kinds of the gateway's decisions (gateway/core.py)
RECENT_S = 10.0  # pending decisions younger than this are looked up at every refresh
RECHECK_EVERY = 20  # older ones at every 20th refresh
PENDING_S = 600.0  # a decision without an attempt row after this long is dropped; a later row is not read
CHUNK = 5000  # new decisions read per statement


class SpendReader:
    """Attempt rows of every worker as they reach the log (module docstring). :meth:`restore` and
    :meth:`read` run on one thread, on the reader's own connection ``storage``; :meth:`mine` and
    :meth:`theirs` on the event loop (what the worker wrote itself, booked when it was answered)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.after = 0  # the last gateway decision read
        self.pending: dict[int, float] = {}  # event id -> decision time, of decisions whose row is not read yet
        self.own: dict[int, float] = {}  # event id -> when, of rows this worker wrote (event loop only)
        self.ticks = 0

    def restore(self, since: float, now: float) -> list[dict[str, Any]]:
        """The attempt rows created at or after ``since`` (to book at start); then follow the log from
        there: decisions of the last :data:`PENDING_S` without a row are pending."""
        rows = self.storage.attempts(since)
        cutoff = now - PENDING_S
        old = max((r["event_id"] for r in rows if r["created_at"] < cutoff), default=0)
        self.after = self.storage.settled_through(old, cutoff)
        self._scan(booked={r["event_id"] for r in rows if r["event_id"] > self.after})
        return rows

    def read(self, now: float) -> list[dict[str, Any]]:
        """The attempt rows of every worker that reached the log since the last call (``event_id``,
        ``created_at``, ``key_hash``, ``profile``, ``cost``); the caller leaves out its own (:meth:`theirs`)."""
        self._scan()
        self.ticks += 1
        recheck = self.ticks % RECHECK_EVERY == 0
        due = [e for e, t in self.pending.items() if recheck or now - t < RECENT_S]
        rows = self.storage.attempt_costs(due) if due else []
        for r in rows:
            del self.pending[r["event_id"]]
        if recheck:
            self.pending = {e: t for e, t in self.pending.items() if now - t < PENDING_S}
        return rows

    def _scan(self, booked: set[int] | None = None) -> None:
        """New gateway decisions become pending (those already ``booked`` excepted)."""
        while True:
            new = self.storage.decisions_after(self.after, KINDS, CHUNK)
            for event_id, created_at in new:
                if booked is None or event_id not in booked:
                    self.pending[event_id] = created_at
            if new:
                self.after = new[-1][0]
            if len(new) < CHUNK:
                return

    def mine(self, event_id: int, now: float) -> None:
        """This worker wrote (is about to write) the attempt row of ``event_id`` and booked its cost."""
        self.own[event_id] = now

    def theirs(self, rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """The rows of :meth:`read` that other workers wrote (each row is read once: its own entry goes)."""
        out = [r for r in rows if self.own.pop(r["event_id"], None) is None]
        if len(self.own) > 1000:  # rows never read (lost to a storage fault, or landing after PENDING_S)
            self.own = {e: t for e, t in self.own.items() if now - t < 2 * PENDING_S}
        return out
