"""What the gateway does around an answer, end to end on real processes (docs/gateway.md): the automatic
reward hook after the answer was sent (a Python callable and a command, ``reward_judge.py``), and
budget holds given back however a request ends (a stream whose client leaves before the first byte
or mid-stream)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from banditroute.gateway.config import RewardHookConfig
from banditroute.gateway.core import Stream
from banditroute.gateway.metrics import GatewayMetrics
from banditroute.gateway.reward_hook import Completion, RewardHook
from banditroute.gateway.routes import EndingStreamingResponse
from fake_upstream import answer_text
from gateway_support import CLIENT_KEY, LLMS, ask, db_rows, gateway_config, learned, start_upstreams, upstream_entry
from service_support import HERE, Server

SMALL, MID, _ = LLMS
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BROKEN = ("none", "outside", "garbage", "raise", "exit", "hang")


def wait_for(what: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = what()
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def rewards(server: Server, events: list[int]) -> dict[int, float]:
    ids = ",".join(map(str, events))
    return dict(db_rows(server, f"SELECT event_id, reward FROM feedback WHERE event_id IN ({ids})"))


def hook_counts(server: Server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    series = re.finditer(r'banditroute_gateway_reward_hook_total\{outcome="(\w+)"} (\S+)', text)
    return {m[1]: float(m[2]) for m in series}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two fake upstreams; gateway ``judged`` scores answers with the callable ``reward_judge:judge``,
    gateway ``commanded`` with the command ``reward_judge.py`` and has a tightly budgeted profile on
    an upstream that takes one call at a time."""
    tmp = tmp_path_factory.mktemp("after_answer")
    ups = start_upstreams((SMALL, MID), tmp / "upstreams.log")
    entries = [upstream_entry(u) for u in ups.values()]
    (tmp / "judged").mkdir(), (tmp / "commanded").mkdir()
    hook = {"callable": "reward_judge:judge", "timeout_s": 1.0}
    judged = gateway_config(tmp / "judged" / "router.toml", entries, tables={"gateway.reward_hook": hook})
    record = tmp / "documents.jsonl"
    command = [sys.executable, str(HERE / "reward_judge.py"), str(record)]
    held = [entries[0] | {"max_concurrency": 1, "max_output_tokens": 100}, entries[1]]
    commanded = gateway_config(
        tmp / "commanded" / "router.toml", held,
        tables={"gateway.reward_hook": {"command": command, "timeout_s": 2.0},
                "gateway.profiles": [{"name": "router-held", "upstreams": [SMALL], "budget": {"day": 4.8e-5}}],
                "gateway.budgets": [{"key_hash": "*", "day": 1.0}]},
    )  # fmt: skip
    servers = {
        "judged": Server(judged, tmp / "judged" / "gateway.log").start(),
        "commanded": Server(commanded, tmp / "commanded" / "gateway.log").start(),
    }
    try:
        yield {"ups": ups, "record": record, **servers}
    finally:
        for s in servers.values():
            s.kill()
        for u in ups.values():
            u.stop()


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=CLIENT_KEY, max_retries=0)


