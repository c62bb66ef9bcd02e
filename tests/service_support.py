"""Helpers of the router-service tests: real servers on loopback, a real PostgreSQL, tiny fake models.

Servers run as separate processes (``banditroute serve``), reached over HTTP on 127.0.0.1, and are
stopped with SIGTERM (graceful) or SIGKILL (crash). PostgreSQL is initialised and started in a
temporary directory on a free port by ``initdb``/``pg_ctl`` (as the ``postgres`` user when the
tests run as root, since PostgreSQL refuses to run as root); tests skip when it is not installed.
The fake embedder and retriever are imported *by the server process* (this folder is put on its
``PYTHONPATH``), so retrieval mode is exercised end to end without model weights.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.service.auth import hash_key

HERE = Path(__file__).resolve().parent
CLIENT_KEY = "client-key-for-tests-0123456789abcdef0123456789"
ADMIN_KEY = "admin-key-for-tests-0123456789abcdef01234567890"
WORDS = re.compile(r"\w+")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def write_config(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """A router TOML with the test keys; ``tables`` adds or overrides top-level tables."""
    tables = {"auth": {"api_key_hashes": [hash_key(CLIENT_KEY)], "admin_key_hashes": [hash_key(ADMIN_KEY)]}} | tables
    lines = []
    for name, values in tables.items():
        if isinstance(values, list):  # array of tables
            for item in values:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
            continue
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def banditroute_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "banditroute"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from banditroute.cli.main import app; app()"]


_STARTED: list[Server] = []  # every server process a test started (killed at exit if still running)


def _kill_leftovers() -> None:
    """A test that fails between ``start`` and ``stop`` leaves its server running: kill it at exit."""
    for server in _STARTED:
        server.kill()


atexit.register(_kill_leftovers)


class Server:
    """One ``banditroute serve`` process on a free loopback port."""

    def __init__(self, config: Path, log_file: Path, port: int | None = None, extra: list[str] | None = None) -> None:
        self.config, self.log_file, self.extra = config, log_file, extra or []
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Server:
        import httpx

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        env |= {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [*banditroute_cmd(), "serve", "--config", str(self.config), "--port", str(self.port), *self.extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        _STARTED.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_file.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not become ready:\n{self.log_file.read_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM: uvicorn runs the shutdown (learn the rest, final checkpoint)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def client(server: Server, key: str | None = CLIENT_KEY) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30.0)


# ---------------------------------------------------------------------- PostgreSQL
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    return found


def postgres_available() -> bool:
    return all(_pg_bin(b) for b in ("initdb", "pg_ctl", "postgres"))


class Postgres:
    """A throw-away PostgreSQL cluster (trust auth, loopback only, fsync off: the tests kill the router,
    never the database)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="banditroute-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, args: Sequence[str]) -> None:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        self._run([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8",
                   "--locale=C"])  # fmt: skip
        self.pg_ctl("start")
        return self

    def pg_ctl(self, action: str, *args: str) -> None:
        """``pg_ctl <action>`` on this cluster (``stop -m fast``, ``start``: a database outage)."""
        data, log = str(self.dir / "data"), str(self.dir / "log")
        if action == "start":
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
            args = ("-l", log, "-w", "-t", "60", "-o", opts, *args)
        self._run([_pg_bin("pg_ctl"), "-D", data, *args, action])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------- fake models for retrieval mode
def _bag(text: str, dim: int) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    for w in WORDS.findall(text.lower()):
        v[sum(map(ord, w)) % dim] += 1.0
    n = np.linalg.norm(v)
    return v / n if n else np.full(dim, 1 / np.sqrt(dim), dtype=np.float32)


class FakeEmbedder:
    """Hashed bag of words, L2-normalised: deterministic, instant, no weights."""

    def __init__(self, dim: int = 8) -> None:
        self.name, self.dim, self.batch_size, self.relative_cost = "fake-bow", dim, 64, 1.0

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([_bag(t, self.dim) for t in texts])

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_queries(texts)


class FakeRetriever:
    """Word-overlap ranking; ``reverse=True`` ranks the other way round (a deliberately bad arm)."""

    def __init__(self, name: str = "overlap", reverse: bool = False) -> None:
        self.name, self.reverse = name, reverse
        self.docs: list[set[str]] = []

    def index(self, documents: Sequence[str]) -> None:
        self.docs = [set(WORDS.findall(d.lower())) for d in documents]

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        out_i, out_s = [], []
        for q in queries:
            words = set(WORDS.findall(q.lower()))
            scores = np.array([len(words & d) for d in self.docs], dtype=np.float32)
            scores = -scores if self.reverse else scores
            order = np.lexsort((np.arange(len(scores)), -scores))[:k]
            out_i.append(order)
            out_s.append(scores[order])
        return np.array(out_i, dtype=np.int64), np.array(out_s, dtype=np.float32)


