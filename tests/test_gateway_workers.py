"""The LLM gateway on ``banditroute serve --workers 2`` (docs/gateway.md, "Several workers"): real
processes on loopback — a supervisor, a learner and two uvicorn workers on one socket, in front of real
fake upstreams — driven by the official openai client. Each client is pinned to one worker: its one
keep-alive connection was accepted by that worker, whose pid ``GET /metrics`` names on the same
connection (checked again after every request)."""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from banditroute.gateway.budget import Budgets
from banditroute.gateway.config import Budget
from banditroute.gateway.core import ADDED_UPSTREAM, ADDED_UPSTREAMS_BEFORE, stored_configs
from banditroute.gateway.shared import PENDING_S, RECENT_S, RECHECK_EVERY, SpendReader
from banditroute.service.auth import hash_key
from banditroute.service.storage import DecisionRecord, Storage
from fake_upstream import answer_text
from gateway_support import ADMIN_KEY, CLIENT_KEY, LLMS, ask, db_rows, gateway_config, start_upstreams, upstream_entry
from service_support import Postgres, Server, postgres_available

SMALL, MID, LARGE = LLMS
BUDGET_KEY = "budget-key-for-tests-0123456789abcdef0123456789"
BUDGET = 0.0002  # a day's budget of BUDGET_KEY: about 10 answers of LARGE (bound 3.9e-5, cost 1.8e-5 each)
POLL_S = 0.05  # [cluster] poll_interval_s
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PID = re.compile(r'^banditroute_process\{[^}]*pid="(\d+)"', re.MULTILINE)


