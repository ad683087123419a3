"""Reconciliation results through the real sink: topic → `reconciliation` table → `reconciliation_latest`,
redelivery adding nothing, a bad record dead-lettered, and the drift gauges, on the real broker and engine."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from pipeline import kafka
from pipeline.settings import Settings
from sink import store
from sink.read import drift
from sink.service import SinkService
from tests.support import Running, read_topic, wait_for
from tests.unit.test_sink_reconciliation import JAN1, record

pytestmark = pytest.mark.integration
DAY = 86_400_000


async def produce(settings: Settings, items: list[tuple[str, bytes]]) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(settings.topic_reconciliation, value, key=key.encode())
    finally:
        await producer.stop()


def query(service: SinkService, sql: str) -> list[dict[str, Any]]:
    assert service.client is not None
    return store.query_dicts(service.client, sql.replace("{db}", service.db))


async def test_results_are_stored_once_and_the_latest_per_session_wins(settings: Settings) -> None:
    first = record(run_id="a" * 32, checked_at_ms=JAN1 + DAY, status="mismatch", after_backfill=None)
    later = record(run_id="b" * 32, checked_at_ms=JAN1 + 2 * DAY, status="match", after_backfill=None)
    other = record(run_id="b" * 32, checked_at_ms=JAN1 + 2 * DAY, room_session_id="sess-2", status="missing",
                   after_backfill=None, started_at_ms=JAN1 - 3 * DAY)  # fmt: skip
    repaired = record(run_id="c" * 32, room_session_id="sess-3", status="mismatch", after_backfill="match")
    values = [orjson.dumps(d) for d in (first, later, other, repaired)]
    # Every record twice (a redelivery), and one the sink cannot read.
    items = [(doc["room_session_id"], v) for doc, v in zip((first, later, other, repaired), values, strict=True)]
    await produce(settings, [*items, *items, ("sess-9", b'{"schema": 1}')])

    async with Running(SinkService(settings)) as sink:
        service = sink.service

        def landed() -> bool:
            return query(service, "SELECT count() AS n FROM {db}.reconciliation FINAL")[0]["n"] == 4

        await wait_for(lambda: asyncio.to_thread(landed))
        latest = query(
            service,
            "SELECT room_session_id, status, after_backfill, current_status, participant_minutes_diff "
            "FROM {db}.reconciliation_latest ORDER BY room_session_id",
        )
        await asyncio.to_thread(drift.refresh, service.client, service.db)  # type: ignore[arg-type]
        [letter] = await read_topic(settings, settings.topic_deadletter, expect=1)

    assert latest == [
        {"room_session_id": "sess-1", "status": "match", "after_backfill": None, "current_status": "match",
         "participant_minutes_diff": -1},
        {"room_session_id": "sess-2", "status": "missing", "after_backfill": None, "current_status": "missing",
         "participant_minutes_diff": -1},
        {"room_session_id": "sess-3", "status": "mismatch", "after_backfill": "match", "current_status": "match",
         "participant_minutes_diff": -1},
    ]  # fmt: skip
    assert orjson.loads(letter.value)["reason"] == "invalid_reconciliation"
    sample = REGISTRY.get_sample_value
    assert sample("whereby_reconciliation_sessions", {"status": "match"}) == 2
    assert sample("whereby_reconciliation_sessions", {"status": "missing"}) == 1
    assert sample("whereby_reconciliation_sessions", {"status": "mismatch"}) == 0
    # sess-2 started three days before JAN1: the oldest drift is at least that old.
    age = sample("whereby_reconciliation_drift_oldest_age_seconds")
    assert age is not None and age > 3 * 86_400
