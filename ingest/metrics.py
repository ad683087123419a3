"""Prometheus metrics of the ingest stage (prefix `whereby_ingest_`).

Every label has a bounded set of values: `outcome` and `reason` come from `ingest.answers`, `type` is a
documented Whereby event type or "other", `topic` is "raw" or "deadletter". Room names, event ids and
anything else a sender controls never become a label.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets around Whereby's 5 s budget and our 3 s produce timeout.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0)
_BYTES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)

REQUESTS = Counter(
    "whereby_ingest_requests",
    "Webhook requests answered, by outcome (accepted, rejected, unavailable) and reason.",
    ["outcome", "reason"],
)
REQUEST_DURATION = Histogram(
    "whereby_ingest_request_duration_seconds",
    "Time from receiving a webhook request to answering it, by outcome.",
    ["outcome"],
    buckets=_SECONDS,
)
PRODUCE_DURATION = Histogram(
    "whereby_ingest_produce_duration_seconds",
    "Time from handing a record to the producer to the broker's acknowledgement (or failure), by topic and result.",
    ["topic", "result"],
    buckets=_SECONDS,
)
IN_FLIGHT = Gauge("whereby_ingest_in_flight_requests", "Webhook requests being handled right now.")
BODY_SIZE = Histogram(
    "whereby_ingest_request_body_bytes",
    "Size of webhook bodies read (up to the limit; larger ones are cut off and rejected).",
    buckets=_BYTES,
)
EVENTS = Counter(
    "whereby_ingest_events",
    "Events stored on the raw topic, by Whereby event type (undocumented types count as 'other').",
    ["type"],
)
DEADLETTERS = Counter(
    "whereby_ingest_deadletters",
    "Signed but malformed bodies written to the dead-letter topic, by reason.",
    ["reason"],
)
BROKER_READY = Gauge(
    "whereby_ingest_broker_ready",
    "1 while the producer can reach the broker (last produce or metadata probe succeeded), else 0.",
)


# Children per label set, looked up once: `labels()` takes a lock and builds a tuple on every call, which
# shows in the per-request profile. The label sets are bounded, so these caches are too.


@functools.cache
def requests(outcome: str, reason: str) -> Any:
    """The `requests` counter child for one outcome and reason."""
    return REQUESTS.labels(outcome, reason)


@functools.cache
def request_duration(outcome: str) -> Any:
    """The `request_duration` histogram child for one outcome."""
    return REQUEST_DURATION.labels(outcome)


@functools.cache
def produce_duration(topic: str, result: str) -> Any:
    """The `produce_duration` histogram child for one topic kind and result."""
    return PRODUCE_DURATION.labels(topic, result)


@functools.cache
def events(type_label: str) -> Any:
    """The `events` counter child for one (already bounded) type label."""
    return EVENTS.labels(type_label)
