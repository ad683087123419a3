"""Reading the raw archive (the sink's `raw_archive` table) through the read API, for `replay`.

The embedded store belongs to the sink process, so the archive is read where every other reader reads
it: `GET /archive/raw?from=&to=&cursor=&limit=` on the sink's read API (or `whereby-pipeline serve-api`
against a ClickHouse server), with the read API's token. Pages are keyset pages in arrival order.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.settings import ConfigError

PAGE = 2000


@dataclass(frozen=True)
class ArchivedEvent:
    """One raw body as the sink archived it, with the headers replay enriches it with."""

    received_at_ms: int
    event_id: str
    room_name: str
    source: str
    body: bytes


def _get(url: str, token: str, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            doc: dict[str, Any] = orjson.loads(response.read())
            return doc
    except urllib.error.HTTPError as exc:
        hint = " (set READ_API_TOKEN)" if exc.code == 401 else ""
        raise ConfigError(f"the read API answered {exc.code} for the raw archive{hint}") from None
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"cannot read the raw archive from the read API at {url.split('/archive')[0]}: {reason}; "
            "is the sink running? (or pass --api URL)"
        ) from None


async def read(
    api: str, token: str, since_ms: int, until_ms: int, *, timeout_s: float = 60.0
) -> AsyncIterator[list[ArchivedEvent]]:
    """The archived events received in `[since_ms, until_ms)`, page by page, oldest first."""
    base = api.rstrip("/") + "/archive/raw"
    cursor: str | None = None
    while True:
        params = {"from": _iso(since_ms), "to": _iso(until_ms), "limit": str(PAGE)}
        if cursor:
            params["cursor"] = cursor
        doc = await asyncio.to_thread(_get, base + "?" + urllib.parse.urlencode(params), token, timeout_s)
        page = [
            ArchivedEvent(
                received_at_ms=int(row["receivedAtMs"]),
                event_id=str(row["eventId"]),
                room_name=str(row["roomName"]),
                source=str(row["source"]),
                body=str(row["body"]).encode("utf-8"),
            )
            for row in doc.get("results", [])
        ]
        if page:
            yield page
        cursor = doc.get("cursor")
        if not cursor:
            return


def _iso(ms: int) -> str:
    """Epoch milliseconds as the read API's ISO date-time (UTC)."""
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"
