"""Reconcile end to end: webhooks lost in flight, `reconcile --backfill`, then `reconcile` says `match`.

The real three stages run in-process on the real broker and the real engine (the sink serving the read
API on a real port); Whereby's Insights API is the double of `tests/insights_double.py`, over HTTP. Each
test has its own double (so a run only sees that test's rooms) and its own day, and the same meetings
are told twice: whole to the double (what Whereby knows), minus the lost events to ingest (what reached
us), as signed webhooks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from enrich.service import EnrichService
from harness import REPO
from harness.stack import isolated_env
from ingest.service import WEBHOOK_PATH, IngestService
from pipeline import contract, kafka
from pipeline.settings import Settings, WherebyApi
from reconcile.insights import Policy
from reconcile.job import ReconcileFailed, execute
from reconcile.report import Report
from reconcile.run import Options
from sink import store
from sink.service import SinkService
from tests.insights_double import InsightsDouble, Session, Stay
from tests.support import Running, iso, publish_dimensions, read_topic, signed_headers, topic_record_count, wait_for

pytestmark = pytest.mark.e2e

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
KEY = "test-api-key-0123456789"
FAST = Policy(backoff_base_s=0.05, backoff_max_s=0.5)
DAY = timedelta(days=1)


@dataclasses.dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    sink: SinkService
    read_api: str
    ingest: str


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, clickhouse_url: str) -> AsyncIterator[Stack]:
    """ingest → enrich → sink (serving the read API), with acme-, acme-labs- and globex- registered."""
    env = isolated_env(kafka_bootstrap, clickhouse_url, SINK_BATCH_SECONDS="0.2", INGEST_PORT="0", SINK_PORT="0")
    settings = Settings.from_env(env)
    await kafka.wait_for_broker(settings, timeout_s=60)
    await kafka.ensure_topics(settings)
    await publish_dimensions(
        settings,
        [
            ("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]}),
            ("customer:c-labs", {"customer_id": "c-labs", "name": "Acme Labs", "room_name_prefixes": ["acme-labs-"]}),
            ("customer:c-globex", {"customer_id": "c-globex", "name": "Globex", "room_name_prefixes": ["globex-"]}),
        ],
    )
    async with (
        Running(SinkService(settings), http=True) as sink,
        Running(EnrichService(settings)),
        Running(IngestService(settings), http=True) as ingest,
    ):
        yield Stack(env, settings, sink.service, sink.url, ingest.url)


# ------------------------------------------------------------------------------------------ meetings


def meeting(
    room: str,
    start: datetime,
    stays: Iterable[tuple[str, float, float | None]],
    role: str = "visitor",
    bots: Iterable[tuple[str, float, float | None, str]] = (),
) -> Session:
    """A session of `room`: stays as (participant, joined, left) in minutes after `start`, and `bots` as
    (participant, joined, left, roleName); Insights' session starts when the second participant joins (two
    users) and ends a minute after the last left."""
    listed = [Stay(p, start + timedelta(minutes=j), None if left is None else start + timedelta(minutes=left), r,
                   external_id=None if r != role else f"ext-{p}", display_name=f"Name {p}")
              for p, j, left, r in [*((p, j, left, role) for p, j, left in stays), *bots]]  # fmt: skip
    joins = sorted(s.joined for s in listed)
    started = joins[1] if len(joins) > 1 else joins[0]
    ended = max((s.left for s in listed if s.left), default=started) + timedelta(minutes=1)
    return Session(f"sess-{uuid.uuid4()}", room, started, ended, listed)


def webhooks(
    session: Session, *, lost: Iterable[tuple[str, str, int]] = (), whole: bool = False
) -> list[dict[str, Any]]:
    """The webhooks Whereby sent for `session`, minus `lost` ((participant, "joined"|"left", nth stay of that
    participant)); `whole=True` loses everything. The first joiner's `joined` has no roomSessionId yet."""
    if whole:
        return []
    dropped = set(lost)
    edges: list[tuple[datetime, str, Stay, int]] = []
    nth: dict[str, int] = defaultdict(int)
    for stay in sorted(session.stays, key=lambda s: s.joined):
        index = nth[stay.participant_id]
        nth[stay.participant_id] += 1
        edges.append((stay.joined, "joined", stay, index))
        if stay.left is not None:
            edges.append((stay.left, "left", stay, index))
    edges.sort(key=lambda e: (e[0], e[1] == "joined"))
    present: dict[str, str] = {}
    docs = [_doc("room.session.started", session, session.started_at, {})]
    for when, kind, stay, index in edges:
        key = f"{stay.participant_id}#{index}"
        if kind == "joined":
            present[key] = stay.role
        else:
            present.pop(key, None)
        if (stay.participant_id, kind, index) in dropped:
            continue
        by_role: dict[str, int] = defaultdict(int)
        for role in present.values():
            by_role[role] += 1
        data = {
            "participantId": stay.participant_id,
            "displayName": stay.display_name,
            "metadata": None,
            "externalId": stay.external_id,
            "roleName": stay.role,
            "numClients": len(present),
            "numClientsByRoleName": dict(by_role),
            "isDialIn": False,
        }
        doc = _doc(f"room.client.{kind}", session, when, data)
        if when < session.started_at:
            doc["data"]["roomSessionId"] = None
        docs.append(doc)
    docs.append(_doc("room.session.ended", session, session.ended_at or session.started_at, {}))
    return docs


