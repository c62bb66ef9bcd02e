"""A real OpenAI-compatible upstream for the gateway's tests: ``python fake_upstream.py --port P``.

It answers ``POST /v1/chat/completions`` as the LLM the request names (an LLM of the llmrouter
table) would in our tests: a deterministic text per (model, prompt) — ``"<model> answers: <words
of the prompt>"`` padded to a length that depends on the model — with token counts of
``ceil(characters / 4)`` per message (:func:`banditroute.llm.datasets.estimate_tokens`, the counts
the table's costs use), so one process can play every upstream. Streams go
out in chunks of a few characters, usage in a last chunk when asked. ``POST /control`` with
``{"mode": ...}`` makes it answer ``"ok"``, ``"429"``, ``"500"``, ``"hang"`` (never answer),
``"drop"`` (stream half the chunks, then cut the connection), ``"slow"`` (0.2 s between chunks) or
``"no_usage"`` (omit usage), and
``{"delay_s": x}`` wait ``x`` s before answering. ``GET /control`` tells how many requests came.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK_CHARS = 12


def tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def answer_text(model: str, prompt: str) -> str:
    words = prompt.split()[:12]
    base = f"{model} answers: {' '.join(words)}."
    return base + " detail" * (len(model) % 5 + 2)


def make_app() -> Starlette:
    state: dict = {"mode": "ok", "delay_s": 0.0, "requests": 0, "last_body": None}

    async def control(request: Request) -> Response:
        if request.method == "POST":
            state.update(await request.json())
        return JSONResponse({k: state[k] for k in ("mode", "delay_s", "requests")} | {"last_body": state["last_body"]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        state["requests"] += 1
        state["last_body"] = body
        mode = state["mode"]
        if state["delay_s"]:
            await asyncio.sleep(state["delay_s"])
        if mode == "429":
            return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429)
        if mode == "500":
            return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
        if mode == "hang":
            await asyncio.sleep(3600)
        prompt = next((m.get("content") or "" for m in reversed(body["messages"]) if m["role"] == "user"), "")
        text = answer_text(body["model"], prompt if isinstance(prompt, str) else json.dumps(prompt))
        pt = sum(tokens(m.get("content") if isinstance(m.get("content"), str) else "") for m in body["messages"])
        usage = {"prompt_tokens": pt, "completion_tokens": tokens(text), "total_tokens": pt + tokens(text)}
        cid, created = f"chatcmpl-{os.getpid()}-{state['requests']}", int(time.time())
        if not body.get("stream"):
            out = {
                "id": cid, "object": "chat.completion", "created": created, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            }  # fmt: skip
            if mode != "no_usage":
                out["usage"] = usage
            return JSONResponse(out)
        pieces = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            ev = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return b"data: " + json.dumps(ev).encode() + b"\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            for i, piece in enumerate(pieces):
                if mode == "drop" and i >= len(pieces) // 2:
                    await asyncio.sleep(0.05)
                    raise RuntimeError("dropped on purpose")  # uvicorn cuts the connection mid-body
                yield chunk({"content": piece})
                await asyncio.sleep(0.2 if mode == "slow" else 0)
            yield chunk({}, "stop")
            if (body.get("stream_options") or {}).get("include_usage") and mode != "no_usage":
                ev = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                      "choices": [], "usage": usage}  # fmt: skip
                yield b"data: " + json.dumps(ev).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/control", control, methods=["GET", "POST"])])  # fmt: skip


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(make_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
