"""ClickHouse's HTTP interface on the embedded store, driven by real clients over real HTTP.

clickhouse-connect's HTTP client (`get_client(host, port, …)`), curl, and the exact requests that
Grafana's ClickHouse data source sends through clickhouse-go (replayed byte for byte, see
`GRAFANA_*` below) all talk to :class:`sink.read.sqlhttp.SqlHttpServer` on a free port, in front of the
real engine holding the hand-computed meeting of `test_sink_model`. The read API is served over the
same data, so "the same numbers" is checked against its answers, not against constants.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from harness.ports import free_port
from pipeline.runner import build_app
from sink.read import native, readapi, sqlhttp
from sink.read.sqlengine import EmbeddedSql, Limits
from tests.integration.test_read_api import ACME, STRANGER, seeded  # noqa: F401  (seeded: fixture)
from tests.integration.test_sink_model import engine  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

TOKEN = "sql-interface-test-token-0123456789"
TIMEOUT_S = 1.5
WIDE = {"from": "2000-01-01", "to": "2100-01-01"}


@dataclass
class Sql:
    """The running interface and, over the same data, the read API."""

    port: int
    db: str
    api: str
    server: sqlhttp.SqlHttpServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def client(self, **kwargs: Any) -> Client:
        return clickhouse_connect.get_client(
            host="127.0.0.1", port=self.port, username="grafana", password=TOKEN, **kwargs
        )


class _Reader:
    name = "read"

    def __init__(self, client: Client, db: str) -> None:
        self._routes = readapi.routes(readapi.client_runner(lambda: client), db)

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


def _config(**overrides: Any) -> sqlhttp.Config:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "token": TOKEN,
        "timeout_s": TIMEOUT_S,
        "max_concurrent": 2,
        "max_result_bytes": 4 * 1024 * 1024,
        "max_query_bytes": 64 * 1024,
        "queue_wait_s": 0.5,
        "body_timeout_s": 1.0,
    }
    values.update(overrides)
    return sqlhttp.Config(**values)


async def _serve(clickhouse_url: str, db: str, config: sqlhttp.Config) -> sqlhttp.SqlHttpServer:
    if not clickhouse_url.startswith("chdb://"):
        pytest.skip("the SQL interface serves the embedded engine only")
    limits = Limits(timeout_s=config.timeout_s, max_result_bytes=config.max_result_bytes)
    server = sqlhttp.SqlHttpServer(EmbeddedSql(clickhouse_url.removeprefix("chdb://"), db, limits), config)
    await server.start()
    return server


@pytest.fixture
async def sql(seeded: tuple[Client, str], clickhouse_url: str) -> AsyncIterator[Sql]:  # noqa: F811
    client, db = seeded
    server = await _serve(clickhouse_url, db, _config())
    api = TestServer(build_app(_Reader(client, db)), host="127.0.0.1")  # type: ignore[arg-type]
    async with api:
        try:
            yield Sql(server.port, db, str(api.make_url("")), server)
        finally:
            await server.stop()


async def _api(sql: Sql, path: str, **params: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(sql.api + path, params=params) as response:
        assert response.status == 200, await response.text()
        rows: list[dict[str, Any]] = (await response.json())["results"]
        return rows


async def _post(
    sql: Sql, body: bytes | str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    auth = {
        "Authorization": "Basic " + base64.b64encode(f"grafana:{TOKEN}".encode()).decode(),
        "Accept-Encoding": "identity",  # aiohttp would ask for compression by default
    }
    async with (
        aiohttp.ClientSession(auto_decompress=False) as http,
        http.post(sql.url, params=params, data=body, headers={**auth, **(headers or {})}) as response,
    ):
        return response.status, dict(response.headers), await response.read()


# ------------------------------------------------------------------------------- clickhouse-connect


async def test_clickhouse_connect_reads_the_views_with_the_numbers_of_the_read_api(sql: Sql) -> None:
    def read() -> dict[str, Any]:
        client = sql.client(database=sql.db)
        assert client.server_version and client.protocol_version  # the version probe and Native with block info
        by_day = client.query(
            "SELECT customer_id, sum(participant_minutes) AS participant_minutes, sum(recorder_minutes) AS "
            "recorder_minutes, sum(sessions) AS sessions FROM usage_by_customer_day GROUP BY customer_id"
        ).named_results()
        period = client.query(
            "SELECT customer_id, participant_minutes, recorder_minutes, sessions, unique_users "
            "FROM usage_by_customer_period(from = {f:DateTime64(3, 'UTC')}, to = {t:DateTime64(3, 'UTC')})",
            parameters={"f": "2000-01-01 00:00:00", "t": "2100-01-01 00:00:00"},
        ).named_results()
        rooms = client.query("SELECT room_name, participant_minutes, recorder_minutes FROM rooms").named_results()
        frame = client.query_df("SELECT room_name, participant_minutes FROM rooms ORDER BY room_name")
        client.close()
        return {"by_day": list(by_day), "period": list(period), "rooms": list(rooms), "frame": frame}

    got = await asyncio.to_thread(read)
    customers = await _api(sql, "/usage/customers", **WIDE)
    rooms = await _api(sql, "/usage/rooms", **WIDE)
    used = {r["customer_id"]: r for r in customers if r["participant_minutes"] or r["sessions"]}
    assert used and len(used) == 2  # Acme and the unresolved bucket

    keys = ("participant_minutes", "recorder_minutes", "sessions")
    assert {r["customer_id"]: tuple(r[k] for k in keys) for r in got["by_day"]} == {
        c: tuple(r[k] for k in keys) for c, r in used.items()
    }
    keys = (*keys, "unique_users")
    assert {r["customer_id"]: tuple(r[k] for k in keys) for r in got["period"]} == {
        c: tuple(r[k] for k in keys) for c, r in used.items()
    }
    assert {r["room_name"]: (r["participant_minutes"], r["recorder_minutes"]) for r in got["rooms"]} == {
        r["room_name"]: (r["participant_minutes"], r["recorder_minutes"]) for r in rooms
    }
    assert list(got["frame"]["room_name"]) == sorted([ACME, STRANGER])


async def test_writes_ddl_and_setting_changes_are_refused_with_clickhouse_s_own_error(sql: Sql) -> None:
    def attempt(statement: str) -> DatabaseError:
        client = sql.client(database=sql.db)
        try:
            with pytest.raises(DatabaseError) as caught:
                client.command(statement)
            return caught.value
        finally:
            client.close()

    for statement in (
        "INSERT INTO customers (customer_id, name) VALUES ('c-evil', 'Evil')",
        "DROP TABLE events",
        "CREATE TABLE x (a UInt8) ENGINE = Memory",
        "ALTER TABLE events DELETE WHERE 1",
    ):
        error = await asyncio.to_thread(attempt, statement)
        assert error.code == 164, statement
        assert "DB::Exception: default: Cannot execute query in readonly mode. (READONLY)" in str(error), statement

    status, headers, body = await _post(sql, "SELECT 1", params={"max_threads": "1"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert body.startswith(b"Code: 164. DB::Exception: Cannot modify 'max_threads' setting in readonly mode.")
    status, _, body = await _post(sql, "SET max_memory_usage = 1")
    assert status == 500 and b"(READONLY)" in body
    status, _, body = await _post(sql, "SELECT 1", params={"readonly": "1"})  # an unchanged value is no change
    assert (status, body) == (200, b"1\n")

    # Still there, unchanged.
    rows = await _api(sql, "/usage/customers", **WIDE)
    assert "c-evil" not in {r["customer_id"] for r in rows}


async def test_statements_that_pass_readonly_but_change_shared_state_are_refused(sql: Sql) -> None:
    for statement, code, text in [
        ("KILL QUERY WHERE 1", 497, "necessary to have the grant KILL QUERY ON *.*"),
        ("SYSTEM STOP MERGES", 497, "necessary to have the grant SYSTEM ON *.*"),
        ("SELECT 1 INTO OUTFILE '/tmp/sqlhttp-test-outfile'", 358, "INTO OUTFILE is not allowed"),
        ("SELECT 1; SELECT 2", 62, "Multi-statements are not allowed"),
    ]:
        status, headers, body = await _post(sql, statement)
        assert headers["X-ClickHouse-Exception-Code"] == str(code), (statement, body)
        assert text in body.decode(), statement
        assert "formatQuerySingleLine" not in body.decode()  # the check's own query never shows
        assert status == {497: 403, 358: 500, 62: 400}[code]


async def test_a_query_over_the_time_limit_is_cancelled(sql: Sql) -> None:
    started = time.monotonic()
    status, headers, body = await _post(sql, "SELECT count() FROM numbers(100000000000)")
    assert time.monotonic() - started < TIMEOUT_S + sqlhttp.GRACE_S + 2
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (408, "159")
    assert body.startswith(b"Code: 159. DB::Exception: Timeout exceeded")

    # A client may lower the limit (Grafana sends max_execution_time), never raise it.
    status, _, _ = await _post(sql, "SELECT count() FROM numbers(100000000000)", params={"max_execution_time": "600"})
    assert status == 408
    status, _, body = await _post(sql, "SELECT getSetting('max_execution_time')", params={"max_execution_time": "1"})
    assert (status, body) == (200, b"1\n")


async def test_a_wrong_password_gets_clickhouse_s_answer(sql: Sql) -> None:
    def connect(username: str, password: str) -> DatabaseError:
        with pytest.raises(DatabaseError) as caught:
            clickhouse_connect.get_client(host="127.0.0.1", port=sql.port, username=username, password=password)
        return caught.value

    error = await asyncio.to_thread(connect, "grafana", "not-the-token")
    assert error.code == 516
    assert "grafana: Authentication failed: password is incorrect, or there is no user with such name." in str(error)

    async with aiohttp.ClientSession() as http:
        async with http.get(sql.url, params={"query": "SELECT 1", "user": "bi", "password": "nope"}) as response:
            assert (response.status, response.headers["X-ClickHouse-Exception-Code"]) == (403, "516")
            assert "(AUTHENTICATION_FAILED)" in await response.text()
        async with http.get(sql.url, params={"query": "SELECT 1"}) as response:  # `default`, no password
            assert (response.status, response.headers["X-ClickHouse-Exception-Code"]) == (401, "194")
            assert response.headers["WWW-Authenticate"] == 'Basic realm="ClickHouse server HTTP API"'
        headers = {"X-ClickHouse-User": "bi", "X-ClickHouse-Key": TOKEN, "Authorization": "Basic Yjpj"}
        async with http.get(sql.url, params={"query": "SELECT 1"}, headers=headers) as response:
            assert response.status == 403
            assert "not allowed to use X-ClickHouse HTTP headers and Authorization HTTP header" in await response.text()
        async with http.get(sql.url, params={"query": "SELECT 1"}, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 403 and "'Bearer' HTTP Authorization scheme is not supported" in await r.text()
        # Each accepted way of giving the password.
        for params, headers in [
            ({"user": "bi", "password": TOKEN}, {}),
            ({}, {"X-ClickHouse-User": "bi", "X-ClickHouse-Key": TOKEN}),
            ({}, {"Authorization": "Basic " + base64.b64encode(f"default:{TOKEN}".encode()).decode()}),
        ]:
            async with http.get(sql.url, params={"query": "SELECT 1", **params}, headers=headers) as response:
                assert (response.status, await response.text()) == (200, "1\n")


async def test_settings_database_formats_parameters_and_compression_as_clickhouse_connect_uses_them(sql: Sql) -> None:
    def use() -> None:
        client = sql.client()
        assert client.query("SELECT currentDatabase()").result_rows == [(sql.db,)]  # the pipeline's database
        other = sql.client(database="system")
        assert other.query("SELECT currentDatabase()").result_rows == [("system",)]
        # Server-side binding of many and large values: clickhouse-connect switches to a multipart form.
        many = sql.client(database=sql.db, form_encode_query_params=True)
        value = "x" * 20_000
        assert many.query("SELECT length({v:String}) AS n", parameters={"v": value}).result_rows == [(20_000,)]
        raw = client.raw_query("SELECT number FROM numbers(3) FORMAT JSONEachRow")
        assert [json.loads(line)["number"] for line in raw.splitlines()] == [0, 1, 2]
        for compress in ("lz4", "zstd", "gzip"):
            c = sql.client(compress=compress)
            assert c.query("SELECT sum(number) FROM numbers(10000)").result_rows == [(49995000,)]
        with pytest.raises(DatabaseError) as caught:
            client.query("SELECT * FROM no_such_table")
        assert caught.value.code == 60

    await asyncio.to_thread(use)

    status, headers, body = await _post(sql, "SELECT 1 AS a", headers={"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"], gzip.decompress(body)) == (200, "gzip", b"1\n")
    status, headers, body = await _post(sql, "SELECT {a:Array(UInt8)} AS a", params={"param_a": "[1,2]"})
    assert (status, body) == (200, b"[1,2]\n")
    status, headers, body = await _post(sql, "SELECT 1 AS a", params={"default_format": "JSONCompact"})
    assert headers["X-ClickHouse-Format"] == "JSONCompact" and json.loads(body)["data"] == [[1]]
    status, headers, body = await _post(sql, "SELECT 1 AS a FORMAT CSV", params={"default_format": "JSON"})
    assert (headers["X-ClickHouse-Format"], body) == ("CSV", b"1\n")
    summary = json.loads(headers["X-ClickHouse-Summary"])
    assert set(summary) >= {"read_rows", "read_bytes", "written_rows", "elapsed_ns"}
    assert headers["X-ClickHouse-Timezone"] and headers["X-ClickHouse-Query-Id"]


# ------------------------------------------------------------------------------------------- curl


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_get_and_post_work_unchanged(sql: Sql) -> None:
    async def curl(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sS", "-u", f"bi:{TOKEN}", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
        return out.decode()

    assert await curl(f"{sql.url}?query=SELECT%201") == "1\n"
    assert await curl(sql.url, "--data-binary", "SELECT 2") == "2\n"
    got = await curl(
        sql.url, "--get", "--data-urlencode", "query=SELECT 3 + {x:UInt8}", "--data-urlencode", "param_x=4"
    )
    assert got == "7\n"
    assert await curl(f"{sql.url}?query=SELECT%20", "--data-binary", "5") == "5\n"  # query= joined with the body
    rows = await curl(f"{sql.url}?database={sql.db}", "--data-binary", "SELECT room_name FROM rooms ORDER BY 1")
    assert rows.splitlines() == sorted([ACME, STRANGER])
    assert await curl(f"http://127.0.0.1:{sql.port}/ping") == "Ok.\n"


# ------------------------------------------------------------------------------------ hostile input


async def test_hostile_clients_get_a_handled_4xx_and_the_interface_keeps_serving(sql: Sql) -> None:
    huge = "SELECT 1 -- " + "x" * 100_000
    status, headers, body = await _post(sql, huge)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (413, "229")

    status, _, body = await _post(sql, bytes(range(256)) * 4)  # not UTF-8
    assert status == 400 and body.startswith(b"Code: 62.")
    status, _, body = await _post(sql, "\x01\x02 garbage ((( SELECT")
    assert status == 400 and b"Syntax error" in body
    status, _, _ = await _post(sql, b"\x1f\x8b not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 500
    bomb = gzip.compress(b"SELECT 1 -- " + b" " * 10_000_000)
    status, headers, _ = await _post(sql, bomb, headers={"Content-Encoding": "gzip"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (413, "229")
    status, _, _ = await _post(sql, "SELECT 1", headers={"Content-Encoding": "snappy-ish"})
    assert status == 501
    status, _, _ = await _post(sql, "")
    assert status == 400

    # A body that never finishes: the interface gives up on it and answers.
    reader, writer = await asyncio.open_connection("127.0.0.1", sql.port)
    auth = base64.b64encode(f"bi:{TOKEN}".encode()).decode()
    writer.write(
        f"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 1000\r\n\r\nSELECT".encode()
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), timeout=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    writer.close()

    # Raw garbage instead of HTTP.
    reader, writer = await asyncio.open_connection("127.0.0.1", sql.port)
    writer.write(b"\x00\xff\x13garbage\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.read(100), timeout=10)).startswith(b"HTTP/1.0 400")
    writer.close()

    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{sql.port}/ping") as response:
        assert (response.status, await response.text()) == (200, "Ok.\n")
    status, _, body = await _post(sql, "SELECT 42")
    assert (status, body) == (200, b"42\n")


async def test_concurrency_is_bounded_and_the_result_size_too(seeded: tuple[Client, str], clickhouse_url: str) -> None:  # noqa: F811
    _, db = seeded
    server = await _serve(clickhouse_url, db, _config(max_concurrent=1, max_result_bytes=100_000))
    sql = Sql(server.port, db, "", server)
    try:
        slow = asyncio.create_task(_post(sql, "SELECT count() FROM numbers(100000000000)"))
        await asyncio.sleep(0.3)
        status, headers, body = await _post(sql, "SELECT 1")
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "202")
        assert b"Too many simultaneous queries. Maximum: 1" in body
        assert (await slow)[0] == 408
        status, headers, _ = await _post(sql, "SELECT number FROM numbers(1000000)")
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "396")
    finally:
        await server.stop()


# --------------------------------------------------------------------- Grafana (clickhouse-go HTTP)

# What grafana-clickhouse-datasource v4 (clickhouse-go v2.47.0, Protocol: HTTP) sends, read from
# clickhouse-go's conn_http.go / conn_http_query.go / context.go and the plugin's pkg/plugin/driver.go:
# POST to the configured path with the SQL as the body, HTTP basic credentials (no TLS), the default
# database, `default_format=Native`, `client_protocol_version=54460`, the data source's query timeout
# plus 5 s as `max_execution_time`, and `Accept-Encoding: gzip` (the plugin picks gzip for HTTP). It
# reads `Native` blocks at the server's revision: block info, then a custom-serialization byte per column.
GRAFANA_PARAMS = {"default_format": "Native", "client_protocol_version": "54460", "max_execution_time": "65"}
GRAFANA_HEADERS = {
    "Accept-Encoding": "gzip",
    "User-Agent": "clickhouse-go/2.47.0 (database/sql; lv:go/1.24.4; os:linux) grafana/12.0.0 "
    "clickhouse-datasource/4.10.1",
}


def _read_native(data: bytes, revision: int) -> list[tuple[str, str, list[Any]]]:
    """A minimal Native reader for the scalar types these requests return (what clickhouse-go does)."""
    pos, columns = 0, []

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string() -> str:
        nonlocal pos
        n = varint()
        pos += n
        return data[pos - n : pos].decode()

    while pos < len(data):
        assert data[pos : pos + 8] == native.BLOCK_INFO
        pos += 8
        ncols, nrows = varint(), varint()
        for _ in range(ncols):
            name, kind = string(), string()
            assert data[pos] == 0  # no custom serialization
            pos += 1
            if kind == "String":
                values: list[Any] = [string() for _ in range(nrows)]
            else:
                width, fmt = {"UInt8": (1, "<B"), "UInt32": (4, "<I"), "UInt64": (8, "<Q")}[kind]
                values = [struct.unpack_from(fmt, data, pos + i * width)[0] for i in range(nrows)]
                pos += width * nrows
            columns.append((name, kind, values))
    return columns


async def _grafana(sql: Sql, query: str, **params: str) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = await _post(
        sql, query, params={"database": sql.db, **GRAFANA_PARAMS, **params}, headers=GRAFANA_HEADERS
    )
    if status == 200 and headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return status, headers, body


async def test_grafana_data_source_requests_get_the_answers_clickhouse_go_reads(sql: Sql) -> None:
    # Connect: the server hello, then the ping and the version check of the data source's health check.
    status, _, body = await _grafana(sql, "SELECT displayName(), version(), revision(), timezone()")
    assert status == 200
    (_, t1, _name), (_, t2, version), (_, t3, revision), (_, t4, zone) = _read_native(body, 54460)
    assert (t1, t2, t3, t4) == ("String", "String", "UInt32", "String")
    assert version[0].count(".") == 3 and revision[0] > 54454 and zone[0]
    status, _, body = await _grafana(sql, "SELECT 1")
    assert status == 200 and [c[0] for c in _read_native(body, 54460)] == ["1"]
    status, _, body = await _grafana(sql, "SELECT version()")
    assert status == 200

    # A panel of the usage dashboard (deploy/grafana/dashboards/usage.json) and the query builder's lists.
    status, _, body = await _grafana(
        sql,
        "SELECT ifNull(customer_name, '(unresolved)') AS customer, toUInt64(sum(participant_minutes)) AS minutes "
        "FROM usage_by_customer_day GROUP BY customer ORDER BY customer",
    )
    assert status == 200, body
    columns = _read_native(body, 54460)
    customers = await _api(sql, "/usage/customers", **WIDE)
    expected = {r["customer_name"] or "(unresolved)": r["participant_minutes"] for r in customers if r["sessions"]}
    assert dict(zip(columns[0][2], columns[1][2], strict=True)) == expected
    status, _, body = await _grafana(sql, "SELECT name FROM system.databases ORDER BY name")
    assert status == 200 and sql.db in _read_native(body, 54460)[0][2]
    status, _, body = await _grafana(sql, f"SELECT name FROM system.tables WHERE database = '{sql.db}'")
    assert status == 200 and "usage_by_customer_day" in _read_native(body, 54460)[0][2]

    # clickhouse-go reads the code from the body of a non-200 answer.
    status, headers, body = await _grafana(sql, "DROP TABLE events")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert body.startswith(b"Code: 164. DB::Exception:")
    # An empty result is an empty body (clickhouse-go returns no rows without reading a block).
    status, _, body = await _grafana(sql, "SELECT 1 WHERE 0")
    assert (status, body) == (200, b"")


# ------------------------------------------------------------------------------------ the service


async def test_the_sink_serves_it_only_for_an_embedded_store_and_not_when_turned_off(clickhouse_url: str) -> None:
    from tests.conftest import make_settings

    settings = make_settings("127.0.0.1:1", clickhouse_url, SQL_PORT="0")
    assert await sqlhttp.start_for(settings) is None
    server = make_settings("127.0.0.1:1", "http://127.0.0.1:1", SQL_PORT=str(free_port()))
    assert await sqlhttp.start_for(server) is None
    exposed = make_settings("127.0.0.1:1", clickhouse_url, SQL_HOST="0.0.0.0", SQL_PORT=str(free_port()))
    with pytest.raises(Exception, match="READ_API_TOKEN"):
        await sqlhttp.start_for(exposed)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


async def test_a_taken_port_fails_at_start_with_what_to_set(clickhouse_url: str, busy_port: int) -> None:
    from pipeline.settings import ConfigError
    from tests.conftest import make_settings

    if not clickhouse_url.startswith("chdb://"):
        pytest.skip("the SQL interface serves the embedded engine only")
    settings = make_settings("127.0.0.1:1", clickhouse_url, SQL_PORT=str(busy_port))
    with pytest.raises(ConfigError, match="SQL_PORT"):
        await sqlhttp.start_for(settings)


def test_native_walk_matches_the_engine_for_the_view_types(seeded: tuple[Client, str], clickhouse_url: str) -> None:  # noqa: F811
    """Every column type of every BI view survives the revision rewrite (inverse: strip what it added)."""
    if not clickhouse_url.startswith("chdb://"):
        pytest.skip("needs the embedded engine")
    import chdb

    _, db = seeded
    conn = chdb.connect(os.path.realpath(clickhouse_url.removeprefix("chdb://")))
    try:
        for view in ("connections", "room_sessions", "rooms", "usage_by_customer_day", "usage_by_user_day"):
            raw = conn.query(f"SELECT * FROM {db}.{view}", "Native").bytes()
            assert native.with_revision(raw, 54405).count(native.BLOCK_INFO) >= 1, view
            upgraded = native.with_revision(raw, 54460)
            assert len(upgraded) > len(raw), view
    finally:
        conn.close()


# --------------------------------------------------------------- clickhouse-go itself, when Go is here

GO_CLIENT = Path(__file__).resolve().parents[1] / "clients" / "clickhouse_go"


@pytest.fixture(scope="module")
def clickhouse_go(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/clients/clickhouse_go built (clickhouse-go v2.47.0, the version Grafana's plugin ships)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed: the replayed Grafana requests above still run")
    binary = tmp_path_factory.mktemp("go") / "clickhousego"
    try:
        built = subprocess.run(
            [go, "build", "-o", str(binary), "."], cwd=GO_CLIENT, capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        pytest.skip("building the clickhouse-go client took over 10 minutes")
    if built.returncode != 0:
        pytest.skip(f"cannot build the clickhouse-go client (module download?): {built.stderr[-500:]}")
    return binary


async def test_clickhouse_go_over_http_as_grafana_configures_it(sql: Sql, clickhouse_go: Path) -> None:
    async def run(query: str, password: str = TOKEN) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            str(clickhouse_go), f"127.0.0.1:{sql.port}", sql.db, "grafana", password, query,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
        doc: dict[str, Any] = json.loads(out or b"{}")
        assert doc, err
        return doc

    doc = await run("SELECT customer_id, sum(participant_minutes) AS m FROM usage_by_customer_day GROUP BY customer_id")
    customers = await _api(sql, "/usage/customers", **WIDE)
    assert {row[0]: row[1] for row in doc["rows"]} == {
        r["customer_id"]: r["participant_minutes"] for r in customers if r["sessions"]
    }
    every_type = await run("SELECT * FROM connections")  # Nullable, LowCardinality-free strings, DateTime64, Bool
    assert "error" not in every_type and len(every_type["rows"]) > 0
    refused = await run("DROP TABLE events")
    assert "Code: 164. DB::Exception" in refused["error"]
    denied = await run("SELECT 1", password="wrong")
    assert "Code: 516" in denied["error"]


async def test_the_usage_dashboard_runs_through_the_embedded_interface_as_grafana_sends_it(sql: Sql) -> None:
    """deploy/grafana/dashboards/usage.json, macros filled in, via the data source's HTTP requests."""
    from tests.unit.test_deploy_grafana import GRAFANA, targets

    fills = {"$__fromTime": "toDateTime('2000-01-01 00:00:00')", "$__toTime": "toDateTime('2100-01-01 00:00:00')",
             "${customer:singlequote}": "'c-acme', 'unresolved'", "${metadata_key:singlequote}": "'plan'",
             "${stale_s}": "21600", "whereby.": f"{sql.db}."}  # fmt: skip
    queries = [t["rawSql"] for _, t in targets("grafana-clickhouse-datasource")]
    usage = json.loads((GRAFANA / "dashboards" / "usage.json").read_text())
    queries += [v["query"] for v in usage["templating"]["list"] if v["type"] == "query"]
    assert queries
    for query in queries:
        for macro, value in fills.items():
            query = query.replace(macro, value)
        status, _, body = await _grafana(sql, query)
        assert status == 200, (query, body[:300])


