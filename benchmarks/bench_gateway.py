"""Added latency of the LLM gateway over calling an upstream directly, side by side, on loopback.

One fake OpenAI-compatible upstream (``tests/fake_upstream.py``: answers at once, streams its text
in ~6 chunks) and a ``banditroute serve`` gateway in front of it (3 upstream entries on that
process, LinUCB, SQLite log, the tests' hash embedder so that the gateway's own work is measured;
embedding with a real model is extra, see docs/benchmarks.md; a key budget that never binds, so that
budget accounting — with workers, also reading each other's spending — is measured) — one per ``--workers`` value: ``0``
is one process, ``N`` is ``serve --workers N`` (a learner and N gateway workers on one socket). All
of them run at once and their phases alternate (for each rate and mode, each gateway in turn), so
they are compared on the same machine state. An **open-loop** generator sends,
at ``rate`` requests/s on a fixed schedule, each request twice — once to the upstream directly and
once through the gateway with ``model: "router"`` — so both see the same machine at the same
moments; every gateway answer gets its feedback (not timed). Each request has a fresh prompt.

Measured per (rate, mode): non-streaming, the time from send to the whole answer; streaming, the
time to the first content chunk (TTFT) and to ``[DONE]``. *Added* latency is the gateway's
quantile minus the direct one; also the gateway's CPU time per chat request (its feedback included;
of all its processes), the achieved rate (requests over the time from the first send to the last
answer) and, for workers, each one's share of the answers. Goal (issue 15): added p99 ≤ 10 ms
non-streaming and TTFT overhead ≤ 5 ms, at 50 and 200 requests/s on the 2-core machine.

Run: ``make bench-gateway`` or ``python -m benchmarks.bench_gateway --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
KEY = "bench-key-0123456789abcdef0123456789abcdef012"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its descendants (``/proc/<pid>/stat``): a
    ``serve --workers N`` gateway is a supervisor, a learner and N workers."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):  # gone meanwhile
                continue
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = _stat(p)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo += children.get(p, [])
    return total


def wait_workers(port: int, workers: int, timeout: float = 60.0) -> None:
    """Until every worker has answered a ``/metrics`` scrape (on new connections; ``banditroute_process``
    names the one that answered)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"Connection": "close"}).text
        seen |= {line.split('pid="')[1].split('"')[0] for line in text.splitlines()
                 if line.startswith("banditroute_process{")}  # fmt: skip
        if len(seen) >= max(workers, 1):
            return
    raise RuntimeError(f"only {len(seen)} of {workers} workers answered on port {port}")


def worker_answers(db: Path) -> dict[str, int]:
    """Chat decisions per worker, from the log (``decisions.worker``; ``single`` for one process)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select coalesce(worker, -1), count(*) from decisions where kind = 'chat' group by 1")
        return {("single" if w == -1 else str(w)): int(n) for w, n in rows.fetchall()}


def write_config(tmp: Path, upstream: str, workers: int) -> Path:
    from banditroute.service.auth import hash_key

    ups = "".join(
        f'[[gateway.upstreams]]\nname = "{n}"\nbase_url = "{upstream}/v1"\nmodel = "{n}"\ninput_price = {p}\n'
        f"output_price = {p}\nmax_concurrency = 512\n"
        for n, p in (("small", 0.1), ("medium", 0.5), ("large", 2.0))
    )
    text = f"""[router]
dim = 16
[policy]
name = "linucb"
params = {{ alpha = 1.0 }}
[storage]
url = "sqlite:///{tmp}/router.db"
[auth]
api_key_hashes = ["{hash_key(KEY)}"]
admin_key_hashes = ["{hash_key(KEY + "-admin")}"]
[gateway]
embedder = {{ factory = "fake_embedder:CountingEmbedder", params = {{ dim = 16 }} }}
embed_cache = 0
{ups}[[gateway.budgets]]
key_hash = "*"
day = 1000000.0
""" + (f"[cluster]\nworkers = {workers}\n" if workers else "")
    path = tmp / "router.toml"
    path.write_text(text)
    return path


class Conn:
    """One keep-alive HTTP/1.1 connection, one request at a time; reads fixed-length and chunked bodies
    (a few tens of µs per request where httpx costs several hundred, so the generator leaves the
    gateway and the upstream the CPU)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> tuple[float, float, dict[bytes, bytes]]:
        """``(time to the first content chunk, time to the end, headers)`` in seconds."""
        start = time.perf_counter()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status = await self.reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"{path}: {status!r}")
        headers: dict[bytes, bytes] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.lower()] = value.strip()
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
            total = time.perf_counter() - start
            return total, total, headers
        first = None
        while size := int((await self.reader.readline()).strip(), 16):  # chunked: until the 0-size chunk
            data = await self.reader.readexactly(size + 2)
            if first is None and b'"content":"' in data and b'"content":""' not in data:
                first = time.perf_counter() - start
        await self.reader.readline()
        total = time.perf_counter() - start
        return first if first is not None else total, total, headers


class Pool:
    def __init__(self, conns: list[Conn]) -> None:
        self.free: asyncio.Queue[Conn] = asyncio.Queue()
        for c in conns:
            self.free.put_nowait(c)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[float, float, dict[bytes, bytes]]:
        conn = await self.free.get()
        try:
            return await conn.post(path, json.dumps(body).encode())
        finally:
            self.free.put_nowait(conn)


