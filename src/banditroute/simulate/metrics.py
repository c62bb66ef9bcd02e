"""Regret, sub-optimality gap, reward and routing metrics; mean ± confidence interval over seeds.

Pure numpy functions over per-round arrays whose last axis is time (shape ``(T,)`` for one run or
``(S, T)`` for ``S`` seeds). With ``μ_t = max_m E[r_m | x_t]`` the per-context oracle, ``a_t`` the
chosen arm and ``π_t`` the distribution it was drawn from:

* regret ``R_T = Σ_t (μ_t − E[r_{a_t} | x_t])`` — against the best arm *for each context*, not the
  best fixed arm;
* sub-optimality gap ``g_t = μ_t − Σ_m π_t(m|x_t) E[r_m | x_t]`` — how far the *policy* (not the
  draw) is from the oracle at round ``t``; it is what "the policy has learned" means, free of the
  sampling noise of ``a_t``.

Since ``E[E[r_{a_t}|x_t] | history, x_t] = Σ_m π_t(m) E[r_m|x_t]``, ``R_T − Σ_t g_t`` is a
martingale with mean zero (and is exactly zero for deterministic, one-hot policies): the gap
curve is the expected regret increment.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError, check_int, check_unit_interval


def instant_regret(best: FloatArray, expected: FloatArray) -> FloatArray:
    """``μ_t − E[r_{a_t} | x_t]`` per round."""
    return np.asarray(best) - np.asarray(expected)


def cumulative_regret(best: FloatArray, expected: FloatArray) -> FloatArray:
    """Running sum of :func:`instant_regret` along the time axis."""
    return np.cumsum(instant_regret(best, expected), axis=-1)


def suboptimality_gap(best: FloatArray, value: FloatArray) -> FloatArray:
    """``μ_t − E_{π_t}[r | x_t]`` per round (``value`` is the policy's expected reward)."""
    return np.asarray(best) - np.asarray(value)


def final_window(T: int, fraction: float = 0.1) -> int:
    """Number of final rounds averaged for "final" metrics: ``ceil(fraction · T)``, at least one."""
    T = check_int(T, "T")
    fraction = check_unit_interval(fraction, "fraction")
    return max(1, int(np.ceil(fraction * T)))


def final_mean(x: FloatArray, fraction: float = 0.1) -> FloatArray:
    """Mean over the last :func:`final_window` rounds (last axis)."""
    x = np.asarray(x)
    return x[..., -final_window(x.shape[-1], fraction) :].mean(axis=-1)


def moving_average(x: FloatArray, window: int) -> FloatArray:
    """Trailing mean over ``window`` rounds (fewer at the start), same shape as ``x``; for curves."""
    window = check_int(window, "window")
    x = np.asarray(x, dtype=np.float64)
    c = np.cumsum(x, axis=-1)
    lagged = np.zeros_like(c)
    lagged[..., window:] = c[..., :-window]
    counts = np.minimum(np.arange(1, x.shape[-1] + 1), window)
    out: FloatArray = (c - lagged) / counts
    return out


def running_mean(x: FloatArray) -> FloatArray:
    """The average of ``x[:t+1]`` at every ``t`` (a run's average reward so far)."""
    out: FloatArray = np.cumsum(x, axis=-1) / np.arange(1, x.shape[-1] + 1)
    return out


def routing_shares(actions: IntArray, n_arms: int) -> FloatArray:
    """Fraction of rounds routed to each arm: shape ``(..., M)``, rows sum to one."""
    actions = np.asarray(actions)
    n_arms = check_int(n_arms, "n_arms")
    if actions.size and (actions.min() < 0 or actions.max() >= n_arms):
        raise InputError(f"actions must lie in [0, {n_arms})")
    onehot = actions[..., None] == np.arange(n_arms)
    out: FloatArray = onehot.mean(axis=-2)
    return out


def mean_ci(samples: FloatArray, confidence: float = 0.95) -> tuple[FloatArray, FloatArray]:
    """Mean over axis 0 (seeds) and the half-width of its Student-t confidence interval.

    ``half = t_{(1+c)/2, S−1} · s / sqrt(S)`` with ``s`` the sample standard deviation; ``nan`` when
    there is a single seed (no spread to estimate).
    """
    from scipy import stats  # imported here: scipy.stats takes seconds to import, the runner never needs it

    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] < 1:
        raise InputError("mean_ci needs at least one sample along axis 0")
    confidence = check_unit_interval(confidence, "confidence")
    S = x.shape[0]
    mean = x.mean(axis=0)
    if S == 1:
        return mean, np.full_like(mean, np.nan)
    half = stats.t.ppf(0.5 + confidence / 2, S - 1) * x.std(axis=0, ddof=1) / np.sqrt(S)
    return mean, half


def run_metrics(
    best: FloatArray, expected: FloatArray, value: FloatArray, reward: FloatArray, *, final_fraction: float = 0.1
) -> dict[str, FloatArray]:
    """Headline numbers of each run (one value per seed, arrays ``(S, T)`` in):

    ``regret`` (final cumulative regret), ``gap`` (run-average sub-optimality gap), ``final_gap``
    (its mean over the final window), ``reward`` (average realised reward).
    """
    gap = suboptimality_gap(best, value)
    return {
        "regret": instant_regret(best, expected).sum(axis=-1),
        "gap": gap.mean(axis=-1),
        "final_gap": final_mean(gap, final_fraction),
        "reward": np.asarray(reward).mean(axis=-1),
    }
