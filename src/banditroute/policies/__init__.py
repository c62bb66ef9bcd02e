"""Routing policies: pure numpy state machines behind :class:`~banditroute.policies.base.Policy`."""

from banditroute.policies.base import Policy
from banditroute.policies.exp3 import EXP3
from banditroute.policies.loglinear import LogLinearPG
from banditroute.policies.ridge import LinTS, LinUCB, RidgePolicy
from banditroute.policies.simple import FixedArm, Uniform

__all__ = ["EXP3", "FixedArm", "LinTS", "LinUCB", "LogLinearPG", "Policy", "RidgePolicy", "Uniform"]
