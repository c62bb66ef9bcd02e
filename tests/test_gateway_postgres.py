"""The LLM gateway on a real PostgreSQL log (started by the test with initdb/pg_ctl; skipped only when
PostgreSQL is not installed): answers, streams, feedback (a client's and the reward hook's), and a key's
spending restored after ``kill -9`` and a restart. docs/gateway.md."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from fake_upstream import answer_text
from gateway_support import CLIENT_KEY, LLMS, FakeUpstream, ask, gateway_config, upstream_entry
from service_support import Postgres, Server, postgres_available

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (initdb, pg_ctl) is not installed")
SMALL, MID, _ = LLMS
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def rows(url: str, sql: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)).all())
    finally:
        engine.dispose()


def spent(server: Server) -> dict[str, float]:
    usage = httpx.get(server.url + "/v1/gateway/usage", headers=AUTH).json()["key"]
    return {k: v["spent"] for k, v in usage.items()}


def test_gateway_on_postgres_answers_streams_and_keeps_spending_across_a_restart(tmp_path: Path) -> None:
    pg = Postgres().start()
    ups = [FakeUpstream(m, tmp_path / "upstreams.log") for m in (SMALL, MID)]
    server = None
    try:
        url = pg.new_database("gateway")
        for u in ups:
            u.wait()
        cfg = gateway_config(
            tmp_path / "router.toml", [upstream_entry(u) for u in ups],
            tables={"storage": {"url": url}, "gateway.budgets": [{"key_hash": "*", "day": 5.0, "month": 50.0}],
                    "gateway.reward_hook": {"callable": "reward_judge:judge"}},
        )  # fmt: skip
        server = Server(cfg, tmp_path / "gateway.log").start()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        r = client.chat.completions.create(model=SMALL, messages=ask("on postgres"))
        assert r.choices[0].message.content == answer_text(SMALL, "on postgres")
        chunks = list(client.chat.completions.create(model=MID, messages=ask("stream on postgres"), stream=True,
                                                     stream_options={"include_usage": True}))  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer_text(
            MID, "stream on postgres")  # fmt: skip
        answered = [r.model_extra["banditroute"], chunks[-1].model_extra["banditroute"]]
        events = [a["event_id"] for a in answered]
        # the reward hook judged both (SMALL 0, MID 1): a client's feedback after it is a duplicate
        for _ in range(100):
            feedback = dict(rows(url, f"SELECT event_id, reward FROM feedback WHERE event_id IN {tuple(events)}"))
            if len(feedback) == 2:
                break
            time.sleep(0.05)
        assert feedback == {events[0]: 0.0, events[1]: 1.0}
        again = client.post("/feedback", body={"event_id": events[0], "reward": 1.0}, cast_to=object)
        assert again["status"] == "duplicate"
        time.sleep(0.2)  # attempt rows are written every 50 ms
        attempts = rows(url, "SELECT event_id, upstream, outcome, cost FROM gateway_attempts ORDER BY event_id")
        assert attempts == [(events[0], SMALL, "ok", answered[0]["cost"]), (events[1], MID, "ok", answered[1]["cost"])]
        before = spent(server)
        assert before["day"] == pytest.approx(answered[0]["cost"] + answered[1]["cost"])

        server.kill()  # kill -9: the budgets in memory are gone; the log on PostgreSQL is not
        server = Server(cfg, tmp_path / "gateway.log").start()
        assert spent(server) == pytest.approx(before)  # restored from gateway_attempts
        assert rows(url, "SELECT count(*) FROM decisions") == [(2,)]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
        r = client.chat.completions.create(model="router", messages=ask("after the restart"))
        assert spent(server)["day"] == pytest.approx(before["day"] + r.model_extra["banditroute"]["cost"])
    finally:
        if server is not None:
            server.kill()
        for u in ups:
            u.stop()
        pg.stop()
