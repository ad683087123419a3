"""Reconciliation drift as Prometheus gauges, refreshed from `reconciliation_latest` by the sink.

The sink exports them (not reconcile) because the results live in the store the sink owns: the gauges
are right whether runs come from `reconcile --every` or from a Kubernetes CronJob nothing scrapes, and
they keep ageing between runs. With several sink replicas each exports the same values: aggregate with
`max`.

- `whereby_reconciliation_sessions{status}`: sessions per latest `current_status`.
- `whereby_reconciliation_drift_oldest_age_seconds`: how long ago the oldest session still in
  `mismatch` or `missing` started (0 when none): the alert fires above one day.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import Gauge

from pipeline import contract
from sink import store

log = logging.getLogger(__name__)

REFRESH_S = 60.0
SESSIONS = Gauge(
    "whereby_reconciliation_sessions",
    "Room sessions by the status of their latest reconciliation (match, mismatch, missing)",
    ["status"],
)
DRIFT_OLDEST_AGE = Gauge(
    "whereby_reconciliation_drift_oldest_age_seconds",
    "Seconds since the start of the oldest session whose latest reconciliation is mismatch or missing (0: none)",
)
for _status in contract.RECONCILIATION_STATUSES:
    SESSIONS.labels(_status)


def query(database: str) -> str:
    """Sessions and the oldest start per current status (the database name is a checked identifier)."""
    return (
        "SELECT current_status AS status, count() AS sessions, "
        "min(toUnixTimestamp64Milli(coalesce(started_at, period_from))) AS oldest_ms "
        f"FROM {database}.reconciliation_latest GROUP BY current_status"
    )


def drift(rows: Sequence[dict[str, Any]], now_ms: int) -> tuple[dict[str, int], float]:
    """(sessions per status, age in seconds of the oldest drifting session or 0) from the query's rows."""
    counts = dict.fromkeys(contract.RECONCILIATION_STATUSES, 0)
    oldest: int | None = None
    for row in rows:
        status = str(row["status"])
        counts[status] = counts.get(status, 0) + int(row["sessions"])
        if status != "match" and row["oldest_ms"] is not None:
            oldest = int(row["oldest_ms"]) if oldest is None else min(oldest, int(row["oldest_ms"]))
    return counts, 0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)


def refresh(client: Client, database: str) -> None:
    """Query the latest results and set the gauges (blocking)."""
    counts, age = drift(store.query_dicts(client, query(database)), int(time.time() * 1000))
    for status, sessions in counts.items():
        if status in contract.RECONCILIATION_STATUSES:
            SESSIONS.labels(status).set(sessions)
    DRIFT_OLDEST_AGE.set(age)


async def report_forever(get_client: Callable[[], Client | None], database: str, interval_s: float = REFRESH_S) -> None:
    """Refresh the gauges every `interval_s` until cancelled; a failed refresh keeps the last values."""
    while True:
        client = get_client()
        if client is not None:
            try:
                await asyncio.to_thread(refresh, client, database)
            except Exception as exc:  # the store may be briefly unavailable: the next round retries
                log.warning(f"reconciliation drift gauges not refreshed: {exc!r}")
        await asyncio.sleep(interval_s)
