"""pipeline.times: the one ISO-8601 parser (webhook createdAt, read API from/to, replay and reconcile
options, Whereby API times)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.times import instant_ms

JAN1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

BOTH_RULES = [
    ("2026-01-01T00:00:00.412Z", JAN1 + 412),
    ("2026-01-01T00:00:00.412z", JAN1 + 412),
    ("2026-01-01T01:00:00+01:00", JAN1),
    ("2025-12-31T23:00:00-0100", JAN1),
    ("2026-01-01 00:00Z", JAN1),
    ("2026-01-01T00:00:00.4129999Z", JAN1 + 412),  # below the millisecond: truncated
]
UTC_ONLY = [
    ("2026-01-01", JAN1),
    ("2026-01-01T00:00:00", JAN1),
    ("2026-01-01T00:00:00.250", JAN1 + 250),
]
NEITHER = [
    "",
    "yesterday",
    "2026-13-01T00:00:00Z",
    "2026-01-01T25:00Z",
    "2026-02-30",
    "20260101",  # basic form: fromisoformat alone would take it
    "2026-W01-1",  # week date: likewise
    "2026-01-01T09",  # hour only: likewise
    "01/02/2026",
    "2026-01-01T00:00:00+99:00",
    " 2026-01-01",  # callers strip; the parser does not guess
    "\uff12\uff10\uff12\uff16-01-01",  # full-width digits
]


@pytest.mark.parametrize(("text", "ms"), BOTH_RULES)
def test_date_times_with_an_offset_pass_both_rules(text: str, ms: int) -> None:
    assert instant_ms(text) == instant_ms(text, assume_utc=True) == ms


@pytest.mark.parametrize(("text", "ms"), UTC_ONLY)
def test_dates_and_zone_less_times_are_utc_only_when_asked(text: str, ms: int) -> None:
    assert instant_ms(text, assume_utc=True) == ms
    with pytest.raises(ValueError):
        instant_ms(text)  # a webhook's createdAt must say its zone


@pytest.mark.parametrize("text", NEITHER)
def test_what_is_no_instant_is_refused_by_both_rules(text: str) -> None:
    for assume_utc in (False, True):
        with pytest.raises(ValueError):
            instant_ms(text, assume_utc=assume_utc)


@pytest.mark.parametrize("value", [None, 5, 1.5, b"2026-01-01T00:00:00Z", ["2026-01-01T00:00:00Z"]])
def test_non_strings_are_value_errors(value: object) -> None:
    with pytest.raises(ValueError):
        instant_ms(value, assume_utc=True)


def test_the_cached_fast_path_answers_like_the_first_parse() -> None:
    first = instant_ms("2031-05-06T07:08:09.010Z")
    assert instant_ms("2031-05-06T07:08:09.999Z") == first + 989  # same second: from the cache
    with pytest.raises(ValueError):
        instant_ms("2031-05-06T07:08:09.x1yZ")  # a cached second never vouches for bad millis


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_any_instant_written_in_iso_reads_back_exactly(moment: datetime, offset_min: int) -> None:
    epoch, ms = datetime(1970, 1, 1, tzinfo=UTC), timedelta(milliseconds=1)
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    assert instant_ms(aware.isoformat()) == (aware - epoch) // ms
    assert instant_ms(moment.isoformat(), assume_utc=True) == (moment.replace(tzinfo=UTC) - epoch) // ms
