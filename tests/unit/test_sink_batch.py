"""Batching policy and deduplication tokens."""

from __future__ import annotations

from sink.batch import Batch, Limits, Record, halves, token


def rec(partition: int, offset: int, value: bytes = b"x" * 10) -> Record:
    return Record("t", partition, offset, None, value)


def test_a_batch_is_due_by_rows_bytes_or_age() -> None:
    limits = Limits(rows=3, bytes=100, seconds=1.0)
    batch = Batch(started=10.0)
    assert not batch.due(limits, now=99.0)  # empty: never due
    batch.track(rec(0, 0))
    assert not batch.due(limits, now=10.5)
    assert batch.due(limits, now=11.0)
    batch.track(rec(0, 1))
    batch.track(rec(0, 2))
    assert batch.due(limits, now=10.0) and batch.full(limits)
    big = Batch(started=10.0)
    big.track(rec(0, 0, b"y" * 100))
    assert big.due(limits, now=10.0)


def test_the_committed_offsets_are_one_past_the_last_of_each_partition() -> None:
    batch = Batch(started=0)
    for p, o in [(0, 5), (1, 9), (0, 6), (1, 10)]:
        batch.track(rec(p, o))
    assert batch.next_offsets == {("t", 0): 7, ("t", 1): 11}


def test_the_token_depends_only_on_table_and_offsets() -> None:
    a = [rec(0, 5), rec(1, 9), rec(0, 6)]
    b = [rec(1, 9, b"other"), rec(0, 6), rec(0, 5)]
    assert token("events", a) == token("events", b) == "events|3|t:0:5-6,t:1:9-9"
    assert token("events", a) != token("dim_users", a)
    left, right = halves(a)
    assert len({token("events", left), token("events", right), token("events", a)}) == 3


def test_long_tokens_are_hashed_but_stable() -> None:
    many = [Record(f"topic-{i}", i, i, None, b"") for i in range(50)]
    assert token("events", many) == token("events", list(reversed(many)))
    assert len(token("events", many)) < 100


def test_halves_are_contiguous_and_cover_everything() -> None:
    records = [rec(0, i) for i in range(5)]
    left, right = halves(records)
    assert [*left, *right] == records and len(left) == 2


def test_tracking_a_run_is_tracking_each_of_its_records() -> None:
    run = [rec(3, o, b"v" * o) for o in range(10, 15)]
    one_by_one, at_once = Batch(started=0), Batch(started=0)
    for r in run:
        one_by_one.track(r)
    at_once.track_run("t", 3, run, sum(len(r.value or b"") for r in run))
    assert (at_once.next_offsets, at_once.rows, at_once.bytes) == (
        one_by_one.next_offsets,
        one_by_one.rows,
        one_by_one.bytes,
    )


def test_the_token_of_interleaved_partitions_covers_each_partitions_whole_range() -> None:
    records = [rec(0, 5), rec(0, 6), rec(1, 9), rec(0, 4), rec(1, 8), rec(0, 7)]
    assert token("events", records) == "events|6|t:0:4-7,t:1:8-9"
