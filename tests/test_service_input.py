"""Bad input against the router service (issue 11, defects 1, 3 and 8): a real ``banditroute serve``
on loopback, on SQLite and on a real PostgreSQL started by the test.

Every probe must get a 4xx and change nothing in the log: ids beyond what a BIGINT holds, NUL and
other control characters, ``/`` in model names, contexts whose magnitude overflows the policy's
arithmetic, bodies that are not JSON from callers without a key. Error messages never echo what
was sent. The learn-lag gauge returns to 0; API keys expire and are re-read on ``SIGHUP``.
Off-policy evaluation (CLI and dashboard) skips invalid rows of a damaged log instead of failing.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
import sqlalchemy as sa
from typer.testing import CliRunner

from banditroute.cli.main import app
from banditroute.core.validation import InputError
from banditroute.ope.log import valid_rows
from banditroute.service.auth import hash_key
from banditroute.service.config import parse_config
from banditroute.service.dashboard import Dashboard
from banditroute.service.router import Router
from banditroute.service.storage import Storage
from service_support import (
    ADMIN_KEY,
    CLIENT_KEY,
    Postgres,
    Server,
    client,
    learn_in_process,
    postgres_available,
    unit_contexts,
    write_config,
)

DIM = 8
MODELS = ["small", "medium", "large"]


def counts(url: str) -> tuple[int, int]:
    """``(decisions, feedback)`` rows in the log at ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            n_dec = conn.execute(sa.text("select count(*) from decisions")).scalar_one()
            n_fb = conn.execute(sa.text("select count(*) from feedback")).scalar_one()
    finally:
        engine.dispose()
    return int(n_dec), int(n_fb)


