"""Micro-batched routing and grouped feedback (issue 16, item 3: ``service/fastpath.py``'s ``Batcher``).

A batch of route requests decided by one ``act_batch`` call must give exactly the answers of the same
requests routed one at a time (same events, models and probabilities, bit for bit), bad requests in a
batch must get their own 4xx and change nothing, and the real server must answer concurrent requests
through the batcher with every accepted decision logged. Likewise a group of feedback requests logged
in one commit must answer and log exactly as the same requests one at a time (first wins within the
group too), and a group that fails to commit must leave nothing behind.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from banditroute.core.validation import InputError
from banditroute.service.auth import hash_key
from banditroute.service.config import parse_config
from banditroute.service.router import Gone, NotFound, Router
from banditroute.service.storage import Storage
from service_support import CLIENT_KEY, Server, client, write_config


def config(db: Path, **router: Any) -> dict[str, Any]:
    return {
        "router": {"models": ["a", "b", "c"], "dim": 4, **router},
        "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
        "storage": {"url": f"sqlite:///{db}"},
        "auth": {"api_key_hashes": [hash_key(CLIENT_KEY)], "admin_key_hashes": [hash_key("admin-key-0123456789")]},
    }


def requests(n: int, seed: int) -> list[dict[str, Any]]:
    """Good requests with bad ones mixed in: wrong length, NaN, an overflowing magnitude, an unknown
    candidate, a repeated request id."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = [{"context": rng.normal(size=4).tolist()} for _ in range(n)]
    out[3] = {"context": [1.0, 2.0]}
    out[5] = {"context": [math.nan, 0.0, 0.0, 0.0]}
    out[7] = {"context": [1e200] * 4}
    out[9] = {"context": [0.1, 0.2, 0.3, 0.4], "candidates": ["a", "nope"]}
    out[11] = {"context": [0.1, 0.2, 0.3, 0.4], "candidates": ["b", "c"], "request_id": "r-1"}
    out[12] = {"context": [0.5, 0.2, 0.3, 0.4], "request_id": "r-1"}  # a retry of request 11
    return out


def outcome(result: Any) -> Any:
    return (type(result).__name__, str(result)) if isinstance(result, Exception) else result


def test_a_batch_answers_as_the_same_requests_one_at_a_time(tmp_path: Path) -> None:
    one, many = Router(parse_config(config(tmp_path / "one.db"))), Router(parse_config(config(tmp_path / "many.db")))
    one.start()
    many.start()
    try:
        reqs = requests(40, seed=0)
        singly = []
        for req in reqs:
            try:
                singly.append(one.route(**req))
            except InputError as exc:
                singly.append(exc)
        batched = many.route_batch(reqs[:20]) + many.route_batch(reqs[20:])
        assert [outcome(r) for r in batched] == [outcome(r) for r in singly]
        assert sum(isinstance(r, InputError) for r in batched) == 4
        assert batched[12] == batched[11]  # the retry got the logged decision
        assert many.storage.counts() == one.storage.counts() == (35, 0)
        # what was logged is identical too: contexts, probabilities, allowed arms
        for event in range(1, 36):
            a, b = one.storage.get_decision(event), many.storage.get_decision(event)
            assert a is not None and b is not None
            assert a[0].action == b[0].action and a[0].request_id == b[0].request_id
            for field in ("probs", "allowed", "context"):
                assert np.array_equal(getattr(a[0], field), getattr(b[0], field))
    finally:
        one.stop()
        many.stop()


def test_served_micro_batches_answer_each_request_and_log_the_good_ones(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    cfg = write_config(tmp_path / "router.toml", config(db, route_batch_window_ms=1.0))
    server = Server(cfg, tmp_path / "server.log").start()
    try:
        reqs = requests(48, seed=1)
        reqs[5] = {"context": [1.0, 2.0, 3.0]}  # JSON has no NaN: another wrong length instead

        def post(req: dict[str, Any]) -> tuple[int, Any]:
            with client(server) as c:
                res = c.post("/v1/route", json=req)
                return res.status_code, res.json()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, reqs))
        bad = {3, 5, 7, 9}
        assert all(status == 422 for i, (status, _) in enumerate(answers) if i in bad)
        good = [body for i, (status, body) in enumerate(answers) if i not in bad]
        assert all(status == 200 for i, (status, _) in enumerate(answers) if i not in bad)
        events = {body["event_id"] for body in good}
        assert events == set(range(1, 44))  # request 12 repeats request 11's event
        with client(server) as c:
            for body in good:
                assert c.post("/v1/feedback", json={"event_id": body["event_id"], "reward": 0.5}).status_code == 200
            assert c.get("/healthz").json()["status"] == "ok"
    finally:
        server.stop()
    store = Storage(f"sqlite:///{db}")
    try:
        assert store.counts() == (43, 43)
    finally:
        store.dispose()