class Pinned:
    """An openai client (and its httpx client) over one keep-alive connection to the worker ``pid``."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self._open()
        self.pid = self.worker()

    def _open(self) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        headers = {"Authorization": f"Bearer {self.key}"}
        self.http = httpx.Client(base_url=self.url, headers=headers, limits=limits, timeout=30.0)
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=self.key, max_retries=0, http_client=self.http)

    def worker(self) -> int:
        found = PID.search(self.http.get("/metrics").text)
        assert found is not None
        return int(found.group(1))

    def ensure(self) -> None:
        """Back on this worker (uvicorn closes a keep-alive connection idle for 5 s; a new one may land elsewhere)."""
        for _ in range(200):
            if self.worker() == self.pid:
                return
            self.http.close()
            self._open()
        raise AssertionError(f"cannot reach worker {self.pid} again")

    def chat(self, **body: Any) -> Any:
        self.ensure()
        out = self.client.chat.completions.create(**body)
        assert self.worker() == self.pid  # the same connection, so the same worker, answered
        return out

    def close(self) -> None:
        self.http.close()


def pin_both(url: str, key: str) -> tuple[Pinned, Pinned]:
    """One pinned client per worker: new connections until two workers have accepted one."""
    found: dict[int, Pinned] = {}
    deadline = time.monotonic() + 60
    while len(found) < 2:
        assert time.monotonic() < deadline, "the second worker never accepted a connection"
        p = Pinned(url, key)
        if p.pid in found:
            p.close()
            time.sleep(0.05)
        else:
            found[p.pid] = p
    a, b = found.values()
    return a, b


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gateway-workers")
    ups = start_upstreams([*LLMS, "gemma-2-9b-it"], tmp / "upstreams.log")
    extra = ups.pop("gemma-2-9b-it")
    cfg = gateway_config(
        tmp / "router.toml", [upstream_entry(u) for u in ups.values()],
        tables={
            "auth": {"api_key_hashes": [hash_key(CLIENT_KEY), hash_key(BUDGET_KEY)],
                     "admin_key_hashes": [hash_key(ADMIN_KEY)]},
            "cluster": {"workers": 2, "poll_interval_s": POLL_S},
            "gateway.budgets": [{"key_hash": hash_key(BUDGET_KEY), "day": BUDGET}],
        },
    )  # fmt: skip
    server = Server(cfg, tmp / "gateway.log", extra=["--workers", "2"]).start()
    pinned: list[Pinned] = []
    try:
        pinned += pin_both(server.url, CLIENT_KEY)
        yield {"server": server, "ups": ups, "extra": extra, "a": pinned[0], "b": pinned[1]}
    finally:
        for p in pinned:
            p.close()
        try:
            server.stop()
        except Exception:
            server.kill()
        for u in [*ups.values(), extra]:
            u.stop()


def _eventually(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(0.01)


def test_both_workers_route_log_and_take_each_others_feedback(cluster: dict[str, Any]) -> None:
    server, a, b = cluster["server"], cluster["a"], cluster["b"]
    events: dict[int, list[int]] = {}
    for p in (a, b):
        for i in range(4):
            r = p.chat(model="router", messages=ask(f"route {p.pid} {i}"))
            info = r.model_extra["banditroute"]
            assert info["upstream"] in LLMS
            assert r.choices[0].message.content == answer_text(info["upstream"], f"route {p.pid} {i}")
            events.setdefault(p.pid, []).append(info["event_id"])
        p.ensure()
        with p.client.chat.completions.with_streaming_response.create(
            model="router", messages=ask(f"stream {p.pid}"), stream=True
        ) as s:
            assert s.headers["x-banditroute-upstream"] in LLMS
            assert b"[DONE]" in s.read()
    ids = [e for v in events.values() for e in v]
    assert len(set(ids)) == 8  # the log numbers every worker's decisions
    logged = db_rows(server, f"SELECT kind FROM decisions WHERE event_id IN ({','.join(map(str, ids))})")
    assert logged == [("chat",)] * 8
    for p, other in ((a, b), (b, a)):  # feedback for a decision of the other worker
        for e in events[other.pid][:2]:
            p.ensure()
            res = p.http.post("/v1/feedback", json={"event_id": e, "reward": 1.0})
            assert res.status_code == 200 and res.json()["status"] == "accepted", res.text
    for p in (a, b):
        p.ensure()
        text = p.http.get("/metrics").text
        assert 'role="worker"' in text and f'pid="{p.pid}"' in text
        assert re.search(r'banditroute_gateway_requests_total\{outcome="ok",upstream="[^"]+"\} [1-9]', text)
    assert a.pid != b.pid


def test_a_budget_is_not_overspent_across_workers(cluster: dict[str, Any]) -> None:
    """A key's requests alternate between the two workers, each sent once the other worker has seen what
    was spent so far (its ``usage``; it may take about 50 ms flush + 50 ms poll): the budget holds, and
    both workers refuse at the end. Each worker alone would admit about the whole budget, so about twice
    it together (and see nothing: every wait below would time out)."""
    server = cluster["server"]
    a, b = pin_both(server.url, BUDGET_KEY)
    answered: dict[int, int] = {a.pid: 0, b.pid: 0}
    refused: set[int] = set()
    total, delays = 0.0, []

    def seen_by(p: Pinned) -> float:
        p.ensure()
        return float(p.http.get("/v1/gateway/usage").json()["key"]["day"]["spent"])

    try:
        for i in range(60):
            p, other = (a, b) if i % 2 == 0 else (b, a)
            try:
                r = p.chat(model=LARGE, messages=ask(f"spend {i}"), max_tokens=30)
            except openai.RateLimitError as exc:
                assert "budget" in str(exc)
                refused.add(p.pid)
                if len(refused) == 2:
                    break
                continue
            answered[p.pid] += 1
            total += r.model_extra["banditroute"]["cost"]
            start = time.monotonic()
            while seen_by(other) < total - 1e-12 and time.monotonic() - start < 1.0:
                time.sleep(0.01)
            delays.append(time.monotonic() - start)
        time.sleep(0.2)
        key = hash_key(BUDGET_KEY)
        spent = db_rows(server, f"SELECT sum(cost), count(*) FROM gateway_attempts WHERE key_hash = '{key}'")
        assert spent[0][0] <= BUDGET, (spent, answered)  # never over the budget
        assert spent[0][0] > 0.7 * BUDGET and spent[0][1] == sum(answered.values()), (spent, answered)
        assert refused == {a.pid, b.pid} and min(answered.values()) >= 3, answered  # both spent, both refuse
        assert max(delays) < 1.0, delays  # each worker saw the other's costs within a second (about 0.1 s)
        for p in (a, b):  # both account every worker's spending, and nothing is held any more
            p.ensure()
            usage = p.http.get("/v1/gateway/usage").json()["key"]["day"]
            assert usage["spent"] == pytest.approx(spent[0][0]) and usage["held"] == 0.0, usage
    finally:
        a.close()
        b.close()


def test_upstreams_added_and_retired_on_one_worker_reach_the_other(cluster: dict[str, Any]) -> None:
    a, b, extra = cluster["a"], cluster["b"], cluster["extra"]
    a.ensure()
    r = a.http.post("/v1/gateway/upstreams", json=upstream_entry(extra, name="gemma"), headers=ADMIN)
    assert r.status_code == 201, r.text

    def listed(p: Pinned) -> bool:
        p.ensure()
        return "gemma" in [m.id for m in p.client.models.list()]

    _eventually(lambda: listed(b), 2.0, "the other worker lists the added upstream")
    before = extra.control()["requests"]
    out = b.chat(model="gemma", messages=ask("new arm"))  # answered by the worker that did not add it
    assert out.choices[0].message.content == answer_text("gemma-2-9b-it", "new arm")
    assert out.model_extra["banditroute"]["upstream"] == "gemma"
    assert extra.control()["requests"] == before + 1

    b.ensure()
    assert b.http.delete("/v1/gateway/upstreams/gemma", headers=ADMIN).status_code == 200
    _eventually(lambda: not listed(a), 2.0, "the other worker drops the retired upstream")
    n = extra.control()["requests"]
    for p in (a, b):
        with pytest.raises(openai.NotFoundError, match="unknown model"):
            p.chat(model="gemma", messages=ask("gone"))
        for i in range(8):
            r = p.chat(model="router", messages=ask(f"after retire {i}"))
            assert r.model_extra["banditroute"]["upstream"] != "gemma"
    assert extra.control()["requests"] == n  # no worker calls the retired upstream


def test_upstreams_added_through_both_workers_at_once_both_reach_both(cluster: dict[str, Any]) -> None:
    """Each added upstream's config is its own meta entry: two added at the same moment through two
    workers cannot overwrite each other (a shared JSON list rewritten by each could lose one)."""
    a, b, extra = cluster["a"], cluster["b"], cluster["extra"]
    for p in (a, b):
        p.ensure()

    def add(p: Pinned, name: str) -> int:
        return p.http.post("/v1/gateway/upstreams", json=upstream_entry(extra, name=name), headers=ADMIN).status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(add, (a, b), ("gemma-a", "gemma-b"))) == [201, 201]

    def lists_both(p: Pinned) -> bool:
        p.ensure()
        return {"gemma-a", "gemma-b"} <= {m.id for m in p.client.models.list()}

    for p in (a, b):
        _eventually(lambda p=p: lists_both(p), 2.0, "each worker lists both added upstreams")
        for name in ("gemma-a", "gemma-b"):
            assert p.chat(model=name, messages=ask("both")).model_extra["banditroute"]["upstream"] == name
    store = Storage(f"sqlite:///{cluster['server'].config.parent / 'router.db'}")
    try:
        assert {c["name"] for c in stored_configs(store)} >= {"gemma-a", "gemma-b"}
    finally:
        store.dispose()
    for name in ("gemma-a", "gemma-b"):
        a.ensure()
        assert a.http.delete(f"/v1/gateway/upstreams/{name}", headers=ADMIN).status_code == 200


def test_configs_of_upstreams_added_before_one_entry_each_are_still_read(tmp_path: Path) -> None:
    store = Storage(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        store.create_schema()
        old = [{"name": "old-one", "base_url": "http://127.0.0.1:1/v1", "model": "m"}]
        store.set_meta(ADDED_UPSTREAMS_BEFORE, json.dumps(old))  # as logs written before one entry each
        store.set_meta(ADDED_UPSTREAM + "new-one", json.dumps({**old[0], "name": "new-one"}))
        store.set_meta("gateway.upstreams_x", "not an upstream")  # a key that only shares a prefix's start
        assert [c["name"] for c in stored_configs(store)] == ["old-one", "new-one"]
    finally:
        store.dispose()


# ---------------------------------------------------------------------- in process, on real logs
@pytest.fixture(params=["sqlite", "postgres"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
        return
    if not postgres_available():
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    pg = Postgres().start()
    try:
        yield pg.new_database("reader")
    finally:
        pg.stop()


def test_the_reader_books_each_row_once_in_whatever_order_rows_land(log_url: str) -> None:
    """Rows land when requests end, not in event order: each is read once, a worker's own rows are left
    to it, a decision in flight at a restart is followed, a long one is rechecked, a lost one dropped."""
    store = Storage(log_url)
    store.create_schema()
    now = time.time()

    def decide(kind: str = "chat", at: float = now) -> int:
        rec = DecisionRecord(0, None, at, kind, 0, 0, np.ones(1), np.ones(1, dtype=bool), np.zeros(2))
        return store.insert_decision(rec)

    def land(event_id: int, cost: float = 0.5) -> None:
        store.insert_attempts([{"event_id": event_id, "created_at": now, "key_hash": "k", "upstream": "u",
                                "outcome": "ok", "prompt_sha256": "h", "cost": cost}])  # fmt: skip

    def ids(rows: list[dict[str, Any]]) -> list[int]:
        return sorted(r["event_id"] for r in rows)

    e1, e2 = decide(), decide()
    decide("route")  # not the gateway's: never pending
    e4 = decide("fallback")
    land(e1)
    reader = SpendReader(store.clone())
    assert ids(reader.restore(0.0, now)) == [e1] and set(reader.pending) == {e2, e4}  # not the route decision
    land(e4)
    assert ids(reader.read(now)) == [e4]
    assert reader.read(now) == []  # each row once
    land(e2)  # lands after a later decision's row
    assert ids(reader.read(now)) == [e2]
    e5 = decide()
    reader.mine(e5, now)
    land(e5)
    rows = reader.read(now)
    assert ids(rows) == [e5] and reader.theirs(rows, now) == []  # this worker's own row: booked already

    e6 = decide()  # in flight while a worker restarts
    again = SpendReader(store.clone())
    assert ids(again.restore(0.0, now)) == [e1, e2, e4, e5] and set(again.pending) == {e6}
    land(e6)
    assert ids(again.read(now)) == [e6]

    long_one, lost = decide(at=now - 2 * RECENT_S), decide(at=now - PENDING_S - 1)
    land(long_one)
    seen = [ids(again.read(now)) for _ in range(RECHECK_EVERY)]  # a long request: looked up every 20th tick
    assert seen.count([long_one]) == 1 and sum(map(len, seen)) == 1
    assert lost not in again.pending  # dropped at that recheck: no row after PENDING_S
    reader.storage.close()
    again.storage.close()
    store.dispose()


def test_a_late_row_counts_only_in_the_periods_it_belongs_to() -> None:
    """A row of yesterday read today (a long request, or a worker's row read late) is this month's
    spending but not today's; it must not reset today's period either."""
    b, budget = Budgets(), Budget(day=1.0, month=10.0)
    today = calendar.timegm((2026, 12, 15, 12, 0, 0))
    b.charge("k", budget, 0.3, now=today)
    b.charge("k", budget, 0.2, now=today, at=today - 86400)
    b.charge("k", budget, 0.1, now=today, at=today - 40 * 86400)  # last month's: neither
    assert b.spent("k", budget, now=today) == {"day": pytest.approx(0.3), "month": pytest.approx(0.5)}
