"""`forget` on the real broker and the real engine: a person's meetings are stored, then erased. Every
count and minute (per customer, room, session, user) stays; their name and externalId are gone from
every read endpoint and table, from an event that arrives afterwards, and from a replay. Enrich and the
sink run in-process; the sink serves the read API on a real port.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from enrich.forget import forget
from enrich.replay import replay
from enrich.service import EnrichService
from pipeline import erasure, kafka
from pipeline.settings import Settings
from sink import store
from sink.service import SinkService
from tests.conftest import make_settings
from tests.integration.test_sink_forget import mentions
from tests.support import Running, body, derived, event, produce_raw, publish_dimensions, read_topic, wait_for

pytestmark = pytest.mark.e2e

KEY = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
ADA, ADA_NAME, ADA_REGISTERED = "ext-ada", "Ada Lovelace", "Ada Registered"
PERSONAL = (ADA, ADA_NAME, ADA_REGISTERED, "u-ada", "ada@example.org")
# Response fields that name a person: the only ones allowed to change.
NAMING = {
    "external_id",
    "user_id",
    "user_name",
    "user_key",
    "externalId",
    "userId",
    "userName",
    "userKey",
    "displayName",
}


def said(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A Whereby event whose participant shows `name`."""
    doc["data"]["displayName"] = name
    return doc


def meeting(room: str, session: str, ada: str) -> list[dict[str, Any]]:
    """Ada (as participant `ada`) 610 s and Bob 120 s in one session."""
    return [
        said(event("room.client.joined", room, 0, participant=ada, external_id=ADA, session=None), ADA_NAME),
        event("room.session.started", room, 1, session=session),
        said(event("room.client.joined", room, 5, participant="p-bob", external_id="ext-bob", session=session), "Bob"),
        said(event("room.client.left", room, 125, participant="p-bob", external_id="ext-bob", session=session), "Bob"),
        said(event("room.client.left", room, 610, participant=ada, external_id=ADA, session=session), ADA_NAME),
        event("room.session.ended", room, 700, session=session),
    ]


def without_naming(value: Any) -> Any:
    """A response with the fields that name a person left out, lists in a stable order."""
    if isinstance(value, dict):
        return {k: without_naming(v) for k, v in value.items() if k not in NAMING and k != "cursor"}
    if isinstance(value, list):
        return sorted((without_naming(v) for v in value), key=repr)
    return value


@pytest.fixture
async def erasable(kafka_bootstrap: str, clickhouse_url: str) -> Settings:
    s = make_settings(kafka_bootstrap, clickhouse_url, ERASURE_KEY=KEY)
    await kafka.wait_for_broker(s, timeout_s=60)
    await kafka.ensure_topics(s)
    return s


