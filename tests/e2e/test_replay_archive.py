"""Re-attribution reaches all history: `replay` reads the raw archive for what the raw topic no longer
holds (issue 12, item 8). The raw topic loses its records (as retention would delete them), a customer
is registered late, and a replay still moves the customer's earlier meetings to it."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import RecordsToDelete

from enrich.cli import load_files
from enrich.replay import replay
from enrich.service import EnrichService
from pipeline import kafka
from pipeline.settings import Settings
from sink import store
from sink.service import SinkService
from tests.e2e.test_replay import meeting
from tests.support import Running, body, derived, produce_raw, publish_dimensions, topic_record_count, wait_for

pytestmark = pytest.mark.e2e


async def forget_raw_topic(settings: Settings) -> None:
    """Delete every record of the raw topic, as retention eventually does."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, settings.topic_raw)
        end = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    admin = kafka.admin_client(settings)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before_offset=end[tp]) for tp in tps})
    finally:
        await admin.close()


async def test_replay_reads_the_archive_for_history_the_raw_topic_no_longer_holds(
    settings: Settings, tmp_path: Path
) -> None:
    await publish_dimensions(
        settings, [("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]})]
    )
    newco_room, acme_room = f"/newco-{uuid.uuid4()}", f"/acme-{uuid.uuid4()}"
    events = meeting(newco_room, users=("ext-n1", "ext-n2")) + meeting(acme_room, users=("ext-a1", "ext-a2"))

    async with Running(SinkService(settings), http=True) as sink, Running(EnrichService(settings)):
        client, db = sink.service.client, settings.clickhouse_database

        def query(sql: str) -> list[dict[str, Any]]:
            return store.query_dicts(client, sql.format(db=db))

        def usage() -> dict[str | None, int]:
            rows = query(
                "SELECT customer_id, sum(participant_minutes) AS m FROM {db}.usage_by_customer_day GROUP BY customer_id"
            )
            return {r["customer_id"]: int(r["m"]) for r in rows}

        def count(table: str) -> int:
            return int(query(f"SELECT count() AS n FROM {{db}}.{table} FINAL")[0]["n"])

        await produce_raw(settings, [body(doc) for doc in events])
        await wait_for(lambda: asyncio.to_thread(lambda: count("raw_archive") == count("events") == len(events)))
        await derived(client, db)
        before = await asyncio.to_thread(usage)

        await forget_raw_topic(settings)
        assert await topic_record_count(settings, settings.topic_raw) == 0

        customers = tmp_path / "customers.csv"
        customers.write_text("customer_id,name,room_name_prefix\nc-newco,NewCo,newco-\n")
        out = io.StringIO()
        assert await load_files(settings, str(customers), None, out=out, err=out) == 0, out.getvalue()

        summary = await replay(settings, api=sink.url)

        await wait_for(lambda: asyncio.to_thread(lambda: usage().get("c-newco", 0) > 0))
        await derived(client, db)
        after = await asyncio.to_thread(usage)

    assert summary.from_archive == len(events) and summary.enriched == len(events)
    assert before == {"c-acme": 14, None: 14}
    assert after == {"c-acme": 14, "c-newco": 14}  # moved, not copied
