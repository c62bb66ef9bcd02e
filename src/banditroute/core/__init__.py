"""Core types and numerics shared by every layer: decisions, validation, sampling, linear algebra."""

from banditroute.core.types import BatchDecision, Decision
from banditroute.core.validation import InputError

__all__ = ["BatchDecision", "Decision", "InputError"]
