"""Name -> policy factory, so the CLI, the simulator and the service build policies one way.

Each entry is the class and the defaults that make the name mean something (``greedy`` is
ridge with ``epsilon=0``). Policies defined above this layer register themselves
(``REGISTRY.register``; ``two-stage`` in :mod:`banditroute.twostage`), so this module names no
higher layer; whoever builds policies by name imports those packages (the CLI, the service).
``make_policy`` fills ``n_arms``, ``dim`` and ``reward_range`` from an
:class:`~banditroute.core.types.EnvSpec`; keyword overrides win over entry defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from banditroute.core.registry import Registry, resolve
from banditroute.core.types import EnvSpec
from banditroute.core.validation import InputError
from banditroute.policies.base import Policy


@dataclass(frozen=True)
class PolicyEntry:
    """Where a policy class lives (imported lazily) and its defaults under this name."""

    target: str  # "module:Class"
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""

    def cls(self) -> type[Policy]:
        cls: type[Policy] = resolve(self.target)
        return cls

    def build(self, name: str, spec: EnvSpec, **overrides: Any) -> Policy:
        """The policy for ``spec``: entry defaults, then ``spec.reward_range``, then ``overrides``."""
        kwargs = {**self.defaults, "reward_range": spec.reward_range, **overrides}
        try:
            policy = self.cls()(spec.n_arms, spec.dim, **kwargs)
        except TypeError as exc:
            raise InputError(f"bad parameters for policy {name!r}: {exc}") from None
        return policy


REGISTRY: Registry[PolicyEntry] = Registry(
    "policy",
    {
        "uniform": PolicyEntry("banditroute.policies.simple:Uniform", summary="uniformly random arm"),
        "fixed": PolicyEntry("banditroute.policies.simple:FixedArm", summary="always the same arm (arm=...)"),
        "greedy": PolicyEntry("banditroute.policies.ridge:RidgePolicy", {"epsilon": 0.0}, "ridge regression, greedy"),
        "egreedy": PolicyEntry("banditroute.policies.ridge:RidgePolicy", {"epsilon": 0.05}, "ridge, ε-greedy"),
        "linucb": PolicyEntry("banditroute.policies.ridge:LinUCB", summary="disjoint LinUCB (Li et al. 2010)"),
        "lints": PolicyEntry("banditroute.policies.ridge:LinTS", summary="linear Thompson sampling"),
        "exp3": PolicyEntry("banditroute.policies.exp3:EXP3", summary="EXP3, context-free adversarial"),
        "loglinear": PolicyEntry(
            "banditroute.policies.loglinear:LogLinearPG", summary="log-linear softmax policy gradient (REINFORCE)"
        ),
        "hpg": PolicyEntry("banditroute.policies.hpg:HPG", summary="hypentropy policy gradient, log-quadratic (tuned)"),
        "hpg-theory": PolicyEntry(
            "banditroute.policies.hpg:TheoryHPG", summary="HPG with theory-style β, η (horizon=...)"
        ),
        "hpg-free": PolicyEntry("banditroute.policies.hpg:ParameterFreeHPG", summary="HPG, no user-set η, τ, β"),
        "hpg-fast": PolicyEntry(
            "banditroute.policies.hpg:HPG",
            {"mode": "fast", "fast_kwargs": {"rank": 32, "batch": 32}},
            "HPG, factored low-rank store (rank 32, eigen-update every 32 rounds) for large d",
        ),
        "hpg-euclid": PolicyEntry(
            "banditroute.policies.hpg:HPG",
            {"regularizer": "euclidean", "tau": None, "beta": None},
            "log-quadratic, Euclidean mirror map, unconstrained (HPG ablation)",
        ),
        "loglinear-omd": PolicyEntry(
            "banditroute.policies.hpg:HPG",
            {"features": "linear"},
            "log-linear with HPG's hypentropy OMD and ℓ1 ball (HPG ablation)",
        ),
        "safe-linucb": PolicyEntry(
            "banditroute.policies.conservative:Conservative",
            {"base": "linucb", "learn_from_fallback": True},
            "LinUCB within ε of the best fixed arm after a warm-up (conservative bandits)",
        ),
        "safe-hpg": PolicyEntry(
            "banditroute.policies.conservative:Conservative",
            {"base": "hpg-free"},
            "parameter-free HPG within ε of the best fixed arm after a warm-up (conservative bandits)",
        ),
        "constant": PolicyEntry("banditroute.policies.exp3:EXP3", summary="constant: EXP3 over models (ablation)"),
    },
)


def policy_names() -> list[str]:
    return REGISTRY.names()


def make_policy(name: str, spec: EnvSpec, **overrides: Any) -> Policy:
    """Build the policy registered as ``name`` for an environment with ``spec``."""
    return REGISTRY.lookup(name).build(name, spec, **overrides)
