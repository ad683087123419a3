"""Turning one raw Whereby event into an enriched event: a pure function of the bytes, the record
headers and the dimension table. No I/O, so every rule here is unit-tested without a broker.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from enrich.dimensions import EXTERNAL_ID_RE, DimensionTable
from enrich.metadata import parse_metadata
from pipeline import contract
from pipeline.contract import EnrichedEvent

BOT_ROLES = {"recorder": "recorder", "streamer": "streamer", "captioner": "captioner", "assistant": "assistant"}
ROLE_CLASSES = ("human", "recorder", "streamer", "captioner", "assistant")

# How a customer was resolved: `prefix` (a registered room-name prefix matched), `unresolved` (the event
# has a room name but no registered prefix matches it) or `absent` (the event carries no room name).
CUSTOMER_RESOLUTIONS = ("prefix", "unresolved", "absent")
# How a user was resolved: `external_id` (a registered user matched), `unresolved` (valid externalId, no
# registered user), `absent` (no externalId) or `invalid` (externalId breaks Whereby's format rules).
USER_RESOLUTIONS = ("external_id", "unresolved", "absent", "invalid")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# An invalid externalId is client-controlled text: keep enough to debug, never an unbounded string.
_MAX_INVALID_EXTERNAL_ID = 64


class BadEvent(Exception):
    """The raw event cannot be enriched. `reason` is a bounded code for metrics and the dead-letter row."""

    def __init__(self, reason: str, detail: str, event_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.event_id = event_id


def role_class(role_name: str | None) -> str | None:
    """Billing class of a role: the bots by name, every other (including unknown) role is `human`."""
    if role_name is None:
        return None
    return BOT_ROLES.get(role_name, "human")


def parse_created_at_ms(value: object) -> int:
    """Whereby's ISO-8601 `createdAt` as integer epoch milliseconds (UTC assumed when no offset is given).

    Raises ValueError for anything that is not a date-time string.
    """
    if not isinstance(value, str):
        raise ValueError("not a string")
    when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        # Whereby always sends `Z`; a missing offset must not silently become the host's local time.
        when = when.replace(tzinfo=UTC)
    # timedelta floor division is exact; float timestamps can be off by one millisecond.
    return (when - _EPOCH) // _MS


def _opt_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value != "" else None


def _envelope(body: bytes) -> tuple[dict[str, Any], str, str, int, dict[str, Any]]:
    """Validate the envelope: (document, id, type, createdAt ms, data) or BadEvent."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadEvent("invalid_json", "body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BadEvent("invalid_envelope", "body is not a JSON object")
    event_id = doc.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise BadEvent("invalid_envelope", "`id` must be a non-empty string")
    event_type = doc.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise BadEvent("invalid_envelope", "`type` must be a non-empty string", event_id)
    try:
        created_at_ms = parse_created_at_ms(doc.get("createdAt"))
    except (ValueError, OverflowError):
        raise BadEvent("invalid_envelope", "`createdAt` must be an ISO-8601 date-time", event_id) from None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise BadEvent("invalid_envelope", "`data` must be an object", event_id)
    # In-room events are useless without the room (and client events without the participant): usage is
    # keyed on (roomName, participantId). Other and unknown types are kept with whatever they carry.
    if event_type.startswith("room."):
        if not isinstance(data.get("roomName"), str) or not data["roomName"]:
            raise BadEvent("missing_field", f"`data.roomName` is required for {event_type}", event_id)
        if event_type.startswith("room.client.") and (
            not isinstance(data.get("participantId"), str) or not data["participantId"]
        ):
            raise BadEvent("missing_field", f"`data.participantId` is required for {event_type}", event_id)
    return doc, event_id, event_type, created_at_ms, data


def enrich(
    body: bytes, headers: dict[str, str], dims: DimensionTable, *, now_ms: int, version: int | None = None
) -> EnrichedEvent:
    """Enrich one raw event body; raise BadEvent if it is not a usable Whereby event.

    `version` becomes `enrichment_version` (the caller passes a strictly increasing value, see
    `VersionClock`); it defaults to `now_ms` for callers that do not care about superseding.
    """
    doc, event_id, event_type, created_at_ms, data = _envelope(body)
    room_name = _opt_str(data, "roomName") or ""

    match = dims.resolve_room(room_name) if room_name else None
    prefix, customer = match if match is not None else (None, None)
    customer_resolution = "prefix" if customer is not None else "unresolved" if room_name else "absent"

    external_id = _opt_str(data, "externalId")
    user = None
    if external_id is None:
        user_resolution = "absent"
    elif not EXTERNAL_ID_RE.match(external_id):
        user_resolution = "invalid"
        external_id = external_id[:_MAX_INVALID_EXTERNAL_ID]
    else:
        user = dims.users.get(external_id)
        user_resolution = "external_id" if user else "unresolved"

    metadata_raw = _opt_str(data, "metadata")
    metadata, metadata_form = parse_metadata(metadata_raw)
    role_name = _opt_str(data, "roleName")
    num_clients = data.get("numClients")
    received = headers.get(contract.HEADER_RECEIVED_AT_MS, "")
    subdomain = _opt_str(data, "subdomain")
    meeting_id = data.get("meetingId")
    event: EnrichedEvent = {
        "event_id": event_id,
        "event_type": event_type,
        "api_version": str(doc.get("apiVersion") or ""),
        "created_at_ms": created_at_ms,
        "received_at_ms": int(received) if received.isdigit() else now_ms,
        "room_name": room_name,
        "meeting_id": None if meeting_id is None or meeting_id == "" else str(meeting_id),
        "subdomain": subdomain.lower() if subdomain else None,
        "room_session_id": _opt_str(data, "roomSessionId"),
        "participant_id": _opt_str(data, "participantId"),
        "display_name": _opt_str(data, "displayName"),
        "role_name": role_name,
        "role_class": role_class(role_name),
        "external_id": external_id,
        "metadata": metadata,
        "metadata_raw": metadata_raw,
        "is_dial_in": data.get("isDialIn") is True,
        "num_clients": num_clients if isinstance(num_clients, int) and not isinstance(num_clients, bool) else None,
        "customer_id": customer.customer_id if customer else None,
        "customer_name": customer.name if customer else None,
        "customer_resolution": customer_resolution,
        "user_id": user.user_id if user else None,
        "user_resolution": user_resolution,
        "dimension_version": dims.version,
        "enrichment_version": now_ms if version is None else version,
        "enriched_at_ms": now_ms,
        "metadata_form": metadata_form,
        "customer_prefix": prefix,
        "user_customer_id": user.customer_id if user else None,
    }
    return event