async def test_forget_erases_a_person_everywhere_and_every_count_stays(erasable: Settings) -> None:
    settings = erasable
    db = settings.clickhouse_database
    await publish_dimensions(
        settings,
        [
            ("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]}),
            (
                "user:ext-ada",
                {
                    "external_id": ADA,
                    "user_id": "u-ada",
                    "customer_id": "c-acme",
                    "name": ADA_REGISTERED,
                    "email": "ada@example.org",
                },
            ),
        ],
    )
    rooms = [f"/acme-{uuid.uuid4()}" for _ in range(3)]
    sessions = [f"sess-{uuid.uuid4()}" for _ in range(3)]
    earlier = meeting(rooms[0], sessions[0], "p-ada") + meeting(rooms[1], sessions[1], "p-ada-2")

    async with Running(SinkService(settings), http=True) as sink, Running(EnrichService(settings)):
        client = sink.service.client

        def query(sql: str, **params: Any) -> list[dict[str, Any]]:
            return store.query_dicts(client, sql.format(db=db), params)

        def stored(n: int) -> Callable[[], Awaitable[bool]]:
            sql = "SELECT count() AS n FROM {db}.events FINAL"
            return lambda: asyncio.to_thread(lambda: query(sql)[0]["n"] == n)

        async with aiohttp.ClientSession(sink.url) as http:

            async def everything() -> dict[str, Any]:
                """Every read endpoint's answer (the Insights ones for each room and session)."""
                paths: list[tuple[str, dict[str, str]]] = [
                    ("/usage/customers", {}),
                    ("/usage/customer-days", {}),
                    ("/usage/users", {}),
                    ("/usage/rooms", {}),
                    ("/insights/rooms", {"limit": "100"}),
                ]
                paths += [("/insights/room-sessions", {"roomName": room}) for room in rooms]
                paths += [("/insights/participants", {"roomSessionId": s, "limit": "100"}) for s in sessions]
                out = {}
                for path, params in paths:
                    async with http.get(path, params=params) as response:
                        assert response.status == 200, await response.text()
                        out[f"{path}?{sorted(params.items())}"] = await response.json()
                return out

            # The raw archive keeps her original webhooks until RAW_ARCHIVE_RETENTION_DAYS: set at sink start.
            engine = query(
                "SELECT engine_full AS e FROM system.tables WHERE database = {{db:String}} AND name = 'raw_archive'",
                db=db,
            )[0]["e"]
            assert "TTL toDateTime(received_at) + toIntervalDay(395)" in engine

            await produce_raw(settings, [body(doc) for doc in earlier])
            await wait_for(stored(len(earlier)))
            await derived(client, db)
            before = await everything()
            assert ADA_NAME in orjson.dumps(before).decode()  # the person is there to be forgotten

            out = io.StringIO()
            assert await forget(settings, [ADA], out=out) == 0
            assert ADA not in out.getvalue() and "1 person(s)" in out.getvalue()
            pseudonym = erasure.pseudonym(ADA, KEY)

            def erased() -> bool:
                return not query("SELECT 1 FROM {db}.events WHERE external_id = {{ext:String}} LIMIT 1", ext=ADA)

            await wait_for(lambda: asyncio.to_thread(erased))
            await derived(client, db)
            after = await everything()

            # Every count and minute per customer, day, room, session and user is what it was.
            assert without_naming(after) == without_naming(before)
            text = orjson.dumps(after).decode()
            assert not [p for p in PERSONAL if p in text]
            assert pseudonym in text
            assert await asyncio.to_thread(lambda: {p: mentions(client, db, p) for p in PERSONAL}) == {
                p: {} for p in PERSONAL
            }
            async with http.get("/insights/participants", params={"externalId": pseudonym}) as response:
                hers = (await response.json())["results"]
            assert [(r["minutes"], r["displayName"], r["userId"]) for r in hers] == [(11, None, None)] * 2
            # Documented: the raw archive keeps the webhooks as received until RAW_ARCHIVE_RETENTION_DAYS.
            async with http.get("/archive/raw", params={"limit": "100"}) as response:
                assert ADA_NAME in await response.text()

            # A new meeting of hers after the erasure: enrich writes the pseudonym and no name.
            later = meeting(rooms[2], sessions[2], "p-ada-3")
            await produce_raw(settings, [body(doc) for doc in later])
            await wait_for(stored(len(earlier) + len(later)))
            enriched = await read_topic(settings, settings.topic_enriched, expect=len(earlier) + len(later))
            ids = {doc["id"] for doc in later if doc["data"].get("externalId") == ADA}
            new = [orjson.loads(r.value) for r in enriched if orjson.loads(r.value)["event_id"] in ids]
            assert [(e["external_id"], e["display_name"], e["user_id"], e["user_resolution"]) for e in new] == [
                (pseudonym, None, None, "erased")
            ] * 2

            # A replay re-enriches everything from the raw topic (which still has her name): still erased.
            summary = await replay(settings)
            assert summary.user["erased"] == 6

            def replayed() -> bool:
                sql = "SELECT min(enrichment_version) AS v FROM {db}.events FINAL"
                return int(query(sql)[0]["v"]) >= summary.first_version

            await wait_for(lambda: asyncio.to_thread(replayed))
            await derived(client, db)
            final = await everything()
            left = await asyncio.to_thread(lambda: {p: mentions(client, db, p) for p in PERSONAL})

    assert left == {p: {} for p in PERSONAL}
    assert not [p for p in PERSONAL if p in orjson.dumps(final).decode()]
    # The replay changed no number of the first two meetings; the third added its own.
    first_two = [k for k in after if any(x in k for x in (*rooms[:2], *sessions[:2]))]
    assert without_naming({k: final[k] for k in first_two}) == without_naming({k: after[k] for k in first_two})
    customers = {r["customer_id"]: r["participant_minutes"] for r in final["/usage/customers?[]"]["results"]}
    assert customers == {"c-acme": 3 * (11 + 2)}
