"""The gateway's request path: resolve the model, admit upstreams, decide, call, fall back, book.

A chat request names ``router`` (every active upstream), a profile (``router-<name>``: its
upstreams, ``max_cost`` and budget) or one upstream (passed through: logged as a decision of kind
``forced`` among that upstream alone, so with probability 1). The allowed upstreams are those of
the model whose cost bound fits ``max_cost`` and the key's and profile's budgets
(:mod:`~banditroute.gateway.budget`) and whose circuit breaker admits a call
(:mod:`~banditroute.gateway.breaker`). Then up to ``max_attempts`` times: the router decides
among the allowed upstreams (one logged decision per attempt, with its full probability vector:
kind ``chat``, then ``fallback``), the chosen upstream is called, and on failure it leaves the
allowed set and the next attempt draws from the policy's probabilities over the rest. Each
attempt's outcome, usage and cost go to the ``gateway_attempts`` table after the answer (in groups,
every :data:`FLUSH_S`: one commit for many requests); a failed
attempt is also learned (lowest reward) if ``learn_failures``. A decision is committed before its
upstream is called, so a crash mid-call or mid-stream leaves it in the log (docs/gateway.md).
A request's budget holds are given back, and its cost booked, however it ends: answered, failed,
or a stream whose client went away (even before its first byte: :meth:`Stream.aclose`). Once an
answer was sent, the optional reward hook (:mod:`~banditroute.gateway.reward_hook`) scores it.

In a router worker (``serve --workers N``) the gateway also follows the other workers through the log
every ``[cluster] poll_interval_s``: it books the costs they committed
(:mod:`~banditroute.gateway.shared`) and connects the upstreams they added (their configs are in the
log's meta, :data:`ADDED_UPSTREAM`) and drops those they retired. Budget holds, circuit breakers
and upstream connection limits stay per process (docs/gateway.md, "Several workers").
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
from starlette.concurrency import run_in_threadpool

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError
from banditroute.data.cache import CachedEmbedder, EmbeddingCache
from banditroute.gateway.breaker import OPEN, CircuitBreaker
from banditroute.gateway.budget import Budgets, BudgetSpent
from banditroute.gateway.config import ROUTER_MODEL, Budget, GatewayConfig, ProfileConfig, UpstreamConfig
from banditroute.gateway.features import RequestFeaturizer, load_featurizer, message_text, prompt_hash, prompt_tokens
from banditroute.gateway.metrics import GatewayMetrics
from banditroute.gateway.reward_hook import Completion, RewardHook
from banditroute.gateway.shared import SpendReader
from banditroute.gateway.upstream import Upstream, UpstreamFailed, UpstreamRejected
from banditroute.llm.datasets import estimate_tokens
from banditroute.service.components import build_embedder
from banditroute.service.fastpath import Batcher, Serial
from banditroute.service.router import Conflict, NotFound, Router
from banditroute.service.storage import DecisionRecord, Storage, StorageUnavailable

log = logging.getLogger("banditroute.gateway")
# meta keys of the upstreams added at run time: one per upstream (its config as JSON), so that two
# workers adding two upstreams at the same moment cannot overwrite each other's; logs written before
# that keep the JSON list of configs under ADDED_UPSTREAMS_BEFORE, still read
ADDED_UPSTREAM = "gateway.upstream."
ADDED_UPSTREAMS_BEFORE = "gateway.added_upstreams"
FLUSH_S = 0.05  # attempt rows are written in groups at this interval


class GatewayError(Exception):
    """An error answered in OpenAI's shape, ``{"error": {"message", "type", "code"}}``."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Attempt:
    rec: DecisionRecord
    upstream: str
    outcome: str


