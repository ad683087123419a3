"""Turning one raw Whereby event into an enriched event: a pure function of the bytes, the record
headers and the dimension table. No I/O, so every rule here is unit-tested without a broker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from enrich.dimensions import EXTERNAL_ID_RE, DimensionTable
from enrich.metadata import parse_metadata
from pipeline import contract
from pipeline.contract import EnrichedEvent

BOT_ROLES = {"recorder": "recorder", "streamer": "streamer", "captioner": "captioner", "assistant": "assistant"}


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


def _opt_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value != "" else None


def _iso_ms(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)


def enrich(body: bytes, headers: dict[str, str], dims: DimensionTable, *, now_ms: int) -> EnrichedEvent:
    """Enrich one raw event body; raise BadEvent if it is not a usable Whereby event."""
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
        created_at_ms = _iso_ms(str(doc.get("createdAt")))
    except (ValueError, OverflowError):
        raise BadEvent("invalid_envelope", "`createdAt` must be an ISO-8601 date-time", event_id) from None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise BadEvent("invalid_envelope", "`data` must be an object", event_id)
    room_name = _opt_str(data, "roomName") or ""

    customer = dims.customer_for_room(room_name) if room_name else None
    external_id = _opt_str(data, "externalId")
    user = None
    if external_id is not None and not EXTERNAL_ID_RE.match(external_id):
        user_resolution = "invalid"
        external_id = external_id[:64]
    elif external_id is None:
        user_resolution = "absent"
    else:
        user = dims.users.get(external_id)
        user_resolution = "external_id" if user else "unresolved"

    metadata_raw = _opt_str(data, "metadata")
    metadata, _form = parse_metadata(metadata_raw)
    role_name = _opt_str(data, "roleName")
    num_clients = data.get("numClients")
    received = headers.get(contract.HEADER_RECEIVED_AT_MS, "")
    subdomain = _opt_str(data, "subdomain")
    return {
        "event_id": event_id,
        "event_type": event_type,
        "api_version": str(doc.get("apiVersion") or ""),
        "created_at_ms": created_at_ms,
        "received_at_ms": int(received) if received.isdigit() else now_ms,
        "room_name": room_name,
        "meeting_id": None if data.get("meetingId") is None else str(data.get("meetingId")),
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
        "num_clients": num_clients if isinstance(num_clients, int) else None,
        "customer_id": customer.customer_id if customer else None,
        "customer_name": customer.name if customer else None,
        "customer_resolution": "prefix" if customer else "unresolved",
        "user_id": user.user_id if user else None,
        "user_resolution": user_resolution,
        "dimension_version": dims.version,
        "enrichment_version": now_ms,
        "enriched_at_ms": now_ms,
    }
