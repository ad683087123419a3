"""Kafka records → what is inserted into ClickHouse. Pure functions.

Enriched events are inserted as the JSON the enrich stage wrote (JSONEachRow into `events_input`):
ClickHouse converts them, and rejects a malformed one, which the writer then isolates. Here we only
make sure one record is one line. Dimension records are few, so they are validated here and inserted
as rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from pipeline import contract
from sink.batch import RecordLike

CUSTOMER_COLUMNS = ("customer_id", "name", "room_name_prefixes", "attributes", "deleted", "version")
USER_COLUMNS = ("external_id", "user_id", "customer_id", "name", "email", "attributes", "deleted", "version")
CUSTOMERS_TABLE = "dim_customers"
USERS_TABLE = "dim_users"


class BadRow(Exception):
    """The record cannot become a row; `reason` is a bounded code (a metric label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str | int):
        return str(value)
    raise BadRow("invalid_dimension", f"expected a string, got {type(value).__name__}")


def _attributes(doc: dict[str, Any]) -> dict[str, str]:
    attrs = doc.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise BadRow("invalid_dimension", "`attributes` must be an object")
    return {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in attrs.items()}


def dimension_row(key: bytes | None, value: bytes | None, offset: int) -> tuple[str, list[Any]]:
    """(table, row) for one record of the dimensions topic; a tombstone becomes a `deleted` row.

    The record's offset is its version: the topic has one partition, so offsets order all updates.
    """
    text = (key or b"").decode("utf-8", "replace")
    if text.startswith(contract.DIM_CUSTOMER_PREFIX):
        kind, ident = CUSTOMERS_TABLE, text.removeprefix(contract.DIM_CUSTOMER_PREFIX)
    elif text.startswith(contract.DIM_USER_PREFIX):
        kind, ident = USERS_TABLE, text.removeprefix(contract.DIM_USER_PREFIX)
    else:
        raise BadRow("invalid_dimension", f"dimension key {text[:80]!r} must start with 'customer:' or 'user:'")
    if not ident:
        raise BadRow("invalid_dimension", "dimension key has an empty id")
    if value is None:
        if kind == CUSTOMERS_TABLE:
            return kind, [ident, None, [], {}, True, offset]
        return kind, [ident, None, None, None, None, {}, True, offset]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise BadRow("invalid_dimension", "dimension record is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BadRow("invalid_dimension", "dimension record must be a JSON object")
    if kind == CUSTOMERS_TABLE:
        prefixes = doc.get("room_name_prefixes") or []
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise BadRow("invalid_dimension", "`room_name_prefixes` must be a list of strings")
        return kind, [ident, _text(doc.get("name")), prefixes, _attributes(doc), False, offset]
    return kind, [
        ident,
        _text(doc.get("user_id")) or ident,
        _text(doc.get("customer_id")),
        _text(doc.get("name")),
        _text(doc.get("email")),
        _attributes(doc),
        False,
        offset,
    ]


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
