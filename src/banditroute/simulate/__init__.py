"""Simulation: drive policies over environments for many seeds, measure regret and gap.

``runner`` and ``metrics`` need only numpy/scipy; ``experiment`` (resumable runs on disk) and
``results`` (Parquet, tables, figures) use the ``[cli]`` extra and are imported explicitly.
"""

from banditroute.simulate.metrics import (
    cumulative_regret,
    final_mean,
    mean_ci,
    routing_shares,
    run_metrics,
    suboptimality_gap,
)
from banditroute.simulate.runner import Trace, registry_factory, run_seed, simulate, stack

__all__ = [
    "Trace",
    "cumulative_regret",
    "final_mean",
    "mean_ci",
    "registry_factory",
    "routing_shares",
    "run_metrics",
    "run_seed",
    "simulate",
    "stack",
    "suboptimality_gap",
]
