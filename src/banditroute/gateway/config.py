"""The ``[gateway]`` table of ``router.toml``: upstream LLMs, router profiles, budgets, fallbacks, privacy.

Example::

    [gateway]
    max_attempts = 3              # the first call plus at most two fallbacks
    learn_failures = false        # true: a failed attempt is fed back with the lowest reward
    log_prompts = false           # true: prompts and completions are stored (default: hash + context only)
    features = "features.npz"     # optional fitted Featurizer (banditroute.costaware.features); else the raw embedding
    embedder = { factory = "minilm-l6-int8" }
    embed_disk_cache = false      # true: embeddings also go through the benchmarks' on-disk cache (vectors only)

    [[gateway.upstreams]]
    name = "small"                # the arm's name, and the `model` a client may pass through to
    base_url = "https://api.example.com/v1"
    model = "small-1"             # the upstream's own model id
    api_key_env = "SMALL_API_KEY" # the NAME of the environment variable holding the key, never the key
    input_price = 0.15            # currency per 10^6 input tokens
    output_price = 0.60           # currency per 10^6 output tokens
    timeout_s = 60
    max_concurrency = 64
    max_output_tokens = 1024      # the cost bound of a call whose request sets no max_tokens

    [[gateway.profiles]]
    name = "router-cheap"         # `model: "router-cheap"`; `model: "router"` is every active upstream
    upstreams = ["small"]
    max_cost = 0.001              # per request, unless the request sets a lower one
    budget = { day = 1.0, month = 20.0 }

    [[gateway.budgets]]
    key_hash = "sha256:..."       # an API key's hash ([auth]), or "*" for every key without its own entry
    day = 5.0
    month = 100.0

    [gateway.reward_hook]         # optional: a judge scoring each finished completion (docs/gateway.md)
    command = ["python", "judge.py"]  # JSON on stdin, a number on stdout; or callable = "package.module:function"
    timeout_s = 10
    max_concurrency = 2
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from banditroute.core.validation import InputError
from banditroute.service.config import ComponentConfig, ModelName, ServiceConfig

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
ROUTER_MODEL = "router"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamConfig(_Strict):
    """One OpenAI-compatible upstream LLM: an arm of the router."""

    name: ModelName
    base_url: str = Field(pattern=r"^https?://[^\s]+$", max_length=500)
    model: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")
    api_key_env: str | None = Field(default=None, pattern=ENV_NAME, max_length=200)
    input_price: float = Field(ge=0, le=1e6)
    output_price: float = Field(ge=0, le=1e6)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_concurrency: int = Field(default=64, ge=1, le=100_000)
    max_output_tokens: int = Field(default=4096, ge=1, le=10_000_000)
    active: bool = True

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == ROUTER_MODEL or name.startswith(ROUTER_MODEL + "-"):
            raise ValueError("upstream names must not be 'router' or start with 'router-' (profile names)")
        return name


class Budget(_Strict):
    """Spending limits in currency per UTC day and per UTC month; ``expected_requests`` per day sets the
    pacing rate (:class:`~banditroute.gateway.budget.Budgets`)."""

    day: float | None = Field(default=None, gt=0)
    month: float | None = Field(default=None, gt=0)
    expected_requests: int = Field(default=1000, ge=1)


class KeyBudget(Budget):
    key_hash: str = Field(pattern=r"^(\*|sha256:[0-9a-f]{64})$")


class ProfileConfig(_Strict):
    name: str = Field(pattern=r"^router-[A-Za-z0-9_.-]{1,60}$")
    upstreams: list[ModelName] | None = None  # None: every active upstream
    max_cost: float | None = Field(default=None, gt=0)
    budget: Budget | None = None


class RewardHookConfig(_Strict):
    """The automatic reward hook (:mod:`~banditroute.gateway.reward_hook`): exactly one of ``callable``
    (``"package.module:function"``) and ``command`` (an argv list, run without a shell)."""

    callable: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", max_length=300)
    command: list[str] | None = Field(default=None, min_length=1, max_length=100)
    timeout_s: float = Field(default=10.0, gt=0, le=600)  # then no reward (a command is killed)
    max_concurrency: int = Field(default=2, ge=1, le=64)  # hooks running at once
    max_pending: int = Field(default=1000, ge=1, le=1_000_000)  # more waiting: skipped, with a log line

    @model_validator(mode="after")
    def _one_kind(self) -> RewardHookConfig:
        if (self.callable is None) == (self.command is None):
            raise ValueError("set exactly one of 'callable' and 'command'")
        if self.command is not None and any(not a or "\x00" in a for a in self.command):
            raise ValueError("command arguments must be non-empty strings without NUL")
        return self


class GatewayConfig(_Strict):
    upstreams: list[UpstreamConfig] = Field(min_length=1)
    profiles: list[ProfileConfig] = Field(default_factory=list)
    budgets: list[KeyBudget] = Field(default_factory=list)
    max_attempts: int = Field(default=3, ge=1, le=16)
    learn_failures: bool = False
    log_prompts: bool = False
    features: Path | None = None
    embedder: ComponentConfig
    embed_cache: int = Field(default=10_000, ge=0)  # embeddings kept in memory (LRU, by text)
    embed_disk_cache: bool = False  # also the on-disk embedding cache of the benchmarks (banditroute.data.cache)
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open an upstream's breaker
    breaker_cooldown_s: float = Field(default=30.0, gt=0)  # then one probe call may close it
    reward_hook: RewardHookConfig | None = None  # default: no automatic reward

    @model_validator(mode="after")
    def _consistent(self) -> GatewayConfig:
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ValueError("gateway upstream names must be unique")
        profiles = [p.name for p in self.profiles]
        if len(set(profiles)) != len(profiles):
            raise ValueError("gateway profile names must be unique")
        for p in self.profiles:
            unknown = set(p.upstreams or ()) - set(names)
            if unknown:
                raise ValueError(f"profile {p.name}: unknown upstreams {sorted(unknown)}")
        keys = [b.key_hash for b in self.budgets]
        if len(set(keys)) != len(keys):
            raise ValueError("one [[gateway.budgets]] entry per key_hash")
        return self


def gateway_config(config: ServiceConfig) -> GatewayConfig:
    """The validated ``[gateway]`` table of a service config (:class:`InputError`, one line, if invalid)."""
    if config.gateway is None:
        raise InputError("this config has no [gateway] table")
    try:
        return GatewayConfig.model_validate(config.gateway)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(['gateway', *map(str, e['loc'])])}: {e['msg']}" for e in exc.errors())
        raise InputError(f"invalid router config: {problems}") from None
