"""Environments: synthetic bandits and replayed reward tables behind one streaming contract."""

from banditroute.envs.base import Environment, EnvSpec, Rounds

__all__ = ["EnvSpec", "Environment", "Rounds"]
