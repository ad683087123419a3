"""Invalid records on the dimensions topic, on a real broker and the real engine: enrich and the sink
both dead-letter them with the same verdict (one shared decoder) and keep going."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from enrich.service import EnrichService
from pipeline import kafka
from pipeline.settings import Settings
from sink.service import SinkService
from tests.integration.test_sink_model import rows
from tests.support import Running, body, event, produce_raw, read_topic, wait_for

pytestmark = pytest.mark.integration


def nested(depth: int) -> bytes:
    """JSON text of a value nested `depth` levels deep: orjson reads up to 1024 levels, writes at most 254."""
    return b'{"d":' * depth + b'"bottom"' + b"}" * depth


# Each is refused by `pipeline.dimensions.decode`; before it, the first one crashed enrich at start
# (orjson.JSONEncodeError while converting attributes) and stopped the sink on the same record forever.
POISON: list[tuple[bytes | None, bytes | None]] = [
    (b"customer:c-deep", b'{"customer_id":"c-deep","attributes":{"tree":' + nested(300) + b"}}"),
    (b"user:ext-typed", orjson.dumps({"external_id": "ext-typed", "email": ["not", "a", "string"]})),
    (b"\xff\xfecustomer:c-bytes", b"{}"),
    (b"customer:has space", orjson.dumps({"customer_id": "has space"})),
    (b"customer:c-long", orjson.dumps({"customer_id": "c-long", "attributes": {"k": "v" * 5000}})),
    (b"team:x", None),  # a compacted topic refuses a record without a key; an unknown kind is the closest
]
VALID = (b"customer:c-good", orjson.dumps({"customer_id": "c-good", "name": "Good", "room_name_prefixes": ["good-"]}))


async def produce(settings: Settings, items: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(settings.topic_dimensions, value, key=key)
    finally:
        await producer.stop()


async def bad_rows(settings: Settings, expect: int) -> list[dict[str, Any]]:
    letters = await read_topic(settings, settings.topic_deadletter, expect=expect)
    return sorted((orjson.loads(r.value) for r in letters if r.value), key=lambda r: r["source"]["offset"])


async def enriched_customer(settings: Settings, room: str) -> str | None:
    doc = event("room.client.joined", room, 0, participant=f"p-{uuid.uuid4().hex[:8]}")
    await produce_raw(settings, [body(doc)])

    async def find() -> dict[str, Any] | None:
        records = await read_topic(settings, settings.topic_enriched, expect=10**9, timeout_s=0.5)
        found = [orjson.loads(r.value) for r in records if r.value and orjson.loads(r.value)["event_id"] == doc["id"]]
        return found[-1] if found else None

    out: dict[str, Any] = await wait_for(find, timeout_s=20)
    return out["customer_id"]  # type: ignore[no-any-return]


async def test_enrich_starts_and_keeps_running_with_invalid_dimension_records(settings: Settings) -> None:
    await produce(settings, [*POISON, VALID])
    async with Running(EnrichService(settings)) as running:
        service: EnrichService = running.service
        assert sorted(service.table.customers) == ["c-good"]
        assert await enriched_customer(settings, f"/good-{uuid.uuid4()}") == "c-good"
        letters = await bad_rows(settings, expect=len(POISON))
        assert [(r["stage"], r["reason"], r["source"]["offset"]) for r in letters] == [
            ("enrich", "invalid_dimension", offset) for offset in range(len(POISON))
        ]
        assert all(r["source"]["topic"] == settings.topic_dimensions for r in letters)

        # One arriving while enrich follows the topic is dead-lettered too, and the follower goes on.
        await produce(settings, [POISON[0], (b"customer:c-late", orjson.dumps({"room_name_prefixes": ["late-"]}))])
        await wait_for(lambda: "c-late" in service.table.customers)
        assert [r["source"]["offset"] for r in await bad_rows(settings, expect=len(POISON) + 1)][-1] == len(POISON) + 1
        assert await enriched_customer(settings, f"/late-{uuid.uuid4()}") == "c-late"


async def committed_dimensions(settings: Settings) -> int:
    consumer = kafka.consumer(settings, group_id=settings.sink_group)
    await consumer.start()
    try:
        return (await consumer.committed(TopicPartition(settings.topic_dimensions, 0))) or 0
    finally:
        await consumer.stop()


async def test_the_sink_dead_letters_invalid_dimension_records_and_commits_past_them(settings: Settings) -> None:
    await produce(settings, [*POISON, VALID])
    sink = SinkService(settings)
    async with Running(sink):
        await wait_for(lambda: _committed_at_least(settings, len(POISON) + 1), timeout_s=30)
        assert sink.client is not None
        customers = await asyncio.to_thread(
            rows, sink.client, f"SELECT customer_id, name FROM {settings.clickhouse_database}.customers"
        )
    assert customers == [{"customer_id": "c-good", "name": "Good"}]
    letters = await bad_rows(settings, expect=len(POISON))
    assert [(r["stage"], r["reason"], r["source"]["offset"]) for r in letters] == [
        ("sink", "invalid_dimension", offset) for offset in range(len(POISON))
    ]


async def _committed_at_least(settings: Settings, offset: int) -> bool:
    return await committed_dimensions(settings) >= offset
