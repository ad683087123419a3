"""One reconcile run over a period: find Insights' sessions, compare, backfill, verify. No Kafka here:
the caller hands in a `send` for backfilled events and publishes the report (see `reconcile.cli`).

1. **Rooms.** For each registered prefix (the fewest that cover all of them) page through
   `/insights/rooms?roomName[startsWith]=/<prefix>`; then, unless told not to, through all rooms once, for
   the rooms no registered prefix matches (reported with `customer_id: null`, the unresolved bucket, as
   enrichment does). Each room's customer is its longest registered prefix. Rooms are not filtered by
   their creation date (a room made months ago can hold a session in the period); one is skipped only
   when Insights says it cannot hold one (no sessions, last session started before the period, first
   after it, or created after it).
2. **Sessions** of each room (`/insights/room-sessions?roomName=`) that *started* in `[from, to)`.
3. **Compare** each with our totals from the read API (:mod:`reconcile.compare`).
4. **Backfill** (if asked): for each session not in `match`, Insights' participants and ours, and exactly
   the missing events (:mod:`reconcile.backfill`), handed to `send`.
5. **Verify**: wait (bounded) until the repaired sessions match in the read API, and record the status
   seen then as `after_backfill`, so a scheduled run's stored result says whether its repair worked.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pipeline import contract
from reconcile import compare, metrics, wherebymath
from reconcile.backfill import SyntheticEvent, missing_events
from reconcile.compare import MATCH, Minutes
from reconcile.customers import Registry
from reconcile.insights import InsightsClient, InsightsError, NotFound, Unauthorized, Unavailable
from reconcile.ourapi import ReadApiClient
from reconcile.report import Report, SessionResult
from reconcile.shapes import InsightsParticipant, InsightsRoom, InsightsSession, OurConnection

log = logging.getLogger(__name__)

SendEvents = Callable[[Sequence[SyntheticEvent]], Awaitable[None]]
VERIFY_POLL_S = 1.0


@dataclass(frozen=True)
class Options:
    """What one run does."""

    from_ms: int
    to_ms: int
    backfill: bool = False
    verify_timeout_s: float = 60.0
    unresolved: bool = True


def may_hold_sessions(room: InsightsRoom, from_ms: int, to_ms: int) -> bool:
    """False only when Insights itself says the room holds no session that started in `[from, to)`;
    an absent or unreadable field never excludes a room."""
    if room.total_sessions == 0:
        return False
    if room.last_session_started_at_ms is not None and room.last_session_started_at_ms < from_ms:
        return False
    if room.first_session_started_at_ms is not None and room.first_session_started_at_ms >= to_ms:
        return False
    return not (room.created_at_ms is not None and room.created_at_ms >= to_ms)


async def discover_rooms(insights: InsightsClient, registry: Registry, *, unresolved: bool) -> dict[str, InsightsRoom]:
    """Rooms by name: those under a registered prefix, plus (if `unresolved`) those under none."""
    rooms: dict[str, InsightsRoom] = {}
    for prefix in registry.covering_prefixes():
        for room in await insights.rooms("/" + prefix):
            rooms.setdefault(room.room_name, room)
    if unresolved:
        try:
            everything = await insights.rooms()
        except (Unauthorized, Unavailable):
            raise
        except InsightsError as exc:  # e.g. an API that insists on a filter: check what the prefixes found
            log.warning(f"could not list all rooms, so rooms under no registered prefix are not checked: {exc}")
            everything = []
        for room in everything:
            rooms.setdefault(room.room_name, room)
    return rooms


def insights_minutes(session: InsightsSession, rows: Sequence[InsightsParticipant] | None) -> Minutes:
    """Insights' minutes of a session; a total the row lacks is computed from `rows` the Whereby way."""
    computed = wherebymath.totals(rows or ())
    return Minutes(
        participant=session.participant_minutes if session.participant_minutes is not None else computed[0],
        recorder=session.recorder_minutes if session.recorder_minutes is not None else computed[1],
        streamer=session.streamer_minutes if session.streamer_minutes is not None else computed[2],
    )


async def our_minutes(
    ours: ReadApiClient, room_name: str, room_session_id: str
) -> tuple[Minutes | None, list[OurConnection]]:
    """Our minutes of a session (None when we hold nothing of it) and its connections when they were read."""
    totals = await ours.session(room_name, room_session_id)
    if totals is None:
        return None, []
    connections: list[OurConnection] = []
    if totals.assistant is None or totals.captioner is None:
        connections = await ours.connections(room_session_id)
    return compare.ours(totals, connections), connections


