"""The gateway's HTTP endpoints, added to the router service's app (:func:`install`).

=========================================  =======  =================================================
endpoint                                   key      does
=========================================  =======  =================================================
``POST /v1/chat/completions``              client   OpenAI chat completion, streaming or not; the
                                                    answer's ``banditroute`` field (and headers
                                                    ``x-banditroute-event-id`` / ``-upstream``) name
                                                    the decision and the upstream that answered
``POST /v1/gateway/upstreams``             admin    add an upstream (an :class:`UpstreamConfig`)
``DELETE /v1/gateway/upstreams/{name}``    admin    retire an upstream
``GET /v1/gateway/usage``                  client   the caller key's budgets and spend this day / month
=========================================  =======  =================================================

``GET /v1/models`` answers in OpenAI's shape (``data``: ``router``, the profiles, the active
upstreams) and also with the service's model records (``models``). Errors
of the chat endpoint are OpenAI-shaped, ``{"error": {"message", "type", "code"}}``; invalid
bodies get the service's 422 (nothing logged).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from banditroute.gateway.config import GatewayConfig, UpstreamConfig
from banditroute.gateway.core import Gateway, GatewayError, Stream
from banditroute.service.app import Extend
from banditroute.service.auth import KeyChecker, hash_key
from banditroute.service.fastpath import Serial
from banditroute.service.router import Router

MAX_MESSAGES = 4096
MAX_TEXT = 1_000_000


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI's many optional parameters pass through


class TextPart(_Open):
    type: StrictStr
    text: Annotated[str, Field(max_length=MAX_TEXT)] | None = None


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str, Field(max_length=MAX_TEXT)] | list[TextPart] | None = None

    @model_validator(mode="after")
    def _content(self) -> Message:
        if self.content is None and self.role != "assistant":  # an assistant turn may hold only tool calls
            raise ValueError("content is required for this role")
        return self


class StreamOptions(_Open):
    include_usage: StrictBool = False


class ChatRequest(_Open):
    model: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    max_cost: Annotated[float, Field(gt=0, le=1e9)] | None = None  # banditroute's extension


class EndingStreamingResponse(StreamingResponse):
    """A streaming response that ends its :class:`Stream` however the request ends: finished, client gone
    (even before the first byte, when the stream was never iterated), error or cancellation."""

    def __init__(self, stream: Stream, headers: dict[str, str]) -> None:
        super().__init__(stream, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()


def error_response(exc: GatewayError) -> JSONResponse:
    kind = "invalid_request_error" if exc.status < 500 and exc.status != 429 else "api_error"
    body = {"error": {"message": str(exc), "type": kind, "code": exc.code}, "detail": str(exc)}
    return JSONResponse(body, status_code=exc.status)


def extension(config: GatewayConfig) -> Extend:
    """The installer :func:`banditroute.service.app.create_app` takes: a :class:`Gateway` on the router,
    its endpoints added to the app (``banditroute serve`` passes it when the config has ``[gateway]``)."""

    def extend(app: FastAPI, router: Router, serial: Serial) -> Gateway:
        gateway = Gateway(config, router, serial)
        install(app, gateway, router)
        return gateway

    return extend


def install(app: FastAPI, gateway: Gateway, router: Router) -> None:
    @app.get("/v1/models")
    async def models() -> JSONResponse:  # registered before the service's own, so it answers
        return JSONResponse({"object": "list", "data": gateway.models(), "models": router.list_models()})

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Response:
        key = KeyChecker.key_from_headers(request.headers)
        raw: dict[str, Any] = body.model_dump(exclude_none=True)
        reply = await gateway.chat(raw, None if key is None else hash_key(key))
        if isinstance(reply.body, Stream):
            return EndingStreamingResponse(reply.body, reply.headers)
        after = None if reply.sent is None else BackgroundTask(reply.sent)
        return JSONResponse(reply.body, headers=reply.headers, background=after)

    @app.get("/v1/gateway/usage")
    async def usage(request: Request) -> JSONResponse:
        key = KeyChecker.key_from_headers(request.headers)
        return JSONResponse(gateway.usage(None if key is None else hash_key(key)))

    @app.post("/v1/gateway/upstreams", status_code=201)
    async def add_upstream(body: UpstreamConfig) -> JSONResponse:
        return JSONResponse(await gateway.add_upstream(body), status_code=201)

    @app.delete("/v1/gateway/upstreams/{name}")
    async def retire_upstream(name: str) -> JSONResponse:
        return JSONResponse(await gateway.retire_upstream(name))
