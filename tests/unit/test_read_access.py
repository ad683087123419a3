"""Who may read: loopback by default, a bearer token beyond it; over real HTTP with a fake query runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.runner import build_app
from pipeline.settings import ConfigError, Settings
from sink.read import readapi
from sink.read.readservice import ReadApiService

TOKEN = "t0k3n-for-tests-0123456789"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    readapi.check_access(host, "")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "sink.internal"])
def test_listening_beyond_loopback_without_a_token_is_refused_in_one_line(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        readapi.check_access(host, "")
    message = str(caught.value)
    assert "\n" not in message and "READ_API_TOKEN" in message and f"SINK_HOST={host}" in message
    readapi.check_access(host, TOKEN)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        readapi.check_access("0.0.0.0", "secret")


async def test_serve_api_refuses_the_embedded_engine_and_an_exposed_host_without_token() -> None:
    exposed = ReadApiService(Settings.from_env({"CLICKHOUSE_URL": "http://127.0.0.1:9"}), "0.0.0.0")
    with pytest.raises(ConfigError, match=r"--host=0\.0\.0\.0 exposes the read API"):
        await exposed.start()
    embedded = ReadApiService(Settings.from_env({"CLICKHOUSE_URL": "chdb:///tmp/x"}), "127.0.0.1")
    with pytest.raises(ConfigError, match="serve-api needs a ClickHouse server"):
        await embedded.start()


class _Stub:
    """A service whose routes are the read API over a canned runner (no engine needed here)."""

    name = "stub"

    def __init__(self, run: readapi.QueryRunner, token: str) -> None:
        self._routes = readapi.routes(run, "whereby", token=token)

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


def _rows(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"customer_id": None, "customer_name": None, "participant_minutes": 3}]


def _unavailable(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    raise readapi.StoreUnavailable


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async with TestServer(build_app(_Stub(_rows, TOKEN)), host="127.0.0.1") as srv:  # type: ignore[arg-type]
        yield str(srv.make_url(""))


async def test_data_needs_the_bearer_token_and_health_stays_open(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server + "/usage/customers") as r:
            assert r.status == 401
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert "error" in await r.json()
        async with http.get(server + "/usage/customers", headers={"Authorization": "Bearer wrong-token"}) as r:
            assert r.status == 401
        async with http.get(server + "/usage/customers", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200
            assert await r.json() == {
                "results": [{"customer_id": None, "customer_name": None, "participant_minutes": 3}]
            }
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(server + path) as r:
                assert r.status == 200, path
        async with http.get(server + "/metrics") as r:
            assert (
                'whereby_read_api_requests_total{endpoint="/usage/customers",outcome="unauthorized"}' in await r.text()
            )


async def test_bad_parameters_get_400_with_a_json_error(server: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = {
        "/usage/customers?from=soon": "from must be an ISO date",
        "/insights/rooms?limit=0": "limit must be a whole number from 1 to 100",
        "/insights/rooms?limit=5&limit=6": "given more than once: limit",
        "/insights/participants": "one of roomSessionId, externalId, userId or userKey is required",
        "/insights/rooms?cursor=garbage": "cursor is not valid",
        "/usage/users?nope=1": "unknown parameter(s): nope",
    }
    async with aiohttp.ClientSession(headers=auth) as http:
        for path, message in cases.items():
            async with http.get(server + path) as r:
                assert r.status == 400, path
                assert r.content_type == "application/json"
                assert message in (await r.json())["error"], path


async def test_the_page_is_served_without_token_and_carries_no_secret(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path, kind in (
            ("/", "text/html"),
            ("/static/app.js", "text/javascript"),
            ("/static/style.css", "text/css"),
        ):
            async with http.get(server + path) as r:
                assert r.status == 200 and r.content_type == kind, path
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
                body = await r.text()
                assert TOKEN not in body
                assert "http://" not in body.replace("http://www.w3.org/2000/svg", "")  # nothing from elsewhere
                assert "https://" not in body


async def test_a_closed_store_answers_503() -> None:
    async with (
        TestServer(build_app(_Stub(_unavailable, "")), host="127.0.0.1") as srv,  # type: ignore[arg-type]
        aiohttp.ClientSession() as http,
        http.get(srv.make_url("/usage/customers")) as r,
    ):
        assert r.status == 503
        assert "retry" in (await r.json())["error"]
