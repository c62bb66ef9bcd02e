"""Off-policy evaluation: estimate what a target policy would earn from a log another policy made.

``log`` (logged decisions with full probability vectors), ``estimators`` (IPS, SNIPS, DM, DR,
switch-DR, DR-OS as per-sample terms), ``reward_model`` (cross-fitted ridge ``q̂``), ``stream``
(additive sufficient statistics, normal / Poisson-bootstrap / Euclidean-likelihood intervals),
and ``targets`` (a policy's probabilities on a log). Evaluating the evaluators on reward tables
with known truth is a study: :mod:`banditroute.studies.ope_evaluation`.
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
