"""A test double of Whereby's Insights API, built only from the documented shapes (reference §4).

Served over real HTTP (aiohttp on a free loopback port), so the client under test cannot tell it from
the real thing: `GET /insights/rooms`, `/insights/room-sessions`, `/insights/participants` with their
documented parameters and fields, `Authorization: Bearer <key>` (401 otherwise), opaque cursors (`null`
on the last page), `limit` 1-100 (default 10, 400 beyond), 429 with `Retry-After`, `X-RateLimit-*`
and `{"error", "data": {"msLeft"}}`. It does not import anything of `reconcile`: its totals are computed
here, the Whereby way (per connection, duration rounded up to whole minutes, then summed; recorder and
streamer apart, every other role in participant minutes).

Knobs for tests: `page_size` caps every page below the asked `limit` (short pages, so a few rows span
several pages); `throttle(after=n)` answers the n-th next request with a 429 once; `fail(after=n,
status=503)` with a 5xx; `answer(after=n, body=...)` with arbitrary bytes (garbage); `requests` logs
every request (path, query, whether the key was right).
"""

from __future__ import annotations

import base64
import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web

MAX_LIMIT = 100
DEFAULT_LIMIT = 10


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Stay:
    """One connection: a participant in a session from `joined` to `left` (None: still in the room)."""

    participant_id: str
    joined: datetime
    left: datetime | None
    role: str = "visitor"
    external_id: str | None = None
    display_name: str = "Someone"
    device_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def minutes(self) -> int:
        if self.left is None:
            return 0
        return math.ceil((self.left - self.joined).total_seconds() / 60)


@dataclass
class Session:
    """One room session as Insights knows it."""

    room_session_id: str
    room_name: str
    started_at: datetime
    ended_at: datetime | None
    stays: list[Stay]

    def totals(self) -> tuple[int, int, int]:
        """(participant, recorder, streamer) minutes, the Whereby way."""
        rec = sum(s.minutes() for s in self.stays if s.role == "recorder")
        stream = sum(s.minutes() for s in self.stays if s.role == "streamer")
        other = sum(s.minutes() for s in self.stays if s.role not in ("recorder", "streamer"))
        return other, rec, stream

    def unique(self, roles: Callable[[str], bool]) -> int:
        return len({s.participant_id for s in self.stays if roles(s.role)})


@dataclass
class Room:
    room_name: str
    created_at: datetime
    end_at: datetime | None = None


@dataclass
class Logged:
    path: str
    query: dict[str, str]
    authorized: bool
    status: int = 200


class BadRequest(Exception):
    pass


