"""Several router processes over one log (issue 16): workers decide from broadcast snapshots, one
learner holds the lease, learns the log in order and publishes; the joiner's default rewards.

In-process tests drive :class:`Router` objects of each role on one SQLite log; the process tests run
real ``banditroute serve --workers N`` clusters (a supervisor, a learner, N uvicorn workers on one
socket) and separate ``--role learner`` / ``--role worker`` processes, and ``kill -9`` them under load.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
import sqlalchemy as sa

from banditroute.core.validation import InputError
from banditroute.service.cluster import learner_pid
from banditroute.service.config import parse_config
from banditroute.service.learner import replay
from banditroute.service.router import Router
from banditroute.service.storage import Storage
from banditroute.service.supervisor import listen
from service_support import (
    Server,
    _reward,
    banditroute_cmd,
    check_after_crash,
    client,
    cluster_load,
    free_port,
    unit_contexts,
    write_config,
)


def _config(tmp_path: Path, **router: Any) -> dict[str, Any]:
    from banditroute.service.auth import hash_key
    from service_support import ADMIN_KEY  # noqa: F401  (write_config adds the test keys)

    return {
        "router": {"models": ["a", "b", "c"], "dim": 6, "learn_batch": 2, "publish_interval_s": 0.0, **router},
        "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
        "storage": {"url": f"sqlite:///{tmp_path / 'r.db'}"},
        "auth": {"admin_key_hashes": [hash_key("admin")]},
        "cluster": {"poll_interval_s": 0.01},
    }


def _wait(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def _routers(cfg: Any, workers: int = 2) -> Iterator[list[Router]]:
    """A started learner and ``workers`` workers (numbered 0, 1, ...) in this process; stopped after."""
    learner = Router(cfg, role="learner")
    learner.start()
    started = []
    try:
        for i in range(workers):
            started.append(Router(cfg, role="worker", worker_index=i))
            started[-1].start()
        yield started
    finally:
        for w in started:
            w.stop()
        learner.stop()


def _version(router: Router) -> int:
    assert router.published is not None
    return router.published[1]


def _drive(route: Any, feedback: Any, version: Any, n: int, batch: int) -> list[tuple[str, dict[str, float], int]]:
    """A seeded stream, one request at a time; after each complete feedback group, wait until routing
    uses the snapshot that learned it (so the decisions do not depend on timing)."""
    out = []
    for t, ctx in enumerate(unit_contexts(n, 6, 5)):
        res = route(ctx)
        out.append((res["model"], res["probs"], res["policy_version"]))
        ack = feedback(res["event_id"], _reward(ctx, res["model"]))
        assert ack["status"] == "accepted" and ack["seq"] == t + 1
        if ack["seq"] % batch == 0:
            _wait(lambda s=ack["seq"]: version() == s, what=f"snapshot {ack['seq']}")
    return out


def test_a_worker_decides_as_the_single_router_given_the_same_snapshots(tmp_path: Path) -> None:
    """In process: one learner and one worker over a log take the single router's decisions, bit for bit."""
    single = Router(parse_config(_config(tmp_path / "s")))
    (tmp_path / "s").mkdir()
    single.start()
    try:
        alone = _drive(lambda x: single.route(context=x), single.feedback, lambda: _version(single), 80, 2)
    finally:
        single.stop()
    (tmp_path / "c").mkdir()
    cfg = parse_config(_config(tmp_path / "c"))
    learner, worker = Router(cfg, role="learner"), Router(cfg, role="worker")
    learner.start()
    worker.start()
    try:
        shared = _drive(lambda x: worker.route(context=x), worker.feedback, lambda: _version(worker), 80, 2)
    finally:
        worker.stop()
        learner.stop()
    assert shared == alone
    assert len({v for *_, v in shared}) == 40  # versions 0, 2, ..., 78: every group's snapshot was used


