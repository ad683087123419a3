"""The Kafka contract's version on a real broker (docs/contract.md): every record a stage writes carries
`contract-version` and `producer` headers; a record from a newer release is dead-lettered with reason
`unsupported_version` and the stage goes on with the next one; a record with no header (the release
before) is read as version 1."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from enrich.service import EnrichService
from pipeline import contract, kafka
from pipeline.settings import Settings
from sink.service import SinkService
from tests.integration.test_sink_model import meeting
from tests.integration.test_sink_service import stored
from tests.support import Running, body, event, read_topic, wait_for

pytestmark = pytest.mark.integration

NEWER = [(contract.HEADER_CONTRACT_VERSION, str(contract.CONTRACT_VERSION + 1).encode())]
CURRENT = list(contract.version_headers("test"))


async def produce(settings: Settings, topic: str, items: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    """Write (key, value, headers) in order, one key per test, so they share a partition."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for key, value, headers in items:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers or ())


async def test_enrich_dead_letters_a_newer_raw_record_and_goes_on(settings: Settings) -> None:
    room = f"/acme-{uuid.uuid4()}"
    docs = [event("room.client.joined", room, i, participant=f"p-{i}") for i in range(4)]
    await produce(
        settings,
        settings.topic_raw,
        [
            (room.encode(), body(docs[0]), []),  # the release before: no header, version 1
            (room.encode(), body(docs[1]), NEWER),
            (room.encode(), body(docs[2]), [(contract.HEADER_CONTRACT_VERSION, b"two")]),  # no version at all
            (room.encode(), body(docs[3]), CURRENT),
        ],
    )
    async with Running(EnrichService(settings)):
        enriched = await read_topic(settings, settings.topic_enriched, expect=2)
        letters = await read_topic(settings, settings.topic_deadletter, expect=2)

    assert [orjson.loads(r.value)["event_id"] for r in enriched] == [docs[0]["id"], docs[3]["id"]]
    for record in enriched:
        assert headers_of(record)[contract.HEADER_CONTRACT_VERSION] == str(contract.CONTRACT_VERSION).encode()
        assert headers_of(record)[contract.HEADER_PRODUCER] == contract.producer("enrich").encode()
    rows = sorted((orjson.loads(r.value) for r in letters), key=lambda row: row["source"]["offset"])
    assert [(r["stage"], r["reason"]) for r in rows] == [("enrich", "unsupported_version")] * 2
    assert [orjson.loads(r["payload"])["id"] for r in rows] == [docs[1]["id"], docs[2]["id"]]
    assert all(headers_of(r)[contract.HEADER_PRODUCER] == contract.producer("enrich").encode() for r in letters)


async def test_enrich_skips_and_dead_letters_a_newer_dimension_record(settings: Settings) -> None:
    doc = {"customer_id": "c-new", "name": "New", "room_name_prefixes": ["new-"]}
    await produce(settings, settings.topic_dimensions, [(b"customer:c-new", orjson.dumps(doc), NEWER)])
    async with Running(EnrichService(settings)) as running:
        letters = await read_topic(settings, settings.topic_deadletter, expect=1)
        assert "c-new" not in running.service.table.customers  # not read as ours
    assert [orjson.loads(r.value)["reason"] for r in letters] == ["unsupported_version"]


async def test_sink_dead_letters_newer_records_of_every_topic_and_stores_the_rest(settings: Settings) -> None:
    room = f"/acme-{uuid.uuid4()}"
    docs = meeting(room)
    newer_event = {**docs[0], "event_id": "from-the-future"}
    await produce(
        settings,
        settings.topic_enriched,
        [
            *[(room.encode(), orjson.dumps(d), []) for d in docs[:3]],  # version 1: no header
            (room.encode(), orjson.dumps(newer_event), NEWER),
            *[(room.encode(), orjson.dumps(d), CURRENT) for d in docs[3:]],
        ],
    )
    customer = {"customer_id": "c-new", "name": "New", "room_name_prefixes": ["new-"]}
    await produce(settings, settings.topic_dimensions, [(b"customer:c-new", orjson.dumps(customer), NEWER)])
    await produce(settings, settings.topic_raw, [(room.encode(), body(event("room.session.started", room, 0)), NEWER)])

    sink = SinkService(settings)
    async with Running(sink):
        await stored(sink, len(docs))  # every other event, in the same partition after the newer one
        letters = await read_topic(settings, settings.topic_deadletter, expect=3)
        assert sink.client is not None
        db = settings.clickhouse_database

        def count(sql: str) -> int:
            assert sink.client is not None
            return int(sink.client.query(sql).result_rows[0][0])

        future = await asyncio.to_thread(count, f"SELECT count() FROM {db}.events WHERE event_id = 'from-the-future'")
        customers = await asyncio.to_thread(count, f"SELECT count() FROM {db}.customers")
        archived = await wait_for(lambda: asyncio.to_thread(count, f"SELECT count() + 1 FROM {db}.raw_archive"))
    assert (future, customers, archived - 1) == (0, 0, 0)
    rows = [orjson.loads(r.value) for r in letters]
    assert sorted(r["source"]["topic"] for r in rows) == sorted(
        [settings.topic_enriched, settings.topic_dimensions, settings.topic_raw]
    )
    assert {(r["stage"], r["reason"]) for r in rows} == {("sink", "unsupported_version")}
