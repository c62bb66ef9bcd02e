"""Off-policy evaluation: estimate what a target policy would earn from a log another policy made.

``log`` (logged decisions with full probability vectors), ``estimators`` (IPS, SNIPS, DM, DR,
switch-DR, DR-OS as per-sample terms), ``reward_model`` (cross-fitted ridge ``q̂``), ``stream``
(additive sufficient statistics, normal / Poisson-bootstrap / Euclidean-likelihood intervals),
``targets`` (a policy's probabilities on a log) and ``experiments`` (evaluate the evaluators on
reward tables with known truth).
"""

from banditroute.ope.estimators import ESTIMATORS
from banditroute.ope.log import BanditLog, collect_log
from banditroute.ope.stream import INTERVALS, Estimate, Moments, OPEAccumulator, evaluate
from banditroute.ope.targets import fit_on_log, target_probs

__all__ = [
    "ESTIMATORS",
    "INTERVALS",
    "BanditLog",
    "Estimate",
    "Moments",
    "OPEAccumulator",
    "collect_log",
    "evaluate",
    "fit_on_log",
    "target_probs",
]
