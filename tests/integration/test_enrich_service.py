"""The enrich stage on a real broker: live dimension changes, tombstones, dead letters, committed offsets."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from enrich.service import EnrichService
from pipeline import deadletters, kafka
from pipeline.kafkaerrors import KafkaFatal
from pipeline.settings import Settings
from tests.support import Running, body, event, produce_raw, publish_dimensions, read_topic, wait_for

pytestmark = pytest.mark.integration


def joined(room: str, external_id: str | None = None) -> dict[str, Any]:
    return event("room.client.joined", room, 0, participant=f"p-{uuid.uuid4().hex[:8]}", external_id=external_id)


async def enriched_for(settings: Settings, event_id: str) -> dict[str, Any]:
    """The enriched record of one event, read back from the enriched topic."""

    async def find() -> dict[str, Any] | None:
        records = await read_topic(settings, settings.topic_enriched, expect=10**9, timeout_s=0.5)
        matches = [orjson.loads(r.value) for r in records if r.value and orjson.loads(r.value)["event_id"] == event_id]
        return matches[-1] if matches else None

    found: dict[str, Any] = await wait_for(find, timeout_s=20)
    return found


async def committed(settings: Settings) -> dict[int, int]:
    consumer = kafka.consumer(settings, group_id=settings.enrich_group)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, settings.topic_raw)
        return {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, settings.topic_raw)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def test_dimension_changes_and_tombstones_apply_live_without_restart(settings: Settings) -> None:
    await publish_dimensions(
        settings, [("customer:c-old", {"customer_id": "c-old", "name": "Old", "room_name_prefixes": ["old-"]})]
    )
    room = f"/zeta-{uuid.uuid4()}"
    async with Running(EnrichService(settings)) as running:
        service: EnrichService = running.service
        # Loaded before the first event: resolution works from the very first record.
        early = joined(f"/old-{uuid.uuid4()}")
        await produce_raw(settings, [body(early)])
        assert (await enriched_for(settings, early["id"]))["customer_id"] == "c-old"

        before = joined(room, external_id="ext-zed")
        await produce_raw(settings, [body(before)])
        out = await enriched_for(settings, before["id"])
        assert (out["customer_id"], out["customer_resolution"]) == (None, "unresolved")
        assert (out["user_id"], out["user_resolution"]) == (None, "unresolved")

        await publish_dimensions(
            settings,
            [
                ("customer:c-zeta", {"customer_id": "c-zeta", "name": "Zeta", "room_name_prefixes": ["zeta-"]}),
                ("user:ext-zed", {"external_id": "ext-zed", "user_id": "u-zed", "customer_id": "c-zeta"}),
            ],
        )
        await wait_for(lambda: "ext-zed" in service.table.users)
        after = joined(room, external_id="ext-zed")
        await produce_raw(settings, [body(after)])
        out = await enriched_for(settings, after["id"])
        assert (out["customer_id"], out["customer_name"], out["customer_resolution"]) == ("c-zeta", "Zeta", "prefix")
        assert (out["user_id"], out["user_resolution"]) == ("u-zed", "external_id")
        assert out["dimension_version"] == 3

        await publish_dimensions(settings, [("customer:c-zeta", None), ("user:ext-zed", None)])
        await wait_for(lambda: "ext-zed" not in service.table.users and "c-zeta" not in service.table.customers)
        deleted = joined(room, external_id="ext-zed")
        await produce_raw(settings, [body(deleted)])
        out = await enriched_for(settings, deleted["id"])
        assert (out["customer_id"], out["customer_resolution"]) == (None, "unresolved")
        assert (out["user_id"], out["user_resolution"]) == (None, "unresolved")
        assert out["dimension_version"] == 5


async def test_bad_rows_go_to_the_dead_letter_topic_and_the_partition_keeps_moving(settings: Settings) -> None:
    room = f"/acme-{uuid.uuid4()}"
    good_before, good_after = joined(room), joined(room)
    no_room = event("room.client.joined", room, 0, participant="p-1")
    del no_room["data"]["roomName"]
    garbage = b"\xff\xfe not json"
    # All with one key, so they share a partition and the good event after the bad ones must get through.
    producer = kafka.producer(settings)
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait(settings.topic_raw, value, key=room.encode())
            for value in (body(good_before), garbage, body(no_room), body(good_after))
        ]
    finally:
        await producer.stop()

    async with Running(EnrichService(settings)):
        enriched = await read_topic(settings, settings.topic_enriched, expect=2)
        bad = await read_topic(settings, settings.topic_deadletter, expect=2)
        await wait_for(lambda: _all_committed(settings))

    assert sorted(orjson.loads(r.value)["event_id"] for r in enriched if r.value) == sorted(
        [good_before["id"], good_after["id"]]
    )
    rows = sorted((orjson.loads(r.value) for r in bad if r.value), key=lambda row: row["source"]["offset"])
    assert [(r["stage"], r["reason"], r["event_id"]) for r in rows] == [
        ("enrich", "invalid_json", None),
        ("enrich", "missing_field", no_room["id"]),
    ]
    partition = sent[0].partition
    assert [r["source"] for r in rows] == [
        {"topic": settings.topic_raw, "partition": partition, "offset": sent[1].offset},
        {"topic": settings.topic_raw, "partition": partition, "offset": sent[2].offset},
    ]
    assert [deadletters.bad_row_payload(r) for r in rows] == [garbage, body(no_room)]
    assert all(r.key == room.encode() for r in bad)


async def test_an_event_with_deeply_nested_metadata_is_enriched_not_dead_lettered(settings: Settings) -> None:
    deep = '{"team":' + '{"a":' * 300 + "1" + "}" * 300 + "}"  # orjson reads it, cannot write it back
    doc = event("room.client.joined", f"/acme-{uuid.uuid4()}", 0, participant="p-1", metadata=deep)
    await produce_raw(settings, [body(doc)])

    async with Running(EnrichService(settings)):
        out = await enriched_for(settings, doc["id"])
        await wait_for(lambda: _all_committed(settings))

    assert (out["metadata"], out["metadata_form"], out["metadata_raw"]) == ({}, "raw", deep)
    assert await read_topic(settings, settings.topic_deadletter, expect=1, timeout_s=1) == []


async def _all_committed(settings: Settings) -> bool:
    return await committed(settings) == await end_offsets(settings)


async def test_restart_resumes_from_committed_offsets_and_loses_nothing(settings: Settings) -> None:
    first = [body(joined(f"/r-{i}")) for i in range(50)]
    second = [body(joined(f"/r-{i}")) for i in range(50)]
    await produce_raw(settings, first)
    async with Running(EnrichService(settings)):
        await read_topic(settings, settings.topic_enriched, expect=50)
        await wait_for(lambda: _all_committed(settings))
    await produce_raw(settings, second)
    async with Running(EnrichService(settings)):
        records = await read_topic(settings, settings.topic_enriched, expect=100)
        await wait_for(lambda: _all_committed(settings))

    ids = [orjson.loads(r.value)["event_id"] for r in records if r.value]
    assert sorted(ids) == sorted(orjson.loads(b)["id"] for b in first + second)
    # Keyed by room name, like the raw topic, so per-room order carries through.
    assert {r.key for r in records} == {orjson.loads(b)["data"]["roomName"].encode() for b in first}


async def test_enriched_records_keep_their_raw_partition_and_room_key(settings: Settings) -> None:
    """Co-partitioned: same partition count, so each record stays on its raw partition, keyed by room."""
    docs = [joined(f"/room-{i}") for i in range(40)]
    positions = await produce_raw(settings, [body(d) for d in docs])
    raw_partition = {d["id"]: partition for d, (partition, _) in zip(docs, positions, strict=True)}
    assert len(set(raw_partition.values())) > 1  # the rooms spread over several partitions

    async with Running(EnrichService(settings)):
        records = await read_topic(settings, settings.topic_enriched, expect=len(docs))

    out = {orjson.loads(r.value)["event_id"]: r for r in records if r.value}
    assert {event_id: r.partition for event_id, r in out.items()} == raw_partition
    assert all(r.key == orjson.loads(r.value)["room_name"].encode() for r in out.values() if r.value)


async def test_different_partition_counts_fall_back_to_the_default_partitioner(
    kafka_bootstrap: str, clickhouse_url: str
) -> None:
    from aiokafka.admin import NewTopic
    from aiokafka.partitioner import DefaultPartitioner

    from tests.conftest import make_settings

    settings = make_settings(kafka_bootstrap, clickhouse_url)  # 3 partitions per topic ...
    admin = kafka.admin_client(settings)
    await admin.start()
    try:  # ... except the enriched topic, made first with 2
        await admin.create_topics([NewTopic(settings.topic_enriched, 2, settings.topic_replication_factor)])
    finally:
        await admin.close()
    await kafka.ensure_topics(settings)
    rooms = [f"/room-{i}" for i in range(30)]
    await produce_raw(settings, [body(joined(room)) for room in rooms])

    async with Running(EnrichService(settings)):
        records = await read_topic(settings, settings.topic_enriched, expect=len(rooms))

    partitioner = DefaultPartitioner()
    assert sorted(r.key for r in records if r.key) == sorted(room.encode() for room in rooms)
    assert all(r.partition == partitioner(r.key, [0, 1], [0, 1]) for r in records)


async def test_an_unexpected_error_dead_letters_the_event_and_the_partition_keeps_moving(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in enrichment for one event must not stall its partition (principle 5)."""
    import enrich.service as service_module

    room = f"/acme-{uuid.uuid4()}"
    poisoned, good = joined(room), joined(room)
    real = service_module.enrich_record

    def enrich_with_a_bug(raw: bytes, *args: Any) -> Any:
        if poisoned["id"].encode() in raw:
            raise ZeroDivisionError("a bug that only this event triggers")
        return real(raw, *args)

    monkeypatch.setattr(service_module, "enrich_record", enrich_with_a_bug)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for doc in (poisoned, good):
            await producer.send_and_wait(settings.topic_raw, body(doc), key=room.encode())
    finally:
        await producer.stop()

    async with Running(EnrichService(settings)):
        enriched = await read_topic(settings, settings.topic_enriched, expect=1)
        bad = await read_topic(settings, settings.topic_deadletter, expect=1)
        await wait_for(lambda: _all_committed(settings))

    assert [orjson.loads(r.value)["event_id"] for r in enriched if r.value] == [good["id"]]
    [row] = [orjson.loads(r.value) for r in bad if r.value]
    assert (row["stage"], row["reason"]) == ("enrich", "internal_error")
    assert row["detail"].startswith("ZeroDivisionError")
    assert deadletters.bad_row_payload(row) == body(poisoned)


