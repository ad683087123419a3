"""`whereby-pipeline report usage`: usage per customer, user or room as a table, JSON or CSV.

It asks the running read API (default http://127.0.0.1:8082, the sink's port; token from
READ_API_TOKEN) or, with `--clickhouse URL`, runs the same canned queries (:mod:`sink.queries`)
straight against a ClickHouse server. Either way the rows are the API's `results`, so `--format json`
prints exactly what `GET /usage/...` answers.
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
from sink import queries, store

DEFAULT_API = "http://127.0.0.1:8082"
UNRESOLVED = "(unresolved)"


@dataclass(frozen=True)
class Column:
    """One column of the table: the result field, its heading, and whether it is summed in the total row."""

    field: str
    heading: str
    total: bool = False


# Every usage table shows minutes by role class and the connections that add no minutes (open, no join)
# or only a lower bound (estimated), so a total is never read without knowing how complete it is.
COLUMNS: dict[str, tuple[Column, ...]] = {
    "customer": (
        Column("customer_id", "customer"),
        Column("customer_name", "name"),
        Column("participant_minutes", "participant min", True),
        Column("recorder_minutes", "recorder min", True),
        Column("streamer_minutes", "streamer min", True),
        Column("assistant_minutes", "assistant min", True),
        Column("captioner_minutes", "captioner min", True),
        Column("open_connections", "open", True),
        Column("incomplete_connections", "no join", True),
        Column("sessions", "sessions", True),
        Column("unique_users", "users"),
    ),
    "user": (
        Column("customer_id", "customer"),
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
        Column("open_connections", "open", True),
        Column("incomplete_connections", "no join", True),
        Column("sessions", "sessions", True),
        Column("unique_participants", "participants"),
    ),
}
ENDPOINT = {"customer": "/usage/customers", "user": "/usage/users", "room": "/usage/rooms"}


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
    return {k: v for k, v in params.items() if v}


def fetch_api(
    api: str, by: str, params: dict[str, str], token: str, *, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """The results of `GET <api>/usage/...`; ReportError with the API's own message on a 4xx."""
    url = api.rstrip("/") + ENDPOINT[by] + ("?" + urllib.parse.urlencode(params) if params else "")
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
    results: list[dict[str, Any]] = doc["results"]
    return results


def fetch_clickhouse(url: str, database: str, by: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """The same results, computed straight on a ClickHouse server (or a chdb directory no sink holds)."""
    try:
        query = queries.ENDPOINTS[ENDPOINT[by]](database, params)
    except queries.BadParameter as exc:
        raise ReportError(str(exc), usage=True) from None
    client = store.connect(url)
    try:
        rows = store.query_dicts(client, query.sql, query.params)
    finally:
        client.close()
    results: list[dict[str, Any]] = queries.result(query, rows)["results"]
    return results


def _cell(column: Column, value: Any) -> str:
    if value is None:
        return UNRESOLVED if column.field == "customer_id" else "-"
    return str(value)


def render_table(by: str, rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table with aligned columns (numbers right-aligned) and a total row."""
    columns = COLUMNS[by]
    if not rows:
        return "no usage in this range\n"
    body = [[_cell(c, row.get(c.field)) for c in columns] for row in rows]
    total = ["total", *["" for _ in columns[1:]]]
    for i, c in enumerate(columns):
        if c.total:
            total[i] = str(sum(int(row.get(c.field) or 0) for row in rows))
    numeric = [all(isinstance(row.get(c.field), int) for row in rows) for c in columns]
    widths = [max(len(c.heading), *(len(line[i]) for line in [*body, total])) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        parts = [cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(cells, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line([c.heading for c in columns]), rule, *(line(b) for b in body), rule, line(total)]) + "\n"


def render_csv(by: str, rows: Sequence[dict[str, Any]]) -> str:
    """CSV with the result field names as the header; NULL is an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = [c.field for c in COLUMNS[by]]
    writer.writerow(fields)
    for row in rows:
        writer.writerow(["" if row.get(f) is None else row.get(f) for f in fields])
    return out.getvalue()


def render(by: str, rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """The report in `fmt` (table, json or csv)."""
    if fmt == "json":
        return orjson.dumps({"results": list(rows)}, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        return render_csv(by, rows)
    return render_table(by, rows)


def usage(args: argparse.Namespace) -> int:
    """Run `report usage`; returns the exit code (2 for a usage error, 1 when the source fails)."""
    settings = load_settings()
    try:
        params = request_args(args)
        if args.clickhouse:
            rows = fetch_clickhouse(args.clickhouse, args.database or settings.clickhouse_database, args.by, params)
        else:
            rows = fetch_api(args.api, args.by, params, settings.read_api_token)
    except ReportError as exc:
        print(f"whereby-pipeline report: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    sys.stdout.write(render(args.by, rows, args.format))
    return 0


def register(sub: Any) -> None:
    """Add `report usage` to the `whereby-pipeline` parser."""
    report = sub.add_parser("report", help="usage reports from the read API or a ClickHouse server")
    kinds = report.add_subparsers(dest="report", required=True, metavar="REPORT")
    p = kinds.add_parser("usage", help="participant minutes and sessions per customer, user or room")
    p.add_argument("--by", choices=("customer", "user", "room"), default="customer", help="group by (customer)")
    p.add_argument("--from", dest="from_", default="", help="ISO date or date-time (UTC), inclusive")
    p.add_argument("--to", default="", help="ISO date or date-time (UTC), exclusive")
    p.add_argument("--customer-id", default="", help="only this customer (--by user|room)")
    p.add_argument("--unresolved", action="store_true", help="only the unresolved bucket (--by user|room)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (table)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--api", default=DEFAULT_API, help=f"read API base URL (default {DEFAULT_API})")
    source.add_argument("--clickhouse", default="", help="query this ClickHouse URL directly instead of the API")
    p.add_argument("--database", default="", help="with --clickhouse: database (default CLICKHOUSE_DATABASE)")
    p.set_defaults(handler=usage)
