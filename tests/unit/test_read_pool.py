"""Where read queries run and what a slow or crowded store answers, over real HTTP with fake runners."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.runner import build_app
from sink.read import readapi
from tests.support import wait_for

Runner = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


class _Stub:
    name = "stub"

    def __init__(self, run: Runner, pool: readapi.ReadPool) -> None:
        self._routes = readapi.routes(run, "whereby", pool=pool)

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


@contextlib.asynccontextmanager
async def serve(run: Runner, pool: readapi.ReadPool) -> AsyncIterator[str]:
    async with TestServer(build_app(_Stub(run, pool)), host="127.0.0.1") as srv:  # type: ignore[arg-type]
        yield str(srv.make_url(""))


@pytest.fixture
def pool() -> Any:
    pool = readapi.ReadPool(threads=2)
    yield pool
    pool.close()


async def test_queries_run_in_the_read_pool_never_in_the_default_executor(pool: readapi.ReadPool) -> None:
    threads: list[str] = []

    def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        threads.append(threading.current_thread().name)
        return []

    async with serve(run, pool) as url, aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(url + "/usage/customers") as r:
                assert r.status == 200
    assert threads and all(name.startswith("read-query") for name in threads), threads


class TimeoutExceeded(Exception):
    """What clickhouse-connect raises when max_execution_time stopped a query."""

    code = readapi.TIMEOUT_EXCEEDED


async def test_a_query_stopped_by_the_time_limit_answers_503_with_json(pool: readapi.ReadPool) -> None:
    def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        raise TimeoutExceeded("Code: 159. Timeout exceeded: elapsed 30.0 seconds")

    async with serve(run, pool) as url, aiohttp.ClientSession() as http, http.get(url + "/usage/customers") as r:
        assert r.status == 503
        assert "READ_QUERY_TIMEOUT_S" in (await r.json())["error"]


async def test_past_the_queue_requests_get_503_instead_of_waiting(pool: readapi.ReadPool) -> None:
    release = threading.Event()

    def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        release.wait(30)
        return []

    limit = 2 * (1 + readapi.QUEUED_PER_THREAD)  # two threads and their queue
    async with serve(run, pool) as url, aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def get() -> int:
            async with http.get(url + "/usage/customers") as r:
                await r.read()
                return r.status

        held = [asyncio.create_task(get()) for _ in range(limit)]
        await wait_for(lambda: pool.pending >= limit, interval_s=0.01)  # all running or queued
        assert await get() == 503
        release.set()
        assert await asyncio.gather(*held) == [200] * limit
