"""Helpers of the gateway tests: fake upstreams (``fake_upstream.py``) and gateway configs, on loopback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from service_support import ADMIN_KEY, CLIENT_KEY, HERE, Server, free_port, write_config

LLMS = ("llama3-chatqa-1.5-8b", "qwen2.5-7b-instruct", "llama3-chatqa-1.5-70b")
PRICES = {"llama3-chatqa-1.5-8b": (0.2, 0.2), "qwen2.5-7b-instruct": (0.2, 0.2), "llama3-chatqa-1.5-70b": (0.9, 0.9)}


class FakeUpstream:
    """One ``fake_upstream.py`` process on a free loopback port (``model``: what its entries call)."""

    def __init__(self, model: str, log_file: Path) -> None:
        self.model, self.port = model, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait(self, timeout: float = 30.0) -> FakeUpstream:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/control", timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"fake upstream {self.model} did not start")

    def control(self, **state: Any) -> dict[str, Any]:
        if state:
            return httpx.post(self.url + "/control", json=state, timeout=5.0).json()
        return httpx.get(self.url + "/control", timeout=5.0).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_upstreams(models: Iterable[str], log_file: Path) -> dict[str, FakeUpstream]:
    """A :class:`FakeUpstream` per model, started together, returned once each answers (all stopped
    if one does not)."""
    ups = {m: FakeUpstream(m, log_file) for m in models}
    try:
        for u in ups.values():
            u.wait()
    except BaseException:
        for u in ups.values():
            u.stop()
        raise
    return ups


def upstream_entry(up: FakeUpstream, name: str | None = None, **extra: Any) -> dict[str, Any]:
    pin, pout = PRICES.get(up.model, (0.5, 0.5))
    entry = {"name": name or up.model, "base_url": up.url + "/v1", "model": up.model, "input_price": pin,
             "output_price": pout, "timeout_s": 5.0}  # fmt: skip
    return entry | extra


def gateway_config(
    path: Path, upstreams: list[dict[str, Any]], *, policy: dict[str, Any] | None = None, dim: int = 8,
    gateway: dict[str, Any] | None = None, tables: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    g = {"embedder": {"factory": "fake_embedder:CountingEmbedder", "params": {"dim": dim}}} | (gateway or {})
    t: dict[str, Any] = {
        "router": {"dim": dim, "seed": 0},
        "policy": policy or {"name": "linucb", "params": {"alpha": 1.0}},
        "storage": {"url": "sqlite:///router.db"},
        "gateway": g,
        "gateway.upstreams": upstreams,
    }
    return write_config(path, t | (tables or {}))


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


def db_rows(server: Server, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on a gateway's SQLite log (``router.db`` next to its config), read-only."""
    path = server.config.parent / "router.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return con.execute(sql).fetchall()


def learned(server: Server) -> None:
    """Wait until every accepted feedback is learned and published."""
    for _ in range(100):
        if httpx.get(server.url + "/healthz").json()["pending_feedback"] == 0:
            time.sleep(0.3)  # publish_interval_s = 0.2
            return
        time.sleep(0.05)
    raise AssertionError("feedback not learned")


def start_gateway(tmp: Path, config: Path) -> Server:
    return Server(config, tmp / "gateway.log").start()


__all__ = [
    "ADMIN_KEY",
    "CLIENT_KEY",
    "LLMS",
    "FakeUpstream",
    "ask",
    "db_rows",
    "gateway_config",
    "learned",
    "start_gateway",
    "upstream_entry",
]
