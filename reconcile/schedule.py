"""Which period a scheduled run covers. Pure.

Periods are aligned to multiples of `every` since the epoch (with `--every 1h`: whole hours, UTC), so
consecutive runs tile time without gaps or overlaps however late each one starts. A period is due once
`lag` has passed after its end: Insights trails real time by 10-15 minutes (reference §4), so with
`--lag 30m` the period 09:00-10:00 is reconciled from 10:30 on.
"""

from __future__ import annotations


def latest_period(now_ms: int, every_s: int, lag_s: int) -> tuple[int, int]:
    """The newest complete period `[from, to)` at `now_ms`."""
    every_ms = every_s * 1000
    to_ms = (now_ms - lag_s * 1000) // every_ms * every_ms
    return to_ms - every_ms, to_ms


def periods_since(
    done_to_ms: int | None, now_ms: int, every_s: int, lag_s: int, *, limit: int
) -> list[tuple[int, int]]:
    """The complete periods after `done_to_ms` (the end of the last one done), oldest first, at most the
    `limit` newest; just the newest when nothing was done yet."""
    newest = latest_period(now_ms, every_s, lag_s)
    if done_to_ms is None:
        return [newest]
    every_ms = every_s * 1000
    periods: list[tuple[int, int]] = []
    to_ms = newest[1]
    while to_ms > done_to_ms and len(periods) < limit:
        periods.append((to_ms - every_ms, to_ms))
        to_ms -= every_ms
    return periods[::-1]


def next_due_ms(done_to_ms: int, every_s: int, lag_s: int) -> int:
    """When the period after the one ending at `done_to_ms` becomes due."""
    return done_to_ms + (every_s + lag_s) * 1000
