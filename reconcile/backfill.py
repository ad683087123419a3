"""Backfill: the join/leave webhooks we lost, synthesized from Insights' participant rows. Pure.

**Matching.** An Insights row is one connection (one stay of one participant). Rows and our connections
are matched per participant id by overlapping time, one to one: a participant who left and rejoined
with the same id has two rows and should have two connections. Our connections with a known time are
matched first (to the overlapping row nearest in time, with `SLACK_MS` for clock differences between
webhooks and Insights); a connection we know only by its `left` with no time at all is then given to
the earliest row still unmatched.

**What is missing.** For each row: no connection of ours → its `room.client.joined` and, when Insights
has a `leftAt`, its `room.client.left`; a connection without its join (`no_join`) → the join; a
connection whose `left` is missing (`session_end`, `estimated`, `open`) → the left, when Insights has
one. Nothing else: a `left` is never made up, and an event we hold is never sent again.

**The events** carry Whereby's envelope and the data fields Insights knows (reference §1.3-1.5):
`roomName` and `roomSessionId` of the session, `participantId`, `displayName`, `externalId`, `roleName`,
and `numClients`/`numClientsByRoleName` counted from the session's Insights rows at that instant
(what the webhook would have said, as far as Insights knows). `metadata`, `meetingId`, `subdomain` and
`isDialIn` are unknown to Insights and left out. `createdAt` is Insights' `joinedAt`/`leftAt` in
Whereby's form. The `id` is derived (see :func:`event_id`), so a second backfill writes the very same
events, which the store deduplicates on `id`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from reconcile.shapes import InsightsParticipant, OurConnection
from reconcile.times import whereby_time

JOINED = "room.client.joined"
LEFT = "room.client.left"
API_VERSION = "1.0"
SLACK_MS = 60_000
_FAR = 2**62


@dataclass(frozen=True)
class SyntheticEvent:
    """One synthesized webhook: its body as Whereby would have sent it, and what the raw topic needs."""

    event_id: str
    event_type: str
    room_name: str
    room_session_id: str
    participant_id: str
    created_at_ms: int
    body: bytes


def event_id(room_session_id: str, participant_id: str, event_type: str, created_at: str) -> str:
    """sha256 hex (64 characters, like Whereby's ids) of `insights|session|participant|type|createdAt`.

    Deterministic, so backfilling twice writes the same ids; the `insights|` domain keeps it apart from
    any id Whereby makes. `created_at` is the normalised `createdAt`, so a change in how Insights formats
    its times cannot change the id.
    """
    text = "|".join(("insights", room_session_id, participant_id, event_type, created_at))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _overlaps(row: InsightsParticipant, conn: OurConnection) -> bool:
    row_end = row.left_at_ms if row.left_at_ms is not None else _FAR
    start = conn.joined_at_ms if conn.joined_at_ms is not None else -_FAR
    end = conn.left_at_ms if conn.left_at_ms is not None else _FAR
    return start <= row_end + SLACK_MS and row.joined_at_ms - SLACK_MS <= end


def _distance(row: InsightsParticipant, conn: OurConnection) -> int:
    if conn.joined_at_ms is not None:
        return abs(conn.joined_at_ms - row.joined_at_ms)
    if conn.left_at_ms is not None and row.left_at_ms is not None:
        return abs(conn.left_at_ms - row.left_at_ms)
    return _FAR


def match(
    rows: Sequence[InsightsParticipant], ours: Sequence[OurConnection]
) -> list[tuple[InsightsParticipant, OurConnection | None]]:
    """Each Insights row with our connection of the same stay, or None (see the module doc)."""
    by_participant: dict[str, list[OurConnection]] = defaultdict(list)
    for conn in ours:
        by_participant[conn.participant_id].append(conn)
    pairs: dict[int, OurConnection | None] = {}
    ordered = sorted(range(len(rows)), key=lambda i: (rows[i].joined_at_ms, rows[i].left_at_ms or _FAR))
    for participant, conns in by_participant.items():
        timed = [c for c in conns if c.joined_at_ms is not None or c.left_at_ms is not None]
        untimed = [c for c in conns if c.joined_at_ms is None and c.left_at_ms is None]
        for i in ordered:
            row = rows[i]
            if row.participant_id != participant:
                continue
            candidates = [c for c in timed if _overlaps(row, c)]
            if candidates:
                best = min(candidates, key=lambda c: _distance(row, c))
                timed.remove(best)
                pairs[i] = best
        for i in ordered:
            if untimed and rows[i].participant_id == participant and i not in pairs:
                pairs[i] = untimed.pop(0)
    return [(rows[i], pairs.get(i)) for i in ordered]


def clients_at(rows: Sequence[InsightsParticipant], at_ms: int) -> tuple[int, dict[str, int]]:
    """(numClients, numClientsByRoleName) right after an event at `at_ms`: the rows in the room then
    (joined at or before it, not yet left); a row leaving at exactly `at_ms` has gone."""
    by_role: dict[str, int] = defaultdict(int)
    total = 0
    for row in rows:
        if row.joined_at_ms <= at_ms and (row.left_at_ms is None or row.left_at_ms > at_ms):
            total += 1
            if row.role_name:
                by_role[row.role_name] += 1
    return total, dict(sorted(by_role.items()))


def synthesize(
    event_type: str,
    room_name: str,
    room_session_id: str,
    row: InsightsParticipant,
    session_rows: Sequence[InsightsParticipant],
) -> SyntheticEvent:
    """The `room.client.joined`/`left` webhook of `row` (see the module doc for the fields)."""
    at = row.joined_at_ms if event_type == JOINED else row.left_at_ms
    assert at is not None, "a left is only synthesized from a known leftAt"
    created_at = whereby_time(at)
    num_clients, by_role = clients_at(session_rows, at)
    data: dict[str, Any] = {
        "roomName": room_name,
        "roomSessionId": room_session_id,
        "participantId": row.participant_id,
        "displayName": row.display_name or "",
        "externalId": row.external_id,
    }
    if row.role_name:
        data["roleName"] = row.role_name
    data["numClients"] = num_clients
    data["numClientsByRoleName"] = by_role
    ident = event_id(room_session_id, row.participant_id, event_type, created_at)
    doc = {"id": ident, "apiVersion": API_VERSION, "createdAt": created_at, "type": event_type, "data": data}
    return SyntheticEvent(
        event_id=ident,
        event_type=event_type,
        room_name=room_name,
        room_session_id=room_session_id,
        participant_id=row.participant_id,
        created_at_ms=at,
        body=orjson.dumps(doc),
    )


def missing_events(
    room_name: str, room_session_id: str, rows: Sequence[InsightsParticipant], ours: Sequence[OurConnection]
) -> list[SyntheticEvent]:
    """Exactly the join/leave events of `rows` that `ours` lacks, in time order."""
    rows = list(dict.fromkeys(rows))  # the same row twice (a repeated page) is one connection, not two
    events: list[SyntheticEvent] = []
    for row, conn in match(rows, ours):
        if conn is None or not conn.has_join:
            events.append(synthesize(JOINED, room_name, room_session_id, row, rows))
        if row.left_at_ms is not None and (conn is None or not conn.has_left):
            events.append(synthesize(LEFT, room_name, room_session_id, row, rows))
    return sorted(events, key=lambda e: (e.created_at_ms, e.event_type != LEFT, e.event_id))
