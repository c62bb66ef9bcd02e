"""The processes of a router cluster on one host (``banditroute serve --workers N``) and its roles.

``serve --workers N`` binds the listening socket once, starts one **learner** process (``serve --role
learner``: holds the log's writer lock, learns, publishes snapshots; no HTTP) and, once it has
published its first snapshot, ``N`` **worker** processes (``serve --role worker``) that each run their
own uvicorn server on an inherited socket — the pre-fork model of gunicorn and ``uvicorn --workers``,
with the learner beside the workers (:mod:`banditroute.service.cluster`). Where the system has
``SO_REUSEPORT`` (Linux), each worker gets its own socket bound to the same port, and the kernel
hashes each new connection to one of them: with one shared socket, whichever worker wakes first
accepts a whole burst of connections (asyncio accepts up to a backlog's worth per wake-up), and a
client's keep-alive pool could land on one worker while the other idles (docs/benchmarks.md,
"Router workers over one log"). The supervisor keeps every socket open, so connections that arrive
while a worker restarts wait in its queue. A child that dies (``kill -9`` included) is started again;
acknowledged decisions and feedback are in the log, so nothing is lost, and a restarted learner
restores its checkpoint and replays the rest once. ``SIGINT``/``SIGTERM`` stop the workers first
(uvicorn's graceful shutdown), then the learner (its final checkpoint). The children share a fresh
``PROMETHEUS_MULTIPROC_DIR``, so any worker's ``/metrics`` covers them all (:mod:`banditroute.service.metrics`).

Across hosts, run ``serve --role learner`` once and ``serve --role worker --worker-index i`` on each
host against one PostgreSQL log.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client.multiprocess import mark_process_dead

from banditroute.core.validation import InputError
from banditroute.service.cluster import learner_pid
from banditroute.service.config import ServiceConfig
from banditroute.service.metrics import MULTIPROC_DIR
from banditroute.service.router import WORKER_START_TIMEOUT_S, Router
from banditroute.service.storage import Storage, StorageUnavailable

log = logging.getLogger("banditroute.service")

RESTART_BACKOFF_S = 1.0  # a child that dies within this long of its start waits this long before the next


def _log_to_stderr(level: str) -> None:
    """Log lines like uvicorn's (``LEVEL: message``) in the processes that run no uvicorn."""
    logging.basicConfig(level=level.upper(), format="%(levelname)s:     %(message)s", stream=sys.stderr)


def run_learner(config: ServiceConfig, log_level: str = "info") -> None:
    """The learner role in this process until ``SIGINT``/``SIGTERM``, then its final checkpoint."""
    _log_to_stderr(log_level)
    router = Router(config, role="learner")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        router.start()
        assert router.learner is not None
        log.info("learner (pid %d): running, %d feedback rows learned", os.getpid(), router.learner.applied_seq)
        while not stop.wait(1.0):
            if router.learner.failed:
                raise SystemExit(1)
    finally:
        router.stop()


def run_worker(
    config: ServiceConfig, app_factory: Callable[[Router], Any], *, index: int, fd: int | None, log_level: str
) -> None:
    """One worker: its router and a uvicorn server on the inherited socket ``fd`` (else its own bind)."""
    serve_http(Router(config, role="worker", worker_index=index), app_factory, log_level=log_level, fd=fd)


def serve_http(router: Router, app_factory: Callable[[Router], Any], *, log_level: str, fd: int | None = None) -> None:
    """Start ``router`` (a start-up refusal is one plain error line, not a uvicorn traceback), then serve
    its app with uvicorn on the inherited socket ``fd`` or on ``[server]`` host and port until stopped."""
    import uvicorn

    config = router.config
    try:
        router.start()
    except BaseException:
        router.stop()
        raise
    server = uvicorn.Server(
        uvicorn.Config(
            app_factory(router),
            host=config.server.host,
            port=config.server.port,
            log_level=log_level,
            access_log=config.server.access_log,
            timeout_graceful_shutdown=10,
        )
    )
    try:
        server.run(sockets=None if fd is None else [socket.socket(fileno=fd)])
    finally:  # uvicorn's shutdown stopped it, unless uvicorn itself failed (port in use...)
        if router.running:
            router.stop()
    if not server.started:
        raise InputError("the HTTP server did not start (uvicorn's error is above)")


