"""Synthetic low-rank experts: each model is good on its own subspace of query space.

Expert ``m`` owns an orthonormal basis ``U_m`` (``d × s``); routing a unit-norm query ``x`` to it
pays, in expectation, ``μ_m(x) = clip(scale · ||U_mᵀ x||² + bias_m, 0, 1)`` — the energy of the
query inside the expert's subspace. This is the planted model behind hyperplane/projection
routing (an expert is a projector ``P_m = U_m U_mᵀ`` and ``xᵀP_m x = ||U_mᵀx||²``), so policies
that learn one quadratic form per arm can represent the oracle exactly, while linear ones cannot.

Queries are isotropic (uniform on the sphere), clustered (near one expert's subspace) or
drifting (clustered, with the favoured expert switching on a fixed schedule — a
non-stationary, adversarial order). Rewards are noise-free, Bernoulli or clipped Gaussian, and
``expected`` is always the exact conditional mean of the realised reward, so regret is exact.

Reproducibility: the problem instance (the ``U_m`` and the drift schedule) comes from ``seed``;
the rounds come from the generator given to :meth:`~LowRankExperts.stream`. Every round
consumes the same fixed number of normals, drawn for a whole block in one call, and products are
taken with ``np.einsum`` (row by row, unlike BLAS, whose rounding depends on the block size), so
a stream cut into chunks equals, bit for bit, the same stream drawn in one block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy.special import ndtr

from banditroute.core.types import EnvSpec, FloatArray, IntArray
from banditroute.core.validation import (
    InputError,
    check_contexts,
    check_finite,
    check_int,
    check_positive,
)
from banditroute.envs.base import Environment, Rounds, chunks

QUERY_MODES = ("isotropic", "clustered", "drift")
REWARD_NOISES = ("none", "bernoulli", "gaussian")


def clipped_gaussian_mean(mu: FloatArray, sigma: float) -> FloatArray:
    """Exact ``E[clip(mu + σε, 0, 1)]`` for ``ε ~ N(0, 1)``.

    With ``Y ~ N(mu, σ²)``, ``α = -mu/σ`` and ``β = (1 - mu)/σ``:
    ``E[clip(Y, 0, 1)] = P(Y > 1) + E[Y; 0 < Y < 1]
    = (1 - Φ(β)) + mu (Φ(β) - Φ(α)) + σ (φ(α) - φ(β))`` (truncated-normal first moment).
    """
    alpha = -mu / sigma
    beta = (1.0 - mu) / sigma
    out: FloatArray = ndtr(-beta) + mu * (ndtr(beta) - ndtr(alpha)) + sigma * (_normal_pdf(alpha) - _normal_pdf(beta))
    return out


def _normal_pdf(z: FloatArray) -> FloatArray:
    """Standard normal density φ(z) (scipy.stats would cost ~1 s of import time for this)."""
    out: FloatArray = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    return out


def _choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise InputError(f"{name} must be one of {options}, got {value!r}")
    return str(value)


class LowRankExperts(Environment):
    """Route unit-norm queries to ``n_arms`` experts, each strong on a random rank-``rank`` subspace.

    Args:
        n_arms: number of experts ``M``.
        dim: query dimension ``d``.
        rank: subspace dimension ``s`` of every expert (``1 <= s <= d``).
        queries: ``"isotropic"`` (uniform on the unit sphere), ``"clustered"`` (``x = normalise(U_c z
            + query_noise · g)`` with ``c`` uniform and ``z, g`` standard normal) or ``"drift"``
            (clustered, with ``c`` given by :meth:`drift_schedule` from the round index).
        query_noise: spread ``≥ 0`` of clustered queries around their expert's subspace.
        scale: multiplier ``> 0`` of the subspace energy ``||U_mᵀx||²`` (which lies in ``[0, 1]``).
        bias: ``None`` or a length-``M`` array added to every expert's mean before clipping.
        reward_noise: ``"none"`` (reward = mean), ``"bernoulli"`` (``r ~ Bernoulli(μ)``) or
            ``"gaussian"`` (``r = clip(μ + σε, 0, 1)``).
        reward_noise_scale: ``σ > 0`` of the Gaussian reward noise.
        drift_period: rounds between switches of the favoured expert in ``"drift"`` mode.
        seed: integer seed of the problem instance (expert subspaces, drift order).
    """

    def __init__(
        self,
        n_arms: int = 4,
        dim: int = 32,
        rank: int = 2,
        *,
        queries: str = "clustered",
        query_noise: float = 0.1,
        scale: float = 1.0,
        bias: Any = None,
        reward_noise: str = "none",
        reward_noise_scale: float = 0.1,
        drift_period: int = 2000,
        seed: int = 0,
    ) -> None:
        M = check_int(n_arms, "n_arms")
        d = check_int(dim, "dim")
        s = check_int(rank, "rank")
        if s > d:
            raise InputError(f"rank must be <= dim ({d}), got {rank!r}")
        self.queries = _choice(queries, "queries", QUERY_MODES)
        self.query_noise = check_positive(query_noise, "query_noise", allow_zero=True)
        self.scale = check_positive(scale, "scale")
        self.reward_noise = _choice(reward_noise, "reward_noise", REWARD_NOISES)
        self.reward_noise_scale = check_positive(reward_noise_scale, "reward_noise_scale")
        self.drift_period = check_int(drift_period, "drift_period")
        seed = check_int(seed, "seed", minimum=0)
        if bias is None:
            self.bias: FloatArray = np.zeros(M)
        else:
            try:
                self.bias = np.array(bias, dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"bias must be None or a numeric array of length {M}") from None
            if self.bias.shape != (M,):
                raise InputError(f"bias must have shape ({M},), got {self.bias.shape}")
            check_finite(self.bias, "bias")

        gen = np.random.default_rng(seed)
        # Q factor of a Gaussian matrix: an orthonormal basis of a uniformly random s-dim subspace.
        self.experts: FloatArray = np.linalg.qr(gen.standard_normal((M, d, s)))[0]
        # Order in which "drift" mode favours the experts, one block of drift_period rounds each.
        self.drift_order: IntArray = gen.permutation(M).astype(np.int64)
        self.rank = s
        self._stacked = self.experts.transpose(1, 0, 2).reshape(d, M * s)  # [U_0 | U_1 | ...]: all U_mᵀx at once
        for arr in (self.experts, self.drift_order, self.bias, self._stacked):
            arr.flags.writeable = False  # the instance is fixed by seed; nothing may edit it later
        self.spec = EnvSpec(
            n_arms=M,
            dim=d,
            per_arm=False,
            reward_range=(0.0, 1.0),
            arm_names=tuple(f"expert{m}" for m in range(M)),
        )
        # Normals per round: cluster choice, z (s), g (d), reward noise (one per arm).
        self._width = 1 + s + d + M

    # ------------------------------------------------------------------ oracle
    def mean_rewards(self, X: Any) -> FloatArray:
        """Noise-free means ``μ(x) = clip(scale·||U_mᵀx||² + bias, 0, 1)``, shape ``(n, M)``."""
        return self._means(self._check_queries(X))

    def expected_rewards(self, X: Any) -> FloatArray:
        """The oracle: exact ``E[reward | x]`` of every expert for queries ``X`` (``(n, d)`` → ``(n, M)``).

        Equal to :meth:`mean_rewards` except under Gaussian noise, where clipping to ``[0, 1]``
        shifts the mean (see :func:`clipped_gaussian_mean`).
        """
        mu = self.mean_rewards(X)
        if self.reward_noise == "gaussian":
            return clipped_gaussian_mean(mu, self.reward_noise_scale)
        return mu

    def drift_schedule(self, t: Any) -> IntArray:
        """Favoured expert at (0-based) round indices ``t`` in ``"drift"`` mode: block
        ``t // drift_period`` goes to ``drift_order[block mod M]``, cycling through all experts."""
        blocks = np.asarray(t, dtype=np.int64) // self.drift_period
        out: IntArray = self.drift_order[blocks % self.spec.n_arms]
        return out

    # ------------------------------------------------------------------ rounds
    def _stream(self, T: int, rng: np.random.Generator, chunk_size: int) -> Iterator[Rounds]:
        """In ``"drift"`` mode round ``t`` (counted from 0 within this stream) draws its query near
        expert :meth:`drift_schedule` ``(t)``; otherwise rounds are i.i.d."""
        if self.queries != "drift":
            yield from super()._stream(T, rng, chunk_size)
            return
        for start, n in chunks(T, chunk_size):
            yield self._draw(n, rng, self.drift_schedule(np.arange(start, start + n)))

    def _sample(self, n: int, rng: np.random.Generator) -> Rounds:
        clusters = self.drift_schedule(np.arange(n)) if self.queries == "drift" else None
        return self._draw(n, rng, clusters)

    def _draw(self, n: int, rng: np.random.Generator, clusters: IntArray | None) -> Rounds:
        """``n`` rounds from one ``(n, width)`` block of standard normals; ``clusters`` fixes the
        query clusters (drift mode), otherwise clustered queries pick theirs uniformly.

        Columns per round: ``[cluster | z (s) | g (d) | noise (M)]``. The cluster choice and the
        Bernoulli draws use ``Φ(normal)``, which is uniform on ``(0, 1)``.
        """
        M, d, s = self.spec.n_arms, self.spec.dim, self.rank
        G = rng.standard_normal((n, self._width))
        z, g, eps = G[:, 1 : 1 + s], G[:, 1 + s : 1 + s + d], G[:, 1 + s + d :]
        if self.queries == "isotropic":
            X = g.copy()
        else:
            if clusters is None:
                clusters = np.minimum((ndtr(G[:, 0]) * M).astype(np.int64), M - 1)
            X = self.query_noise * g
            for m in range(M):  # X += U_c z, grouped by cluster
                rows = clusters == m
                X[rows] += np.einsum("ns,ds->nd", z[rows], self.experts[m])
        X /= np.linalg.norm(X, axis=1, keepdims=True)

        mu = self._means(X)
        if self.reward_noise == "none":
            return Rounds(contexts=X, rewards=mu, expected=mu.copy())
        if self.reward_noise == "bernoulli":
            return Rounds(contexts=X, rewards=(ndtr(eps) < mu).astype(np.float64), expected=mu)
        sigma = self.reward_noise_scale
        rewards = np.clip(mu + sigma * eps, 0.0, 1.0)
        return Rounds(contexts=X, rewards=rewards, expected=clipped_gaussian_mean(mu, sigma))

    def _means(self, X: FloatArray) -> FloatArray:
        proj = np.einsum("nd,dk->nk", X, self._stacked).reshape(len(X), self.spec.n_arms, self.rank)  # all U_mᵀx
        energy = np.square(proj).sum(axis=-1)
        out: FloatArray = np.clip(self.scale * energy + self.bias, 0.0, 1.0)
        return out

    def _check_queries(self, X: Any) -> FloatArray:
        arr = check_contexts(X, self.spec.n_arms, self.spec.dim)
        if arr.ndim != 2:
            raise InputError(f"queries must have shape (n, {self.spec.dim}), got {arr.shape}")
        return arr
