"""Reconcile's pure parts: times, the prefix registry, Insights row shapes, the comparison rule, Whereby's
arithmetic, the schedule and the output. No network, no broker."""

from __future__ import annotations

import orjson
import pytest

from reconcile import compare, schedule, wherebymath
from reconcile.compare import Minutes
from reconcile.customers import registry_of
from reconcile.report import Report, SessionResult
from reconcile.results import record, render_table, report_doc
from reconcile.run import may_hold_sessions
from reconcile.shapes import (
    InsightsParticipant,
    InsightsRoom,
    OurConnection,
    OurSession,
    parse_connection,
    parse_participant,
    parse_room,
    parse_session,
)
from reconcile.times import parse_api_time, parse_duration, parse_instant, whereby_time

JAN1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


# ------------------------------------------------------------------------------------------------ times


def test_times_round_trip_in_wherebys_form() -> None:
    assert whereby_time(JAN1 + 412) == "2026-01-01T00:00:00.412Z"
    assert parse_api_time("2026-01-01T00:00:00.412Z") == JAN1 + 412
    assert parse_api_time("2026-01-01T01:00:00+01:00") == JAN1
    assert parse_api_time("2026-01-01T00:00:00") == JAN1  # no offset: UTC, not the host's zone
    assert parse_instant("--from", "2026-01-01") == JAN1
    assert parse_instant("--to", "2026-01-01T00:00:00Z") == JAN1


@pytest.mark.parametrize("value", [None, 5, 1.5, True, "", "yesterday", "2026-13-01T00:00:00Z", "1900-01-01T00:00:00Z",
                                   "9" * 500, ["2026-01-01T00:00:00Z"]])  # fmt: skip
def test_api_times_that_are_not_times_are_none(value: object) -> None:
    assert parse_api_time(value) is None


def test_durations() -> None:
    assert parse_duration("--every", "1h") == 3600
    assert parse_duration("--lag", "30m") == 1800
    assert parse_duration("--every", "1h30m") == 5400
    assert parse_duration("--every", "1d") == 86400
    assert parse_duration("--every", "90") == 90
    for bad in ("", "0", "0m", "1x", "-1h", "h"):
        with pytest.raises(ValueError, match="--every"):
            parse_duration("--every", bad)


def test_bad_instant_names_the_option() -> None:
    with pytest.raises(ValueError, match="--from must be an ISO date"):
        parse_instant("--from", "last tuesday")


# ------------------------------------------------------------------------------------------------ customers


def _customer(ident: str, *prefixes: str) -> tuple[bytes, bytes]:
    return f"customer:{ident}".encode(), orjson.dumps({"customer_id": ident, "room_name_prefixes": list(prefixes)})


def test_longest_registered_prefix_wins_and_a_prefix_never_splits_on_dashes() -> None:
    registry = registry_of([_customer("c-acme", "acme-"), _customer("c-labs", "acme-labs-")])
    assert registry.resolve("/acme-labs-1234") == ("acme-labs-", "c-labs")
    assert registry.resolve("/acme-1234") == ("acme-", "c-acme")
    assert registry.resolve("/acme") is None
    assert registry.resolve("/zeta-1") is None
    assert registry.covering_prefixes() == ["acme-"]  # one listing of /acme- finds the labs' rooms too


def test_registry_follows_updates_tombstones_and_rejects_what_enrichment_rejects() -> None:
    registry = registry_of(
        [
            _customer("c-acme", "acme-"),
            _customer("c-other", "acme-"),  # a prefix another customer owns: rejected, as enrich does
            _customer("c-bad", "Has Spaces"),  # not [a-z0-9-]
            (b"customer:c-x", b"not json"),
            (b"user:ext-1", orjson.dumps({"external_id": "ext-1"})),  # users are not prefixes
            _customer("c-globex", "globex-", "gx-"),
            _customer("c-globex", "globex-"),  # an update drops gx-
            (b"customer:c-acme", None),  # tombstone
        ]
    )
    assert registry.rejected == 3
    assert registry.prefixes == {"globex-": "c-globex"}
    assert registry.resolve("/gx-1") is None
    assert registry.covering_prefixes() == ["globex-"]


# ------------------------------------------------------------------------------------------------ shapes


