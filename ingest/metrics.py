"""Prometheus metrics of the ingest stage (prefix `whereby_ingest_`).

Every label has a bounded set of values: `outcome` and `reason` come from `ingest.answers`, `type` is a
documented Whereby event type or "other", `topic` is "raw" or "deadletter". Room names, event ids and
anything else a sender controls never become a label.
"""

from __future__ import annotations

import bisect
import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class _Value:
    """A float without a lock. prometheus_client guards every value with a mutex (it supports threads);
    ingest observes and scrapes only on its event loop's thread, so the lock is pure per-request cost."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value = 0.0

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def get(self) -> float:
        return self._value

    def set_exemplar(self, exemplar: Any) -> None:  # exemplars are not used here
        pass

    def get_exemplar(self) -> None:
        return None


class _LoopCounter(Counter):
    """A Counter for single-threaded (event loop) use: same exposition, no lock per `inc`."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._value = _Value()  # type: ignore[assignment]

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        """Increment by `amount` (non-negative)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._value.inc(amount)


class _LoopHistogram(Histogram):
    """A Histogram for single-threaded (event loop) use: same buckets and exposition, but `observe` is
    a bisect and two additions instead of a Python loop over the buckets with a lock per update."""

    def _metric_init(self) -> None:
        super()._metric_init()
        self._sum = _Value()  # type: ignore[assignment]
        self._buckets = [_Value() for _ in self._upper_bounds]  # type: ignore[misc]

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Count `amount` in the first bucket whose upper bound is >= it (the last one is +Inf)."""
        self._sum.inc(amount)
        self._buckets[bisect.bisect_left(self._upper_bounds, amount)].inc(1)


# Latency buckets around Whereby's 5 s budget and our 3 s produce timeout.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0)
_BYTES = (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)

REQUESTS = _LoopCounter(
    "whereby_ingest_requests",
    "Webhook requests answered, by outcome (accepted, rejected, unavailable) and reason.",
    ["outcome", "reason"],
)
REQUEST_DURATION = _LoopHistogram(
    "whereby_ingest_request_duration_seconds",
    "Time from receiving a webhook request to answering it, by outcome.",
    ["outcome"],
    buckets=_SECONDS,
)
PRODUCE_DURATION = _LoopHistogram(
    "whereby_ingest_produce_duration_seconds",
    "Time from handing a record to the producer to the broker's acknowledgement (or failure), by topic and result.",
    ["topic", "result"],
    buckets=_SECONDS,
)
IN_FLIGHT = Gauge("whereby_ingest_in_flight_requests", "Webhook requests being handled right now.")
BODY_SIZE = _LoopHistogram(
    "whereby_ingest_request_body_bytes",
    "Size of webhook bodies read (up to the limit; larger ones are cut off and rejected).",
    buckets=_BYTES,
)
EVENTS = _LoopCounter(
    "whereby_ingest_events",
    "Events stored on the raw topic, by Whereby event type (undocumented types count as 'other').",
    ["type"],
)
DEADLETTERS = _LoopCounter(
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
