"""Where the gateway's CPU per request goes: cProfile of every thread of a ``banditroute serve`` gateway.

The same setup as :mod:`benchmarks.bench_gateway` (fake upstream, 3 upstream entries, LinUCB, SQLite
log, hash embedder) and its open-loop load with feedback, but the gateway runs in a child process
that profiles itself once the warm-up is over (``SIGUSR1``): cProfile, timed by each thread's own CPU
time, on the main (event loop) thread and, through :func:`threading.setprofile`, on every thread
(the writer, the embedding thread, the learner, the thread pool). When the load is over the child
gets ``SIGINT``, uvicorn shuts down, and the child writes the merged profile (a ``pstats`` file)
itself (``python -m cProfile`` under uvicorn never got to write one). The parent prints the top
functions by cumulative and own time. cProfile's per-call cost (here with a Python-level timer)
inflates call-heavy Python code about threefold: read shares, not absolute times.

Run: ``python -m benchmarks.profile_gateway --rate 50 --seconds 10`` (both modes, one child each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_gateway import TESTS, free_port, phase, wait_ready, write_config


def serve_profiled(config: Path, port: int, out: Path) -> None:
    """The child: ``banditroute serve`` with every thread profiled; the merged profile written to ``out``."""
    from banditroute.cli.serve import serve

    profiles: list[cProfile.Profile] = []
    started = threading.Event()  # set by SIGUSR1 once the warm-up is over: start-up is not profiled

    def start_profile(frame: Any, event: str, arg: Any) -> None:  # every call of a thread until started
        if started.is_set():
            p = cProfile.Profile(time.thread_time)  # CPU time of this thread: waiting costs nothing
            profiles.append(p)
            p.enable()  # replaces this hook for the thread

    signal.signal(signal.SIGUSR1, lambda *_: started.set())
    threading.setprofile(start_profile)
    sys.setprofile(start_profile)
    try:
        serve(config=config, host=None, port=port, log_level="warning")
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        stats = pstats.Stats(profiles[0])
        for p in profiles[1:]:
            with contextlib.suppress(TypeError):  # a thread that recorded nothing
                stats.add(p)
        stats.dump_stats(out)


def profile_mode(tmp: Path, upstream_port: int, rate: float, seconds: float, stream: bool, out: Path) -> int:
    """Run one child gateway under the open-loop load in one mode; returns the number of chat requests."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    port = free_port()
    config = write_config(tmp, f"http://127.0.0.1:{upstream_port}", workers=0)  # one process
    (tmp / "router.db").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.profile_gateway", "--child", str(config), str(port), str(out)]
    child = subprocess.Popen(cmd, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", child)
        asyncio.run(phase(port, upstream_port, 20, 2.0, stream))  # warm-up
        child.send_signal(signal.SIGUSR1)  # profile from here
        n = int(asyncio.run(phase(port, upstream_port, rate, seconds, stream))["requests"])
    finally:
        child.send_signal(signal.SIGINT)
        child.wait(60)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path("runs"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        serve_profiled(Path(args.child[0]), int(args.child[1]), Path(args.child[2]))
        return
    tmp = Path(tempfile.mkdtemp(prefix="profile-gateway-"))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    up_port = free_port()
    up = subprocess.Popen([sys.executable, str(TESTS / "fake_upstream.py"), "--port", str(up_port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        wait_ready(f"http://127.0.0.1:{up_port}/control", up)
        for stream in (False, True):
            out = args.out / f"profile-gateway-{'stream' if stream else 'whole'}.prof"
            n = profile_mode(tmp, up_port, args.rate, args.seconds, stream, out)
            stats = pstats.Stats(str(out))
            total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
            mode = "stream" if stream else "whole answer"
            print(f"\n=== {mode}: {n} chat requests (+ feedback), {1e3 * total / n:.2f} ms profiled CPU per request; "
                  f"load {os.getloadavg()[0]:.2f}; {out}")  # fmt: skip
            stats.sort_stats("cumulative").print_stats(args.top)
            stats.sort_stats("tottime").print_stats(args.top)
    finally:
        up.terminate()
        up.wait(10)


if __name__ == "__main__":
    main()