def test_session_rows_are_read_loosely_as_the_reference_warns() -> None:
    # The schema requires createdAt/endAt but defines startedAt/endedAt: either start will do.
    row = {"roomSessionId": "s1", "roomName": "/acme-1", "createdAt": "2026-01-01T00:00:00Z",
           "totalParticipantMinutes": "12", "totalRecorderMinutes": 3.0, "totalStreamerMinutes": True}  # fmt: skip
    session = parse_session(row, "/acme-1")
    assert session is not None
    assert session.started_at_ms == JAN1
    assert (session.participant_minutes, session.recorder_minutes, session.streamer_minutes) == (12, 3, None)
    assert parse_session({**row, "roomName": "/other"}, "/acme-1") is None  # not the room asked for
    assert parse_session({"roomSessionId": "s1"}, "/acme-1") is None  # no start at all
    assert parse_session(["garbage"], "/acme-1") is None


def test_participant_rows() -> None:
    row = {"roomSessionId": "s1", "participantId": "/p-1", "roleName": "granted_visited", "displayName": 7,
           "joinedAt": "2026-01-01T00:00:00Z", "leftAt": "2025-12-31T00:00:00Z", "externalId": None}  # fmt: skip
    parsed = parse_participant(row, "s1")
    assert parsed is not None
    # The documented example's leading `/` is not in any webhook's participantId.
    assert parsed.participant_id == "p-1"
    assert parsed.role_name == "granted_visited"  # an unknown role is kept as it is
    assert parsed.display_name is None
    assert parsed.left_at_ms is None  # a left before the join is not a left
    assert parse_participant({**row, "roomSessionId": "s2"}, "s1") is None
    assert parse_participant({**row, "joinedAt": None}, "s1") is None
    assert parse_participant({**row, "participantId": {"x": 1}}, "s1") is None


def test_room_rows_and_which_rooms_can_hold_a_session_in_the_period() -> None:
    room = parse_room({"roomName": "acme-1", "createdAt": "2025-06-01T00:00:00Z", "totalSessions": 4,
                       "lastSessionStartedAt": "2026-01-01T10:00:00Z", "firstSessionStartedAt": 17})  # fmt: skip
    assert room is not None
    assert room.room_name == "/acme-1"  # webhooks carry the leading `/`
    day = 86_400_000
    # Created months before the period, with a session in it: kept.
    assert may_hold_sessions(room, JAN1, JAN1 + day)
    assert not may_hold_sessions(room, JAN1 + day, JAN1 + 2 * day)  # last session started before
    unknown = InsightsRoom("/r", None, None, None, None)
    assert may_hold_sessions(unknown, JAN1, JAN1 + day)  # nothing known: never excluded
    assert not may_hold_sessions(InsightsRoom("/r", JAN1 + day, None, None, None), JAN1, JAN1 + day)
    assert not may_hold_sessions(InsightsRoom("/r", None, None, None, 0), JAN1, JAN1 + day)


# ------------------------------------------------------------------------------------------------ compare


def test_participant_minutes_compare_everyone_but_recorder_and_streamer() -> None:
    ours = compare.ours(OurSession(human=10, recorder=4, streamer=2, assistant=3, captioner=None),
                        [OurConnection("cap", 0, 1, "left", "captioner", 5)])  # fmt: skip
    assert ours == Minutes(participant=18, recorder=4, streamer=2, human=10, assistant=3, captioner=5)
    assert compare.status(ours, Minutes(18, 4, 2)) == "match"
    assert compare.status(ours, Minutes(10, 4, 2)) == "mismatch"
    assert compare.status(ours, Minutes(18, 5, 2)) == "mismatch"
    assert compare.status(None, Minutes(18, 4, 2)) == "missing"
    assert ours.as_dict() == {"participant_minutes": 18, "recorder_minutes": 4, "streamer_minutes": 2,
                              "human_minutes": 10, "assistant_minutes": 3, "captioner_minutes": 5}  # fmt: skip


def test_wherebys_arithmetic_rounds_each_connection_up() -> None:
    def stay(role: str, seconds: float | None) -> InsightsParticipant:
        return InsightsParticipant(
            "s", "p", role, None, None, JAN1, None if seconds is None else JAN1 + int(seconds * 1000)
        )

    rows = [stay("visitor", 61), stay("visitor", 60), stay("assistant", 1), stay("recorder", 125),
            stay("streamer", 0.5), stay("host", None)]  # fmt: skip
    assert wherebymath.totals(rows) == (2 + 1 + 1, 3, 1)


