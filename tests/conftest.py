"""Shared fixtures: a fixed-seed generator and small environment specs, so every test is reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.core.types import EnvSpec

SEED = 20240601


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator with a fixed seed (a new one per test, so tests do not share draws)."""
    return np.random.default_rng(SEED)


@pytest.fixture
def small_spec() -> EnvSpec:
    """Three arms, four features, rewards in [0, 1]: big enough to exercise every code path, fast."""
    return EnvSpec(n_arms=3, dim=4)
