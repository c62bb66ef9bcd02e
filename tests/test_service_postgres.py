"""The router service on a real PostgreSQL, started by the test in a temporary directory.

Skips cleanly where ``initdb``/``pg_ctl`` are not installed. The same log semantics as SQLite:
idempotent feedback, state that survives a restart, and the crash scenario (``kill -9`` mid-load,
restart, bit-for-bit replay) — here with fast HPG learning in groups of 4.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("psycopg")

from service_support import (
    Postgres,
    Server,
    banditroute_cmd,
    check_after_crash,
    client,
    cluster_load,
    crash_scenario,
    postgres_available,
    unit_contexts,
    write_config,
)

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (initdb, pg_ctl) is not installed")


@pytest.fixture(scope="module")
def postgres() -> Any:
    pg = Postgres().start()
    yield pg
    pg.stop()


def test_route_feedback_and_restart_on_postgres(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.new_database("service_api")
    cfg = write_config(
        tmp_path / "router.toml",
        {
            "router": {"models": ["a", "b"], "dim": 4, "checkpoint_every": 3},
            "policy": {"name": "hpg"},
            "storage": {"url": url},
        },
    )
    server = Server(cfg, tmp_path / "server.log").start()
    with client(server) as c:
        events = []
        for ctx in unit_contexts(10, 4, 0):
            out = c.post("/v1/route", json={"context": ctx}).json()
            assert (
                c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": 0.5}).json()["status"] == "accepted"
            )
            events.append(out["event_id"])
        assert c.post("/v1/feedback", json={"event_id": events[0], "reward": 0.5}).json()["status"] == "duplicate"
        assert c.post("/v1/feedback", json={"event_id": 999, "reward": 0.5}).status_code == 404
        assert c.post("/v1/feedback", json={"event_id": events[1], "reward": 2.0}).status_code == 422
    server.stop()

    server = Server(cfg, tmp_path / "server.log").start()  # state and log survive the restart
    with client(server) as c:
        assert c.post("/v1/feedback", json={"event_id": events[-1], "reward": 0.1}).json()["status"] == "duplicate"
        out = c.post("/v1/route", json={"context": [0.5, 0.5, 0.5, 0.5]}).json()
        assert out["event_id"] == events[-1] + 1 and out["policy_version"] == 10
        stats = c.get("/v1/stats").json()
        assert (stats["decisions"], stats["feedback"]) == (11, 10)
    server.stop()


def test_kill_9_mid_load_on_postgres_with_fast_hpg(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.new_database("service_crash")
    policy = {"name": "hpg", "params": {"mode": "fast", "fast_kwargs": {"batch": 4, "rank": 6}}}
    outcome = crash_scenario(tmp_path, url, policy, batch=4)
    check_after_crash(url, outcome)


def test_learner_and_two_workers_on_postgres_under_load_with_a_worker_killed(
    postgres: Postgres, tmp_path: Path
) -> None:
    """The multi-host deployment on one PostgreSQL log: `serve --role learner` and two `serve --role
    worker` processes, each under its own load; the log numbers concurrent writers' events and feedback
    (advisory transaction locks), a worker killed with SIGKILL loses nothing acknowledged, and the
    learner's final checkpoint equals a clean replay of the log."""
    import signal
    import subprocess
    import threading

    url = postgres.new_database("cluster")
    policy = {"name": "linucb", "params": {"epsilon": 0.1}}
    cfg = write_config(
        tmp_path / "router.toml",
        {
            "router": {"models": ["a", "b", "c"], "dim": 8, "learn_batch": 4, "checkpoint_every": 40},
            "policy": policy,
            "storage": {"url": url},
            "cluster": {"poll_interval_s": 0.02},
        },
    )
    with open(tmp_path / "learner.log", "ab") as out:
        learner = subprocess.Popen([*banditroute_cmd(), "serve", "--config", str(cfg), "--role", "learner"],
                                   stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    workers = [
        Server(cfg, tmp_path / f"w{i}.log", extra=["--role", "worker", "--worker-index", str(i)]) for i in (0, 1)
    ]
    acked: set[int] = set()
    events: dict[int, tuple[list[float], str]] = {}
    stop, errors = threading.Event(), []
    try:
        for w in workers:
            w.start()
        loads = [threading.Thread(target=cluster_load, args=(w.url, acked, events, stop, errors, i))
                 for i, w in enumerate(workers)]  # fmt: skip
        for t in loads:
            t.start()
        deadline = time.monotonic() + 90
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        workers[1].kill()
        workers[1] = Server(cfg, tmp_path / "w1.log", port=workers[1].port, extra=workers[1].extra).start()
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        for t in loads:
            t.join(30)
        assert not errors, errors[:3]
        assert len(acked) >= 300
        with client(workers[0]) as c:
            for eid in sorted(set(events) - acked):
                assert c.post("/v1/feedback", json={"event_id": eid, "reward": 0.5}).status_code == 200
    finally:
        stop.set()
        for w in workers:
            if w.proc is not None and w.proc.poll() is None:
                w.stop()
        learner.send_signal(signal.SIGTERM)
        learner.wait(60)
    assert learner.returncode == 0
    check_after_crash(url, {"acked": acked, "events": set(events), "models": ["a", "b", "c"], "dim": 8, "batch": 4,
                            "policy": policy})  # fmt: skip


def test_workers_on_postgres_are_told_of_a_new_snapshot_at_once(postgres: Postgres, tmp_path: Path) -> None:
    """LISTEN/NOTIFY: with a 5 s poll interval a worker still serves the learner's new snapshot within a
    second of the feedback (the notification wakes its follower)."""
    from banditroute.service.auth import hash_key
    from banditroute.service.config import parse_config
    from banditroute.service.router import Router

    cfg = parse_config(
        {
            "router": {"models": ["a", "b"], "dim": 4, "publish_interval_s": 0.0},
            "storage": {"url": postgres.new_database("notify")},
            "auth": {"admin_key_hashes": [hash_key("admin")]},
            "cluster": {"poll_interval_s": 5.0},
        }
    )
    learner = Router(cfg, role="learner")
    learner.start()
    worker = Router(cfg, role="worker")
    worker.start()
    try:
        time.sleep(0.5)  # the follower is listening
        waits = []
        for i in range(3):
            out = worker.route(context=[1.0, 0.0, 0.0, float(i)])
            start = time.monotonic()
            worker.feedback(out["event_id"], 1.0)
            while worker.published is None or worker.published[1] < i + 1:
                assert time.monotonic() - start < 4.0, "the worker waited for its poll, not the notification"
                time.sleep(0.005)
            waits.append(time.monotonic() - start)
        assert max(waits) < 1.5, waits  # the learner is woken by the feedback, the worker by the snapshot
    finally:
        worker.stop()
        learner.stop()
