"""The sink's Prometheus metrics (prefix `whereby_sink_`). Every label has a small, fixed set of values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS = Counter(
    "whereby_sink_rows_total",
    "Records handled by the sink, by kind (event, dimension, archive) and outcome (inserted, deadletter)",
    ["kind", "outcome"],
)
INSERT_SECONDS = Histogram(
    "whereby_sink_insert_duration_seconds",
    "Duration of one ClickHouse insert, by target (events, dimensions, archive)",
    ["target"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_ROWS = Histogram(
    "whereby_sink_batch_rows", "Records per flushed batch", buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 50000)
)
BATCH_BYTES = Histogram(
    "whereby_sink_batch_bytes",
    "Record bytes per flushed batch",
    buckets=(1e3, 1e4, 1e5, 5e5, 1e6, 4e6, 16e6, 64e6),
)
RETRIES = Counter(
    "whereby_sink_retries_total",
    "Insert attempts that failed with a retriable error, by code class (network, timeout, overload, "
    "readonly, replication, storage, unavailable, connection)",
    ["code_class"],
)
DEADLETTER = Counter(
    "whereby_sink_deadletter_total",
    "Records sent to the dead-letter topic, by reason (empty_record, invalid_json, invalid_dimension, "
    "rejected_by_clickhouse)",
    ["reason"],
)
LATENCY = Histogram(
    "whereby_sink_latency_seconds",
    "Seconds from an event's createdAt (since=created) or its arrival at ingest (since=received) until "
    "the insert that stored it was acknowledged; sampled: the newest event of each partition per batch",
    ["since"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
)
PAUSED = Gauge("whereby_sink_paused", "1 while consumption is paused (insert backing off or buffer full)")

DERIVE_ROOMS = Counter("whereby_sink_derive_rooms_total", "Rooms whose connection and session rows were recomputed")
DERIVE_ROWS = Counter(
    "whereby_sink_derive_rows_total",
    "Derived rows written, by table (connection_rows, session_rows) and kind (upsert, delete)",
    ["table", "kind"],
)
DERIVE_SECONDS = Histogram(
    "whereby_sink_derive_duration_seconds",
    "Duration of one derivation cycle (all rooms with new events)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DERIVE_BACKLOG = Gauge(
    "whereby_sink_derive_backlog_rooms", "Rooms with new events waiting for their rows to be derived"
)
DERIVE_LAG = Gauge(
    "whereby_sink_derive_lag_seconds",
    "Age of the oldest stored change whose connection and session rows are not derived yet (0 when current)",
)
DERIVE_FAILURES = Counter("whereby_sink_derive_failures_total", "Derivation cycles that failed and were retried")
OPEN_CONNECTIONS = Gauge(
    "whereby_sink_open_connections",
    "Connections with no end yet (no left, no session end, room not known empty since), joined in the last 92 days",
)
STALE_OPEN_CONNECTIONS = Gauge(
    "whereby_sink_stale_open_connections",
    "Open connections that joined more than STALE_CONNECTION_S ago: their left and session end were lost",
)

# Personal data (`whereby-pipeline forget`): counts only, never an id or a pseudonym in a label.
ERASURES = Counter(
    "whereby_sink_erasures_total", "People erased from the stored rows (erasure records applied; repeats count again)"
)
ERASURE_SECONDS = Histogram(
    "whereby_sink_erasure_duration_seconds",
    "Rewriting the stored rows of one batch's erased people (ClickHouse mutations on events, connection_rows, "
    "connection_states, dim_users)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
ERASED_ON_INSERT = Counter(
    "whereby_sink_erased_on_insert_total",
    "Events of an erased person that enrich had enriched before it knew of the erasure, scrubbed by the sink",
)
