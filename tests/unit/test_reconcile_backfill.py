"""Backfill synthesis: matching Insights' connections to ours, exactly the missing events, ids. Pure."""

from __future__ import annotations

import orjson

from reconcile.backfill import JOINED, LEFT, clients_at, event_id, match, missing_events
from reconcile.shapes import InsightsParticipant, OurConnection

T = 1_767_258_000_000  # 2026-01-01T09:00:00Z
MIN = 60_000
ROOM, SESSION = "/acme-1", "sess-1"


def row(pid: str, joined: int, left: int | None, role: str = "visitor", ext: str | None = None) -> InsightsParticipant:
    return InsightsParticipant(
        SESSION, pid, role, "Ada", ext, T + joined * MIN, None if left is None else T + left * MIN
    )


def ours(pid: str, joined: int | None, left: int | None, end_source: str = "left") -> OurConnection:
    return OurConnection(
        pid,
        None if joined is None else T + joined * MIN,
        None if left is None else T + left * MIN,
        end_source,
        "human",
        0,
    )


def kinds(events: list) -> list[tuple[str, str, int]]:
    return [(e.participant_id, e.event_type, (e.created_at_ms - T) // MIN) for e in events]


def test_a_complete_session_needs_nothing() -> None:
    rows = [row("a", 0, 30), row("b", 1, 20)]
    assert missing_events(ROOM, SESSION, rows, [ours("a", 0, 30), ours("b", 1, 20)]) == []


def test_lost_left_lost_join_and_a_lost_connection() -> None:
    rows = [row("a", 0, 30), row("b", 1, 20), row("c", 2, 10)]
    have = [ours("a", 0, 40, "session_end"), ours("b", None, None, "no_join")]
    # In time order, as Whereby would have sent them.
    assert kinds(missing_events(ROOM, SESSION, rows, have)) == [
        ("b", JOINED, 1),
        ("c", JOINED, 2),
        ("c", LEFT, 10),
        ("a", LEFT, 30),
    ]


def test_a_rejoin_with_the_same_id_is_two_connections() -> None:
    rows = [row("a", 0, 10), row("a", 30, 40)]
    # We hold the first stay whole and the second without its left.
    have = [ours("a", 0, 10), ours("a", 30, None, "open")]
    assert kinds(missing_events(ROOM, SESSION, rows, have)) == [("a", LEFT, 40)]
    pairs = match(rows, have)
    assert [(r.joined_at_ms, c.joined_at_ms if c else None) for r, c in pairs] == [(T, T), (T + 30 * MIN, T + 30 * MIN)]
    # Nothing of the second stay at all: only it is synthesized.
    assert kinds(missing_events(ROOM, SESSION, rows, [ours("a", 0, 10)])) == [("a", JOINED, 30), ("a", LEFT, 40)]


def test_a_connection_known_only_by_its_left_matches_by_participant() -> None:
    rows = [row("a", 0, 10), row("b", 2, 12)]
    have = [ours("a", None, None, "no_join"), ours("b", 2, 12)]
    assert [(r.participant_id, c.end_source if c else None) for r, c in match(rows, have)] == [
        ("a", "no_join"),
        ("b", "left"),
    ]
    assert kinds(missing_events(ROOM, SESSION, rows, have)) == [("a", JOINED, 0)]


def test_no_left_is_made_up_when_insights_has_none() -> None:
    rows = [row("a", 0, None)]
    assert kinds(missing_events(ROOM, SESSION, rows, [])) == [("a", JOINED, 0)]
    assert missing_events(ROOM, SESSION, rows, [ours("a", 0, None, "open")]) == []


def test_events_are_whereby_webhooks_with_deterministic_ids() -> None:
    rows = [row("a", 0, 30, ext="ext-a"), row("rec", 5, 25, role="recorder")]
    first = missing_events(ROOM, SESSION, rows, [])
    second = missing_events(ROOM, SESSION, rows, [])
    assert [e.body for e in first] == [e.body for e in second]
    doc = orjson.loads(first[0].body)
    assert set(doc) == {"id", "apiVersion", "createdAt", "type", "data"}
    assert doc["id"] == event_id(SESSION, "a", JOINED, "2026-01-01T09:00:00.000Z")
    assert len(doc["id"]) == 64 and int(doc["id"], 16) >= 0
    assert doc["createdAt"] == "2026-01-01T09:00:00.000Z" and doc["apiVersion"] == "1.0"
    assert doc["data"] == {
        "roomName": ROOM,
        "roomSessionId": SESSION,
        "participantId": "a",
        "displayName": "Ada",
        "externalId": "ext-a",
        "roleName": "visitor",
        "numClients": 1,
        "numClientsByRoleName": {"visitor": 1},
    }
    recorder_left = next(e for e in first if e.participant_id == "rec" and e.event_type == LEFT)
    data = orjson.loads(recorder_left.body)["data"]
    assert (data["numClients"], data["numClientsByRoleName"]) == (1, {"visitor": 1})  # the recorder has gone
    assert len({e.event_id for e in first}) == len(first)


def test_clients_at_counts_who_is_in_the_room_after_the_event() -> None:
    rows = [row("a", 0, 30), row("b", 10, 20, role="host")]
    assert clients_at(rows, T + 10 * MIN) == (2, {"host": 1, "visitor": 1})
    assert clients_at(rows, T + 20 * MIN) == (1, {"visitor": 1})
    assert clients_at(rows, T + 30 * MIN) == (0, {})


def test_a_row_repeated_by_the_api_is_one_connection() -> None:
    rows = [row("a", 0, 10), row("a", 0, 10)]
    assert kinds(missing_events(ROOM, SESSION, rows, [])) == [("a", JOINED, 0), ("a", LEFT, 10)]
