"""Routing policies: pure numpy state machines behind :class:`~banditroute.policies.base.Policy`."""

from banditroute.policies.base import Policy
from banditroute.policies.ridge import LinTS, LinUCB, RidgePolicy

__all__ = ["LinTS", "LinUCB", "Policy", "RidgePolicy"]
