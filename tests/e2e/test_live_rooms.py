"""Who is in a room now, minutes by a metadata key and when hosts arrive (issue 18), through the whole
pipeline: signed webhooks posted to ingest, the real broker, enrichment, the sink, and the sink's read
API over HTTP. The integration tests (tests/integration/test_metadata_live.py) cover the cases; this one
proves the same answers come out when the events travel the real wire.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from enrich.service import EnrichService
from ingest.service import WEBHOOK_PATH, IngestService
from pipeline.settings import Settings
from sink.service import SinkService
from tests.support import Running, body, event, publish_dimensions, signed_headers, wait_for

pytestmark = pytest.mark.e2e

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"  # the secret harness.stack.isolated_env gives ingest
CUSTOMER = "c-live-e2e"


def edge(kind: str, room: str, at: datetime, pid: str, n: int, **kw: Any) -> dict[str, Any]:
    """A client event that leaves `n` clients in the room."""
    doc = event(kind, room, at, participant=pid, **kw)
    doc["data"]["numClients"] = n
    return doc


async def get(url: str, **params: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as response:
        assert response.status == 200, await response.text()
        doc: dict[str, Any] = await response.json()
        return doc


def until(fetch: Callable[[], Awaitable[Any]], expect: Callable[[Any], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return expect(await fetch())

    return check


async def test_a_room_through_kafka_appears_live_then_leaves_minutes_by_plan_and_arrivals(settings: Settings) -> None:
    await publish_dimensions(
        settings,
        [(f"customer:{CUSTOMER}", {"customer_id": CUSTOMER, "name": "Live", "room_name_prefixes": ["livee2e-"]})],
    )
    room, session = f"/livee2e-{uuid.uuid4()}", str(uuid.uuid4())
    now = datetime.now(UTC).replace(microsecond=0)

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    guest = {"external_id": "ext-guest", "metadata": '{"plan": "pro"}'}
    host = {"external_id": "ext-host", "metadata": "plan=team", "role": "host"}
    arriving = [
        edge("room.client.joined", room, ago(180), "p-guest", 1, session=None, **guest),
        edge("room.client.joined", room, ago(120), "p-host", 2, session=session, **host),
        event("room.session.started", room, ago(120), session=session),
    ]
    leaving = [
        edge("room.client.left", room, ago(60), "p-guest", 1, session=session, **guest),  # 2 min
        edge("room.client.left", room, ago(30), "p-host", 0, session=session, **host),  # 90 s: 2 min
        event("room.session.ended", room, ago(20), session=session),
    ]

    async with (
        Running(SinkService(settings), http=True) as sink,
        Running(EnrichService(settings)),
        Running(IngestService(settings), http=True) as ingest,
        aiohttp.ClientSession() as http,
    ):

        async def post(docs: list[dict[str, Any]]) -> None:
            for doc in docs:
                raw = body(doc)
                async with http.post(ingest.url + WEBHOOK_PATH, data=raw, headers=signed_headers(raw, SECRET)) as r:
                    assert r.status == 202, await r.text()

        def live() -> Awaitable[dict[str, Any]]:
            return get(sink.url + "/live/rooms", customer_id=CUSTOMER)

        await post(arriving)
        await wait_for(until(live, lambda d: [r["present"] for r in d["results"]] == [2]), timeout_s=60)
        [entry] = (await live())["results"]
        assert (entry["room_name"], entry["customer_id"], entry["stale"]) == (room, CUSTOMER, 0)
        assert [(p["participant_id"], p["party"], p["user_key"]) for p in entry["participants"]] == [
            ("p-guest", "guest", "ext-guest"),
            ("p-host", "host", "ext-host"),
        ]
        [live_session] = entry["sessions"]
        assert (live_session["room_session_id"], live_session["host_after_guest_s"]) == (session, 60.0)

        await post(leaving)
        await wait_for(until(live, lambda d: d["results"] == []), timeout_s=60)

        def plans(d: dict[str, Any]) -> dict[Any, int]:
            return {r["group_value"]: r["participant_minutes"] for r in d["results"] if r["customer_id"] == CUSTOMER}

        async def grouped() -> dict[str, Any]:
            return await get(sink.url + "/usage/customers", group_by="metadata.plan")

        await wait_for(until(grouped, lambda d: plans(d) == {"pro": 2, "team": 2}), timeout_s=60)

        day = {"from": ago(3600).date().isoformat(), "to": (now + timedelta(days=1)).date().isoformat()}
        arrivals = await get(sink.url + "/sessions/arrivals", customer_id=CUSTOMER, **day)
        [row] = [r for r in arrivals["results"] if r["room_session_id"] == session]
        assert (row["room_name"], row["host_after_guest_s"]) == (room, 60.0)
