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
(extension)              ...      an extension's endpoints, e.g. the LLM gateway's
                                  (:mod:`banditroute.gateway.routes`, installed by ``serve``)
``GET /``                none     the dashboard page (its data needs a client key)
=======================  =======  ============================================================

Errors are JSON ``{"detail": "..."}``: 401 no key, 403 wrong or expired key (checked first, before
the body is read), 404, 409, 410, 413 body over ``server.max_body_bytes``, 422 invalid input
(ids outside ``[1, 2**63 - 1]``, control characters in names or request ids, ``/`` in model names;
messages never echo the submitted values). ``SIGHUP`` re-reads ``auth.key_file``. Routing
and feedback run on one writer thread, in arrival order, each kind in groups of what queued while
the thread was busy (:mod:`banditroute.service.fastpath`), which is what keeps the log's feedback
order the learning order; so does every other call that uses the log's connection. The two busiest
endpoints, ``/v1/route`` and ``/v1/feedback``, skip FastAPI's per-request machinery (same module).
The event loop never waits on the database itself, so ``/healthz`` (its own probe connection, in
the thread pool) and ``/metrics`` answer while a write waits on a lock. Embedding and retrieval run
in the thread pool. Storage faults answer 503 ``{"detail": "storage unavailable: ..."}`` with
``Retry-After`` (docs/reliability.md); other database errors are logged as one line and answer 500.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any, Protocol, TypeVar

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banditroute.core.validation import InputError
from banditroute.service.auth import Forbidden, KeyChecker, Role, Unauthorized
from banditroute.service.config import MODEL_NAME, PRINTABLE, ServiceConfig
from banditroute.service.dashboard import Dashboard
from banditroute.service.fastpath import Batcher, FastLane, Lane, Serial, openapi
from banditroute.service.metrics import CONTENT_TYPE
from banditroute.service.router import Conflict, Gone, NotFound, Router
from banditroute.service.storage import StorageUnavailable, describe

log = logging.getLogger("banditroute.service")
T = TypeVar("T")

MAX_TEXT = 20_000
MAX_NAMES = 1024


# What storage can hold and a client may send: ids are signed 64-bit (BIGINT) and >= 1; names and
# request ids are printable (no NUL or other control characters, which PostgreSQL text refuses);
# model names also exclude "/" (a name must fit in the path of ``DELETE /v1/models/{name}``).
MAX_ID = 2**63 - 1
EventId = Annotated[int, Field(ge=1, le=MAX_ID)]
RequestId = Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=MODEL_NAME)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RouteBody(_Body):
    context: list[float] | None = None
    query: str | None = Field(None, max_length=MAX_TEXT)
    candidates: list[ModelName] | None = Field(None, max_length=MAX_NAMES)
    request_id: RequestId | None = None


class FeedbackBody(_Body):
    event_id: EventId
    reward: float
    cost: float | None = None


class SearchBody(_Body):
    query: str = Field(min_length=1, max_length=MAX_TEXT)
    k: int | None = Field(None, ge=1, le=1000)
    candidates: list[ModelName] | None = Field(None, max_length=MAX_NAMES)
    request_id: RequestId | None = None


class ModelBody(_Body):
    name: ModelName


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


PUBLIC_PATHS = frozenset({"/", "/healthz", "/metrics", "/openapi.json"})


def required_role(method: str, path: str) -> Role | None:
    """The role a request needs: none for the public paths, admin to add or retire models, else client."""
    if path in PUBLIC_PATHS:
        return None
    if (method == "POST" and path == "/v1/models") or (method == "DELETE" and path.startswith("/v1/models/")):
        return Role.ADMIN
    if method in ("POST", "DELETE") and path.startswith("/v1/gateway/upstreams"):  # the LLM gateway's admin API
        return Role.ADMIN
    return Role.CLIENT


