"""The read API on the real engine: hand-computed usage, the unresolved bucket, ranges, keyset pages.

Enriched events go through the sink's real writer into a fresh database; the read routes are served
over real HTTP with a real ClickHouse client, and the report's direct mode reads the same engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from clickhouse_connect.driver.client import Client

from pipeline.runner import build_app
from sink.read import readapi, report
from tests.integration.test_sink_model import engine, meeting, records, write  # noqa: F401  (engine: fixture)

pytestmark = pytest.mark.integration

ACME = "/acme-standup"
STRANGER = "/stranger-call"


class _Reader:
    name = "read"

    def __init__(self, client: Client, db: str) -> None:
        self._routes = readapi.routes(readapi.client_runner(lambda: client), db)

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


@pytest.fixture
def seeded(engine: tuple[Client, str]) -> Iterator[tuple[Client, str]]:  # noqa: F811
    """The hand-computed meeting (see test_sink_model.meeting) in an Acme room and in an unresolved room."""
    client, db = engine
    write(client, db, records(meeting(ACME) + meeting(STRANGER, customer=None)))
    yield client, db


@pytest.fixture
async def api(seeded: tuple[Client, str]) -> AsyncIterator[Any]:
    client, db = seeded
    server = TestServer(build_app(_Reader(client, db)), host="127.0.0.1")  # type: ignore[arg-type]
    async with server, aiohttp.ClientSession(str(server.make_url(""))) as http:

        async def get(path: str, **params: str) -> Any:
            async with http.get(path, params=params) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        yield get


async def test_usage_per_customer_matches_the_hand_computed_meeting_and_keeps_the_unresolved_bucket(api: Any) -> None:
    doc = await api("/usage/customers")
    expected = {
        "participant_minutes": 32,
        "recorder_minutes": 5,
        "streamer_minutes": 0,
        "assistant_minutes": 0,
        "captioner_minutes": 0,
        "billable_participant_minutes": 32,  # + assistant + captioner minutes: none here
        "connections": 5,
        "open_connections": 1,  # p-eve: no left, no session end, the room never known empty
        "incomplete_connections": 0,
        "estimated_connections": 0,
        "unique_participants": 5,
        "unique_users": 3,
        "sessions": 2,
    }
    assert doc == {
        "results": [
            {"customer_id": "c-acme", "customer_name": "C-ACME", **expected},
            {"customer_id": None, "customer_name": None, **expected},
        ]
    }


async def test_from_is_inclusive_and_to_exclusive_on_the_join_instant(api: Any) -> None:
    # p-cat joined at 09:05:00.000 exactly (7 min, closed by the session end); p-eve at 09:16:40, still open.
    later = await api("/usage/customers", **{"from": "2026-01-01T09:05:00Z", "to": "2026-01-02"})
    assert [(r["customer_id"], r["participant_minutes"], r["sessions"]) for r in later["results"]] == [
        ("c-acme", 7, 1),
        (None, 7, 1),
    ]
    before = await api("/usage/customers", **{"to": "2026-01-01T09:05:00Z"})
    assert [r["participant_minutes"] for r in before["results"]] == [25, 25]
    none = await api("/usage/customers", **{"from": "2026-02-01"})
    assert none == {"results": []}


async def test_usage_per_user_and_per_room_filter_by_customer(api: Any) -> None:
    users = await api("/usage/users", customer_id="c-acme")
    assert [(r["external_id"], r["user_id"], r["participant_minutes"], r["sessions"]) for r in users["results"]] == [
        ("dan", "u-dan", 12, 1),
        ("ada", "u-ada", 11, 1),
        (None, None, 7, 2),  # p-cat (no externalId) and the recorder share the "no user" row
        ("bob", "u-bob", 2, 1),
    ]
    rooms = await api("/usage/rooms", unresolved="true")
    assert [(r["room_name"], r["customer_id"], r["participant_minutes"]) for r in rooms["results"]] == [
        (STRANGER, None, 32)
    ]


async def test_insights_pages_cover_every_row_once_with_a_null_cursor_at_the_end(api: Any) -> None:
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"roomSessionId": "sess-1", "limit": "3", **({"cursor": cursor} if cursor else {})}
        doc = await api("/insights/participants", **params)
        pages += 1
        seen += [(r["roomName"], r["participantId"]) for r in doc["results"]]
        cursor = doc["cursor"]
        if cursor is None:
            break
    people = ["p-ada", "p-bob", "p-cat", "p-dan", "p-rec"]
    assert sorted(seen) == sorted((room, p) for room in (ACME, STRANGER) for p in people)
    assert pages == 4  # 10 rows, 3 a page
    joined = [
        (r["joinedAt"]) for r in (await api("/insights/participants", roomSessionId="sess-1", limit="100"))["results"]
    ]
    assert joined == sorted(joined)


async def test_insights_rooms_sessions_and_participants_segment_by_customer_and_user(api: Any) -> None:
    acme = await api("/insights/rooms", customer_id="c-acme")
    assert [r["roomName"] for r in acme["results"]] == [ACME] and acme["cursor"] is None
    room = acme["results"][0]
    assert (room["totalParticipantMinutes"], room["totalRecorderMinutes"], room["totalSessions"]) == (32, 5, 2)
    assert (await api("/insights/rooms", unresolved="true"))["results"][0]["roomName"] == STRANGER
    assert [r["roomName"] for r in (await api("/insights/rooms", roomNamePrefix="acme-"))["results"]] == [ACME]

    sessions = await api("/insights/room-sessions", roomName="acme-standup")  # without the leading "/"
    assert [(s["roomSessionId"], s["totalParticipantMinutes"], s["endedAt"]) for s in sessions["results"]] == [
        ("sess-2", 0, None),
        ("sess-1", 32, "2026-01-01T09:11:40.000Z"),
    ]
    by_minutes = await api("/insights/rooms", sortBy="totalParticipantMinutes:desc", limit="1")
    assert by_minutes["cursor"] is not None

    ada = await api("/insights/participants", externalId="ada")
    assert [(p["roomName"], p["userId"], p["minutes"], p["leftAt"]) for p in ada["results"]] == [
        (ACME, "u-ada", 11, "2026-01-01T09:10:10.500Z"),
        (STRANGER, "u-ada", 11, "2026-01-01T09:10:10.500Z"),
    ]
    eve = await api("/insights/participants", roomSessionId="sess-2")
    assert {(p["participantId"], p["isOpen"], p["leftAt"]) for p in eve["results"]} == {("p-eve", True, None)}


def test_the_report_reads_the_same_numbers_straight_from_clickhouse(
    seeded: tuple[Client, str], clickhouse_url: str
) -> None:
    _, db = seeded
    rows = report.fetch_clickhouse(clickhouse_url, db, "customer", {})
    assert [(r["customer_id"], r["participant_minutes"]) for r in rows] == [("c-acme", 32), (None, 32)]
    table = report.render_table("customer", rows)
    assert "(unresolved)" in table and table.splitlines()[-1].split() == [
        "total",
        "64",
        "10",
        "0",
        "0",
        "0",
        "64",  # billable: no assistant or captioner minutes here
        "2",
        "0",
        "4",
    ]
    with pytest.raises(report.ReportError, match="from must be an ISO date"):
        report.fetch_clickhouse(clickhouse_url, db, "room", {"from": "last week"})
