"""Turning one raw Whereby event into an enriched event: a pure function of the bytes, the record
headers and the dimension table. No I/O, so every rule here is unit-tested without a broker.
"""

from __future__ import annotations

import orjson

from enrich.dimensions import EXTERNAL_ID_RE, DimensionTable, User
from enrich.metadata import parse_metadata
from pipeline import contract, envelope, erasure, usersource
from pipeline.contract import EnrichedEvent
from pipeline.failures import Failure

BOT_ROLES = {"recorder": "recorder", "streamer": "streamer", "captioner": "captioner", "assistant": "assistant"}
ROLE_CLASSES = ("human", "recorder", "streamer", "captioner", "assistant")

# How a customer was resolved: `prefix` (a registered room-name prefix matched), `unresolved` (the event
# has a room name but no registered prefix matches it) or `absent` (the event carries no room name).
CUSTOMER_RESOLUTIONS = ("prefix", "unresolved", "absent")
# How a user was resolved, from the user id USER_ID_SOURCE picks (`externalId` by default, or from
# `metadata`; pipeline/usersource.py): `external_id` (a registered user matched; the name predates
# metadata sources and is kept for the metric), `unresolved` (a valid id, no registered user), `absent`
# (no id in any source), `invalid` (only ids that break the format rules) or `erased` (the person was
# erased by `forget`: the event carries their pseudonym and no display name).
USER_RESOLUTIONS = ("external_id", "unresolved", "absent", "invalid", "erased")

# An invalid externalId is client-controlled text: keep enough to debug, never an unbounded string.
_MAX_INVALID_EXTERNAL_ID = usersource.MAX_INVALID_EXTERNAL_ID_CHARS
_EXTERNAL_ID_ONLY = usersource.DEFAULT


class BadEvent(Failure):
    """The raw event cannot be enriched. `reason` is a bounded code for metrics and the dead-letter row."""


def role_class(role_name: str | None) -> str | None:
    """Billing class of a role: the bots by name, every other (including unknown) role is `human`."""
    if role_name is None:
        return None
    return BOT_ROLES.get(role_name, "human")


def parse_created_at_ms(value: object) -> int:
    """Whereby's `createdAt` as integer epoch milliseconds (UTC): the shared rule of `pipeline.envelope`
    (an offset is required). Raises ValueError for anything that is not such a date-time."""
    return envelope.created_at_ms(value)


def _text(value: object) -> str | None:
    """A non-empty string, or None for null, empty or non-string values."""
    return value if value.__class__ is str and value else None  # type: ignore[return-value]


def _envelope(body: bytes) -> envelope.Envelope:
    """The shared envelope check (same rules and reasons as ingest), then enrich's own rule; or BadEvent."""
    try:
        env = envelope.check(body)
        envelope.require_usage_fields(env)
    except envelope.EnvelopeError as exc:
        raise BadEvent(exc.reason, exc.detail, exc.event_id) from None
    return env


def enrich(
    body: bytes, headers: dict[str, str], dims: DimensionTable, *, now_ms: int, display_names: bool = True
) -> EnrichedEvent:
    """Enrich one raw event body; raise BadEvent if it is not a usable Whereby event.

    Its `enrichment_version` comes from the dimensions applied (:func:`pipeline.contract.enrichment_version`).
    `display_names=False` (STORE_DISPLAY_NAMES=false) writes every display name as null.
    """
    return _enrich(
        body,
        headers.get(contract.HEADER_RECEIVED_AT_MS),
        headers.get(contract.HEADER_EVENT_SOURCE),
        dims,
        now_ms,
        display_names,
        headers.get(contract.HEADER_CONTRACT_VERSION),
    )


def enrich_record(
    body: bytes,
    received_at_ms: bytes | str | None,
    source: bytes | str | None,
    dims: DimensionTable,
    now_ms: int,
    display_names: bool = True,
    version: bytes | str | None = None,
) -> tuple[bytes, str, str, str]:
    """The stage's hot path: (enriched JSON, customer resolution, user resolution, room name) of one raw
    record, given the raw `received-at-ms`, `event-source` and `contract-version` header values as they
    came off the wire.

    Same rules and output as `enrich`, without decoding every header or handing a dict back.
    """
    event = _enrich(body, received_at_ms, source, dims, now_ms, display_names, version)
    return _dumps(event), event["customer_resolution"], event["user_resolution"], event["room_name"]


_INSIGHTS = (contract.SOURCE_INSIGHTS, contract.SOURCE_INSIGHTS.encode())
_PRODUCER = contract.producer("enrich")
_READABLE_VERSIONS = contract.READABLE_VERSIONS


def _source(value: bytes | str | None) -> str:
    """`insights` for a synthesized event; anything else (a webhook has no header) is a webhook."""
    return contract.SOURCE_INSIGHTS if value in _INSIGHTS else contract.SOURCE_WEBHOOK