def test_learner_state_is_a_clean_replay_of_what_two_workers_logged(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path, learn_batch=3, checkpoint_every=9))
    learner = Router(cfg, role="learner")
    learner.start()
    workers = [Router(cfg, role="worker", worker_index=i) for i in range(2)]
    for w in workers:
        w.start()
    errors: list[BaseException] = []

    def load(w: Router, seed: int) -> None:
        try:
            for ctx in unit_contexts(150, 6, seed):
                res = w.route(context=ctx)
                w.feedback(res["event_id"], _reward(ctx, res["model"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(w, 10 + i)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    try:
        _wait(lambda: all(_version(w) == 300 for w in workers), what="both workers on the last snapshot")
        assert learner.learner is not None and learner.learner.applied_seq == 300
    finally:
        for w in workers:
            w.stop()
        learner.stop()
    store = Storage(cfg.storage.url)
    try:
        seq, state = next(store.verified_checkpoints())
        assert seq == 300
        fresh = learner.new_policy()
        last, pending = replay(fresh, store.learn_rows(0), 3)
        assert (last, pending) == (300, [])
        for k, v in fresh.state_dict()["state"].items():
            np.testing.assert_array_equal(state["state"][k], v)
        assert store.counts() == (300, 300)
        deciders = {store.get_decision(e)[0].worker for e in range(1, 301)}  # type: ignore[index]
        assert deciders == {0, 1}  # each decision names the worker that took it
    finally:
        store.dispose()


def test_a_worker_sees_models_added_and_retired_through_another(tmp_path: Path) -> None:
    with _routers(parse_config(_config(tmp_path, max_models=5))) as (w0, w1):
        w0.add_model("d")
        w0.retire_model("a")
        _wait(
            lambda: {m["name"]: m["active"] for m in w1.list_models()} == {"a": False, "b": True, "c": True, "d": True},
            what="worker 1 to see the change",
        )
        probs = w1.route(context=[1.0] * 6)["probs"]
        assert set(probs) == {"b", "c", "d"}
        with pytest.raises(Exception, match="already exists"):
            w1.add_model("d")


def test_a_worker_refuses_a_log_no_learner_set_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import banditroute.service.router as router_module

    monkeypatch.setattr(router_module, "WORKER_START_TIMEOUT_S", 0.3)
    worker = Router(parse_config(_config(tmp_path)), role="worker")
    with pytest.raises(Exception, match="serve --role learner"):
        worker.start()
    worker.stop()


@pytest.mark.parametrize("role", ["single", "learner"])
def test_joiner_gives_unanswered_decisions_the_default_reward_once(tmp_path: Path, role: str) -> None:
    cfg = parse_config(_config(tmp_path, feedback_ttl_s=0.4, default_reward=0.25))
    main = Router(cfg, role=role)  # type: ignore[arg-type]
    main.start()
    front = main if role == "single" else Router(cfg, role="worker")
    if front is not main:
        front.start()
    try:
        events = [front.route(context=list(ctx))["event_id"] for ctx in unit_contexts(6, 6, 1)]
        for e in events[:2]:
            assert front.feedback(e, 1.0)["status"] == "accepted"
        store = Storage(cfg.storage.url)
        try:
            _wait(lambda: store.counts() == (6, 6), what="default rewards")
            time.sleep(0.3)  # a second pass of the joiner adds nothing
            assert store.counts() == (6, 6)
            rewards = {e: store.get_decision(e)[1].reward for e in events}  # type: ignore[index]
        finally:
            store.dispose()
        assert rewards == {**{e: 1.0 for e in events[:2]}, **{e: 0.25 for e in events[2:]}}
        late = front.feedback(events[3], 1.0)  # after the window: the default came first
        assert late["status"] == "duplicate" and late["reward"] == 0.25
        assert main.learner is not None
        _wait(lambda: main.learner.applied_seq == 6, what="the learner to learn the defaults")  # type: ignore[union-attr]
    finally:
        if front is not main:
            front.stop()
        main.stop()


def test_default_reward_must_lie_in_the_reward_range(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="default_reward"):
        parse_config(_config(tmp_path, default_reward=2.0))


# ---------------------------------------------------------------------- real processes
class Cluster(Server):
    """``banditroute serve --workers N`` (the supervisor process) on a free loopback port."""

    def __init__(self, config: Path, log_file: Path, workers: int, port: int | None = None) -> None:
        super().__init__(config, log_file, port, extra=["--workers", str(workers)])

    def children(self) -> dict[str, int]:
        """``{"learner": pid, "worker-0": pid, ...}`` of the running children."""
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        found = {}
        for line in out.stdout.splitlines():
            pid, args = line.strip().split(" ", 1)
            if "--role learner" in args:
                found["learner"] = int(pid)
            elif "--role worker" in args:
                found[f"worker-{args.split('--worker-index ')[1].split()[0]}"] = int(pid)
        return found


def _heartbeat_pid(url: str) -> int | None:
    store = Storage(url)
    try:
        return learner_pid(store)
    finally:
        store.dispose()


def _health(url: str) -> dict[str, Any]:
    return httpx.get(url + "/healthz", timeout=5).json()


def test_one_worker_cluster_decides_as_the_single_process_service(tmp_path: Path) -> None:
    """Real processes: the same seeded request stream through `serve` and `serve --workers 1` gives the
    same decisions (a snapshot after every feedback group, waited for through /healthz)."""
    outcomes = []
    for name, extra in (("single", []), ("cluster", ["--workers", "1"])):
        root = tmp_path / name
        root.mkdir()
        tables = _config(root)
        del tables["cluster"], tables["auth"]
        cfg = write_config(root / "router.toml", tables | {"cluster": {"poll_interval_s": 0.01}} if extra else tables)
        server = Server(cfg, root / "server.log", extra=extra).start()
        try:
            with client(server) as c:
                outcomes.append(
                    _drive(
                        lambda x, c=c: c.post("/v1/route", json={"context": x}).json(),
                        lambda e, r, c=c: c.post("/v1/feedback", json={"event_id": e, "reward": r}).json(),
                        lambda s=server: _health(s.url)["policy_version"],
                        20,
                        2,
                    )
                )
        finally:
            assert server.stop() in (0, -signal.SIGTERM)
    assert outcomes[0] == outcomes[1]


def test_kill_9_of_a_worker_the_learner_and_both_loses_nothing_and_learns_each_row_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'router.db'}"
    cfg = write_config(
        tmp_path / "router.toml",
        {
            "router": {"models": ["a", "b", "c"], "dim": 8, "learn_batch": 4, "checkpoint_every": 24,
                       "publish_interval_s": 0.05},
            "policy": {"name": "linucb", "params": {"epsilon": 0.1}},
            "storage": {"url": url},
            "cluster": {"poll_interval_s": 0.02},
        },
    )  # fmt: skip
    cluster = Cluster(cfg, tmp_path / "cluster.log", workers=2).start()
    acked: set[int] = set()
    events: dict[int, tuple[list[float], str]] = {}
    stop, errors = threading.Event(), []
    loaders = [
        threading.Thread(target=cluster_load, args=(cluster.url, acked, events, stop, errors, s)) for s in (1, 2)
    ]
    for t in loaders:
        t.start()
    try:
        for target, after in (("worker-0", 80), ("learner", 200), ("both", 320)):
            _wait(lambda n=after: len(acked) >= n, timeout=60, what=f"{after} acknowledged feedback rows")
            pids = cluster.children()
            victims = ["learner", "worker-1"] if target == "both" else [target]
            for name in victims:
                subprocess.run(["kill", "-9", str(pids[name])], check=True)
            _wait(
                lambda v=victims, p=pids: all(cluster.children().get(n, p[n]) != p[n] for n in v),
                timeout=30,
                what=f"the supervisor to restart {victims}",
            )
            if "learner" in victims:  # up again: its heartbeat names it
                _wait(lambda: _heartbeat_pid(url) == cluster.children()["learner"], timeout=60, what="the new learner")
        _wait(lambda: len(acked) >= 420, timeout=60, what="load after the restarts")
    finally:
        stop.set()
        for t in loaders:
            t.join(30)
    assert not errors, errors[:3]
    with client(cluster) as c:  # feedback whose answer was lost, or never sent
        for eid in sorted(set(events) - acked):
            res = c.post("/v1/feedback", json={"event_id": eid, "reward": _reward(*events[eid])})
            assert res.status_code == 200, res.text
        version = _health(cluster.url)["policy_version"]
    assert cluster.stop() == 0
    log_text = (tmp_path / "cluster.log").read_text()
    assert log_text.count("exited with code -9; starting it again") == 4
    assert version > 0
    check_after_crash(url, {"acked": acked, "events": set(events), "models": ["a", "b", "c"], "dim": 8, "batch": 4,
                            "policy": {"name": "linucb", "params": {"epsilon": 0.1}}})  # fmt: skip


def test_workers_keep_deciding_while_the_learner_is_down_and_pick_up_its_snapshots_after(tmp_path: Path) -> None:
    """Across hosts' commands: `serve --role learner` and `serve --role worker` as separate processes."""
    cfg = write_config(
        tmp_path / "router.toml",
        {
            "router": {"models": ["a", "b"], "dim": 8, "learn_batch": 1, "publish_interval_s": 0.0},
            "storage": {"url": f"sqlite:///{tmp_path / 'router.db'}"},
            "cluster": {"poll_interval_s": 0.02},
        },
    )

    def start_learner() -> subprocess.Popen[bytes]:
        with open(tmp_path / "learner.log", "ab") as out:
            return subprocess.Popen(
                [*banditroute_cmd(), "serve", "--config", str(cfg), "--role", "learner"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    learner = start_learner()
    worker = Server(cfg, tmp_path / "worker.log", extra=["--role", "worker"]).start()
    try:
        with client(worker) as c:

            def round_trip(ctx: list[float]) -> dict[str, Any]:
                out = c.post("/v1/route", json={"context": ctx}).json()
                assert c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": 1.0}).status_code == 200
                return out

            for ctx in unit_contexts(10, 8, 1):
                round_trip(ctx)
            _wait(lambda: _health(worker.url)["policy_version"] == 10, what="the worker to learn 10 rows")
            learner.send_signal(signal.SIGKILL)
            learner.wait(10)
            for ctx in unit_contexts(30, 8, 2):  # the learner is down: decisions and feedback go on
                assert round_trip(ctx)["policy_version"] == 10
            _wait(
                lambda: _health(worker.url)["learner"] == "down", timeout=15, what="/healthz to report the learner down"
            )
            state = _health(worker.url)
            assert state["status"] == "ok" and state["learner_seen_s_ago"] > 5
            learner = start_learner()
            _wait(lambda: _health(worker.url)["policy_version"] == 40, what="the restarted learner's snapshot")
            assert _health(worker.url)["learner"] == "running"
    finally:
        worker.stop()
        learner.send_signal(signal.SIGTERM)
        learner.wait(30)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'router.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("select max(seq) from checkpoints")).scalar() == 40
        versions = conn.execute(sa.text("select policy_version from decisions order by event_id")).scalars().all()
    engine.dispose()
    assert versions[10:40] == [10] * 30  # decided while the learner was down: the last snapshot
    assert versions[:10] == sorted(versions[:10]) and versions[9] <= 9


def test_a_cluster_on_a_log_another_learner_holds_is_refused(tmp_path: Path) -> None:
    """The supervisor ends with its learner's refusal (the lock of the learner running here), serving nothing."""
    tables = _config(tmp_path)
    del tables["auth"]
    cfg = write_config(tmp_path / "router.toml", tables)
    first = Router(parse_config(tables | {"auth": _config(tmp_path)["auth"]}), role="learner")
    first.start()
    try:
        second = subprocess.run(
            [*banditroute_cmd(), "serve", "--config", str(cfg), "--workers", "1", "--port", str(free_port())],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode != 0
        assert "another router" in second.stderr and "one writer per log" in second.stderr
        assert "Started server process" not in second.stderr
    finally:
        first.stop()


def test_snapshot_format_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    from banditroute.core.types import EnvSpec
    from banditroute.policies.registry import make_policy
    from banditroute.service.snapshots import FileSnapshots, decode_snapshot, encode_snapshot

    policy = make_policy("linucb", EnvSpec(n_arms=3, dim=5), epsilon=0.1)
    policy.learn(np.ones(5), policy.act(np.ones(5), np.random.default_rng(0)), 1.0)
    state = policy.state_dict()
    blob = encode_snapshot(state)
    fresh = make_policy("linucb", EnvSpec(n_arms=3, dim=5), epsilon=0.1)
    fresh.load_state_dict(decode_snapshot(blob))
    for k, v in state["state"].items():
        np.testing.assert_array_equal(fresh.state_dict()["state"][k], v)
    for damaged in (blob[:-8], blob + b"x", b"nonsense", blob.replace(b'"<f8"', b'"|O"', 1)):
        with pytest.raises(InputError, match="corrupted policy snapshot"):
            decode_snapshot(damaged)

    store = FileSnapshots(tmp_path / "r.db.snapshots")
    assert store.latest() is None
    for version in (2, 4, 6, 8):
        store.publish(version, state, 0.0)
    assert (tmp_path / "r.db.snapshots").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (tmp_path / "r.db.snapshots").iterdir()) == [f"{v:020d}.snap" for v in (4, 6, 8)]
    assert store.latest(-1) == (8, blob) and store.latest(8) is None and store.latest(7) is not None


def test_a_worker_keeps_its_snapshot_when_a_newer_one_does_not_load(tmp_path: Path) -> None:
    cfg = parse_config(_config(tmp_path))
    learner = Router(cfg, role="learner")
    learner.start()
    worker = Router(cfg, role="worker")
    worker.start()
    try:
        (tmp_path / "r.db.snapshots" / f"{10**6:020d}.snap").write_bytes(b"BRSNAP1\ngarbage")
        time.sleep(0.2)  # several polls
        assert _version(worker) == 0
        assert worker.route(context=[0.1] * 6)["policy_version"] == 0
    finally:
        worker.stop()
        learner.stop()


def test_workers_adding_models_at_the_same_time_take_the_next_slot_or_get_409(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from banditroute.service.router import Conflict

    cfg = parse_config(_config(tmp_path, max_models=10) | {"cluster": {"poll_interval_s": 10.0}})  # no polls
    with _routers(cfg) as (w0, w1):
        w0.add_model("d")
        with pytest.raises(Conflict, match="already exists"):  # w1 had not polled: it reads the log first
            w1.add_model("d")
        stale, fresh = w1.storage.models(), w1.storage.models
        w0.add_model("e")  # meanwhile, between w1's read and its insert
        reads = iter([stale])  # w1's first read misses "e"; its insert then finds the slot taken
        monkeypatch.setattr(w1.storage, "models", lambda: next(reads, None) or fresh())
        assert w1.add_model("f")["slot"] == 5  # another name took slot 4: the next free one
        monkeypatch.undo()

        def taken(*_: Any) -> None:  # every slot it tries is taken by the time it inserts
            raise sa.exc.IntegrityError("INSERT INTO models", {}, Exception("UNIQUE constraint failed"))

        monkeypatch.setattr(w1.storage, "add_model", taken)
        with pytest.raises(Conflict, match="kept adding models at the same time"):
            w1.add_model("g")
        monkeypatch.undo()
        w0_stale, fresh0 = w0.storage.models(), w0.storage.models
        w1.add_model("h")  # the same name through both, at the same moment
        first = iter([w0_stale])  # w0's first read misses "h"
        monkeypatch.setattr(w0.storage, "models", lambda: next(first, None) or fresh0())
        with pytest.raises(Conflict, match="this name was added at the same time"):
            w0.add_model("h")


def test_every_worker_answers_metrics_for_the_whole_cluster(tmp_path: Path) -> None:
    """A scrape reaches whichever worker accepts it; each answers with the cluster's sums (prometheus
    multiprocess mode) and names itself in ``banditroute_process``."""
    tables = _config(tmp_path)
    del tables["auth"]
    cluster = Cluster(write_config(tmp_path / "router.toml", tables), tmp_path / "c.log", workers=2).start()
    try:
        for ctx in unit_contexts(12, 6, 3):
            with client(cluster) as c:  # a new connection each time: spread over the workers
                assert c.post("/v1/route", json={"context": ctx}).status_code == 200
        pids, totals = set(), set()
        for _ in range(40):
            text = httpx.get(cluster.url + "/metrics", headers={"Connection": "close"}, timeout=5).text
            pids |= set(re.findall(r'^banditroute_process\{[^}]*pid="(\d+)"', text, re.MULTILINE))
            totals.add(
                sum(float(v) for v in re.findall(r"^banditroute_decisions_total\{[^}]*\} (\S+)", text, re.MULTILINE))
            )
            if len(pids) == 2:
                break
        assert len(pids) == 2 and totals == {12.0}
        # A burst of keep-alive connections, opened together as a client's pool opens them, is spread
        # over both workers (one SO_REUSEPORT socket each): with one shared socket the first worker to
        # wake accepted the whole burst (docs/benchmarks.md, "Router workers over one log").
        served = _workers_serving_a_burst(cluster.port, 32)
        assert min(served.count(0), served.count(1)) >= 6, served
    finally:
        assert cluster.stop() == 0


def _workers_serving_a_burst(port: int, n: int) -> list[int]:
    """The worker that answers ``/healthz`` on each of ``n`` connections opened at once."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    try:
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        out = []
        for sock in socks:
            data = b""
            while b"}" not in data:
                data += sock.recv(65536)
            out.append(int(re.search(rb'"worker":(\d+)', data).group(1)))  # type: ignore[union-attr]
        return out
    finally:
        for sock in socks:
            sock.close()


def test_listening_sockets_share_one_port_with_reuseport(tmp_path: Path) -> None:
    socks = listen("127.0.0.1", 0, 3)
    try:
        assert len(socks) == 3 and len({s.getsockname()[1] for s in socks}) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        assert all(s.get_inheritable() for s in socks)
        # a port another (non-reuse) socket holds
        with socket.create_server(("127.0.0.1", 0)) as taken, pytest.raises(InputError, match="cannot listen"):
            listen("127.0.0.1", taken.getsockname()[1], 2)
    finally:
        for s in socks:
            s.close()
    (single,) = listen("127.0.0.1", 0, 1)  # one worker: one plain socket
    with single:
        assert not single.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
