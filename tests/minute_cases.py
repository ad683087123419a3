"""The minute model's cases, as webhook events and the minutes a finance team would expect.

One table, two runners: `tests/unit/test_minute_model.py` checks the pure model (`sink.model`) on each
case, and `tests/integration/test_minute_cases.py` sends the same webhook bodies through real enrichment
into the real engine and reads the views — each case once in order and once delivered three times,
shuffled. Every case is a rule of `sink/VIEWS.md`; the comment on each says which.

Times are minutes after T0 (2026-03-10 10:00:00 UTC) unless a case gives a datetime.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 10, 10, 0, 0, tzinfo=UTC)

CUSTOMERS = {
    "c-acme": ("Acme Inc", ["acme-"]),
    "c-labs": ("Acme Labs", ["acme-labs-"]),
    "c-globex": ("Globex", ["globex-"]),
}
USERS = {"ext-ada": ("u-ada", "Ada Lovelace", "c-acme"), "ext-bob": ("u-bob", "Bob", "c-acme")}


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def at(minutes: float | datetime) -> datetime:
    return minutes if isinstance(minutes, datetime) else T0 + timedelta(minutes=minutes)


def webhook(
    kind: str,
    room: str,
    when: float | datetime,
    *,
    pid: str | None = None,
    session: str | None = None,
    n: int | None = None,
    ext: str | None = None,
    role: str = "visitor",
    name: str = "Someone",
    metadata: str | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """A Whereby webhook body. Its id is derived from its content, so a case is the same set every run."""
    data: dict[str, Any] = {"meetingId": "777", "roomName": room, "roomSessionId": session, "subdomain": "examplecorp"}
    if pid is not None:
        data.update(participantId=pid, displayName=name, metadata=metadata, externalId=ext, roleName=role)
        if n is not None:
            data.update(numClients=n, numClientsByRoleName={role: n} if n else {})
        data["isDialIn"] = False
    created = iso(at(when))
    ident = hashlib.sha256(f"{kind}|{room}|{pid}|{session}|{created}|{tag}".encode()).hexdigest()
    return {"id": ident, "apiVersion": "1.0", "createdAt": created, "type": kind, "data": data}


J, L = "room.client.joined", "room.client.left"
S, E = "room.session.started", "room.session.ended"


@dataclass
class Case:
    """Webhooks in; minutes out. `connections` maps (participant, joined minute or None) to
    (minutes or None, end_source); `customers` maps customer id (None: unresolved) to participant minutes;
    `users` maps (customer, externalId) to participant minutes; `other` holds other expected totals."""

    name: str
    events: list[dict[str, Any]]
    connections: dict[tuple[str, float | datetime | None], tuple[int | None, str]]
    customers: dict[str | None, int]
    users: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)
    # Synthesized (Insights) events: the raw record carries event-source=insights.
    synthesized: set[str] = field(default_factory=set)


ROOM = "/acme-0b6c2d4e-8f1a-4c3b-9d5e-7a2b4c6d8e0f"
LABS = "/acme-labs-1d2e3f40"
GLOBEX = "/globex-5a6b7c8d"
ZETA = "/zeta-unregistered"


def _cases() -> list[Case]:
    cases = []
    # §1, §5: two people, a session, each connection rounded up on its own.
    cases.append(
        Case(
            "a plain meeting",
            [
                webhook(J, ROOM, 0, pid="p-ada", ext="ext-ada", n=1),
                webhook(J, ROOM, 1, pid="p-bob", session="s1", ext="ext-bob", n=2),
                webhook(S, ROOM, 1.01, session="s1"),
                webhook(L, ROOM, 11.5, pid="p-bob", session="s1", ext="ext-bob", n=1),
                webhook(L, ROOM, 30.25, pid="p-ada", session="s1", ext="ext-ada", n=0),
                webhook(E, ROOM, 32, session="s1"),
            ],
            {("p-ada", 0): (31, "left"), ("p-bob", 1): (11, "left")},
            {"c-acme": 42},
            {("c-acme", "ext-ada"): 31, ("c-acme", "ext-bob"): 11},
        )
    )
    # §1: leaves at 10:10, rejoins with the same participantId at 10:30 until 10:40: 20 minutes.
    cases.append(
        Case(
            "rejoin with the same participant id",
            [
                webhook(J, ROOM, 0, pid="p-ada", session="s1", ext="ext-ada", n=2),
                webhook(J, ROOM, -5, pid="p-host", session="s1", n=1),
                webhook(L, ROOM, 10, pid="p-ada", session="s1", ext="ext-ada", n=1),
                webhook(J, ROOM, 30, pid="p-ada", session="s1", ext="ext-ada", n=2),
                webhook(L, ROOM, 40, pid="p-ada", session="s1", ext="ext-ada", n=1),
                webhook(L, ROOM, 45, pid="p-host", session="s1", n=0),
            ],
            {("p-ada", 0): (10, "left"), ("p-ada", 30): (10, "left"), ("p-host", -5): (50, "left")},
            {"c-acme": 70},
            {("c-acme", "ext-ada"): 20, ("c-acme", None): 50},
        )
    )
    # §3: a lost `left` closes at its own session's end.
    cases.append(
        Case(
            "lost left closed by its own session end",
            [
                webhook(J, ROOM, 0, pid="p-ada", ext="ext-ada", n=1),
                webhook(J, ROOM, 2, pid="p-bob", session="s1", ext="ext-bob", n=2),
                webhook(S, ROOM, 2, session="s1"),
                webhook(L, ROOM, 20, pid="p-bob", session="s1", ext="ext-bob", n=1),
                # ada's left (at ~25) is lost
                webhook(E, ROOM, 27.5, session="s1"),
            ],
            {("p-ada", 0): (28, "session_end"), ("p-bob", 2): (18, "left")},
            {"c-acme": 46},
            {("c-acme", "ext-ada"): 28, ("c-acme", "ext-bob"): 18},
        )
    )
    # §3: lost `left` and lost session end: closed at the last event before the room was next known
    # empty (bob's left at 20, before his room-emptying... no: the room empties at the next join with
    # numClients = 1, two days later); the second meeting must not absorb it.
    two_days = 2 * 24 * 60
    cases.append(
        Case(
            "lost left and lost session end, a second meeting two days later",
            [
                webhook(J, ROOM, 0, pid="p-ada", ext="ext-ada", n=1),
                webhook(J, ROOM, 2, pid="p-bob", session="s1", ext="ext-bob", n=2),
                webhook(S, ROOM, 2, session="s1"),
                webhook(L, ROOM, 20, pid="p-bob", session="s1", ext="ext-bob", n=1),
                # ada's left and the session end are lost
                webhook(J, ROOM, two_days, pid="p-cat", n=1),
                webhook(J, ROOM, two_days + 1, pid="p-dan", session="s2", n=2),
                webhook(S, ROOM, two_days + 1, session="s2"),
                webhook(L, ROOM, two_days + 10, pid="p-dan", session="s2", n=1),
                webhook(L, ROOM, two_days + 15, pid="p-cat", session="s2", n=0),
                webhook(E, ROOM, two_days + 16, session="s2"),
            ],
            {
                ("p-ada", 0): (20, "estimated"),  # bob's left at 20 is the last event before the room emptied
                ("p-bob", 2): (18, "left"),
                ("p-cat", two_days): (15, "left"),
                ("p-dan", two_days + 1): (9, "left"),
            },
            {"c-acme": 62},
            {("c-acme", "ext-ada"): 20, ("c-acme", "ext-bob"): 18, ("c-acme", None): 24},
            other={"estimated_connections": 1, "sessions": 2},
        )
    )
    # §3: a lost `left`, then the same participant id joins again before the session ends: the first stay
    # ended before the rejoin, at the last event of the room before it (bob's join at 5), not at the
    # session end (which would have charged 56 + 10 minutes for a participant Whereby counts 20).
    cases.append(
        Case(
            "lost left, the same participant rejoins before the session end",
            [
                webhook(J, ROOM, -5, pid="p-host", session="s1", n=1),
                webhook(S, ROOM, -5, session="s1"),
                webhook(J, ROOM, 0, pid="p-ada", session="s1", ext="ext-ada", n=2),
                webhook(J, ROOM, 5, pid="p-bob", session="s1", ext="ext-bob", n=3),
                # ada's left (at 10) is lost
                webhook(J, ROOM, 30, pid="p-ada", session="s1", ext="ext-ada", n=3),
                webhook(L, ROOM, 40, pid="p-ada", session="s1", ext="ext-ada", n=2),
                webhook(L, ROOM, 50, pid="p-bob", session="s1", ext="ext-bob", n=1),
                webhook(L, ROOM, 55, pid="p-host", session="s1", n=0),
                webhook(E, ROOM, 56, session="s1"),
            ],
            {
                ("p-host", -5): (60, "left"),
                ("p-ada", 0): (5, "estimated"),
                ("p-bob", 5): (45, "left"),
                ("p-ada", 30): (10, "left"),
            },
            {"c-acme": 120},
            {("c-acme", "ext-ada"): 15, ("c-acme", "ext-bob"): 45, ("c-acme", None): 60},
            other={"estimated_connections": 1, "sessions": 1},
        )
    )
    # §3: the same, with no session end: the room's known-empty estimate (bob's left at 35) would overlap
    # the rejoin too; the rejoin caps the first stay at the last event before it (the session start at 3).
    cases.append(
        Case(
            "lost left, the same participant rejoins, no session end",
            [
                webhook(J, ROOM, 0, pid="p-ada", ext="ext-ada", n=1),
                webhook(J, ROOM, 3, pid="p-bob", session="s1", ext="ext-bob", n=2),
                webhook(S, ROOM, 3, session="s1"),
                # ada's left is lost
                webhook(J, ROOM, 30, pid="p-ada", session="s1", ext="ext-ada", n=2),
                webhook(L, ROOM, 35, pid="p-bob", session="s1", ext="ext-bob", n=1),
                webhook(L, ROOM, 40, pid="p-ada", session="s1", ext="ext-ada", n=0),
            ],
            {("p-ada", 0): (3, "estimated"), ("p-bob", 3): (32, "left"), ("p-ada", 30): (10, "left")},
            {"c-acme": 45},
            {("c-acme", "ext-ada"): 13, ("c-acme", "ext-bob"): 32},
            other={"estimated_connections": 1, "sessions": 1},
        )
    )
    # §2b: session events without a roomSessionId belong to the session running at that moment.
    cases.append(
        Case(
            "session events without roomSessionId",
            [
                webhook(J, ROOM, 0, pid="p-ada", n=1),
                webhook(J, ROOM, 3, pid="p-bob", session="s1", n=2),
                webhook(S, ROOM, 3.5),
                webhook(L, ROOM, 10, pid="p-bob", session="s1", n=1),
                webhook(E, ROOM, 40),
                # ada's left is lost: she closes at the (id-less) end of s1
            ],
            {("p-ada", 0): (40, "session_end"), ("p-bob", 3): (7, "left")},
            {"c-acme": 47},
            other={"sessions": 1},
        )
    )
    # §2: the first joiner's events carry no session id at all: the session that started after her join,
    # before the room was next known empty.
    cases.append(
        Case(
            "first joiner without a session id",
            [
                webhook(J, ROOM, 0, pid="p-ada", ext="ext-ada", n=1),
                webhook(J, ROOM, 4, pid="p-bob", session="s1", ext="ext-bob", n=2),
                webhook(S, ROOM, 4, session="s1"),
                webhook(L, ROOM, 9, pid="p-ada", ext="ext-ada", n=1),
                webhook(L, ROOM, 12, pid="p-bob", session="s1", ext="ext-bob", n=0),
                webhook(E, ROOM, 14, session="s1"),
            ],
            {("p-ada", 0): (9, "left"), ("p-bob", 4): (8, "left")},
            {"c-acme": 17},
            other={"s1_participant_minutes": 17},
        )
    )
    # §4: only the `left` arrived: no minutes, counted as incomplete.
    cases.append(
        Case(
            "lost join",
            [
                webhook(J, ROOM, 0, pid="p-ada", session="s1", n=1),
                webhook(L, ROOM, 12, pid="p-bob", session="s1", n=1),
                webhook(L, ROOM, 15, pid="p-ada", session="s1", n=0),
            ],
            {("p-ada", 0): (15, "left"), ("p-bob", None): (None, "no_join")},
            {"c-acme": 15},
            other={"incomplete_connections": 1},
        )
    )
    # §5 roles: assistants and captioners have their own columns; bots stay out of participant minutes.
    cases.append(
        Case(
            "an assistant and a captioner",
            [
                webhook(J, LABS, 0, pid="p-eve", session="s9", n=1),
                webhook(J, LABS, 1, pid="p-ast", session="s9", role="assistant", n=2),
                webhook(J, LABS, 1, pid="p-cap", session="s9", role="captioner", n=3),
                webhook(J, LABS, 2, pid="p-rec", session="s9", role="recorder", n=4),
                webhook(L, LABS, 12.5, pid="p-rec", session="s9", role="recorder", n=3),
                webhook(L, LABS, 21, pid="p-cap", session="s9", role="captioner", n=2),
                webhook(L, LABS, 31, pid="p-ast", session="s9", role="assistant", n=1),
                webhook(L, LABS, 33, pid="p-eve", session="s9", n=0),
            ],
            {
                ("p-eve", 0): (33, "left"),
                ("p-ast", 1): (30, "left"),
                ("p-cap", 1): (20, "left"),
                ("p-rec", 2): (11, "left"),
            },
            {"c-labs": 33},
            other={"assistant_minutes": 30, "captioner_minutes": 20, "recorder_minutes": 11},
        )
    )
    # Per-user usage needs no registration; one externalId in two customers' rooms gives two rows.
    cases.append(
        Case(
            "an unregistered externalId, in two customers",
            [
                webhook(J, ROOM, 0, pid="p-x1", session="s1", ext="ext-zoe", n=1),
                webhook(L, ROOM, 5, pid="p-x1", session="s1", ext="ext-zoe", n=0),
                webhook(J, GLOBEX, 0, pid="p-x2", session="s7", ext="ext-zoe", n=1),
                webhook(L, GLOBEX, 7, pid="p-x2", session="s7", ext="ext-zoe", n=0),
                webhook(J, ZETA, 0, pid="p-x3", session="s8", ext="ext-zoe", n=1),
                webhook(L, ZETA, 3, pid="p-x3", session="s8", ext="ext-zoe", n=0),
            ],
            {("p-x1", 0): (5, "left"), ("p-x2", 0): (7, "left"), ("p-x3", 0): (3, "left")},
            {"c-acme": 5, "c-globex": 7, None: 3},
            {("c-acme", "ext-zoe"): 5, ("c-globex", "ext-zoe"): 7, (None, "ext-zoe"): 3},
        )
    )
    # Period and all-time agree at a month boundary: joined Jan 31 23:50, left Feb 1 00:20 → 30 minutes
    # in January.
    jan31 = datetime(2026, 1, 31, 23, 50, tzinfo=UTC)
    cases.append(
        Case(
            "month boundary",
            [
                webhook(J, GLOBEX, jan31, pid="p-fay", session="s5", n=1),
                webhook(L, GLOBEX, jan31 + timedelta(minutes=30), pid="p-fay", session="s5", n=0),
            ],
            {("p-fay", jan31): (30, "left")},
            {"c-globex": 30},
            other={"january_minutes": 30, "february_minutes": 0},
        )
    )
    # §9: alone in the room, leaves (known empty) and rejoins with the same participantId two hours later:
    # the second connection can be derived in a later window than the first (more than ENDED_GRACE_MS
    # after the room was known empty), and the participant is still one.
    cases.append(
        Case(
            "rejoin after the room was known empty",
            [
                webhook(J, ROOM, 0, pid="p-ada", session="s1", ext="ext-ada", n=1),
                webhook(L, ROOM, 10, pid="p-ada", session="s1", ext="ext-ada", n=0),
                webhook(J, ROOM, 130, pid="p-ada", session="s2", ext="ext-ada", n=1),
                webhook(L, ROOM, 140.5, pid="p-ada", session="s2", ext="ext-ada", n=0),
            ],
            {("p-ada", 0): (10, "left"), ("p-ada", 130): (11, "left")},
            {"c-acme": 21},
            {("c-acme", "ext-ada"): 21},
            other={"unique_participants": 1},
        )
    )
    # §9: the same participant either side of midnight (UTC): one participant in each day, one in the month.
    late = datetime(2026, 1, 14, 23, 50, tzinfo=UTC)
    cases.append(
        Case(
            "rejoin across midnight",
            [
                webhook(J, GLOBEX, late, pid="p-fay", session="s6", n=1),
                webhook(L, GLOBEX, late + timedelta(minutes=5), pid="p-fay", session="s6", n=0),
                webhook(J, GLOBEX, late + timedelta(minutes=20), pid="p-fay", session="s7", n=1),
                webhook(L, GLOBEX, late + timedelta(minutes=30), pid="p-fay", session="s7", n=0),
            ],
            {("p-fay", late): (5, "left"), ("p-fay", late + timedelta(minutes=20)): (10, "left")},
            {"c-globex": 15},
            other={"unique_participants": 1, "unique_participant_days": 2},
        )
    )
    # §3: no left, no session end, the room never known empty: open, no minutes, counted.
    cases.append(
        Case(
            "an open connection",
            [
                webhook(J, ROOM, 0, pid="p-ada", session="s1", n=1),
                webhook(J, ROOM, 1, pid="p-bob", session="s1", n=2),
                webhook(L, ROOM, 6, pid="p-bob", session="s1", n=1),
            ],
            {("p-ada", 0): (None, "open"), ("p-bob", 1): (5, "left")},
            {"c-acme": 5},
            other={"open_connections": 1},
        )
    )
    # §1b: an edge synthesized from Insights and the webhook that arrives for it later are one edge.
    twin = webhook(L, ROOM, 20.02, pid="p-ada", session="s1", n=1, tag="insights")
    cases.append(
        Case(
            "a synthesized left and its late webhook",
            [
                webhook(J, ROOM, 0, pid="p-ada", session="s1", n=2),
                webhook(J, ROOM, -1, pid="p-bob", session="s1", n=1),
                twin,
                webhook(L, ROOM, 20, pid="p-ada", session="s1", n=1),
                webhook(L, ROOM, 30, pid="p-bob", session="s1", n=0),
            ],
            {("p-ada", 0): (20, "left"), ("p-bob", -1): (31, "left")},
            {"c-acme": 51},
            synthesized={twin["id"]},
        )
    )
    return cases


CASES = _cases()
