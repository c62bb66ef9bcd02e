"""The automatic reward hook: a judge that scores each finished completion (docs/gateway.md, "Feedback").

``[gateway.reward_hook]`` names either a Python callable (``callable = "package.module:function"``),
called in a worker thread with keyword arguments ``messages`` (the request's), ``completion`` (the
answer's text), ``upstream`` (the name of the upstream that answered) and ``usage``
(``{"prompt_tokens", "completion_tokens"}``), or a command (``command = [argv...]``, run without a
shell) that reads a JSON document (:meth:`Completion.document`) on stdin and prints a number on
stdout. Either returns a reward in ``router.reward_range``, or no reward: ``None`` from a callable,
an empty output or ``null`` from a command.

A reward goes through the very path of ``POST /v1/feedback`` (the router's ``feedback`` on the
writer thread): the same validation, the same at-most-once semantics (a second reward for one
decision, automatic or explicit, is a duplicate and is not learned), the same row in the log. The
hook runs after the answer was sent (the request path never waits on it), at most ``max_concurrency``
at once; a hook that raises, exits non-zero, prints something that is not a number, returns a
value the router refuses, or runs past ``timeout_s`` yields no reward and one log line — never an
error for the client. A command that runs too long is killed; a callable cannot be stopped: its
result is ignored and its thread keeps one of the ``max_concurrency`` slots until it returns (a
judge that may hang is safer as a command). More than ``max_pending`` hooks waiting: the new one is
skipped, with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client import Counter

from banditroute.core.registry import resolve
from banditroute.core.validation import InputError
from banditroute.gateway.config import RewardHookConfig
from banditroute.service.router import Gone, NotFound
from banditroute.service.storage import StorageUnavailable

log = logging.getLogger("banditroute.gateway")
MAX_OUTPUT = 4096  # bytes of a command's stdout worth reading: a number is short


class HookFailed(Exception):
    """The hook ran but gave nothing usable (the message says why, in a few words)."""


@dataclass(frozen=True)
class Completion:
    """A finished completion, as the hook sees it."""

    event_id: int
    messages: list[dict[str, Any]]
    completion: str
    upstream: str
    usage: dict[str, int]
    cost: float
    profile: str | None

    def document(self) -> dict[str, Any]:
        """The JSON document a command reads on stdin."""
        return asdict(self)


Feedback = Callable[[int, float], Awaitable[dict[str, Any]]]


def load_callable(target: str) -> Callable[..., Any]:
    """The configured ``"package.module:function"`` (:class:`InputError`, one line, if it cannot be had)."""
    try:
        fn = resolve(target)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"gateway.reward_hook.callable: cannot import {target!r}: {exc}") from None
    if not callable(fn):
        raise InputError(f"gateway.reward_hook.callable: {target!r} is not callable")
    return fn


def as_reward(value: Any) -> float | None:
    """A hook's answer as a reward: ``None`` stays no reward; a finite real number is one; else :class:`HookFailed`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HookFailed(f"returned a {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise HookFailed("returned a number that is not finite")
    return float(value)


async def _capped(pipe: asyncio.StreamReader) -> bytes:
    """All a pipe says until it closes, of which only the first ``MAX_OUTPUT + 1`` bytes are kept."""
    kept = bytearray()
    while chunk := await pipe.read(65536):
        kept += chunk[: max(0, MAX_OUTPUT + 1 - len(kept))]
    return bytes(kept)


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


