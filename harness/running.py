"""One stage in this process, started, run and stopped the way `pipeline.runner.serve` does it.

For tests and chaos scenarios that drive a stage's object directly (its settings, its store) rather
than a child process (`harness.stack.Stack`).
"""

from __future__ import annotations

import asyncio
from typing import Any


class Running:
    """Runs a stage in-process (start → run task → stop), the way `pipeline.runner.serve` does.

    With `http=True` the stage's HTTP app is served on a real loopback port (`self.url`).
    """

    def __init__(self, service: Any, *, http: bool = False) -> None:
        self.service = service
        self.http = http
        self.url = ""
        self._task: asyncio.Task[None] | None = None
        self.server: Any = None  # the pipeline.httpserver.HttpServer, with `http=True`

    async def __aenter__(self) -> Running:
        from pipeline.httpserver import HttpServer
        from pipeline.runner import build_app, http_limits

        try:
            await self.service.start()
        except BaseException:
            await self.service.stop()
            raise
        self._task = asyncio.create_task(self.service.run())
        if self.http:
            # The same server, with the same connection limits, as `pipeline.runner.serve` gives the stage.
            self.server = HttpServer(
                build_app(self.service), "127.0.0.1", 0, http_limits(self.service.settings), shutdown_timeout_s=5
            )
            await self.server.start()
            self.url = f"http://127.0.0.1:{self.server.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            await self.server.stop()
        await self.service.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=30)
