"""The textbook linear contextual bandit with per-arm features (the LinUCB setting).

Each round every arm ``a`` shows its own feature vector ``x_{t,a} ~ N(0, I_d)`` and pays
``θ*ᵀx_{t,a} + noise · ε`` with one unknown ``θ*`` shared by all arms (Li et al. 2010, eq. 2;
Abbasi-Yadkori et al. 2011). ``θ*`` is uniform on the unit sphere, drawn from ``seed``; the
rounds come from the generator handed to :meth:`stream`. A block draws all its normals in one
call and ``θ*ᵀx`` is taken row by row, so chunked and one-block streams coincide bit for bit.
"""

from __future__ import annotations

import numpy as np

from banditroute.core.types import EnvSpec, FloatArray
from banditroute.core.validation import check_int, check_positive
from banditroute.envs.base import Environment, Rounds


class LinearBandit(Environment):
    """Per-arm Gaussian features, linear mean ``θ*ᵀx``, additive Gaussian noise.

    Args:
        n_arms: number of arms ``M``.
        dim: feature dimension ``d``.
        noise: standard deviation ``≥ 0`` of the reward noise.
        seed: integer seed of ``θ*``.
    """

    def __init__(self, n_arms: int = 20, dim: int = 10, *, noise: float = 0.1, seed: int = 0) -> None:
        M = check_int(n_arms, "n_arms")
        d = check_int(dim, "dim")
        self.noise = check_positive(noise, "noise", allow_zero=True)
        theta = np.random.default_rng(check_int(seed, "seed", minimum=0)).standard_normal(d)
        self.theta: FloatArray = theta / np.linalg.norm(theta)
        self.theta.flags.writeable = False
        self.spec = EnvSpec(n_arms=M, dim=d, per_arm=True, reward_range=None)

    def _sample(self, n: int, rng: np.random.Generator) -> Rounds:
        M, d = self.spec.n_arms, self.spec.dim
        G = rng.standard_normal((n, M * (d + 1)))  # per round: M feature rows, then M noise draws
        contexts = G[:, : M * d].reshape(n, M, d)
        expected = np.einsum("nmd,d->nm", contexts, self.theta)  # not BLAS: rounding independent of n
        return Rounds(contexts=contexts, rewards=expected + self.noise * G[:, M * d :], expected=expected)
