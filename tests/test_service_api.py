"""The router service over HTTP: a real ``banditroute serve`` on loopback with SQLite (WAL).

Every endpoint is called with good and bad input (shapes, NaN, unknown ids, wrong keys, oversized
bodies); a rejected request must change nothing in the log. A second server runs retrieval mode
with a fake embedder and fake retrievers imported by the server process itself.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx

from service_support import ADMIN_KEY, CLIENT_KEY, Server, client, unit_contexts, write_config

DIM = 8
MAX_BODY = 4096


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("plain")
    cfg = write_config(
        root / "router.toml",
        {
            "router": {"models": ["small", "medium", "large"], "dim": DIM, "max_models": 5, "checkpoint_every": 10},
            "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
            "storage": {"url": "sqlite:///router.db"},
            "server": {"max_body_bytes": MAX_BODY, "access_log": True},
            "ope": {"interval_s": 0.3, "min_rows": 10, "candidates": [{"name": "greedy"}]},
        },
    )
    server = Server(cfg, root / "server.log").start()
    yield server, root / "router.db"
    server.stop()


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("retrieval")
    docs = [
        ("d1", "the nile is the longest river in africa"),
        ("d2", "the amazon river carries the most water"),
        ("d3", "everest is the highest mountain on earth"),
        ("d4", "the sahara is a large hot desert in africa"),
        ("d5", "mountains and rivers shape the land"),
    ]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in docs) + "\n")
    fake = "service_support:FakeRetriever"
    cfg = write_config(
        root / "router.toml",
        {
            "router": {"checkpoint_every": 5},
            "policy": {"name": "hpg", "params": {"eta": 0.5}},
            "storage": {"url": "sqlite:///router.db"},
            "embedder": {"factory": "service_support:FakeEmbedder", "params": {"dim": DIM}},
            "retrieval": {"corpus": "corpus.jsonl", "k": 3},
            "retrieval.arms": [
                {"name": "overlap", "retriever": {"factory": fake, "params": {"name": "overlap"}}},
                {"name": "reverse", "retriever": {"factory": fake, "params": {"name": "reverse", "reverse": True}}},
                {"name": "spare", "retriever": {"factory": fake}, "active": False},
                {"name": "hybrid", "pipeline": "rrf(overlap,reverse;k=1)", "active": False},
            ],
        },
    )
    server = Server(cfg, root / "server.log").start()
    yield server
    server.stop()


def count_rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        return (
            conn.execute("select count(*) from decisions").fetchone()[0],
            conn.execute("select count(*) from feedback").fetchone()[0],
        )


def route(c: httpx.Client, **body: Any) -> dict[str, Any]:
    res = c.post("/v1/route", json=body)
    assert res.status_code == 200, res.text
    out: dict[str, Any] = res.json()
    return out


# ---------------------------------------------------------------------- happy paths
def test_route_then_feedback_is_learned_once(plain: Any) -> None:
    server, db = plain
    c = client(server)
    ctx = next(unit_contexts(1, DIM, 0))
    out = route(c, context=ctx)
    assert set(out) == {"event_id", "model", "probs", "policy_version"}
    assert set(out["probs"]) == {"small", "medium", "large"}
    assert abs(sum(out["probs"].values()) - 1) < 1e-12 and out["probs"][out["model"]] > 0
    first = c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": 0.7, "cost": 0.01})
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    again = c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": 0.1})
    assert again.status_code == 200
    assert again.json() == {
        "status": "duplicate",
        "event_id": out["event_id"],
        "seq": first.json()["seq"],
        "reward": 0.7,
    }
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from feedback where event_id = ?", (out["event_id"],)).fetchone()[0] == 1
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_policy_version_advances_and_learning_shows(plain: Any) -> None:
    server, _ = plain
    c = client(server)
    before = route(c, context=[0.0] * (DIM - 1) + [1.0])["policy_version"]
    for ctx in unit_contexts(30, DIM, 1):
        out = route(c, context=ctx)
        reward = 1.0 if out["model"] == "large" else 0.0
        assert c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": reward}).status_code == 200
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and (v := route(c, context=[1.0] + [0.0] * (DIM - 1))["policy_version"]) < before + 30
    ):
        time.sleep(0.05)
    assert v >= before + 30
    assert server.proc is not None and server.proc.poll() is None


def test_candidate_subset_restricts_the_choice(plain: Any) -> None:
    server, _ = plain
    c = client(server)
    for ctx in unit_contexts(10, DIM, 2):
        out = route(c, context=ctx, candidates=["small", "medium"])
        assert out["model"] in ("small", "medium") and set(out["probs"]) == {"small", "medium"}


def test_request_id_makes_routing_idempotent(plain: Any) -> None:
    server, _ = plain
    c = client(server)
    a = route(c, context=next(unit_contexts(1, DIM, 3)), request_id="req-1")
    b = route(c, context=next(unit_contexts(1, DIM, 4)), request_id="req-1")
    assert a == b


def test_health_and_metrics_are_public(plain: Any) -> None:
    server, _ = plain
    c = client(server)
    out = route(c, context=next(unit_contexts(1, DIM, 5)))
    for _ in range(2):  # the second is a duplicate: counted by outcome
        c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": 0.5}).raise_for_status()
    h = httpx.get(server.url + "/healthz")
    assert h.status_code == 200 and h.json()["learner"] == "running"
    m = httpx.get(server.url + "/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    for name in ("banditroute_decisions_total", "banditroute_route_seconds_bucket", "banditroute_model_share",
                 "banditroute_feedback_total", "banditroute_reward_mean", "banditroute_policy_version"):  # fmt: skip
        assert name in text
    duplicates = re.search(r'banditroute_feedback_total\{outcome="duplicate"\} ([0-9.]+)', text)
    assert duplicates is not None and float(duplicates.group(1)) >= 1.0
    for rows in ("decisions", "feedback"):  # the log writes, timed apart from the decision (a duplicate writes none)
        writes = re.search(rf'banditroute_log_write_seconds_count\{{rows="{rows}"\}} ([0-9.]+)', text)
        assert writes is not None and float(writes.group(1)) >= 1.0


def test_stats_carry_series_and_offpolicy_estimates(plain: Any) -> None:
    server, _ = plain
    c = client(server)
    for ctx in unit_contexts(30, DIM, 6):  # enough feedback for the estimates, whatever ran before
        out = route(c, context=ctx)
        reward = float(out["model"] == ("small" if ctx[0] > 0 else "large"))
        c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": reward}).raise_for_status()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = c.get("/v1/stats").json()
        if stats["ope"]["candidates"]:
            break
        time.sleep(0.2)
    names = [r["name"] for r in stats["ope"]["candidates"]]
    assert "current policy" in names and "uniform" in names and "greedy (trained)" in names
    for r in stats["ope"]["candidates"]:  # intervals are clipped to the reward range; a DR value need not be
        assert r["lo"] is None or 0.0 <= r["lo"] <= r["hi"] <= 1.0, r
        assert r["lo"] is None or r["lo"] <= r["value"] <= r["hi"] or not 0.0 <= r["value"] <= 1.0, r
    series = stats["series"]
    assert len(series["t"]) == len(series["count"]) == len(series["reward"]) >= 1
    assert set(series["shares"]) == {"small", "medium", "large"}


# ---------------------------------------------------------------------- keys
ENDPOINTS = [
    ("post", "/v1/route", {"context": [0.0] * DIM}),
    ("post", "/v1/feedback", {"event_id": 1, "reward": 0.5}),
    ("post", "/v1/search", {"query": "river"}),
    ("get", "/v1/models", None),
    ("post", "/v1/models", {"name": "never-added"}),
    ("delete", "/v1/models/small", None),
    ("get", "/v1/stats", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_api_endpoint_needs_a_valid_key(plain: Any, method: str, path: str, body: Any) -> None:
    server, db = plain
    before = count_rows(db)
    kwargs = {"json": body} if body is not None else {}
    missing = client(server, key=None).request(method, path, **kwargs)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = client(server, key="not-a-key").request(method, path, **kwargs)
    assert wrong.status_code == 403
    by_header = httpx.request(method, server.url + path, headers={"X-API-Key": "also-wrong"}, **kwargs)
    assert by_header.status_code == 403
    if path.startswith("/v1/models") and method != "get":
        assert client(server).request(method, path, **kwargs).status_code == 403  # client key, admin endpoint
    assert count_rows(db) == before


def test_admin_key_may_call_client_endpoints(plain: Any) -> None:
    server, _ = plain
    assert client(server, key=ADMIN_KEY).get("/v1/models").status_code == 200


# ---------------------------------------------------------------------- bad input
BAD_ROUTES = [
    ("wrong length", {"context": [0.1] * (DIM + 1)}),
    ("per-arm matrix", {"context": [[0.1] * DIM] * 3}),
    ("not numbers", {"context": ["a"] * DIM}),
    ("both", {"context": [0.1] * DIM, "query": "hi"}),
    ("neither", {}),
    ("text without embedder", {"query": "which river is longest"}),
    ("unknown candidate", {"context": [0.1] * DIM, "candidates": ["nope"]}),
    ("empty candidates", {"context": [0.1] * DIM, "candidates": []}),
    ("repeated candidate", {"context": [0.1] * DIM, "candidates": ["small", "small"]}),
    ("extra field", {"context": [0.1] * DIM, "temperature": 1}),
    ("empty request id", {"context": [0.1] * DIM, "request_id": ""}),
    ("long request id", {"context": [0.1] * DIM, "request_id": "x" * 201}),
]


@pytest.mark.parametrize(("name", "body"), BAD_ROUTES, ids=[n for n, _ in BAD_ROUTES])
def test_bad_route_is_422_and_logs_nothing(plain: Any, name: str, body: dict[str, Any]) -> None:
    server, db = plain
    before = count_rows(db)
    res = client(server).post("/v1/route", json=body)
    assert res.status_code == 422, res.text
    assert res.json()["detail"]
    assert count_rows(db) == before


RAW = [b'{"context": [NaN, 0, 0, 0, 0, 0, 0, 0]}', b'{"context": [Infinity, 0, 0, 0, 0, 0, 0, 0]}', b'{"context": [0.1',
       b"not json"]  # fmt: skip


@pytest.mark.parametrize("raw", RAW)
def test_nan_inf_and_malformed_json_are_rejected(plain: Any, raw: bytes) -> None:
    server, db = plain
    before = count_rows(db)
    res = client(server).post("/v1/route", content=raw, headers={"content-type": "application/json"})
    assert res.status_code == 422
    assert count_rows(db) == before


def test_bad_feedback(plain: Any) -> None:
    server, db = plain
    c = client(server)
    event = route(c, context=next(unit_contexts(1, DIM, 5)))["event_id"]
    before = count_rows(db)
    assert c.post("/v1/feedback", json={"event_id": 10**9, "reward": 0.5}).status_code == 404
    for body in (
        {"event_id": -3, "reward": 0.5},
        {"event_id": 0, "reward": 0.5},
        {"event_id": 2**63, "reward": 0.5},
        {"event_id": event, "reward": 1.5},
        {"event_id": event, "reward": -0.01},
        {"event_id": event, "reward": "good"},
        {"event_id": event},
        {"reward": 0.5},
        {"event_id": "abc", "reward": 0.5},
        {"event_id": event, "reward": 0.5, "cost": -1},
        {"event_id": event, "reward": 0.5, "extra": 1},
    ):
        res = c.post("/v1/feedback", json=body)
        assert res.status_code == 422, (body, res.text)
    for raw in (b'{"event_id": %d, "reward": NaN}' % event, b'{"event_id": %d, "reward": Infinity}' % event):
        res = c.post("/v1/feedback", content=raw, headers={"content-type": "application/json"})
        assert res.status_code == 422 and "finite" in res.json()["detail"]
    out_of_range = c.post("/v1/feedback", json={"event_id": event, "reward": 1.5})
    assert "reward_range" in out_of_range.json()["detail"]
    assert count_rows(db) == before
    assert c.post("/v1/feedback", json={"event_id": event, "reward": 0.5}).json()["status"] == "accepted"


def test_feedback_after_ttl_is_410(tmp_path: Path) -> None:
    """A decision taken 8 days ago (TTL: 7 days): its feedback is refused with 410 and nothing is written.
    The age is set in the log while the server is down, so the restarted server knows it only from there
    (a running server answers feedback on its recent decisions from memory)."""
    cfg = write_config(
        tmp_path / "router.toml",
        {"router": {"models": ["a", "b"], "dim": DIM}, "storage": {"url": "sqlite:///router.db"}},
    )
    server = Server(cfg, tmp_path / "server.log").start()
    try:
        event = route(client(server), context=next(unit_contexts(1, DIM, 6)))["event_id"]
    finally:
        server.stop()
    db = tmp_path / "router.db"
    with sqlite3.connect(db) as conn:
        conn.execute("update decisions set created_at = created_at - 8 * 86400 where event_id = ?", (event,))
    server = Server(cfg, tmp_path / "server2.log").start()
    try:
        before = count_rows(db)
        res = client(server).post("/v1/feedback", json={"event_id": event, "reward": 0.5})
        assert res.status_code == 410 and "TTL" in res.json()["detail"]
        assert count_rows(db) == before
    finally:
        server.stop()


def test_oversized_bodies_are_413(plain: Any) -> None:
    server, db = plain
    before = count_rows(db)
    c = client(server)
    big = {"context": [0.1] * DIM, "request_id": "x" * 10, "candidates": ["small"] * 2000}
    assert c.post("/v1/route", json=big).status_code == 413

    def chunks() -> Any:  # no Content-Length: the limit applies while the body streams in
        yield b'{"context": ['
        for _ in range(2000):
            yield b"0.1, "
        yield b"0.1]}"

    assert c.post("/v1/route", content=chunks(), headers={"content-type": "application/json"}).status_code == 413
    assert c.post("/v1/feedback", content=b" " * (MAX_BODY + 1)).status_code == 413
    assert count_rows(db) == before


def test_openapi_lists_the_fast_lane_endpoints_with_their_bodies(plain: Any) -> None:
    """``/v1/route`` and ``/v1/feedback`` bypass FastAPI (service/fastpath.py's FastLane) but are documented as
    if they did not: their request bodies resolve to the pydantic models' schemas."""
    server, _ = plain
    schema = httpx.get(server.url + "/openapi.json", timeout=5).json()
    for path, model, required in (
        ("/v1/route", "RouteBody", set()),
        ("/v1/feedback", "FeedbackBody", {"event_id", "reward"}),
    ):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        assert name == model
        assert set(schema["components"]["schemas"][name].get("required", [])) == required
    assert "/v1/models" in schema["paths"] and "/healthz" in schema["paths"]  # FastAPI's own still listed


def test_search_without_retrieval_mode_is_404(plain: Any) -> None:
    server, _ = plain
    assert client(server).post("/v1/search", json={"query": "river"}).status_code == 404


# ---------------------------------------------------------------------- models (runs last: it retires models)
def test_models_add_retire_and_their_errors(plain: Any) -> None:
    server, _ = plain
    admin, c = client(server, key=ADMIN_KEY), client(server)
    added = admin.post("/v1/models", json={"name": "xl"})
    assert added.status_code == 201 and added.json() == {"name": "xl", "slot": 3, "active": True}
    assert admin.post("/v1/models", json={"name": "xl"}).status_code == 409
    assert admin.post("/v1/models", json={"name": ""}).status_code == 422
    assert admin.post("/v1/models", json={"name": "y" * 101}).status_code == 422
    out = route(c, context=next(unit_contexts(1, DIM, 7)), candidates=["xl"])  # cold start: the only candidate
    assert out["model"] == "xl" and out["probs"] == {"xl": 1.0}
    assert admin.delete("/v1/models/small").status_code == 200
    assert admin.delete("/v1/models/small").status_code == 409
    assert admin.delete("/v1/models/unknown").status_code == 404
    assert admin.post("/v1/models", json={"name": "small"}).status_code == 409  # names are never reused
    bad = c.post("/v1/route", json={"context": [0.1] * DIM, "candidates": ["small"]})
    assert bad.status_code == 422 and "retired" in bad.json()["detail"]
    for ctx in unit_contexts(20, DIM, 8):
        assert route(c, context=ctx)["model"] != "small"
    assert admin.post("/v1/models", json={"name": "xxl"}).status_code == 201
    full = admin.post("/v1/models", json={"name": "x3"})
    assert full.status_code == 409 and "slots" in full.json()["detail"]
    for name in ("medium", "large", "xl"):
        assert admin.delete(f"/v1/models/{name}").status_code == 200
    assert admin.delete("/v1/models/xxl").status_code == 409  # the last active model stays
    listed = c.get("/v1/models").json()["models"]
    assert [(m["name"], m["active"]) for m in listed] == [
        ("small", False), ("medium", False), ("large", False), ("xl", False), ("xxl", True)
    ]  # fmt: skip


def test_logs_hold_no_keys_or_contexts(plain: Any) -> None:
    server, _ = plain
    marker = 0.123456789012345
    route(client(server), context=[marker] + [0.0] * (DIM - 1))
    client(server, key="wrong-key-in-logs-test").get("/v1/models")
    text = server.log_file.read_text()
    assert "POST /v1/route" in text  # the access log is on, and shows requests
    for secret in (CLIENT_KEY, ADMIN_KEY, "wrong-key-in-logs-test", "0.1234567"):
        assert secret not in text


# ---------------------------------------------------------------------- retrieval mode
def test_search_routes_to_a_retriever_and_takes_feedback(retrieval: Server) -> None:
    c = client(retrieval)
    res = c.post("/v1/search", json={"query": "longest river in africa"})
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["model"] in ("overlap", "reverse") and set(out["probs"]) == {"overlap", "reverse"}
    assert [i["rank"] for i in out["items"]] == [1, 2, 3]
    if out["model"] == "overlap":
        assert out["items"][0]["doc_id"] == "d1"
    fb = c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": 1.0 if out["model"] == "overlap" else 0.0})
    assert fb.json()["status"] == "accepted"
    k1 = c.post("/v1/search", json={"query": "desert", "k": 1, "candidates": ["reverse"]}).json()
    assert k1["model"] == "reverse" and len(k1["items"]) == 1


def test_route_accepts_query_text_with_an_embedder(retrieval: Server) -> None:
    out = route(client(retrieval), query="highest mountain")
    assert out["model"] in ("overlap", "reverse")


def test_bad_search_input(retrieval: Server) -> None:
    c = client(retrieval)
    for body in (
        {"query": ""},
        {"query": "river", "k": 0},
        {"query": "river", "k": 6},
        {"query": "river", "candidates": ["spare"]},
        {"query": "river", "candidates": ["nope"]},
        {"query": 3},
        {"k": 2},
        {"query": "   "},
    ):
        res = c.post("/v1/search", json=body)
        assert res.status_code == 422, (body, res.text)


def test_a_pipeline_arm_fuses_its_component_arms(retrieval: Server) -> None:
    """rrf(overlap,reverse;k=1) over the same 5 documents: every document is in both full lists, and its
    score is 1/(1 + rank in overlap) + 1/(1 + rank in reverse); the real search must return that order."""
    admin = client(retrieval, key=ADMIN_KEY)
    assert admin.post("/v1/models", json={"name": "hybrid"}).status_code == 201
    out = client(retrieval).post("/v1/search", json={"query": "the longest river", "k": 5, "candidates": ["hybrid"]})
    assert out.status_code == 200, out.text
    items = out.json()["items"]
    assert out.json()["model"] == "hybrid" and len(items) == 5
    overlap = client(retrieval).post(
        "/v1/search", json={"query": "the longest river", "k": 5, "candidates": ["overlap"]}
    )
    reverse = client(retrieval).post(
        "/v1/search", json={"query": "the longest river", "k": 5, "candidates": ["reverse"]}
    )
    rank_o = {i["doc_id"]: i["rank"] for i in overlap.json()["items"]}
    rank_r = {i["doc_id"]: i["rank"] for i in reverse.json()["items"]}
    for item in items:
        want = 1 / (1 + rank_o[item["doc_id"]]) + 1 / (1 + rank_r[item["doc_id"]])
        assert item["score"] == pytest.approx(want, rel=1e-6)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


def test_retrieval_mode_adds_only_declared_arms(retrieval: Server) -> None:
    admin = client(retrieval, key=ADMIN_KEY)
    assert admin.post("/v1/models", json={"name": "undeclared"}).status_code == 422
    assert admin.post("/v1/models", json={"name": "spare"}).status_code == 201
    out = client(retrieval).post("/v1/search", json={"query": "river", "candidates": ["spare"]}).json()
    assert out["model"] == "spare" and len(out["items"]) == 3
