"""`whereby-pipeline serve-api`: the read API and page on their own, against a ClickHouse server.

In the embedded default the sink serves them (only one process may open a chdb directory), so this
service refuses `chdb://` with a message saying so. It reads only: it never migrates the schema, and
at start it checks that the sink's views exist, so a wrong CLICKHOUSE_DATABASE fails at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from aiohttp import web
from clickhouse_connect.driver.client import Client

from pipeline.cli import run_service
from pipeline.settings import ConfigError, SinkSettings
from pipeline.stage import Stage
from sink import store
from sink.read import readapi


class ReadApiService(Stage[SinkSettings]):
    """Serves :mod:`sink.read.readapi` over its own ClickHouse client; no background work of its own."""

    name = "read-api"

    def __init__(self, settings: SinkSettings, host: str) -> None:
        super().__init__(settings)
        self.host = host
        self.client: Client | None = None
        self._pool = readapi.ReadPool(settings.read_query_threads)

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        self.closing(stack, "read pool", lambda: asyncio.to_thread(self._pool.close))
        readapi.check_access(self.host, self.settings.read_api_token, host_variable="--host")
        if self.settings.clickhouse_url.startswith("chdb://"):
            raise ConfigError(
                "serve-api needs a ClickHouse server (CLICKHOUSE_URL=http(s)://...); with the embedded engine "
                "the sink serves the read API on SINK_PORT"
            )
        self.client = client = await asyncio.to_thread(
            store.connect, self.settings.clickhouse_url, self.settings.clickhouse_access
        )
        self.closing(stack, "ClickHouse client", lambda: asyncio.to_thread(client.close))
        db = self.settings.clickhouse_database
        try:
            await asyncio.to_thread(client.query, f"SELECT 1 FROM {db}.rooms LIMIT 0")
        except Exception:
            raise ConfigError(
                f"no usage views in database {db!r}: check CLICKHOUSE_DATABASE, or start the sink once "
                "(it creates the schema)"
            ) from None

    def routes(self) -> list[web.RouteDef]:
        return readapi.routes(
            readapi.client_runner(lambda: self.client, timeout_s=self.settings.read_query_timeout_s),
            self.settings.clickhouse_database,
            token=self.settings.read_api_token,
            pool=self._pool,
            stale_after_s=self.settings.stale_connection_s,
        )


def _serve(args: argparse.Namespace) -> int:
    return run_service(
        lambda s: ReadApiService(s, args.host or s.sink_host),
        lambda s: (args.host or s.sink_host, args.port if args.port is not None else s.sink_port),
        settings_class=SinkSettings,
    )


def register(sub: Any) -> None:
    """Add `serve-api` to the `whereby-pipeline` parser."""
    serve = sub.add_parser(
        "serve-api", help="serve the read API and usage page against a ClickHouse server (not needed with chdb)"
    )
    serve.add_argument("--host", default="", help="address to listen on (default: SINK_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default: SINK_PORT, 8082)")
    serve.set_defaults(handler=_serve)
