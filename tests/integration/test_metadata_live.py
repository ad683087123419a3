"""Metadata as a BI dimension, who is in a room now, and when hosts arrive (issue 18), on the real engine:
webhook bodies through real enrichment, the sink's writer and deriver, read through the read API's
queries (and its HTTP routes for `/live/rooms`). One database for the module: each test has its own
customers and rooms.
"""

from __future__ import annotations

import csv
import io
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from clickhouse_connect.driver.client import Client

from enrich.dimensions import Customer, DimensionTable
from enrich.enricher import enrich
from sink import store
from sink.batch import Record
from sink.read import queries, readapi, report
from tests.integration.test_sink_model import write
from tests.support import T0, body, event

pytestmark = pytest.mark.integration

CUSTOMERS = {
    "c-once": "once-",
    "c-thrice": "thrice-",
    "c-live": "live-",
    "c-late": "late-",
    "c-odd": "odd-",
}


@pytest.fixture(scope="module")
def engine(clickhouse_url: str) -> Iterator[tuple[Client, str]]:
    client = store.connect(clickhouse_url)
    db = f"test_{uuid.uuid4().hex[:10]}"
    store.migrate(client, db)
    try:
        yield client, db
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")
        client.close()


def dims() -> DimensionTable:
    table = DimensionTable()
    for cid, prefix in CUSTOMERS.items():
        table.put_customer(Customer(cid, cid.upper(), (prefix,)))
    return table


def ev(
    kind: str,
    room: str,
    at: float | datetime,
    participant: str | None = None,
    *,
    n: int | None = None,
    role: str = "visitor",
    session: str | None = None,
    metadata: str | None = None,
    external_id: str | None = None,
) -> dict[str, Any]:
    """A Whereby body with the room's client count after the event (`n`), as Whereby sends it."""
    doc = event(kind, room, at, participant=participant, session=session, role=role, metadata=metadata,
                external_id=external_id)  # fmt: skip
    if participant is not None:
        doc["data"]["numClients"] = n
    return doc


# Offsets go on across the module's deliveries: the writer's deduplication token is made of them, and
# one database serves every test here.
_OFFSETS = itertools.count()


def deliver(client: Client, db: str, docs: list[dict[str, Any]], *, copies: int = 1, seed: int = 0) -> None:
    """Enrich the bodies for real and hand them to the sink's writer and deriver: in one batch, or every
    body `copies` times, shuffled, in small batches with a derivation after each."""
    table = dims()
    many = docs * copies
    random.Random(seed).shuffle(many) if copies > 1 else None
    recs = [
        Record(
            "enriched",
            0,
            next(_OFFSETS),
            doc["data"]["roomName"].encode(),
            orjson.dumps(enrich(body(doc), {}, table, now_ms=0)),
        )
        for doc in many
    ]
    step = 5 if copies > 1 else len(recs)
    for start in range(0, len(recs), step):
        assert write(client, db, recs[start : start + step]).rejected == []


def run(client: Client, query: queries.Query) -> dict[str, Any]:
    return queries.result(query, store.query_dicts(client, query.sql, query.params, store.read_settings(30)))


# ------------------------------------------------------------------------------------ metadata groups


