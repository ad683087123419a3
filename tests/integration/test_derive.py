"""The deriver on the real engine: incremental recomputation, deleted rows, idempotence, open-connection census.

The minute rules themselves are covered by tests/integration/test_minute_cases.py; these tests pin how
the derived rows follow the events as they arrive piece by piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from sink import metrics, store
from sink.batch import Batch
from sink.derive import Deriver
from sink.writer import ClickHouseWriter
from tests.integration.test_sink_model import T0_MS, engine, enriched, records, rows, write  # noqa: F401

pytestmark = pytest.mark.integration
ROOM = "/acme-derive"


def live(client: Client, db: str) -> list[dict[str, Any]]:
    return rows(
        client,
        f"SELECT participant_id, end_source, minutes FROM {db}.connections ORDER BY participant_id, joined_at",
    )


def physical(client: Client, db: str, table: str) -> int:
    return int(rows(client, f"SELECT count() AS n FROM {db}.{table}")[0]["n"])


@pytest.fixture
def db(engine: tuple[Client, str]) -> Iterator[tuple[Client, str]]:  # noqa: F811
    yield engine


def test_a_late_join_replaces_the_incomplete_connection_instead_of_adding_one(db: tuple[Client, str]) -> None:
    client, name = db
    write(client, name, records([enriched("room.client.left", ROOM, 600, participant="p-1")]))
    assert live(client, name) == [{"participant_id": "p-1", "end_source": "no_join", "minutes": None}]
    write(client, name, records([enriched("room.client.joined", ROOM, 0, participant="p-1")], first_offset=10))
    assert live(client, name) == [{"participant_id": "p-1", "end_source": "left", "minutes": 10}]


def test_a_late_session_end_closes_a_connection_of_an_earlier_episode(db: tuple[Client, str]) -> None:
    """The end arrives after the room emptied: the deriver must reach back to the session's connections."""
    client, name = db
    docs = [
        {**enriched("room.client.joined", ROOM, 0, participant="p-ada", session=None), "num_clients": 1},
        {**enriched("room.client.joined", ROOM, 60, participant="p-bob", session="s1"), "num_clients": 2},
        {**enriched("room.client.left", ROOM, 1200, participant="p-bob", session="s1"), "num_clients": 0},
    ]
    write(client, name, records(docs))
    # ada's left is lost: the room emptied at bob's left, so she is estimated at the event before it.
    assert live(client, name)[0] == {"participant_id": "p-ada", "end_source": "estimated", "minutes": 1}
    write(client, name, records([enriched("room.session.ended", ROOM, 1300, session="s1")], first_offset=10))
    assert live(client, name)[0] == {"participant_id": "p-ada", "end_source": "session_end", "minutes": 22}


def test_deriving_again_writes_nothing(db: tuple[Client, str]) -> None:
    client, name = db
    docs = [
        enriched("room.client.joined", ROOM, 0, participant="p-1"),
        enriched("room.client.left", ROOM, 90, participant="p-1"),
    ]
    write(client, name, records(docs))
    before = physical(client, name, "connection_rows"), physical(client, name, "session_rows")
    write(client, name, records(docs, first_offset=100))  # the same events again (a redelivery)
    client.command(f"INSERT INTO {name}.room_changes (room_name, changed_from) VALUES ('{ROOM}', '2026-01-01')")
    deriver = Deriver(client, name)
    deriver.load()
    deriver.drain()
    assert (physical(client, name, "connection_rows"), physical(client, name, "session_rows")) == before


def test_the_census_counts_open_and_stale_connections(db: tuple[Client, str]) -> None:
    client, name = db
    now_ms = int(datetime.now(UTC).timestamp() * 1000)

    def ago(hours: float) -> float:
        return (now_ms - hours * 3_600_000 - T0_MS) / 1000

    write(
        client,
        name,
        records(
            [
                enriched("room.client.joined", ROOM, ago(7), participant="p-old"),
                enriched("room.client.joined", ROOM, ago(1), participant="p-new"),
                enriched("room.client.joined", ROOM, ago(2), participant="p-done"),
                enriched("room.client.left", ROOM, ago(1.5), participant="p-done"),
            ]
        ),
    )
    deriver = Deriver(client, name, stale_after_s=6 * 3600)
    assert deriver.census() == (2, 1)
    assert metrics.STALE_OPEN_CONNECTIONS._value.get() == 1


