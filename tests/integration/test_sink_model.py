"""The ClickHouse model on the real engine: hand-computed usage, repeats, replays, bad rows, schema.

The helpers at the top (enriched events, a meeting with hand-computed usage) are shared with the
sink service tests.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from sink import store
from sink.batch import Batch, Record
from sink.derive import Deriver
from sink.rows import CUSTOMERS_TABLE
from sink.writer import ClickHouseWriter, Outcome

pytestmark = pytest.mark.integration

# 2026-01-01T09:00:00Z in ms
T0_MS = 1_767_258_000_000

ROLE_CLASSES = {"recorder": "recorder", "streamer": "streamer", "assistant": "assistant", "captioner": "captioner"}


def enriched(
    event_type: str,
    room: str,
    at_s: float,
    *,
    participant: str | None = None,
    session: str | None = "sess-1",
    role: str = "visitor",
    external_id: str | None = None,
    customer: str | None = "c-acme",
    version: int = 1,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One enriched event as the enrich stage writes it; `at_s` is seconds after T0."""
    at_ms = T0_MS + round(at_s * 1000)
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "event_type": event_type,
        "api_version": "1.0",
        "created_at_ms": at_ms,
        "received_at_ms": at_ms + 40,
        "room_name": room,
        "meeting_id": "1001",
        "subdomain": "examplecorp",
        "room_session_id": session,
        "participant_id": participant,
        "display_name": "Someone" if participant else None,
        "role_name": role if participant else None,
        "role_class": ROLE_CLASSES.get(role, "human") if participant else None,
        "external_id": external_id,
        "metadata": {"plan": "pro"} if participant else {},
        "metadata_raw": "plan=pro" if participant else None,
        "is_dial_in": False,
        "num_clients": 2,
        "customer_id": customer,
        "customer_name": customer.upper() if customer else None,
        "customer_resolution": "prefix" if customer else "unresolved",
        "user_id": f"u-{external_id}" if external_id else None,
        "user_resolution": "external_id" if external_id else "absent",
        "dimension_version": 7,
        "enrichment_version": version,
        "enriched_at_ms": at_ms + 50,
        "data": {"ignored": True},
    }


def meeting(room: str, **kw: Any) -> list[dict[str, Any]]:
    """A meeting whose usage is computed by hand below (event order here is arrival order).

    | connection | joined | ended | by | seconds | minutes (ceil) |
    |---|---|---|---|---|---|
    | p-ada (human, no session id on join) | 0 | 610.5 | left | 610 | 11 |
    | p-bob (human) | 5 | 125 | left | 120 | 2 |
    | p-rec (recorder) | 10 | 310 | left | 300 | 5 |
    | p-cat (human, never leaves) | 300 | 700 | session end | 400 | 7 |
    | p-dan (human, left arrives after session.ended) | 20 | 690 | left | 670 | 12 |
    | p-eve (human, sess-2, no left, no end) | 1000 | - | open | - | - |

    Participant minutes 11+2+7+12 = 32 (30 if rounded only once), recorder minutes 5, sessions 2,
    unique human participants 5, one open connection. A `room.knock.accepted` event is stored only.
    """
    return [
        enriched("room.client.joined", room, 0, participant="p-ada", session=None, external_id="ada", **kw),
        enriched("room.session.started", room, 1, **kw),
        enriched("room.client.joined", room, 5, participant="p-bob", external_id="bob", **kw),
        enriched("room.client.joined", room, 10, participant="p-rec", role="recorder", **kw),
        enriched("room.client.joined", room, 20, participant="p-dan", external_id="dan", **kw),
        enriched("room.knock.accepted", room, 30, participant="p-zed", external_id="zed", **kw),
        enriched("room.client.left", room, 125, participant="p-bob", external_id="bob", **kw),
        enriched("room.client.joined", room, 300, participant="p-cat", **kw),
        enriched("room.client.left", room, 310, participant="p-rec", role="recorder", **kw),
        enriched("room.client.left", room, 610.5, participant="p-ada", external_id="ada", **kw),
        enriched("room.session.ended", room, 700, **kw),
        enriched("room.client.left", room, 690, participant="p-dan", external_id="dan", **kw),
        enriched("room.client.joined", room, 1000, participant="p-eve", session="sess-2", **kw),
    ]


def records(docs: Iterable[dict[str, Any]], *, topic: str = "enriched", first_offset: int = 0) -> list[Record]:
    return [
        Record(topic, 0, first_offset + i, doc["room_name"].encode(), orjson.dumps(doc)) for i, doc in enumerate(docs)
    ]