def _doc(kind: str, session: Session, when: datetime, extra: dict[str, Any]) -> dict[str, Any]:
    data = {"meetingId": "42", "roomName": session.room_name, "roomSessionId": session.room_session_id,
            "subdomain": "examplecorp", **extra}  # fmt: skip
    created = iso(when)
    ident = hashlib.sha256(f"{kind}|{session.room_session_id}|{extra.get('participantId')}|{created}".encode())
    return {"id": ident.hexdigest(), "apiVersion": "1.0", "createdAt": created, "type": kind, "data": data}


async def deliver(stack: Stack, docs: list[dict[str, Any]]) -> None:
    """Post signed webhooks to ingest and wait until the sink stored and derived them."""
    async with aiohttp.ClientSession() as http:
        for doc in docs:
            raw = orjson.dumps(doc)
            async with http.post(stack.ingest + WEBHOOK_PATH, data=raw, headers=signed_headers(raw, SECRET)) as answer:
                assert answer.status == 202, await answer.text()
    await settled(stack, {d["id"] for d in docs})


async def settled(stack: Stack, event_ids: set[str]) -> None:
    """Wait until every event id is in `events` and the deriver has no room left to derive."""
    client, db = stack.sink.client, stack.settings.clickhouse_database
    assert client is not None

    def done() -> bool:
        if event_ids:
            found = store.query_dicts(
                client, f"SELECT count() AS n FROM {db}.events FINAL WHERE event_id IN {{ids:Array(String)}}",
                {"ids": sorted(event_ids)},
            )[0]["n"]  # fmt: skip
            if int(found) != len(event_ids):
                return False
        deriver = stack.sink.deriver
        assert deriver is not None
        backlog = store.query_dicts(
            client,
            f"SELECT uniqExact(room_name) AS n FROM {db}.room_changes "
            "WHERE marked_at > fromUnixTimestamp64Milli({w:Int64}, 'UTC')",
            {"w": deriver.changes.watermark},
        )[0]["n"]
        return int(backlog) == 0

    await wait_for(lambda: asyncio.to_thread(done), timeout_s=60)


def configured(stack: Stack, double: InsightsDouble, *, key: str = KEY) -> Settings:
    return dataclasses.replace(
        stack.settings, whereby_api=WherebyApi(url=double.url, key=key, points_per_minute=10_000)
    )


async def reconcile(
    stack: Stack, double: InsightsDouble, day: datetime, *, backfill: bool = False, verify_s: float = 30.0
) -> Report:
    options = Options(int(day.timestamp() * 1000), int((day + DAY).timestamp() * 1000), backfill=backfill,
                      verify_timeout_s=verify_s)  # fmt: skip
    return await execute(configured(stack, double), options, read_api=stack.read_api, policy=FAST)


def statuses(report: Report) -> dict[str, str]:
    return {s.room_session_id: s.status for s in report.sessions}


async def insights_raw_records(stack: Stack) -> list[Any]:
    """Every record reconcile put on the raw topic (marked as coming from Insights)."""
    total = await topic_record_count(stack.settings, stack.settings.topic_raw)
    records = await read_topic(stack.settings, stack.settings.topic_raw, expect=total)
    return [
        r
        for r in records
        if dict(r.headers or ()).get(contract.HEADER_EVENT_SOURCE) == contract.SOURCE_INSIGHTS.encode()
    ]


async def usage_per_customer(
    stack: Stack, day: datetime, field: str = "billable_participant_minutes"
) -> dict[str | None, int]:
    """`field` of /usage/customers per customer for `day`: by default the one Insights' totals are compared
    with (humans, assistants and captioners); `participant_minutes` counts humans only."""
    params = {"from": day.date().isoformat(), "to": (day + DAY).date().isoformat()}
    async with aiohttp.ClientSession() as http, http.get(stack.read_api + "/usage/customers", params=params) as answer:
        doc = await answer.json()
    return {r["customer_id"]: r[field] for r in doc["results"] if r[field]}


