"""Enriched JSON → a row of the `events` table, as a pure function."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

EVENT_COLUMNS = (
    "event_id",
    "event_type",
    "api_version",
    "created_at",
    "received_at",
    "room_name",
    "meeting_id",
    "subdomain",
    "room_session_id",
    "participant_id",
    "display_name",
    "role_name",
    "role_class",
    "external_id",
    "metadata",
    "metadata_raw",
    "is_dial_in",
    "num_clients",
    "customer_id",
    "customer_name",
    "customer_resolution",
    "user_id",
    "user_resolution",
    "dimension_version",
    "enrichment_version",
    "enriched_at",
)


class BadRow(Exception):
    """The enriched record cannot become a row; `reason` is a bounded code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _ts(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)


def event_row(value: bytes) -> list[Any]:
    """Decode one enriched record into the column order of EVENT_COLUMNS; raise BadRow if unusable."""
    try:
        e = orjson.loads(value)
        return [
            str(e["event_id"]),
            str(e["event_type"]),
            str(e.get("api_version") or ""),
            _ts(e["created_at_ms"]),
            _ts(e["received_at_ms"]),
            str(e.get("room_name") or ""),
            e.get("meeting_id"),
            e.get("subdomain"),
            e.get("room_session_id"),
            e.get("participant_id"),
            e.get("display_name"),
            e.get("role_name"),
            e.get("role_class"),
            e.get("external_id"),
            {str(k): str(v) for k, v in (e.get("metadata") or {}).items()},
            e.get("metadata_raw"),
            bool(e.get("is_dial_in")),
            e.get("num_clients"),
            e.get("customer_id"),
            e.get("customer_name"),
            str(e.get("customer_resolution") or "unresolved"),
            e.get("user_id"),
            str(e.get("user_resolution") or "unresolved"),
            int(e.get("dimension_version") or 0),
            int(e["enrichment_version"]),
            _ts(e.get("enriched_at_ms") or e["enrichment_version"]),
        ]
    except orjson.JSONDecodeError:
        raise BadRow("invalid_json", "enriched record is not valid JSON") from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise BadRow("invalid_record", f"enriched record is missing or has a bad field: {exc}") from None
