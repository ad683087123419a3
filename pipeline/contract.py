"""The Kafka contract between the stages: topic names, record headers, versions and the enriched event.
Changing anything here is a change for every stage, so it lives in one place; docs/contract.md is its
reference (topics, keys, headers, the enriched record, the bad row, the upgrade order).

Versions: every record a stage writes carries the headers `contract-version` (CONTRACT_VERSION, 2 since
the connection-interval release) and `producer` (`<stage>@<package version>`): :func:`version_headers`.
Records of the release before (version 1) carry no header, and every reader accepts them: each field
added since is optional (`NotRequired`) with a documented default. A reader meeting a version above its
own (or a header that is no version) cannot know what changed, so it dead-letters the record with
reason `unsupported_version` and goes on (:func:`version_failure`): upgrade readers before writers.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Sequence
from typing import Any, NotRequired, TypedDict

from pipeline.failures import Failure

# 1: the first release (no version on any record); 2: source/user_name/contract fields, bad-row versions.
CONTRACT_VERSION = 2
try:
    PACKAGE_VERSION = importlib.metadata.version("whereby-pipeline")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    PACKAGE_VERSION = "0+unknown"

TOPIC_RAW = "whereby.webhooks.raw"
TOPIC_ENRICHED = "whereby.events.enriched"
TOPIC_DIMENSIONS = "whereby.dimensions"
TOPIC_DEADLETTER = "whereby.deadletter"
TOPIC_RECONCILIATION = "whereby.reconciliation"

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
HEADER_CONTRACT_VERSION = "contract-version"
HEADER_PRODUCER = "producer"


def producer(stage: str) -> str:
    """Who wrote a record: `<stage>@<package version>`."""
    return f"{stage}@{PACKAGE_VERSION}"


def version_headers(stage: str) -> tuple[tuple[str, bytes], ...]:
    """The contract headers every record a stage writes carries: `contract-version`, `producer`."""
    return ((HEADER_CONTRACT_VERSION, str(CONTRACT_VERSION).encode()), (HEADER_PRODUCER, producer(stage).encode()))


# Every raw record ingest writes carries these (built once: the hot path only appends them).
RAW_VERSION_HEADERS = version_headers("ingest")
# Every enriched record enrich (or replay) writes carries these.
ENRICHED_VERSION_HEADERS = version_headers("enrich")

# The `contract-version` values this release reads, as header bytes and as decoded text: every version up
# to its own. A record without the header is version 1 (the release before headers) and is read too.
UNSUPPORTED_VERSION = "unsupported_version"
READABLE_VERSIONS = frozenset(form for v in range(1, CONTRACT_VERSION + 1) for form in (str(v), str(v).encode()))


def readable_version(value: bytes | str | None) -> bool:
    """Whether this release can read a record whose `contract-version` header is `value` (None: absent,
    version 1). A newer version, or a value that is no version at all, cannot be read: what it changed
    is unknown here, so reading it as ours could store it wrong."""
    return value is None or value in READABLE_VERSIONS


def unsupported_version(value: bytes | str) -> Failure:
    """The failure (reason `unsupported_version`) a reader dead-letters an unreadable record with."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return Failure(
        UNSUPPORTED_VERSION,
        f"contract-version {text[:20]!r} is not one this reader knows (up to {CONTRACT_VERSION}): "
        "upgrade readers before writers",
    )


def version_failure(headers: Sequence[tuple[str, bytes]] | None) -> Failure | None:
    """None when this release can read a record with `headers`, else its `unsupported_version` failure."""
    for name, value in headers or ():
        if name == HEADER_CONTRACT_VERSION:
            return None if value in READABLE_VERSIONS else unsupported_version(value)
    return None


# One result of `whereby-pipeline reconcile` per room session and run, on `whereby.reconciliation`; the sink
# stores them in the `reconciliation` table. Bump the schema when a field changes meaning or goes away.
RECONCILIATION_SCHEMA = 1
RECONCILIATION_STATUSES = ("match", "mismatch", "missing")

# Dimension record keys: `customer:<customer_id>`, `user:<external_id>`, `config:<setting name>` and
# `erase:<subject>` (one erased person: the SHA-256 of their externalId, never the id itself; see
# pipeline/erasure.py).
DIM_CUSTOMER_PREFIX = "customer:"
DIM_USER_PREFIX = "user:"
DIM_CONFIG_PREFIX = "config:"
DIM_ERASE_PREFIX = "erase:"


