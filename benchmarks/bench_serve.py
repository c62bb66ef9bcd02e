"""Router service under load: routes/s and route latency with feedback interleaved, on loopback.

For each policy (LinUCB, and fast HPG learning in groups of 16) a real ``banditroute serve``
process (SQLite log, d = 384 contexts, M = 4 models) is driven by an **open-loop** load generator
on the same machine: route requests are *sent* on a fixed schedule of ``--rate`` per second,
whether or not earlier ones have come back (so a slow server shows up as latency, not as a lower
offered rate — no coordinated omission), and every routed event gets its feedback ``0–200 ms``
later on the same connections, so the server handles ``2 × rate`` requests/s. Then a short
**closed-loop** run (``--conns`` connections, each sending its next request when the last one
answers) measures the most routes/s the server sustains with feedback interleaved.

Latency is measured two ways: by the client (send to last byte, including HTTP and queueing) and
by the server (``banditroute_route_seconds``: decide + log, embedding excluded — the
"route decision" of docs/benchmarks.md; quantiles interpolated within histogram buckets), and the part of that
which is writing the decisions to the log (``banditroute_log_write_seconds``: the write turn, insert and commit).
The load generator is a tiny
asyncio HTTP/1.1 keep-alive client (a few tens of µs per request, where httpx costs several
hundred), so it leaves the server most of the second core. The run is bounded: ``--seconds`` per
phase, and it stops by itself.

Run: ``make bench-serve`` or ``python -m benchmarks.bench_serve --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

POLICIES: dict[str, dict[str, Any]] = {
    "linucb": {"policy": {"name": "linucb", "params": {"epsilon": 0.05}}, "learn_batch": 1},
    # LinUCB learning feedback in groups of 16 (one Woodbury update per arm and group, issue 16: "feedback
    # is learned in groups"); decisions are batched as for every policy (service/fastpath.py's Batcher)
    "linucb-groups": {"policy": {"name": "linucb", "params": {"epsilon": 0.05}}, "learn_batch": 16},
    # the same router with micro-batched routing (router.route_batch_window_ms, issue 16)
    "linucb-batched": {
        "policy": {"name": "linucb", "params": {"epsilon": 0.05}},
        "learn_batch": 1,
        "router": {"route_batch_window_ms": 1.0},
    },
    # LinUCB publishing a snapshot after every learned row (publish_interval_s = 0), as the learner did under
    # steady feedback before it bounded publishing (issue 16): the side-by-side reference for that change
    "linucb-publish-every-row": {
        "policy": {"name": "linucb", "params": {"epsilon": 0.05}},
        "learn_batch": 1,
        "router": {"publish_interval_s": 0.0},
    },
    "hpg-fast": {
        "policy": {"name": "hpg", "params": {"mode": "fast", "fast_kwargs": {"batch": 16, "rank": 32}}},
        "learn_batch": 16,
    },
}
KEY = "bench-key-0123456789abcdef0123456789abcdef012"


class Conn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload


class Pool:
    """Connections handed out one request at a time."""

    def __init__(self, conns: list[Conn]) -> None:
        self.free: asyncio.Queue[Conn] = asyncio.Queue()
        for c in conns:
            self.free.put_nowait(c)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = await self.free.get()
        try:
            return await conn.request(method, path, body)
        finally:
            self.free.put_nowait(conn)


def contexts(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors near a 16-dimensional subspace, as sentence embeddings are."""
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.normal(size=(dim, 16)))[0]
    X = rng.normal(size=(n, 16)) @ U.T + 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