def _die_with_parent() -> None:
    """In a child before it runs: ``SIGTERM`` it when the supervisor dies, ``kill -9`` included
    (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere a killed supervisor leaves its children running)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def listen(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` inheritable listening sockets on one port with ``SO_REUSEPORT`` (one per worker; port 0
    picks a free port for all), else one socket the workers share (module docstring)."""
    # Linux (3.9+) balances connections over a port's SO_REUSEPORT sockets; BSD and macOS accept the flag
    # but hand every connection to one of them, so elsewhere the workers share one socket
    reuse = n > 1 and sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")
    socks: list[socket.socket] = []
    try:
        for _ in range(n if reuse else 1):
            socks.append(socket.create_server((host, port), backlog=2048, reuse_port=reuse))
            port = socks[0].getsockname()[1]
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for sock in socks:
        sock.set_inheritable(True)
    return socks


class Supervisor:
    """Starts and keeps running the learner and the workers of ``serve --workers N`` (module docstring)."""

    def __init__(self, config_path: Path, config: ServiceConfig, workers: int, log_level: str) -> None:
        self.config_path, self.config, self.n_workers, self.log_level = config_path, config, workers, log_level
        self.stopping = threading.Event()
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.restarts = 0

    def _command(self, role: str, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "banditroute",
            "serve",
            "--config",
            str(self.config_path),
            "--role",
            role,
            "--log-level",
            self.log_level,
            *extra,
        ]

    def _spawn(self, name: str) -> None:
        fds: tuple[int, ...] = ()
        if name == "learner":
            cmd = self._command("learner")
        else:
            index = int(name.removeprefix("worker-"))
            sock = self.socks[index % len(self.socks)]
            cmd = self._command("worker", "--worker-index", str(index), "--fd", str(sock.fileno()))
            fds = (sock.fileno(),)
        env = {**os.environ, MULTIPROC_DIR: str(self.metrics_dir)}
        self.children[name] = subprocess.Popen(cmd, pass_fds=fds, preexec_fn=_die_with_parent, env=env)
        self.started_at[name] = time.monotonic()

    def _await_learner(self) -> None:
        """Until our learner is up — it has published and its heartbeat names it — or it has exited
        (a start-up refusal, e.g. another router holds the log: the cluster ends with its exit code)."""
        store = Storage(self.config.storage.url, self.config.storage.timeout_s)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        try:
            while not self.stopping.is_set():
                code = self.children["learner"].poll()
                if code is not None:
                    raise SystemExit(code or 1)
                try:
                    if store.has_schema() and learner_pid(store) == self.children["learner"].pid:
                        return
                except (StorageUnavailable, sa.exc.SQLAlchemyError):  # the database is not up yet
                    pass
                if time.monotonic() > deadline:
                    raise InputError(f"the learner did not start within {WORKER_START_TIMEOUT_S:g} s")
                time.sleep(0.05)
        finally:
            store.dispose()

    def run(self) -> None:
        _log_to_stderr(self.log_level)
        host, port = self.config.server.host, self.config.server.port
        self.socks = listen(host, port, self.n_workers)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="banditroute-metrics-"))  # fresh: counts start at 0
        try:
            self._spawn("learner")
            self._await_learner()
            for i in range(self.n_workers):
                self._spawn(f"worker-{i}")
            log.info(
                "serving on %s:%d with %d workers and one learner (pid %d)", host, port, self.n_workers, os.getpid()
            )
            while not self.stopping.wait(0.2):
                self._restart_dead()
        finally:
            self._stop_all()
            for sock in self.socks:
                sock.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _restart_dead(self) -> None:
        for name, proc in list(self.children.items()):
            code = proc.poll()
            if code is None or self.stopping.is_set():
                continue
            if time.monotonic() - self.started_at[name] < RESTART_BACKOFF_S:
                time.sleep(RESTART_BACKOFF_S)
            log.warning("%s (pid %d) exited with code %s; starting it again", name, proc.pid, code)
            mark_process_dead(proc.pid, str(self.metrics_dir))  # its gauges go; its counts stay in the sums
            self.restarts += 1
            self._spawn(name)

    def _stop_all(self) -> None:
        """Workers first (they finish their requests), then the learner (it learns what they accepted)."""
        workers = [name for name in self.children if name != "learner"]
        for group in (workers, [name for name in self.children if name == "learner"]):
            for name in group:
                if self.children[name].poll() is None:
                    self.children[name].send_signal(signal.SIGTERM)
            for name in group:
                try:
                    self.children[name].wait(40)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in 40 s; killing it", name)
                    self.children[name].kill()
                    self.children[name].wait()