def planned_meeting(room: str) -> list[dict[str, Any]]:
    """Minutes by plan: pro 10 + 2 = 12, team 5, free 3, no plan 1 (and a recorder's 5, no metadata).

    Metadata in every form enrich reads: `k=v&…`, a JSON object, none."""
    return [
        ev("room.client.joined", room, 0, "p-1", n=1, metadata="plan=pro&team=red", external_id="ann"),
        ev("room.session.started", room, 1, session="s-1"),
        ev("room.client.joined", room, 10, "p-2", n=2, session="s-1", metadata='{"plan": "pro"}', external_id="bob"),
        ev("room.client.joined", room, 20, "p-3", n=3, session="s-1", metadata="plan=free", external_id="cat"),
        ev("room.client.joined", room, 30, "p-4", n=4, session="s-1", external_id="dan"),
        ev("room.client.joined", room, 40, "p-5", n=5, session="s-1", metadata="plan=team", external_id="eve"),
        ev("room.client.joined", room, 45, "p-rec", n=6, session="s-1", role="recorder"),
        ev("room.client.left", room, 90, "p-4", n=5, session="s-1", external_id="dan"),
        ev("room.client.left", room, 130, "p-2", n=4, session="s-1", metadata='{"plan": "pro"}', external_id="bob"),
        ev("room.client.left", room, 200, "p-3", n=3, session="s-1", metadata="plan=free", external_id="cat"),
        ev("room.client.left", room, 345, "p-rec", n=2, session="s-1", role="recorder"),
        ev("room.client.left", room, 340, "p-5", n=2, session="s-1", metadata="plan=team", external_id="eve"),
        ev("room.client.left", room, 600, "p-1", n=0, session="s-1", metadata="plan=pro&team=red", external_id="ann"),
        ev("room.session.ended", room, 660, session="s-1"),
    ]


def by_value(rows: list[dict[str, Any]], customer: str) -> dict[Any, tuple[int, ...]]:
    return {
        (r["group_value"], r["group_other"]): (r["participant_minutes"], r["recorder_minutes"], r["sessions"])
        for r in rows
        if r["customer_id"] == customer
    }


def test_usage_splits_by_a_metadata_key_the_same_once_and_three_times_shuffled(engine: tuple[Client, str]) -> None:
    client, db = engine
    deliver(client, db, planned_meeting(f"/once-{uuid.uuid4()}"))
    deliver(client, db, planned_meeting(f"/thrice-{uuid.uuid4()}"), copies=3, seed=18)

    grouped = run(client, queries.usage_customers(db, {"group_by": "metadata.plan"}))["results"]
    expected = {("pro", False): (12, 0, 1), ("team", False): (5, 0, 1), ("free", False): (3, 0, 1),
                (None, False): (1, 5, 1)}  # fmt: skip
    assert by_value(grouped, "c-once") == by_value(grouped, "c-thrice") == expected
    assert {r["group_by"] for r in grouped} == {"metadata.plan"}
    # The same totals as without grouping: a split, never a second count.
    plain = {r["customer_id"]: r for r in run(client, queries.usage_customers(db, {}))["results"]}
    assert plain["c-thrice"]["participant_minutes"] == sum(v[0] for v in expected.values()) == 21

    # Only the N most used values by name (over every customer), the rest as `other`.
    top = run(client, queries.usage_customers(db, {"group_by": "metadata.plan", "group_limit": "1"}))["results"]
    assert by_value(top, "c-thrice") == {("pro", False): (12, 0, 1), ("other", True): (8, 0, 1),
                                         (None, False): (1, 5, 1)}  # fmt: skip

    users = run(client, queries.usage_users(db, {"customer_id": "c-thrice", "group_by": "metadata.team"}))["results"]
    assert [(u["user_key"], u["group_value"], u["participant_minutes"]) for u in users] == [
        ("ann", "red", 10),
        ("eve", None, 5),
        ("cat", None, 3),
        ("bob", None, 2),
        ("dan", None, 1),
        (None, None, 0),  # the recorder: no user, recorder minutes only
    ]

    # The BI view answers the same split, one row per value.
    view = store.query_dicts(
        client,
        f"SELECT metadata_value, participant_minutes FROM {db}.usage_by_metadata_period(from = "
        "toDateTime64('2026-01-01 00:00:00', 3, 'UTC'), to = toDateTime64('2026-02-01 00:00:00', 3, 'UTC'), "
        "key = 'plan') WHERE customer_id = 'c-once' ORDER BY participant_minutes DESC",
    )
    assert [(r["metadata_value"], r["participant_minutes"]) for r in view] == [
        ("pro", 12),
        ("team", 5),
        ("free", 3),
        (None, 1),
    ]


