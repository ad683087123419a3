"""CLICKHOUSE_USER / CLICKHOUSE_PASSWORD reach the wire when the sink opens a ClickHouse server.

The server here only records the request's credentials and refuses it: what is checked is what the
client sends, so no ClickHouse behaviour is imitated.
"""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp import web

from pipeline.settings import ConfigError, Settings
from sink import store


async def test_separate_credentials_are_sent_to_the_server() -> None:
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=401, text="Code: 516. DB::Exception: Authentication failed")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        settings = Settings.from_env(
            {
                "CLICKHOUSE_URL": f"http://127.0.0.1:{port}",
                "CLICKHOUSE_USER": "analyst",
                "CLICKHOUSE_PASSWORD": "s3cret-pass",
            }
        )
        with pytest.raises(ConfigError) as err:
            await asyncio.to_thread(store.connect, settings.clickhouse_url, settings.clickhouse_access)
    finally:
        await runner.cleanup()
    assert seen, "the client never reached the server"
    assert seen[0] == "Basic " + base64.b64encode(b"analyst:s3cret-pass").decode()
    assert "s3cret-pass" not in str(err.value)
