"""Reconcile's Prometheus metrics (prefix `whereby_reconcile_`), exposed on /metrics by the long-running
mode (`reconcile --every`). Every label has a small, fixed set of values. The drift gauges the alert uses
are the sink's (`whereby_reconciliation_*`): they come from the stored results, so they work whether runs
are scheduled by this process or by a Kubernetes CronJob that nothing scrapes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

API_REQUESTS = Counter(
    "whereby_reconcile_api_requests_total",
    "Requests to Whereby's Insights API by endpoint (rooms, room_sessions, participants) and answer "
    "(ok, rate_limited, retried, unauthorized, failed)",
    ["endpoint", "outcome"],
)
RUNS = Counter("whereby_reconcile_runs_total", "Reconcile runs by outcome (ok, failed)", ["outcome"])
SESSIONS = Counter(
    "whereby_reconcile_sessions_total", "Room sessions checked, by status found (match, mismatch, missing)", ["status"]
)
BACKFILLED = Counter("whereby_reconcile_backfilled_events_total", "Join/leave events synthesized from Insights")
LAST_SUCCESS = Gauge(
    "whereby_reconcile_last_success_timestamp_seconds", "When the last reconcile run finished successfully"
)

for _status in ("match", "mismatch", "missing"):
    SESSIONS.labels(_status)
for _outcome in ("ok", "failed"):
    RUNS.labels(_outcome)
