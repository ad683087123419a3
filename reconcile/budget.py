"""A points budget per minute for Whereby's API, so a large reconcile never starves the customer's own use.

Whereby's budget is per organisation and shared by every key (reference §4): a reconcile that spent it
all would make the customer's own API calls fail with 429 for the rest of the minute. This keeps our
own spending under `WHEREBY_API_POINTS_PER_MINUTE` over **any** 60-second window (a sliding log of
what was spent, not a bucket that refills: a bucket would allow twice the budget across a boundary).

The accounting is pure (`delay`, `spend`, with the clock passed in); `acquire` is the thin async part.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

WINDOW_S = 60.0
# What one Insights read is assumed to cost. Whereby prices requests at 1-10 points by complexity and
# does not say which Insights call costs what, so assume the middle ("reads over several resources");
# a 429 still tells us when we were wrong.
INSIGHTS_CALL_POINTS = 3


class PointsBudget:
    """At most `per_minute` points spent in any 60-second window."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._spent: collections.deque[tuple[float, int]] = collections.deque()
        self._clock = clock
        self._sleep = sleep
        self.waited_s = 0.0

    def _expire(self, now: float) -> None:
        while self._spent and self._spent[0][0] <= now - WINDOW_S:
            self._spent.popleft()

    def delay(self, cost: int, now: float) -> float:
        """Seconds to wait before `cost` points fit in the window ending then (0 when they fit now)."""
        cost = min(cost, self.per_minute)  # a call dearer than the whole budget waits for an empty window
        self._expire(now)
        total = sum(points for _, points in self._spent)
        if total + cost <= self.per_minute:
            return 0.0
        # The oldest spendings leave the window first: wait until enough of them have.
        excess = total + cost - self.per_minute
        for at, points in self._spent:
            excess -= points
            if excess <= 0:
                return max(0.0, at + WINDOW_S - now)
        return WINDOW_S  # unreachable: the whole window's spending covers any excess

    def spend(self, cost: int, now: float) -> None:
        """Record `cost` points spent at `now`."""
        self._spent.append((now, cost))

    async def acquire(self, cost: int) -> None:
        """Wait until `cost` points fit, then spend them."""
        while True:
            wait = self.delay(cost, self._clock())
            if wait <= 0:
                break
            self.waited_s += wait
            await self._sleep(wait)
        self.spend(min(cost, self.per_minute), self._clock())
