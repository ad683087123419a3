"""The sink stage on a real broker and the real engine: commit after insert, crash recovery,
ClickHouse outages, dead letters and dimension upserts."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from pipeline import kafka
from pipeline.settings import Settings
from sink import metrics, store
from sink.service import SinkService
from tests.integration.test_sink_model import meeting, rows
from tests.support import Running, derived, read_topic, wait_for

pytestmark = pytest.mark.integration

ROOM = "/acme-standup"


async def produce(settings: Settings, topic: str, items: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def enriched_records(docs: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(d["room_name"].encode(), orjson.dumps(d)) for d in docs]


async def stored(service: SinkService, expect: int) -> None:
    db = service.db

    def count() -> bool:
        assert service.client is not None
        return bool(rows(service.client, f"SELECT count() AS n FROM {db}.events FINAL")[0]["n"] == expect)

    await wait_for(lambda: asyncio.to_thread(count), timeout_s=30)
    assert service.client is not None
    await derived(service.client, db)


def room_usage(service: SinkService) -> dict[str, Any]:
    assert service.client is not None
    [room] = rows(service.client, f"SELECT * FROM {service.db}.rooms WHERE room_name = {{r:String}}", r=ROOM)
    return room


async def test_a_crash_between_insert_and_commit_does_not_double_count(settings: Settings) -> None:
    docs = meeting(ROOM)
    await produce(settings, settings.topic_enriched, enriched_records(docs))

    crashed = SinkService(settings)
    async with Running(crashed):
        assert crashed._consumer is not None

        async def lost_commit(*_: Any, **__: Any) -> None:  # the process dies right after the insert
            return None

        crashed._consumer.commit = lost_commit  # type: ignore[method-assign]
        await stored(crashed, len(docs))
        first = room_usage(crashed)
    assert (first["participant_minutes"], first["sessions"]) == (32, 2)

    # The restarted sink gets everything again (nothing was committed) and inserts it again.
    inserted = metrics.ROWS.labels("event", "inserted")
    before = inserted._value.get()
    restarted = SinkService(settings)
    async with Running(restarted):
        await wait_for(lambda: inserted._value.get() >= before + len(docs))  # all of it, inserted again
        await stored(restarted, len(docs))
        assert room_usage(restarted) == first


async def test_bad_records_go_to_the_dead_letter_topic_and_dimensions_are_upserted(settings: Settings) -> None:
    docs = meeting(ROOM)
    bad = [(b"k", b'{"event_id": "broken", '), (b"k", b""), (b"k", orjson.dumps({**docs[0], "created_at_ms": 0}))]
    await produce(settings, settings.topic_enriched, [*enriched_records(docs[:5]), *bad, *enriched_records(docs[5:])])
    await produce(
        settings,
        settings.topic_dimensions,
        [
            (b"customer:c-acme", orjson.dumps({"customer_id": "c-acme", "name": "Acme"})),
            (b"customer:c-old", orjson.dumps({"customer_id": "c-old"})),
            (b"customer:c-old", None),
            (b"nonsense", b"{}"),
        ],
    )
    sink = SinkService(settings)
    async with Running(sink):
        await stored(sink, len(docs))
        letters = await read_topic(settings, settings.topic_deadletter, expect=4)
        assert sink.client is not None
        customers = await wait_for(
            lambda: rows(sink.client, f"SELECT customer_id, name FROM {settings.clickhouse_database}.customers")
        )
    assert customers == [{"customer_id": "c-acme", "name": "Acme"}]
    records = [orjson.loads(r.value) for r in letters]
    assert sorted(r["reason"] for r in records) == [
        "empty_record",
        "invalid_dimension",
        "rejected_by_clickhouse",
        "rejected_by_clickhouse",
    ]
    assert all(r["stage"] == "sink" and r["source"]["offset"] is not None for r in records)
    assert {r["event_id"] for r in records if r["reason"] == "rejected_by_clickhouse"} == {None, docs[0]["event_id"]}


async def test_a_table_taken_away_and_restored_while_the_sink_runs_loses_nothing(settings: Settings) -> None:
    docs = meeting(ROOM)
    db = settings.clickhouse_database
    sink = SinkService(settings)
    async with Running(sink):
        client = store.connect(settings.clickhouse_url)
        try:
            retries_before = metrics.RETRIES.labels("unavailable")._value.get()
            await asyncio.to_thread(client.command, f"DETACH TABLE {db}.events_input")
            await produce(settings, settings.topic_enriched, enriched_records(docs))
            await wait_for(lambda: metrics.RETRIES.labels("unavailable")._value.get() >= retries_before + 2)
            assert metrics.PAUSED._value.get() == 1  # partitions paused while backing off
            await asyncio.to_thread(client.command, f"ATTACH TABLE {db}.events_input")
            await stored(sink, len(docs))
            await wait_for(lambda: metrics.PAUSED._value.get() == 0)
        finally:
            client.close()
        usage = room_usage(sink)
    assert (usage["participant_minutes"], usage["recorder_minutes"], usage["sessions"]) == (32, 5, 2)


async def test_after_insert_runs_with_the_rows_stored_and_the_offsets_not_yet_committed(settings: Settings) -> None:
    """The plug-in point `make chaos` crashes the sink at (chaos/crashing_sink.py): exactly between the
    insert and the commit. A hook that fails there stops the stage with the rows stored, nothing committed."""
    docs = meeting(ROOM)
    await produce(settings, settings.topic_enriched, enriched_records(docs))
    stored_at_hook: list[int] = []

    def after_insert(batch: Any) -> None:
        assert sink.client is not None
        stored_at_hook.append(rows(sink.client, f"SELECT count() AS n FROM {sink.db}.events")[0]["n"])
        raise RuntimeError("crash between insert and commit")

    sink = SinkService(settings, after_insert=after_insert)
    await sink.start()
    try:
        with pytest.raises(RuntimeError, match="crash between insert and commit"):
            await asyncio.wait_for(sink.run(), timeout=60)
    finally:
        await sink.stop()
    assert stored_at_hook and stored_at_hook[0] > 0  # the hook ran after the insert...
    assert sum((await committed_offsets(settings)).values()) == 0  # ...and before any commit


async def committed_offsets(settings: Settings) -> dict[int, int]:
    consumer = kafka.consumer(settings, group_id=settings.sink_group)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, settings.topic_enriched)
        return {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()
