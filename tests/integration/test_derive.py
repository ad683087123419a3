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
from sink.derive import Deriver
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