def write(client: Client, db: str, recs: list[Record], dims: list[Record] | None = None) -> Outcome:
    """One batch through the sink's real writer (tokens, splitting and all), then the deriver's pass over
    the rooms it touched, as the running sink does after each insert."""
    batch = Batch(started=0.0, events=list(recs), dimensions=list(dims or []))
    for r in [*recs, *(dims or [])]:
        batch.track(r)
    outcome = ClickHouseWriter(client, db).write(batch)
    derive(client, db)
    return outcome


def derive(client: Client, db: str) -> None:
    """Bring the connection and session rows up to date with every stored event."""
    deriver = Deriver(client, db)
    deriver.load()
    deriver.drain()


def rows(client: Client, sql: str, **params: Any) -> list[dict[str, Any]]:
    return store.query_dicts(client, sql, params)


# ---------------------------------------------------------------------------------------------- tests


@pytest.fixture
def engine(clickhouse_url: str) -> Iterator[tuple[Client, str]]:
    """A client on the session's engine and a fresh, migrated database for this test."""
    client = store.connect(clickhouse_url)
    db = f"test_{uuid.uuid4().hex[:10]}"
    store.migrate(client, db)
    try:
        yield client, db
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")
        client.close()


def usage(client: Client, db: str, room: str) -> dict[str, Any]:
    """Everything an analyst would read about `room`, in a comparable form."""
    return {
        "connections": rows(
            client,
            f"SELECT participant_id, room_session_id, customer_id, user_id, role_class, joined_at, ended_at, "
            f"end_source, is_open, seconds, minutes FROM {db}.connections WHERE room_name = {{room:String}} "
            "ORDER BY participant_id",
            room=room,
        ),
        "rooms": rows(client, f"SELECT * FROM {db}.rooms WHERE room_name = {{room:String}}", room=room),
        "sessions": rows(
            client,
            f"SELECT * FROM {db}.room_sessions WHERE room_name = {{room:String}} ORDER BY room_session_id",
            room=room,
        ),
        "by_customer": rows(client, f"SELECT * FROM {db}.usage_by_customer_day ORDER BY day, customer_id"),
        "by_user": rows(client, f"SELECT * FROM {db}.usage_by_user_day ORDER BY day, customer_id, user_id"),
        "events": rows(client, f"SELECT count() AS n FROM {db}.events FINAL")[0]["n"],
    }


def test_meeting_gives_the_hand_computed_numbers(engine: tuple[Client, str]) -> None:
    client, db = engine
    room = "/acme-standup"
    outcome = write(client, db, records(meeting(room)))
    assert outcome.rejected == [] and outcome.inserted == 13

    u = usage(client, db, room)
    by_participant = {c["participant_id"]: c for c in u["connections"]}
    assert {p: (c["seconds"], c["minutes"], c["end_source"]) for p, c in by_participant.items()} == {
        "p-ada": (610, 11, "left"),
        "p-bob": (120, 2, "left"),
        "p-rec": (300, 5, "left"),
        "p-cat": (400, 7, "session_end"),  # no left: closed at the end of sess-1
        "p-dan": (670, 12, "left"),  # its left arrived after session.ended and still wins
        "p-eve": (None, None, "open"),  # no left and no later session end: open, not counted
    }
    assert by_participant["p-ada"]["room_session_id"] == "sess-1"  # joined with a null session id
    assert "p-zed" not in by_participant  # unknown event type: stored, not counted
    room_row = u["rooms"][0]
    assert (room_row["participant_minutes"], room_row["recorder_minutes"], room_row["sessions"]) == (32, 5, 2)
    assert (room_row["unique_participants"], room_row["unique_recorders"], room_row["open_connections"]) == (5, 1, 1)
    assert room_row["customer_id"] == "c-acme"
    assert [(s["room_session_id"], s["participant_minutes"]) for s in u["sessions"]] == [("sess-1", 32), ("sess-2", 0)]
    [day] = u["by_customer"]
    assert (day["customer_id"], day["participant_minutes"], day["recorder_minutes"]) == ("c-acme", 32, 5)
    assert (day["sessions"], day["unique_participants"], day["connections"], day["open_connections"]) == (2, 5, 5, 1)
    by_user = {r["user_id"]: r["participant_minutes"] for r in u["by_user"]}
    assert by_user == {"u-ada": 11, "u-bob": 2, "u-dan": 12, None: 7}  # p-cat, p-rec, p-eve have no user
    assert u["events"] == 13  # including the unknown type


