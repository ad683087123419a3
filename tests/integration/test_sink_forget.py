"""An erasure on the real engine, through the sink's real writer: every stored row of the person is
rewritten (every version, the legacy aggregate state, the registered user), nothing else moves, a
repeat changes nothing, and events enriched before the erasure are scrubbed on their way in."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from pipeline import erasure
from pipeline.dimensions import Erasure
from sink.batch import Batch, Record
from sink.writer import ClickHouseWriter
from tests.integration.test_sink_model import derive, engine, meeting, records, rows, usage, write  # noqa: F401

pytestmark = pytest.mark.integration

KEY = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
ADA, NAME = "ada", "Ada Lovelace"
PSEUDONYM = erasure.pseudonym(ADA, KEY)


def named(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The meeting with Ada's own display name and registered user name on her events."""
    for doc in docs:
        if doc["external_id"] == ADA:
            doc.update(display_name=NAME, user_name="Ada L")
    return docs


def erase_batch(offset: int) -> Batch:
    record = Erasure(erasure.subject(ADA), PSEUDONYM)
    dim = Record("dimensions", 0, offset, record.key.encode(), orjson.dumps(record.to_doc()))
    batch = Batch(started=0.0, dimensions=[dim])
    batch.track(dim)
    return batch


def mentions(client: Client, db: str, text: str) -> dict[str, int]:
    """Rows naming `text` in any column of any table or plain view of `db`, every version and state
    included (no FINAL), except the raw archive, which keeps the webhooks as received until its TTL."""
    tables = rows(
        client,
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT IN ('Null', 'Set', "
        "'MaterializedView') AND name != 'raw_archive' AND (engine != 'View' OR position(create_table_query, "
        "'{from:') = 0) ORDER BY name",
        db=db,
    )
    found = {}
    for table in (t["name"] for t in tables):
        n = rows(
            client,
            f"SELECT count() AS n FROM {db}.{table} WHERE position(formatRow('TSV', *), {{text:String}}) > 0",
            text=text,
        )[0]["n"]
        if n:
            found[table] = int(n)
    return found


NAMING = ("user_id", "external_id", "user_name", "user_key")


def without_names(summary: dict[str, Any]) -> dict[str, Any]:
    """`usage()` without the columns that name a person, rows in a stable order: what must not change."""
    out: dict[str, Any] = {}
    for part, found in summary.items():
        if isinstance(found, list):
            kept = [{k: v for k, v in row.items() if k not in NAMING} for row in found]
            found = sorted(kept, key=repr)
        out[part] = found
    return out


def test_an_erasure_rewrites_every_stored_row_of_the_person_and_nothing_else(engine: tuple[Client, str]) -> None:  # noqa: F811
    client, db = engine
    room = f"/acme-{uuid.uuid4()}"
    user = Record("dimensions", 0, 0, b"user:ada", b'{"user_id": "u-ada", "name": "Ada L", "email": "ada@x.org"}')
    docs = named(meeting(room))
    write(client, db, records(docs), dims=[user])
    # A replay's newer enrichment of the same events: the superseded rows stay in the parts until merged.
    write(client, db, records([{**doc, "enrichment_version": 2} for doc in docs], first_offset=100))
    # The release before 005 kept a packed aggregate state per connection; an upgraded store still has it.
    client.command(
        f"INSERT INTO {db}.connection_states SELECT {{room:String}}, 'p-ada', toDate32('2026-01-01'), NULL, NULL, "
        "NULL, 1, argMaxState(arrayStringConcat(['=c-acme', '=ACME', '=u-ada', '=ada', '=Ada Lovelace', '=visitor', "
        "'=human'], '\\x1f'), toUInt256(5))",
        parameters={"room": room},
    )
    before = usage(client, db, room)
    assert mentions(client, db, NAME) and mentions(client, db, "ada@x.org")

    writer = ClickHouseWriter(client, db)
    writer.write(erase_batch(1))
    derive(client, db)

    assert mentions(client, db, NAME) == {}
    assert mentions(client, db, "Ada L") == {}
    assert mentions(client, db, "ada@x.org") == {}
    assert mentions(client, db, "u-ada") == {}
    assert rows(client, f"SELECT count() AS n FROM {db}.events WHERE external_id = 'ada'")[0]["n"] == 0
    after = usage(client, db, room)
    assert without_names(after) == without_names(before)  # every minute, count, time and key as it was
    assert [(r["participant_id"], r["user_id"]) for r in after["connections"] if r["participant_id"] == "p-ada"] == [
        ("p-ada", None)
    ]
    assert rows(
        client,
        f"SELECT DISTINCT external_id, display_name, user_resolution FROM {db}.events WHERE participant_id = 'p-ada'",
    ) == [{"external_id": PSEUDONYM, "display_name": None, "user_resolution": "erased"}]
    assert rows(
        client,
        f"SELECT external_id, user_name FROM {db}.connections_between(from = '2000-01-01', to = '2100-01-01') "
        "WHERE participant_id = 'p-ada'",
    ) == [{"external_id": PSEUDONYM, "user_name": None}]
    legacy = rows(client, f"SELECT argMaxMerge(dims) AS d FROM {db}.connection_states GROUP BY room_name")
    assert legacy == [{"d": f"=c-acme\x1f=ACME\x1f\x1f={PSEUDONYM}\x1f\x1f=visitor\x1f=human"}]
    others = rows(
        client, f"SELECT DISTINCT external_id FROM {db}.events WHERE external_id != {{p:String}}", p=PSEUDONYM
    )
    assert sorted(r["external_id"] for r in others) == ["bob", "dan", "zed"]

    # A crash before the commit delivers the erasure again: nothing more changes.
    parts = rows(client, f"SELECT count() AS n FROM {db}.events")[0]["n"]
    writer.write(erase_batch(1))
    assert rows(client, f"SELECT count() AS n FROM {db}.events")[0]["n"] == parts
    assert usage(client, db, room) == after
    assert rows(client, f"SHOW TABLES FROM {db} LIKE 'erasure%'") == []  # the subject's Set table is gone


def test_events_enriched_before_the_erasure_are_scrubbed_on_their_way_in(engine: tuple[Client, str]) -> None:  # noqa: F811
    client, db = engine
    writer = ClickHouseWriter(client, db)
    writer.write(erase_batch(0))
    room = f"/acme-{uuid.uuid4()}"
    stale = named(meeting(room))  # enriched by an enrich that had not read the erasure yet

    batch = Batch(started=0.0, events=records(stale, first_offset=10))
    for r in batch.events:
        batch.track(r)
    writer.write(batch)
    derive(client, db)

    assert mentions(client, db, NAME) == {}
    assert rows(client, f"SELECT count() AS n FROM {db}.connections WHERE external_id = {{p:String}}", p=PSEUDONYM)
    assert rows(client, f"SELECT count() AS n FROM {db}.events WHERE external_id = 'ada'")[0]["n"] == 0


def test_an_id_taken_from_metadata_is_erased_as_user_key_and_in_every_metadata_value(
    engine: tuple[Client, str],  # noqa: F811
) -> None:
    """USER_ID_SOURCE=metadata:userId: Ada's id is her user key and a metadata value, and Bob's metadata
    names her as his inviter. Her id goes from every column (her name with it); Bob keeps his own."""
    client, db = engine
    room = f"/acme-{uuid.uuid4()}"
    meta_id = "ada-7f3c9e"
    docs = meeting(room)
    for doc in docs:
        if doc["participant_id"] == "p-ada":
            doc.update(
                external_id=None,
                user_id=None,
                user_key=meta_id,
                user_source="metadata:userId",
                display_name=NAME,
                metadata={"userId": meta_id, "plan": "pro"},
                metadata_raw=f'{{"userId":"{meta_id}","plan":"pro"}}',
            )
        elif doc["participant_id"] == "p-bob":
            doc.update(metadata={"invitedBy": meta_id}, metadata_raw=f"invitedBy={meta_id}", display_name="Bob B")
    write(client, db, records(docs))
    before = usage(client, db, room)
    assert mentions(client, db, meta_id) and mentions(client, db, NAME)

    record = Erasure(erasure.subject(meta_id), PSEUDONYM)
    dim = Record("dimensions", 0, 1, record.key.encode(), orjson.dumps(record.to_doc()))
    batch = Batch(started=0.0, dimensions=[dim])
    batch.track(dim)
    ClickHouseWriter(client, db).write(batch)
    derive(client, db)

    assert mentions(client, db, meta_id) == {}
    assert mentions(client, db, NAME) == {}
    assert without_names(usage(client, db, room)) == without_names(before)
    people = rows(
        client,
        f"SELECT DISTINCT participant_id, user_key, display_name, metadata, metadata_raw, user_resolution "
        f"FROM {db}.events WHERE participant_id IN ('p-ada', 'p-bob') ORDER BY participant_id",
    )
    assert people == [
        {
            "participant_id": "p-ada",
            "user_key": PSEUDONYM,
            "display_name": None,
            "metadata": {"userId": PSEUDONYM, "plan": "pro"},
            "metadata_raw": None,
            "user_resolution": "erased",
        },
        {
            "participant_id": "p-bob",
            "user_key": "bob",
            "display_name": "Bob B",
            "metadata": {"invitedBy": PSEUDONYM},
            "metadata_raw": None,
            "user_resolution": "external_id",
        },
    ]
