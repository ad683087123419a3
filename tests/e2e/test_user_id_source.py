"""USER_ID_SOURCE end to end (issue 18): a company that passes its user id in `metadata` gets per-user
usage, and changing the setting then running `replay` moves minutes between users with the totals
unchanged. Enrich, replay and the sink in-process on the real broker and the real ClickHouse engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest

from enrich.dimtopic import read_dimensions
from enrich.replay import replay
from enrich.service import EnrichService
from pipeline.settings import Settings
from sink import store
from sink.read import queries
from sink.service import SinkService
from tests.support import (
    Running,
    body,
    derived,
    event,
    produce_raw,
    publish_dimensions,
    topic_record_count,
    wait_for,
)

pytestmark = pytest.mark.e2e


def joined_left(room: str, pid: str, at: float, until: float, n: tuple[int, int], **kw: Any) -> list[dict[str, Any]]:
    """One connection: its join (room count `n[0]` after it) and its left (`n[1]` after it)."""
    docs = [event("room.client.joined", room, at, participant=pid, **kw), event("room.client.left", room, until,
            participant=pid, **kw)]  # fmt: skip
    docs[0]["data"]["numClients"], docs[1]["data"]["numClients"] = n
    return docs


def meeting(room: str) -> list[dict[str, Any]]:
    """Ann passes her id only in metadata (10 min); Bob in both places, different values (4 min); Cat
    only as externalId (2 min)."""
    return [
        *joined_left(room, "p-ann", 0, 600, (1, 0), metadata='{"userId": "m-ann", "plan": "pro"}'),
        *joined_left(room, "p-bob", 5, 245, (2, 2), external_id="ext-bob", metadata="userId=m-bob"),
        *joined_left(room, "p-cat", 10, 130, (3, 2), external_id="ext-cat"),
    ]


async def test_users_from_metadata_and_a_replay_after_changing_the_setting(settings: Settings) -> None:
    await publish_dimensions(
        settings, [("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]})]
    )
    room = f"/acme-{uuid.uuid4()}"
    docs = meeting(room)

    async with Running(SinkService(settings)) as sink:
        client, db = sink.service.client, settings.clickhouse_database

        def per_user() -> dict[str | None, tuple[int, str | None]]:
            rows = store.query_dicts(
                client,
                f"SELECT user_key, user_source, participant_minutes FROM {db}.usage_by_user_day "
                "WHERE customer_id = 'c-acme'",
            )
            return {r["user_key"]: (int(r["participant_minutes"]), r["user_source"]) for r in rows}

        def shows(expected: dict[str | None, tuple[int, str | None]]) -> Any:
            async def check() -> bool:
                return await asyncio.to_thread(per_user) == expected

            return check

        def counts() -> tuple[int, int]:
            events = store.query_dicts(client, f"SELECT count() AS n FROM {db}.events FINAL")[0]["n"]
            connections = store.query_dicts(client, f"SELECT count() AS n FROM {db}.connections")[0]["n"]
            return int(events), int(connections)

        # The default, externalId: Ann has no user.
        async with Running(EnrichService(settings)):
            await produce_raw(settings, [body(d) for d in docs])
            await wait_for(shows({None: (10, None), "ext-bob": (4, "externalId"), "ext-cat": (2, "externalId")}))

        # externalId first, metadata's userId when there is none: enrich records the setting when it
        # starts; a replay (here from a process configured otherwise: the topic's setting wins) moves Ann.
        fallback = dataclasses.replace(settings, user_id_source="externalId,metadata:userId")
        async with Running(EnrichService(fallback)):
            summary = await replay(dataclasses.replace(settings, user_id_source="metadata"))
            await wait_for(shows({"m-ann": (10, "metadata:userId"), "ext-bob": (4, "externalId"),
                                  "ext-cat": (2, "externalId")}))  # fmt: skip
        assert summary.user_id_source == "externalId,metadata:userId"
        assert summary.user_id_source_ignored == "metadata"
        assert any("USER_ID_SOURCE=metadata here was not used" in line for line in summary.lines())

        # metadata first: Bob's metadata id now wins over his externalId.
        metadata_first = dataclasses.replace(settings, user_id_source="metadata:userId,externalId")
        async with Running(EnrichService(metadata_first)):
            again = await replay(settings)
            await wait_for(shows({"m-ann": (10, "metadata:userId"), "m-bob": (4, "metadata:userId"),
                                  "ext-cat": (2, "externalId")}))  # fmt: skip
        await derived(client, db)
        assert (again.user_id_source, again.user_id_source_ignored) == ("metadata:userId,externalId", "")

        # Moved, never counted twice: one row per event and per connection, the same 16 minutes.
        assert await asyncio.to_thread(counts) == (len(docs), 3)
        assert sum(minutes for minutes, _ in (await asyncio.to_thread(per_user)).values()) == 16
        external = store.query_dicts(
            client, f"SELECT participant_id, external_id FROM {db}.connections ORDER BY participant_id"
        )
        assert [(r["participant_id"], r["external_id"]) for r in external] == [
            ("p-ann", None),  # external_id stays what the browser sent
            ("p-bob", "ext-bob"),
            ("p-cat", "ext-cat"),
        ]
        # The Insights-shaped participants endpoint finds a user by the key too.
        query = queries.insights_participants(db, {"userKey": "m-bob"})
        [bob] = queries.result(query, store.query_dicts(client, query.sql, query.params))["results"]
        assert (bob["participantId"], bob["userKey"], bob["userSource"], bob["externalId"]) == (
            "p-bob",
            "m-bob",
            "metadata:userId",
            "ext-bob",
        )

    table, rejected = await read_dimensions(settings)
    assert (table.user_id_source_text, rejected) == ("metadata:userId,externalId", 0)
    # The customer and two settings: a setting is recorded only when it changes.
    assert table.version == 3
    assert await topic_record_count(settings, settings.topic_deadletter) == 0  # the sink took the records
