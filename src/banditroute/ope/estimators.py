"""Off-policy value estimators as per-sample terms.

Every estimator here is a mean of per-sample terms ``g_i`` (or, for SNIPS, a ratio of the means
of ``g_i`` and the importance weights ``w_i``), computed from the logged action ``a_i``, reward
``r_i``, the behaviour's probability vector ``μ_i``, the target's vector ``π_i`` and, for the
model-based ones, a reward model ``q̂_i = q̂(x_i, ·)``. With ``w_i = π_i(a_i)/μ_i(a_i)`` and
``q̂_π,i = Σ_a π_i(a) q̂_i(a)``:

=============  ===================================================  ====================================
name           term ``g_i``                                         reference
=============  ===================================================  ====================================
``ips``        ``w_i r_i``                                          Horvitz & Thompson 1952
``snips``      ``w_i r_i``, value ``Σ g / Σ w``                     Swaminathan & Joachims 2015
``dm``         ``q̂_π,i``                                           Beygelzimer & Langford 2009
``dr``         ``q̂_π,i + w_i (r_i − q̂_i(a_i))``                    Dudík, Langford & Li 2011
``switch-dr``  ``q̂_π,i + 1[w_i ≤ τ] w_i (r_i − q̂_i(a_i))``         Wang, Agarwal & Dudík 2017
``dr-os``      ``q̂_π,i + ŵ_i (r_i − q̂_i(a_i))``, ``ŵ = λw/(w²+λ)``  Su, Dimakopoulou, Krishnamurthy
                                                                    & Dudík 2020 (optimistic shrinkage)
=============  ===================================================  ====================================

Switch-DR falls back to the model where the weight exceeds ``τ`` (on whole rows, as in Open
Bandit Pipeline's implementation); DR-OS shrinks large weights smoothly. Both trade a little bias
for much less variance when the behaviour rarely plays what the target wants. Their ``τ`` and
``λ`` defaults are fixed, not tuned per log.

Because each estimator is a (ratio of) mean(s) of per-sample terms, its sufficient statistics add
up across shards (:mod:`banditroute.ope.stream`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from banditroute.core.registry import Registry
from banditroute.core.types import FloatArray, IntArray
from banditroute.core.validation import InputError, check_positive

DEFAULT_TAU = 20.0  # switch-DR weight threshold
DEFAULT_SHRINK = 1000.0  # DR-OS λ


@dataclass(frozen=True)
class Inputs:
    """What the terms are computed from, for ``n`` rows and ``M`` arms (validated by the caller)."""

    actions: IntArray  # (n,)
    rewards: FloatArray  # (n,)
    behaviour: FloatArray  # (n, M) μ
    target: FloatArray  # (n, M) π
    q_hat: FloatArray | None  # (n, M) or None

    @property
    def weights(self) -> FloatArray:
        rows = np.arange(self.actions.shape[0])
        out: FloatArray = self.target[rows, self.actions] / self.behaviour[rows, self.actions]
        return out

    def model_parts(self) -> tuple[FloatArray, FloatArray]:
        """``(q̂_π,i, r_i − q̂_i(a_i))``."""
        if self.q_hat is None:
            raise InputError("this estimator needs a reward model (q_hat)")
        rows = np.arange(self.actions.shape[0])
        return (self.target * self.q_hat).sum(axis=1), self.rewards - self.q_hat[rows, self.actions]


@dataclass(frozen=True)
class EstimatorSpec:
    """How an estimator turns :class:`Inputs` into terms ``g`` (and whether it is a ratio)."""

    terms: Callable[[Inputs, float], FloatArray]
    ratio: bool = False
    needs_model: bool = False
    default_param: float | None = None


def _ips(inp: Inputs, _: float) -> FloatArray:
    return inp.weights * inp.rewards


def _dm(inp: Inputs, _: float) -> FloatArray:
    return inp.model_parts()[0]


def _dr(inp: Inputs, _: float) -> FloatArray:
    base, resid = inp.model_parts()
    return base + inp.weights * resid


def _switch_dr(inp: Inputs, tau: float) -> FloatArray:
    base, resid = inp.model_parts()
    w = inp.weights
    return base + np.where(w <= tau, w, 0.0) * resid


def _dr_os(inp: Inputs, lam: float) -> FloatArray:
    base, resid = inp.model_parts()
    w = inp.weights
    return base + lam * w / (w * w + lam) * resid


ESTIMATORS: Registry[EstimatorSpec] = Registry(
    "estimator",
    {
        "ips": EstimatorSpec(_ips),
        "snips": EstimatorSpec(_ips, ratio=True),
        "dm": EstimatorSpec(_dm, needs_model=True),
        "dr": EstimatorSpec(_dr, needs_model=True),
        "switch-dr": EstimatorSpec(_switch_dr, needs_model=True, default_param=DEFAULT_TAU),
        "dr-os": EstimatorSpec(_dr_os, needs_model=True, default_param=DEFAULT_SHRINK),
    },
)


def check_estimators(names: object) -> tuple[str, ...]:
    """A non-empty sequence of known estimator names, without repeats."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise InputError(f"estimators must be a non-empty list of names from {list(ESTIMATORS)}")
    unknown = [n for n in names if n not in ESTIMATORS]
    if unknown or len(set(names)) != len(names):
        raise InputError(f"unknown or repeated estimators {names!r}; known: {', '.join(ESTIMATORS)}")
    return tuple(names)


def per_sample_terms(name: str, inputs: Inputs, param: float | None = None) -> FloatArray:
    """The terms ``g_i`` of estimator ``name`` (its tuning parameter defaults per the table above)."""
    spec = ESTIMATORS[check_estimators([name])[0]]
    value = spec.default_param if param is None else check_positive(param, f"{name} parameter")
    return spec.terms(inputs, 0.0 if value is None else value)
