"""ISO-8601 text → integer epoch milliseconds (UTC), the time unit of the whole contract. One parser for
every place that reads a time: webhook `createdAt`s (ingest, enrich), the read API's `from`/`to`, the
`--from`/`--to` options of replay and reconcile, and the times in Whereby's API answers.

Two rules, one parser:

- **strict** (the default; a webhook's `createdAt`): a date-time with an offset (`Z` or `±hh:mm`). A
  date-time without one is not what Whereby sends, and guessing its zone would move usage between days.
- **assume_utc** (what an operator or an API hands us): also a bare date (`2026-01-01`, midnight UTC) and a
  date-time without an offset, read as UTC, never as the host's zone.

Either way the text must name a real instant (no month 13, hour 25) and have ISO-8601's extended shape:
Python's `fromisoformat` alone would also take week dates, basic forms and hour-only times. The result
is exact (timedelta floor division; float timestamps can be off by a millisecond); digits below the
millisecond are truncated.

Webhook parsing is on both stages' hot path, so Whereby's own shape (`2023-10-31T13:09:44.373Z`) takes a
fast path: one cached calendar parse per second of events.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_COMMON_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", re.ASCII)
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
# `YYYY-MM-DDTHH:MM:SS` of Whereby's shape → epoch milliseconds. Events arrive roughly in time order, so
# most share a second with an earlier one. Only prefixes of texts that passed the full check are cached.
_SECONDS: dict[str, int] = {}
_SECONDS_CACHE_SIZE = 4096


def instant_ms(value: object, *, assume_utc: bool = False) -> int:
    """`value` (ISO-8601 text, see the module docstring for the two rules) as integer epoch milliseconds;
    ValueError for anything else (also for a non-string). Callers strip and bound the text themselves."""
    if value.__class__ is not str:
        raise ValueError("not a string")
    text: str = value  # type: ignore[assignment]
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        millis = text[20:23]
        second = _SECONDS.get(text[:19])
        if second is not None and millis.isascii() and millis.isdigit():
            return second + int(millis)
        if _COMMON_DATE_TIME.fullmatch(text):
            second = (datetime.fromisoformat(text[:19]) - _EPOCH_NAIVE) // _MS  # ValueError: not in the calendar
            if len(_SECONDS) >= _SECONDS_CACHE_SIZE:
                _SECONDS.clear()
            _SECONDS[text[:19]] = second
            return second + int(millis)
    if assume_utc and _DATE.fullmatch(text):
        day = date.fromisoformat(text)  # ValueError: not in the calendar
        return (datetime(day.year, day.month, day.day, tzinfo=UTC) - _EPOCH) // _MS
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise ValueError("not an ISO-8601 date-time")
    if match[1] is None and not assume_utc:
        raise ValueError("an ISO-8601 date-time without an offset")
    when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))  # ValueError: not in the calendar
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MS
