"""``banditroute init [router|gateway|retrieval]``: a commented ``router.toml`` with fresh keys.

The file holds only the keys' hashes; the keys are printed once (a client and an admin key) and
kept nowhere. It is written ``0600`` and never over an existing file. Every template validates
as written (:func:`banditroute.service.config.parse_config`); docs/gateway.md and README.md's
quickstart start from the gateway one.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from banditroute.cli.app import app, console, user_errors
from banditroute.core.validation import InputError

COMMON = """\
# banditroute {kind} config, written by `banditroute init {kind}`. Reference: src/banditroute/service/config.py
# and docs/gateway.md. Relative paths resolve against this file's folder.

[policy]
name = "linucb"                        # any name of `banditroute policies`
params = {{ alpha = 1.0 }}

[storage]
url = "sqlite:///router.db"            # or "postgresql+psycopg://user@host:5432/db"

[server]
host = "127.0.0.1"
port = 8080

# [cluster]                            # uncomment: a learner and N router processes on this port over the
# workers = 2                          # one log (or `serve --workers N`); docs/architecture.md

[auth]
# sha256 hashes of the keys printed once by `banditroute init` (`banditroute keygen` makes more).
api_key_hashes = ["{client}"]
admin_key_hashes = ["{admin}"]
"""

ROUTER = """
[router]
models = ["small", "medium", "large"]  # the arms; more can be added at run time (POST /v1/models)
dim = 8                                # clients send context vectors of this length (POST /v1/route)
feedback_ttl_s = 86400                 # the reward window: later feedback is refused (410)
# default_reward = 0.0                 # learned for a decision whose window ends without feedback
"""

GATEWAY = """
[router]
dim = 384                              # the request features' dimension: the embedder's (or the Featurizer's)
seed = 0

[gateway]
max_attempts = 3                       # first call plus at most two fallbacks (429, 5xx, timeout, connection)
learn_failures = false                 # true: a failed attempt is learned with the lowest reward
log_prompts = false                    # default: only a hash of the prompt and its context vector are stored
embedder = {{ factory = "minilm-l6-int8" }}  # the LLM-routing benchmark's embedder (`banditroute models`)
# features = "features.npz"            # optional: the benchmark's fitted PCA + cluster features (then set dim)
breaker_failures = 5                   # consecutive failures that open an upstream's circuit breaker
breaker_cooldown_s = 30.0              # then one probe call may close it

# One table per upstream LLM (any OpenAI-compatible API). The key is read from the environment
# variable named by api_key_env; never write a key in this file. Prices: currency per 10^6 tokens.
[[gateway.upstreams]]
name = "small"
base_url = "http://127.0.0.1:8001/v1"  # e.g. a local vLLM or llama.cpp server
model = "small-model"
api_key_env = "SMALL_API_KEY"
input_price = 0.10
output_price = 0.10
timeout_s = 60.0
max_concurrency = 64

[[gateway.upstreams]]
name = "large"
base_url = "https://api.openai.com/v1"
model = "gpt-4o"
api_key_env = "OPENAI_API_KEY"
input_price = 2.50
output_price = 10.00

# `model: "router-cheap"`: the router among these upstreams, with a per-request cost cap and a budget.
[[gateway.profiles]]
name = "router-cheap"
upstreams = ["small"]
max_cost = 0.001
budget = {{ day = 1.0, month = 20.0 }}

# Budgets per API key (its hash above, or "*" for every key without its own entry), in currency.
[[gateway.budgets]]
key_hash = "*"
day = 10.0
month = 200.0
expected_requests = 1000               # per day: sets the pacing rate (budget / expected requests)

# Optional: a judge that scores each finished answer, learned like POST /v1/feedback (docs/gateway.md).
# [gateway.reward_hook]
# command = ["python3", "judge.py"]    # the answer as JSON on stdin, a reward on stdout (or nothing)
# # callable = "my_judges:judge"       # or a Python function (messages, completion, upstream, usage) -> reward
# timeout_s = 10.0
"""

RETRIEVAL = """
[router]
seed = 0

[embedder]
factory = "minilm-l6-int8"             # turns queries into contexts (`banditroute models`)

[retrieval]
corpus = "corpus.jsonl"                # one {{"id": ..., "text": ...}} per line
k = 10

[[retrieval.arms]]
name = "bm25"
retriever = {{ factory = "bm25" }}

[[retrieval.arms]]
name = "dense"
retriever = {{ factory = "dense", params = {{ embedder = "minilm-l6-int8" }} }}

# A pipeline over the arms above (the syntax of `banditroute build-table --models`): fusion
# usually beats every single retriever; `banditroute analyze TABLE` says which to run.
[[retrieval.arms]]
name = "hybrid"
pipeline = "cvx(bm25,dense;w=0.5)"     # also rrf(bm25,dense;k=60), rerank(bm25,dense;n=100)
"""


class Kind(StrEnum):
    router = "router"
    gateway = "gateway"
    retrieval = "retrieval"


def render(kind: str, client_hash: str, admin_hash: str) -> str:
    body = {"router": ROUTER, "gateway": GATEWAY, "retrieval": RETRIEVAL}[kind]
    return (COMMON + body).format(kind=kind, client=client_hash, admin=admin_hash)


@app.command("init")
def init(
    kind: Annotated[Kind, typer.Argument(help="What the config runs.")] = Kind.gateway,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write it (never over an existing file).")] = Path(
        "router.toml"
    ),
) -> None:
    """Write a commented config with fresh API keys: the hashes go in the file, the keys are printed once."""
    from banditroute.service.auth import hash_key, new_key

    with user_errors():
        client, admin = new_key(), new_key()
        text = render(kind.value, hash_key(client), hash_key(admin))
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InputError(f"{out} exists; choose another --out (keys are never overwritten)") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        console.print(f"wrote {out} ({kind.value}); the keys below are shown once and stored nowhere:", highlight=False)
        console.print(f"client key: {client}\nadmin key:  {admin}", highlight=False, soft_wrap=True)
        console.print(f"run: banditroute serve --config {out}", highlight=False)