def unit_contexts(n: int, dim: int, seed: int) -> Iterator[list[float]]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.normal(size=dim)
        yield (x / np.linalg.norm(x)).tolist()


def learn_in_process(router_config: Any, n: int, seed: int) -> None:
    """Route ``n`` normal contexts through an in-process router and send feedback (1 when model ``a``
    was chosen for ``x[0] > 0`` or ``b`` otherwise, else 0), then stop it: a learned, checkpointed log."""
    from banditroute.service.router import Router

    router = Router(router_config)
    router.start()
    rng = np.random.default_rng(seed)
    try:
        for _ in range(n):
            x = rng.normal(size=router.dim)
            out = router.route(context=x)
            router.feedback(out["event_id"], float(out["model"] == ("a" if x[0] > 0 else "b")))
    finally:
        router.stop()


# ---------------------------------------------------------------------- crash scenario
def _reward(ctx: list[float], model: str) -> float:
    theta = np.random.default_rng(sum(map(ord, model))).normal(size=len(ctx))
    return float(1.0 / (1.0 + np.exp(-3.0 * theta @ np.asarray(ctx))))


def crash_scenario(root: Path, storage_url: str, policy: dict[str, Any], batch: int, dim: int = 8) -> dict[str, Any]:
    """Kill -9 a server in the middle of a bounded loopback load, restart it, finish, stop it cleanly.

    Returns what the test checks: the acknowledged event ids, the storage URL and the settings.
    The load is bounded (at most 1500 routes, 90 s) and sends feedback late and out of order, with
    repeats of acknowledged feedback.
    """
    import threading

    import httpx

    models = ["a", "b", "c"]
    cfg = write_config(
        root / "router.toml",
        {
            "router": {"models": models, "dim": dim, "learn_batch": batch, "checkpoint_every": 6 * batch,
                       "publish_interval_s": 0.0},
            "policy": policy,
            "storage": {"url": storage_url},
        },
    )  # fmt: skip
    log = root / "server.log"
    server = Server(cfg, log).start()
    acked: set[int] = set()
    contexts: dict[int, tuple[list[float], str]] = {}
    duplicates_seen = 0
    errors: list[str] = []

    def load() -> None:
        nonlocal duplicates_seen
        rng = np.random.default_rng(1)
        pending: list[int] = []
        deadline = time.monotonic() + 90
        with client(server) as c:
            for ctx in unit_contexts(1500, dim, 2):
                if time.monotonic() > deadline:
                    errors.append("load ran past 90 s")
                    return
                try:
                    out = c.post("/v1/route", json={"context": ctx}).json()
                    contexts[out["event_id"]] = (ctx, out["model"])
                    pending.append(out["event_id"])
                    while len(pending) > 6 or (pending and rng.random() < 0.4):  # late, out of order
                        eid = pending.pop(int(rng.integers(len(pending))))
                        res = c.post("/v1/feedback", json={"event_id": eid, "reward": _reward(*contexts[eid])})
                        if res.status_code != 200:
                            errors.append(res.text)
                        acked.add(eid)
                    if acked and rng.random() < 0.05:  # a client retry of acknowledged feedback
                        eid = sorted(acked)[int(rng.integers(len(acked)))]
                        res = c.post("/v1/feedback", json={"event_id": eid, "reward": 0.0})
                        if res.json()["status"] != "duplicate":
                            errors.append(f"repeat of {eid} was {res.text}")
                        duplicates_seen += 1
                except httpx.TransportError:
                    return  # the server was killed under us

    thread = threading.Thread(target=load)
    thread.start()
    deadline = time.monotonic() + 90
    while len(acked) < 150 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    thread.join(30)
    assert not errors, errors[:3]
    assert len(acked) >= 150, "the load generator stopped before the crash"

    server = Server(cfg, log, port=server.port).start()
    with client(server) as c:
        late = {"accepted": 0, "duplicate": 0}
        for eid in sorted(set(contexts) - acked):  # feedback whose ack was lost, or never sent
            res = c.post("/v1/feedback", json={"event_id": eid, "reward": _reward(*contexts[eid])})
            assert res.status_code == 200, res.text
            late[res.json()["status"]] += 1
        for eid in sorted(acked)[:20]:  # acknowledged before the crash: still known, never learned twice
            assert c.post("/v1/feedback", json={"event_id": eid, "reward": 1.0}).json()["status"] == "duplicate"
        for ctx in unit_contexts(20, dim, 3):
            out = c.post("/v1/route", json={"context": ctx}).json()
            contexts[out["event_id"]] = (ctx, out["model"])
            assert (
                c.post(
                    "/v1/feedback", json={"event_id": out["event_id"], "reward": _reward(ctx, out["model"])}
                ).status_code
                == 200
            )
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert log.read_text().rstrip().endswith(f"Finished server process [{server.proc.pid}]")
    return {"acked": acked, "events": set(contexts), "late": late, "duplicates_seen": duplicates_seen,
            "models": models, "dim": dim, "batch": batch, "policy": policy}  # fmt: skip


