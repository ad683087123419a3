"""Splitting a rejected batch to isolate bad rows, against a fake ClickHouse."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from sink.batch import Record
from sink.writer import FatalInsertError, RetryLater, write_split


class FakeClickHouse:
    """Rejects any insert holding a record whose value is b'bad'; remembers tokens of accepted inserts."""

    def __init__(self, error: str = "Code: 27. DB::Exception: Cannot parse input") -> None:
        self.error = error
        self.stored: dict[str, list[int]] = {}
        self.attempts = 0

    def insert(self, records: Sequence[Record], dedup_token: str) -> None:
        self.attempts += 1
        if any(r.value == b"bad" for r in records):
            raise DatabaseError(self.error)
        self.stored.setdefault(dedup_token, [r.offset for r in records])  # deduplicated like ClickHouse


def batch(n: int, bad: set[int]) -> list[Record]:
    return [Record("t", 0, i, None, b"bad" if i in bad else b"ok") for i in range(n)]


def test_a_clean_batch_is_one_insert() -> None:
    ch = FakeClickHouse()
    outcome = write_split("events", batch(100, set()), ch.insert)
    assert (outcome.inserted, outcome.inserts, outcome.rejected) == (100, 1, [])


@pytest.mark.parametrize("bad", [{0}, {99}, {3, 4}, {0, 50, 99}, set(range(0, 100, 10))])
def test_bad_rows_are_isolated_and_every_good_row_inserted_once(bad: set[int]) -> None:
    ch = FakeClickHouse()
    outcome = write_split("events", batch(100, bad), ch.insert)
    assert sorted(d.record.offset for d in outcome.rejected) == sorted(bad)
    stored = sorted(o for offsets in ch.stored.values() for o in offsets)
    assert stored == [i for i in range(100) if i not in bad]
    assert outcome.inserted == 100 - len(bad)
    assert all(d.reason == "rejected_by_clickhouse" and "Cannot parse" in d.detail for d in outcome.rejected)


def test_one_bad_row_costs_logarithmically_many_inserts() -> None:
    ch = FakeClickHouse()
    write_split("events", batch(1024, {517}), ch.insert)
    assert ch.attempts <= 2 * 10 + 1


def test_a_retriable_error_is_raised_for_the_caller_to_back_off() -> None:
    ch = FakeClickHouse("Code: 242. DB::Exception: Table is in readonly mode (TABLE_IS_READ_ONLY)")
    with pytest.raises(RetryLater) as info:
        write_split("events", batch(10, {3}), ch.insert)
    assert info.value.failure.label == "readonly"


def test_a_fatal_error_stops_without_dead_lettering() -> None:
    ch = FakeClickHouse("Code: 16. DB::Exception: No such column (NO_SUCH_COLUMN_IN_TABLE)")
    with pytest.raises(FatalInsertError):
        write_split("events", batch(10, {3}), ch.insert)


def test_a_retry_after_a_partial_split_duplicates_nothing() -> None:
    """Halves inserted before a retriable error carry their own tokens; the retry re-sends them as no-ops."""
    ch = FakeClickHouse()
    calls = {"n": 0}

    def flaky(records: Sequence[Record], dedup_token: str) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise DatabaseError("Code: 210. DB::Exception: Connection reset (NETWORK_ERROR)")
        ch.insert(records, dedup_token)

    records = batch(16, {1})
    with pytest.raises(RetryLater):
        write_split("events", records, flaky)
    write_split("events", records, ch.insert)
    stored = sorted(o for offsets in ch.stored.values() for o in offsets)
    assert stored == [i for i in range(16) if i != 1]