def feedback_items(events: list[int]) -> list[dict[str, Any]]:
    """Feedback for ``events`` with bad and repeated items mixed in."""
    items: list[dict[str, Any]] = [{"event_id": e, "reward": 0.1 * (e % 10), "cost": None} for e in events]
    items[2] = {"event_id": events[2], "reward": math.nan, "cost": None}
    items[4] = {"event_id": events[4], "reward": 7.0, "cost": None}  # outside reward_range
    items[6] = {"event_id": events[6], "reward": 0.5, "cost": -1.0}
    items[8] = {"event_id": 10_000, "reward": 0.5, "cost": None}  # unknown
    items[10] = {"event_id": events[9], "reward": 0.9, "cost": 0.25}  # a second answer for item 9's event
    items.append({"event_id": events[1], "reward": 0.0, "cost": None})  # and for item 1's, in the next group
    return items


def test_a_feedback_group_answers_and_logs_as_the_same_feedback_one_at_a_time(tmp_path: Path) -> None:
    cfg = config(tmp_path / "one.db", feedback_ttl_s=3600)
    one = Router(parse_config(cfg))
    many = Router(parse_config({**cfg, "storage": {"url": f"sqlite:///{tmp_path / 'many.db'}"}}))
    one.start()
    many.start()
    try:
        reqs = [{"context": c} for c in np.random.default_rng(3).normal(size=(24, 4)).tolist()]
        events = [one.route(**r)["event_id"] for r in reqs]
        assert [many.route(**r)["event_id"] for r in reqs] == events
        items = feedback_items(events)
        singly: list[Any] = []
        for item in items:
            try:
                singly.append(one.feedback(**item))
            except (InputError, NotFound, Gone) as exc:
                singly.append(exc)
        grouped = many.feedback_batch(items[:12]) + many.feedback_batch(items[12:])
        assert [outcome(r) for r in grouped] == [outcome(r) for r in singly]
        assert [r["status"] for r in grouped if isinstance(r, dict)].count("duplicate") == 2
        assert sum(isinstance(r, Exception) for r in grouped) == 4
        assert many.storage.counts() == one.storage.counts() == (24, 19)  # items 2, 4, 6, 8 and 10 leave one each
        for event in events:  # the same seq, reward and cost for each event
            a, b = one.storage.get_decision(event), many.storage.get_decision(event)
            assert a is not None and b is not None
            answers = [None if f is None else (f.seq, f.reward, f.cost) for f in (a[1], b[1])]
            assert answers[0] == answers[1]
    finally:
        one.stop()
        many.stop()


def test_a_feedback_group_that_fails_to_commit_logs_none_of_it(tmp_path: Path) -> None:
    router = Router(parse_config(config(tmp_path / "r.db")))
    router.start()
    try:
        events = [router.route(context=[0.1, 0.2, 0.3, float(i)])["event_id"] for i in range(3)]
        rows: list[Any] = [(events[0], 0.5, None), (events[1], object(), None), (events[2], 0.5, None)]
        with pytest.raises(sa.exc.StatementError, match="float"):  # the second row cannot be bound
            router.storage.insert_feedbacks(rows, 0.0)
        assert router.storage.counts() == (3, 0)
        assert router.storage.insert_feedbacks([(e, 0.5, None) for e in events], 0.0) == [1, 2, 3]
    finally:
        router.stop()


def test_served_feedback_groups_accept_each_event_once(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    server = Server(write_config(tmp_path / "router.toml", config(db)), tmp_path / "server.log").start()
    try:
        with client(server) as c:
            routed = [c.post("/v1/route", json={"context": [0.1, 0.2, 0.3, 0.01 * i]}) for i in range(24)]
            events = [res.json()["event_id"] for res in routed]

        def post(item: dict[str, Any]) -> tuple[int, Any]:
            with client(server) as c:
                res = c.post("/v1/feedback", json=item)
                return res.status_code, res.json()

        items = [{"event_id": e, "reward": r} for e in events for r in (0.25, 0.75)]  # each event answered twice
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(post, items))
        assert all(status == 200 for status, _ in answers)
        by_event: dict[int, list[Any]] = {}
        for _, body in answers:
            by_event.setdefault(body["event_id"], []).append(body)
        for event, bodies in by_event.items():
            assert sorted(b["status"] for b in bodies) == ["accepted", "duplicate"], event
            assert len({b["seq"] for b in bodies}) == 1  # the duplicate names the accepted one's seq
        assert sorted(b["seq"] for bodies in by_event.values() for b in bodies if b["status"] == "accepted") == list(
            range(1, 25)
        )
    finally:
        server.stop()