class RewardHook:
    """Runs the configured hook on finished completions and feeds its rewards back (module docstring)."""

    def __init__(self, config: RewardHookConfig, feedback: Feedback, outcomes: Counter) -> None:
        self.config = config
        self.feedback = feedback
        self.fn = None if config.callable is None else load_callable(config.callable)
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self.threads = ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="banditroute-hook")
        self.tasks: set[asyncio.Task[None]] = set()
        self.outcomes = outcomes  # by outcome: accepted, duplicate, no_reward, failed, timeout, refused, skipped

    def submit(self, done: Completion) -> None:
        """Score ``done`` in the background (called once its answer was sent)."""
        if len(self.tasks) >= self.config.max_pending:
            self.outcomes.labels("skipped").inc()
            log.warning("gateway: reward hook skipped for event %d: %d hooks pending", done.event_id, len(self.tasks))
            return
        task = asyncio.ensure_future(self._run(done))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, done: Completion) -> None:
        await self.slots.acquire()
        thread: list[asyncio.Future[Any]] = []  # a callable's run, which a timeout cannot stop
        try:
            reward = await asyncio.wait_for(self._score(done, thread), self.config.timeout_s)
        except TimeoutError:
            return self._no_reward("timeout", done, f"timed out after {self.config.timeout_s:g} s")
        except HookFailed as exc:
            return self._no_reward("failed", done, str(exc))
        except Exception as exc:  # whatever else went wrong is the hook's, not the service's
            return self._no_reward("failed", done, f"{type(exc).__name__}: {_one_line(str(exc))}")
        finally:
            if thread and not thread[0].done():  # its slot stays taken until the thread returns
                thread[0].add_done_callback(lambda _: self.slots.release())
            else:
                self.slots.release()
        if reward is None:
            self.outcomes.labels("no_reward").inc()
            return None
        try:
            out = await self.feedback(done.event_id, reward)
        except (InputError, NotFound, Gone, StorageUnavailable) as exc:  # what POST /v1/feedback answers 4xx/503
            return self._no_reward("refused", done, f"reward {reward:g} refused: {exc}")
        self.outcomes.labels(out["status"]).inc()
        log.info("gateway: reward hook: event %d reward %g %s", done.event_id, reward, out["status"])
        return None

    def _no_reward(self, outcome: str, done: Completion, why: str) -> None:
        self.outcomes.labels(outcome).inc()
        log.warning("gateway: reward hook gave no reward for event %d: %s", done.event_id, why)

    async def _score(self, done: Completion, thread: list[asyncio.Future[Any]]) -> float | None:
        if self.fn is None:
            return await self._command(done)
        call = functools.partial(self.fn, messages=done.messages, completion=done.completion,
                                 upstream=done.upstream, usage=done.usage)  # fmt: skip
        thread.append(asyncio.get_running_loop().run_in_executor(self.threads, call))
        try:
            value = await asyncio.shield(thread[0])
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the judge's own error, even SystemExit: caught before it reaches a task
            raise HookFailed(f"raised {type(exc).__name__}: {_one_line(str(exc))}") from None
        return as_reward(value)

    async def _command(self, done: Completion) -> float | None:
        assert self.config.command is not None
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.config.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise HookFailed(f"cannot run the command: {exc}") from None
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin = proc.stdin

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a judge need not read it all
                stdin.write(json.dumps(done.document(), ensure_ascii=False).encode())
                await stdin.drain()
                stdin.close()

        try:
            out, err, _ = await asyncio.gather(_capped(proc.stdout), _capped(proc.stderr), feed())
            await proc.wait()
        except BaseException:  # timed out (cancelled) or the service stops: no orphan judge
            if proc.returncode is None:
                proc.kill()
                await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            tail = _one_line(err.decode(errors="replace").strip().splitlines()[-1] if err.strip() else "")
            raise HookFailed(f"the command exited with status {proc.returncode}" + (f" ({tail})" if tail else ""))
        if len(out) > MAX_OUTPUT:
            raise HookFailed(f"the command printed more than {MAX_OUTPUT} bytes")
        text = out.decode(errors="replace").strip()
        if text in ("", "null"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise HookFailed(f"the command printed {_one_line(text, 40)!r}, not a number") from None
        return as_reward(value)

    async def stop(self) -> None:
        """Let running hooks finish (up to ``timeout_s``), then cancel the rest."""
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=self.config.timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)
                log.warning("gateway: %d reward hooks cancelled at shutdown", len(late))
        self.threads.shutdown(wait=False, cancel_futures=True)