class Load:
    """State of one load phase."""

    def __init__(self, pool: Pool, X: np.ndarray, theta: np.ndarray, bodies: list[bytes]) -> None:
        self.pool, self.X, self.theta, self.bodies = pool, X, theta, bodies
        self.route_lat: list[float] = []
        self.feedback_lat: list[float] = []
        self.errors = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.rng = np.random.default_rng(1)

    async def route_then_feedback(self, i: int, delay: float | None) -> None:
        start = time.perf_counter()
        status, payload = await self.pool.request("POST", "/v1/route", self.bodies[i % len(self.bodies)])
        self.route_lat.append(time.perf_counter() - start)
        if status != 200:
            self.errors += 1
            return
        out = json.loads(payload)
        m = int(out["model"].removeprefix("m"))
        x = self.X[i % len(self.X)]
        reward = float(1 / (1 + np.exp(-4 * self.theta[m] @ x)))
        if delay:
            await asyncio.sleep(delay)
        start = time.perf_counter()
        status, _ = await self.pool.request(
            "POST", "/v1/feedback", json.dumps({"event_id": out["event_id"], "reward": reward}).encode()
        )
        self.feedback_lat.append(time.perf_counter() - start)
        if status != 200:
            self.errors += 1

    async def open_loop(self, rate: float, seconds: float) -> float:
        """Start a route every ``1/rate`` s on schedule; returns the wall time of the phase."""
        n = int(rate * seconds)
        t0 = time.perf_counter()
        for i in range(n):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            task = asyncio.create_task(self.route_then_feedback(i, float(self.rng.uniform(0, 0.2))))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        # Bounded in time too: whatever has not finished 2 × seconds after the schedule ended is
        # cancelled and counted as an error (an overloaded server must not stretch the run).
        if self.tasks:
            remaining = max(0.01, t0 + 3 * seconds - time.perf_counter())
            _, late = await asyncio.wait(set(self.tasks), timeout=remaining)
            for task in late:
                task.cancel()
            self.errors += len(late)
        return time.perf_counter() - t0

    async def closed_loop(self, conns: int, seconds: float) -> tuple[int, float]:
        """``conns`` workers, each route -> feedback -> next; returns (routes, wall seconds)."""
        stop = time.perf_counter() + seconds
        count = 0

        async def worker(w: int) -> None:
            nonlocal count
            i = w
            while time.perf_counter() < stop:
                await self.route_then_feedback(i, None)
                count += 1
                i += conns

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(conns)))
        return count, time.perf_counter() - t0