def stream_answer(server: Server, model: str, text: str) -> tuple[str, dict[str, Any]]:
    """A streamed answer's text and its ``banditroute`` field (from the usage chunk)."""
    chunks = list(client(server).chat.completions.create(model=model, messages=ask(text), stream=True,
                                                         stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].model_extra["banditroute"]


def test_callable_hook_rewards_are_logged_learned_and_first_wins(env: dict[str, Any]) -> None:
    """The judge rewards MID 1 and SMALL 0: each answer's reward is in the log, learned (the policy
    then sends the prompt to MID), and a client's feedback after it is a duplicate."""
    server = env["judged"]
    got: dict[int, str] = {}
    for i in range(8):
        if i % 2:
            _, info = stream_answer(server, "router", "judge me")
        else:
            info = client(server).chat.completions.create(model="router", messages=ask("judge me")).model_extra[
                "banditroute"]  # fmt: skip
        got[info["event_id"]] = info["upstream"]
    logged = wait_for(lambda: len(r := rewards(server, list(got))) == len(got) and r)
    assert logged == {e: 1.0 if up == MID else 0.0 for e, up in got.items()}  # the judge's rewards, in the log
    first = next(iter(got))
    again = client(server).post("/feedback", body={"event_id": first, "reward": 0.5}, cast_to=object)
    assert again["status"] == "duplicate" and again["reward"] == logged[first]  # at most once: the hook was first
    learned(server)
    later = [client(server).chat.completions.create(model="router", messages=ask("judge me")).model_extra[
        "banditroute"]["upstream"] for _ in range(6)]  # fmt: skip
    assert later == [MID] * 6  # without the rewards LinUCB ties both upstreams on this prompt (1/64 by chance)
    assert hook_counts(server)["accepted"] >= 8


def test_broken_callable_hooks_give_no_reward_and_never_break_serving(env: dict[str, Any]) -> None:
    """A judge that returns nothing, a reward out of range or a string, raises, exits or hangs: the
    answer comes at once and whole, no reward is logged, one log line each, the server stays up."""
    server = env["judged"]
    log_file = server.log_file
    before = hook_counts(server)
    events: dict[str, int] = {}
    for word in BROKEN:
        start = time.perf_counter()
        if word == "hang":  # a stream: its hook runs after the last byte, never before it
            text, info = stream_answer(server, SMALL, f"judge:{word}")
        else:
            r = client(server).chat.completions.create(model=SMALL, messages=ask(f"judge:{word}"))
            text, info = r.choices[0].message.content, r.model_extra["banditroute"]
        assert time.perf_counter() - start < 1.0  # the 4 s hang (and the 1 s timeout) never delay the answer
        assert text == answer_text(SMALL, f"judge:{word}")
        events[word] = info["event_id"]
    ok = client(server).chat.completions.create(model=MID, messages=ask("after the broken ones"))
    ok_event = ok.model_extra["banditroute"]["event_id"]
    assert wait_for(lambda: rewards(server, [ok_event])) == {ok_event: 1.0}  # hooks still work

    def counted() -> dict[str, float]:
        now = hook_counts(server)
        return {k: now.get(k, 0.0) - before.get(k, 0.0) for k in now if now.get(k, 0.0) != before.get(k, 0.0)}

    wait_for(lambda: counted().get("timeout"), timeout=5.0)
    assert counted() == {"no_reward": 1, "refused": 1, "failed": 3, "timeout": 1, "accepted": 1}
    assert rewards(server, list(events.values())) == {}
    lines = log_file.read_text().splitlines()
    for word, event in events.items():
        mine = [line for line in lines if f"reward hook gave no reward for event {event}:" in line]
        assert len(mine) == (0 if word == "none" else 1), (word, mine)
    text = log_file.read_text()
    assert "outside the router's reward_range" in text and "returned a str, not a number" in text
    assert "raised RuntimeError: the judge broke" in text and "raised SystemExit: 3" in text
    assert "timed out after 1 s" in text and "Traceback" not in text
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def test_command_hook_reads_the_document_and_its_failures_are_one_line(env: dict[str, Any]) -> None:
    server, record = env["commanded"], env["record"]
    r = client(server).chat.completions.create(model=MID, messages=ask("judge this"))
    streamed, sinfo = stream_answer(server, SMALL, "judge this stream")
    info = r.model_extra["banditroute"]
    broken = {}
    for word in ("garbage", "flood", "exit", "hang"):
        out = client(server).chat.completions.create(model=MID, messages=ask(f"judge:{word}"))
        broken[word] = out.model_extra["banditroute"]["event_id"]
    good = [info["event_id"], sinfo["event_id"]]
    assert wait_for(lambda: len(rewards(server, good)) == 2 and rewards(server, good)) == {good[0]: 1.0, good[1]: 0.0}
    docs = {d["event_id"]: d for d in map(json.loads, record.read_text().splitlines())}
    usage = {"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens}
    assert docs[good[0]] == {
        "event_id": good[0], "messages": ask("judge this"), "completion": r.choices[0].message.content,
        "upstream": MID, "usage": usage, "cost": info["cost"], "profile": None,
    }  # fmt: skip
    assert docs[good[1]]["completion"] == streamed and docs[good[1]]["cost"] == sinfo["cost"]
    assert client(server).post("/feedback", body={"event_id": good[1], "reward": 1.0}, cast_to=object)[
        "status"] == "duplicate"  # fmt: skip
    text = wait_for(lambda: "timed out after 2 s" in (t := server.log_file.read_text()) and t, timeout=6.0)
    assert f"event {broken['garbage']}: the command printed 'very good', not a number" in text
    assert f"event {broken['flood']}: the command printed more than 4096 bytes" in text
    assert f"event {broken['exit']}: the command exited with status 3 (the judge exits)" in text
    assert f"event {broken['hang']}: timed out after 2 s" in text
    assert rewards(server, list(broken.values())) == {}


def usage_held(server: Server) -> float:
    return httpx.get(server.url + "/v1/gateway/usage", headers=AUTH).json()["key"]["day"]["held"]


def test_budget_holds_are_given_back_when_a_stream_client_leaves(env: dict[str, Any]) -> None:
    """Profile ``router-held``: a day budget of about two cost bounds (2.26e-5 each) on an upstream that
    takes one call at a time. A client that leaves before the first byte, or mid-stream, must keep
    neither its hold (the key's ``held`` goes back to 0; a leaked hold on the profile would refuse the
    next request with 429) nor the upstream's slot (the next call would wait for ever); the attempt is
    booked as ``cancelled``, paid for what was streamed, and not judged."""
    server, small = env["commanded"], env["ups"][SMALL]
    body = {"model": "router-held", "messages": ask("leave early"), "stream": True}
    url = server.url + "/v1/chat/completions"
    left: list[int] = []
    small.control(delay_s=1.0, mode="slow")  # the upstream starts after 1 s, then 0.2 s between chunks
    try:
        with pytest.raises(httpx.ReadTimeout):  # the client leaves before any byte
            httpx.post(url, json=body, headers=AUTH, timeout=httpx.Timeout(5.0, read=0.3))
        assert usage_held(server) == pytest.approx((13 + 100) * 0.2 / 1e6)  # still waiting on the upstream
        small.control(delay_s=0.0)  # the client leaves after the first chunk
        with httpx.stream("POST", url, json=body | {"messages": ask("leave mid-stream")}, headers=AUTH) as s:
            left.append(int(s.headers["x-banditroute-event-id"]))
            assert next(s.iter_lines()).startswith("data: ")
    finally:
        small.control(mode="ok")

    def cancelled() -> list[tuple[Any, ...]]:
        return db_rows(server, "SELECT event_id, completion_tokens, cost FROM gateway_attempts "
                               "WHERE outcome = 'cancelled' ORDER BY event_id")  # fmt: skip

    rows = wait_for(lambda: len(cancelled()) == 2 and cancelled(), timeout=5.0)
    assert usage_held(server) == 0.0
    assert rows[1][0] == left[0] and all(cost > 0 for _, _, cost in rows)  # the prompt (and what came) is paid
    for _ in range(3):  # a leaked hold (or slot) would refuse (or hang) these
        r = client(server).with_options(timeout=5.0).chat.completions.create(model="router-held",
                                                                             messages=ask("still served"))  # fmt: skip
        assert r.model_extra["banditroute"]["upstream"] == SMALL
    time.sleep(0.5)
    assert rewards(server, [e for e, _, _ in rows]) == {}  # a stream the client left is not judged


def test_a_stream_never_iterated_is_still_ended() -> None:
    """The response ends its stream (the gateway books it and gives its holds back) even when the request
    ends before the stream's first chunk was asked for: the client is gone while the response start
    waits to be written (a client that stopped reading), so the body is never iterated."""
    log: list[str] = []

    async def chunks() -> Any:
        log.append("iterated")
        yield b"data: x\n\n"

    async def end() -> None:
        log.append("ended")

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        await asyncio.sleep(10)

    response = EndingStreamingResponse(Stream(chunks(), end), {})
    asyncio.run(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send))
    assert log == ["ended"]


RUNNING: list[int] = [0, 0]  # hooks running now, most at once


def slow_judge(messages: Any, completion: str, upstream: str, usage: Any) -> float:
    RUNNING[0] += 1
    RUNNING[1] = max(RUNNING)
    time.sleep(0.3 if completion == "slow" else 0.05)
    RUNNING[0] -= 1
    return 1.0


def test_hooks_run_at_most_max_concurrency_at_once_and_at_most_max_pending_wait() -> None:
    """10 completions at once on ``max_concurrency = 2``, ``max_pending = 8``: 2 skipped, 2 judges running at
    most, one judge timed out (it sleeps 0.3 s, the timeout is 0.1 s) and the 7 others' rewards fed back."""
    fed: list[tuple[int, float]] = []

    async def feedback(event_id: int, reward: float) -> dict[str, Any]:
        fed.append((event_id, reward))
        return {"status": "accepted"}

    async def run() -> dict[str, float]:
        config = RewardHookConfig(callable=f"{__name__}:slow_judge", timeout_s=0.1, max_concurrency=2, max_pending=8)
        metrics = GatewayMetrics(CollectorRegistry())
        hook = RewardHook(config, feedback, metrics.reward_hook)
        for i in range(10):
            hook.submit(Completion(i, [], "slow" if i == 0 else "fast", SMALL, {}, 0.0, None))
        await asyncio.wait_for(asyncio.gather(*hook.tasks), 5.0)
        await hook.stop()
        return {s.labels["outcome"]: s.value for m in metrics.reward_hook.collect() for s in m.samples
                if s.name.endswith("_total")}  # fmt: skip

    counts = asyncio.run(run())
    assert counts == {"skipped": 2, "timeout": 1, "accepted": 7} and RUNNING[1] == 2
    assert sorted(fed) == [(i, 1.0) for i in range(1, 8)]