def test_three_shuffled_deliveries_give_the_numbers_of_one(engine: tuple[Client, str]) -> None:
    client, db = engine
    room = "/acme-standup"
    docs = meeting(room)
    write(client, db, records(docs))
    once = usage(client, db, room)

    client2, db2 = client, f"{db}_x3"
    store.migrate(client2, db2)
    try:
        tripled = docs * 3
        random.Random(42).shuffle(tripled)
        recs = records(tripled, first_offset=100)
        for start in range(0, len(recs), 7):  # several batches, each with its own token
            write(client2, db2, recs[start : start + 7])
        assert usage(client2, db2, room) == once
        assert rows(client2, f"SELECT count() AS n FROM {db2}.events")[0]["n"] >= len(docs)
    finally:
        client2.command(f"DROP DATABASE IF EXISTS {db2}")


def test_the_same_batch_with_the_same_token_changes_nothing(engine: tuple[Client, str]) -> None:
    """A crash between insert and commit re-sends the batch with the same offsets, hence the same token."""
    client, db = engine
    room = "/acme-standup"
    recs = records(meeting(room))

    def raw_counts() -> tuple[int, ...]:
        sql = (
            f"SELECT (SELECT count() FROM {db}.events), (SELECT count() FROM {db}.connection_states), "
            f"(SELECT count() FROM {db}.session_states) AS n"
        )
        return tuple(client.query(sql).result_rows[0])

    write(client, db, recs)
    before, numbers = raw_counts(), usage(client, db, room)
    write(client, db, recs)
    assert raw_counts() == before  # not even a duplicate row waiting for a merge, in any table
    assert usage(client, db, room) == numbers


def test_a_replay_with_a_new_customer_moves_the_usage(engine: tuple[Client, str]) -> None:
    client, db = engine
    room = "/acme-standup"
    docs = meeting(room, customer="c-old", version=1)
    write(client, db, records(docs))
    replayed = [{**d, "customer_id": "c-new", "customer_name": "NEW", "enrichment_version": 2} for d in docs]
    write(client, db, records(replayed, first_offset=1000))

    u = usage(client, db, room)
    assert [(d["customer_id"], d["participant_minutes"]) for d in u["by_customer"]] == [("c-new", 32)]
    assert u["rooms"][0]["customer_id"] == "c-new"
    assert {c["customer_id"] for c in u["connections"]} == {"c-new"}
    assert u["events"] == len(docs)


def test_a_replay_that_unregisters_the_customer_moves_the_usage_to_unresolved(engine: tuple[Client, str]) -> None:
    """NULL is a value here: argMax must not skip it and keep showing the old customer."""
    client, db = engine
    room = "/acme-standup"
    docs = meeting(room, customer="c-old", version=1)
    write(client, db, records(docs))
    replayed = [
        {**d, "customer_id": None, "customer_name": None, "customer_resolution": "unresolved", "enrichment_version": 2}
        for d in docs
    ]
    write(client, db, records(replayed, first_offset=1000))

    u = usage(client, db, room)
    assert [(d["customer_id"], d["participant_minutes"]) for d in u["by_customer"]] == [(None, 32)]
    assert u["rooms"][0]["customer_id"] is None
    assert u["rooms"][0]["customer_name"] is None
    assert {c["customer_id"] for c in u["connections"]} == {None}


def test_a_room_shows_its_newest_customer_even_when_that_is_unresolved(engine: tuple[Client, str]) -> None:
    """A partial replay (`--from` mid-meeting) re-enriches only the latest events to "unresolved"."""
    client, db = engine
    room = "/acme-standup"
    docs = meeting(room, customer="c-old", version=1)
    write(client, db, records(docs))
    latest = sorted(docs, key=lambda d: d["created_at_ms"])[-3:]
    replayed = [
        {**d, "customer_id": None, "customer_name": None, "customer_resolution": "unresolved", "enrichment_version": 2}
        for d in latest
    ]
    write(client, db, records(replayed, first_offset=1000))
    room_row = usage(client, db, room)["rooms"][0]
    assert (room_row["customer_id"], room_row["customer_name"]) == (None, None)


def test_an_older_enrichment_arriving_late_does_not_win(engine: tuple[Client, str]) -> None:
    client, db = engine
    room = "/acme-standup"
    docs = meeting(room, customer="c-new", version=5)
    stale = [{**d, "customer_id": "c-old", "enrichment_version": 1} for d in docs]
    write(client, db, records(docs))
    write(client, db, records(stale, first_offset=1000))
    assert [d["customer_id"] for d in usage(client, db, room)["by_customer"]] == ["c-new"]


