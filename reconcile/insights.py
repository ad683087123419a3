"""The client of Whereby's Insights API (reference §4): bearer key, opaque cursors, retries, rate limits.

- `Authorization: Bearer <WHEREBY_API_KEY>` on every call; the key is never logged or put in a message.
- Pages: `limit=100` (the maximum), the `cursor` of each answer passed back until it is null. A page may
  hold fewer rows than asked; a cursor seen twice, or more than `max_pages` pages, is an error rather than
  an endless loop.
- Rate limits: every attempt first takes its points from the per-minute budget (:mod:`reconcile.budget`);
  a 429 waits for `Retry-After` (seconds or a date; else the body's `data.msLeft`), bounded, and retries.
- A 5xx, a timeout, a dropped connection or an answer that is not Insights JSON is retried with
  exponential backoff and jitter, `max_attempts` times in all, then :class:`Unavailable`.
- 401/403 stop at once (:class:`Unauthorized`): retrying a wrong key only burns the budget.
- Other 4xx are our own mistake and stop too (:class:`InsightsError` with the API's message).

Rows are parsed by :mod:`reconcile.shapes`; an unusable row is skipped and counted in `skipped`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import orjson

from pipeline.settings import WherebyApi
from reconcile import metrics
from reconcile.budget import INSIGHTS_CALL_POINTS, PointsBudget
from reconcile.shapes import (
    InsightsParticipant,
    InsightsRoom,
    InsightsSession,
    parse_participant,
    parse_room,
    parse_session,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
PAGE_LIMIT = 100  # Whereby's maximum `limit`
ENDPOINTS = {
    "/insights/rooms": "rooms",
    "/insights/room-sessions": "room_sessions",
    "/insights/participants": "participants",
}


class InsightsError(Exception):
    """The Insights API could not be used; the message is one line for the operator (never the key)."""


class Unauthorized(InsightsError):
    """401/403: the key is missing, wrong or revoked. Never retried."""


class Unavailable(InsightsError):
    """Still failing (5xx, timeouts, garbage) after every retry."""


class NotFound(InsightsError):
    """404: e.g. a room Whereby deleted (24 h after its end date) between two calls."""


@dataclass(frozen=True)
class Policy:
    """Retry, wait and size bounds; the defaults suit Whereby, tests shrink the waits."""

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_rate_limited: int = 20  # 429s in a row for one request before giving up
    default_retry_after_s: float = 60.0  # a 429 that says nothing about when to come back
    max_retry_after_s: float = 120.0  # never trust a server to park us for an hour
    max_body_bytes: int = 8 * 1024 * 1024  # 100 rows are a few tens of KiB
    max_pages: int = 10_000


def _one_line(text: str, limit: int = 200) -> str:
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(cleaned.split())[:limit]


def retry_after_s(headers: dict[str, str], body: Any, policy: Policy, now: datetime | None = None) -> float:
    """How long a 429 asks us to wait: `Retry-After` (seconds, or an HTTP date), else `data.msLeft`, else
    the policy's default; bounded by `max_retry_after_s`."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), "").strip()
    wait: float | None = None
    if raw:
        try:
            wait = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                wait = (when - (now or datetime.now(UTC))).total_seconds()
            except (TypeError, ValueError, IndexError):
                wait = None
    if wait is None and isinstance(body, dict) and isinstance(body.get("data"), dict):
        ms_left = body["data"].get("msLeft")
        if isinstance(ms_left, int | float) and not isinstance(ms_left, bool):
            wait = ms_left / 1000
    if wait is None or wait != wait:  # absent, or NaN
        wait = policy.default_retry_after_s
    return min(max(wait, 0.0), policy.max_retry_after_s)


