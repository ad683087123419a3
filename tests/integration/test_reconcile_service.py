"""`reconcile --every`: the long-running mode runs the newest due period, then waits; a stop is bounded,
even in the middle of a run (the run is cancelled and simply done again next time)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from prometheus_client import REGISTRY

from harness.ports import free_port
from pipeline.settings import Settings, WherebyApi
from reconcile.service import ScheduledReconcile
from tests.insights_double import InsightsDouble
from tests.support import Running, wait_for

pytestmark = pytest.mark.integration
KEY = "test-api-key-0123456789"


def runs(outcome: str) -> float:
    return REGISTRY.get_sample_value("whereby_reconcile_runs_total", {"outcome": outcome}) or 0.0


async def test_runs_the_newest_due_period_then_waits_and_stops_promptly(settings: Settings) -> None:
    before = runs("ok")
    async with InsightsDouble(KEY) as double:
        configured = dataclasses.replace(settings, whereby_api=WherebyApi(url=double.url, key=KEY))
        service = ScheduledReconcile(
            configured, every_s=3600, lag_s=1800, backfill=True, read_api=f"http://127.0.0.1:{free_port()}"
        )
        async with Running(service):
            await wait_for(lambda: service.done_to_ms is not None)
            assert service.ready()
        # Nothing in the double: one listing of all rooms, no session to compare.
        assert [r.path for r in double.requests] == ["/insights/rooms"]
    assert service.done_to_ms is not None and service.done_to_ms % 3_600_000 == 0
    assert runs("ok") == before + 1


async def test_a_stop_in_the_middle_of_a_run_is_bounded(settings: Settings) -> None:
    async with InsightsDouble(KEY) as double:
        double.throttle(after=1, retry_after_s=60)  # the run will sit in a 60 s wait
        configured = dataclasses.replace(
            settings, whereby_api=WherebyApi(url=double.url, key=KEY), shutdown_timeout_s=1.0
        )
        service = ScheduledReconcile(
            configured, every_s=3600, lag_s=1800, backfill=False, read_api="http://127.0.0.1:9"
        )
        await service.start()
        task = asyncio.create_task(service.run())
        await wait_for(lambda: len(double.requests) == 1)
        await service.stop()  # bounded by SHUTDOWN_TIMEOUT_S, not by the server's 60 s
        await asyncio.wait_for(task, timeout=5)
    assert service.done_to_ms is None  # the cut run did not count as done
