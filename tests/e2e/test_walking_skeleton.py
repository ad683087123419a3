"""Signed webhooks in, ClickHouse rows out: all three stages on a real broker and the real engine."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from enrich.service import EnrichService
from ingest.service import WEBHOOK_PATH, IngestService
from pipeline.settings import Settings
from sink import store
from sink.service import SinkService
from tests.support import Running, body, derived, event, publish_dimensions, signed_headers, wait_for

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"


async def test_one_meeting_becomes_connections_with_customer_user_and_seconds(settings: Settings) -> None:
    await publish_dimensions(
        settings,
        [
            ("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]}),
            ("customer:c-labs", {"customer_id": "c-labs", "name": "Acme Labs", "room_name_prefixes": ["acme-labs-"]}),
            ("user:ext-ada", {"external_id": "ext-ada", "user_id": "u-ada", "customer_id": "c-labs"}),
            ("user:ext-bob", {"external_id": "ext-bob", "user_id": "u-bob", "customer_id": "c-labs"}),
        ],
    )
    room = f"/acme-labs-{uuid.uuid4()}"
    meeting = [
        event("room.client.joined", room, 0, participant="p-ada", external_id="ext-ada", session=None),
        event("room.session.started", room, 1),
        event("room.client.joined", room, 5, participant="p-bob", external_id="ext-bob"),
        event("room.client.left", room, 125, participant="p-bob", external_id="ext-bob"),
        event("room.client.left", room, 610.5, participant="p-ada", external_id="ext-ada"),
        event("room.session.ended", room, 700),
    ]

    async with (
        Running(SinkService(settings)) as sink,
        Running(EnrichService(settings)),
        Running(IngestService(settings), http=True) as ingest,
        aiohttp.ClientSession() as http,
    ):
        for doc in meeting:
            raw = body(doc)
            headers = signed_headers(raw, SECRET)
            async with http.post(ingest.url + WEBHOOK_PATH, data=raw, headers=headers) as response:
                assert response.status == 202, await response.text()

        client = sink.service.client
        db = settings.clickhouse_database

        def stored() -> int:
            rows = store.query_dicts(client, f"SELECT count() AS n FROM {db}.events FINAL")
            return int(rows[0]["n"]) == len(meeting)

        await wait_for(lambda: asyncio.to_thread(stored))
        await derived(client, db)
        connections = store.query_dicts(
            client,
            f"SELECT participant_id, customer_id, user_id, external_id, seconds "
            f"FROM {db}.connections WHERE room_name = {{room:String}} ORDER BY participant_id",
            {"room": room},
        )

    assert connections == [
        {
            "participant_id": "p-ada",
            "customer_id": "c-labs",
            "user_id": "u-ada",
            "external_id": "ext-ada",
            "seconds": 610,
        },
        {
            "participant_id": "p-bob",
            "customer_id": "c-labs",
            "user_id": "u-bob",
            "external_id": "ext-bob",
            "seconds": 120,
        },
    ]
