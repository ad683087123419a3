"""Waiting: for a process's readiness endpoint, and for any condition.

One place for both, so every harness gives a process the same chance to start and says the same thing
when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class NotReady(RuntimeError):
    """A process exited, or did not answer 200 on its readiness URL, before the deadline."""


def http_ok(url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a GET of `url` answers 200 right now (False on a refused connection or any other status)."""
    with (
        contextlib.suppress(urllib.error.URLError, OSError),
        urllib.request.urlopen(url, timeout=timeout_s) as response,
    ):
        return bool(response.status == 200)
    return False


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
    name: str = "server",
    log: Path | None = None,
) -> None:
    """Poll `url` (a `/readyz`) until it answers 200; raise NotReady if `proc` exits first or on the timeout.

    `name` and `log` only make the message say which process failed and where to look.
    """
    see = f"; see {log}" if log is not None else ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NotReady(f"{name} exited with {proc.returncode} before it was ready{see}")
        if http_ok(url):
            return
        time.sleep(interval_s)
    raise NotReady(f"{name} not ready at {url} within {timeout_s:.0f}s{see}")


async def wait_for(predicate: Any, *, timeout_s: float = 30.0, interval_s: float = 0.2, what: str = "condition") -> Any:
    """Poll `predicate` (sync, or returning an awaitable) until it returns something truthy; returns that.

    Raises AssertionError after the timeout, with the last value seen. A blocking predicate is passed as
    `lambda: asyncio.to_thread(check)`, so the loop keeps running while it waits.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = None
    while loop.time() < deadline:
        last = predicate()
        if asyncio.isfuture(last) or asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"{what} not met within {timeout_s}s (last value: {last!r})")
