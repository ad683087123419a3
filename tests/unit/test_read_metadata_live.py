"""The read API's issue-18 parts without a store: `group_by=metadata.<key>` validation, the live rooms
answer's shape, the arrival report's options and output, and the host/guest rule of the model."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import pytest

from sink.model import party_of
from sink.read import queries, report

DB = "whereby"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param({}, None, id="not-grouped"),
        pytest.param({"group_by": "metadata.plan"}, queries.GroupBy("plan", 20), id="default-limit"),
        pytest.param({"group_by": "metadata.a.b", "group_limit": "100"}, queries.GroupBy("a.b", 100), id="dotted-key"),
        pytest.param({"group_by": "metadata.' OR 1=1 --"}, queries.GroupBy("' OR 1=1 --", 20), id="quotes-are-text"),
    ],
)
def test_group_by_names_one_metadata_key(args: dict[str, str], expected: queries.GroupBy | None) -> None:
    assert queries.parse_group_by(args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param({"group_by": "plan"}, "must be metadata.<key>", id="no-prefix"),
        pytest.param({"group_by": "metadata."}, "must be metadata.<key>", id="no-key"),
        pytest.param({"group_by": "customer"}, "must be metadata.<key>", id="not-metadata"),
        pytest.param({"group_by": "metadata." + "k" * 65}, "1-64 characters", id="longer-than-enrich-keeps"),
        pytest.param({"group_by": "metadata.a\x1bb"}, "control characters", id="escape"),
        pytest.param({"group_by": "metadata.a\u202eb"}, "control characters", id="bidi-override"),
        pytest.param({"group_by": "metadata.plan", "group_limit": "0"}, "limit must be", id="limit-zero"),
        pytest.param({"group_by": "metadata.plan", "group_limit": "101"}, "limit must be", id="limit-too-big"),
        pytest.param({"group_limit": "5"}, "group_limit needs group_by", id="limit-alone"),
    ],
)
def test_a_bad_group_by_is_a_bad_parameter_never_a_query(args: dict[str, str], message: str) -> None:
    for builder in (queries.usage_customers, queries.usage_users):
        with pytest.raises(queries.BadParameter, match=message):
            builder(DB, args)


def test_the_key_travels_as_a_bound_parameter() -> None:
    for builder in (queries.usage_customers, queries.usage_users):
        plain = builder(DB, {"group_by": "metadata.plan"})
        hostile = builder(DB, {"group_by": "metadata.plan'); DROP TABLE events; --"})
        assert hostile.sql == plain.sql
        assert "DROP" not in hostile.sql and hostile.params["group_key"] == "plan'); DROP TABLE events; --"
    with pytest.raises(queries.BadParameter, match="unknown parameter"):
        queries.usage_rooms(DB, {"group_by": "metadata.plan"})


def _row(room: str, participant: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "as_of": datetime(2026, 1, 1, 10, 0, 0),
        "room_name": room,
        "customer_id": "c-1",
        "customer_name": "One",
        "participant_id": participant,
        "connection_id": "e-" + participant,
        "session_key": "s-1",
        "room_session_id": "s-1",
        "display_name": "Someone",
        "role_name": "visitor",
        "role_class": "human",
        "party": "guest",
        "external_id": None,
        "user_key": None,
        "user_source": None,
        "user_id": None,
        "user_name": None,
        "joined_at": datetime(2026, 1, 1, 9, 50, 0),
        "open_s": 600,
        "stale": 0,
        "session_started_at": datetime(2026, 1, 1, 9, 51, 0),
        "first_host_joined_at": datetime(2026, 1, 1, 9, 52, 30, 500_000),
        "first_guest_joined_at": datetime(2026, 1, 1, 9, 50, 0),
    }
    base.update(kw)
    return base


def test_live_rows_become_one_entry_per_room_with_its_sessions_and_stale_ones_apart() -> None:
    query = queries.live_rooms(DB, {"customer_id": "c-1"}, stale_after_s=3600)
    rows = [
        _row("/a", "p-1"),
        _row("/a", "p-2", party="host", role_name="host"),
        _row("/b", "p-3", session_key=None, room_session_id=None, stale=1, open_s=99999),
    ]

    doc = queries.result(query, rows)

    assert (doc["as_of"], doc["stale_after_s"], doc["truncated"]) == ("2026-01-01T10:00:00.000Z", 3600, False)
    a, b = doc["results"]
    assert (a["room_name"], a["present"], a["stale"], [p["party"] for p in a["participants"]]) == (
        "/a",
        2,
        0,
        ["guest", "host"],
    )
    assert a["sessions"] == [
        {
            "session_key": "s-1",
            "room_session_id": "s-1",
            "started_at": "2026-01-01T09:51:00.000Z",
            "first_host_joined_at": "2026-01-01T09:52:30.500Z",
            "first_guest_joined_at": "2026-01-01T09:50:00.000Z",
            "host_after_guest_s": 150.5,
        }
    ]
    assert (b["present"], b["stale"], b["sessions"], b["participants"][0]["stale"]) == (0, 1, [], True)
    assert queries.result(query, [])["results"] == []
    with pytest.raises(queries.BadParameter, match="unknown parameter"):
        queries.live_rooms(DB, {"room": "/a"})


def test_live_answers_are_bounded_and_say_when_they_were_cut() -> None:
    query = queries.live_rooms(DB, {})
    rows = [_row("/a", f"p-{i}") for i in range(queries.LIVE_MAX_CONNECTIONS + 1)]
    doc = queries.result(query, rows)
    assert doc["truncated"] is True and doc["results"][0]["present"] == queries.LIVE_MAX_CONNECTIONS


@pytest.mark.parametrize(
    ("role_name", "role_class", "party"),
    [
        ("host", "human", "host"),
        ("owner", "human", "host"),
        ("member", "human", "host"),
        ("visitor", "human", "guest"),
        ("granted_viewer", "human", "guest"),
        ("something-new", "human", "guest"),
        (None, None, "guest"),
        ("recorder", "recorder", "bot"),
        ("assistant", "assistant", "bot"),
    ],
)
def test_hosts_enter_with_a_hosts_rights_and_every_other_human_is_a_guest(
    role_name: str | None, role_class: str | None, party: str
) -> None:
    assert party_of(role_name, role_class) == party


def _args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {"by": "customer", "from_": "", "to": "", "customer_id": "", "unresolved": False}
    base.update(kw)
    return argparse.Namespace(**base)


def test_report_options_pass_group_by_and_arrival_pages() -> None:
    assert report.request_args(_args(group_by="metadata.plan", group_limit="5")) == {
        "group_by": "metadata.plan",
        "group_limit": "5",
    }
    with pytest.raises(report.ReportError, match="--group-by applies to") as caught:
        report.request_args(_args(by="room", group_by="metadata.plan"))
    assert caught.value.usage
    assert report.request_args(_args(by="arrival", customer_id="c-1", from_="2026-01-01")) == {
        "from": "2026-01-01",
        "customer_id": "c-1",
        "limit": str(queries.ARRIVALS_MAX_LIMIT),
    }


def test_a_grouped_table_names_the_key_and_tells_the_catch_all_from_a_value_named_other() -> None:
    rows = [
        {"customer_id": "c-1", "customer_name": "One", "group_value": "other", "group_other": False, "sessions": 1},
        {"customer_id": "c-1", "customer_name": "One", "group_value": "other", "group_other": True, "sessions": 2},
        {"customer_id": "c-1", "customer_name": "One", "group_value": None, "group_other": False, "sessions": 3},
    ]
    lines = report.render_table("customer", rows, "metadata.plan").splitlines()
    assert lines[0].split()[:3] == ["customer", "name", "metadata.plan"]
    assert [line.split()[2] for line in lines[2:5]] == ["other", "(other)", "(none)"]
    header = report.render_csv("customer", rows, "metadata.plan").splitlines()[0].split(",")
    assert header[:4] == ["customer_id", "customer_name", "group_value", "group_other"]


def test_an_empty_arrival_report_says_so() -> None:
    assert report.render_table("arrival", []) == "no sessions in this range\n"
