"""Read queries on the real engine run read-only and time-limited, and leave the writer's session as it was."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.client import Client

from sink import store
from sink.errors import error_code
from sink.read import readapi
from tests.integration.test_sink_model import engine, meeting, records, rows, write  # noqa: F401  (engine: fixture)

pytestmark = pytest.mark.integration


def test_read_queries_are_read_only_and_bounded_and_the_session_stays_writable(
    engine: tuple[Client, str],  # noqa: F811
) -> None:
    client, db = engine
    run = readapi.client_runner(lambda: client, timeout_s=7)

    [seen] = run(
        "SELECT getSetting('readonly') AS ro, getSetting('max_execution_time') AS limit_s, {n:Int64} AS n", {"n": 5}
    )

    assert (int(seen["ro"]), float(seen["limit_s"]), seen["n"]) == (1, 7.0, 5)  # parameters still bind
    # The writer shares this client (and, embedded, this session): nothing carried over to it.
    assert rows(client, "SELECT getSetting('readonly') AS ro")[0]["ro"] == 0
    assert write(client, db, records(meeting("/acme-after-a-read"))).inserted > 0


def test_a_query_running_longer_than_the_limit_is_stopped_by_the_server(engine: tuple[Client, str]) -> None:  # noqa: F811
    client, _ = engine
    run = readapi.client_runner(lambda: client, timeout_s=1)

    with pytest.raises(Exception) as stopped:
        run("SELECT sum(cityHash64(number)) AS s FROM numbers(100000000000)", {})

    assert error_code(stopped.value) == readapi.TIMEOUT_EXCEEDED


def test_the_report_reads_with_the_same_settings() -> None:
    assert store.read_settings(30) == {"readonly": 1, "max_execution_time": 30}
