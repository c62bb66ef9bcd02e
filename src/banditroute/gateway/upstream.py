"""Calls to one OpenAI-compatible upstream over httpx (an async client per upstream, kept alive).

A call that fails in a way another upstream may not — HTTP 429, any 5xx, a timeout, a refused or
dropped connection — raises :class:`UpstreamFailed` with its ``cause`` (``"429"``, ``"5xx"``,
``"timeout"``, ``"connection"``); the gateway then falls back. Any other status (a 4xx: the
request itself is wrong for this upstream) raises :class:`UpstreamRejected`, passed on to the
client. Concurrency per upstream is capped by ``max_concurrency`` (a semaphore); the API key is
read from the environment variable the config names, at start.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

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


def _failure(exc: httpx.HTTPError) -> UpstreamFailed:
    if isinstance(exc, httpx.TimeoutException):
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
    """One upstream: its config, an httpx client and a concurrency limit."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency)
        self.client = httpx.AsyncClient(headers=headers, timeout=config.timeout_s, limits=limits)
        # parsed once: httpx would otherwise parse and merge a relative URL on every call
        self.url = httpx.URL(config.base_url.rstrip("/") + "/chat/completions")
        self.slots = asyncio.Semaphore(config.max_concurrency)

    def _payload(self, body: dict[str, Any]) -> bytes:
        return json.dumps({**body, "model": self.config.model}, separators=(",", ":")).encode()

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        c = self.config
        return (prompt_tokens * c.input_price + completion_tokens * c.output_price) / 1e6

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streaming completion: the upstream's JSON answer."""
        async with self.slots:
            try:
                r = await self.client.post(self.url, content=self._payload(body))
            except httpx.HTTPError as exc:
                raise _failure(exc) from None
        _check(r.status_code, r.content)
        try:
            out = json.loads(r.content)
        except ValueError:
            raise UpstreamFailed("5xx", "answer is not JSON") from None
        if not isinstance(out, dict) or not isinstance(out.get("choices"), list):
            raise UpstreamFailed("5xx", "answer is not a chat completion")
        return out

    async def open_stream(self, body: dict[str, Any]) -> httpx.Response:
        """Start a streaming completion; returns once the upstream answered 200 (its body unread).
        The caller reads it with :meth:`events` and must close it."""
        await self.slots.acquire()
        try:
            request = self.client.build_request("POST", self.url, content=self._payload(body))
            try:
                r = await self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _failure(exc) from None
            if r.status_code != 200:
                content = await r.aread()
                await r.aclose()
                _check(r.status_code, content)
                raise UpstreamFailed("5xx", f"status {r.status_code}")
        except BaseException:
            self.slots.release()
            raise
        return r

    async def events(self, r: httpx.Response) -> AsyncIterator[tuple[dict[str, Any], str]]:
        """The ``data:`` events of a stream until ``[DONE]``, each parsed and as sent (its JSON text, so
        that an event passed on unchanged is not serialised again); a drop raises :class:`UpstreamFailed`."""
        try:
            async for line in r.aiter_lines():
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
        except httpx.HTTPError as exc:
            raise _failure(exc) from None

    async def close_stream(self, r: httpx.Response) -> None:
        try:
            await r.aclose()
        finally:
            self.slots.release()

    async def aclose(self) -> None:
        await self.client.aclose()