async def reconcile(
    options: Options,
    insights: InsightsClient,
    ours: ReadApiClient,
    registry: Registry,
    send: SendEvents | None = None,
) -> Report:
    """One run (see the module doc). `send` must be given with `options.backfill`."""
    report = Report(uuid.uuid4().hex, contract.now_ms(), options.from_ms, options.to_ms)
    rooms = await discover_rooms(insights, registry, unresolved=options.unresolved)
    candidates = sorted(name for name, room in rooms.items() if may_hold_sessions(room, options.from_ms, options.to_ms))
    participants: dict[str, list[InsightsParticipant]] = {}
    connections: dict[str, list[OurConnection]] = {}
    seen: set[str] = set()
    for name in candidates:
        try:
            sessions = await insights.room_sessions(name)
        except NotFound:
            log.warning("room gone from Insights between two calls; skipped", extra={"room": name})
            continue
        report.rooms_checked += 1
        match = registry.resolve(name)
        if match is None:
            report.unresolved_rooms += 1
        for session in sessions:
            if not options.from_ms <= session.started_at_ms < options.to_ms:
                continue
            if session.room_session_id in seen:
                continue  # a page repeated (or a hostile answer): one result per session
            seen.add(session.room_session_id)
            rows = None
            if None in (session.participant_minutes, session.recorder_minutes, session.streamer_minutes):
                rows = participants[session.room_session_id] = await insights.participants(session.room_session_id)
            theirs = insights_minutes(session, rows)
            our, conns = await our_minutes(ours, name, session.room_session_id)
            connections[session.room_session_id] = conns
            report.sessions.append(
                SessionResult(
                    room_session_id=session.room_session_id,
                    room_name=name,
                    customer_id=None if match is None else match[1],
                    started_at_ms=session.started_at_ms,
                    status=compare.status(our, theirs),
                    ours=our or compare.NONE,
                    insights=theirs,
                )
            )
    report.sessions.sort(key=lambda s: (s.started_at_ms, s.room_name, s.room_session_id))
    if options.backfill:
        assert send is not None, "backfill needs somewhere to send the events"
        await _backfill(report, options, insights, ours, participants, connections, send)
    report.skipped_rows = dict(insights.skipped)
    for result in report.sessions:
        metrics.SESSIONS.labels(result.status).inc()
    return report


async def _backfill(
    report: Report,
    options: Options,
    insights: InsightsClient,
    ours: ReadApiClient,
    participants: dict[str, list[InsightsParticipant]],
    connections: dict[str, list[OurConnection]],
    send: SendEvents,
) -> None:
    repaired: list[SessionResult] = []
    events: list[SyntheticEvent] = []
    for result in report.sessions:
        if result.status == MATCH:
            continue  # left untouched: not even its participants are asked for
        session_id = result.room_session_id
        rows = participants.get(session_id)
        if rows is None:
            rows = await insights.participants(session_id)
        conns = connections.get(session_id) or []
        if result.status != "missing" and not conns:
            conns = await ours.connections(session_id)
        found = missing_events(result.room_name, session_id, rows, conns)
        if found:
            result.backfilled_events = len(found)
            events.extend(found)
            repaired.append(result)
    if not events:
        return
    await send(events)
    report.backfilled_events = len(events)
    metrics.BACKFILLED.inc(len(events))
    log.info(f"backfilled {len(events)} events for {len(repaired)} sessions", extra={"run_id": report.run_id})
    if options.verify_timeout_s > 0:
        await _verify(repaired, ours, options.verify_timeout_s)


async def _verify(repaired: list[SessionResult], ours: ReadApiClient, timeout_s: float) -> None:
    """Poll our totals of the repaired sessions until each matches or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    pending = list(repaired)
    while pending:
        still = []
        for result in pending:
            our, _ = await our_minutes(ours, result.room_name, result.room_session_id)
            result.after_backfill = compare.status(our, result.insights)
            if result.after_backfill != MATCH:
                still.append(result)
        pending = still
        if not pending or time.monotonic() >= deadline:
            return
        await asyncio.sleep(VERIFY_POLL_S)