class EnrichedEvent(TypedDict):
    """One Whereby event after enrichment, as JSON on `whereby.events.enriched`.

    Times are integer milliseconds since the epoch (UTC). `enrichment_version` orders enrichments of the
    same event: the highest wins in ClickHouse. It is :func:`enrichment_version` of the dimensions the
    enricher applied (never a clock), so a replay after a dimension change supersedes earlier results,
    while an instance that is behind on dimensions, or a host with a skewed clock, cannot.

    Fields marked NotRequired may be absent (older producers); consumers must not depend on them.

    Personal data: for a person erased by `forget`, `external_id` is their pseudonym (`forgotten-…`),
    `display_name`, `user_id` and `user_name` are null and `user_resolution` is `erased`; with
    STORE_DISPLAY_NAMES=false every `display_name` is null.
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
    # The user id chosen by USER_ID_SOURCE (pipeline/usersource.py) and where it came from (`externalId`,
    # `metadata` or `metadata:<key>`); None when the event names no user. Absent on records of releases
    # before issue 18: there the user is `external_id` (the sink's default for a missing field).
    user_key: NotRequired[str | None]
    user_source: NotRequired[str | None]
    # Absent on version-1 records (the release before); see the module docstring.
    contract_version: NotRequired[int]
    producer: NotRequired[str]


# Every enrichment version of this contract outranks the previous release's (clock-based: epoch
# microseconds, about 1.8e15), so an upgraded store lets a replay win over events stored before it.
ENRICHMENT_VERSION_BASE = 1 << 62


def enrichment_version(dimension_version: int) -> int:
    """The `enrichment_version` of an event enriched against dimensions at `dimension_version` (one past
    the offset of the last dimensions-topic record applied): the data decides, not a clock."""
    return ENRICHMENT_VERSION_BASE + dimension_version


class ReconciliationMinutes(TypedDict):
    """Minutes of one room session as compared by reconcile. `participant_minutes` is the number compared
    with Insights' `totalParticipantMinutes`: every role but recorder and streamer (Whereby counts everyone
    else, assistants included). Our side adds its breakdown (`human_`, `assistant_`, `captioner_minutes`)."""

    participant_minutes: int
    recorder_minutes: int
    streamer_minutes: int
    human_minutes: NotRequired[int]
    assistant_minutes: NotRequired[int]
    captioner_minutes: NotRequired[int]


class ReconciliationRecord(TypedDict):
    """One room session's result of one reconcile run, as JSON on `whereby.reconciliation` (key: roomSessionId).

    Times are integer epoch milliseconds (UTC). `status` is what the run found (one of
    RECONCILIATION_STATUSES); `after_backfill` is the status the run saw once the events it backfilled for
    this session were stored, or when its wait for that ran out (None when it backfilled nothing for the
    session or did not wait).
    """

    schema: int
    run_id: str
    checked_at_ms: int
    period_from_ms: int
    period_to_ms: int
    room_session_id: str
    room_name: str
    customer_id: str | None
    started_at_ms: int | None
    status: str
    after_backfill: str | None
    ours: ReconciliationMinutes
    insights: ReconciliationMinutes
    backfilled_events: int


def raw_record(
    room_name: str | None,
    event_id: str,
    event_type: str,
    *,
    received_at_ms: int,
    source: str | None = None,
    instance: bytes | None = None,
    stage: str = "reconcile",
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """(key, headers) of one event on the raw topic: key = roomName (per-room order), the contract headers.

    `source` sets HEADER_EVENT_SOURCE (absent for Whereby's own webhooks); `instance` names the writer's
    process and `stage` its program (the `producer` header). Ingest builds the same headers inline (its
    hot path); `tests/unit/test_reconcile_settings.py` holds the two to the same set.
    """
    headers = [
        (HEADER_EVENT_ID, event_id.encode()),
        (HEADER_EVENT_TYPE, event_type.encode()),
        (HEADER_RECEIVED_AT_MS, str(received_at_ms).encode()),
        *version_headers(stage),
    ]
    if instance is not None:
        headers.append((HEADER_INGRESS_INSTANCE, instance))
    if source is not None:
        headers.append((HEADER_EVENT_SOURCE, source.encode()))
    return (room_name.encode() if room_name else None), headers


def now_ms() -> int:
    """Wall-clock time in integer milliseconds, the unit every timestamp in the contract uses."""
    return time.time_ns() // 1_000_000


def headers_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Kafka record headers as a str -> str dict (undecodable values are replaced, never raised on)."""
    return {k: v.decode("utf-8", "replace") for k, v in (headers or ())}
