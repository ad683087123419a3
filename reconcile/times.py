"""Instants and durations as reconcile reads and writes them. Pure.

Everything inside is integer epoch milliseconds (UTC), the unit of the whole contract. Text comes in as
ISO-8601 from the command line and from Whereby's API (read by the shared :mod:`pipeline.times`), and
goes out in Whereby's own form (`2026-01-01T00:00:00.412Z`), the form the synthesized webhook bodies must
carry.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pipeline import times

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Anything outside 2000..2200 from an API is garbage, not a meeting (the store refuses it too).
API_MIN_MS = 946_684_800_000
API_MAX_MS = 7_258_118_400_000
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_MAX_TEXT = 64  # an ISO date-time is ~30 characters; longer text is not one


def parse_instant(name: str, raw: str) -> int:
    """An ISO date (`2026-01-01`, midnight UTC) or date-time (UTC unless it has an offset), in epoch ms.

    Raises ValueError with a message for the operator that names the option.
    """
    try:
        return times.instant_ms(raw.strip(), assume_utc=True)
    except ValueError:
        raise ValueError(
            f"{name} must be an ISO date (2026-01-31) or date-time (2026-01-31T12:00:00Z), got {raw!r}"
        ) from None


def parse_api_time(value: object) -> int | None:
    """An ISO-8601 date-time from Whereby's API in epoch ms, or None for anything else (wrong type, garbage,
    out of range): a field the API sends loosely must never crash a run."""
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        return None
    try:
        ms = times.instant_ms(value.strip(), assume_utc=True)
    except (ValueError, OverflowError):
        return None
    return ms if API_MIN_MS <= ms <= API_MAX_MS else None


def whereby_time(ms: int) -> str:
    """Epoch ms in Whereby's `createdAt` form: UTC, milliseconds, `Z` (`2023-10-31T13:09:44.373Z`)."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_duration(name: str, raw: str) -> int:
    """A duration such as `1h`, `30m`, `1h30m`, `90s`, `1d` (or plain seconds) in whole seconds, > 0.

    Raises ValueError with a message naming the option.
    """
    text = raw.strip().lower()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _DURATION.match(text)
        if not text or match is None:
            raise ValueError(f"{name} must be a duration such as 1h, 30m, 1h30m or 90s, got {raw!r}")
        days, hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if seconds <= 0:
        raise ValueError(f"{name} must be longer than zero, got {raw!r}")
    return seconds
