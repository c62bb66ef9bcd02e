"""A judge for the gateway's reward hook tests, both kinds (docs/gateway.md, "Feedback").

As a callable, ``reward_judge:judge`` (the gateway calls it with the request's messages, the
completion, the upstream's name and usage); as a command, ``python reward_judge.py [RECORD]``
(reads the hook's JSON document on stdin, appends it to the file ``RECORD`` if given, prints the
reward). The reward is 1 for the upstream named ``qwen…`` and 0 for any other, unless the last
user message holds one of these words: ``judge:none`` (no reward), ``judge:outside`` (7, outside
the reward range), ``judge:garbage`` (not a number), ``judge:raise`` (an exception), ``judge:exit``
(``sys.exit(3)``), ``judge:flood`` (10 MB of text) or ``judge:hang`` (sleeps 4 s, past the tests'
timeouts).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def judge(messages: list[dict[str, Any]], completion: str, upstream: str, usage: dict[str, int]) -> Any:
    prompt = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    assert completion and usage["completion_tokens"] > 0
    if "judge:none" in prompt:
        return None
    if "judge:outside" in prompt:
        return 7.0
    if "judge:garbage" in prompt:
        return "very good"
    if "judge:flood" in prompt:
        return "x" * 10_000_000
    if "judge:raise" in prompt:
        raise RuntimeError("the judge broke")
    if "judge:exit" in prompt:
        print("the judge exits", file=sys.stderr)
        sys.exit(3)
    if "judge:hang" in prompt:
        time.sleep(4.0)
    return 1.0 if upstream.startswith("qwen") else 0.0


if __name__ == "__main__":
    doc = json.load(sys.stdin)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "a", encoding="utf-8") as f:
            f.write(json.dumps(doc) + "\n")
    reward = judge(doc["messages"], doc["completion"], doc["upstream"], doc["usage"])
    print("" if reward is None else reward)
