"""Reward models ``q̂(x, a)`` for the direct-method and doubly-robust estimators.

:class:`RidgeRewardModel` is one ridge regression per arm on ``(x, 1)`` (a bias feature), fitted
in closed form, predictions clipped to the reward range. :func:`cross_fit` predicts each row
with a model fitted on the *other* folds (Chernozhukov et al. 2018, "double/debiased machine
learning"; Dudík, Langford & Li 2011 fit q̂ on a separate split): a q̂ that has seen the row it
corrects would bias DR towards DM, and its interval would be too narrow.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray
from banditroute.core.validation import InputError, check_int, check_positive
from banditroute.ope.log import BanditLog


class RidgeRewardModel:
    """Per-arm ridge regression of the reward on ``(x, 1)``.

    Args:
        n_arms: number of arms ``M``.
        lam: ridge penalty ``λ`` (the bias is penalised too, lightly: ``λ·1e-3``).
        reward_range: predictions are clipped into it (``None``: no clipping).
    """

    def __init__(self, n_arms: int, *, lam: float = 1.0, reward_range: tuple[float, float] | None = (0.0, 1.0)):
        self.n_arms = check_int(n_arms, "n_arms")
        self.lam = check_positive(lam, "lam")
        self.reward_range = reward_range
        self.coef: FloatArray | None = None  # (M, d + 1)

    def fit(self, X: FloatArray, actions: np.ndarray, rewards: FloatArray) -> RidgeRewardModel:
        """Fit arm ``a`` on the rows where ``actions == a``; an arm never played predicts the mean reward."""
        Xt = np.hstack([X, np.ones((X.shape[0], 1))])
        D = Xt.shape[1]
        penalty = np.full(D, self.lam)
        penalty[-1] = self.lam * 1e-3
        coef = np.zeros((self.n_arms, D))
        fallback = float(np.mean(rewards)) if rewards.size else 0.0
        for a in range(self.n_arms):
            rows = actions == a
            if not rows.any():
                coef[a, -1] = fallback
                continue
            Xa, ra = Xt[rows], rewards[rows]
            coef[a] = np.linalg.solve(Xa.T @ Xa + np.diag(penalty), Xa.T @ ra)
        self.coef = coef
        return self

    def predict(self, X: FloatArray) -> FloatArray:
        """``(n, M)`` predicted rewards."""
        if self.coef is None:
            raise InputError("reward model is not fitted")
        q: FloatArray = X @ self.coef[:, :-1].T + self.coef[:, -1]
        if self.reward_range is not None:
            q = np.clip(q, *self.reward_range)
        return q


def cross_fit(log: BanditLog, *, folds: int = 2, lam: float = 1.0, seed: int = 0) -> FloatArray:
    """``(n, M)`` out-of-fold predictions: row ``i`` by a model fitted without ``i``'s fold."""
    folds = check_int(folds, "folds", minimum=2)
    if log.n < folds:
        raise InputError(f"cross-fitting with {folds} folds needs at least {folds} rows, got {log.n}")
    fold = np.random.default_rng(seed).permutation(log.n) % folds
    q = np.empty((log.n, log.n_arms))
    for k in range(folds):
        train = fold != k
        model = RidgeRewardModel(log.n_arms, lam=lam, reward_range=log.reward_range)
        model.fit(log.contexts[train], log.actions[train], log.rewards[train])
        q[~train] = model.predict(log.contexts[~train])
    return q