class Authenticate:
    """Checks the API key before anything reads the body: without a valid key a request gets 401 or
    403 whatever its body holds (not a 422 that would tell an anonymous caller about the schema)."""

    def __init__(self, app: ASGIApp, keys: KeyChecker) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        role = required_role(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if role is not None:
            try:
                self.keys.require(Headers(scope=scope), role)
            except Unauthorized as exc:
                headers = {"WWW-Authenticate": "Bearer"}
                await JSONResponse({"detail": str(exc)}, status_code=401, headers=headers)(scope, receive, send)
                return
            except Forbidden as exc:
                await JSONResponse({"detail": str(exc)}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _problem(error: Any) -> str:
    """One validation problem as ``field: message``, without the submitted value or unknown key names."""
    if error["type"] == "extra_forbidden":
        return "body: unexpected field"
    return f"{'.'.join(str(p) for p in error['loc'][1:]) or 'body'}: {error['msg']}"


def _dashboard_html() -> str:
    return files("banditroute.service").joinpath("static/dashboard.html").read_text(encoding="utf-8")


def _on_sighup(keys: KeyChecker) -> Callable[[], None]:
    """Re-read the key file on ``SIGHUP`` (a failed read keeps the current keys); returns the undo.
    Only the main thread's loop can take signals: elsewhere (an in-process test client) this does nothing."""

    def reload() -> None:
        try:
            log.info("SIGHUP: key file re-read, %d keys accepted", keys.reload())
        except InputError as exc:
            log.error("SIGHUP: key file not reloaded, the current keys stay: %s", exc)

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError):
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


class Extension(Protocol):
    """What an extension's installer returns: started after the router, stopped before it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


Extend = Callable[[FastAPI, Router, Serial], Extension]


# The errors of the router's core and the status each answers (the module docstring's table).
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (InputError, 422),
    (NotFound, 404),
    (Gone, 410),
    (Conflict, 409),
)


def create_app(config: ServiceConfig, router: Router | None = None, extend: Extend | None = None) -> FastAPI:
    """The ASGI app of one router; starting the app (lifespan) starts the router.

    ``extend(app, router, serial)`` may add endpoints before the service's own (so it may also answer
    one of their paths) and returns an :class:`Extension`; ``serial`` runs a call on the writer thread.
    Layers above the service use it (the LLM gateway, :mod:`banditroute.gateway.routes`)."""
    router = router or Router(config)
    board = Dashboard(router)
    keys = KeyChecker(config.auth.api_key_hashes, config.auth.admin_key_hashes, config.auth.key_file)
    dashboard = _dashboard_html()

    writer: ThreadPoolExecutor | None = None  # the one thread that uses the log's connection

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal writer
        if not router.running:  # `banditroute serve` starts it before uvicorn, to report start-up errors plainly
            try:
                router.start()
            except Exception:
                router.stop()
                raise
        app.state.router = router
        board.start()
        hangup = _on_sighup(keys)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="banditroute-writer")
        if extension is not None:
            await extension.start()
        try:
            yield
        finally:
            if extension is not None:
                await extension.stop()
            hangup()
            writer.shutdown(wait=True)  # the calls already queued finish first
            board.stop()
            router.stop()

    async def serial(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call`` on the writer thread, after every call queued before it (module docstring)."""
        assert writer is not None, "the app is not started"
        return await asyncio.get_running_loop().run_in_executor(writer, functools.partial(call, *args, **kwargs))

    app = FastAPI(
        title="banditroute router",
        summary="Routes each request to one model and learns from delayed feedback.",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads its assets from a CDN; the OpenAPI schema stays at /openapi.json
        redoc_url=None,
    )
    extension = None if extend is None else extend(app, router, serial)

    def answer_error(method: str, path: str, exc: Exception) -> JSONResponse | None:
        """The answer to an error a request raised; ``None`` for a bug (the server's plain 500)."""
        if isinstance(exc, StorageUnavailable):
            router.metrics.storage_unavailable.inc()
            body = {"detail": str(exc), "retry_after_s": 1}  # nothing of the request was kept
            return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
        if isinstance(exc, sa.exc.SQLAlchemyError):
            log.error("%s %s: database error: %s", method, path, describe(exc))  # one line
            return JSONResponse({"detail": "internal storage error"}, status_code=500)
        if isinstance(exc, RequestValidationError):
            problems = "; ".join(_problem(e) for e in exc.errors()[:10])  # no echo: inputs stay out of responses
            return JSONResponse({"detail": problems}, status_code=422)
        if isinstance(exc, HTTPException):  # the body limit's 413 (FastAPI answers its own)
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        status = next((code for kind, code in ERROR_STATUS if isinstance(exc, kind)), None)
        return None if status is None else JSONResponse({"detail": str(exc)}, status_code=status)

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        response = answer_error(request.method, request.url.path, exc)
        assert response is not None
        return response

    for kind in (
        *(kind for kind, _ in ERROR_STATUS),
        StorageUnavailable,
        sa.exc.SQLAlchemyError,
        RequestValidationError,
    ):
        app.add_exception_handler(kind, handle)

    routes = Batcher(config.router.route_batch_window_ms / 1e3, serial, router.route_batch)
    feedbacks = Batcher(0.0, serial, router.feedback_batch)

    async def route(body: RouteBody) -> dict[str, Any]:
        context: Any = body.context
        if body.query is not None and body.context is None:
            context = await run_in_threadpool(router.embed, body.query)
        elif body.query is not None:
            raise InputError("send exactly one of 'context' (a vector) and 'query' (text)")
        return await routes.submit({"context": context, "candidates": body.candidates, "request_id": body.request_id})

    async def feedback(body: FeedbackBody) -> dict[str, Any]:
        return await feedbacks.submit({"event_id": body.event_id, "reward": body.reward, "cost": body.cost})

    lanes = {
        "/v1/route": Lane(
            RouteBody, route, "Route a request to one model", "`{event_id, model, probs, policy_version}`"
        ),
        "/v1/feedback": Lane(FeedbackBody, feedback, "Report the reward of a routed event", "accepted or duplicate"),
    }
    app.add_middleware(FastLane, lanes=lanes, answer_error=answer_error)  # inside the key check and body limit
    app.openapi = functools.partial(openapi, app, lanes)  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)
    app.add_middleware(Authenticate, keys=keys)  # outermost: before the body is read

    @app.post("/v1/search")
    async def search(body: SearchBody) -> JSONResponse:
        if router.retrieval is None:
            raise NotFound("retrieval mode is not configured ([retrieval] in the router config)")
        x = await run_in_threadpool(router.embed, body.query)
        out, k = await serial(router.search_decide, x, k=body.k, candidates=body.candidates, request_id=body.request_id)
        out["items"] = await run_in_threadpool(router.search_items, out["model"], body.query, k)
        return JSONResponse(out)

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({"models": router.list_models()})

    @app.post("/v1/models", status_code=201)
    async def add_model(body: ModelBody) -> JSONResponse:
        return JSONResponse(await serial(router.add_model, body.name), status_code=201)

    @app.delete("/v1/models/{name}")
    async def retire_model(name: str) -> JSONResponse:
        return JSONResponse(await serial(router.retire_model, name))

    @app.get("/v1/stats")
    async def stats() -> JSONResponse:
        return JSONResponse(await serial(board.stats))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        state = await run_in_threadpool(router.health)
        return JSONResponse(state, status_code=200 if state["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(router.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(dashboard)

    return app
