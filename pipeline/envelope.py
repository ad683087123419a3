"""The Whereby envelope (shared reference §1.3): one check, used by ingest and by enrich.

Ingest refuses (400, dead letter) what enrich could not use, and enrich judges a replayed or hand-written
raw record by the same rules with the same reason codes. The rules, decided once:

| Field | Rule | Reason when broken |
|---|---|---|
| (body) | UTF-8 JSON | `invalid_json` |
| (body) | an object | `not_an_object` |
| `id` | a string of 1-256 characters | `invalid_id` |
| `type` | a string of 1-256 characters (unknown types pass) | `invalid_type` |
| `createdAt` | an ISO-8601 date-time **with an offset** (`Z` or `±hh:mm`) naming a real instant | `invalid_createdAt` |
| `data` | an object | `invalid_data` |

Checks run in that order and the first failure is reported, so an error names one field. Only what
the pipeline needs is checked; extra fields pass through, since the raw topic keeps the body exactly
as received. Enrich adds one rule on top, :func:`require_usage_fields` (in-room events need
`data.roomName`, client events `data.participantId`: reason `missing_field`); ingest stores such events,
since the raw topic keeps everything signed and a 400 would make Whereby drop what a later fix could use.

A missing offset is refused rather than read as UTC: a date-time without one is not what Whereby
sends, and guessing its zone would move usage between days.

Both stages are on a hot path, so :func:`check` parses the body once and hands the document back, and
Whereby's own `createdAt` shape takes a fast path (one cached calendar parse per second of events).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from pipeline import times
from pipeline.failures import Failure

# Whereby's ids are 64 hex characters and its types short dotted names. The bound is generous; it only
# keeps arbitrarily long strings out of Kafka headers and ClickHouse keys.
MAX_ID_LENGTH = 256


class EnvelopeError(Failure):
    """The body is not a usable Whereby envelope.

    `field` names the envelope field at fault (None when the body as a whole is); `reason` is a short,
    bounded code for metrics and the dead-letter record; `detail` is the explanation for the sender.
    """

    def __init__(self, field: str | None, detail: str, reason: str | None = None) -> None:
        super().__init__(reason or (f"invalid_{field}" if field else "invalid_body"), detail)
        self.field = field


class Envelope(NamedTuple):
    """A checked envelope: its fields, plus the parsed document and `data` so nobody parses twice."""

    event_id: str
    event_type: str
    created_at: str
    room_name: str | None
    created_at_ms: int
    doc: dict[str, Any]
    data: dict[str, Any]


# An ISO-8601 date-time with an offset (`Z` or `±hh:mm`) as integer epoch milliseconds (UTC); ValueError for
# anything else, including a date-time without an offset or one that names no real instant: the strict
# rule of the shared parser (bound, not wrapped: it runs for every event).
created_at_ms = times.instant_ms


def is_date_time(value: object) -> bool:
    """True for an ISO-8601 date-time with an offset (`Z` or `±hh:mm`) that names a real instant."""
    try:
        created_at_ms(value)
    except ValueError:
        return False
    return True


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
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


def _string_field(doc: dict[str, Any], field: str) -> str:
    if field not in doc:
        raise EnvelopeError(field, f"`{field}` is missing")
    value = doc[field]
    if value.__class__ is not str:
        raise EnvelopeError(field, f"`{field}` must be a string, got {json_type(value)}")
    if not value:
        raise EnvelopeError(field, f"`{field}` must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise EnvelopeError(field, f"`{field}` is longer than {MAX_ID_LENGTH} characters")
    text: str = value
    return text


def check(body: bytes) -> Envelope:
    """Parse and check the envelope of `body` (see the table above); EnvelopeError and nothing else."""
    try:
        doc: Any = _loads(body)
    except orjson.JSONDecodeError:
        raise EnvelopeError(None, "body is not valid JSON (UTF-8)", "invalid_json") from None
    if doc.__class__ is not dict:
        raise EnvelopeError(None, f"body must be a JSON object, got {json_type(doc)}", "not_an_object")
    # The usual case first, checked inline (both stages run this for every event); anything off goes
    # to `_first_error`, which checks field by field in the documented order to name the first fault.
    get = doc.get
    event_id, event_type, data = get("id"), get("type"), get("data")
    if (
        event_id.__class__ is str
        and 0 < len(event_id) <= MAX_ID_LENGTH
        and event_type.__class__ is str
        and 0 < len(event_type) <= MAX_ID_LENGTH
        and data.__class__ is dict
    ):
        created_at = get("createdAt")
        try:
            when_ms = created_at_ms(created_at)
        except ValueError:
            pass
        else:
            room = data.get("roomName")
            if room.__class__ is not str or not room:
                room = None
            return _new_envelope(Envelope, (event_id, event_type, created_at, room, when_ms, doc, data))
    raise _first_error(doc)


_loads = orjson.loads
# A NamedTuple's generated __new__ is a Python-level call; building the tuple directly is the same object.
_new_envelope = tuple.__new__


def _first_error(doc: dict[str, Any]) -> EnvelopeError:
    """The error of the first field, in the documented order, that breaks its rule (one does), carrying
    the body's `id` when that one is usable (for the dead-letter record)."""
    try:
        _string_field(doc, "id")
        _string_field(doc, "type")
        if "createdAt" not in doc:
            error = EnvelopeError("createdAt", "`createdAt` is missing")
        elif not is_date_time(doc["createdAt"]):
            error = EnvelopeError("createdAt", "`createdAt` must be an ISO-8601 date-time with an offset")
        elif "data" not in doc:
            error = EnvelopeError("data", "`data` is missing")
        else:
            error = EnvelopeError("data", f"`data` must be a JSON object, got {json_type(doc['data'])}")
    except EnvelopeError as exc:
        error = exc
    value = doc.get("id")
    if value.__class__ is str and 0 < len(value) <= MAX_ID_LENGTH:
        error.event_id = value
    return error


def require_usage_fields(env: Envelope) -> None:
    """Enrich's rule on top of :func:`check`: usage is keyed on (roomName, participantId), so an in-room
    event needs its room and a client event its participant; EnvelopeError `missing_field` otherwise.
    Other and unknown types are kept with whatever they carry."""
    event_type = env.event_type
    if not event_type.startswith("room."):
        return
    if env.room_name is None:
        error = EnvelopeError("data.roomName", f"`data.roomName` is required for {event_type}", "missing_field")
    elif event_type.startswith("room.client.") and not _non_empty(env.data.get("participantId")):
        error = EnvelopeError(
            "data.participantId", f"`data.participantId` is required for {event_type}", "missing_field"
        )
    else:
        return
    error.event_id = env.event_id
    raise error


def _non_empty(value: object) -> bool:
    return value.__class__ is str and bool(value)
