"""The router service's configuration: one TOML file, validated by pydantic.

Example (``router.toml``)::

    [router]
    models = ["small", "medium", "large"]   # the arms; more can be added at run time
    max_models = 8                          # policy slots (models ever added, retired ones included)
    dim = 384                               # context dimension (or take it from [embedder])
    learn_batch = 1                         # feedback rows per learning step (HPG fast mode: e.g. 16)
    checkpoint_every = 5000                 # learned rows between policy checkpoints (a restart replays fewer)
    feedback_ttl_s = 86400                  # the reward window: later feedback is refused with 410
    default_reward = 0.0                    # optional: learned for a decision whose window ends without feedback
    max_context_norm = 1e3                  # optional: contexts with a larger L2 norm get 422
    route_batch_window_ms = 0.5             # optional: also wait 0.5 ms for routes to decide together (0 = no wait)

    [policy]
    name = "linucb"                         # any name of `banditroute policies`
    params = { alpha = 1.0, epsilon = 0.05 }

    [storage]
    url = "sqlite:///router.db"             # or "postgresql+psycopg://user@host:5432/db"
    timeout_s = 5.0                         # longest wait of one storage call, then 503

    [cluster]                               # optional: `serve --workers N` (service/cluster.py)
    workers = 2                             # router worker processes over this log, beside one learner process
    poll_interval_s = 0.05                  # how often workers look for a snapshot, the learner for feedback

    [auth]
    api_key_hashes = ["sha256:..."]         # `banditroute keygen` prints a key and its hash
    admin_key_hashes = ["sha256:..."]
    key_file = "keys.toml"                  # optional: keys with expiry, re-read on SIGHUP

Relative SQLite, corpus and key-file paths are resolved against the directory of the TOML file.
Optional tables: ``[server]`` (host, port, request-size limit), ``[embedder]`` (turns query text
into contexts), ``[retrieval]`` (corpus and one retriever per arm, for ``POST /v1/search``) and
``[ope]`` (the dashboard's off-policy estimates) and ``[gateway]`` (upstream LLMs behind an
OpenAI-compatible endpoint: :mod:`banditroute.gateway.config`, docs/gateway.md).
"""

from __future__ import annotations

import os
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from banditroute.core.validation import InputError
from banditroute.data.pipelines import parse_pipeline

