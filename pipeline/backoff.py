"""Exponential backoff with jitter, for every retry of a transient failure (Kafka, ClickHouse). Pure."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int, *, base_s: float = 0.2, cap_s: float = 30.0, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number `attempt` (0-based): exponential, capped, with equal jitter.

    Half of the exponential step is fixed and half random, so many stages recovering from the same
    outage do not retry in lockstep, yet the wait never collapses to zero.
    """
    step = min(cap_s, base_s * (2 ** max(0, attempt)))
    return float(step / 2 + step / 2 * jitter())


class Backoff:
    """The delays of one run of consecutive failures: `next()` grows them, `reset()` after a success."""

    def __init__(self, *, base_s: float = 0.2, cap_s: float = 30.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0

    def next(self) -> float:
        """The wait before the next retry (and count the failure)."""
        delay = backoff_delay(self.attempt, base_s=self.base_s, cap_s=self.cap_s)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A success: the next failure starts again from the shortest wait."""
        self.attempt = 0