class InsightsDouble:
    """The double's state and its aiohttp app. Use as `async with InsightsDouble(key) as double`."""

    def __init__(self, key: str = "test-api-key-0123456789", *, page_size: int | None = None) -> None:
        self.key = key
        self.page_size = page_size
        self.rooms: dict[str, Room] = {}
        self.sessions: list[Session] = []
        self.requests: list[Logged] = []
        self.url = ""
        self._scripted: list[tuple[int, Callable[[], web.Response]]] = []
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------------------------------ state

    def add_room(self, name: str, created_at: datetime, end_at: datetime | None = None) -> Room:
        room = Room(name, created_at, end_at)
        self.rooms[name] = room
        return room

    def add_session(self, session: Session) -> Session:
        if session.room_name not in self.rooms:
            self.add_room(session.room_name, session.started_at - timedelta(hours=1))
        self.sessions.append(session)
        return session

    # ------------------------------------------------------------------------------------------ faults

    def _script(self, after: int, respond: Callable[[], web.Response]) -> None:
        """Answer the `after`-th next request (1 = the next one) with `respond()` instead."""
        self._scripted.append((len(self.requests) + after, respond))

    def throttle(self, *, after: int = 1, retry_after_s: int = 1) -> None:
        """A 429 on the `after`-th next request, as Whereby documents it."""

        def respond() -> web.Response:
            reset = datetime.now(UTC) + timedelta(seconds=retry_after_s)
            return web.json_response(
                {"error": "Too Many Requests", "data": {"msLeft": retry_after_s * 1000}},
                status=429,
                headers={
                    "Retry-After": str(retry_after_s),
                    "X-RateLimit-Reset": format_datetime(reset, usegmt=True),
                    "X-RateLimit-Limit": "100",
                    "X-RateLimit-Remaining": "0",
                },
            )

        self._script(after, respond)

    def fail(self, *, after: int = 1, status: int = 503) -> None:
        self._script(after, lambda: web.json_response({"error": "Service Unavailable"}, status=status))

    def answer(self, *, after: int = 1, body: bytes, status: int = 200) -> None:
        self._script(after, lambda: web.Response(body=body, status=status, content_type="application/json"))

    # ------------------------------------------------------------------------------------------ HTTP

    async def __aenter__(self) -> InsightsDouble:
        app = web.Application()
        app.add_routes(
            [
                web.get("/v1/insights/rooms", self._handler(self._rooms)),
                web.get("/v1/insights/room-sessions", self._handler(self._room_sessions)),
                web.get("/v1/insights/participants", self._handler(self._participants)),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _handler(self, build: Callable[[dict[str, str]], list[dict[str, Any]]]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            query = {k: request.query[k] for k in request.query}
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            authorized = scheme == "Bearer" and given == self.key
            logged = Logged(request.path.removeprefix("/v1"), query, authorized)
            self.requests.append(logged)
            number = len(self.requests)
            for i, (at, respond) in enumerate(self._scripted):
                if at == number:
                    del self._scripted[i]
                    response = respond()
                    logged.status = response.status
                    return response
            if not authorized:
                logged.status = 401
                return web.json_response({"error": "Unauthorized"}, status=401)
            try:
                limit = _limit(query)
                rows = build(query)
                page = self._page(logged.path, query, rows, limit)
            except BadRequest as exc:
                logged.status = 400
                return web.json_response({"error": str(exc)}, status=400)
            return web.Response(body=orjson.dumps(page), content_type="application/json")

        return handle

    def _page(self, path: str, query: dict[str, str], rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
        filters = {k: v for k, v in query.items() if k not in ("cursor", "limit")}
        fingerprint = hashlib.sha256(orjson.dumps([path, sorted(filters.items())])).hexdigest()[:12]
        offset = 0
        if query.get("cursor"):
            try:
                doc = orjson.loads(base64.urlsafe_b64decode(query["cursor"]))
                offset, ok = int(doc["o"]), doc["f"] == fingerprint
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise BadRequest("invalid cursor")
        size = min(limit, self.page_size) if self.page_size else limit
        page = rows[offset : offset + size]
        following = offset + size
        cursor = None
        if following < len(rows):
            cursor = base64.urlsafe_b64encode(orjson.dumps({"o": following, "f": fingerprint})).decode()
        return {"cursor": cursor, "results": page}

    # ------------------------------------------------------------------------------------------ endpoints

    def _rooms(self, query: dict[str, str]) -> list[dict[str, Any]]:
        rooms = list(self.rooms.values())
        if "roomName[exact]" in query:
            rooms = [r for r in rooms if r.room_name == query["roomName[exact]"]]
        if "roomName[startsWith]" in query:
            rooms = [r for r in rooms if r.room_name.startswith(query["roomName[startsWith]"])]
        if "roomName[contains]" in query:
            rooms = [r for r in rooms if query["roomName[contains]"] in r.room_name]
        for name, keep in (
            ("createdAt[from]", lambda r, t: r.created_at >= t),
            ("createdAt[to]", lambda r, t: r.created_at <= t),
        ):
            if name in query:
                try:
                    bound = _parse(query[name])
                except ValueError:
                    raise BadRequest(f"{name} must be an ISO date-time") from None
                rooms = [r for r in rooms if keep(r, bound)]
        rows = [self._room_row(r) for r in rooms]
        return _sorted(rows, query.get("sortBy"), default="roomName")

    def _room_row(self, room: Room) -> dict[str, Any]:
        sessions = [s for s in self.sessions if s.room_name == room.room_name]
        starts = sorted(s.started_at for s in sessions)
        totals = [s.totals() for s in sessions]
        stays = [st for s in sessions for st in s.stays]
        return {
            "roomName": room.room_name,
            "createdAt": iso(room.created_at),
            "endAt": iso(room.end_at) if room.end_at else None,
            "firstSessionStartedAt": iso(starts[0]) if starts else None,
            "lastSessionStartedAt": iso(starts[-1]) if starts else None,
            "totalParticipantMinutes": sum(t[0] for t in totals),
            "totalRecorderMinutes": sum(t[1] for t in totals),
            "totalStreamerMinutes": sum(t[2] for t in totals),
            "totalUniqueParticipants": len({s.participant_id for s in stays if s.role not in ("recorder", "streamer")}),
            "totalUniqueRecorders": len({s.participant_id for s in stays if s.role == "recorder"}),
            "totalUniqueStreamers": len({s.participant_id for s in stays if s.role == "streamer"}),
            "totalSessions": len(sessions),
            "rating": None,
            "totalRatings": None,
        }

    def _room_sessions(self, query: dict[str, str]) -> list[dict[str, Any]]:
        if not query.get("roomName"):
            raise BadRequest("roomName is required")
        sessions = [s for s in self.sessions if s.room_name == query["roomName"]]
        if query.get("roomSessionId"):
            sessions = [s for s in sessions if s.room_session_id == query["roomSessionId"]]
        rows = []
        for s in sessions:
            participant, recorder, streamer = s.totals()
            rows.append(
                {
                    "roomSessionId": s.room_session_id,
                    "roomName": s.room_name,
                    "startedAt": iso(s.started_at),
                    "endedAt": iso(s.ended_at) if s.ended_at else None,
                    "totalParticipantMinutes": participant,
                    "totalRecorderMinutes": recorder,
                    "totalStreamerMinutes": streamer,
                    "totalUniqueParticipants": s.unique(lambda r: r not in ("recorder", "streamer")),
                    "totalUniqueRecorders": s.unique(lambda r: r == "recorder"),
                    "totalUniqueStreamers": s.unique(lambda r: r == "streamer"),
                    "rating": None,
                    "totalRatings": None,
                }
            )
        return _sorted(rows, query.get("sortBy"), default="startedAt")

    def _participants(self, query: dict[str, str]) -> list[dict[str, Any]]:
        if not query.get("roomSessionId") and not query.get("externalId"):
            raise BadRequest("roomSessionId or externalId is required")
        rows = []
        for s in self.sessions:
            if query.get("roomSessionId") and s.room_session_id != query["roomSessionId"]:
                continue
            for st in s.stays:
                if query.get("externalId") and st.external_id != query["externalId"]:
                    continue
                rows.append(
                    {
                        "roomSessionId": s.room_session_id,
                        "participantId": st.participant_id,
                        "deviceId": st.device_id,
                        "userId": None,
                        "roleName": st.role,
                        "displayName": st.display_name,
                        "joinedAt": iso(st.joined),
                        "leftAt": iso(st.left) if st.left else None,
                        "externalId": st.external_id,
                        "rating": None,
                        "tags": [],
                        "comment": None,
                    }
                )
        sort = query.get("sortBy", "joinedAt:asc")
        if sort.split(":")[0] not in ("joinedAt", "leftAt"):
            raise BadRequest("sortBy must be joinedAt or leftAt")
        return _sorted(rows, sort, default="joinedAt")


def _limit(query: dict[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return int(raw)


def _sorted(rows: list[dict[str, Any]], sort_by: str | None, *, default: str) -> list[dict[str, Any]]:
    field_name, _, direction = (sort_by or f"{default}:asc").partition(":")
    if direction not in ("", "asc", "desc") or (rows and field_name not in rows[0]):
        raise BadRequest(f"cannot sort by {sort_by!r}")
    return sorted(rows, key=lambda r: (r.get(field_name) is None, r.get(field_name) or 0), reverse=direction == "desc")
