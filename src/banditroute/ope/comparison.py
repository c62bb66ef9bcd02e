"""Several target policies evaluated on one log: the one way a logged router is evaluated.

Both readers of the router's log — ``banditroute ope`` and the dashboard's periodic estimates
(``service/dashboard.py``) — describe their targets as :class:`Target` s and call
:func:`evaluate_targets`; they differ only in which targets, estimators and split they ask for.
Every target is evaluated on the rows after ``train_rows``; a target marked ``fit`` is first
trained on the rows before (:func:`~banditroute.ope.targets.fit_on_log`), so that it is never
evaluated on the rows it learned from; a target with an ``arm`` ("always this model") is evaluated
on the rows where that arm was allowed. The model-based estimators share one cross-fitted reward
model (:func:`~banditroute.ope.reward_model.cross_fit`) over the evaluated rows, or the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError
from banditroute.ope.estimators import ESTIMATORS
from banditroute.ope.log import BanditLog
from banditroute.ope.reward_model import cross_fit
from banditroute.ope.stream import INTERVALS, Estimate, evaluate
from banditroute.ope.targets import fit_on_log, target_probs
from banditroute.policies.base import Policy


@dataclass(frozen=True)
class Target:
    """A target policy: its display ``name``, the policy (frozen unless ``fit``), whether it is
    first trained on the log's training rows, and the arm it always plays, if that is what it is."""

    name: str
    policy: Policy
    fit: bool = False
    arm: int | None = None


@dataclass(frozen=True)
class TargetEstimate:
    """A target's estimates (by estimator name) and the number of rows they rest on."""

    name: str
    rows: int
    estimates: dict[str, Estimate]


def evaluate_targets(
    log: BanditLog,
    targets: Sequence[Target],
    *,
    train_rows: int = 0,
    estimators: Sequence[str] = tuple(ESTIMATORS),
    intervals: Sequence[str] = INTERVALS,
    alpha: float = 0.05,
    q_hat: FloatArray | None = None,
    min_rows: int = 1,
    seed: int = 0,
) -> list[TargetEstimate]:
    """Estimates of each target on ``log`` (module docstring), in the order given.

    Args:
        train_rows: the first ``train_rows`` rows train the ``fit`` targets; the rest are evaluated.
        q_hat: ``(log.n, M)`` reward predictions for the whole log (cross-fitted on the evaluated
            rows with ``seed`` if not given).
        min_rows: a target with fewer rows to be evaluated on (an arm rarely allowed) is left out.
        seed: the generator of stochastic targets' probabilities (one, across targets in order),
            the bootstrap and the cross-fitting.
    """
    if not 0 <= train_rows < log.n:
        raise InputError(f"train_rows must lie in [0, {log.n}) for a log of {log.n} rows, got {train_rows}")
    if train_rows == 0 and any(t.fit for t in targets):
        raise InputError("targets to fit on the log need train_rows > 0")
    test = log.subset(slice(train_rows, None))
    if q_hat is not None:
        q_hat = q_hat[train_rows:]
    elif any(ESTIMATORS[name].needs_model for name in estimators if name in ESTIMATORS):
        q_hat = cross_fit(test, seed=seed)
    train = log.subset(slice(0, train_rows)) if train_rows else None
    rng = np.random.default_rng(seed)
    out = []
    for target in targets:
        where = np.ones(test.n, dtype=bool)
        if target.arm is not None and test.allowed is not None:
            where = test.allowed[:, target.arm]
        if where.sum() < min_rows:
            continue
        rows = test if where.all() else test.subset(where)
        policy = fit_on_log(target.policy, train) if train is not None and target.fit else target.policy
        probs = target_probs(policy, rows, rng)
        estimates = evaluate(
            rows,
            probs,
            estimators=tuple(estimators),
            q_hat=None if q_hat is None else q_hat[where],
            alpha=alpha,
            intervals=tuple(intervals),
            seed=seed,
        )
        out.append(TargetEstimate(target.name, rows.n, estimates))
    return out
