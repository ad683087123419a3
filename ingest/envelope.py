"""Validation of the Whereby envelope (shared reference §1.3), as pure functions.

Only what the pipeline needs is checked here; unknown event types and extra fields pass through, since
the raw topic keeps the body exactly as received.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

import orjson

# The event types of reference §1.2. Anything else is still accepted and forwarded; this set only
# bounds the `type` label of the metrics, so a sender cannot grow the label space.
KNOWN_EVENT_TYPES = frozenset(
    {
        "room.client.joined",
        "room.client.left",
        "room.client.knocked",
        "room.client.knockCancelled",
        "room.session.started",
        "room.session.ended",
        "transcription.started",
        "transcription.finished",
        "transcription.failed",
        "recording.finished",
        "assistant.requested",
    }
)
OTHER_EVENT_TYPE = "other"

# Whereby's ids are 64 hex characters and its types short dotted names. The bound is generous; it only
# keeps arbitrarily long strings out of Kafka headers and ClickHouse keys.
MAX_ID_LENGTH = 256

# A date *and* a time with an explicit offset, e.g. `2023-10-31T13:09:44.373Z`. Python's fromisoformat
# alone would also take a bare date or a zone-less time, which downstream would have to guess about.
# The shape Whereby sends (`2023-10-31T13:09:44.373Z`): checked by one match and one calendar parse.
_COMMON_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", re.ASCII)
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})", re.ASCII)


class EnvelopeError(Exception):
    """The body is not a usable Whereby envelope.

    `field` names the envelope field at fault (None when the body as a whole is); `reason` is a short,
    bounded code for metrics and the dead-letter record; `detail` is the explanation for the sender.
    """

    def __init__(self, field: str | None, detail: str, reason: str | None = None) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail
        self.reason = reason or (f"invalid_{field}" if field else "invalid_body")


class Envelope(NamedTuple):
    """The envelope fields ingest needs to route and label one event (a tuple: built once per request)."""

    event_id: str
    event_type: str
    created_at: str
    room_name: str | None


def type_label(event_type: str) -> str:
    """`event_type` if it is a documented Whereby type, else "other" (a bounded metric label)."""
    return event_type if event_type in KNOWN_EVENT_TYPES else OTHER_EVENT_TYPE


def is_date_time(value: str) -> bool:
    """True for an ISO-8601 date-time with an offset (`Z` or `±hh:mm`) that names a real instant."""
    if _COMMON_DATE_TIME.fullmatch(value):
        candidate = value[:-1] + "+00:00"
    elif _DATE_TIME.fullmatch(value):
        candidate = value.upper().replace("Z", "+00:00")
    else:
        return False
    try:
        datetime.fromisoformat(candidate)
    except ValueError:  # e.g. month 13 or hour 25: the shape matched, the calendar did not
        return False
    return True


def _string_field(doc: dict[str, Any], field: str) -> str:
    if field not in doc:
        raise EnvelopeError(field, f"`{field}` is missing")
    value = doc[field]
    if not isinstance(value, str):
        raise EnvelopeError(field, f"`{field}` must be a string, got {_json_type(value)}")
    if not value:
        raise EnvelopeError(field, f"`{field}` must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise EnvelopeError(field, f"`{field}` is longer than {MAX_ID_LENGTH} characters")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def parse(body: bytes) -> Envelope:
    """Parse and check the envelope fields `id`, `type`, `createdAt`, `data`; raise EnvelopeError.

    Checks run in that order and the first failure is reported, so the error names one field.
    """
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EnvelopeError(None, "body is not valid JSON (UTF-8)", "invalid_json") from None
    if not isinstance(doc, dict):
        raise EnvelopeError(None, f"body must be a JSON object, got {_json_type(doc)}", "not_an_object")
    event_id = _string_field(doc, "id")
    event_type = _string_field(doc, "type")
    if "createdAt" not in doc:
        raise EnvelopeError("createdAt", "`createdAt` is missing")
    created_at = doc["createdAt"]
    if not isinstance(created_at, str) or not is_date_time(created_at):
        raise EnvelopeError("createdAt", "`createdAt` must be an ISO-8601 date-time with an offset")
    if "data" not in doc:
        raise EnvelopeError("data", "`data` is missing")
    data = doc["data"]
    if not isinstance(data, dict):
        raise EnvelopeError("data", f"`data` must be a JSON object, got {_json_type(data)}")
    room_name = data.get("roomName")
    return Envelope(event_id, event_type, created_at, room_name if isinstance(room_name, str) and room_name else None)


def event_id_of(body: bytes) -> str | None:
    """The `id` of a body that failed validation, if it has a usable one (for the dead-letter record)."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None
