"""Reconciliation topic records → rows of the `reconciliation` table. Pure.

The record shape is `pipeline.contract.ReconciliationRecord` (schema 1). A record this sink cannot read
(not JSON, a missing or mistyped field, a schema newer than it knows) raises BadRow and is dead-lettered
like any bad record, so it can be replayed after an upgrade.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline import contract
from sink.rows import BadRow

RECONCILIATION_TABLE = "reconciliation"
RECONCILIATION_COLUMNS = (
    "run_id",
    "checked_at",
    "period_from",
    "period_to",
    "room_session_id",
    "room_name",
    "customer_id",
    "started_at",
    "status",
    "after_backfill",
    "ours_participant_minutes",
    "ours_recorder_minutes",
    "ours_streamer_minutes",
    "ours_human_minutes",
    "ours_assistant_minutes",
    "ours_captioner_minutes",
    "insights_participant_minutes",
    "insights_recorder_minutes",
    "insights_streamer_minutes",
    "backfilled_events",
    "schema_version",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS, _MAX_MS = 946_684_800_000, 7_258_118_400_000  # 2000 .. 2200, as the events table accepts
_REASON = "invalid_reconciliation"


def _fail(detail: str) -> BadRow:
    return BadRow(_REASON, detail)


def _int(doc: dict[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _fail(f"`{name}` must be a non-negative whole number")
    return value


def _time(doc: dict[str, Any], name: str, *, optional: bool = False) -> datetime | None:
    ms = _int(doc, name, optional=optional)
    if ms is None:
        return None
    if not _MIN_MS <= ms <= _MAX_MS:
        raise _fail(f"`{name}` is outside 2000..2200")
    return _EPOCH + timedelta(milliseconds=ms)


def _str(doc: dict[str, Any], name: str, *, optional: bool = False, limit: int = 300) -> str | None:
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _fail(f"`{name}` must be a non-empty string of at most {limit} characters")
    return value


def _status(doc: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = doc.get(name)
    if value is None and optional:
        return None
    if value not in contract.RECONCILIATION_STATUSES:
        raise _fail(f"`{name}` must be one of {', '.join(contract.RECONCILIATION_STATUSES)}")
    return str(value)


def _minutes(doc: dict[str, Any], side: str, names: tuple[str, ...]) -> list[int]:
    """The minutes of one side: the three compared ones are required, our breakdown defaults to 0."""
    part = doc.get(side)
    if not isinstance(part, dict):
        raise _fail(f"`{side}` must be an object")
    return [_int(part, name, optional=i >= 3) or 0 for i, name in enumerate(names)]


def reconciliation_row(value: bytes | None) -> list[Any]:
    """The `reconciliation` row (in RECONCILIATION_COLUMNS order) of one record, or BadRow."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        raise _fail("reconciliation record is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _fail("reconciliation record must be a JSON object")
    schema = _int(doc, "schema")
    assert schema is not None
    if not 1 <= schema <= contract.RECONCILIATION_SCHEMA:
        raise _fail(f"schema {schema} is not one this sink reads (1..{contract.RECONCILIATION_SCHEMA}); upgrade it")
    ours = _minutes(
        doc,
        "ours",
        (
            "participant_minutes",
            "recorder_minutes",
            "streamer_minutes",
            "human_minutes",
            "assistant_minutes",
            "captioner_minutes",
        ),
    )
    insights = _minutes(doc, "insights", ("participant_minutes", "recorder_minutes", "streamer_minutes"))
    return [
        _str(doc, "run_id", limit=64),
        _time(doc, "checked_at_ms"),
        _time(doc, "period_from_ms"),
        _time(doc, "period_to_ms"),
        _str(doc, "room_session_id"),
        _str(doc, "room_name"),
        _str(doc, "customer_id", optional=True),
        _time(doc, "started_at_ms", optional=True),
        _status(doc, "status"),
        _status(doc, "after_backfill", optional=True),
        *ours,
        *insights,
        _int(doc, "backfilled_events", optional=True) or 0,
        schema,
    ]
