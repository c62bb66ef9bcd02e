"""The router's hot path: requests batched on their way to the writer thread, and the two busiest
endpoints served without FastAPI's per-request machinery (issue 16; docs/benchmarks.md, "Router
workers over one log", 5b).

:class:`Batcher` hands the writer thread, as one call, every request of a kind that queued while it
was busy; :class:`FastLane` answers ``POST /v1/route`` and ``/v1/feedback`` as a plain ASGI layer;
:func:`parse_json` decodes and validates a body in one pass; :func:`openapi` lists the lane's
endpoints in ``/openapi.json``. :mod:`banditroute.service.app` puts them together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

Serial = Callable[..., Awaitable[Any]]  # runs a call on the writer thread, after those queued before it
AnswerError = Callable[[str, str, Exception], JSONResponse | None]  # the app's answer to a request's error


class Batcher:
    """Requests of one kind that queue for the writer thread, handled there by one call (issue 16's
    micro-batching of routes and group commit of feedback; docs/benchmarks.md, "Router workers").

    When a request comes and no batch is forming, a batch opens; it waits ``window_s`` (0: only
    until the event loop has read what already arrived) and takes every request of its kind that
    came meanwhile, then is one ``run(requests)`` call on the writer thread — for routes one
    ``act_batch`` and one commit (:meth:`~banditroute.service.router.Router.route_batch`), for
    feedback one commit (:meth:`~banditroute.service.router.Router.feedback_batch`). Requests that
    arrive while a batch is on the writer thread form the next batch, sent as soon as that one
    returns. So an idle server answers each request as it comes, and a busy one amortises the
    thread hop, the commit and (for LinUCB) the read of ``A⁻¹`` over every request that had to wait
    anyway. Each request gets its own answer or error; a storage fault fails the whole batch (503,
    nothing logged). The order on the writer thread stays the arrival order within a kind, and
    feedback for a route can only follow that route's answer, which follows its commit.
    """

    MAX_BATCH = 256

    def __init__(self, window_s: float, serial: Serial, run: Callable[[list[dict[str, Any]]], list[Any]]) -> None:
        self.window_s = window_s
        self._serial, self._run = serial, run
        self._pending: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: dict[str, Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            if self.window_s > 0:
                await asyncio.sleep(self.window_s)
            while self._pending:
                batch, self._pending = self._pending[: self.MAX_BATCH], self._pending[self.MAX_BATCH :]
                try:
                    results = await self._serial(self._run, [request for request, _ in batch])
                except Exception as exc:  # storage fault or a bug: every request of the batch gets it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # the client went away
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._task = None


M = TypeVar("M", bound=BaseModel)


def parse_json(body: bytes, model: type[M]) -> M:
    """A JSON body as ``model``, decoded and validated in one pass by pydantic-core
    (``model_validate_json``). FastAPI's own body parameter decodes with :mod:`json` first, which
    costs 0.2 ms for a 384-float context, ten times the validation (docs/benchmarks.md, "Router
    workers over one log"). Errors are FastAPI's 422, located under ``body`` as its own are."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


@dataclass(frozen=True)
class Lane:
    """One endpoint :class:`FastLane` serves: its body model, its handler and its OpenAPI text."""

    model: type[BaseModel]
    handle: Callable[[Any], Awaitable[dict[str, Any]]]
    summary: str
    answers: str


class FastLane:
    """``POST /v1/route`` and ``POST /v1/feedback``, the two requests a router serves most, answered
    without FastAPI's per-request machinery (its middleware stack, dependency solving, response
    handling): 108 µs less per request, a tenth of a worker's CPU under load (docs/benchmarks.md,
    "Router workers over one log"). Nothing else changes: it sits inside :class:`Authenticate` and
    :class:`BodyLimit`, validates with the same pydantic models (:func:`parse_json`) and answers
    errors as the app does (``answer_error``); ``/openapi.json`` lists both (:func:`openapi`). These
    two paths are the service's own: an extension cannot answer them."""

    def __init__(self, app: ASGIApp, lanes: dict[str, Lane], answer_error: AnswerError) -> None:
        self.app, self.lanes, self.answer_error = app, lanes, answer_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lanes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if lane is None:
            await self.app(scope, receive, send)
            return
        try:
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client went away: nothing to answer
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            response = JSONResponse(await lane.handle(parse_json(b"".join(chunks), lane.model)))
        except Exception as exc:
            answer = self.answer_error(scope["method"], scope["path"], exc)
            if answer is None:
                raise
            response = answer
        await response(scope, receive, send)


def openapi(app: FastAPI, lanes: dict[str, Lane]) -> dict[str, Any]:
    """The app's OpenAPI schema with the :class:`FastLane` endpoints, which FastAPI does not see."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for path, lane in lanes.items():
            body = {"schema": {"$ref": f"#/components/schemas/{lane.model.__name__}"}}
            schema["paths"][path] = {
                "post": {
                    "summary": lane.summary,
                    "requestBody": {"required": True, "content": {"application/json": body}},
                    "responses": {"200": {"description": lane.answers}, "422": {"description": "invalid body"}},
                }
            }
            schema.setdefault("components", {}).setdefault("schemas", {})[lane.model.__name__] = (
                lane.model.model_json_schema(ref_template="#/components/schemas/{model}")
            )
        app.openapi_schema = schema
    return app.openapi_schema