@pytest.mark.parametrize(
    "key", ["' OR 1=1 --", "{key:String}", "plan'); DROP TABLE x; --", "ключ", "a\\b", "%00", "k" * 64]
)
def test_an_odd_but_possible_key_is_a_value_not_sql(engine: tuple[Client, str], key: str) -> None:
    client, db = engine
    room = f"/odd-{uuid.uuid4()}"
    meta = orjson.dumps({key: "v"}).decode()
    deliver(client, db, [ev("room.client.joined", room, 0, "p-1", n=1, metadata=meta),
                         ev("room.client.left", room, 61, "p-1", n=0, metadata=meta)])  # fmt: skip
    for builder, extra in ((queries.usage_customers, {}), (queries.usage_users, {"customer_id": "c-odd"})):
        rows = run(client, builder(db, {"group_by": "metadata." + key, **extra}))["results"]
        assert ("v", 2) in {(r["group_value"], r["participant_minutes"]) for r in rows if r["customer_id"] == "c-odd"}


# ------------------------------------------------------------------------------------------- live rooms


class _Api:
    """The read routes over the engine's client, served on a loopback port (as the sink serves them)."""

    name = "read-api"

    def __init__(self, client: Client, db: str, stale_after_s: float) -> None:
        run = readapi.client_runner(lambda: client, timeout_s=30)
        self._routes = readapi.routes(run, db, stale_after_s=stale_after_s)

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


@pytest.fixture
async def api(engine: tuple[Client, str]) -> AsyncIterator[str]:
    from pipeline.runner import build_app

    async with TestServer(build_app(_Api(*engine, stale_after_s=6 * 3600)), host="127.0.0.1") as server:  # type: ignore[arg-type]
        yield str(server.make_url(""))