def test_a_store_upgraded_in_place_keeps_its_rows_idempotent(clickhouse_url: str) -> None:
    """A second start over the same store writes nothing: the watermark is persisted, and the notes it
    reads again (the overlap after the watermark) find their rows unchanged."""
    import uuid

    client = store.connect(clickhouse_url)
    name = f"test_{uuid.uuid4().hex[:10]}"
    try:
        store.migrate(client, name)
        write(client, name, records([enriched("room.client.joined", ROOM, 0, participant="p-1")]))
        second = Deriver(client, name)
        second.load()
        outcome = second.drain()
        assert sum(outcome.upserts.values()) == sum(outcome.deletes.values()) == 0
    finally:
        client.command(f"DROP DATABASE IF EXISTS {name}")
        client.close()


def test_a_rejoin_derived_in_a_later_window_still_counts_one_participant(db: tuple[Client, str]) -> None:
    """§9: the second connection is derived without the first (the room was known empty more than
    ENDED_GRACE_MS before it): its previous anchor comes from the stored row, so the participant is one
    in the month, and one in a range that starts between the two."""
    client, name = db
    alone = {"session": None, "external_id": "ada"}  # no session to pull the window back to the first
    first = [
        {**enriched("room.client.joined", ROOM, 0, participant="p-ada", **alone), "num_clients": 1},
        {**enriched("room.client.left", ROOM, 600, participant="p-ada", **alone), "num_clients": 0},
    ]
    again = {"session": "s2", "external_id": "ada"}
    second = [
        {**enriched("room.client.joined", ROOM, 7200, participant="p-ada", **again), "num_clients": 1},
        {**enriched("room.client.left", ROOM, 7800, participant="p-ada", **again), "num_clients": 0},
    ]
    # One deriver for both passes, as in the running sink: a new one would read the first pass's change
    # note again (the overlap after the watermark) and recompute the whole room.
    deriver = Deriver(client, name)
    deriver.load()
    for batch in (records(first), records(second, first_offset=10)):
        pending = Batch(started=0.0, events=batch, dimensions=[])
        for record in batch:
            pending.track(record)
        ClickHouseWriter(client, name).write(pending)
        assert deriver.drain().rooms == 1

    prev = rows(
        client,
        f"SELECT toUnixTimestamp64Milli(anchor_at) AS at, toUnixTimestamp64Milli(prev_anchor_at) AS prev "
        f"FROM {name}.connection_rows FINAL WHERE NOT deleted ORDER BY anchor_at",
    )
    assert prev == [{"at": T0_MS, "prev": None}, {"at": T0_MS + 7_200_000, "prev": T0_MS}]

    def unique(low_ms: int) -> int:
        found = rows(
            client,
            f"SELECT unique_participants FROM {name}.usage_by_customer_period("
            "from = fromUnixTimestamp64Milli({low:Int64}, 'UTC'), to = toDateTime64('2100-01-01', 3, 'UTC'))",
            low=low_ms,
        )
        return sum(int(row["unique_participants"]) for row in found)

    assert unique(T0_MS) == 1
    assert unique(T0_MS + 3_600_000) == 1  # only the second connection is in range: it counts
    assert unique(T0_MS + 8_000_000) == 0

    # A replay that moves the first connection to another customer: the second one is that customer's
    # first connection of the participant again.
    moved = [{**doc, "customer_id": "c-other", "enrichment_version": 2} for doc in first]
    write(client, name, records(moved, first_offset=20))
    per_customer = rows(
        client,
        f"SELECT customer_id, unique_participants FROM {name}.usage_by_customer_period("
        "from = toDateTime64('2000-01-01', 3, 'UTC'), to = toDateTime64('2100-01-01', 3, 'UTC')) ORDER BY customer_id",
    )
    assert [(r["customer_id"], r["unique_participants"]) for r in per_customer] == [("c-acme", 1), ("c-other", 1)]
