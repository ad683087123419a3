"""Synthetic meetings and the usage they must produce, as pure functions."""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

BASE = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
CUSTOMERS = {"c-acme": "acme-", "c-globex": "globex-", "c-initech": "initech-"}


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    room: str
    participant: str | None
    at: datetime
    body: bytes


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _event(rng: random.Random, event_type: str, room: str, at: datetime, session: str, **client: Any) -> Event:
    event_id = f"{rng.getrandbits(256):064x}"
    data: dict[str, Any] = {"meetingId": "42", "roomName": room, "roomSessionId": session, "subdomain": "chaos"}
    participant = client.get("participantId")
    if participant is not None:
        data.update(client, displayName="Chaos Monkey", roleName="visitor", numClients=2, isDialIn=False)
    doc = {"id": event_id, "apiVersion": "1.0", "createdAt": _iso(at), "type": event_type, "data": data}
    return Event(event_id, event_type, room, participant, at, orjson.dumps(doc))


def meetings(count: int, seed: int = 7) -> list[Event]:
    """`count` meetings of 2-4 participants each, with session start/end, in chronological order."""
    rng = random.Random(seed)
    out: list[Event] = []
    for m in range(count):
        prefix = list(CUSTOMERS.values())[m % len(CUSTOMERS)]
        room = f"/{prefix}{uuid.UUID(int=rng.getrandbits(128))}"
        session = str(uuid.UUID(int=rng.getrandbits(128)))
        start = BASE + timedelta(minutes=m)
        out.append(_event(rng, "room.session.started", room, start, session))
        last_left = start
        for p in range(rng.randint(2, 4)):
            joined = start + timedelta(seconds=rng.randint(0, 120), milliseconds=rng.randint(0, 999))
            left = joined + timedelta(seconds=rng.randint(30, 3000), milliseconds=rng.randint(0, 999))
            last_left = max(last_left, left)
            client = {"participantId": f"p{m}-{p}", "externalId": f"user-{rng.randint(1, 50)}", "metadata": None}
            out.append(_event(rng, "room.client.joined", room, joined, session, **client))
            out.append(_event(rng, "room.client.left", room, left, session, **client))
        out.append(_event(rng, "room.session.ended", room, last_left + timedelta(seconds=30), session))
    return sorted(out, key=lambda e: e.at)


def expected_minutes(acked: list[Event]) -> dict[tuple[str, str], int]:
    """Participant minutes per connection whose join and leave were both acknowledged."""
    joined: dict[tuple[str, str], datetime] = {}
    left: dict[tuple[str, str], datetime] = {}
    for e in acked:
        if e.participant is None:
            continue
        key = (e.room, e.participant)
        if e.event_type == "room.client.joined":
            joined[key] = min(joined.get(key, e.at), e.at)
        elif e.event_type == "room.client.left":
            left[key] = max(left.get(key, e.at), e.at)
    return {
        key: math.ceil(((left[key] - joined[key]) // timedelta(milliseconds=1)) / 60000)
        for key in joined
        if key in left
    }


def whereby_style(events: list[Event], seed: int = 11, window: int = 20) -> list[Event]:
    """Each event one to three times, locally shuffled: at-least-once and out of order, as Whereby sends."""
    rng = random.Random(seed)
    repeated = [e for e in events for _ in range(rng.randint(1, 3))]
    out: list[Event] = []
    for i in range(0, len(repeated), window):
        chunk = repeated[i : i + window]
        rng.shuffle(chunk)
        out.extend(chunk)
    return out