class Stream:
    """A streamed answer: iterate it for its SSE bytes; :meth:`aclose` ends it however the request ended
    (the upstream closed, the budget holds given back, the attempt booked), also when it was never
    iterated — a client gone before the first byte."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], end: Callable[[], Awaitable[Any]]) -> None:
        self.chunks = chunks
        self.end = end

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks

    async def aclose(self) -> None:
        await self.chunks.aclose()
        await self.end()  # does nothing when the relay already ended the stream


@dataclass
class Reply:
    """What :meth:`Gateway.chat` answers: a JSON completion or a :class:`Stream`, headers, and what to
    do once a JSON answer was sent (a stream does it itself after its last byte)."""

    body: dict[str, Any] | Stream
    headers: dict[str, str]
    sent: Callable[[], Awaitable[None]] | None = None


def stored_configs(store: Storage) -> list[dict[str, Any]]:
    """The configs of the upstreams added at run time, as the log holds them (:data:`ADDED_UPSTREAM`)."""
    before = json.loads(store.get_meta(ADDED_UPSTREAMS_BEFORE) or "[]")
    return [*before, *(json.loads(value) for value in store.meta_under(ADDED_UPSTREAM).values())]


class Gateway:
    """The gateway of one router; ``serial`` runs a call on the app's writer thread."""

    def __init__(self, config: GatewayConfig, router: Router, serial: Serial) -> None:
        self.config = config
        self.router = router
        self.serial = serial
        # decisions that queue for the writer thread are taken together: one act_batch, one commit
        self._decisions = Batcher(0.0, serial, self._decide_group)
        self.configs: dict[str, UpstreamConfig] = {u.name: u for u in config.upstreams}
        self.upstreams: dict[str, Upstream] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.profiles: dict[str, ProfileConfig] = {p.name: p for p in config.profiles}
        self.key_budgets: dict[str, Budget] = {b.key_hash: b for b in config.budgets}
        self.budgets = Budgets()
        self.metrics = GatewayMetrics(router.metrics.registry)
        self._tasks: set[asyncio.Task[None]] = set()
        self._rows: list[dict[str, Any]] = []  # attempt rows not yet written
        self._flusher: asyncio.Task[None] | None = None
        self._embed_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="banditroute-embed")
        self.shared: SpendReader | None = None  # a router worker's view of the other workers' spending
        self._follower: asyncio.Task[None] | None = None  # a router worker follows the others (module docstring)
        self._log_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="banditroute-gateway-log")
        self._log_store: Storage | None = None  # the follower's connection, used on _log_thread
        self.hook = None
        if config.reward_hook is not None:
            self.hook = RewardHook(config.reward_hook, self.feedback, self.metrics.reward_hook)

    async def feedback(self, event_id: int, reward: float) -> dict[str, Any]:
        """Feedback for a decision, by the path of ``POST /v1/feedback`` (validation, at most once, the log)."""
        return await self.serial(self.router.feedback, event_id, reward, None)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        featurizer = None if self.config.features is None else load_featurizer(self.config.features)
        embedder = await run_in_threadpool(build_embedder, self.config.embedder)
        if self.config.embed_disk_cache:
            embedder = CachedEmbedder(embedder, EmbeddingCache())
        self.features = RequestFeaturizer(embedder, featurizer, self.config.embed_cache)
        if self.features.dim != self.router.dim:
            raise InputError(f"router.dim = {self.router.dim} but the gateway's features have {self.features.dim}")
        self._add_configs(await self.serial(stored_configs, self.router.storage))
        for m in self.router.models:
            if m.active and m.name in self.configs:
                self._connect(self.configs[m.name])
        if self.router.role == "worker":  # it follows the other workers through the log (module docstring)
            self._log_store = self.router.storage.clone()
        await self._restore_spending()
        self._flusher = asyncio.ensure_future(self._flush_loop())
        if self._log_store is not None:
            self._follower = asyncio.ensure_future(self._follow_loop(self._log_store))

    def _add_configs(self, stored: list[dict[str, Any]]) -> None:
        """The configs of upstreams added at run time, as stored in the log (:func:`stored_configs`)."""
        for raw in stored:
            self.configs.setdefault(raw["name"], UpstreamConfig.model_validate(raw))

    async def _restore_spending(self) -> None:
        """Book again the costs of this month's answered attempts (budgets live in memory); a router
        worker with budgets then follows the log from there (:mod:`~banditroute.gateway.shared`)."""
        t = time.gmtime()
        month_start = float(calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0)))
        budgeted = self.key_budgets or any(p.budget is not None for p in self.profiles.values())
        if self._log_store is not None and budgeted:
            self.shared = SpendReader(self._log_store)
            rows = await self._on_log_thread(self.shared.restore, month_start, time.time())
        else:
            rows = await self.serial(self.router.storage.attempts, month_start)
        self._charge_rows(rows)

    def _charge_rows(self, rows: list[dict[str, Any]]) -> None:
        """Book the costs of attempt rows read from the log into the budgets of their key and profile."""
        for row in rows:
            if row["cost"] is None:
                continue
            profile = self.profiles.get(row["profile"] or "")
            for owner, budget in self._owners(profile, row["key_hash"]):
                self.budgets.charge(owner, budget, row["cost"], at=row["created_at"])

    async def _on_log_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the thread that reads the log for the other workers' changes."""
        return await asyncio.get_running_loop().run_in_executor(self._log_thread, fn, *args)

    async def _follow_loop(self, store: Storage) -> None:
        """A router worker's view of the others, every ``[cluster] poll_interval_s`` (module docstring)."""
        interval = self.router.config.poll_interval_s()
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                if self.shared is not None:
                    rows = await self._on_log_thread(self.shared.read, time.time())
                    self._charge_rows(self.shared.theirs(rows, time.time()))
                await self._sync_upstreams(store)
            except StorageUnavailable as exc:  # retried at the next tick: nothing read is lost
                if not failing:
                    log.warning("gateway: reading the other workers' changes failed: %s; retrying", exc)
                failing = True
                continue
            except Exception:
                log.exception("gateway: following the other workers failed; retrying")
                continue
            failing = False

    async def _sync_upstreams(self, store: Storage) -> None:
        """Connect the upstreams other workers added and drop those they retired: the router merges the
        log's models (``router.models``); the configs of added ones are in the log's meta."""
        active = {m.name for m in self.router.models if m.active}
        for name in [n for n in self.upstreams if n not in active]:
            self._spawn(self.upstreams.pop(name).aclose())
        missing = [n for n in active if n not in self.upstreams]
        if any(n not in self.configs for n in missing):
            self._add_configs(await self._on_log_thread(stored_configs, store))
        for name in missing:
            if name in self.configs:
                self._connect(self.configs[name])

    def usage(self, key_hash: str | None) -> dict[str, Any]:
        """The caller's budgets, what was spent of them in the current periods, and what requests in
        flight hold (counted as spent until they are settled)."""
        out = {}
        for owner, budget in self._owners(None, key_hash):
            spent, held = self.budgets.spent(owner, budget), self.budgets.held(owner)
            out[owner.split(":")[0]] = {
                k: {"budget": getattr(budget, k), "spent": v, "held": held} for k, v in spent.items()
            }
        return out

    def _connect(self, config: UpstreamConfig) -> None:
        if config.name in self.upstreams:  # a worker's follower connected it while it was being added
            return
        self.upstreams[config.name] = Upstream(config)
        breaker = CircuitBreaker(self.config.breaker_failures, self.config.breaker_cooldown_s)
        self.breakers[config.name] = breaker
        self.metrics.breaker_open.labels(config.name).set_function(lambda: float(breaker.state == OPEN))

    async def stop(self) -> None:
        if self.hook is not None:
            await self.hook.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in (self._follower, self._flusher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._flush()
        for up in self.upstreams.values():
            await up.aclose()
        self._embed_thread.shutdown(wait=True)
        self._log_thread.shutdown(wait=True)
        if self._log_store is not None:
            self._log_store.close()

    # ------------------------------------------------------------------ admin
    async def add_upstream(self, config: UpstreamConfig) -> dict[str, Any]:
        """Add an upstream at run time: a new arm in the next free policy slot (cold start)."""
        if config.name in self.configs:
            raise Conflict("an upstream of this name exists (names are never reused)")
        out = await self.serial(self.router.add_model, config.name)
        stored = json.dumps(config.model_dump(mode="json"))
        await self.serial(self.router.storage.set_meta, ADDED_UPSTREAM + config.name, stored)
        self.configs[config.name] = config
        self._connect(config)
        return out

    async def retire_upstream(self, name: str) -> dict[str, Any]:
        """Retire an upstream: its arm is masked from every later decision; its slot stays in the log."""
        if name not in self.upstreams:
            raise NotFound("unknown or retired upstream")
        out = await self.serial(self.router.retire_model, name)
        up = self.upstreams.pop(name, None)  # None: a worker's follower dropped it meanwhile
        if up is not None:
            self._spawn(up.aclose())
        return out

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models`` in OpenAI's shape: ``router``, the profiles, then each active upstream."""
        now = int(self.router.started_at)
        ids = [ROUTER_MODEL, *self.profiles, *self.upstreams]
        return [{"id": i, "object": "model", "created": now, "owned_by": "banditroute"} for i in ids]

    # ------------------------------------------------------------------ admission
    def _slots(self) -> dict[str, int]:
        return {m.name: m.slot for m in self.router.models if m.active and m.name in self.upstreams}

    def _resolve(self, model: str) -> tuple[list[str], ProfileConfig | None, bool]:
        """``(upstream names, profile, forced)`` for the request's ``model``."""
        active = self._slots()
        if model == ROUTER_MODEL:
            return list(active), None, False
        profile = self.profiles.get(model)
        if profile is not None:
            names = [n for n in (profile.upstreams or active) if n in active]
            return names, profile, False
        if model in active:
            return [model], None, True
        raise GatewayError(404, "unknown model: use 'router', a router profile or an upstream of GET /v1/models",
                           "model_not_found")  # fmt: skip

    def _allowed(
        self, names: list[str], profile: ProfileConfig | None, bounds: FloatArray, key_hash: str | None,
        max_cost: float | None, holds: list[tuple[str, Budget, float]],
    ) -> np.ndarray:  # fmt: skip
        """The upstreams this request may use; budget holds taken on the way are appended to ``holds``
        (the caller settles them, also when this raises)."""
        slots = self._slots()
        mask = np.zeros(self.router.capacity, dtype=bool)
        mask[[slots[n] for n in names]] = True
        limits = [c for c in (max_cost, profile.max_cost if profile else None) if c is not None]
        if limits:
            mask &= bounds <= min(limits)
            if not mask.any():
                raise GatewayError(422, "no upstream of this model can answer within max_cost", "max_cost")
        for owner, budget in self._owners(profile, key_hash):
            masked = np.where(mask, bounds, np.inf)
            try:
                admitted, held = self.budgets.admit(owner, budget, masked)
            except BudgetSpent as exc:
                self.metrics.budget_refusals.inc()
                raise GatewayError(429, str(exc), "budget_exceeded") from None
            holds.append((owner, budget, held))
            mask &= admitted
        names_by_slot = {s: n for n, s in slots.items()}
        for s in np.flatnonzero(mask):
            if not self.breakers[names_by_slot[int(s)]].available():
                mask[s] = False
        if not mask.any():
            raise GatewayError(503, "every upstream this request may use is unavailable (circuit open)",
                               "upstreams_unavailable")  # fmt: skip
        return mask

    def _owners(self, profile: ProfileConfig | None, key_hash: str | None) -> list[tuple[str, Budget]]:
        out = []
        key_budget = self.key_budgets.get(key_hash or "") or self.key_budgets.get("*")
        if key_budget is not None:
            out.append((f"key:{key_hash}", key_budget))
        if profile is not None and profile.budget is not None:
            out.append((f"profile:{profile.name}", profile.budget))
        return out

    def _bounds(self, body: dict[str, Any], n_prompt: int) -> FloatArray:
        """Cost bound per slot: local prompt tokens × input price + max output tokens × output price."""
        bounds = np.full(self.router.capacity, np.inf)
        asked = [v for v in (body.get("max_tokens"), body.get("max_completion_tokens")) if v is not None]
        for name, slot in self._slots().items():
            up = self.upstreams[name]
            out_tokens = min([up.config.max_output_tokens, *asked])
            bounds[slot] = up.cost(n_prompt, out_tokens)
        return bounds

    # ------------------------------------------------------------------ the request path
    async def chat(self, body: dict[str, Any], key_hash: str | None) -> Reply:
        """Answer one chat request: a JSON completion or a stream of SSE bytes, with headers."""
        messages: list[dict[str, Any]] = body["messages"]
        names, profile, forced = self._resolve(body["model"])
        if not names:
            raise GatewayError(503, "this profile has no active upstream", "upstreams_unavailable")
        n_prompt = prompt_tokens(messages)
        bounds = self._bounds(body, n_prompt)
        max_cost = body.pop("max_cost", None)
        holds: list[tuple[str, Budget, float]] = []
        try:
            mask = self._allowed(names, profile, bounds, key_hash, max_cost, holds)
            ctx = _Context(key_hash, prompt_hash(messages), n_prompt, profile,
                           messages if self.config.log_prompts else None, holds, messages)  # fmt: skip
            return await self._attempts(body, messages, mask, forced, ctx)
        except BaseException:
            self._settle(holds, None)  # nothing answered: nothing paid, the holds go back
            raise

    async def _attempts(
        self, body: dict[str, Any], messages: list[dict[str, Any]], mask: np.ndarray, forced: bool, ctx: _Context
    ) -> Reply:
        """Decide, call, fall back (module docstring)."""
        # one embedding thread: embedders (and the disk cache's SQLite connection) stay on one thread
        x = await asyncio.get_running_loop().run_in_executor(self._embed_thread, self.features.context, messages)
        stream = bool(body.get("stream"))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        upstream_body = {k: v for k, v in body.items() if k != "model"}
        if stream:
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        attempts: list[Attempt] = []
        slots = self._slots()
        names_by_slot = {s: n for n, s in slots.items()}
        for i in range(1 if forced else self.config.max_attempts):
            kind = "forced" if forced else ("chat" if i == 0 else "fallback")
            rec: DecisionRecord = await self._decisions.submit({"x": x, "allowed": mask.copy(), "kind": kind})
            name = names_by_slot[rec.action]
            up, breaker = self.upstreams[name], self.breakers[name]
            breaker.started()
            start = time.perf_counter()
            try:
                if stream:
                    response = await up.open_stream(upstream_body)
                else:
                    answer = await up.complete(upstream_body)
            except UpstreamFailed as exc:
                breaker.failed()
                self.metrics.requests.labels(name, exc.cause).inc()
                self.metrics.fallbacks.labels(name, exc.cause).inc()
                attempts.append(Attempt(rec, name, exc.cause))
                self._record(ctx, rec, name, exc.cause, None, None, None, time.perf_counter() - start)
                if self.config.learn_failures:
                    await self.serial(self.router.feedback, rec.event_id, self.router.reward_range[0])
                mask[rec.action] = False
                mask &= np.array([s not in names_by_slot or self.breakers[names_by_slot[s]].available()
                                  for s in range(mask.size)])  # fmt: skip
                if not mask.any():
                    break
                continue
            except UpstreamRejected as exc:
                breaker.succeeded()  # the upstream works; the request was wrong for it
                self.metrics.requests.labels(name, "rejected").inc()
                self._record(ctx, rec, name, "rejected", None, None, None, time.perf_counter() - start)
                raise GatewayError(exc.status, _upstream_message(exc.body), "upstream_rejected") from None
            except BaseException:  # cancelled mid-call: no verdict on the upstream
                breaker.abandoned()
                raise
            attempts.append(Attempt(rec, name, "ok"))
            headers = {"x-banditroute-event-id": str(rec.event_id), "x-banditroute-upstream": name}
            info = self._info(rec, name, attempts)
            if stream:
                s = _Streamed(ctx, rec, up, breaker, response, start)
                relay = Stream(self._relay(s, include_usage, info), functools.partial(self._end_stream, s))
                return Reply(relay, headers)
            breaker.succeeded()
            answer, done = self._finish(ctx, rec, up, answer, info, start)
            return Reply(answer, headers, functools.partial(self._score, done))
        causes = ", ".join(f"{a.upstream}: {a.outcome}" for a in attempts)
        raise GatewayError(502, f"every attempt failed ({causes})", "upstreams_failed")

    def _decide_group(self, requests: list[dict[str, Any]]) -> list[DecisionRecord | InputError]:
        """The decisions of ``requests`` (``x``, ``allowed``, ``kind``), on the writer thread."""
        xs, masks, kinds = ([r[k] for r in requests] for k in ("x", "allowed", "kind"))
        return self.router.decide_batch(xs, masks, kinds, [None] * len(requests))

    def _info(self, rec: DecisionRecord, name: str, attempts: list[Attempt]) -> dict[str, Any]:
        return {
            "event_id": rec.event_id,
            "upstream": name,
            "probability": float(rec.probs[rec.action]),
            "attempts": [{"event_id": a.rec.event_id, "upstream": a.upstream, "outcome": a.outcome} for a in attempts],
        }

    def _usage(self, ctx: _Context, usage: Any, completion: str) -> tuple[int, int]:
        """``(prompt, completion)`` tokens: the upstream's usage, else counted locally."""
        if isinstance(usage, dict):
            p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(p, int) and isinstance(c, int) and p >= 0 and c >= 0:
                return p, c
        return ctx.n_prompt, estimate_tokens(completion) if completion else 0

    def _book(
        self, ctx: _Context, name: str, up: Upstream, p: int, c: int, seconds: float, outcome: str = "ok"
    ) -> float:
        cost = up.cost(p, c)
        self._settle(ctx.holds, cost)
        self.metrics.answered(name, p, c, cost, seconds, outcome)
        return cost

    def _settle(self, holds: list[tuple[str, Budget, float]], cost: float | None) -> None:
        """Release the request's budget holds and book its cost, once (later calls find no holds)."""
        while holds:
            owner, budget, held = holds.pop()
            self.budgets.settle(owner, budget, held, cost)

    def _finish(
        self, ctx: _Context, rec: DecisionRecord, up: Upstream, answer: dict[str, Any], info: dict[str, Any],
        start: float,
    ) -> tuple[dict[str, Any], Completion]:  # fmt: skip
        """The answer as the client gets it (usage, ``banditroute`` field), booked; and what the hook sees."""
        name = info["upstream"]
        text = "".join(message_text((ch.get("message") or {}).get("content")) for ch in answer["choices"]
                       if isinstance(ch, dict))  # fmt: skip
        p, c = self._usage(ctx, answer.get("usage"), text)
        seconds = time.perf_counter() - start
        cost = self._book(ctx, name, up, p, c, seconds)
        answer.setdefault("usage", {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
        answer["banditroute"] = {**info, "cost": cost}
        self._record(ctx, rec, name, "ok", p, c, cost, seconds, text)
        return answer, self._completion(ctx, rec, name, text, p, c, cost)

    async def _relay(self, s: _Streamed, include_usage: bool, info: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """The upstream's stream, chunk by chunk; usage (the upstream's, else counted) in a last chunk
        when the client asked for it; a drop mid-stream ends the stream with an error event. However
        it ends, :meth:`_end_stream` books it; once its last byte was sent, the reward hook runs."""
        name = s.up.config.name
        first: dict[str, Any] = {}
        try:
            async for event, data in s.up.events(s.response):
                if event.get("usage"):  # the gateway's own usage chunk replaces the upstream's (below)
                    s.usage = event.pop("usage")
                    if not event.get("choices"):
                        continue
                    data = json.dumps(event, separators=(",", ":"))
                for ch in event.get("choices") or ():
                    delta = ch.get("delta") if isinstance(ch, dict) else None
                    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                        s.parts.append(delta["content"])
                if not first:
                    first = event
                    self.metrics.ttft.labels(name).observe(time.perf_counter() - s.start)
                yield b"data: " + data.encode() + b"\n\n"  # as the upstream sent it
            s.outcome = "ok"
        except UpstreamFailed as exc:
            s.outcome = "dropped"
            error = {"error": {"message": f"the upstream failed mid-stream ({exc.cause})", "type": "upstream_error",
                               "code": "upstream_dropped"}}  # fmt: skip
            yield b"data: " + json.dumps(error).encode() + b"\n\n"
        finally:
            done = await self._end_stream(s)
        if done is None:
            return
        if include_usage:
            p, c = done.usage["prompt_tokens"], done.usage["completion_tokens"]
            last = {
                "id": first.get("id", f"chatcmpl-{uuid.uuid4().hex}"), "object": "chat.completion.chunk",
                "created": first.get("created", int(time.time())), "model": first.get("model", s.up.config.model),
                "choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
                "banditroute": {**info, "cost": done.cost},
            }  # fmt: skip
            yield b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
        await self._score(done)  # resumed after [DONE] was sent

    async def _end_stream(self, s: _Streamed) -> Completion | None:
        """End a relayed stream once: book what was streamed (paid for, whatever the outcome), record the
        attempt (``ok``, ``dropped`` by the upstream, ``cancelled`` by the client), give the budget holds
        back and close the upstream's response (shielded: a cancelled request still closes it). The
        completion when the stream ended well, else ``None``."""
        if s.ended:
            return None
        s.ended = True
        {"ok": s.breaker.succeeded, "dropped": s.breaker.failed}.get(s.outcome, s.breaker.abandoned)()
        name, text = s.up.config.name, "".join(s.parts)
        p, c = self._usage(s.ctx, s.usage if s.outcome == "ok" else None, text)
        seconds = time.perf_counter() - s.start
        cost = self._book(s.ctx, name, s.up, p, c, seconds, s.outcome)
        self._record(s.ctx, s.rec, name, s.outcome, p, c, cost, seconds, text)
        with anyio.CancelScope(shield=True):
            await s.up.close_stream(s.response)
        return self._completion(s.ctx, s.rec, name, text, p, c, cost) if s.outcome == "ok" else None

    def _completion(
        self, ctx: _Context, rec: DecisionRecord, name: str, text: str, p: int, c: int, cost: float
    ) -> Completion:
        profile = None if ctx.profile is None else ctx.profile.name
        usage = {"prompt_tokens": p, "completion_tokens": c}
        return Completion(rec.event_id, ctx.request, text, name, usage, cost, profile)

    async def _score(self, done: Completion) -> None:
        """The answer ``done`` was sent: the reward hook (if any) scores it in the background."""
        if self.hook is not None:
            self.hook.submit(done)

    # ------------------------------------------------------------------ the attempts table
    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _record(
        self, ctx: _Context, rec: DecisionRecord, name: str, outcome: str, p: int | None, c: int | None,
        cost: float | None, seconds: float, completion: str | None = None,
    ) -> None:  # fmt: skip
        self._rows.append({
            "event_id": rec.event_id, "created_at": rec.created_at, "key_hash": ctx.key_hash, "upstream": name,
            "profile": None if ctx.profile is None else ctx.profile.name,
            "outcome": outcome, "prompt_sha256": ctx.prompt_sha256, "prompt_tokens": p, "completion_tokens": c,
            "cost": cost, "latency_s": seconds,
            "prompt": None if ctx.messages is None else json.dumps(ctx.messages, ensure_ascii=False),
            "completion": completion if ctx.messages is not None else None,
        })  # fmt: skip
        if self.shared is not None:  # booked here: not to be booked again when the row is read back
            self.shared.mine(rec.event_id, time.time())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            await self.serial(self.router.storage.insert_attempts, rows)
        except StorageUnavailable as exc:  # the decisions are logged; only these accounting rows are lost
            log.warning("gateway: %d attempt rows not recorded: %s", len(rows), exc)


@dataclass(frozen=True)
class _Context:
    key_hash: str | None
    prompt_sha256: str
    n_prompt: int
    profile: ProfileConfig | None
    messages: list[dict[str, Any]] | None  # only with log_prompts
    holds: list[tuple[str, Budget, float]]  # budget held until the answer is booked (emptied then)
    request: list[dict[str, Any]]  # the request's messages, in memory only: for the reward hook


@dataclass
class _Streamed:
    """A stream being relayed: what came so far, and whether it was ended (booked, closed)."""

    ctx: _Context
    rec: DecisionRecord
    up: Upstream
    breaker: CircuitBreaker
    response: Any
    start: float
    parts: list[str] = field(default_factory=list)
    usage: Any = None
    outcome: str = "cancelled"  # until the upstream's [DONE] ("ok") or its failure ("dropped")
    ended: bool = False


def _upstream_message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    msg = error.get("message") if isinstance(error, dict) else None
    return f"the upstream refused the request: {msg}" if isinstance(msg, str) else "the upstream refused the request"
