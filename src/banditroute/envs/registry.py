"""Name -> environment factory, so the CLI and experiment configs build environments one way.

Each entry names a constructor, imported lazily, and a one-line summary; the options an
environment accepts are read from the constructor's signature, so the registry cannot drift from
the code. ``make_env(name, **options)`` rejects unknown option names before calling the
constructor, which validates the values. The ``table`` entry replays a saved
:class:`~banditroute.envs.reward_table.RewardTable` given ``path=...``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from banditroute.core.registry import Registry, resolve
from banditroute.core.validation import InputError
from banditroute.envs.base import Environment


def load_table_env(path: str, **options: Any) -> Environment:
    """Replay the reward table saved at ``path`` (``RewardTable.save``); ``options`` go to ``RewardTableEnv``."""
    from banditroute.envs.reward_table import RewardTable, RewardTableEnv

    env: Environment = RewardTableEnv(RewardTable.load(path), **options)
    return env


@dataclass(frozen=True)
class EnvEntry:
    """Where an environment constructor lives (``"module:callable"``) and what it is.

    ``forwards_to`` names the constructor that receives a factory's ``**options`` (for listing them).
    """

    target: str
    summary: str
    forwards_to: str = ""
    hidden: tuple[str, ...] = ()

    def factory(self) -> Any:
        return resolve(self.target)

    def options(self) -> dict[str, Any]:
        """Option name -> default (``inspect.Parameter.empty`` when required)."""
        params = _keyword_params(self.factory())
        if self.forwards_to:
            params.update(_keyword_params(resolve(self.forwards_to)))
        return {k: v for k, v in params.items() if k not in self.hidden}


def _keyword_params(fn: Any) -> dict[str, Any]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in inspect.signature(fn).parameters.values() if p.kind in kinds}


ENV_REGISTRY: Registry[EnvEntry] = Registry(
    "environment",
    {
        "lowrank": EnvEntry(
            "banditroute.envs.lowrank:LowRankExperts",
            "synthetic low-rank experts: expert m's reward is ||U_mᵀx||²; clustered/isotropic/drifting queries",
        ),
        "linear": EnvEntry(
            "banditroute.envs.linear:LinearBandit",
            "linear bandit: shared θ*, per-arm Gaussian contexts, reward θ*ᵀx_a + Gaussian noise",
        ),
        "table": EnvEntry(
            "banditroute.envs.registry:load_table_env",
            "replay a saved RewardTable (path=FILE.npz) in iid / shuffle / blocks / periodic order",
            forwards_to="banditroute.envs.reward_table:RewardTableEnv",
            hidden=("table",),
        ),
    },
)


def env_names() -> list[str]:
    return ENV_REGISTRY.names()


def make_env(name: str, **options: Any) -> Environment:
    """Build the environment registered as ``name`` with keyword ``options``."""
    entry = ENV_REGISTRY.lookup(name)
    known = entry.options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)} for environment {name!r}; known: {', '.join(known)}")
    missing = [k for k, default in known.items() if default is inspect.Parameter.empty and k not in options]
    if missing:
        raise InputError(f"environment {name!r} needs option(s) {', '.join(missing)}")
    env: Environment = entry.factory()(**options)
    return env
