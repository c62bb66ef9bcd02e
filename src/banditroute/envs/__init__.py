"""Environments: synthetic bandits and replayed reward tables behind one streaming contract."""

from banditroute.envs.base import Environment, EnvSpec, Rounds
from banditroute.envs.linear import LinearBandit
from banditroute.envs.lowrank import LowRankExperts
from banditroute.envs.reward_table import RewardTable, RewardTableEnv

__all__ = ["EnvSpec", "Environment", "LinearBandit", "LowRankExperts", "RewardTable", "RewardTableEnv", "Rounds"]
