"""`whereby-pipeline report usage|arrivals`: usage per customer, user or room (optionally split by a
metadata key), or when each session's first host and first guest arrived, as a table, JSON or CSV.

It asks the running read API (default http://127.0.0.1:8082, the sink's port; token from
READ_API_TOKEN) or, with `--clickhouse URL`, runs the same canned queries (:mod:`sink.read.queries`)
straight against a ClickHouse server. Either way the rows are the API's `results` (every page of a
paged endpoint), so `--format json` prints exactly what `GET /usage/...` answers.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.cli import load_settings
from sink import store
from sink.read import queries

DEFAULT_API = "http://127.0.0.1:8082"
UNRESOLVED = "(unresolved)"


@dataclass(frozen=True)
class Column:
    """One column of the table: the result field, its heading, and whether it is summed in the total row."""

    field: str
    heading: str
    total: bool = False


# Every usage table shows minutes by role class, the billable total (humans, assistants and captioners:
# Insights' totalParticipantMinutes) and the connections that add no minutes (open, no join), so a total is
# never read without knowing how complete it is.
COLUMNS: dict[str, tuple[Column, ...]] = {
    "customer": (
        Column("customer_id", "customer"),
        Column("customer_name", "name"),
        Column("participant_minutes", "participant min", True),
        Column("recorder_minutes", "recorder min", True),
        Column("streamer_minutes", "streamer min", True),
        Column("assistant_minutes", "assistant min", True),
        Column("captioner_minutes", "captioner min", True),
        Column("billable_participant_minutes", "billable min", True),
        Column("open_connections", "open", True),
        Column("incomplete_connections", "no join", True),
        Column("sessions", "sessions", True),
        Column("unique_users", "users"),
    ),
    "user": (
        Column("customer_id", "customer"),
        Column("user_key", "user key"),
        Column("user_source", "from"),
        Column("external_id", "external id"),
        Column("user_id", "user"),
        Column("user_name", "user name"),
        Column("participant_minutes", "participant min", True),
        Column("assistant_minutes", "assistant min", True),
        Column("open_connections", "open", True),
        Column("incomplete_connections", "no join", True),
        Column("sessions", "sessions"),
    ),
    "room": (
        Column("room_name", "room"),
        Column("customer_id", "customer"),
        Column("participant_minutes", "participant min", True),
        Column("recorder_minutes", "recorder min", True),
        Column("streamer_minutes", "streamer min", True),
        Column("assistant_minutes", "assistant min", True),
        Column("captioner_minutes", "captioner min", True),
        Column("billable_participant_minutes", "billable min", True),
        Column("open_connections", "open", True),
        Column("incomplete_connections", "no join", True),
        Column("sessions", "sessions", True),
        Column("unique_participants", "participants"),
    ),
    # Per session: when its first host and its first guest joined (VIEWS.md §8); nothing to total.
    "arrival": (
        Column("started_at", "session started"),
        Column("room_name", "room"),
        Column("room_session_id", "session"),
        Column("customer_id", "customer"),
        Column("first_host_joined_at", "first host joined"),
        Column("first_guest_joined_at", "first guest joined"),
        Column("host_after_guest_s", "host after guest (s)"),
    ),
}
ENDPOINT = {
    "customer": "/usage/customers",
    "user": "/usage/users",
    "room": "/usage/rooms",
    "arrival": "/sessions/arrivals",
}
EMPTY = {"arrival": "no sessions in this range\n"}
# A paged endpoint is read a page at a time, this many rows each (the endpoint's most).
PAGE_ROWS = queries.ARRIVALS_MAX_LIMIT
GROUP_VALUE = "group_value"
OTHER_LABEL = "(other)"
NO_VALUE_LABEL = "(none)"


def columns(by: str, group_by: str = "") -> tuple[Column, ...]:
    """The columns of a report: `group_by` (`metadata.<key>`) adds the key's value after the customer
    (and after the user, by user)."""
    base = COLUMNS[by]
    if not group_by:
        return base
    after = 3 if by == "user" else 2  # customer, name | customer, user key, from
    return (*base[:after], Column(GROUP_VALUE, group_by), *base[after:])


class ReportError(Exception):
    """The report could not be made; the message says why and what to do.

    `usage` marks the caller's mistake (a bad option or parameter: exit code 2) as opposed to a
    source that failed (exit code 1).
    """

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def request_args(args: argparse.Namespace) -> dict[str, str]:
    """The query parameters the chosen report sends (the same names as the read API's)."""
    params = {"from": args.from_ or "", "to": args.to or ""}
    if args.by != "customer":
        params["customer_id"] = args.customer_id or ""
        params["unresolved"] = "true" if args.unresolved else ""
    elif args.customer_id or args.unresolved:
        raise ReportError("--customer-id and --unresolved apply to --by user and --by room", usage=True)
    group_by, group_limit = getattr(args, "group_by", ""), getattr(args, "group_limit", "")
    if group_by or group_limit:
        if args.by not in ("customer", "user"):
            raise ReportError("--group-by applies to --by customer and --by user", usage=True)
        params["group_by"], params["group_limit"] = group_by or "", str(group_limit or "")
    if args.by == "arrival":
        params["limit"] = str(PAGE_ROWS)
    return {k: v for k, v in params.items() if v}


def fetch_api(
    api: str, by: str, params: dict[str, str], token: str, *, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The results of `GET <api>/usage/...` (every page of a paged endpoint); ReportError with the API's
    own message on a 4xx."""
    results: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = {**params, "cursor": cursor} if cursor else params
        doc = _get(api, ENDPOINT[by], page, token, timeout_s)
        results += doc["results"]
        cursor = doc.get("cursor")
        if not cursor:
            return results


def _get(api: str, path: str, params: dict[str, str], token: str, timeout_s: float) -> dict[str, Any]:
    """One `GET <api><path>` answer; ReportError with the API's own message on a 4xx."""
    url = api.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            doc = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read()).get("error", exc.reason)
        except (orjson.JSONDecodeError, AttributeError):
            message = exc.reason
        hint = " (set READ_API_TOKEN)" if exc.code == 401 else ""
        raise ReportError(f"read API answered {exc.code}: {message}{hint}", usage=exc.code == 400) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ReportError(
            f"cannot reach the read API at {api}: {reason}; is the sink running? (or use --api URL / --clickhouse URL)"
        ) from None
    answer: dict[str, Any] = doc
    return answer


def fetch_clickhouse(
    url: str, database: str, by: str, params: dict[str, str], *, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The same results, computed straight on a ClickHouse server (or a chdb directory no sink holds),
    read-only and stopped after `timeout_s`, as the read API runs them."""
    builder = queries.ENDPOINTS[ENDPOINT[by]]
    results: list[dict[str, Any]] = []
    client = store.connect(url)
    try:
        cursor: str | None = None
        while True:
            try:
                query = builder(database, {**params, "cursor": cursor} if cursor else params)
            except queries.BadParameter as exc:
                raise ReportError(str(exc), usage=True) from None
            rows = store.query_dicts(client, query.sql, query.params, store.read_settings(timeout_s))
            doc = queries.result(query, rows)
            results += doc["results"]
            cursor = doc.get("cursor")
            if not cursor:
                return results
    finally:
        client.close()


# A spreadsheet runs a cell that starts with one of these as a formula (`=HYPERLINK(...)`, `+cmd|...`,
# `@SUM(...)`; tab and CR can hide such a start). Names and ids come from the dimensions topic and from
# the end user's browser (externalId), so every text cell that starts with one gets a leading `'`, as
# OWASP's CSV-injection guidance recommends; spreadsheets show the text and run nothing.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """`value` as a CSV cell a spreadsheet will not evaluate: text starting like a formula is prefixed
    with `'`; numbers (a negative count is still a number) and None are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _printable(text: str) -> str:
    """Control characters shown as escapes, so a name cannot move the cursor or recolour a terminal."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _cell(column: Column, row: dict[str, Any]) -> str:
    value = row.get(column.field)
    if column.field == GROUP_VALUE:
        # The catch-all of values beyond --group-limit, told apart from a real value "other".
        if row.get("group_other"):
            return OTHER_LABEL
        if value is None:
            return NO_VALUE_LABEL
    if value is None:
        return UNRESOLVED if column.field == "customer_id" else "-"
    return _printable(str(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_table(by: str, rows: Sequence[dict[str, Any]], group_by: str = "") -> str:
    """A plain-text table with aligned columns (numbers right-aligned) and, for usage, a total row."""
    cols = columns(by, group_by)
    if not rows:
        return EMPTY.get(by, "no usage in this range\n")
    body = [[_cell(c, row) for c in cols] for row in rows]
    totals = any(c.total for c in cols)
    total = ["total", *["" for _ in cols[1:]]]
    for i, c in enumerate(cols):
        if c.total:
            total[i] = str(sum(int(row.get(c.field) or 0) for row in rows))
    numeric = [all(_is_number(row.get(c.field)) for row in rows) for c in cols]
    lines = [*body, total] if totals else body
    widths = [max(len(c.heading), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line([c.heading for c in cols]), rule, *(line(b) for b in body)]
    if totals:
        out += [rule, line(total)]
    return "\n".join(out) + "\n"


def render_csv(by: str, rows: Sequence[dict[str, Any]], group_by: str = "") -> str:
    """CSV (RFC 4180) with the result field names as the header; NULL is an empty cell; text that a
    spreadsheet would run as a formula is escaped (see `csv_safe`). Grouped, `group_value` comes with
    `group_other` (true for the catch-all of the values beyond --group-limit)."""
    out = io.StringIO()
    # RFC 4180 line ends: with CRLF as the terminator, the csv module also quotes a field holding a lone
    # CR (with "\n" it would not, and a CR inside a name would split the row for every reader).
    writer = csv.writer(out, lineterminator="\r\n")
    fields = [c.field for c in columns(by, group_by)]
    if group_by:
        fields.insert(fields.index(GROUP_VALUE) + 1, "group_other")
    writer.writerow(fields)
    for row in rows:
        writer.writerow(["" if row.get(f) is None else csv_safe(row.get(f)) for f in fields])
    return out.getvalue()


def render(by: str, rows: Sequence[dict[str, Any]], fmt: str, group_by: str = "") -> str:
    """The report in `fmt` (table, json or csv)."""
    if fmt == "json":
        return orjson.dumps({"results": list(rows)}, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        return render_csv(by, rows, group_by)
    return render_table(by, rows, group_by)


def usage(args: argparse.Namespace) -> int:
    """Run `report usage`; returns the exit code (2 for a usage error, 1 when the source fails)."""
    settings = load_settings()
    try:
        params = request_args(args)
        if args.clickhouse:
            rows = fetch_clickhouse(
                args.clickhouse,
                args.database or settings.clickhouse_database,
                args.by,
                params,
                timeout_s=settings.read_query_timeout_s,
            )
        else:
            rows = fetch_api(args.api, args.by, params, settings.read_api_token)
    except ReportError as exc:
        print(f"whereby-pipeline report: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    sys.stdout.write(render(args.by, rows, args.format, getattr(args, "group_by", "")))
    return 0


def arrivals(args: argparse.Namespace) -> int:
    """Run `report arrivals`: per session that started in the range, when its first host and its first
    guest joined; returns the exit code as `usage` does."""
    args.by = "arrival"
    return usage(args)


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (table)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--api", default=DEFAULT_API, help=f"read API base URL (default {DEFAULT_API})")
    source.add_argument("--clickhouse", default="", help="query this ClickHouse URL directly instead of the API")
    p.add_argument("--database", default="", help="with --clickhouse: database (default CLICKHOUSE_DATABASE)")


def register(sub: Any) -> None:
    """Add `report usage` and `report arrivals` to the `whereby-pipeline` parser."""
    report = sub.add_parser("report", help="usage reports from the read API or a ClickHouse server")
    kinds = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    p = kinds.add_parser("usage", help="participant minutes and sessions per customer, user or room")
    p.add_argument("--by", choices=("customer", "user", "room"), default="customer", help="group by (customer)")
    p.add_argument("--from", dest="from_", default="", help="ISO date or date-time (UTC), inclusive")
    p.add_argument("--to", default="", help="ISO date or date-time (UTC), exclusive")
    p.add_argument("--customer-id", default="", help="only this customer (--by user|room)")
    p.add_argument("--unresolved", action="store_true", help="only the unresolved bucket (--by user|room)")
    p.add_argument(
        "--group-by",
        default="",
        metavar="metadata.KEY",
        help="also split by the value of this metadata key (--by customer|user), e.g. metadata.plan",
    )
    p.add_argument(
        "--group-limit",
        default="",
        metavar="N",
        help=f"with --group-by: the N most used values by name, the rest as 'other' (default "
        f"{queries.DEFAULT_GROUP_LIMIT}, at most {queries.MAX_GROUP_LIMIT})",
    )
    _source_options(p)
    p.set_defaults(handler=usage)

    a = kinds.add_parser("arrivals", help="per session: when its first host and its first guest joined")
    a.add_argument("--from", dest="from_", default="", help="sessions started at or after (ISO, UTC)")
    a.add_argument("--to", default="", help="sessions started before (ISO, UTC)")
    a.add_argument("--customer", "--customer-id", dest="customer_id", default="", help="only this customer")
    a.add_argument("--unresolved", action="store_true", help="only the unresolved bucket")
    _source_options(a)
    a.set_defaults(handler=arrivals, by="arrival")
