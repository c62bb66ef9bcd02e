"""A per-upstream circuit breaker: closed → open after ``failures`` consecutive failures → after
``cooldown_s`` one probe call (half-open) → closed on its success, open again on its failure.

While open, the upstream is masked out of the routing decision (the policy chooses among the
others); the probe is the next request that the policy routes to it after the cool-down. The
clock is injectable so the tests need not sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() - self.opened_at >= self.cooldown_s else OPEN

    def available(self) -> bool:
        """May a call go to this upstream now? (In half-open state: one probe at a time.)"""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self.probing)

    def started(self) -> None:
        """A call starts (in half-open state it is the probe)."""
        if self.state == HALF_OPEN:
            self.probing = True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def abandoned(self) -> None:
        """A call ended without a verdict (its request was cancelled): another probe may go."""
        self.probing = False

    def failed(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at = self.clock()
        self.probing = False
