"""Calls to one OpenAI-compatible upstream over aiohttp (one keep-alive session per upstream).

aiohttp rather than httpx: the profile of a gateway request (docs/benchmarks.md, "LLM gateway")
put 43% of its CPU inside httpx's client (URL handling, hooks, a pool that checks every pooled
connection per request); the same loopback call costs 0.26–0.32 ms of client CPU with aiohttp
against 1.18 ms with httpx (measured side by side, ``benchmarks/bench_gateway.py``'s upstream).

A call that fails in a way another upstream may not — HTTP 429, any 5xx, a timeout, a refused or
dropped connection — raises :class:`UpstreamFailed` with its ``cause`` (``"429"``, ``"5xx"``,
``"timeout"``, ``"connection"``); the gateway then falls back. Any other status (a 4xx: the
request itself is wrong for this upstream) raises :class:`UpstreamRejected`, passed on to the
client. Concurrency per upstream is capped by ``max_concurrency`` (a semaphore and the session's
connection limit); ``timeout_s`` bounds connecting and every wait for data, not a whole stream. The
API key is read from the environment variable the config names, at start.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from banditroute.gateway.config import UpstreamConfig


class UpstreamFailed(Exception):
    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"upstream {cause}: {detail}")
        self.cause = cause


class UpstreamRejected(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body


TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


def _failure(exc: BaseException) -> UpstreamFailed:
    if isinstance(exc, TimeoutError):
        return UpstreamFailed("timeout", type(exc).__name__)
    return UpstreamFailed("connection", type(exc).__name__)


def _check(status: int, body: bytes) -> None:
    if status == 429:
        raise UpstreamFailed("429", "rate limited")
    if status >= 500:
        raise UpstreamFailed("5xx", f"status {status}")
    if status >= 400:
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = {"error": {"message": f"upstream answered {status}"}}
        raise UpstreamRejected(status, parsed)


class Upstream:
    """One upstream: its config, an aiohttp session (opened on first use, inside the event loop) and a
    concurrency limit."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            t = self.config.timeout_s
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency),
                timeout=aiohttp.ClientTimeout(total=None, connect=t, sock_connect=t, sock_read=t),
            )
        return self._session

    def _payload(self, body: dict[str, Any]) -> bytes:
        return json.dumps({**body, "model": self.config.model}, separators=(",", ":")).encode()

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        c = self.config
        return (prompt_tokens * c.input_price + completion_tokens * c.output_price) / 1e6

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming completion: the upstream's JSON answer."""
        async with self.slots:
            try:
                async with self._client().post(self.url, data=self._payload(body)) as r:
                    status, content = r.status, await r.read()
            except TRANSPORT_ERRORS as exc:
                raise _failure(exc) from None
        _check(status, content)
        try:
            out = json.loads(content)
        except ValueError:
            raise UpstreamFailed("5xx", "answer is not JSON") from None
        if not isinstance(out, dict) or not isinstance(out.get("choices"), list):
            raise UpstreamFailed("5xx", "answer is not a chat completion")
        return out

    async def open_stream(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """Start a streaming completion; returns once the upstream answered 200 (its body unread).
        The caller reads it with :meth:`events` and must close it (:meth:`close_stream`)."""
        await self.slots.acquire()
        try:
            try:
                r = await self._client().post(self.url, data=self._payload(body))
            except TRANSPORT_ERRORS as exc:
                raise _failure(exc) from None
            if r.status != 200:
                try:
                    content = await r.read()
                except TRANSPORT_ERRORS as exc:
                    raise _failure(exc) from None
                finally:
                    r.release()
                _check(r.status, content)
                raise UpstreamFailed("5xx", f"status {r.status}")
        except BaseException:
            self.slots.release()
            raise
        return r

    async def events(self, r: aiohttp.ClientResponse) -> AsyncIterator[tuple[dict[str, Any], str]]:
        """The ``data:`` events of a stream until ``[DONE]``, each parsed and as sent (its JSON text, so
        that an event passed on unchanged is not serialised again); a drop raises :class:`UpstreamFailed`."""
        try:
            async for raw in r.content:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise UpstreamFailed("5xx", "stream event is not JSON") from None
                if isinstance(event, dict) and "error" in event:
                    raise UpstreamFailed("5xx", "error event in stream")
                yield event, data
            raise UpstreamFailed("connection", "stream ended without [DONE]")
        except TRANSPORT_ERRORS as exc:
            raise _failure(exc) from None

    async def close_stream(self, r: aiohttp.ClientResponse) -> None:
        try:
            if r.content.at_eof():
                r.release()  # read to the end: the connection goes back to the pool
            else:
                r.close()  # abandoned mid-stream: the connection cannot be reused
        finally:
            self.slots.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
