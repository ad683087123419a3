"""The read queries' parameter handling, cursors and results, without an engine."""

from __future__ import annotations

from datetime import datetime

import pytest

from sink.read import queries
from sink.read.queries import BadParameter

DB = "whereby"


@pytest.mark.parametrize(
    ("raw", "expected_ms"),
    [
        ("2026-01-01", 1_767_225_600_000),
        ("2026-01-01T09:00:00Z", 1_767_258_000_000),
        ("2026-01-01T09:00:00", 1_767_258_000_000),  # no offset: UTC
        ("2026-01-01T10:00:00+01:00", 1_767_258_000_000),
        ("2026-01-01T09:00:00.250Z", 1_767_258_000_250),
    ],
)
def test_instants_are_iso_dates_or_date_times_in_utc(raw: str, expected_ms: int) -> None:
    assert queries.parse_instant("from", raw) == expected_ms


@pytest.mark.parametrize("raw", ["yesterday", "2026-13-01", "01/02/2026", "2026-01-01T25:00", "1800-01-01"])
def test_a_bad_instant_names_the_parameter_and_the_format(raw: str) -> None:
    with pytest.raises(BadParameter, match=r"^from must be"):
        queries.parse_instant("from", raw)


def test_the_range_is_all_time_when_absent_and_from_must_come_before_to() -> None:
    assert queries.time_range({}) == queries.ALL_TIME
    assert queries.time_range({"from": "2026-01-01"}) == (1_767_225_600_000, queries.ALL_TIME[1])
    with pytest.raises(BadParameter, match="from must be before to"):
        queries.time_range({"from": "2026-01-02", "to": "2026-01-01"})
    with pytest.raises(BadParameter, match="from must be before to"):
        queries.time_range({"from": "2026-01-01", "to": "2026-01-01"})


@pytest.mark.parametrize(("raw", "limit"), [(None, 10), ("1", 1), ("100", 100), ("25", 25)])
def test_limit_is_1_to_100_and_10_by_default(raw: str | None, limit: int) -> None:
    assert queries.parse_limit({} if raw is None else {"limit": raw}) == limit


@pytest.mark.parametrize("raw", ["0", "101", "-1", "ten", "1.5", " 5"])
def test_a_limit_outside_1_to_100_is_refused(raw: str) -> None:
    with pytest.raises(BadParameter, match="limit must be a whole number from 1 to 100"):
        queries.parse_limit({"limit": raw})


def test_unknown_parameters_are_refused_rather_than_ignored() -> None:
    with pytest.raises(BadParameter, match=r"unknown parameter\(s\): customerId"):
        queries.usage_users(DB, {"customerId": "c-acme"})


def test_customer_id_and_the_unresolved_bucket_exclude_each_other() -> None:
    with pytest.raises(BadParameter, match="not both"):
        queries.usage_users(DB, {"customer_id": "c-acme", "unresolved": "true"})
    with pytest.raises(BadParameter, match="unresolved must be true or false"):
        queries.usage_users(DB, {"unresolved": "yes"})
    assert "customer_id IS NULL" in queries.usage_users(DB, {"unresolved": "true"}).sql


def test_required_insights_filters_are_checked() -> None:
    with pytest.raises(BadParameter, match="roomName is required"):
        queries.insights_room_sessions(DB, {})
    with pytest.raises(BadParameter, match="one of roomSessionId, externalId, userId or userKey is required"):
        queries.insights_participants(DB, {"limit": "5"})


def test_sort_by_is_one_of_the_allowed_fields() -> None:
    with pytest.raises(BadParameter, match="sortBy must be one of"):
        queries.insights_rooms(DB, {"sortBy": "room_name; DROP TABLE x"})
    with pytest.raises(BadParameter, match="sortBy must be one of"):
        queries.insights_rooms(DB, {"sortBy": "totalSessions:sideways"})
    query = queries.insights_rooms(DB, {"sortBy": "totalSessions:desc"})
    assert "ORDER BY _k0 DESC, _k1 DESC" in query.sql


