"""The environment contract: where contexts and (full-information) rewards come from.

An environment streams blocks of rounds. Each block holds, for every round, the context, the
reward *every* arm would have produced (so the simulator reveals only the chosen one to the
policy but can compute regret exactly) and the expected reward of every arm (what regret is
measured against; equal to the realised reward for replayed tables).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from banditroute.core.types import EnvSpec, FloatArray
from banditroute.core.validation import InputError, check_generator, check_int


@dataclass(frozen=True)
class Rounds:
    """A block of ``n`` rounds with full information.

    Attributes:
        contexts: ``(n, d)`` or ``(n, M, d)``.
        rewards: ``(n, M)`` realised reward of every arm (only the chosen one is revealed).
        expected: ``(n, M)`` expected reward of every arm, for exact regret.
        costs: optional ``(n, M)`` cost of every arm (e.g. USD per LLM call).
    """

    contexts: FloatArray
    rewards: FloatArray
    expected: FloatArray
    costs: FloatArray | None = None

    def __len__(self) -> int:
        return int(self.rewards.shape[0])


def chunks(T: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    """``(start, length)`` of consecutive blocks covering rounds ``0 .. T-1``."""
    for start in range(0, T, chunk_size):
        yield start, min(chunk_size, T - start)


class Environment(ABC):
    """Base class: subclasses implement ``_sample`` (i.i.d. rounds) or override ``stream``."""

    spec: EnvSpec

    def stream(self, T: int, rng: np.random.Generator, chunk_size: int = 4096) -> Iterator[Rounds]:
        """Yield ``T`` rounds in blocks of at most ``chunk_size``; same generator, same rounds.

        Arguments are checked here, eagerly; order-dependent environments override ``_stream``.
        """
        T = check_int(T, "T")
        chunk_size = check_int(chunk_size, "chunk_size")
        check_generator(rng)
        return self._stream(T, rng, chunk_size)

    def _stream(self, T: int, rng: np.random.Generator, chunk_size: int) -> Iterator[Rounds]:
        """Default: i.i.d. blocks from ``_sample``."""
        for _, n in chunks(T, chunk_size):
            yield self._sample(n, rng)

    def rounds(self, T: int, rng: np.random.Generator) -> Rounds:
        """All ``T`` rounds as one block (convenient for small ``T``)."""
        blocks = list(self.stream(T, rng, chunk_size=T))
        if len(blocks) != 1:  # pragma: no cover - stream contract
            raise InputError("environment stream returned an unexpected number of blocks")
        return blocks[0]

    @abstractmethod
    def _sample(self, n: int, rng: np.random.Generator) -> Rounds:
        """Draw ``n`` rounds (i.i.d. environments) — order-dependent ones override ``stream``."""