KEY_HASH_PREFIX = "sha256:"
# Text a client or the config may name things with: no control characters (C0, DEL, C1; PostgreSQL
# text refuses NUL), and model names without "/" so that each fits in a URL path segment.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+$"
MODEL_NAME = r"^[^\x00-\x1f\x7f-\x9f/]+$"
ModelName = Annotated[str, Field(min_length=1, max_length=100, pattern=MODEL_NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyConfig(_Strict):
    """A registry policy and its parameter overrides."""

    name: str = "linucb"
    params: dict[str, Any] = Field(default_factory=dict)


class ComponentConfig(_Strict):
    """An embedder or retriever: ``factory`` is a built-in name or ``"package.module:callable"``."""

    factory: str
    params: dict[str, Any] = Field(default_factory=dict)


class RetrievalArm(_Strict):
    """One routing target of retrieval mode: a named retriever over the shared corpus, or a pipeline
    (``pipeline = "cvx(bm25,dense;w=0.5)"``, the syntax of :mod:`banditroute.data.pipelines`) whose
    components are other arms, named inside it (an inactive arm can serve only as a component)."""

    name: ModelName
    retriever: ComponentConfig | None = None
    pipeline: str | None = Field(default=None, min_length=1, max_length=1000)
    active: bool = True  # inactive arms are indexed at start and can be added at run time

    @model_validator(mode="after")
    def _one_kind(self) -> RetrievalArm:
        if (self.retriever is None) == (self.pipeline is None):
            raise ValueError(f"retrieval arm {self.name!r} needs exactly one of 'retriever' and 'pipeline'")
        if self.pipeline is not None:
            try:
                parse_pipeline(self.pipeline)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return self


class RetrievalConfig(_Strict):
    """Retrieval mode: a corpus (JSON lines with ``id`` and ``text``) searched by the chosen arm."""

    corpus: Path
    k: int = Field(default=10, ge=1, le=1000)
    arms: list[RetrievalArm] = Field(min_length=1)


class RouterConfig(_Strict):
    models: list[ModelName] = Field(default_factory=list)
    max_models: int | None = Field(default=None, ge=1, le=1024)
    dim: int | None = Field(default=None, ge=1)
    reward_range: tuple[float, float] = (0.0, 1.0)
    seed: int = Field(default=0, ge=0)
    # The joiner's semantics (docs/architecture.md): feedback within feedback_ttl_s of its decision is
    # accepted, the first for an event wins (repeats are acknowledged, not learned); a decision whose
    # window ends without feedback is learned with default_reward, or not at all when it is None.
    feedback_ttl_s: float = Field(default=7 * 86400.0, gt=0)
    default_reward: float | None = None
    learn_batch: int = Field(default=1, ge=1, le=4096)
    checkpoint_every: int = Field(default=5000, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    publish_interval_s: float = Field(default=0.2, ge=0)  # copying the state costs O(M d²) per publish
    max_context_norm: float | None = Field(default=None, gt=0)  # larger contexts are refused with 422
    # Micro-batching: routes that queue while the writer thread is busy are always decided by one
    # act_batch call and logged in one commit; this window makes the first of a batch also wait for
    # more (0 = no wait: an idle server decides each route as it comes; service/fastpath.py's Batcher).
    route_batch_window_ms: float = Field(default=0.0, ge=0, le=1)

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[str]) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError("model names must be unique")
        return models

    @field_validator("reward_range")
    @classmethod
    def _range(cls, rr: tuple[float, float]) -> tuple[float, float]:
        if not rr[0] < rr[1]:
            raise ValueError("reward_range must be [low, high] with low < high")
        return rr

    @model_validator(mode="after")
    def _default_in_range(self) -> RouterConfig:
        lo, hi = self.reward_range
        if self.default_reward is not None and not lo <= self.default_reward <= hi:
            raise ValueError("router.default_reward must lie in reward_range")
        return self


class ClusterConfig(_Strict):
    """Several router processes over one log (``serve --workers N``; :mod:`banditroute.service.cluster`)."""

    workers: int = Field(default=1, ge=1, le=64)
    poll_interval_s: float = Field(default=0.05, gt=0, le=10)


class StorageConfig(_Strict):
    url: str = "sqlite:///router.db"
    # Longest wait of one storage call (SQLite busy timeout; PostgreSQL connect, statement and lock
    # timeouts); a call that would wait longer answers 503 (docs/reliability.md).
    timeout_s: float = Field(default=5.0, gt=0, le=600)


def _check_hash(h: str) -> str:
    hexpart = h.removeprefix(KEY_HASH_PREFIX)
    if not h.startswith(KEY_HASH_PREFIX) or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError("key hashes look like 'sha256:<64 lowercase hex digits>' (see `banditroute keygen`)")
    return h


class AuthConfig(_Strict):
    """Hashes (``sha256:<hex>``) of the accepted keys; the keys themselves are never stored.

    ``key_file`` optionally names a TOML file of further keys, each with a role and an optional
    expiry (:class:`KeyEntry`); the server re-reads it on ``SIGHUP``, so keys can be rotated and
    revoked without a restart (docs/reliability.md).
    """

    api_key_hashes: list[str] = Field(default_factory=list)
    admin_key_hashes: list[str] = Field(default_factory=list)
    key_file: Path | None = None

    @field_validator("api_key_hashes", "admin_key_hashes")
    @classmethod
    def _hashes(cls, hashes: list[str]) -> list[str]:
        return [_check_hash(h) for h in hashes]

    @model_validator(mode="after")
    def _some_admin(self) -> AuthConfig:
        if not self.admin_key_hashes and self.key_file is None:
            raise ValueError("admin_key_hashes must name at least one key (or set key_file)")
        return self


class KeyEntry(_Strict):
    """One ``[[keys]]`` entry of a key file: ``hash``, ``role`` and an optional ``expires_at``
    (a TOML date-time with offset, e.g. ``2027-01-01T00:00:00Z``)."""

    hash: str
    role: Literal["client", "admin"]
    expires_at: datetime | None = None

    @field_validator("hash")
    @classmethod
    def _hash(cls, h: str) -> str:
        return _check_hash(h)

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, t: datetime | None) -> datetime | None:
        if t is not None and t.tzinfo is None:
            raise ValueError("expires_at needs a time zone (e.g. 2027-01-01T00:00:00Z)")
        return t


class _KeyFile(_Strict):
    keys: list[KeyEntry] = Field(default_factory=list)


def load_key_file(path: str | os.PathLike[str]) -> list[KeyEntry]:
    """The entries of a key file; a missing or invalid file raises :class:`InputError` (keys not echoed)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return _KeyFile.model_validate(raw).keys
    except FileNotFoundError:
        raise InputError(f"key file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable TOML key file: {type(exc).__name__}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InputError(f"{path}: invalid key file: {problems}") from None


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    access_log: bool = False  # uvicorn's access log (method, path, status; never bodies or keys)


class OPEConfig(_Strict):
    """The dashboard's off-policy estimates of candidate policies, refreshed in the background."""

    interval_s: float = Field(default=30.0, gt=0)
    window: int = Field(default=5000, ge=10)
    min_rows: int = Field(default=50, ge=10)
    candidates: list[PolicyConfig] = Field(default_factory=list)  # trained on the window's first half


class ServiceConfig(_Strict):
    router: RouterConfig
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    auth: AuthConfig
    server: ServerConfig = Field(default_factory=ServerConfig)
    embedder: ComponentConfig | None = None
    retrieval: RetrievalConfig | None = None
    ope: OPEConfig = Field(default_factory=OPEConfig)
    cluster: ClusterConfig | None = None  # present: `serve` runs workers and a learner
    # The LLM gateway's table, validated by the gateway (banditroute.gateway.config, a layer above this one).
    gateway: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServiceConfig:
        if self.gateway is not None:
            if self.router.models or self.retrieval is not None:
                raise ValueError("in gateway mode the models are the [[gateway.upstreams]]; leave router.models empty")
            if self.router.dim is None:
                raise ValueError("gateway mode needs router.dim: the dimension of its request features")
        elif self.retrieval is not None:
            if self.router.models:
                raise ValueError("in retrieval mode the models are the [[retrieval.arms]]; leave router.models empty")
            if self.embedder is None:
                raise ValueError("retrieval mode needs an [embedder] to turn queries into contexts")
            names = [a.name for a in self.retrieval.arms]
            if len(set(names)) != len(names):
                raise ValueError("retrieval arm names must be unique")
        elif not self.router.models:
            raise ValueError("router.models must name at least one model")
        if self.router.dim is None and self.embedder is None:
            raise ValueError("set router.dim, or configure an [embedder] whose dimension is used")
        if self.router.max_models is not None and self.router.max_models < len(self.initial_models()):
            raise ValueError("router.max_models is smaller than the number of configured models")
        return self

    def initial_models(self) -> list[str]:
        """Models active at first start: ``router.models``, or the active retrieval arms."""
        if self.retrieval is not None:
            return [a.name for a in self.retrieval.arms if a.active]
        if self.gateway is not None:
            return [u["name"] for u in self.gateway_upstreams() if u.get("active", True)]
        return list(self.router.models)

    def gateway_upstreams(self) -> list[dict[str, Any]]:
        """The ``[[gateway.upstreams]]`` tables with a name (the gateway validates the rest)."""
        ups = (self.gateway or {}).get("upstreams")
        return (
            [u for u in ups if isinstance(u, dict) and isinstance(u.get("name"), str)] if isinstance(ups, list) else []
        )

    def poll_interval_s(self) -> float:
        """How often the processes of a cluster poll the log: ``[cluster] poll_interval_s`` (its default
        without the table, for ``serve --workers N`` and ``--role``)."""
        return (self.cluster or ClusterConfig()).poll_interval_s

    def capacity(self) -> int:
        """Number of policy slots: ``max_models``, default the configured models plus four."""
        if self.router.max_models is not None:
            return self.router.max_models
        declared = len(self.retrieval.arms) if self.retrieval is not None else len(self.router.models)
        if self.gateway is not None:
            declared = len(self.gateway_upstreams())
        return declared + 4


def load_config(path: str | os.PathLike[str], **overrides: Any) -> ServiceConfig:
    """Read and validate a TOML config; ``overrides`` replace top-level tables' keys (``server={"port": 0}``)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    for table, values in overrides.items():
        raw.setdefault(table, {}).update(values)
    return parse_config(raw, base_dir=path.parent)


def parse_config(raw: dict[str, Any], base_dir: str | os.PathLike[str] = ".") -> ServiceConfig:
    """Validate a config mapping; relative paths resolve against ``base_dir``."""
    raw = dict(raw)
    base = Path(base_dir).resolve()
    storage = dict(raw.get("storage") or {})
    url = storage.get("url", StorageConfig().url)
    if isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url.removeprefix("sqlite:///")
        if rel and rel != ":memory:" and not Path(rel).is_absolute():
            storage["url"] = f"sqlite:///{base / rel}"
            raw["storage"] = storage
    auth = raw.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("key_file"), str):
        key_file = Path(auth["key_file"])
        raw["auth"] = {**auth, "key_file": key_file if key_file.is_absolute() else base / key_file}
    retrieval = raw.get("retrieval")
    if isinstance(retrieval, dict) and isinstance(retrieval.get("corpus"), str):
        corpus = Path(retrieval["corpus"])
        raw["retrieval"] = {**retrieval, "corpus": corpus if corpus.is_absolute() else base / corpus}
    gateway = raw.get("gateway")
    if isinstance(gateway, dict) and isinstance(gateway.get("features"), str):
        features = Path(gateway["features"])
        raw["gateway"] = {**gateway, "features": features if features.is_absolute() else base / features}
    try:
        return ServiceConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"invalid router config: {problems}") from None