def insights_per_customer(
    double: InsightsDouble, owners: dict[str, str | None], *, humans_only: bool = False
) -> dict[str | None, int]:
    """Insights' `totalParticipantMinutes` per customer (every role but recorder and streamer, as the double
    computes it), or with `humans_only` the minutes of the stays that are not bots (ours by hand)."""
    totals: dict[str | None, int] = defaultdict(int)
    for session in double.sessions:
        if humans_only:
            bots = ("recorder", "streamer", "assistant", "captioner")
            totals[owners[session.room_name]] += sum(s.minutes() for s in session.stays if s.role not in bots)
        else:
            totals[owners[session.room_name]] += session.totals()[0]
    return {k: v for k, v in totals.items() if v}


# ------------------------------------------------------------------------------------------ tests


async def test_lost_left_lost_join_and_a_lost_session_are_repaired_and_a_matching_one_is_left_alone(
    stack: Stack,
) -> None:
    day = datetime(2026, 4, 1, tzinfo=UTC)
    acme, globex = f"/acme-{uuid.uuid4()}", f"/globex-{uuid.uuid4()}"
    async with InsightsDouble(KEY) as double:
        # Non-human participants too: Insights' totalParticipantMinutes counts assistants (billed like
        # participants) and captioners; our participant_minutes does not, billable_participant_minutes does.
        lost_left = double.add_session(
            meeting(acme, day + timedelta(hours=9), [("ada", 0, 30), ("bob", 1, 20)], bots=[("ai", 2, 25, "assistant")])
        )
        lost_join = double.add_session(meeting(acme, day + timedelta(hours=11), [("ada", 0, 12), ("cy", 2, 9.5)]))
        lost_all = double.add_session(
            meeting(
                globex,
                day + timedelta(hours=10),
                [("dee", 0, 7), ("eve", 0.5, 6.2)],
                bots=[("ai2", 1, 5.5, "assistant")],
            )
        )
        intact = double.add_session(
            meeting(
                globex, day + timedelta(hours=13), [("fay", 0, 3), ("gus", 1, 2.5)], bots=[("cc", 1, 2.2, "captioner")]
            )
        )
        await deliver(
            stack,
            webhooks(lost_left, lost=[("ada", "left", 0)])
            + webhooks(lost_join, lost=[("cy", "joined", 0)])
            + webhooks(lost_all, whole=True)
            + webhooks(intact),
        )

        found = await reconcile(stack, double, day)
        assert statuses(found) == {
            lost_left.room_session_id: "mismatch",
            lost_join.room_session_id: "mismatch",
            lost_all.room_session_id: "missing",
            intact.room_session_id: "match",
        }
        assert found.backfilled_events == 0
        # The comparison is explicit: Insights' total against our humans + assistants + captioners.
        by_id = {s.room_session_id: s for s in found.sessions}
        assert by_id[intact.room_session_id].ours.as_dict() == {
            "participant_minutes": 3 + 2 + 2, "recorder_minutes": 0, "streamer_minutes": 0,
            "human_minutes": 3 + 2, "assistant_minutes": 0, "captioner_minutes": 2,
        }  # fmt: skip
        assert by_id[intact.room_session_id].insights.participant == intact.totals()[0] == 7
        assert by_id[lost_left.room_session_id].ours.assistant == 23  # ai was there all along, 2 -> 25
        # Our Insights-shaped rows say the same: totalParticipantMinutes humans only, and the billable sum.
        query = {"roomName": globex, "roomSessionId": intact.room_session_id}
        async with (
            aiohttp.ClientSession() as http,
            http.get(stack.read_api + "/insights/room-sessions", params=query) as answer,
        ):
            [row] = (await answer.json())["results"]
        assert (
            row["totalParticipantMinutes"],
            row["totalCaptionerMinutes"],
            row["totalBillableParticipantMinutes"],
        ) == (5, 2, 7)

        repaired = await reconcile(stack, double, day, backfill=True)
        per_session = {s.room_session_id: (s.backfilled_events, s.after_backfill) for s in repaired.sessions}
        assert per_session == {
            lost_left.room_session_id: (1, "match"),  # ada's left
            lost_join.room_session_id: (1, "match"),  # cy's join
            lost_all.room_session_id: (6, "match"),  # the three joins and lefts, the assistant's too
            intact.room_session_id: (0, None),
        }
        asked = [r.query.get("roomSessionId") for r in double.requests if r.path == "/insights/participants"]
        assert intact.room_session_id not in asked  # left untouched: not even its participants were read

        after = await reconcile(stack, double, day)
        assert set(statuses(after).values()) == {"match"}
        synthesized = await insights_raw_records(stack)
        assert len(synthesized) == 8
        assert "assistant" in {orjson.loads(r.value)["data"]["roleName"] for r in synthesized}
        assert {r.key.decode() for r in synthesized} == {acme, globex}
        assert not {orjson.loads(r.value)["data"]["roomSessionId"] for r in synthesized} & {intact.room_session_id}
        owners = {acme: "c-acme", globex: "c-globex"}
        assert await usage_per_customer(stack, day) == insights_per_customer(double, owners)
        humans = insights_per_customer(double, owners, humans_only=True)
        assert await usage_per_customer(stack, day, "participant_minutes") == humans
        assert humans != insights_per_customer(double, owners)  # the bots made a difference to prove

    # Every run's results reached the reconciliation table; the latest per session is `match`.
    client, db = stack.sink.client, stack.settings.clickhouse_database
    assert client is not None
    sessions = [s.room_session_id for s in (lost_left, lost_join, lost_all, intact)]

    def stored() -> list[dict[str, Any]] | None:
        rows = store.query_dicts(
            client,
            f"SELECT room_session_id, current_status, run_id FROM {db}.reconciliation_latest "
            "WHERE room_session_id IN {ids:Array(String)}",
            {"ids": sessions},
        )
        return rows if len(rows) == 4 and {r["run_id"] for r in rows} == {after.run_id} else None

    rows = await wait_for(lambda: asyncio.to_thread(stored))
    assert {r["current_status"] for r in rows} == {"match"}
    runs = store.query_dicts(
        client,
        f"SELECT uniqExact(run_id) AS n FROM {db}.reconciliation WHERE room_session_id IN {{ids:Array(String)}}",
        {"ids": sessions},
    )
    assert runs[0]["n"] == 3


