"""Environments: synthetic bandits and replayed reward tables behind one streaming contract."""

from banditroute.envs.base import Environment, Rounds
from banditroute.envs.linear import LinearBandit
from banditroute.envs.lowrank import LowRankExperts
from banditroute.envs.reward_table import RewardTable, RewardTableEnv

__all__ = ["Environment", "LinearBandit", "LowRankExperts", "RewardTable", "RewardTableEnv", "Rounds"]