async def phase(gateway: int, upstream: int, rate: float, seconds: float, stream: bool) -> dict[str, Any]:
    n_conns = int(max(16, rate / 2))
    direct = Pool([await Conn.open(upstream) for _ in range(n_conns)])
    routed = Pool([await Conn.open(gateway) for _ in range(n_conns)])
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    feedback: list[asyncio.Task[Any]] = []
    answered: list[float] = []  # when each pair's answers were both in

    async def pair(i: int) -> None:
        messages = [{"role": "user", "content": f"benchmark prompt number {i} at {rate} per second"}]
        body: dict[str, Any] = {"messages": messages, "stream": stream}
        d = asyncio.create_task(direct.post("/v1/chat/completions", body | {"model": "small"}))
        g = asyncio.create_task(routed.post("/v1/chat/completions", body | {"model": "router"}))
        (dt, dtot, _), (gt, gtot, headers) = await asyncio.gather(d, g)
        results["direct"].append((dt, dtot))
        results["gateway"].append((gt, gtot))
        answered.append(time.perf_counter())
        fb = {"event_id": int(headers[b"x-banditroute-event-id"]), "reward": float(i % 2)}
        feedback.append(asyncio.create_task(routed.post("/v1/feedback", fb)))

    tasks = []
    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):  # open loop: send on schedule, whatever came back
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(pair(i)))
    await asyncio.gather(*tasks)
    await asyncio.gather(*feedback)
    late = time.perf_counter() - t0 - seconds
    for pool in (direct, routed):
        while not pool.free.empty():
            pool.free.get_nowait().writer.close()
    out: dict[str, Any] = {"rate": rate, "stream": stream, "requests": n, "drain_s": round(late, 3),
                           "achieved_rate": round(n / (max(answered) - t0), 1)}  # fmt: skip
    for who, rows in results.items():
        a = np.array(rows) * 1e3
        out[who] = {"first_ms": _q(a[:, 0]), "total_ms": _q(a[:, 1])}
    for k in ("first_ms", "total_ms"):
        out["added_" + k] = {q: round(out["gateway"][k][q] - out["direct"][k][q], 2) for q in ("p50", "p90", "p99")}
    return out


def _q(a: np.ndarray) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(a, q)), 2) for q in (50, 90, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="50,200")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[0],
        help="0: one `serve` process; N: `serve --workers N` (a learner and N gateway workers); several: side by side",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("runs/bench-gateway.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    log = open(tmp / "processes.log", "ab")  # noqa: SIM115 (open for the processes' lifetime)
    up = subprocess.Popen([sys.executable, str(TESTS / "fake_upstream.py"), "--port", str(up_port)],
                          stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    exe = Path(sys.executable).parent / "banditroute"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "banditroute.cli.main"]
    gateways: dict[int, tuple[subprocess.Popen[bytes], int]] = {}  # workers -> (process, port)
    try:
        for w in dict.fromkeys(args.workers):
            (tmp / str(w)).mkdir()
            port = free_port()
            config = write_config(tmp / str(w), upstream, w)
            gateways[w] = (subprocess.Popen([*cmd, "serve", "--config", str(config), "--port", str(port),
                                             "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                                            env=env), port)  # fmt: skip
        wait_ready(upstream + "/control", up)
        for w, (gw, port) in gateways.items():
            wait_ready(f"http://127.0.0.1:{port}/healthz", gw)
            wait_workers(port, w)
            asyncio.run(phase(port, up_port, 20, 2.0, False))  # warm-up (connections, first-call paths)
        load_before = os.getloadavg()[0]
        results = []
        for rate in args.rates.split(","):
            for stream in (False, True):
                for w, (gw, port) in gateways.items():  # side by side: each gateway in turn
                    cpu = cpu_seconds(gw.pid)
                    res = asyncio.run(phase(port, up_port, float(rate), args.seconds, stream))
                    # the gateway's CPU per chat request, its feedback included (all its processes)
                    res["gateway_cpu_ms"] = round(1e3 * (cpu_seconds(gw.pid) - cpu) / res["requests"], 2)
                    res["workers"] = w
                    results.append(res)
        answers = {w: worker_answers(tmp / str(w) / "router.db") for w in gateways}
        report = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
            },
            "seconds": args.seconds,
            "phases": results,
            "answers_per_worker": answers,
        }
    finally:
        for gw, _ in gateways.values():
            gw.terminate()
        up.terminate()
        for gw, _ in gateways.values():
            gw.wait(30)
        up.wait(10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    cols = ("direct p50/p99", "gateway p50/p99", "added p50/p99")
    print(f"{'rate':>5} {'mode':>7} {'workers':>7} {cols[0]:>16} {cols[1]:>16} {cols[2]:>19} {'CPU ms/req':>10} "
          f"{'achieved/s':>10}")  # fmt: skip
    for r in results:
        k = "first_ms" if r["stream"] else "total_ms"
        d, g, a = r["direct"][k], r["gateway"][k], r["added_" + k]
        mode = "TTFT" if r["stream"] else "whole"
        print(f"{r['rate']:>5.0f} {mode:>7} {r['workers']:>7} {d['p50']:>7.2f}/{d['p99']:<8.2f} "
              f"{g['p50']:>7.2f}/{g['p99']:<8.2f} {a['p50']:>8.2f}/{a['p99']:<8.2f} {r['gateway_cpu_ms']:>6.2f} "
              f"{r['achieved_rate']:>10.1f}")  # fmt: skip
    for w, per in answers.items():
        if w:
            total = sum(per.values()) or 1.0
            shares = ", ".join(f"{100 * v / total:.0f}%" for v in per.values())
            print(f"{w} workers: answers per worker {shares}")
    print(f"load average {report['machine']['load_before']:.2f} before, {report['machine']['load_after']:.2f} after; "
          f"{args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