async def test_longest_prefix_wins_an_old_room_is_found_and_unresolved_rooms_are_reported(stack: Stack) -> None:
    day = datetime(2026, 4, 2, tzinfo=UTC)
    acme, labs = f"/acme-{uuid.uuid4()}", f"/acme-labs-{uuid.uuid4()}"
    old, stranger = f"/globex-{uuid.uuid4()}", f"/zeta-{uuid.uuid4()}"
    async with InsightsDouble(KEY) as double:
        # Created 200 days before the period: a creation-date filter would miss its session.
        double.add_room(old, day - 200 * DAY)
        sessions = {
            room: double.add_session(meeting(room, day + timedelta(hours=h), [("p1", 0, 21), ("p2", 3, 14)]))
            for h, room in enumerate((acme, labs, old, stranger), start=8)
        }
        await deliver(stack, [d for s in sessions.values() for d in webhooks(s, lost=[("p2", "left", 0)])])

        report = await reconcile(stack, double, day, backfill=True)
        customers = {s.room_name: s.customer_id for s in report.sessions}
        assert customers == {acme: "c-acme", labs: "c-labs", old: "c-globex", stranger: None}
        assert {s.after_backfill for s in report.sessions} == {"match"}
        assert report.unresolved_rooms == 1
        listings = sorted(
            r.query.get("roomName[startsWith]", "(all)") for r in double.requests if r.path == "/insights/rooms"
        )
        # /acme- covers /acme-labs-; one listing of every room finds the unresolved ones.
        assert listings == ["(all)", "/acme-", "/globex-"]

        assert set(statuses(await reconcile(stack, double, day)).values()) == {"match"}
        owners = {acme: "c-acme", labs: "c-labs", old: "c-globex", stranger: None}
        assert await usage_per_customer(stack, day) == insights_per_customer(double, owners)


async def test_pages_and_a_429_in_the_middle(stack: Stack) -> None:
    day = datetime(2026, 4, 3, tzinfo=UTC)
    async with InsightsDouble(KEY, page_size=2) as double:
        rooms = [f"/globex-{uuid.uuid4()}" for _ in range(5)]
        sessions = [
            double.add_session(meeting(room, day + timedelta(hours=8 + i), [("a", 0, 5), ("b", 1, 9), ("c", 2, 4)]))
            for i, room in enumerate(rooms)
        ]
        await deliver(
            stack, [d for i, s in enumerate(sessions) for d in webhooks(s, lost=[("c", "left", 0)] if i % 2 else [])]
        )
        double.throttle(after=4, retry_after_s=1)

        report = await reconcile(stack, double, day, backfill=True)
        assert [s.status for s in report.sessions] == ["match", "mismatch", "match", "mismatch", "match"]
        assert report.backfilled_events == 2
        assert 429 in [r.status for r in double.requests]
        room_pages = [r for r in double.requests if r.path == "/insights/rooms" and r.status == 200]
        # /acme- (empty: one page), /globex- and all rooms (5 rooms in pages of 2: three pages each)
        assert len(room_pages) == 1 + 3 + 3
        participants = [r for r in double.requests if r.path == "/insights/participants"]
        assert len(participants) == 2 * 2  # 3 participants in pages of 2, for the 2 sessions that differ
        assert set(statuses(await reconcile(stack, double, day)).values()) == {"match"}


