"""The HTTP face of the router (FastAPI): thin handlers over :class:`~banditroute.service.router.Router`.

=======================  =======  ============================================================
endpoint                 key      does
=======================  =======  ============================================================
``POST /v1/route``       client   ``{context | query, candidates?, request_id?}`` ->
                                  ``{event_id, model, probs, policy_version}``
``POST /v1/feedback``    client   ``{event_id, reward, cost?}`` -> accepted / duplicate;
                                  404 unknown event, 410 after the TTL, 422 bad reward
``POST /v1/search``      client   retrieval mode: ``{query, k?, candidates?, request_id?}`` ->
                                  the routed model's top-k items and an event id
``GET /v1/models``       client   list models (active and retired)
``POST /v1/models``      admin    ``{name}``: add a model (cold start in a free slot)
``DELETE /v1/models/x``  admin    retire model ``x``
``GET /v1/stats``        client   the dashboard's data
``GET /healthz``         none     liveness and learner state (503 when the learner stopped)
``GET /metrics``         none     Prometheus text format
``GET /``                none     the dashboard page (its data needs a client key)
=======================  =======  ============================================================

Errors are JSON ``{"detail": "..."}``: 401 no key, 403 wrong key, 404, 409, 410, 413 body over
``server.max_body_bytes``, 422 invalid input (messages never echo the submitted values). Routing
and feedback run on the event loop, one at a time, which is what keeps the log's feedback order
the learning order; embedding and retrieval run in the thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banditroute.core.validation import InputError
from banditroute.service.auth import Forbidden, KeyChecker, Role, Unauthorized
from banditroute.service.config import ServiceConfig
from banditroute.service.metrics import CONTENT_TYPE
from banditroute.service.router import Conflict, Gone, NotFound, Router

log = logging.getLogger("banditroute.service")

MAX_TEXT = 20_000
MAX_NAMES = 1024


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RouteBody(_Body):
    context: list[float] | None = None
    query: str | None = Field(None, max_length=MAX_TEXT)
    candidates: list[str] | None = Field(None, max_length=MAX_NAMES)
    request_id: str | None = Field(None, min_length=1, max_length=200)


class FeedbackBody(_Body):
    event_id: int
    reward: float
    cost: float | None = None


class SearchBody(_Body):
    query: str = Field(min_length=1, max_length=MAX_TEXT)
    k: int | None = Field(None, ge=1, le=1000)
    candidates: list[str] | None = Field(None, max_length=MAX_NAMES)
    request_id: str | None = Field(None, min_length=1, max_length=200)


class ModelBody(_Body):
    name: str = Field(min_length=1, max_length=100)


class BodyLimit:
    """413 for bodies over ``max_bytes``: by ``Content-Length`` up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await JSONResponse({"detail": self._message()}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"


def _dashboard_html() -> str:
    return files("banditroute.service").joinpath("static/dashboard.html").read_text(encoding="utf-8")


def create_app(config: ServiceConfig, router: Router | None = None) -> FastAPI:
    """The ASGI app of one router; starting the app (lifespan) starts the router."""
    router = router or Router(config)
    keys = KeyChecker(config.auth.api_key_hashes, config.auth.admin_key_hashes)
    dashboard = _dashboard_html()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            router.start()
        except Exception:
            router.stop()
            raise
        app.state.router = router
        try:
            yield
        finally:
            router.stop()

    app = FastAPI(
        title="banditroute router",
        summary="Routes each request to one model and learns from delayed feedback.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads its assets from a CDN; the OpenAPI schema stays at /openapi.json
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)

    def error(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

        return handler

    for exc_type, status in [
        (InputError, 422),
        (NotFound, 404),
        (Gone, 410),
        (Conflict, 409),
        (Unauthorized, 401),
        (Forbidden, 403),
    ]:
        app.add_exception_handler(exc_type, error(status))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()[:10]
        )  # no 'input' echo: contexts and keys stay out of responses and logs
        return JSONResponse({"detail": problems}, status_code=422)

    # Dependencies run before the body is validated: a request without a valid key learns nothing.
    async def client(request: Request) -> None:  # async: no thread-pool hop per request
        keys.require(request.headers, Role.CLIENT)

    async def admin(request: Request) -> None:
        keys.require(request.headers, Role.ADMIN)

    as_client, as_admin = [Depends(client)], [Depends(admin)]

    @app.post("/v1/route", dependencies=as_client)
    async def route(body: RouteBody) -> JSONResponse:
        context: Any = body.context
        if body.query is not None and body.context is None:
            context = await run_in_threadpool(router.embed, body.query)
        elif body.query is not None:
            raise InputError("send exactly one of 'context' (a vector) and 'query' (text)")
        out = router.route(context=context, candidates=body.candidates, request_id=body.request_id)
        return JSONResponse(out)

    @app.post("/v1/feedback", dependencies=as_client)
    async def feedback(body: FeedbackBody) -> JSONResponse:
        return JSONResponse(router.feedback(body.event_id, body.reward, body.cost))

    @app.post("/v1/search", dependencies=as_client)
    async def search(body: SearchBody) -> JSONResponse:
        if router.retrieval is None:
            raise NotFound("retrieval mode is not configured ([retrieval] in the router config)")
        x = await run_in_threadpool(router.embed, body.query)
        out, k = router.search_decide(x, k=body.k, candidates=body.candidates, request_id=body.request_id)
        out["items"] = await run_in_threadpool(router.search_items, out["model"], body.query, k)
        return JSONResponse(out)

    @app.get("/v1/models", dependencies=as_client)
    async def list_models() -> JSONResponse:
        return JSONResponse({"models": router.list_models()})

    @app.post("/v1/models", status_code=201, dependencies=as_admin)
    async def add_model(body: ModelBody) -> JSONResponse:
        return JSONResponse(router.add_model(body.name), status_code=201)

    @app.delete("/v1/models/{name}", dependencies=as_admin)
    async def retire_model(name: str) -> JSONResponse:
        return JSONResponse(router.retire_model(name))

    @app.get("/v1/stats", dependencies=as_client)
    async def stats() -> JSONResponse:
        return JSONResponse(router.stats())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        state = router.health()
        return JSONResponse(state, status_code=200 if state["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(router.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(dashboard)

    return app