def test_our_connection_rows() -> None:
    conn = parse_connection({"participantId": "p", "joinedAt": None, "leftAt": None, "endSource": "no_join",
                             "roleClass": "human", "minutes": None})  # fmt: skip
    assert conn is not None and not conn.has_join and conn.has_left and conn.minutes == 0
    assert parse_connection({"participantId": ""}) is None


# ------------------------------------------------------------------------------------------------ schedule


def test_periods_tile_time_and_wait_for_the_lag() -> None:
    hour = 3_600_000
    now = JAN1 + 10 * hour + 40 * 60_000  # 10:40
    assert schedule.latest_period(now, 3600, 1800) == (JAN1 + 9 * hour, JAN1 + 10 * hour)
    now = JAN1 + 10 * hour + 20 * 60_000  # 10:20: 09:00-10:00 is not due before 10:30
    assert schedule.latest_period(now, 3600, 1800) == (JAN1 + 8 * hour, JAN1 + 9 * hour)
    assert schedule.next_due_ms(JAN1 + 10 * hour, 3600, 1800) == JAN1 + 11 * hour + 30 * 60_000
    later = JAN1 + 13 * hour + 31 * 60_000
    assert schedule.periods_since(JAN1 + 10 * hour, later, 3600, 1800, limit=24) == [
        (JAN1 + 10 * hour, JAN1 + 11 * hour),
        (JAN1 + 11 * hour, JAN1 + 12 * hour),
        (JAN1 + 12 * hour, JAN1 + 13 * hour),
    ]
    assert schedule.periods_since(JAN1 + 10 * hour, later, 3600, 1800, limit=1) == [
        (JAN1 + 12 * hour, JAN1 + 13 * hour)
    ]
    assert schedule.periods_since(None, later, 3600, 1800, limit=24) == [(JAN1 + 12 * hour, JAN1 + 13 * hour)]


# ------------------------------------------------------------------------------------------------ output


def _report() -> Report:
    report = Report("run-1", JAN1 + 5, JAN1, JAN1 + 86_400_000)
    report.sessions = [
        SessionResult(
            "s1",
            "/acme-1",
            "c-acme",
            JAN1 + 60_000,
            "mismatch",
            Minutes(5, 0, 0, 5, 0, 0),
            Minutes(9, 0, 0),
            backfilled_events=2,
            after_backfill="match",
        ),
        SessionResult("s2", "/zeta-1", None, JAN1 + 120_000, "missing", compare.NONE, Minutes(3, 1, 0)),
    ]
    report.backfilled_events = 2
    return report


def test_json_output_has_the_issues_shape() -> None:
    doc = report_doc(_report())
    assert set(doc) == {"from", "to", "sessions", "backfilled_events"}
    assert doc["from"] == "2026-01-01T00:00:00.000Z" and doc["backfilled_events"] == 2
    first = doc["sessions"][0]
    assert {"roomSessionId", "roomName", "customer_id", "status", "ours", "insights"} <= set(first)
    assert first["ours"] == {"participant_minutes": 5, "recorder_minutes": 0, "streamer_minutes": 0,
                             "human_minutes": 5, "assistant_minutes": 0, "captioner_minutes": 0}  # fmt: skip
    assert first["insights"] == {"participant_minutes": 9, "recorder_minutes": 0, "streamer_minutes": 0}
    assert doc["sessions"][1]["customer_id"] is None


def test_table_output_names_the_unresolved_bucket_and_sums_up() -> None:
    text = render_table(_report())
    assert "(unresolved)" in text
    assert "2 sessions (0 match, 1 mismatch, 1 missing)" in text


def test_topic_record_carries_the_schema_and_both_sides() -> None:
    report = _report()
    rec = record(report, report.sessions[0])
    assert rec["schema"] == 1 and rec["run_id"] == "run-1" and rec["room_session_id"] == "s1"
    assert rec["after_backfill"] == "match" and rec["backfilled_events"] == 2
    assert rec["ours"]["participant_minutes"] == 5 and rec["insights"]["participant_minutes"] == 9