class InsightsClient:
    """Reads rooms, room sessions and participants from Whereby's Insights API. Use as `async with`."""

    def __init__(
        self,
        api: WherebyApi,
        *,
        budget: PointsBudget | None = None,
        policy: Policy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._base = api.url.rstrip("/")
        self._key = api.require_key()
        self._timeout = aiohttp.ClientTimeout(total=api.timeout_s)
        self.budget = budget or PointsBudget(api.points_per_minute)
        self.policy = policy or Policy()
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.skipped: Counter[str] = Counter()

    def __repr__(self) -> str:  # never the key
        return f"InsightsClient({self._base!r})"

    async def __aenter__(self) -> InsightsClient:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            headers={"Accept": "application/json", "User-Agent": "whereby-pipeline-reconcile"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # ------------------------------------------------------------------------------------- endpoints

    async def rooms(self, starts_with: str | None = None) -> list[InsightsRoom]:
        """Every room, or those whose name starts with `starts_with` (with its leading `/`)."""
        params = {"roomName[startsWith]": starts_with} if starts_with else {}
        return await self._collect("/insights/rooms", params, parse_room)

    async def room_sessions(self, room_name: str) -> list[InsightsSession]:
        """Every session of one room (`roomName` is required by the API)."""
        return await self._collect(
            "/insights/room-sessions", {"roomName": room_name}, lambda row: parse_session(row, room_name)
        )

    async def participants(self, room_session_id: str) -> list[InsightsParticipant]:
        """Every connection of one session."""
        return await self._collect(
            "/insights/participants",
            {"roomSessionId": room_session_id},
            lambda row: parse_participant(row, room_session_id),
        )

    # ------------------------------------------------------------------------------------- paging

    async def _collect(self, path: str, params: dict[str, str], parse: Callable[[Any], T | None]) -> list[T]:
        out: list[T] = []
        seen: set[str] = set()
        cursor: str | None = None
        for _ in range(self.policy.max_pages):
            page = {**params, "limit": str(PAGE_LIMIT), **({"cursor": cursor} if cursor else {})}
            results, cursor = await self._page(path, page)
            for row in results:
                item = parse(row)
                if item is None:
                    self.skipped[ENDPOINTS[path]] += 1
                else:
                    out.append(item)
            if cursor is None:
                return out
            if cursor in seen:
                raise InsightsError(f"Whereby API {path} returned the same cursor twice; stopping instead of looping")
            seen.add(cursor)
        raise InsightsError(f"Whereby API {path} still had more after {self.policy.max_pages} pages; stopping")

    async def _page(self, path: str, params: dict[str, str]) -> tuple[list[Any], str | None]:
        """One page, `(results, next cursor or None)`, with every retry this module promises."""
        endpoint = ENDPOINTS[path]
        attempts = 0
        limited = 0
        last = ""
        while True:
            await self.budget.acquire(INSIGHTS_CALL_POINTS)
            self.requests += 1
            try:
                status, headers, body = await self._get(path, params)
            except (TimeoutError, aiohttp.ClientError, _TooLarge) as exc:
                status, headers, body = 0, {}, None
                last = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            if status == 200:
                parsed = _page_of(body)
                if parsed is not None:
                    metrics.API_REQUESTS.labels(endpoint, "ok").inc()
                    return parsed
                last = "an answer that is not Insights JSON"
            elif status == 429:
                limited += 1
                metrics.API_REQUESTS.labels(endpoint, "rate_limited").inc()
                if limited > self.policy.max_rate_limited:
                    raise Unavailable(f"Whereby API still answers 429 after {limited - 1} waits; try again later")
                wait = retry_after_s(headers, body, self.policy)
                log.warning(f"Whereby API rate limit (429) on {path}: waiting {wait:.1f}s as it asks")
                await self._sleep(wait)
                continue
            elif status in (401, 403):
                metrics.API_REQUESTS.labels(endpoint, "unauthorized").inc()
                raise Unauthorized(
                    f"Whereby API answered {status} {'Unauthorized' if status == 401 else 'Forbidden'}: "
                    "WHEREBY_API_KEY is wrong, revoked or not allowed to read Insights (create one in Whereby's "
                    "dashboard: Configure -> API)"
                )
            elif status == 404:
                metrics.API_REQUESTS.labels(endpoint, "failed").inc()
                raise NotFound(f"Whereby API {path} answered 404")
            elif 400 <= status < 500:
                metrics.API_REQUESTS.labels(endpoint, "failed").inc()
                raise InsightsError(f"Whereby API {path} answered {status}: {_error_message(body)}")
            elif status:
                last = f"HTTP {status}"
            attempts += 1
            if attempts >= self.policy.max_attempts:
                metrics.API_REQUESTS.labels(endpoint, "failed").inc()
                raise Unavailable(
                    f"Whereby API at {self._base} failed {attempts} times in a row on {path} (last: {last}); "
                    "is WHEREBY_API_URL right and the API up?"
                )
            metrics.API_REQUESTS.labels(endpoint, "retried").inc()
            delay = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (attempts - 1))
            delay *= random.uniform(0.8, 1.2)  # spread retries of several clients
            log.warning(f"Whereby API {path}: {last}; retry {attempts} in {delay:.1f}s")
            await self._sleep(delay)

    async def _get(self, path: str, params: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        """One GET: (status, headers, parsed JSON body or None). Raises on transport errors and oversize."""
        assert self._session is not None, "use InsightsClient as `async with`"
        headers = {"Authorization": f"Bearer {self._key}"}
        started = time.monotonic()
        async with self._session.get(self._base + path, params=params, headers=headers) as response:
            declared = response.content_length
            if declared is not None and declared > self.policy.max_body_bytes:
                raise _TooLarge
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > self.policy.max_body_bytes:
                    raise _TooLarge
                chunks.append(chunk)
            try:
                body = orjson.loads(b"".join(chunks)) if chunks else None
            except orjson.JSONDecodeError:
                body = None
            log.debug(
                "insights request",
                extra={"path": path, "status": response.status, "ms": int((time.monotonic() - started) * 1000)},
            )
            return response.status, dict(response.headers), body


class _TooLarge(Exception):
    """An answer bigger than the policy allows; treated like a transient failure (then Unavailable)."""


def _page_of(body: Any) -> tuple[list[Any], str | None] | None:
    """(results, cursor) of a `{cursor, results}` page, or None when the body is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return None
    cursor = body.get("cursor")
    if cursor is None or cursor == "":
        return body["results"], None
    if isinstance(cursor, int) and not isinstance(cursor, bool):
        cursor = str(cursor)  # opaque means opaque: a number passed back as text is still the same cursor
    if not isinstance(cursor, str) or len(cursor) > 4096:
        return None
    return body["results"], cursor


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return _one_line(body["error"])
    return "no error message"
