"""Validation of the Whereby envelope (shared reference §1.3), as pure functions.

Only what the pipeline needs is checked here; unknown event types and extra fields pass through, since
the raw topic keeps the body exactly as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson


class EnvelopeError(Exception):
    """The body is not a usable Whereby envelope. `field` names what was wrong (or None for the body)."""

    def __init__(self, field: str | None, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class Envelope:
    event_id: str
    event_type: str
    created_at: str
    room_name: str | None


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def parse(body: bytes) -> Envelope:
    """Parse and check the envelope fields `id`, `type`, `createdAt`, `data`; raise EnvelopeError."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EnvelopeError(None, "body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise EnvelopeError(None, "body must be a JSON object")
    for field in ("id", "type", "createdAt"):
        value = doc.get(field)
        if not isinstance(value, str) or not value:
            raise EnvelopeError(field, f"`{field}` must be a non-empty string")
    try:
        _parse_iso(doc["createdAt"])
    except ValueError:
        raise EnvelopeError("createdAt", "`createdAt` must be an ISO-8601 date-time") from None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise EnvelopeError("data", "`data` must be a JSON object")
    room_name = data.get("roomName")
    return Envelope(
        event_id=doc["id"],
        event_type=doc["type"],
        created_at=doc["createdAt"],
        room_name=room_name if isinstance(room_name, str) and room_name else None,
    )
