"""Our side of the comparison: the sink's read API, which mirrors Insights (`/insights/room-sessions`,
`/insights/participants`). Reconcile may not import the sink (and in the embedded default only the sink
process can open the store), so it asks the API over HTTP, like `whereby-pipeline report` does.

Numbers per session: `totalParticipantMinutes` (human roles), `totalRecorderMinutes`,
`totalStreamerMinutes`, and, where the API has them, `totalAssistantMinutes` and
`totalCaptionerMinutes`; where it has not, those two are summed from the session's connections by
`roleClass`. Connections: `participantId`, `joinedAt` (null when we only have its `left`), `leftAt`,
`endSource` (`left`: we have its real `left`; `no_join`: we have only the `left`; `session_end`,
`estimated`, `open`: its `left` is missing).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

from reconcile.shapes import OurConnection, OurSession, parse_connection, parse_session_totals

log = logging.getLogger(__name__)

DEFAULT_API = "http://127.0.0.1:8082"
PAGE_LIMIT = 100
MAX_PAGES = 10_000


class ReadApiError(Exception):
    """The read API could not be used; one line for the operator."""


class ReadApiClient:
    """Asks the sink's read API for our session totals and connections. Use as `async with`."""

    def __init__(self, base_url: str, token: str = "", *, timeout_s: float = 30.0, attempts: int = 5) -> None:
        self.base = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ReadApiClient:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def session(self, room_name: str, room_session_id: str) -> OurSession | None:
        """Our totals of one session, or None when we have nothing of it."""
        doc = await self._get("/insights/room-sessions", {"roomName": room_name, "roomSessionId": room_session_id})
        for row in _results(doc):
            if isinstance(row, dict) and row.get("roomSessionId") == room_session_id:
                totals = parse_session_totals(row)
                if totals is None:
                    raise ReadApiError(f"read API at {self.base} answered a session without totalParticipantMinutes")
                return totals
        return None

    async def connections(self, room_session_id: str) -> list[OurConnection]:
        """Every connection of one session we hold."""
        out: list[OurConnection] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = {"roomSessionId": room_session_id, "limit": str(PAGE_LIMIT)}
            if cursor:
                params["cursor"] = cursor
            doc = await self._get("/insights/participants", params)
            out.extend(c for c in map(parse_connection, _results(doc)) if c is not None)
            cursor = doc.get("cursor") if isinstance(doc.get("cursor"), str) else None
            if not cursor:
                return out
        raise ReadApiError(f"read API at {self.base} kept paging past {MAX_PAGES} pages")

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        assert self._session is not None, "use ReadApiClient as `async with`"
        last = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
            try:
                async with self._session.get(self.base + path, params=params) as response:
                    raw = await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = None
            if status == 200 and isinstance(doc, dict):
                return doc
            if status == 401:
                raise ReadApiError(f"read API at {self.base} answered 401: set READ_API_TOKEN to the sink's token")
            if 400 <= status < 500:
                message = doc.get("error") if isinstance(doc, dict) else None
                raise ReadApiError(f"read API at {self.base}{path} answered {status}: {str(message)[:200]}")
            last = f"HTTP {status}"  # 503 while the sink starts or stops; 5xx: try again
        raise ReadApiError(f"cannot use the read API at {self.base} ({last}); is the sink running? (or pass --api URL)")


def _results(doc: dict[str, Any]) -> list[Any]:
    results = doc.get("results")
    return results if isinstance(results, list) else []