async def live(url: str, **params: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/live/rooms", params=params) as response:
        assert response.status == 200, await response.text()
        doc: dict[str, Any] = await response.json()
        return doc


async def test_a_room_appears_in_live_rooms_while_people_are_in_it(engine: tuple[Client, str], api: str) -> None:
    client, db = engine
    now = datetime.now(UTC).replace(microsecond=0)
    room = f"/live-{uuid.uuid4()}"
    ago = lambda s: now - timedelta(seconds=s)  # noqa: E731
    deliver(client, db, [
        ev("room.client.joined", room, ago(120), "p-guest", n=1, external_id="ext-g"),
        ev("room.client.joined", room, ago(60), "p-host", n=2, role="host", session="s-live", external_id="ext-h"),
        ev("room.session.started", room, ago(60), session="s-live"),
    ])  # fmt: skip

    doc = await live(api, customer_id="c-live")
    assert (doc["stale_after_s"], doc["truncated"]) == (21600, False)
    [entry] = doc["results"]
    assert (entry["room_name"], entry["customer_id"], entry["present"], entry["stale"]) == (room, "c-live", 2, 0)
    assert [
        (p["participant_id"], p["party"], p["role_name"], p["user_key"], p["stale"]) for p in entry["participants"]
    ] == [
        ("p-guest", "guest", "visitor", "ext-g", False),
        ("p-host", "host", "host", "ext-h", False),
    ]
    [session] = entry["sessions"]
    assert session["room_session_id"] == "s-live"
    assert session["host_after_guest_s"] == 60.0  # the guest waited a minute for the host
    assert session["first_guest_joined_at"] == entry["participants"][0]["joined_at"]

    deliver(client, db, [
        ev("room.client.left", room, ago(30), "p-guest", n=1, session="s-live", external_id="ext-g"),
        ev("room.client.left", room, ago(20), "p-host", n=0, role="host", session="s-live", external_id="ext-h"),
    ])  # fmt: skip
    assert (await live(api, customer_id="c-live"))["results"] == []


async def test_a_connection_open_for_longer_than_any_meeting_is_stale_not_present(
    engine: tuple[Client, str], api: str
) -> None:
    client, db = engine
    room = f"/live-{uuid.uuid4()}"
    seven_hours_ago = datetime.now(UTC) - timedelta(hours=7)
    deliver(client, db, [ev("room.client.joined", room, seven_hours_ago, "p-lost", n=1)])

    [entry] = [r for r in (await live(api, customer_id="c-live"))["results"] if r["room_name"] == room]
    assert (entry["present"], entry["stale"]) == (0, 1)
    [lost] = entry["participants"]
    assert lost["stale"] is True and lost["open_s"] >= 7 * 3600
    assert entry["sessions"] == []  # alone in the room: Whereby starts no session for one person


# --------------------------------------------------------------------------------------- arrival report


def late_host(room: str) -> list[dict[str, Any]]:
    """Two meetings: in the first, the guests wait five minutes for the host; in the second the host is
    there a minute before the guest."""
    second = T0 + timedelta(hours=2)
    return [
        ev("room.client.joined", room, 0, "p-g1", n=1, external_id="g1"),
        ev("room.client.joined", room, 30, "p-g2", n=2, session="s-late", external_id="g2"),
        ev("room.session.started", room, 30, session="s-late"),
        ev("room.client.joined", room, 300, "p-h", n=3, role="host", session="s-late", external_id="h"),
        ev("room.client.left", room, 1500, "p-g2", n=2, session="s-late", external_id="g2"),
        ev("room.client.left", room, 1510, "p-g1", n=1, session="s-late", external_id="g1"),
        ev("room.client.left", room, 1520, "p-h", n=0, role="host", session="s-late", external_id="h"),
        ev("room.session.ended", room, 1600, session="s-late"),
        ev("room.client.joined", room, second, "p-h", n=1, role="host", external_id="h"),
        ev("room.client.joined", room, second + timedelta(seconds=60), "p-g1", n=2, session="s-early"),
        ev("room.session.started", room, second + timedelta(seconds=60), session="s-early"),
        ev("room.client.left", room, second + timedelta(seconds=900), "p-g1", n=1, session="s-early"),
        ev("room.client.left", room, second + timedelta(seconds=960), "p-h", n=0, role="host", session="s-early"),
    ]


def test_the_arrival_report_shows_a_late_host(engine: tuple[Client, str], clickhouse_url: str) -> None:
    client, db = engine
    room = f"/late-{uuid.uuid4()}"
    deliver(client, db, late_host(room))

    params = {"from": "2026-01-01", "to": "2026-01-02", "customer_id": "c-late", "limit": "1000"}
    rows = report.fetch_clickhouse(clickhouse_url, db, "arrival", params)
    assert [(r["room_session_id"], r["first_guest_joined_at"], r["first_host_joined_at"], r["host_after_guest_s"])
            for r in rows] == [
        ("s-late", "2026-01-01T09:00:00.000Z", "2026-01-01T09:05:00.000Z", 300.0),
        ("s-early", "2026-01-01T11:01:00.000Z", "2026-01-01T11:00:00.000Z", -60.0),
    ]  # fmt: skip

    table = report.render("arrival", rows, "table").splitlines()
    assert table[0].split()[:4] == ["session", "started", "room", "session"]
    assert table[2].split()[-3:] == ["2026-01-01T09:05:00.000Z", "2026-01-01T09:00:00.000Z", "300.0"]
    assert len(table) == 4  # heading, rule, two sessions: no total row
    cells = list(csv.reader(io.StringIO(report.render("arrival", rows, "csv"))))
    assert cells[0] == [c.field for c in report.COLUMNS["arrival"]]
    assert cells[1][-1] == "300.0" and cells[2][-1] == "-60.0"

    # Keyset pages of the API endpoint give the same sessions, one at a time.
    first = run(client, queries.session_arrivals(db, {**params, "limit": "1"}))
    rest = run(client, queries.session_arrivals(db, {**params, "limit": "1", "cursor": first["cursor"]}))
    assert [r["room_session_id"] for r in first["results"] + rest["results"]] == ["s-late", "s-early"]
    assert rest["cursor"] is None