async def test_enrich_reports_lag_batch_sizes_and_produce_latency(settings: Settings) -> None:
    import dataclasses

    from pipeline.lag import LAG

    def lag() -> dict[str, float]:
        return {
            s.labels["partition"]: s.value
            for m in LAG.collect()
            for s in m.samples
            if s.labels.get("stage") == "enrich" and s.labels.get("topic") == settings.topic_raw
        }

    from enrich.service import BATCH_RECORDS, PRODUCE_SECONDS

    def total(histogram: Any, suffix: str) -> float:
        return sum(x.value for m in histogram.collect() for x in m.samples if x.name.endswith(suffix))

    records_before, batches_before = total(BATCH_RECORDS, "_sum"), total(PRODUCE_SECONDS, "_count")
    await produce_raw(settings, [body(joined(f"/acme-{uuid.uuid4()}")) for _ in range(5)])
    async with Running(EnrichService(dataclasses.replace(settings, lag_interval_s=0.2))):
        seen = await wait_for(lambda: (current := lag()) and all(v == 0 for v in current.values()) and current)
    assert set(seen) == {"0", "1", "2"}
    assert lag() == {}
    # Batch size and produce latency are observed once per handled batch.
    assert total(BATCH_RECORDS, "_sum") - records_before == 5
    assert total(PRODUCE_SECONDS, "_count") - batches_before >= 1


