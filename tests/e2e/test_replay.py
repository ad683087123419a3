"""Meetings held before their customer was registered are re-attributed by `replay`, with the totals
unchanged: enrich and the sink running in-process on a real broker and the real ClickHouse engine."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from enrich.cli import load_files
from enrich.replay import replay
from enrich.service import EnrichService
from pipeline.settings import Settings
from sink import store
from sink.service import SinkService
from tests.support import Running, body, derived, event, produce_raw, publish_dimensions, wait_for

pytestmark = pytest.mark.e2e


def meeting(room: str, *, users: tuple[str, ...]) -> list[dict[str, Any]]:
    """Two participants, one session: 2 min 5 s and 10 min 10 s of connection time."""
    return [
        event("room.client.joined", room, 0, participant="p-1", external_id=users[0], session=None),
        event("room.session.started", room, 1),
        event("room.client.joined", room, 5, participant="p-2", external_id=users[1]),
        event("room.client.left", room, 130, participant="p-2", external_id=users[1]),
        event("room.client.left", room, 610, participant="p-1", external_id=users[0]),
        event("room.session.ended", room, 700),
    ]


async def test_replay_moves_usage_to_a_customer_registered_after_its_meetings(
    settings: Settings, tmp_path: Path
) -> None:
    await publish_dimensions(
        settings, [("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]})]
    )
    newco_room, acme_room = f"/newco-{uuid.uuid4()}", f"/acme-{uuid.uuid4()}"
    events = meeting(newco_room, users=("ext-n1", "ext-n2")) + meeting(acme_room, users=("ext-a1", "ext-a2"))
    # Whereby delivers at least once: one event twice must still count once.
    raw = [body(doc) for doc in events] + [body(events[3])]

    async with Running(SinkService(settings)) as sink, Running(EnrichService(settings)):
        client = sink.service.client
        db = settings.clickhouse_database
        rooms = {"rooms": [newco_room, acme_room]}

        def query(sql: str) -> list[dict[str, Any]]:
            return store.query_dicts(client, sql.format(db=db), rooms)

        def connections() -> list[dict[str, Any]]:
            return query(
                "SELECT room_name, participant_id, customer_id, user_id, seconds FROM {db}.connections "
                "WHERE room_name IN {{rooms:Array(String)}} ORDER BY room_name, participant_id"
            )

        def stored_events() -> int:
            sql = "SELECT count() AS n FROM {db}.events FINAL WHERE room_name IN {{rooms:Array(String)}}"
            return int(query(sql)[0]["n"])

        def usage_by_customer() -> dict[str | None, int]:
            rows = query(
                "SELECT customer_id, sum(participant_minutes) AS minutes FROM {db}.usage_by_customer_day "
                "GROUP BY customer_id"
            )
            return {row["customer_id"]: int(row["minutes"]) for row in rows}

        await produce_raw(settings, raw)
        await wait_for(lambda: asyncio.to_thread(lambda: stored_events() == len(events)))
        await derived(client, db)
        before = await asyncio.to_thread(connections)
        usage_before = await asyncio.to_thread(usage_by_customer)

        customers = tmp_path / "customers.csv"
        customers.write_text("customer_id,name,room_name_prefix\nc-newco,NewCo,newco-\n")
        users = tmp_path / "users.csv"
        users.write_text("external_id,user_id,customer_id,name\next-n1,u-n1,c-newco,N1\next-n2,u-n2,c-newco,N2\n")
        out = io.StringIO()
        assert await load_files(settings, str(customers), str(users), out=out, err=out) == 0, out.getvalue()

        summary = await replay(settings)  # while enrich and the sink keep running

        def reattributed() -> bool:
            return all(row["customer_id"] == "c-newco" for row in connections() if row["room_name"] == newco_room)

        await wait_for(lambda: asyncio.to_thread(reattributed))
        await derived(client, db)
        after = await asyncio.to_thread(connections)
        usage_after = await asyncio.to_thread(usage_by_customer)
        events_after = await asyncio.to_thread(stored_events)

    assert summary.read == len(raw)
    assert [(r["room_name"], r["participant_id"], r["customer_id"], r["user_id"], r["seconds"]) for r in before] == [
        (acme_room, "p-1", "c-acme", None, 610),
        (acme_room, "p-2", "c-acme", None, 125),
        (newco_room, "p-1", None, None, 610),
        (newco_room, "p-2", None, None, 125),
    ]
    assert [(r["room_name"], r["participant_id"], r["customer_id"], r["user_id"], r["seconds"]) for r in after] == [
        (acme_room, "p-1", "c-acme", None, 610),
        (acme_room, "p-2", "c-acme", None, 125),
        (newco_room, "p-1", "c-newco", "u-n1", 610),
        (newco_room, "p-2", "c-newco", "u-n2", 125),
    ]
    # Totals unchanged: the replayed records replaced the earlier ones instead of adding to them.
    assert events_after == len(events)
    assert sum(r["seconds"] for r in after) == sum(r["seconds"] for r in before)
    assert usage_before[None] == 11 + 3  # minutes, rounded up per connection
    assert usage_after.get(None, 0) == usage_before[None] - 14
    assert usage_after["c-newco"] == 14
    assert usage_after["c-acme"] == usage_before["c-acme"] == 14
    assert sum(usage_after.values()) == sum(usage_before.values())


async def test_a_partial_replay_moves_a_connection_whole_never_split(settings: Settings) -> None:
    """`replay --from` between a connection's join and its left re-enriches only the left; the connection
    still moves to the new customer whole (the newest enrichment of any of its events decides it,
    `sink/VIEWS.md` §6), never half under each customer."""
    room = f"/later-{uuid.uuid4()}"
    events = meeting(room, users=("ext-l1", "ext-l2"))
    now = int(time.time() * 1000)
    # Received an hour ago: both joins and the session start; received now: both lefts and the end.
    await produce_raw(settings, [body(d) for d in events[:3]], timestamp_ms=now - 3_600_000)
    await produce_raw(settings, [body(d) for d in events[3:]], timestamp_ms=now)

    async with Running(SinkService(settings)) as sink, Running(EnrichService(settings)):
        client, db = sink.service.client, settings.clickhouse_database

        def rows() -> list[tuple[str, str | None, int | None]]:
            found = store.query_dicts(
                client,
                f"SELECT participant_id, customer_id, seconds FROM {db}.connections WHERE room_name = {{room:String}} "
                "ORDER BY participant_id",
                {"room": room},
            )
            return [(r["participant_id"], r["customer_id"], r["seconds"]) for r in found]

        def minutes() -> dict[str | None, int]:
            found = store.query_dicts(
                client,
                f"SELECT customer_id, sum(participant_minutes) AS m FROM {db}.usage_by_customer_day "
                "GROUP BY customer_id",
            )
            return {r["customer_id"]: int(r["m"]) for r in found if int(r["m"])}

        await wait_for(lambda: asyncio.to_thread(lambda: rows() == [("p-1", None, 610), ("p-2", None, 125)]))
        await publish_dimensions(
            settings,
            [("customer:c-later", {"customer_id": "c-later", "name": "Later", "room_name_prefixes": ["later-"]})],
        )
        summary = await replay(settings, since_ms=now - 60_000, source="topic")
        await wait_for(lambda: asyncio.to_thread(lambda: rows() == [("p-1", "c-later", 610), ("p-2", "c-later", 125)]))
        await derived(client, db)
        assert await asyncio.to_thread(minutes) == {"c-later": 14}

    assert summary.read == 3  # only what arrived since: the two lefts and the session end