def logged_rows_valid(url: str) -> int:
    """Asserts every logged decision is valid (finite, a probability vector on its allowed set);
    returns how many there are."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select context, action, probs, allowed from decisions")).all()
    finally:
        engine.dispose()
    if not rows:
        return 0
    ok = valid_rows(
        np.stack([np.frombuffer(r.context, dtype=np.float64) for r in rows]),
        np.array([r.action for r in rows]),
        np.stack([np.frombuffer(r.probs, dtype=np.float64) for r in rows]),
        np.stack([np.frombuffer(r.allowed, dtype=np.uint8).astype(bool) for r in rows]),
    )
    assert ok.all(), f"{int((~ok).sum())} invalid decisions reached the log"
    return len(rows)


def start_server(root: Path, storage_url: str, **router: Any) -> Server:
    cfg = write_config(
        root / "router.toml",
        {
            "router": {"models": MODELS, "dim": DIM, "max_models": 6, **router},
            "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
            "storage": {"url": storage_url},
            "ope": {"interval_s": 3600},
        },
    )
    return Server(cfg, root / "server.log").start()


def probe_bad_input(server: Server, url: str) -> None:
    """The bad-input probes of the issue: each a 422 that leaves the log as it was, and the server
    serving normally afterwards (on PostgreSQL a failed statement used to wedge the connection)."""
    with client(server) as c, client(server, ADMIN_KEY) as admin:
        event = c.post("/v1/route", json={"context": next(unit_contexts(1, DIM, 1))}).json()["event_id"]
        before = counts(url)
        bad = [
            ("/v1/feedback", {"event_id": 2**63, "reward": 0.5}),  # one past BIGINT
            ("/v1/feedback", {"event_id": 2**64 + 5, "reward": 0.5}),
            ("/v1/feedback", {"event_id": -(2**63) - 1, "reward": 0.5}),
            ("/v1/feedback", {"event_id": 0, "reward": 0.5}),
            ("/v1/route", {"context": [1e200] * DIM}),  # overflows the policy: NaN probabilities
            ("/v1/route", {"context": [-1e300, 1e300] * (DIM // 2)}),
            ("/v1/route", {"context": [0.1] * DIM, "request_id": "abc\x00def"}),  # NUL: PostgreSQL refuses
            ("/v1/route", {"context": [0.1] * DIM, "request_id": "line\nbreak"}),
            ("/v1/route", {"context": [0.1] * DIM, "candidates": ["sm\x00all"]}),
            ("/v1/route", {"context": [0.1] * DIM, "candidates": ["small", "x\x1b[31m"]}),
        ]
        for path, body in bad:
            res = c.post(path, json=body)
            assert res.status_code == 422, (path, body, res.status_code, res.text)
        for name in ("a/b", "nul\x00name", "tab\tname", "del\x7f", "c1\x85"):
            res = admin.post("/v1/models", json={"name": name})
            assert res.status_code == 422, (name, res.text)
        assert counts(url) == before
        assert [m["name"] for m in c.get("/v1/models").json()["models"]] == MODELS
        # the server is unaffected: routing, feedback and stats work, the event id at the edge is a 404
        assert c.post("/v1/feedback", json={"event_id": 2**63 - 1, "reward": 0.5}).status_code == 404
        assert c.post("/v1/feedback", json={"event_id": event, "reward": 0.5}).json()["status"] == "accepted"
        assert c.post("/v1/route", json={"context": [0.1] * DIM, "request_id": "ok-1"}).status_code == 200
        assert c.get("/v1/stats").status_code == 200
        assert counts(url) == (before[0] + 1, before[1] + 1)
    logged_rows_valid(url)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("input")
    server = start_server(root, "sqlite:///router.db")
    yield server, f"sqlite:///{root / 'router.db'}"
    server.stop()


def test_bad_input_is_422_and_changes_nothing_on_sqlite(sqlite_server: Any) -> None:
    probe_bad_input(*sqlite_server)
    server, _ = sqlite_server
    assert "Traceback" not in server.log_file.read_text()


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL (initdb, pg_ctl) is not installed")
def test_bad_input_is_422_and_changes_nothing_on_postgres(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    pg = Postgres().start()
    try:
        url = pg.new_database("bad_input")
        server = start_server(tmp_path, url)
        try:
            probe_bad_input(server, url)
        finally:
            server.stop()
        assert "Traceback" not in server.log_file.read_text()
    finally:
        pg.stop()


def test_a_caller_without_a_key_gets_401_whatever_the_body(sqlite_server: Any) -> None:
    server, _ = sqlite_server
    body, json_type = b"this is {not json", {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        for path in ("/v1/route", "/v1/feedback", "/v1/search", "/v1/models"):
            res = anon.post(path, content=body, headers=json_type)
            assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer", (path, res.text)
        assert anon.delete("/v1/models/small").status_code == 401
        assert anon.post("/v1/route", content=body, headers=json_type | {"X-API-Key": "wrong"}).status_code == 403
    with client(server) as c:
        assert c.post("/v1/models", content=body, headers=json_type).status_code == 403  # a client key on admin
        assert c.post("/v1/route", content=body, headers=json_type).status_code == 422  # with a key: the body's turn


def test_error_messages_do_not_echo_input(sqlite_server: Any) -> None:
    server, _ = sqlite_server
    secret = "s3cr3t-marker"
    with client(server) as c, client(server, ADMIN_KEY) as admin:
        responses = [
            c.post("/v1/route", json={"context": [0.1] * DIM, "candidates": ["small", secret]}),
            c.post("/v1/route", json={"context": [0.1] * DIM, secret: 1}),
            c.post("/v1/route", json={"context": [0.1] * DIM, "request_id": secret + "\x00"}),
            c.post("/v1/feedback", json={"event_id": 987654321987, "reward": 0.5}),
            c.post("/v1/feedback", json={"event_id": 1, "reward": 1.123456789}),
            admin.delete(f"/v1/models/{secret}"),
            admin.post("/v1/models", json={"name": secret + "/x"}),
            admin.post("/v1/models", json={"name": "small"}),
        ]
        statuses = [r.status_code for r in responses]
        assert statuses == [422, 422, 422, 404, 422, 404, 422, 409]
        for res in responses:
            for echoed in (secret, "987654321987", "1.123456789", "small"):
                assert echoed not in res.text, (echoed, res.text)
        assert "position 1" in responses[0].json()["detail"]


def metric(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[-1])


def test_learn_lag_returns_to_zero(sqlite_server: Any) -> None:
    server, _ = sqlite_server
    with client(server) as c:
        for ctx in unit_contexts(5, DIM, 7):
            event = c.post("/v1/route", json={"context": ctx}).json()["event_id"]
            assert c.post("/v1/feedback", json={"event_id": event, "reward": 0.5}).json()["status"] == "accepted"
        deadline = time.monotonic() + 20
        while c.get("/healthz").json()["pending_feedback"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get("/healthz").json()["pending_feedback"] == 0
        assert metric(c.get("/metrics").text, "banditroute_learn_lag_rows") == 0.0


def test_api_keys_expire_and_are_reloaded_on_sighup(tmp_path: Path) -> None:
    keys = {name: f"{name}-key-for-tests-0123456789abcdef0123456789" for name in ("old", "expired", "new")}

    def write_keys(entries: list[tuple[str, str]]) -> None:
        lines = []
        for name, expires in entries:
            lines += ["[[keys]]", f'hash = "{hash_key(keys[name])}"', 'role = "client"']
            lines += [f"expires_at = {expires}"] if expires else []
        (tmp_path / "keys.toml").write_text("\n".join(lines) + "\n")

    write_keys([("old", "2999-01-01T00:00:00Z"), ("expired", "2001-01-01T00:00:00Z")])
    cfg = write_config(
        tmp_path / "router.toml",
        {
            "router": {"models": MODELS, "dim": DIM},
            "auth": {"admin_key_hashes": [hash_key(ADMIN_KEY)], "key_file": "keys.toml"},
            "storage": {"url": "sqlite:///router.db"},
            "ope": {"interval_s": 3600},
        },
    )
    server = Server(cfg, tmp_path / "server.log").start()
    try:
        status = {name: lambda n=name: client(server, keys[n]).get("/v1/models").status_code for name in keys}
        assert (status["old"](), status["expired"](), status["new"]()) == (200, 403, 403)
        assert client(server, CLIENT_KEY).get("/v1/models").status_code == 403  # not in this config
        write_keys([("new", None)])  # rotate: the old key is revoked, a new one added
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while status["new"]() != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (status["old"](), status["expired"](), status["new"]()) == (403, 403, 200)
        (tmp_path / "keys.toml").write_text("not [valid toml")  # a broken file keeps the current keys
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert server.proc.poll() is None and status["new"]() == 200
        assert "key file not reloaded" in server.log_file.read_text()
    finally:
        server.stop()


# ---------------------------------------------------------------------- in-process: config and the log
def config(tmp_path: Path, **router: Any) -> dict[str, Any]:
    return {
        "router": {"models": ["a", "b", "c"], "dim": 4, **router},
        "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
        "storage": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
        "auth": {"admin_key_hashes": [hash_key("admin")]},
        "ope": {"interval_s": 3600, "min_rows": 10, "candidates": [{"name": "greedy"}]},
    }


@pytest.mark.parametrize("name", ["a/b", "nul\x00", "new\nline", ""])
def test_config_refuses_model_names_with_slash_or_control_characters(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match=r"router\.models"):
        parse_config(config(tmp_path) | {"router": {"models": ["a", name], "dim": 4}})


def test_context_norm_limit(tmp_path: Path) -> None:
    router = Router(parse_config(config(tmp_path, max_context_norm=10.0)))
    router.start()
    try:
        router.route(context=[6.0, 6.0, 5.0, 0.0])  # norm 9.8
        with pytest.raises(InputError, match="max_context_norm"):
            router.route(context=[6.0, 6.0, 6.0, 0.0])  # norm 10.4
        with pytest.raises(InputError, match="max_context_norm"):
            router.route(context=[1e200] * 4)  # the norm overflows to inf: refused too
        assert router.storage.counts() == (1, 0)
    finally:
        router.stop()


def test_huge_context_without_a_limit_logs_nothing(tmp_path: Path) -> None:
    router = Router(parse_config(config(tmp_path)))
    router.start()
    try:
        for context in ([1e200] * 4, [1e155, -1e155, 1e155, 0.0], [np.finfo(float).max] * 4):
            with pytest.raises(InputError, match="valid probability vector"):
                router.route(context=context)
        assert router.storage.counts() == (0, 0)
        router.route(context=[1e3, 0.0, 0.0, 0.0])  # large but harmless
        assert router.storage.counts() == (1, 0)
    finally:
        router.stop()


def insert_invalid_rows(url: str) -> None:
    """Damage a log by hand: decisions with feedback that no router would log."""
    store = Storage(url)
    try:
        next_event, next_seq = store.max_event_id() + 1, store.max_seq() + 1
    finally:
        store.dispose()
    M = 7  # capacity of config(): 3 models + 4
    nan_probs = np.full(M, np.nan)
    half = np.zeros(M)
    half[:2] = 0.25  # sums to 0.5
    zero_chosen = np.zeros(M)
    zero_chosen[1] = 1.0  # the logged action 0 had probability 0
    allowed = np.zeros(M, dtype=np.uint8)
    allowed[:3] = 1
    bad = [
        (np.ones(4), nan_probs),
        (np.ones(4), half),
        (np.ones(4), zero_chosen),
        (np.array([np.inf, 0, 0, 0]), np.eye(M)[0]),
    ]
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for i, (ctx, probs) in enumerate(bad):
            conn.execute(
                sa.text(
                    "insert into decisions (event_id, request_id, created_at, kind, policy_version, action, probs, "
                    "allowed, context) values (:e, null, :t, 'route', 0, 0, :p, :a, :c)"
                ),
                {
                    "e": next_event + i,
                    "t": time.time(),
                    "p": probs.tobytes(),
                    "a": allowed.tobytes(),
                    "c": ctx.astype(np.float64).tobytes(),
                },
            )
            conn.execute(
                sa.text(
                    "insert into feedback (seq, event_id, reward, cost, received_at) values (:s, :e, 0.5, null, 0)"
                ),
                {"s": next_seq + i, "e": next_event + i},
            )
    engine.dispose()


def test_ope_and_the_dashboard_skip_and_count_invalid_rows(tmp_path: Path) -> None:
    cfg = parse_config(config(tmp_path, checkpoint_every=50))
    learn_in_process(cfg, 120, seed=3)
    insert_invalid_rows(cfg.storage.url)

    store = Storage(cfg.storage.url)
    try:
        blog, skipped = store.export_log(cfg.router.reward_range)
        assert skipped == 4 and blog is not None and blog.n == 120
    finally:
        store.dispose()

    router = Router(cfg)  # the learner skips the bad rows too; the dashboard's estimates still come
    router.start()
    try:
        store = router.storage.clone()
        try:
            out = Dashboard(router).estimate(store)
        finally:
            store.close()
    finally:
        router.stop()
    assert out["rows"] == 120 and out["skipped_rows"] == 4
    names = [c["name"] for c in out["candidates"]]
    assert {"current policy", "uniform", "greedy (trained)"} <= set(names)
    assert all(np.isfinite(c["value"]) for c in out["candidates"])

    res = CliRunner().invoke(
        app,
        ["ope", "--log", str(tmp_path / "r.db"), "-p", "uniform", "-p", "current", "-e", "dr",
         "--json", str(tmp_path / "ope.json")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "4 invalid rows skipped" in res.output
    report = json.loads((tmp_path / "ope.json").read_text())
    assert report["rows"] == 120 and report["skipped_rows"] == 4


# ---------------------------------------------------------------------- bounded bad-input fuzzing
# Hypothesis over the request schemas: well-typed bodies with adversarial values (ids past BIGINT,
# NaN/inf and 1e300, control characters, lone surrogates, "/" in names) mixed with arbitrary JSON
# and non-JSON bytes. Derandomized and bounded: the same cases on every run, in seconds.
FUZZ_CASES = 300  # per endpoint, in-process (the ASGI app with its real lifespan, storage and learner)
FUZZ_CASES_REAL = 100  # per endpoint, against a real server on loopback


def fuzz_strategies() -> dict[str, Any]:
    from hypothesis import strategies as st

    text = st.text(st.characters(exclude_categories=()), max_size=24)  # surrogates and controls included
    json_any = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=8,
    )
    ints = st.integers() | st.sampled_from([0, 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64])
    floats = st.floats() | st.sampled_from([1e200, -1e300, 1e155, 5e-324, -0.0])
    names = st.sampled_from([*MODELS, "spare", "a/b", "x\x00y", "sm all", "é"]) | text
    ids = text | st.sampled_from(["fuzz-1", "fuzz-2"])
    words = st.text(st.sampled_from("abcdefgh nilemountaindesert"), min_size=1, max_size=30)

    def body(good: dict[str, Any], bad: dict[str, Any], optional: dict[str, Any]) -> Any:
        """Mostly-valid bodies, bodies with adversarial values or an unknown field, and any JSON."""
        return (
            st.fixed_dictionaries(good, optional=optional)
            | st.fixed_dictionaries(
                bad, optional={k: v for k, v in optional.items() if k not in bad} | {"extra": json_any}
            )
            | json_any
        )

    small = st.floats(-3, 3) | st.floats(-1e6, 1e6) | floats  # mostly ordinary magnitudes
    candidates = st.lists(st.sampled_from([*MODELS, "spare"]), min_size=1, max_size=3, unique=True)
    return {
        "route": body(
            {"context": st.lists(small, min_size=DIM, max_size=DIM)},
            {"context": st.lists(floats, max_size=10) | json_any, "query": text | json_any},
            {"candidates": candidates | st.lists(names, max_size=4) | json_any, "request_id": ids | json_any},
        ),
        "feedback": body(
            {"event_id": st.integers(1, 60), "reward": st.floats(0, 1)},
            {"event_id": ints | json_any, "reward": floats | json_any},
            {"cost": st.floats(0, 10) | floats | st.none() | json_any},
        ),
        "search": body(
            {"query": words},
            {"query": text | json_any, "k": ints | json_any},
            {"k": st.integers(1, 4), "candidates": candidates | st.lists(names, max_size=3), "request_id": ids},
        ),
        "add": body(
            {"name": st.text(st.sampled_from("abcxyz-_. "), min_size=1, max_size=8)}, {"name": names | json_any}, {}
        ),
        "retire": st.sampled_from([*MODELS, "spare"]) | names,
        "raw": st.binary(max_size=64),
    }


class Fuzzer:
    """Sends fuzzed requests and checks each: no 5xx, and the log changes only on a 2xx (one new
    decision per new event id, one feedback row per accepted feedback)."""

    def __init__(self, http: Any, db: Path) -> None:
        import sqlite3

        self.http, self.db = http, sqlite3.connect(db)
        self.events: set[int] = set()
        self.sent = 0
        self.statuses: Counter[tuple[str, int]] = Counter()  # (method path, status)

    def counts(self) -> tuple[int, int]:
        n_dec = self.db.execute("select count(*) from decisions").fetchone()[0]
        return int(n_dec), int(self.db.execute("select count(*) from feedback").fetchone()[0])

    def send(self, method: str, path: str, content: bytes, key: str = CLIENT_KEY) -> None:
        before = self.counts()
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        res = self.http.request(method, path, content=content, headers=headers)
        self.sent += 1
        self.statuses[(f"{method} {path.split('/v1/models/')[0]}", res.status_code)] += 1
        assert res.status_code < 500, (method, path, content[:300], res.status_code, res.text[:300])
        after = self.counts()
        new_decisions, new_feedback = after[0] - before[0], after[1] - before[1]
        if not 200 <= res.status_code < 300:
            assert (new_decisions, new_feedback) == (0, 0), (path, content[:300], res.status_code)
            return
        out = res.json()
        if path in ("/v1/route", "/v1/search"):
            assert new_decisions == int(out["event_id"] not in self.events) and new_feedback == 0
            self.events.add(out["event_id"])
        elif path == "/v1/feedback":
            assert new_feedback == int(out["status"] == "accepted") and new_decisions == 0
        else:
            assert (new_decisions, new_feedback) == (0, 0)

    def run(self, endpoint: str, cases: int) -> None:
        from urllib.parse import quote

        from hypothesis import HealthCheck, given, settings

        strategy = fuzz_strategies()[endpoint]

        @settings(max_examples=cases, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), print_blob=False)  # fmt: skip
        @given(strategy)
        def case(value: Any) -> None:
            encoded = json.dumps(value, allow_nan=True).encode() if endpoint != "raw" else value
            if endpoint == "add":
                self.send("POST", "/v1/models", encoded, ADMIN_KEY)
            elif endpoint == "retire":
                self.send("DELETE", "/v1/models/" + quote(value.encode("utf-8", "surrogatepass"), safe=""), b"",
                          ADMIN_KEY)  # fmt: skip
            elif endpoint == "raw":
                for path in ("/v1/route", "/v1/feedback", "/v1/models"):
                    self.send("POST", path, encoded, ADMIN_KEY)
            else:
                self.send("POST", f"/v1/{endpoint}", encoded)

        before = self.statuses.copy()
        case()
        seen = {status for (_, status), n in (self.statuses - before).items() if n}
        assert any(400 <= s < 500 for s in seen), f"{endpoint}: no case was refused"
        assert endpoint == "raw" or any(200 <= s < 300 for s in seen), f"{endpoint}: no case was accepted"


def seed_log(fuzzer: Fuzzer, n: int = 30) -> None:
    """Decisions (some with feedback) for the fuzzed feedback to hit real event ids."""
    for i, ctx in enumerate(unit_contexts(n, DIM, 11)):
        fuzzer.send("POST", "/v1/route", json.dumps({"context": ctx}).encode())
        if i % 2:
            fuzzer.send("POST", "/v1/feedback", json.dumps({"event_id": max(fuzzer.events), "reward": 0.5}).encode())


def test_fuzz_in_process(tmp_path: Path) -> None:
    pytest.importorskip("hypothesis")
    from fastapi.testclient import TestClient

    from banditroute.service.app import create_app

    cfg = parse_config(
        {
            "router": {"models": MODELS, "dim": DIM, "max_models": 6, "checkpoint_every": 20},
            "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
            "storage": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
            "auth": {"api_key_hashes": [hash_key(CLIENT_KEY)], "admin_key_hashes": [hash_key(ADMIN_KEY)]},
            "ope": {"interval_s": 3600},
        }
    )
    with TestClient(create_app(cfg), raise_server_exceptions=False) as http:
        fuzzer = Fuzzer(http, tmp_path / "r.db")
        seed_log(fuzzer)
        for endpoint in ("route", "feedback", "add", "retire"):
            fuzzer.run(endpoint, FUZZ_CASES)
        fuzzer.run("raw", FUZZ_CASES // 3)
    assert fuzzer.sent >= 4 * FUZZ_CASES
    assert logged_rows_valid(f"sqlite:///{tmp_path / 'r.db'}") == len(fuzzer.events) > 30


def test_fuzz_search_in_process(tmp_path: Path) -> None:
    pytest.importorskip("hypothesis")
    from fastapi.testclient import TestClient

    from banditroute.service.app import create_app

    docs = ["the nile is a river", "everest is a mountain", "the sahara is a desert", "rivers and mountains"]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    fake = "service_support:FakeRetriever"
    cfg = parse_config(
        {
            "router": {},
            "policy": {"name": "linucb"},
            "storage": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
            "auth": {"api_key_hashes": [hash_key(CLIENT_KEY)], "admin_key_hashes": [hash_key(ADMIN_KEY)]},
            "embedder": {"factory": "service_support:FakeEmbedder", "params": {"dim": DIM}},
            "retrieval": {
                "corpus": str(tmp_path / "corpus.jsonl"),
                "k": 2,
                "arms": [
                    {"name": "small", "retriever": {"factory": fake}},
                    {"name": "large", "retriever": {"factory": fake, "params": {"reverse": True}}},
                ],
            },
            "ope": {"interval_s": 3600},
        }
    )
    with TestClient(create_app(cfg), raise_server_exceptions=False) as http:
        fuzzer = Fuzzer(http, tmp_path / "r.db")
        fuzzer.run("search", FUZZ_CASES)
    assert logged_rows_valid(f"sqlite:///{tmp_path / 'r.db'}") == len(fuzzer.events) > 0


def test_fuzz_real_server(tmp_path: Path) -> None:
    pytest.importorskip("hypothesis")
    server = start_server(tmp_path, "sqlite:///router.db", checkpoint_every=20)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            fuzzer = Fuzzer(http, tmp_path / "router.db")
            seed_log(fuzzer)
            for endpoint in ("route", "feedback", "add", "retire"):
                fuzzer.run(endpoint, FUZZ_CASES_REAL)
            assert http.get("/healthz").status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in server.log_file.read_text()
    assert logged_rows_valid(f"sqlite:///{tmp_path / 'router.db'}") == len(fuzzer.events) > 30


def test_key_file_entries_are_validated_and_expire(tmp_path: Path) -> None:
    from banditroute.service.auth import Forbidden, KeyChecker, Role

    path = tmp_path / "keys.toml"
    for text, message in [
        (f'[[keys]]\nhash = "{hash_key("k")}"\nrole = "root"\n', "role"),
        ('[[keys]]\nhash = "md5:abc"\nrole = "client"\n', "sha256"),
        (f'[[keys]]\nhash = "{hash_key("k")}"\nrole = "client"\nexpires_at = 2030-01-01T00:00:00\n', "time zone"),
        ("[[keys]\n", "not a readable TOML"),
    ]:
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            KeyChecker([], [], path)
    path.write_text(
        f'[[keys]]\nhash = "{hash_key("soon")}"\nrole = "admin"\nexpires_at = 2999-01-01T00:00:00+02:00\n'
        f'[[keys]]\nhash = "{hash_key("gone")}"\nrole = "admin"\nexpires_at = 2020-01-01T00:00:00Z\n'
    )
    checker = KeyChecker([], [], path)
    assert checker.role("soon") is Role.ADMIN
    with pytest.raises(Forbidden):
        checker.role("gone")
    with pytest.raises(InputError, match="not found"):
        KeyChecker([], [], tmp_path / "missing.toml")