def test_rejected_rows_are_isolated_and_the_rest_inserted(engine: tuple[Client, str]) -> None:
    client, db = engine
    docs = meeting("/acme-standup")
    recs = records(docs)
    bad_json = Record("enriched", 0, 900, None, b'{"event_id": "broken", ')
    bad_time = Record("enriched", 0, 901, None, orjson.dumps({**docs[0], "event_id": "e-1970", "created_at_ms": 5}))
    no_id = Record("enriched", 0, 902, None, orjson.dumps({**docs[1], "event_id": ""}))
    batch = [*recs[:4], bad_json, *recs[4:9], bad_time, *recs[9:], no_id]

    outcome = write(client, db, batch)

    assert sorted(d.record.offset for d in outcome.rejected) == [900, 901, 902]
    assert {d.reason for d in outcome.rejected} == {"rejected_by_clickhouse"}
    assert outcome.inserted == len(recs)
    assert rows(client, f"SELECT count() AS n FROM {db}.events FINAL")[0]["n"] == len(recs)


def test_dimension_records_are_upserted_and_tombstones_delete(engine: tuple[Client, str]) -> None:
    client, db = engine
    dims = [
        Record("dims", 0, 0, b"customer:c-acme", orjson.dumps({"customer_id": "c-acme", "name": "Acme"})),
        Record("dims", 0, 1, b"user:ada", orjson.dumps({"external_id": "ada", "user_id": "u-ada"})),
        Record("dims", 0, 2, b"customer:c-acme", orjson.dumps({"name": "Acme Inc", "room_name_prefixes": ["acme"]})),
        Record("dims", 0, 3, b"customer:c-gone", orjson.dumps({"name": "Gone"})),
        Record("dims", 0, 4, b"customer:c-gone", None),
        Record("dims", 0, 5, b"nonsense", b"{}"),
    ]
    outcome = write(client, db, [], dims)
    assert [(d.record.offset, d.reason) for d in outcome.rejected] == [(5, "invalid_dimension")]
    # Delivered again, in another order: the newest offset still wins.
    write(client, db, [], list(reversed(dims[:5])))
    customers = rows(client, f"SELECT customer_id, name, room_name_prefixes, version FROM {db}.customers")
    assert customers == [{"customer_id": "c-acme", "name": "Acme Inc", "room_name_prefixes": ["acme"], "version": 2}]
    assert rows(client, f"SELECT external_id, user_id FROM {db}.users") == [{"external_id": "ada", "user_id": "u-ada"}]
    deleted = rows(client, f"SELECT customer_id FROM {db}.{CUSTOMERS_TABLE} FINAL WHERE deleted")
    assert deleted == [{"customer_id": "c-gone"}]


def test_migrations_apply_once_even_when_two_sinks_start_together(clickhouse_url: str) -> None:
    db = f"test_{uuid.uuid4().hex[:10]}"
    clients = [store.connect(clickhouse_url) for _ in range(2)]
    results: list[list[str] | BaseException] = []

    def migrate(client: Client) -> None:
        try:
            results.append(store.migrate(client, db))
        except BaseException as exc:
            results.append(exc)

    try:
        threads = [threading.Thread(target=migrate, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(isinstance(r, list) for r in results), results
        assert store.migrate(clients[0], db) == []
        versions = rows(clients[0], f"SELECT version FROM {db}.schema_migrations FINAL ORDER BY version")
        assert [v["version"] for v in versions] == [v for v, _, _ in store.migrations()]
    finally:
        clients[0].command(f"DROP DATABASE IF EXISTS {db}")
        for c in clients:
            c.close()


def test_the_cluster_variant_of_every_statement_parses(engine: tuple[Client, str]) -> None:
    client, _ = engine
    statements = [s for _, _, ss in store.schema_statements("whereby", "main") for s in ss]
    assert any("ReplicatedReplacingMergeTree" in s for s in statements)
    assert any("ENGINE = Distributed('main', whereby, events_local, cityHash64(room_name))" in s for s in statements)
    for statement in statements:
        formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": statement}).result_rows[0][0]
        # A data migration (INSERT … SELECT) runs once on one node through the Distributed tables.
        assert "ON CLUSTER" in formatted or formatted.startswith("INSERT INTO"), statement[:120]