@pytest.mark.parametrize(
    ("builder", "args"),
    [
        (queries.usage_users, {"customer_id": "{x}"}),
        (queries.usage_rooms, {"customer_id": "'; DROP TABLE events --"}),
        (queries.insights_rooms, {"roomNamePrefix": "acme') OR 1=1 --", "customer_id": "c' OR '1'='1"}),
        (queries.insights_room_sessions, {"roomName": "/r'\"`", "roomSessionId": "s') UNION SELECT 1 --"}),
        (queries.insights_participants, {"externalId": "x\\' OR ''='", "roomSessionId": "{room:String}"}),
    ],
)
def test_request_text_never_becomes_sql(builder: queries.Builder, args: dict[str, str]) -> None:
    """The SQL for hostile values equals the SQL for plain ones: values travel only as bound parameters."""
    plain = builder(DB, {k: "plain" for k in args})
    hostile = builder(DB, args)
    assert hostile.sql == plain.sql
    for value in args.values():
        assert value not in hostile.sql
    assert set(args.values()) <= set(hostile.params.values())


def test_the_database_name_must_be_an_identifier() -> None:
    with pytest.raises(ValueError, match="plain identifier"):
        queries.usage_customers("x; DROP", {})


def _page(args: dict[str, str]) -> queries.Query:
    return queries.insights_participants(DB, {"roomSessionId": "s-1", **args})


def test_a_cursor_continues_after_the_last_row_of_the_page() -> None:
    first = _page({"limit": "2"})
    assert first.params["_limit"] == 3  # one extra row tells whether there is a next page
    rows = [{"participantId": p, "_k0": 1000 + i, "_k1": "/r", "_k2": p} for i, p in enumerate(["a", "b", "c"])]
    doc = queries.result(first, rows)
    assert [r["participantId"] for r in doc["results"]] == ["a", "b"]
    assert all(not k.startswith("_k") for r in doc["results"] for k in r)
    second = _page({"limit": "2", "cursor": doc["cursor"]})
    assert (second.params["_c0"], second.params["_c1"], second.params["_c2"]) == (1001, "/r", "b")
    assert "tuple(_k0, _k1, _k2) > tuple({_c0:Int64}, {_c1:String}, {_c2:String})" in second.sql


def test_the_last_page_has_a_null_cursor() -> None:
    query = _page({"limit": "2"})
    doc = queries.result(query, [{"participantId": "a", "_k0": 1, "_k1": "/r", "_k2": "a"}])
    assert doc == {"cursor": None, "results": [{"participantId": "a"}]}


def test_a_descending_sort_pages_backwards() -> None:
    cursor = queries.encode_cursor(
        "leftAt:desc", queries._fingerprint("/insights/participants", {"roomSessionId": "s-1"}), [5, "/r", "p"]
    )
    query = _page({"sortBy": "leftAt:desc", "cursor": cursor})
    assert "tuple(_k0, _k1, _k2) < tuple(" in query.sql


@pytest.mark.parametrize("cursor", ["not-a-cursor", "e30", "eyJrIjoxfQ", "!!!!"])
def test_a_cursor_that_is_not_ours_is_refused(cursor: str) -> None:
    with pytest.raises(BadParameter, match="cursor is not valid"):
        _page({"cursor": cursor})


def test_a_cursor_from_another_filter_or_sort_is_refused() -> None:
    rows = [{"_k0": i, "_k1": "/r", "_k2": str(i)} for i in range(3)]
    cursor = queries.result(_page({"limit": "2"}), rows)["cursor"]
    with pytest.raises(BadParameter, match="cursor belongs to another query"):
        queries.insights_participants(DB, {"roomSessionId": "s-2", "cursor": cursor})
    with pytest.raises(BadParameter, match="cursor belongs to another query"):
        _page({"sortBy": "leftAt:asc", "cursor": cursor})
    # The limit may change between pages.
    assert _page({"limit": "50", "cursor": cursor}).params["_c2"] == "1"


def test_a_cursor_with_keys_of_the_wrong_type_is_refused() -> None:
    fingerprint = queries._fingerprint("/insights/participants", {"roomSessionId": "s-1"})
    for key in (["1", "/r", "p"], [True, "/r", "p"], [1, "/r"]):
        with pytest.raises(BadParameter, match="cursor is not valid"):
            _page({"cursor": queries.encode_cursor("joinedAt:asc", fingerprint, key)})


def test_results_render_times_as_iso_utc() -> None:
    query = queries.usage_customers(DB, {})
    doc = queries.result(query, [{"customer_id": None, "at": datetime(2026, 1, 1, 9, 0, 0, 250000)}])
    assert doc == {"results": [{"customer_id": None, "at": "2026-01-01T09:00:00.250Z"}]}