def run_async(coro: Any) -> Any:
    """``coro`` on uvloop where it is installed (with uvicorn's ``standard`` extra): the generator's own
    event loop then costs less of the cores it shares with the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def histogram_quantiles(metrics: str, name: str, qs: tuple[float, ...], label: str = "") -> list[float]:
    """Quantiles of a Prometheus histogram (of its series with ``label``, e.g. ``rows="feedback"``),
    linear within buckets."""
    bounds, counts = [], []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket") and label in line:
            le = line.split('le="')[1].split('"')[0]
            bounds.append(float("inf") if le == "+Inf" else float(le))
            counts.append(float(line.rsplit(" ", 1)[1]))
    total = counts[-1]
    out = []
    for q in qs:
        target, prev_b, prev_c = q * total, 0.0, 0.0
        for b, c in zip(bounds, counts, strict=True):
            if c >= target:
                out.append(
                    prev_b if b == float("inf") else prev_b + (b - prev_b) * (target - prev_c) / max(c - prev_c, 1)
                )
                break
            prev_b, prev_c = b, c
    return out


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as res:
        return str(res.read().decode())


def toml(value: Any) -> str:
    """A TOML value (enough for the configs written here)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return json.dumps(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(root: Path, name: str, args: argparse.Namespace, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """``banditroute serve`` for policy ``name``: one process (``workers = 0``) or a learner and
    ``workers`` router processes (``serve --workers N``)."""
    from banditroute.service.auth import hash_key

    spec, port = POLICIES[name], free_port()
    tag = run_name(name, workers)
    cfg = root / f"{tag}.toml"
    cfg.write_text(
        f"[router]\nmodels = {toml([f'm{m}' for m in range(args.models)])}\ndim = {args.dim}\n"
        f"max_models = {args.models}\nlearn_batch = {spec['learn_batch']}\ncheckpoint_every = 20000\n"
        + "".join(f"{k} = {toml(v)}\n" for k, v in spec.get("router", {}).items())
        + f"[policy]\nname = {toml(spec['policy']['name'])}\nparams = {toml(spec['policy']['params'])}\n"
        f"[storage]\nurl = {toml(f'sqlite:///{root / tag}.db')}\n"
        f"[auth]\nadmin_key_hashes = [{toml(hash_key(KEY))}]\n[ope]\ninterval_s = 3600\n"
        + (f"[cluster]\nworkers = {workers}\n" if workers else "")
    )
    exe = [str(Path(sys.executable).parent / "banditroute")]
    if args.profile is not None:  # the same server under per-thread cProfile (benchmarks/profile_serve.py)
        exe = [sys.executable, "-m", "benchmarks.profile_serve", str(args.profile / name)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with open(root / f"{tag}.log", "wb") as log:
        proc = subprocess.Popen(
            [*exe, "serve", "--config", str(cfg), "--port", str(port), "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            scrape(port)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((root / f"{tag}.log").read_text()) from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{tag}: server did not start")


def run_name(policy: str, workers: int) -> str:
    return policy if workers == 0 else f"{policy} ({workers} workers)"


async def measure(port: int, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    X = contexts(4096, args.dim, 0)
    theta = np.random.default_rng(2).normal(size=(args.models, args.dim))
    # encoded once: a client's JSON encoding (0.2 ms for 384 floats) is not the server's cost, and the
    # generator shares the server's 2 cores
    bodies = [b'{"context":' + json.dumps(x.round(6).tolist()).encode() + b"}" for x in X]

    async def pool() -> Pool:
        return Pool([await Conn.open(port) for _ in range(args.conns)])

    def close(p: Pool) -> None:  # a cancelled request leaves its connection mid-response: never reuse
        for c in list(p.free._queue):  # type: ignore[attr-defined]
            c.writer.close()

    warm = Load(await pool(), X, theta, bodies)
    await warm.open_loop(100, 2.0)
    close(warm.pool)
    load = Load(await pool(), X, theta, bodies)
    opened = time.time()
    wall = await load.open_loop(args.rate, args.seconds)
    window = (opened, time.time())
    close(load.pool)
    after = scrape(port)  # a cluster's workers each answer for all of them (service/metrics.py)
    closed = Load(await pool(), X, theta, bodies)
    routes, closed_wall = await closed.closed_loop(args.conns, args.closed_seconds)
    close(closed.pool)
    route_ms = 1e3 * np.array(load.route_lat)
    fb_ms = 1e3 * np.array(load.feedback_lat)
    server = [1e3 * v for v in histogram_quantiles(after, "banditroute_route_seconds", (0.5, 0.99))]  # incl. warm-up
    logged = [  # the part of it that is writing the decisions to the log (write turn, insert, commit)
        1e3 * v for v in histogram_quantiles(after, "banditroute_log_write_seconds", (0.5, 0.99), 'rows="decisions"')
    ]
    lag = [line for line in after.splitlines() if line.startswith("banditroute_learn_lag_rows")]
    if workers:  # the learner serves no /metrics; staleness (from the log) says how far behind it was
        lag = []
    return {
        "offered_routes_per_s": args.rate,
        "routes_per_s": len(route_ms) / wall,
        "feedback_per_s": len(fb_ms) / wall,  # every routed event's feedback, answered
        "route_p50_ms": float(np.percentile(route_ms, 50)),
        "route_p99_ms": float(np.percentile(route_ms, 99)),
        "route_max_ms": float(route_ms.max()),
        "feedback_p50_ms": float(np.percentile(fb_ms, 50)),
        "feedback_p99_ms": float(np.percentile(fb_ms, 99)),
        "server_route_p50_ms": server[0],
        "server_route_p99_ms": server[1],
        "server_log_write_p50_ms": logged[0],
        "server_log_write_p99_ms": logged[1],
        "errors_or_unfinished": load.errors + closed.errors,
        "learn_lag_rows_at_end": lag[0].split()[-1] if lag else "?",
        "closed_loop_routes_per_s": routes / closed_wall,
        "closed_loop_route_p99_ms": float(np.percentile(1e3 * np.array(closed.route_lat), 99)),
        "open_loop_window": window,
    }


def worker_shares(db: Path, window: tuple[float, float]) -> str:
    """Each worker's share of the decisions taken in ``window`` (the open-loop phase), e.g. ``52/48``: how
    evenly the kernel spread the generator's connections (``SO_REUSEPORT`` hashes each connection)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select coalesce(worker, -1), count(*) from decisions where created_at between ? and ? "
            "group by 1 order by 1",
            window,
        ).fetchall()
    total = sum(n for _, n in rows) or 1
    return "/".join(f"{100 * n / total:.0f}" for _, n in rows)


def staleness_ms(db: Path, window: tuple[float, float] | None = None) -> tuple[float, float, int]:
    """Snapshot staleness from the log: for each feedback row (``seq``, acknowledged at ``received_at``), the
    time until *every* process that decides (each worker of a cluster: ``decisions.worker``) has served a
    decision with a snapshot that has learned it (``policy_version >= seq``) — an upper bound (it includes
    the wait for each process's next route). Only feedback acknowledged within ``window`` (the open-loop
    phase: the offered rate, not the closed loop's saturation) counts. Returns p50, p99 (ms) and the rows
    measured; feedback some process served no later decision with is not counted."""
    with sqlite3.connect(db) as conn:
        fb = np.array(conn.execute("select seq, received_at from feedback order by seq").fetchall(), dtype=float)
        rows = conn.execute("select created_at, policy_version, coalesce(worker, -1) from decisions order by event_id")
        dec = np.array(rows.fetchall(), dtype=float)
    if window is not None and fb.size:
        fb = fb[(fb[:, 1] >= window[0]) & (fb[:, 1] <= window[1])]
    if fb.size == 0 or dec.size == 0:
        return float("nan"), float("nan"), 0
    lag = np.full(len(fb), -np.inf)
    for worker in np.unique(dec[:, 2]):
        mine = dec[dec[:, 2] == worker]
        version = np.maximum.accumulate(mine[:, 1])  # snapshots only advance; the running max keeps it sorted
        first = np.searchsorted(version, fb[:, 0], side="left")
        served = first < len(mine)
        lag[~served] = np.nan
        lag[served] = np.maximum(lag[served], 1e3 * (mine[first[served], 0] - fb[served, 1]))
    lag = lag[np.isfinite(lag)]
    return float(np.percentile(lag, 50)), float(np.percentile(lag, 99)), int(lag.size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--rate", type=float, default=500.0, help="offered routes/s in the open-loop phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the open-loop phase")
    parser.add_argument("--closed-seconds", type=float, default=8.0, help="length of the closed-loop phase")
    parser.add_argument("--conns", type=int, default=16, help="keep-alive connections")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0],
        help="0: one `serve` process; N: `serve --workers N` (a learner and N router processes); several: side by side",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, help="profile every server thread (cProfile, CPU clock) into this directory"
    )
    args = parser.parse_args(argv if argv is not None else ([] if __name__ != "__main__" else None))
    if args.profile is not None and args.workers != [0]:
        parser.error("--profile profiles one server process: use it with --workers 0")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("bench_serve needs the [serve] extra (make bench-serve installs it); skipped")
        return
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average before: {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"# d = {args.dim}, M = {args.models}, open loop {args.rate:g} routes/s for {args.seconds:g} s + feedback "
          f"for every route; closed loop {args.conns} connections for {args.closed_seconds:g} s")  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        for name in args.policies:
            for workers in args.workers:
                tag = run_name(name, workers)
                proc, port = start_server(Path(tmp), name, args, workers)
                try:
                    rows[tag] = run_async(measure(port, args, workers))
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
                window = rows[tag].pop("open_loop_window")
                p50, p99, n = staleness_ms(Path(tmp) / f"{tag}.db", window)
                rows[tag].update(staleness_p50_ms=p50, staleness_p99_ms=p99, staleness_rows=n)
                rows[tag]["worker_shares_pct"] = worker_shares(Path(tmp) / f"{tag}.db", window)
    keys = list(next(iter(rows.values())))
    print("\n| metric | " + " | ".join(rows) + " |\n|---|" + "---:|" * len(rows))
    for k in keys:
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for r in rows.values()]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(f"\ngoal: >= 95% of {args.rate:g} routes/s (+ as much feedback) with route decision p99 <= 5 ms (server side)"
          " and client route p99 <= 50 ms")  # fmt: skip
    for tag, r in rows.items():
        met = r["server_route_p99_ms"] <= 5.0 and r["routes_per_s"] >= 0.95 * args.rate and r["route_p99_ms"] <= 50
        print(f"  {tag}: {'met' if met else 'NOT met'}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.profile is not None:
        from benchmarks.profile_serve import report

        for name in args.policies:
            print(f"\n# profile of the {name} server\n{report(args.profile / name)}")


if __name__ == "__main__":
    main()