async def test_healthz_follows_the_loop_idle_polls_alive_a_stuck_poll_dead(settings: Settings) -> None:
    configured = dataclasses.replace(settings, liveness_stall_s=1.5, shutdown_timeout_s=2.0)
    service = EnrichService(configured)
    async with Running(service, http=True) as running, aiohttp.ClientSession() as http:
        await asyncio.sleep(3)  # nothing to consume: empty polls only, twice the bound
        async with http.get(running.url + "/healthz") as r:
            assert r.status == 200
        consumer = service._consumer
        assert consumer is not None

        async def stuck(*_: Any, **__: Any) -> Any:  # a poll that never comes back (a wedged client)
            await asyncio.sleep(3600)

        consumer.getmany = stuck  # type: ignore[method-assign]
        answer = await wait_for(lambda: _answer(http, running.url + "/healthz", 503), timeout_s=10)
        assert answer["status"] == "stalled"
        async with http.get(running.url + "/readyz") as r:
            assert r.status == 200  # readiness is unchanged: only liveness judges progress
    # Running's exit waited for run(): the stop, bounded by SHUTDOWN_TIMEOUT_S, cancelled the stuck loop.


async def _answer(http: aiohttp.ClientSession, url: str, status: int) -> dict[str, Any] | None:
    async with http.get(url) as r:
        return dict(await r.json()) if r.status == status else None


async def test_a_record_the_broker_refuses_stops_the_stage_instead_of_retrying_forever(settings: Settings) -> None:
    # An enriched topic that takes records of at most 1000 bytes: every enriched event is refused
    # (MESSAGE_TOO_LARGE), which no retry can fix.
    small = dataclasses.replace(settings, topic_enriched=f"{settings.topic_enriched}.small")
    admin = kafka.admin_client(small)
    await admin.start()
    try:
        spec = NewTopic(small.topic_enriched, small.topic_partitions, 1, topic_configs={"max.message.bytes": "1000"})
        await admin.create_topics([spec])
    finally:
        await admin.close()
    doc = joined("/acme-big")
    doc["data"]["metadata"] = "x" * 1500
    await produce_raw(small, [body(doc)])
    service = EnrichService(small)
    await service.start()
    try:
        with pytest.raises(KafkaFatal, match=r"MessageSizeTooLargeError.*max\.message\.bytes") as caught:
            await asyncio.wait_for(service.run(), timeout=60)
        assert "\n" not in str(caught.value)
    finally:
        await service.stop()
    assert sum((await committed(small)).values()) == 0  # nothing committed: the event is not lost
