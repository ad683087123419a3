"""Enrichment versions: strictly increasing microsecond timestamps.

The sink keeps, per event id, the enrichment with the highest `enrichment_version`. Microseconds make
a later enrichment (a replay started after the live one) outrank an earlier one even within the same
millisecond, and the clock never hands out the same or a smaller value twice in one process, even if
the wall clock steps back.
"""

from __future__ import annotations

import time


class VersionClock:
    """Hands out strictly increasing enrichment versions (epoch microseconds, bumped on collision)."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        """A version greater than every version this clock returned before."""
        now = time.time_ns() // 1000
        self._last = now if now > self._last else self._last + 1
        return self._last
