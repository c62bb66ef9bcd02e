"""The router service on a real PostgreSQL, started by the test in a temporary directory.

Skips cleanly where ``initdb``/``pg_ctl`` are not installed. The same log semantics as SQLite:
idempotent feedback, state that survives a restart, and the crash scenario (``kill -9`` mid-load,
restart, bit-for-bit replay) — here with fast HPG learning in groups of 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("psycopg")

from service_support import (
    Postgres,
    Server,
    check_after_crash,
    client,
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