async def test_the_sink_serves_the_interface_next_to_its_writer_and_stops_it(
    kafka_bootstrap: str, clickhouse_url: str
) -> None:
    """The sink service with its defaults (SQL_PORT set to a free port): clickhouse-connect reads the views
    it migrated while the consumer runs; stopping the sink closes the port."""
    from pipeline import kafka
    from sink.service import SinkService
    from tests.conftest import make_settings
    from tests.support import Running

    if not clickhouse_url.startswith("chdb://"):
        pytest.skip("the SQL interface serves the embedded engine only")
    port = free_port()
    settings = make_settings(kafka_bootstrap, clickhouse_url, SQL_PORT=str(port), SQL_QUERY_TIMEOUT_S="5")
    await kafka.wait_for_broker(settings, timeout_s=60)
    await kafka.ensure_topics(settings)

    def read() -> list[tuple[Any, ...]]:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=port, username="default", password="")
        try:
            rows: list[tuple[Any, ...]] = client.query(
                "SELECT count() FROM usage_by_customer_day UNION ALL SELECT count() FROM rooms"
            ).result_rows
            return rows
        finally:
            client.close()

    async with Running(SinkService(settings)):
        assert await asyncio.to_thread(read) == [(0,), (0,)]  # the sink's own database, empty
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
