"""The sink's side of reconciliation: topic records to table rows, and the drift gauges' arithmetic. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from sink.read.drift import drift
from sink.reconciliation_rows import RECONCILIATION_COLUMNS, reconciliation_row
from sink.rows import BadRow

JAN1 = 1_767_225_600_000


def record(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": 1,
        "run_id": "0" * 32,
        "checked_at_ms": JAN1 + 3_600_000,
        "period_from_ms": JAN1,
        "period_to_ms": JAN1 + 3_600_000,
        "room_session_id": "sess-1",
        "room_name": "/acme-1",
        "customer_id": "c-acme",
        "started_at_ms": JAN1 + 60_000,
        "status": "mismatch",
        "after_backfill": "match",
        "ours": {
            "participant_minutes": 9,
            "recorder_minutes": 1,
            "streamer_minutes": 0,
            "human_minutes": 7,
            "assistant_minutes": 2,
            "captioner_minutes": 0,
        },
        "insights": {"participant_minutes": 10, "recorder_minutes": 1, "streamer_minutes": 0},
        "backfilled_events": 2,
    }
    doc.update(overrides)
    return doc


def test_a_record_becomes_one_row_in_column_order() -> None:
    row = dict(zip(RECONCILIATION_COLUMNS, reconciliation_row(orjson.dumps(record())), strict=True))
    assert row["checked_at"] == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
    assert row["started_at"] == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    assert (row["status"], row["after_backfill"], row["customer_id"]) == ("mismatch", "match", "c-acme")
    assert (row["ours_participant_minutes"], row["ours_human_minutes"], row["ours_assistant_minutes"]) == (9, 7, 2)
    assert row["insights_participant_minutes"] == 10 and row["schema_version"] == 1
    unresolved = reconciliation_row(orjson.dumps(record(customer_id=None, after_backfill=None, started_at_ms=None)))
    assert unresolved[RECONCILIATION_COLUMNS.index("customer_id")] is None


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        orjson.dumps(record(schema=2)),
        orjson.dumps(record(status="fine")),
        orjson.dumps(record(room_session_id="")),
        orjson.dumps(record(checked_at_ms="yesterday")),
        orjson.dumps(record(checked_at_ms=5)),
        orjson.dumps(record(insights={"participant_minutes": -1, "recorder_minutes": 0, "streamer_minutes": 0})),
        orjson.dumps(record(ours=None)),
        orjson.dumps(record(after_backfill="maybe")),
    ],
)
def test_a_record_this_sink_cannot_read_is_a_bad_row(value: bytes) -> None:
    with pytest.raises(BadRow) as caught:
        reconciliation_row(value)
    assert caught.value.reason == "invalid_reconciliation"


def test_drift_counts_per_status_and_the_oldest_drifting_session() -> None:
    rows = [
        {"status": "match", "sessions": 5, "oldest_ms": JAN1 - 10 * 86_400_000},
        {"status": "mismatch", "sessions": 2, "oldest_ms": JAN1 - 3_600_000},
        {"status": "missing", "sessions": 1, "oldest_ms": JAN1 - 2 * 86_400_000},
    ]
    counts, age = drift(rows, JAN1)
    assert counts == {"match": 5, "mismatch": 2, "missing": 1}
    assert age == 2 * 86_400  # an old session in match is not drift
    assert drift([{"status": "match", "sessions": 3, "oldest_ms": 0}], JAN1) == (
        {"match": 3, "mismatch": 0, "missing": 0},
        0.0,
    )
