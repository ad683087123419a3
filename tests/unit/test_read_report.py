"""The report command's options and output formats, without a server."""

from __future__ import annotations

import argparse
import csv
import io

import orjson
import pytest

from sink.read import report

CUSTOMERS = [
    {
        "customer_id": "c-acme",
        "customer_name": "Acme",
        "participant_minutes": 1200,
        "recorder_minutes": 5,
        "streamer_minutes": 0,
        "assistant_minutes": 30,
        "captioner_minutes": 0,
        "billable_participant_minutes": 1230,
        "open_connections": 1,
        "incomplete_connections": 0,
        "sessions": 3,
        "unique_users": 2,
    },
    {
        "customer_id": None,
        "customer_name": None,
        "participant_minutes": 7,
        "recorder_minutes": 0,
        "streamer_minutes": 0,
        "assistant_minutes": 0,
        "captioner_minutes": 0,
        "billable_participant_minutes": 7,
        "open_connections": 0,
        "incomplete_connections": 2,
        "sessions": 1,
        "unique_users": 0,
    },
]


def test_the_table_is_aligned_names_the_unresolved_bucket_and_totals_the_minutes() -> None:
    lines = report.render_table("customer", CUSTOMERS).splitlines()
    assert lines[0].split() == [
        "customer",
        "name",
        "participant",
        "min",
        "recorder",
        "min",
        "streamer",
        "min",
        "assistant",
        "min",
        "captioner",
        "min",
        "billable",
        "min",
        "open",
        "no",
        "join",
        "sessions",
        "users",
    ]
    assert lines[2].split() == ["c-acme", "Acme", "1200", "5", "0", "30", "0", "1230", "1", "0", "3", "2"]
    assert lines[3].split() == ["(unresolved)", "-", "7", "0", "0", "0", "0", "7", "0", "2", "1", "0"]
    assert lines[-1].split() == ["total", "1207", "5", "0", "30", "0", "1237", "1", "2", "4"]
    # Numbers are right-aligned: the column ends where its heading ends.
    assert lines[0].index("participant min") + len("participant min") == lines[3].index(" 7 ") + 2
    assert len({len(line) for line in lines[:2]}) == 1


def test_an_empty_report_says_so() -> None:
    assert report.render_table("user", []) == "no usage in this range\n"


def test_csv_uses_the_field_names_and_empty_cells_for_null() -> None:
    rows = list(csv.reader(io.StringIO(report.render("customer", CUSTOMERS, "csv"))))
    assert rows[0] == [c.field for c in report.COLUMNS["customer"]]
    assert rows[2] == ["", "", "7", "0", "0", "0", "0", "7", "0", "2", "1", "0"]


def test_json_is_the_api_document() -> None:
    assert orjson.loads(report.render("customer", CUSTOMERS, "json")) == {"results": CUSTOMERS}


def _args(**kw: str | bool) -> argparse.Namespace:
    base: dict[str, str | bool] = {"by": "customer", "from_": "", "to": "", "customer_id": "", "unresolved": False}
    base.update(kw)
    return argparse.Namespace(**base)


def test_request_args_pass_the_range_and_the_customer_filter() -> None:
    assert report.request_args(_args(from_="2026-01-01")) == {"from": "2026-01-01"}
    assert report.request_args(_args(by="user", customer_id="c-acme", to="2026-02-01")) == {
        "to": "2026-02-01",
        "customer_id": "c-acme",
    }
    assert report.request_args(_args(by="room", unresolved=True)) == {"unresolved": "true"}
    with pytest.raises(report.ReportError, match="apply to --by user and --by room") as caught:
        report.request_args(_args(customer_id="c-acme"))
    assert caught.value.usage


def test_an_unreachable_api_is_a_clear_error() -> None:
    with pytest.raises(report.ReportError, match=r"cannot reach the read API at http://127\.0\.0\.1:9"):
        report.fetch_api("http://127.0.0.1:9", "customer", {}, "", timeout_s=2)


@pytest.mark.parametrize(
    "name",
    ['=HYPERLINK("http://evil","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"],
)
def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_escaped(name: str) -> None:
    rows = [{**CUSTOMERS[0], "customer_id": name, "customer_name": name, "participant_minutes": -3}]

    [_, cells] = list(csv.reader(io.StringIO(report.render("customer", rows, "csv"), newline="")))

    assert cells[:3] == ["'" + name, "'" + name, "-3"]  # text escaped; a number stays a number


def test_csv_leaves_ordinary_text_alone() -> None:
    rows = [{**CUSTOMERS[0], "customer_id": "c-1", "customer_name": "Acme = Best, Inc."}]

    [_, cells] = list(csv.reader(io.StringIO(report.render("customer", rows, "csv"))))

    assert cells[:2] == ["c-1", "Acme = Best, Inc."]


def test_the_table_shows_control_characters_as_escapes() -> None:
    rows = [{**CUSTOMERS[0], "customer_name": "Acme\x1b[2J\x07"}]

    assert "Acme\\x1b[2J\\x07" in report.render_table("customer", rows)
