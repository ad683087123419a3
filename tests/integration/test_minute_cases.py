"""The minute cases (`tests/minute_cases.py`) on the real engine: webhook bodies through real enrichment,
inserted by the sink's writer, derived by the sink's deriver, read back through the BI views.

Each case runs twice: delivered once in order, and every event three times in a shuffled order, in
small batches with a derivation after each (as the running sink does), so the incremental path sees
the case arrive piece by piece, out of order, with duplicates. Both must give the expected numbers.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from enrich.enricher import enrich
from pipeline import contract
from sink import store
from sink.batch import Batch, Record
from sink.writer import ClickHouseWriter
from tests import minute_cases
from tests.integration.test_sink_model import derive
from tests.minute_cases import CASES, Case
from tests.unit.test_minute_model import table

pytestmark = pytest.mark.integration

ALL_TIME = {"low": "1970-01-01 00:00:00", "high": "2299-12-31 00:00:00"}


@pytest.fixture(scope="module")
def client(clickhouse_url: str) -> Iterator[Client]:
    c = store.connect(clickhouse_url)
    try:
        yield c
    finally:
        c.close()


def enriched_records(case: Case, copies: int, seed: int) -> list[Record]:
    dims = table()
    docs = case.events * copies
    random.Random(seed).shuffle(docs) if copies > 1 else None
    out = []
    for offset, doc in enumerate(docs):
        headers = {contract.HEADER_EVENT_SOURCE: contract.SOURCE_INSIGHTS} if doc["id"] in case.synthesized else {}
        value = orjson.dumps(enrich(orjson.dumps(doc), headers, dims, now_ms=contract.now_ms()))
        out.append(Record("enriched", 0, offset, doc["data"]["roomName"].encode(), value))
    return out


def deliver(client: Client, db: str, records: list[Record], batch_rows: int) -> None:
    for start in range(0, len(records), batch_rows):
        chunk = records[start : start + batch_rows]
        batch = Batch(started=0.0, events=chunk)
        for r in chunk:
            batch.track(r)
        outcome = ClickHouseWriter(client, db).write(batch)
        assert outcome.rejected == []
        derive(client, db)


def rows(client: Client, sql: str, **params: Any) -> list[dict[str, Any]]:
    return store.query_dicts(client, sql, params)


def ms(when: float | datetime | None) -> datetime | None:
    return None if when is None else minute_cases.at(when).replace(tzinfo=None)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("delivery", ["once", "three times shuffled"])
def test_each_case_on_the_real_engine(client: Client, case: Case, delivery: str) -> None:
    db = f"test_{uuid.uuid4().hex[:10]}"
    store.migrate(client, db)
    try:
        if delivery == "once":
            deliver(client, db, enriched_records(case, 1, 0), batch_rows=1000)
        else:
            deliver(client, db, enriched_records(case, 3, 11), batch_rows=4)
        check(client, db, case)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")


def check(client: Client, db: str, case: Case) -> None:
    connections = {
        (r["participant_id"], r["joined_at"]): (r["minutes"], r["end_source"])
        for r in rows(client, f"SELECT participant_id, joined_at, minutes, end_source FROM {db}.connections")
    }
    assert connections == {(pid, ms(when)): value for (pid, when), value in case.connections.items()}
    assert len(rows(client, f"SELECT 1 FROM {db}.connections")) == len(case.connections)  # none twice

    customers = {
        r["customer_id"]: r
        for r in rows(
            client,
            f"SELECT * FROM {db}.usage_by_customer_period(from = toDateTime64({{low:String}}, 3, 'UTC'), "
            "to = toDateTime64({high:String}, 3, 'UTC'))",
            **ALL_TIME,
        )
    }
    assert {k: r["participant_minutes"] for k, r in customers.items()} == case.customers
    # The all-time view agrees with the period view over all time.
    by_day: dict[str | None, int] = {}
    for r in rows(client, f"SELECT customer_id, participant_minutes FROM {db}.usage_by_customer_day"):
        by_day[r["customer_id"]] = by_day.get(r["customer_id"], 0) + r["participant_minutes"]
    assert by_day == case.customers

    if case.users:
        users = rows(client, f"SELECT customer_id, external_id, participant_minutes FROM {db}.usage_by_user_day")
        per_user: dict[tuple[str | None, str | None], int] = {}
        for r in users:
            key = (r["customer_id"], r["external_id"])
            per_user[key] = per_user.get(key, 0) + r["participant_minutes"]
        assert {k: v for k, v in per_user.items() if v or k in case.users} == case.users

    check_unique_participants(client, db)
    totals = {
        name: sum(r[name] for r in customers.values())
        for name in (
            "unique_participants",
            "recorder_minutes",
            "assistant_minutes",
            "captioner_minutes",
            "open_connections",
            "incomplete_connections",
            "estimated_connections",
            "sessions",
        )
    }
    for name, value in case.other.items():
        if name in totals:
            assert totals[name] == value, name
        elif name == "unique_participant_days":
            [found] = rows(client, f"SELECT sum(unique_participants) AS n FROM {db}.usage_by_customer_day")
            assert found["n"] == value, name
        elif name == "s1_participant_minutes":
            [s1] = rows(client, f"SELECT participant_minutes FROM {db}.room_sessions WHERE room_session_id = 's1'")
            assert s1["participant_minutes"] == value
        elif name in ("january_minutes", "february_minutes"):
            low, high = ("2026-01-01", "2026-02-01") if name == "january_minutes" else ("2026-02-01", "2026-03-01")
            found = rows(
                client,
                f"SELECT sum(participant_minutes) AS m FROM {db}.usage_by_customer_period("
                "from = toDateTime64({low:String}, 3, 'UTC'), to = toDateTime64({high:String}, 3, 'UTC'))",
                low=low,
                high=high,
            )
            assert int(found[0]["m"] or 0) == value, name
        else:
            raise AssertionError(f"unknown expectation {name}")


def check_unique_participants(client: Client, db: str) -> None:
    """§9: the views count distinct participants from each connection's previous anchor; a distinct count
    over the connections themselves is the oracle, per customer over all time and over a range that
    starts mid-case, per customer and day, and per room."""
    human = "uniqExactIf(participant_id, role_class = 'human')"
    period = "from = toDateTime64({low:String}, 3, 'UTC'), to = toDateTime64({high:String}, 3, 'UTC')"
    for low in (ALL_TIME["low"], minute_cases.iso(minute_cases.at(20))[:19].replace("T", " ")):
        bounds = {"low": low, "high": ALL_TIME["high"]}
        where = "anchor_at >= toDateTime64({low:String}, 3, 'UTC')"
        oracle = {
            r["customer_id"]: r["n"]
            for r in rows(
                client,
                f"SELECT customer_id, {human} AS n FROM {db}.connections WHERE {where} GROUP BY customer_id",
                **bounds,
            )
        }
        views = {
            r["customer_id"]: r["unique_participants"]
            for r in rows(client, f"SELECT * FROM {db}.usage_by_customer_period({period})", **bounds)
            if r["participant_minutes"] or r["unique_participants"] or r["customer_id"] in oracle
        }
        assert views == {k: v for k, v in oracle.items()}, low
    by_day = rows(
        client,
        f"SELECT toDate(anchor_at) AS day, customer_id, {human} AS n FROM {db}.connections GROUP BY day, customer_id",
    )
    views_by_day = rows(client, f"SELECT day, customer_id, unique_participants AS n FROM {db}.usage_by_customer_day")
    assert sorted(map(repr, views_by_day)) == sorted(map(repr, by_day))
    by_room = rows(client, f"SELECT room_name, {human} AS n FROM {db}.connections GROUP BY room_name")
    views_by_room = rows(client, f"SELECT room_name, unique_participants AS n FROM {db}.rooms")
    assert sorted(map(repr, views_by_room)) == sorted(map(repr, by_room))