def cluster_load(
    url: str, acked: set[int], events: dict[int, tuple[list[float], str]], stop: Any, errors: list[str], seed: int
) -> None:
    """Route and send (late, out of order) feedback until ``stop``; a request that fails because its
    worker was killed is retried on a new connection (a lost answer is a decision without feedback)."""
    import httpx

    rng = np.random.default_rng(seed)
    pending: list[int] = []
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    contexts = unit_contexts(100_000, 8, seed)
    while not stop.is_set():
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
                while not stop.is_set():
                    ctx = next(contexts)
                    res = c.post("/v1/route", json={"context": ctx})
                    if res.status_code != 200:
                        errors.append(res.text)
                        continue
                    out = res.json()
                    events[out["event_id"]] = (ctx, out["model"])
                    pending.append(out["event_id"])
                    while len(pending) > 6 or (pending and rng.random() < 0.4):
                        eid = pending.pop(int(rng.integers(len(pending))))
                        fb = c.post("/v1/feedback", json={"event_id": eid, "reward": _reward(*events[eid])})
                        if fb.status_code != 200:
                            errors.append(fb.text)
                        acked.add(eid)
        except httpx.TransportError:
            time.sleep(0.05)


def check_after_crash(storage_url: str, outcome: dict[str, Any]) -> None:
    """No acknowledged feedback lost, nothing learned twice, and the final checkpoint equals an
    offline replay of the whole log from a fresh policy, bit for bit."""
    import sqlalchemy as sa

    from banditroute.core.types import BatchDecision, EnvSpec
    from banditroute.policies.registry import make_policy
    from banditroute.service.storage import decode_state

    engine = sa.create_engine(storage_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select f.seq, f.event_id, f.reward, d.context, d.action, d.probs from feedback f "
                "join decisions d on d.event_id = f.event_id order by f.seq"
            )
        ).all()
        ckpt_seq, blob = conn.execute(sa.text("select seq, state from checkpoints order by seq desc limit 1")).one()
    engine.dispose()
    seqs = [r.seq for r in rows]
    event_ids = [r.event_id for r in rows]
    assert seqs == list(range(1, len(rows) + 1)), "learning sequence numbers must have no gaps"
    assert len(set(event_ids)) == len(event_ids), "one feedback row per event"
    assert outcome["acked"] <= set(event_ids), "acknowledged feedback was lost"
    assert set(event_ids) == outcome["events"], "every routed event got its feedback exactly once"
    batch = outcome["batch"]
    assert ckpt_seq == len(rows) - len(rows) % batch

    spec = EnvSpec(n_arms=len(outcome["models"]) + 4, dim=outcome["dim"])
    policy = make_policy(outcome["policy"]["name"], spec, **outcome["policy"].get("params", {}))
    for start in range(0, ckpt_seq, batch):  # an uninterrupted replay of the log, from scratch
        group = rows[start : start + batch]
        decision = BatchDecision(
            actions=np.array([r.action for r in group], dtype=np.int64),
            probs=np.stack([np.frombuffer(r.probs, dtype=np.float64) for r in group]),
        )
        X = np.stack([np.frombuffer(r.context, dtype=np.float64) for r in group])
        policy.learn_batch(X, decision, np.array([r.reward for r in group]))
    served = decode_state(bytes(blob))
    replayed = policy.state_dict()
    assert served["config"] == json.loads(json.dumps(replayed["config"]))
    assert set(served["state"]) == set(replayed["state"])
    for key, value in replayed["state"].items():
        np.testing.assert_array_equal(served["state"][key], value, err_msg=f"state[{key!r}] differs from the replay")
    learned = replayed["state"].get("counts", replayed["state"].get("n_rewards"))
    assert learned is not None and int(np.sum(learned)) == ckpt_seq, "a row was learned twice or not at all"
