"""Records → insertable lines and dimension rows."""

from __future__ import annotations

import orjson
import pytest

from sink.rows import CUSTOMERS_TABLE, USERS_TABLE, BadRow, dimension_row, event_line, single_lines_size


def test_a_compact_record_is_inserted_as_is() -> None:
    value = b'{"event_id":"e1"}'
    assert event_line(value) is value


def test_a_multi_line_record_becomes_one_line() -> None:
    assert event_line(b'{\n  "event_id": "e1"\n}') == b'{"event_id":"e1"}'


@pytest.mark.parametrize(
    ("value", "reason"), [(None, "empty_record"), (b"  ", "empty_record"), (b"{\n", "invalid_json")]
)
def test_records_clickhouse_would_skip_silently_are_refused(value: bytes | None, reason: str) -> None:
    with pytest.raises(BadRow) as info:
        event_line(value)
    assert info.value.reason == reason


def test_customer_and_user_records_become_rows_versioned_by_offset() -> None:
    doc = {"name": "Acme", "room_name_prefixes": ["acme"], "attributes": {"tier": 2}}
    assert dimension_row(b"customer:c1", orjson.dumps(doc), 7) == (
        CUSTOMERS_TABLE,
        ["c1", "Acme", ["acme"], {"tier": "2"}, False, 7],
    )
    table, row = dimension_row(b"user:ext-1", orjson.dumps({"customer_id": "c1"}), 8)
    assert (table, row) == (USERS_TABLE, ["ext-1", "ext-1", "c1", None, None, {}, False, 8])


def test_a_tombstone_is_a_deleted_row() -> None:
    assert dimension_row(b"user:ext-1", None, 9) == (USERS_TABLE, ["ext-1", None, None, None, None, {}, True, 9])


@pytest.mark.parametrize(
    ("key", "value"),
    [(b"team:x", b"{}"), (b"customer:", b"{}"), (b"customer:c1", b"[1]"), (b"customer:c1", b"{"),
     (b"customer:c1", b'{"room_name_prefixes": "acme"}'), (b"user:u", b'{"attributes": "x"}')],
)  # fmt: skip
def test_invalid_dimension_records_are_refused(key: bytes, value: bytes) -> None:
    with pytest.raises(BadRow) as info:
        dimension_row(key, value, 1)
    assert info.value.reason == "invalid_dimension"


def test_the_bulk_check_accepts_a_run_only_when_every_line_would_be_kept_as_it_is() -> None:
    clean = [b'{"a":1}', b'{"b": 2}', b"x" * 700]
    assert single_lines_size(clean) == sum(map(len, clean))
    assert all(event_line(v) is v for v in clean)
    for bad in (None, b"", b" \t ", b'{"a":\n1}', b'{"a":1}\r', b"\n"):
        assert single_lines_size([*clean, bad]) is None
    assert single_lines_size([]) is None  # nothing to take
