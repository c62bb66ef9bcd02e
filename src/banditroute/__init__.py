"""banditroute: route each query to the best of several models, learning from bandit feedback."""

from banditroute.core.types import BatchDecision, Decision
from banditroute.core.validation import InputError

__version__ = "0.1.0"
__all__ = ["BatchDecision", "Decision", "InputError", "__version__"]
