"""Rows of Whereby's Insights API (reference §4), and of our read API's mirror of it, as typed values. Pure.

The documented schemas are loose (the room-sessions schema requires `createdAt`/`endAt` but defines
`startedAt`/`endedAt`; an example has a `participantId` with a leading `/`), so each parser takes what a
row carries, falls back where the documentation itself is inconsistent, and returns None for a row it
cannot use at all (the caller counts and skips it). A field with a wrong type is treated as absent:
nothing an API sends may crash a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconcile.times import parse_api_time

MAX_ID_CHARS = 200  # ids are UUID-sized; anything much longer is not one
# Our read API's `endSource` values that mean we hold the connection's real `left` event.
HAS_LEFT = frozenset({"left", "no_join"})


@dataclass(frozen=True)
class InsightsRoom:
    """One row of `GET /insights/rooms`."""

    room_name: str
    created_at_ms: int | None
    first_session_started_at_ms: int | None
    last_session_started_at_ms: int | None
    total_sessions: int | None


@dataclass(frozen=True)
class InsightsSession:
    """One row of `GET /insights/room-sessions`. A total is None when the row lacks it or it is not a count."""

    room_session_id: str
    room_name: str
    started_at_ms: int
    ended_at_ms: int | None
    participant_minutes: int | None
    recorder_minutes: int | None
    streamer_minutes: int | None


@dataclass(frozen=True)
class InsightsParticipant:
    """One row of `GET /insights/participants`: one connection of one participant."""

    room_session_id: str | None
    participant_id: str
    role_name: str | None
    display_name: str | None
    external_id: str | None
    joined_at_ms: int
    left_at_ms: int | None


def _id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_CHARS and value.isprintable():
        return value.strip()
    return None


def _text(value: Any, limit: int = 500) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def count(value: Any) -> int | None:
    """A non-negative whole number from JSON (an int, an integral float or digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**53:
        return int(value)
    if isinstance(value, str) and value.isdigit() and len(value) <= 15:
        return int(value)
    return None


def room_name(value: Any) -> str | None:
    """A room name in the webhooks' form, with its leading `/` (Insights names carry it; add it if not)."""
    name = _id(value)
    if name is None:
        return None
    return name if name.startswith("/") else "/" + name


def participant_id(value: Any) -> str | None:
    """A participant id as webhooks carry it. One documented example has a leading `/` that no webhook
    has; a real one would make every connection look missing and be backfilled twice, so it goes."""
    ident = _id(value)
    if ident is None:
        return None
    return ident.removeprefix("/") or None


def parse_room(row: Any) -> InsightsRoom | None:
    """A rooms row, or None without a usable `roomName`."""
    if not isinstance(row, Mapping):
        return None
    name = room_name(row.get("roomName"))
    if name is None:
        return None
    return InsightsRoom(
        room_name=name,
        created_at_ms=parse_api_time(row.get("createdAt")),
        first_session_started_at_ms=parse_api_time(row.get("firstSessionStartedAt")),
        last_session_started_at_ms=parse_api_time(row.get("lastSessionStartedAt")),
        total_sessions=count(row.get("totalSessions")),
    )


def parse_session(row: Any, queried_room: str) -> InsightsSession | None:
    """A room-sessions row of `queried_room`, or None without an id and a start (`startedAt`, or the
    schema's `createdAt`), or when it names another room."""
    if not isinstance(row, Mapping):
        return None
    session_id = _id(row.get("roomSessionId"))
    started = parse_api_time(row.get("startedAt"))
    if started is None:
        started = parse_api_time(row.get("createdAt"))
    name = room_name(row.get("roomName")) or queried_room
    if session_id is None or started is None or name != queried_room:
        return None
    ended = parse_api_time(row.get("endedAt"))
    return InsightsSession(
        room_session_id=session_id,
        room_name=name,
        started_at_ms=started,
        ended_at_ms=ended if ended is not None else parse_api_time(row.get("endAt")),
        participant_minutes=count(row.get("totalParticipantMinutes")),
        recorder_minutes=count(row.get("totalRecorderMinutes")),
        streamer_minutes=count(row.get("totalStreamerMinutes")),
    )


def parse_participant(row: Any, queried_session: str) -> InsightsParticipant | None:
    """A participants row of `queried_session`, or None without a participant id and a join time, or when
    it names another session. A `leftAt` that is not a time after the join counts as absent (still in the
    room, or unknown): a left is never made up."""
    if not isinstance(row, Mapping):
        return None
    ident = participant_id(row.get("participantId"))
    joined = parse_api_time(row.get("joinedAt"))
    session = _id(row.get("roomSessionId"))
    if ident is None or joined is None or (session is not None and session != queried_session):
        return None
    left = parse_api_time(row.get("leftAt"))
    return InsightsParticipant(
        room_session_id=session,
        participant_id=ident,
        role_name=_id(row.get("roleName")),
        display_name=_text(row.get("displayName"), 100),
        external_id=_id(row.get("externalId")),
        joined_at_ms=joined,
        left_at_ms=left if left is not None and left >= joined else None,
    )


# ------------------------------------------------------------------------ our read API's rows


@dataclass(frozen=True)
class OurConnection:
    """One of our connections of a session, as far as matching and backfill need it."""

    participant_id: str
    joined_at_ms: int | None
    left_at_ms: int | None
    end_source: str
    role_class: str
    minutes: int

    @property
    def has_join(self) -> bool:
        return self.joined_at_ms is not None

    @property
    def has_left(self) -> bool:
        return self.end_source in HAS_LEFT


@dataclass(frozen=True)
class OurSession:
    """Our totals of one session, in whole minutes per role class."""

    human: int
    recorder: int
    streamer: int
    assistant: int | None
    captioner: int | None


def parse_connection(row: Any) -> OurConnection | None:
    """A row of our `/insights/participants`, or None when it lacks a participant id."""
    if not isinstance(row, dict):
        return None
    ident = participant_id(row.get("participantId"))
    if ident is None:
        return None
    end_source = row.get("endSource")
    role_class = row.get("roleClass")
    return OurConnection(
        participant_id=ident,
        joined_at_ms=parse_api_time(row.get("joinedAt")),
        left_at_ms=parse_api_time(row.get("leftAt")),
        end_source=end_source if isinstance(end_source, str) else "open",
        role_class=role_class if isinstance(role_class, str) else "human",
        minutes=count(row.get("minutes")) or 0,
    )


def parse_session_totals(row: Any) -> OurSession | None:
    """Totals of a row of our `/insights/room-sessions`, or None when the row is not one."""
    if not isinstance(row, dict):
        return None
    human = count(row.get("totalParticipantMinutes"))
    if human is None:
        return None
    return OurSession(
        human=human,
        recorder=count(row.get("totalRecorderMinutes")) or 0,
        streamer=count(row.get("totalStreamerMinutes")) or 0,
        assistant=count(row.get("totalAssistantMinutes")),
        captioner=count(row.get("totalCaptionerMinutes")),
    )
