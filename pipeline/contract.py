"""The Kafka contract between the stages: topic names, record headers, the dead-letter shape and the
enriched event. Changing anything here is a change for every stage, so it lives in one place.

| Topic | Key | Value |
|---|---|---|
| whereby.webhooks.raw | roomName | body bytes exactly as received (the signature covers them) |
| whereby.events.enriched | roomName | JSON enriched event (see `EnrichedEvent`) |
| whereby.dimensions | customer:<id> / user:<externalId> | JSON record, or a tombstone (compacted) |
| whereby.deadletter | source key | JSON bad row (see `bad_row`) |
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

import orjson

TOPIC_RAW = "whereby.webhooks.raw"
TOPIC_ENRICHED = "whereby.events.enriched"
TOPIC_DIMENSIONS = "whereby.dimensions"
TOPIC_DEADLETTER = "whereby.deadletter"

# Record headers on the raw topic, set by ingest. Values are UTF-8 bytes.
HEADER_EVENT_ID = "whereby-event-id"
HEADER_EVENT_TYPE = "whereby-event-type"
HEADER_RECEIVED_AT_MS = "received-at-ms"
HEADER_INGRESS_INSTANCE = "ingress-instance"
# Where an event on the raw topic came from: absent (or `webhook`) for Whereby's webhooks as ingest received
# them; `insights` for the join/leave events `reconcile --backfill` synthesizes from Whereby's Insights API.
HEADER_EVENT_SOURCE = "event-source"
SOURCE_WEBHOOK = "webhook"
SOURCE_INSIGHTS = "insights"

# Dimension record keys: `customer:<customer_id>` and `user:<external_id>`.
DIM_CUSTOMER_PREFIX = "customer:"
DIM_USER_PREFIX = "user:"


class EnrichedEvent(TypedDict):
    """One Whereby event after enrichment, as JSON on `whereby.events.enriched`.

    Times are integer milliseconds since the epoch (UTC). `enrichment_version` orders enrichments of the
    same event: the highest wins in ClickHouse. It is :func:`enrichment_version` of the dimensions the
    enricher applied (never a clock), so a replay after a dimension change supersedes earlier results,
    while an instance that is behind on dimensions, or a host with a skewed clock, cannot.

    Fields marked NotRequired may be absent (older producers); consumers must not depend on them.
    """

    event_id: str
    event_type: str
    api_version: str
    created_at_ms: int
    received_at_ms: int
    room_name: str
    meeting_id: str | None
    subdomain: str | None
    room_session_id: str | None
    participant_id: str | None
    display_name: str | None
    role_name: str | None
    role_class: str | None
    external_id: str | None
    metadata: dict[str, str]
    metadata_raw: str | None
    is_dial_in: bool
    num_clients: int | None
    customer_id: str | None
    customer_name: str | None
    customer_resolution: str
    user_id: str | None
    user_resolution: str
    dimension_version: int
    enrichment_version: int
    enriched_at_ms: int
    data: NotRequired[dict[str, Any]]
    # `none`, `json`, `query` or `raw`: how `metadata_raw` was read into `metadata`.
    metadata_form: NotRequired[str]
    # The registered room-name prefix that resolved the customer (None when unresolved).
    customer_prefix: NotRequired[str | None]
    # The customer the user record names; informational only, never the billing key (the prefix is).
    user_customer_id: NotRequired[str | None]
    # The registered user's name (None when the externalId is not registered).
    user_name: NotRequired[str | None]
    # `webhook`, or `insights` for an event `reconcile --backfill` synthesized (raw header event-source).
    source: NotRequired[str]


# Every enrichment version of this contract outranks the previous release's (clock-based: epoch
# microseconds, about 1.8e15), so an upgraded store lets a replay win over events stored before it.
ENRICHMENT_VERSION_BASE = 1 << 62


def enrichment_version(dimension_version: int) -> int:
    """The `enrichment_version` of an event enriched against dimensions at `dimension_version` (one past
    the offset of the last dimensions-topic record applied): the data decides, not a clock."""
    return ENRICHMENT_VERSION_BASE + dimension_version


def now_ms() -> int:
    """Wall-clock time in integer milliseconds, the unit every timestamp in the contract uses."""
    return time.time_ns() // 1_000_000


def headers_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Kafka record headers as a str -> str dict (undecodable values are replaced, never raised on)."""
    return {k: v.decode("utf-8", "replace") for k, v in (headers or ())}


def bad_row(
    *,
    stage: str,
    reason: str,
    detail: str,
    payload: bytes | None,
    source_topic: str | None = None,
    source_partition: int | None = None,
    source_offset: int | None = None,
    event_id: str | None = None,
) -> bytes:
    """Serialise one dead-letter record.

    `reason` is a short, bounded code (it becomes a metric label); `detail` is the human explanation.
    The original bytes are kept whole so the event can be repaired and replayed: as text when they are
    UTF-8, base64 otherwise.
    """
    record: dict[str, Any] = {
        "stage": stage,
        "reason": reason,
        "detail": detail,
        "event_id": event_id,
        "source": {"topic": source_topic, "partition": source_partition, "offset": source_offset},
        "failed_at_ms": now_ms(),
    }
    if payload is None:
        record["payload"], record["payload_encoding"] = None, None
    else:
        try:
            record["payload"], record["payload_encoding"] = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            record["payload"] = base64.b64encode(payload).decode("ascii")
            record["payload_encoding"] = "base64"
    return orjson.dumps(record)


def bad_row_payload(record: dict[str, Any]) -> bytes | None:
    """The original bytes of a decoded dead-letter record (inverse of the encoding in `bad_row`)."""
    payload = record.get("payload")
    if payload is None:
        return None
    if record.get("payload_encoding") == "base64":
        return base64.b64decode(payload)
    return str(payload).encode("utf-8")