async def test_backfilling_twice_writes_the_same_events_and_then_nothing(stack: Stack) -> None:
    day = datetime(2026, 4, 4, tzinfo=UTC)
    room = f"/acme-{uuid.uuid4()}"
    async with InsightsDouble(KEY) as double:
        # ada leaves and rejoins with the same participant id: two connections; the second one's left is lost.
        session = double.add_session(
            meeting(room, day + timedelta(hours=9), [("ada", 0, 10), ("bob", 1, 50), ("ada", 30, 40)])
        )
        await deliver(stack, webhooks(session, lost=[("ada", "left", 1)]))

        first = await reconcile(stack, double, day, backfill=True, verify_s=0)
        second = await reconcile(stack, double, day, backfill=True, verify_s=0)  # before the first one is stored
        assert first.backfilled_events == second.backfilled_events == 1
        written = [r for r in await insights_raw_records(stack) if r.key == room.encode()]
        assert written and len({r.value for r in written}) == 1  # the very same event (same id, same body) twice
        [event_id] = {dict(r.headers)[contract.HEADER_EVENT_ID] for r in written}

        await settled(stack, {event_id.decode()})
        third = await reconcile(stack, double, day, backfill=True)
        assert third.backfilled_events == 0  # nothing is missing any more
        assert set(statuses(third).values()) == {"match"}
        client, db = stack.sink.client, stack.settings.clickhouse_database
        assert client is not None
        [stored] = store.query_dicts(
            client,
            f"SELECT count() AS n FROM {db}.events FINAL WHERE event_id = {{id:String}}",
            {"id": event_id.decode()},
        )
        assert stored["n"] == 1


def cli(stack: Stack, double: InsightsDouble, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env, "WHEREBY_API_URL": double.url, "WHEREBY_API_KEY": key, "LOG_LEVEL": "WARNING"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "reconcile", *args, "--api", stack.read_api],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_the_command_prints_json_and_a_bad_key_fails_with_one_line(stack: Stack) -> None:
    day = datetime(2026, 4, 5, tzinfo=UTC)
    room = f"/acme-{uuid.uuid4()}"
    async with InsightsDouble(KEY) as double:
        session = double.add_session(meeting(room, day + timedelta(hours=9), [("ada", 0, 10), ("bob", 1, 5)]))
        await deliver(stack, webhooks(session))
        span = ["--from", day.date().isoformat(), "--to", (day + DAY).date().isoformat()]

        done = await asyncio.to_thread(cli, stack, double, *span, "--format", "json")
        assert done.returncode == 0, done.stderr
        doc = orjson.loads(done.stdout)
        assert set(doc) == {"from", "to", "sessions", "backfilled_events"}
        [row] = doc["sessions"]
        assert (row["roomSessionId"], row["roomName"], row["customer_id"], row["status"]) == (
            session.room_session_id, room, "c-acme", "match")  # fmt: skip
        assert row["ours"]["participant_minutes"] == row["insights"]["participant_minutes"] == 14

        requests_before = len(double.requests)
        wrong = "wrong-key-0000000000"
        failed = await asyncio.to_thread(cli, stack, double, *span, key=wrong)
        assert failed.returncode == 1
        assert failed.stdout == ""
        lines = [line for line in failed.stderr.splitlines() if line.startswith("whereby-pipeline reconcile:")]
        assert len(lines) == 1 and "401" in lines[0] and "WHEREBY_API_KEY" in lines[0]
        assert wrong not in failed.stderr
        assert len(double.requests) == requests_before + 1  # stopped at the first answer


async def test_a_bad_key_in_process_is_a_failed_run(stack: Stack) -> None:
    async with InsightsDouble(KEY) as double:
        options = Options(0, 1, backfill=True)
        with pytest.raises(ReconcileFailed, match="401"):
            await execute(
                configured(stack, double, key="nope-nope-nope"), options, read_api=stack.read_api, policy=FAST
            )
