"""Kafka records → what is inserted into ClickHouse. Pure functions.

Enriched events are inserted as the JSON the enrich stage wrote (JSONEachRow into `events_input`):
ClickHouse converts them, and rejects a malformed one, which the writer then isolates. Here we only
make sure one record is one line. Dimension records are few: each is decoded and validated by
`pipeline.dimensions.decode` (the same function enrich applies, so a record is stored here exactly when
enrich uses it) and inserted as a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from pipeline import contract
from pipeline.dimensions import Customer, DimensionError, Erasure, Tombstone, User, decode
from pipeline.failures import Failure
from sink.batch import RecordLike

CUSTOMER_COLUMNS = ("customer_id", "name", "room_name_prefixes", "attributes", "deleted", "version")
USER_COLUMNS = ("external_id", "user_id", "customer_id", "name", "email", "attributes", "deleted", "version")
CUSTOMERS_TABLE = "dim_customers"
USERS_TABLE = "dim_users"


class BadRow(Failure):
    """The record cannot become a row; `reason` is a bounded code (a metric label)."""


def event_line(value: bytes | None) -> bytes:
    """One enriched record as one JSONEachRow line.

    An empty record would be skipped by ClickHouse without a word, so it is refused here. A record
    spread over several lines (valid JSON, pretty-printed) is re-serialised, since JSONEachRow would
    read each line as a row.
    """
    if value is None or not value.strip():
        raise BadRow("empty_record", "enriched record has no value")
    if b"\n" not in value and b"\r" not in value:
        return value
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        raise BadRow("invalid_json", "enriched record is not valid JSON") from None


def single_lines_size(values: Sequence[bytes | None]) -> int | None:
    """The total size of `values` when :func:`event_line` would return every one of them unchanged
    (none is empty, blank or spread over several lines), else None (then check them one by one).
    A few C-level passes over the whole run instead of a Python step per value."""
    if not all(values):  # None or b""
        return None
    lines = cast(Sequence[bytes], values)
    if any(map(bytes.isspace, lines)):  # blank: what `not value.strip()` refuses
        return None
    joined = b"\n".join(lines)
    if joined.count(b"\n") != len(lines) - 1 or b"\r" in joined:
        return None
    return len(joined) - len(lines) + 1


def readable_run(records: Sequence[RecordLike]) -> bool:
    """True when this release reads every record of a polled run: none carries a `contract-version` it
    does not know (records without one are version 1, read too). One pass over the headers, no decoding:
    a record that fails is then handled alone (:func:`pipeline.contract.version_failure`, dead-lettered)."""
    readable, version = contract.READABLE_VERSIONS, contract.HEADER_CONTRACT_VERSION
    for record in records:
        for name, value in record.headers:
            if name == version and value not in readable:
                return False
    return True


def dimension_row(key: bytes | None, value: bytes | None, offset: int) -> tuple[str, list[Any]] | None:
    """(table, row) for one record of the dimensions topic; a tombstone becomes a `deleted` row; None for a
    valid record of a kind the sink does not store (an erasure is applied, not stored: `erasure_change`).
    BadRow (`invalid_dimension`) when it is invalid.

    The record's offset is its version: the topic has one partition, so offsets order all updates.
    """
    try:
        record = decode(key, value)
    except DimensionError as exc:
        raise BadRow(exc.reason, str(exc)) from None
    if isinstance(record, Customer):
        prefixes = list(record.room_name_prefixes)
        return CUSTOMERS_TABLE, [record.customer_id, record.name, prefixes, dict(record.attributes), False, offset]
    if isinstance(record, User):
        return USERS_TABLE, [
            record.external_id,
            record.user_id,
            record.customer_id,
            record.name,
            record.email,
            dict(record.attributes),
            False,
            offset,
        ]
    if isinstance(record, Tombstone):
        if record.kind == contract.DIM_CUSTOMER_PREFIX:
            return CUSTOMERS_TABLE, [record.ident, None, [], {}, True, offset]
        if record.kind == contract.DIM_USER_PREFIX:
            return USERS_TABLE, [record.ident, None, None, None, None, {}, True, offset]
    return None


def erasure_change(key: bytes | None, value: bytes | None) -> Erasure | Tombstone | None:
    """For a record of the dimensions topic: the erasure it records (`erase:` key), or its withdrawal (a
    tombstone on that key), else None. Invalid records are `dimension_row`'s to reject; None here."""
    if not key or not key.startswith(contract.DIM_ERASE_PREFIX.encode()):
        return None
    try:
        record = decode(key, value)
    except DimensionError:
        return None
    return record if isinstance(record, Erasure | Tombstone) else None


ARCHIVE_TABLE = "raw_archive"
ARCHIVE_COLUMNS = (
    "received_at",
    "event_id",
    "event_type",
    "room_name",
    "source",
    "body",
    "topic_partition",
    "topic_offset",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def archive_row(record: RecordLike) -> list[Any]:
    """The `raw_archive` row of one raw-topic record: its body as received, with what ingest put in the
    headers (never parsed here: the body is archived whatever it holds; replay judges it later)."""
    headers = contract.headers_dict(record.headers)
    received = headers.get(contract.HEADER_RECEIVED_AT_MS, "")
    received_ms = int(received) if received.isdigit() else record.timestamp
    return [
        _EPOCH + timedelta(milliseconds=received_ms),
        headers.get(contract.HEADER_EVENT_ID, ""),
        headers.get(contract.HEADER_EVENT_TYPE, ""),
        (record.key or b"").decode("utf-8", "replace"),
        headers.get(contract.HEADER_EVENT_SOURCE) or contract.SOURCE_WEBHOOK,
        record.value or b"",
        record.partition,
        record.offset,
    ]