_dumps = orjson.dumps


def _enrich(
    body: bytes,
    received: bytes | str | None,
    source: bytes | str | None,
    dims: DimensionTable,
    now_ms: int,
    display_names: bool,
    version: bytes | str | None = None,
) -> EnrichedEvent:
    if version is not None and version not in _READABLE_VERSIONS:
        # Written by a newer release: its meaning may have changed, so it is not read as ours.
        raise BadEvent(contract.UNSUPPORTED_VERSION, contract.unsupported_version(version).detail)
    env = _envelope(body)
    doc, data, event_id, event_type, created_at_ms = env.doc, env.data, env.event_id, env.event_type, env.created_at_ms
    get = data.get
    room_name = env.room_name or ""

    match = dims.resolve_room(room_name) if room_name else None
    if match is not None:
        prefix, customer = match
        customer_id, customer_name, customer_resolution = customer.customer_id, customer.name, "prefix"
    else:
        prefix, customer_id, customer_name = None, None, None
        customer_resolution = "unresolved" if room_name else "absent"

    external_id = _text(get("externalId"))
    display_name = _text(get("displayName")) if display_names else None
    if external_id is not None and not EXTERNAL_ID_RE.match(external_id):
        external_id = external_id[:_MAX_INVALID_EXTERNAL_ID]  # kept as sent, but bounded

    metadata_raw = _text(get("metadata"))
    metadata, metadata_form = parse_metadata(metadata_raw)
    user_key, user_source, user_resolution, user = _user(dims, external_id, metadata, metadata_raw, metadata_form)
    role_name = _text(get("roleName"))
    num_clients = get("numClients")
    subdomain = _text(get("subdomain"))
    meeting_id = get("meetingId")
    event: EnrichedEvent = {
        "event_id": event_id,
        "event_type": event_type,
        "api_version": str(doc.get("apiVersion") or ""),
        "created_at_ms": created_at_ms,
        "received_at_ms": int(received) if received and received.isdigit() else now_ms,
        "room_name": room_name,
        "meeting_id": None if meeting_id is None or meeting_id == "" else str(meeting_id),
        "subdomain": subdomain.lower() if subdomain else None,
        "room_session_id": _text(get("roomSessionId")),
        "participant_id": _text(get("participantId")),
        "display_name": display_name,
        "role_name": role_name,
        "role_class": None if role_name is None else BOT_ROLES.get(role_name, "human"),
        "external_id": external_id,
        "metadata": metadata,
        "metadata_raw": metadata_raw,
        "is_dial_in": get("isDialIn") is True,
        "num_clients": num_clients if num_clients.__class__ is int else None,
        "customer_id": customer_id,
        "customer_name": customer_name,
        "customer_resolution": customer_resolution,
        "user_id": user.user_id if user else None,
        "user_resolution": user_resolution,
        "dimension_version": dims.version,
        "enrichment_version": contract.enrichment_version(dims.version),
        "enriched_at_ms": now_ms,
        "metadata_form": metadata_form,
        "customer_prefix": prefix,
        "user_customer_id": user.customer_id if user else None,
        "user_name": user.name if user else None,
        "source": _source(source),
        "user_key": user_key,
        "user_source": user_source,
        "contract_version": contract.CONTRACT_VERSION,
        "producer": _PRODUCER,
    }
    if dims.erasures:
        # Erased by `forget`: the pseudonym in place of the id, no names (the rule the sink applies too).
        erasure.erase_event(event, dims.erasures)  # type: ignore[arg-type]
    return event


def _user(
    dims: DimensionTable,
    external_id: str | None,
    metadata: dict[str, str],
    metadata_raw: str | None,
    metadata_form: str,
) -> tuple[str | None, str | None, str, User | None]:
    """(user key, its source, resolution, registered user) under the table's USER_ID_SOURCE."""
    sources = dims.user_id_source
    if sources == _EXTERNAL_ID_ONLY:  # the default, and the hot path: no list to walk
        if external_id is None:
            return None, None, "absent", None
        # `external_id` is already bounded; registered ids were validated when loaded.
        user = dims.users.get(external_id)
        if user is not None:
            return external_id, usersource.EXTERNAL_ID, "external_id", user
        valid = EXTERNAL_ID_RE.match(external_id) is not None
        return external_id, usersource.EXTERNAL_ID, "unresolved" if valid else "invalid", None
    bare = metadata_raw.strip() if metadata_raw is not None and metadata_form == "raw" else None
    found = usersource.find(sources, external_id, metadata, bare)
    if found is None:
        return None, None, "absent", None
    if not found.valid:
        return found.key, found.source, "invalid", None
    user = dims.users.get(found.key)
    return found.key, found.source, "external_id" if user is not None else "unresolved", user
