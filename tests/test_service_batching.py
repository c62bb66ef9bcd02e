"""Micro-batched routing (issue 16, item 3: ``router.route_batch_window_ms``).

A batch of route requests decided by one ``act_batch`` call must give exactly the answers of the same
requests routed one at a time (same events, models and probabilities, bit for bit), bad requests in a
batch must get their own 4xx and change nothing, and the real server must answer concurrent requests
through the batcher with every accepted decision logged.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from banditroute.core.validation import InputError
from banditroute.service.auth import hash_key
from banditroute.service.config import parse_config
from banditroute.service.router import Router
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
