"""Storage faults against a real ``banditroute serve`` on loopback (docs/reliability.md).

Each fault is injected for real: a full disk (``prlimit --fsize`` on the server's PID), a
PostgreSQL outage (``pg_ctl stop -m fast`` / ``start``), another process holding the SQLite write
lock, a read-only database file or directory (``chattr +i``), a second router on the same log.
During a fault, requests answer 503 at once and ``/healthz`` says so; after it, the server
recovers by itself within 5 s (measured, written to ``recovery.json`` in the test's directory);
no acknowledged decision or feedback is lost, nothing is learned twice, and the final checkpoint
equals a clean replay of the log (:func:`service_support.check_after_crash`).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
import numpy as np

from banditroute.service.learner import Learner
from banditroute.service.storage import DecisionRecord, Storage, StorageUnavailable
from service_support import (
    Postgres,
    Server,
    check_after_crash,
    client,
    postgres_available,
    unit_contexts,
    write_config,
)

DIM = 4
MODELS = ["a", "b", "c"]
POLICY = {"name": "linucb", "params": {"epsilon": 0.1}}
BATCH = 2
RECOVERY_S = 5.0  # the promise of docs/reliability.md
needs_postgres = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (initdb, pg_ctl) is not installed")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    if not postgres_available():
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    pg = Postgres().start()
    yield pg
    pg.stop()


def router_config(root: Path, url: str, **storage: Any) -> Path:
    return write_config(
        root / "router.toml",
        {
            "router": {"models": MODELS, "dim": DIM, "learn_batch": BATCH, "checkpoint_every": 4,
                       "publish_interval_s": 0.0},
            "policy": POLICY,
            "storage": {"url": url, **storage},
        },
    )  # fmt: skip


class Load:
    """Routes and feedback over HTTP, remembering what the server acknowledged."""

    def __init__(self, c: httpx.Client, seed: int) -> None:
        self.c = c
        self.contexts = iter(unit_contexts(10_000, DIM, seed))
        self.routed: dict[int, list[float]] = {}  # acknowledged decisions
        self.acked: set[int] = set()  # acknowledged feedback

    def route(self) -> httpx.Response:
        ctx = next(self.contexts)
        res = self.c.post("/v1/route", json={"context": ctx})
        if res.status_code == 200:
            self.routed[res.json()["event_id"]] = ctx
        return res

    def feedback(self, event_id: int) -> httpx.Response:
        res = self.c.post("/v1/feedback", json={"event_id": event_id, "reward": 0.25 + 0.5 * (event_id % 2)})
        if res.status_code == 200:
            assert res.json()["status"] == "accepted", res.text
            self.acked.add(event_id)
        return res

    def run(self, n: int) -> None:
        for _ in range(n):
            res = self.route()
            assert res.status_code == 200, res.text
            assert self.feedback(res.json()["event_id"]).status_code == 200

    def outcome(self) -> dict[str, Any]:
        return {"acked": self.acked, "events": set(self.routed), "models": MODELS, "dim": DIM, "batch": BATCH,
                "policy": POLICY}  # fmt: skip


def unavailable(res: httpx.Response) -> None:
    assert res.status_code == 503, res.text
    assert res.json()["detail"].startswith("storage unavailable: ") and res.headers["retry-after"] == "1"


def recover(load: Load, limit: float = RECOVERY_S) -> float:
    """Seconds until a route succeeds again (the fault was just cleared)."""
    start = time.monotonic()
    while True:
        res = load.route()
        if res.status_code == 200:
            return time.monotonic() - start
        unavailable(res)
        assert time.monotonic() - start < limit, f"no recovery within {limit} s"
        time.sleep(0.02)


def record(root: Path, name: str, seconds: float) -> None:
    """Keep a measured figure (printed, and in ``recovery.json`` of the test's directory)."""
    path = root / "recovery.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = round(seconds, 3)
    path.write_text(json.dumps(figures, indent=1))
    print(f"measured {name}: {seconds:.3f} s")


def finish(load: Load, server: Server, url: str) -> None:
    """Feedback for every acknowledged decision, a clean stop, then the log checks."""
    for eid in sorted(set(load.routed) - load.acked):
        assert load.feedback(eid).status_code == 200
    deadline = time.monotonic() + RECOVERY_S  # a learner retrying its checkpoint succeeds within a backoff step
    while (health := load.c.get("/healthz").json())["status"] != "ok" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health["status"] == "ok" and health["learner"] == "running", health
    assert server.stop() in (0, -signal.SIGTERM)
    check_after_crash(url, load.outcome())


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """Read-only even for root (``chattr +i``); skips where the file system does not support it."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    done: list[Path] = []
    try:
        for p in paths:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                pytest.skip("chattr +i is not permitted here")
            done.append(p)
        yield
    finally:
        for p in done:
            subprocess.run(["chattr", "-i", str(p)], check=True)


# ---------------------------------------------------------------------- storage layer (no HTTP)
def decision(event_id: int, request_id: str | None = None) -> DecisionRecord:
    """A decision record (the log assigns its event id: ``event_id`` is what the test expects it to get)."""
    return DecisionRecord(event_id, request_id, 0.0, "route", 0, 0, np.ones(1), np.ones(1, dtype=bool), np.zeros(DIM))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_failed_statement_is_rolled_back(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A statement the database rejects (an id beyond BIGINT, a duplicate key) leaves the connection
    usable: the next call works (before, on PostgreSQL: every later call failed with
    InFailedSqlTransaction)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database("rollback")
    store = Storage(url)
    try:
        store.create_schema()
        assert store.insert_decision(decision(1, "r")) == 1
        with pytest.raises(Exception) as raised:
            store.get_decision(2**63)
        assert not isinstance(raised.value, StorageUnavailable)  # a bad statement, not an outage
        assert store.max_event_id() == 1
        with pytest.raises(Exception, match=r"(?i)unique|duplicate key"):
            store.insert_decision(decision(2, "r"))
        assert store.insert_decision(decision(2)) == 2  # the failed insert took no id
        assert store.max_event_id() == 2
    finally:
        store.dispose()


def test_lock_timeout_is_storage_unavailable_and_the_learner_retries_its_checkpoint(tmp_path: Path) -> None:
    """Another process's write lock: a call waits ``timeout_s``, then raises StorageUnavailable; the
    learner's checkpoint fails the same way and is retried until the lock is gone (it does not die)."""
    from banditroute.envs.base import EnvSpec
    from banditroute.policies.registry import make_policy
    from banditroute.service.storage import LearnRow

    db = tmp_path / "r.db"
    store = Storage(f"sqlite:///{db}", timeout_s=0.2)
    store.create_schema()
    spec = EnvSpec(n_arms=2, dim=DIM)

    def fresh() -> Any:
        return make_policy("linucb", spec)

    learner = Learner(
        fresh(), store, batch=1, checkpoint_every=1, keep_checkpoints=2, publish_interval_s=0.0,
        publish=lambda p, v: None,
    )  # fmt: skip
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        start = time.monotonic()
        with pytest.raises(StorageUnavailable, match="locked"):
            store.insert_decision(decision(1))
        assert 0.15 < time.monotonic() - start < 2.0
        learner.start()
        learner.submit(LearnRow(1, np.ones(DIM), 0, np.array([0.5, 0.5]), 1.0))
        time.sleep(1.0)  # the checkpoint after row 1 fails and is retried meanwhile
        assert learner.alive() and learner.applied_seq == 1 and learner.checkpoint_seq == 0
        other.execute("ROLLBACK")
        deadline = time.monotonic() + RECOVERY_S
        while learner.checkpoint_seq != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert learner.checkpoint_seq == 1 and learner.alive()
    finally:
        other.close()
        learner.stop()
        store.dispose()
    assert store.failing(60) is None  # the last call (the checkpoint) succeeded


# ---------------------------------------------------------------------- SQLite server
def test_disk_full_on_sqlite_answers_503_then_recovers(tmp_path: Path) -> None:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit (util-linux) is not installed")
    db = tmp_path / "router.db"
    url = f"sqlite:///{db}"
    server = Server(router_config(tmp_path, url), tmp_path / "server.log").start()
    assert server.proc is not None
    pid = str(server.proc.pid)
    with client(server) as c:
        load = Load(c, seed=1)
        load.run(12)
        waiting = [load.route().json()["event_id"] for _ in range(3)]  # routed, feedback comes later
        for suffix in ("", "-wal", "-shm", ".lock"):  # created 0600, not 0644
            assert (db.parent / (db.name + suffix)).stat().st_mode & 0o777 == 0o600, suffix

        subprocess.run([prlimit, "--pid", pid, "--fsize=1:"], check=True)  # no file of the server grows
        try:
            for _ in range(3):
                start = time.monotonic()
                unavailable(load.route())
                # fails fast: a disk-full error is immediate, far below the 5 s storage timeout (the
                # margin is for a loaded 2-core machine, where one request has taken 1.3 s)
                assert time.monotonic() - start < 2.5
            for eid in waiting:
                unavailable(load.feedback(eid))
            health = c.get("/healthz")
            storage = health.json()["storage"]  # EFBIG: SQLite says "disk I/O error" or "disk is full"
            assert health.status_code == 503 and ("I/O" in storage or "full" in storage), health.text
            assert c.get("/metrics").status_code == 200
        finally:
            subprocess.run([prlimit, "--pid", pid, "--fsize=unlimited:"], check=True)
        record(tmp_path, "sqlite_disk_full", recover(load))
        for eid in waiting:  # not stored while the disk was full: accepted now, with the next seq
            assert load.feedback(eid).json()["status"] == "accepted"
        assert c.get("/healthz").json()["status"] == "ok"
        load.run(5)
        finish(load, server, url)
    with sqlite3.connect(db) as conn:  # nothing half-done: exactly the acknowledged decisions
        assert {r[0] for r in conn.execute("select event_id from decisions")} == set(load.routed)


def test_write_lock_held_elsewhere_health_and_metrics_answer_routes_get_503(tmp_path: Path) -> None:
    """Another process holds the SQLite write lock: ``/healthz`` and ``/metrics`` still answer at
    once while a route waits; the route gets 503 after ``[storage] timeout_s`` (before: 30 s stall
    of every endpoint)."""
    db = tmp_path / "router.db"
    url = f"sqlite:///{db}"
    server = Server(router_config(tmp_path, url, timeout_s=1.5), tmp_path / "server.log").start()
    with client(server) as c:
        load = Load(c, seed=2)
        load.run(4)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            waited: list[float] = []
            statuses: list[int] = []

            def blocked_route() -> None:
                with client(server) as c2:
                    start = time.monotonic()
                    statuses.append(c2.post("/v1/route", json={"context": [0.5] * DIM}).status_code)
                    waited.append(time.monotonic() - start)

            thread = threading.Thread(target=blocked_route)
            thread.start()
            time.sleep(0.3)  # the route now waits on the lock
            for path in ("/healthz", "/metrics"):
                start = time.monotonic()
                assert c.get(path).status_code in (200, 503)
                assert time.monotonic() - start < 1.0, f"{path} waited on the write lock"  # the route waits 1.5 s
            thread.join(10)
            assert statuses == [503] and 1.2 < waited[0] < 3.5, (statuses, waited)
            health = c.get("/healthz")
            assert health.status_code == 503 and "locked" in health.json()["storage"]
        finally:
            other.execute("ROLLBACK")
            other.close()
        record(tmp_path, "sqlite_lock_released", recover(load))
        finish(load, server, url)


def test_read_only_database_file_or_directory_stops_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "router.db"
    cfg = router_config(tmp_path, f"sqlite:///{db}")
    server = Server(cfg, tmp_path / "server.log").start()
    with client(server) as c:
        Load(c, seed=3).run(2)
    server.stop()
    assert sorted(p.name for p in data.iterdir()) == ["router.db", "router.db.lock", "router.db.turn"]  # no -wal, -shm
    for target, message in [(data, "read-only"), (db, "read-only")]:  # the directory: no -wal can be made
        log = tmp_path / f"refused-{target.name}.log"
        start = time.monotonic()
        refused = Server(cfg, log)
        with immutable(target), pytest.raises(RuntimeError, match="server exited"):
            try:
                refused.start()
            finally:
                refused.kill()
        assert time.monotonic() - start < 15
        text = log.read_text()
        assert message in text and "Traceback" not in text, text[-2000:]
    Server(cfg, tmp_path / "server.log").start().stop()  # writable again: starts


# ---------------------------------------------------------------------- PostgreSQL server
@needs_postgres
def test_postgres_outage_answers_503_then_recovers(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.new_database("outage")
    server = Server(router_config(tmp_path, url, timeout_s=2.0), tmp_path / "server.log").start()
    with client(server) as c:
        load = Load(c, seed=4)
        load.run(10)
        waiting = [load.route().json()["event_id"] for _ in range(3)]
        postgres.pg_ctl("stop", "-m", "fast")
        try:
            start = time.monotonic()
            res = c.post("/v1/route", json={"context": [0.5] * DIM, "request_id": "secret-request-id-7"})
            unavailable(res)
            for eid in waiting:
                unavailable(load.feedback(eid))
            assert time.monotonic() - start < 4 * 2.0  # bounded by the connect timeout, not hung
            health = c.get("/healthz")
            assert health.status_code == 503 and health.json()["storage"] != "ok", health.text
        finally:
            postgres.pg_ctl("start")
        record(tmp_path, "postgres_restart", recover(load))
        for eid in waiting:
            assert load.feedback(eid).json()["status"] == "accepted"
        load.run(5)
        finish(load, server, url)
    text = (tmp_path / "server.log").read_text()
    assert "storage: " in text and "secret-request-id-7" not in text and "Traceback" not in text, text[-3000:]


@needs_postgres
def test_event_id_beyond_bigint_on_postgres_leaves_the_server_working(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.new_database("bigint")
    server = Server(router_config(tmp_path, url), tmp_path / "server.log").start()
    with client(server) as c:
        load = Load(c, seed=5)
        load.run(2)
        for eid in (2**63, 2**63 - 1, -(2**63) - 1):
            assert c.post("/v1/feedback", json={"event_id": eid, "reward": 0.5}).status_code in (404, 422)
        load.run(3)
        assert c.get("/v1/stats").json()["feedback"] == 5
        finish(load, server, url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_second_writer_is_refused_and_kill_9_frees_the_log(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'router.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database("two_writers")
    cfg = router_config(tmp_path, url)
    first = Server(cfg, tmp_path / "first.log").start()
    assert first.proc is not None
    pid, host = first.proc.pid, socket.gethostname()
    holder = {"sqlite": f"another router (pid {pid} on {host})", "postgresql": f"router pid={pid} host={host}"}
    second = Server(cfg, tmp_path / "second.log")
    try:
        with pytest.raises(RuntimeError, match="server exited"):
            second.start()
    finally:
        second.kill()
    text = (tmp_path / "second.log").read_text()
    assert holder[backend] in text and "Traceback" not in text, text[-2000:]
    first.kill()  # kill -9: the OS (flock) or the database (the dead client's backend) releases the lock
    start = time.monotonic()
    Server(cfg, tmp_path / "third.log").start().stop()
    record(tmp_path, f"{backend}_restart_after_kill_9", time.monotonic() - start)
