"""Reading customer and user files for `whereby-pipeline dims load`: pure parsing and validation.

Two formats per kind, chosen by the file extension (`.csv`; `.jsonl`/`.ndjson`/`.json`) or, failing
that, by the first character (`{` means JSON Lines):

- customers CSV: header `customer_id,name,room_name_prefix`, one row per prefix (rows of one customer
  are merged; an empty `room_name_prefix` registers the customer without that row adding a prefix);
- users CSV: header `external_id,user_id,customer_id,name`, optionally `email`;
- JSON Lines: one dimension record per line, exactly as on the dimensions topic.

In CSV files any further columns become `attributes`. A field with a control character (a tab, a line
break inside quotes, ESC, ...) is refused, naming its column: names end up in terminals, spreadsheets and
the page, where such characters rewrite what is shown. Every problem is reported as one
`file:line: message`, one per bad line, so the operator can fix the whole file in one go; the caller
loads nothing from a file that has problems.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import orjson

from enrich.dimensions import (
    PREFIX_RE,
    Customer,
    DimensionError,
    DimensionTable,
    User,
    customer_from_doc,
    user_from_doc,
    validate_prefix,
)
from pipeline.dimensions import control_character

CUSTOMER_COLUMNS = ("customer_id", "name", "room_name_prefix")
USER_COLUMNS = ("external_id", "user_id", "customer_id", "name")
USER_OPTIONAL_COLUMNS = ("email",)
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


@dataclass(frozen=True)
class Problem:
    """One bad line of an input file (`line` is None for a problem with the whole file)."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}" if self.line else f"{self.source}: {self.message}"


@dataclass
class CustomerFile:
    """Customers read from one file, with the line each customer and each prefix was defined on."""

    source: str
    customers: dict[str, Customer] = field(default_factory=dict)
    customer_lines: dict[str, int] = field(default_factory=dict)
    prefix_lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class UserFile:
    """Users read from one file, with the line each user was defined on."""

    source: str
    users: dict[str, User] = field(default_factory=dict)
    user_lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def is_jsonl(text: str, source: str) -> bool:
    """True when the file is JSON Lines: by extension, else by its first non-blank character."""
    suffix = PurePath(source).suffix.lower()
    if suffix == ".csv":
        return False
    if suffix in JSONL_SUFFIXES:
        return True
    return text.lstrip().startswith("{")


def _csv_rows(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a CSV text; blank lines are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    header: list[str] = []
    line = 1
    for fields in reader:
        start, line = line, reader.line_num + 1  # a quoted field may span lines: report where the row starts
        if not any(f.strip() for f in fields):
            continue
        if not header:
            header = [f.strip().lower() for f in fields]
            continue
        rows.append((start, [f.strip() for f in fields]))
    return header, rows


def _header_problem(header: list[str], required: tuple[str, ...], source: str) -> Problem | None:
    if not header:
        return Problem(source, None, f"the file is empty; expected a header {','.join(required)}")
    missing = [c for c in required if c not in header]
    if missing:
        return Problem(
            source, 1, f"header lacks {', '.join(missing)}; expected {','.join(required)} (then any attribute columns)"
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        return Problem(source, 1, f"header names {', '.join(duplicated)} more than once")
    if "" in header:
        return Problem(source, 1, "header has an empty column name")
    return None


def _row_doc(header: list[str], fields: list[str]) -> dict[str, str]:
    if len(fields) != len(header):
        raise DimensionError(f"has {len(fields)} fields, the header has {len(header)}")
    for column, (name, value) in enumerate(zip(header, fields, strict=True), start=1):
        bad = control_character(value)
        if bad is not None:
            raise DimensionError(f"column {column} ({name}) contains a control character ({bad}); remove it")
    return dict(zip(header, fields, strict=True))


def _jsonl_docs(text: str) -> list[tuple[int, Any]]:
    """[(line number, parsed value or the DimensionError)] of a JSON Lines text; blank lines skipped."""
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((number, orjson.loads(line)))
        except orjson.JSONDecodeError:
            out.append((number, DimensionError("is not valid JSON")))
    return out


def _prefix_problem(prefix: str) -> str | None:
    try:
        validate_prefix(prefix)
    except DimensionError as exc:
        # The operator may have copied the prefix as sent to Whereby, which normalises it: say so.
        normalised = "".join(prefix.lower().split())
        if normalised != prefix and PREFIX_RE.match(normalised):
            return f"{exc} (Whereby lower-cases prefixes and removes spaces: use {normalised!r})"
        return str(exc)
    return None


def _add_customer(parsed: CustomerFile, customer: Customer, line: int) -> str | None:
    """Register a whole customer record (JSON Lines); returns a problem message or None."""
    if customer.customer_id in parsed.customers:
        first = parsed.customer_lines[customer.customer_id]
        return f"customer {customer.customer_id!r} is already defined on line {first}"
    for prefix in customer.room_name_prefixes:
        if prefix in parsed.prefix_lines:
            return f"prefix {prefix!r} is already given on line {parsed.prefix_lines[prefix]}"
    parsed.customers[customer.customer_id] = customer
    parsed.customer_lines[customer.customer_id] = line
    for prefix in customer.room_name_prefixes:
        parsed.prefix_lines[prefix] = line
    return None


def _customer_csv_row(parsed: CustomerFile, header: list[str], fields: list[str], line: int) -> str | None:
    """Merge one CSV row into the customers read so far; returns a problem message or None."""
    try:
        doc = _row_doc(header, fields)
    except DimensionError as exc:
        return str(exc)
    prefix = doc.pop("room_name_prefix")
    attributes = {k: v for k, v in doc.items() if k not in CUSTOMER_COLUMNS and v != ""}
    if prefix:
        problem = _prefix_problem(prefix)
        if problem:
            return problem
    try:
        row = customer_from_doc(
            {
                "customer_id": doc["customer_id"],
                "name": doc["name"],
                "room_name_prefixes": [prefix] if prefix else [],
                "attributes": attributes,
            }
        )
    except DimensionError as exc:
        return str(exc)
    if prefix and prefix in parsed.prefix_lines:
        first = parsed.prefix_lines[prefix]
        owner = next(c for c in parsed.customers.values() if prefix in c.room_name_prefixes)
        if owner.customer_id == row.customer_id:
            return f"prefix {prefix!r} is listed twice for customer {row.customer_id!r} (first on line {first})"
        return f"prefix {prefix!r} is already given to customer {owner.customer_id!r} on line {first}"
    known = parsed.customers.get(row.customer_id)
    if known is None:
        parsed.customers[row.customer_id] = row
        parsed.customer_lines[row.customer_id] = line
    else:
        first = parsed.customer_lines[row.customer_id]
        if doc["name"] and doc["name"] != known.name:
            return f"name differs from the name of customer {row.customer_id!r} on line {first}"
        clash = sorted(k for k, v in attributes.items() if known.attributes.get(k, v) != v)
        if clash:
            return f"{', '.join(clash)} differs from customer {row.customer_id!r} on line {first}"
        parsed.customers[row.customer_id] = Customer(
            customer_id=known.customer_id,
            name=known.name,
            room_name_prefixes=known.room_name_prefixes + row.room_name_prefixes,
            attributes={**known.attributes, **attributes},
        )
    if prefix:
        parsed.prefix_lines[prefix] = line
    return None


def parse_customers(text: str, source: str) -> CustomerFile:
    """Read a customers file (CSV or JSON Lines); problems are collected, never raised."""
    parsed = CustomerFile(source)
    if is_jsonl(text, source):
        for line, doc in _jsonl_docs(text):
            if isinstance(doc, DimensionError):
                parsed.problems.append(Problem(source, line, str(doc)))
                continue
            try:
                customer = customer_from_doc(doc)
            except DimensionError as exc:
                parsed.problems.append(Problem(source, line, str(exc)))
                continue
            message = _add_customer(parsed, customer, line)
            if message:
                parsed.problems.append(Problem(source, line, message))
    else:
        header, rows = _csv_rows(text)
        header_problem = _header_problem(header, CUSTOMER_COLUMNS, source)
        if header_problem:
            parsed.problems.append(header_problem)
            return parsed
        for line, fields in rows:
            message = _customer_csv_row(parsed, header, fields, line)
            if message:
                parsed.problems.append(Problem(source, line, message))
    if not parsed.customers and not parsed.problems:
        parsed.problems.append(Problem(source, None, "the file has no customer records"))
    return parsed


def _user_csv_doc(header: list[str], fields: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = _row_doc(header, fields)
    known = set(USER_COLUMNS) | set(USER_OPTIONAL_COLUMNS)
    doc["attributes"] = {k: v for k, v in doc.items() if k not in known and v != ""}
    return doc


def parse_users(text: str, source: str) -> UserFile:
    """Read a users file (CSV or JSON Lines); problems are collected, never raised."""
    parsed = UserFile(source)
    entries: list[tuple[int, Any]]
    if is_jsonl(text, source):
        entries = _jsonl_docs(text)
    else:
        header, rows = _csv_rows(text)
        header_problem = _header_problem(header, USER_COLUMNS, source)
        if header_problem:
            parsed.problems.append(header_problem)
            return parsed
        entries = []
        for line, fields in rows:
            try:
                entries.append((line, _user_csv_doc(header, fields)))
            except DimensionError as exc:
                entries.append((line, exc))
    for line, doc in entries:
        if isinstance(doc, DimensionError):
            parsed.problems.append(Problem(source, line, str(doc)))
            continue
        try:
            user = user_from_doc(doc)
        except DimensionError as exc:
            parsed.problems.append(Problem(source, line, str(exc)))
            continue
        if user.external_id in parsed.users:
            first = parsed.user_lines[user.external_id]
            parsed.problems.append(
                Problem(source, line, f"external_id {user.external_id!r} is already on line {first}")
            )
            continue
        parsed.users[user.external_id] = user
        parsed.user_lines[user.external_id] = line
    if not parsed.users and not parsed.problems:
        parsed.problems.append(Problem(source, None, "the file has no user records"))
    return parsed


def check_against(table: DimensionTable, customers: CustomerFile | None, users: UserFile | None) -> list[Problem]:
    """Problems the files would cause on top of what the dimensions topic already holds.

    A customer in the file replaces the customer of the same id on the topic (its prefixes included),
    so a prefix may move between two customers that are both in the file. A prefix still owned by a
    customer not in the file is a conflict. A user must name a customer in the file or on the topic, and
    must not be a person erased by `forget` (their record would bring their name back).
    """
    problems: list[Problem] = []
    redefined = set(customers.customers) if customers else set()
    if customers:
        for customer in customers.customers.values():
            for prefix, owner in table.conflicts(customer):
                if owner not in redefined:
                    problems.append(
                        Problem(
                            customers.source,
                            customers.prefix_lines.get(prefix),
                            f"prefix {prefix!r} already belongs to customer {owner!r} on the dimensions topic",
                        )
                    )
    if users:
        for user in users.users.values():
            if table.erasures.pseudonym_for(user.external_id) is not None:
                # Never quoted: the id is personal data, and the line number says which one.
                problems.append(
                    Problem(users.source, users.user_lines[user.external_id], "this person was erased (`forget`)")
                )
                continue
            if user.customer_id and user.customer_id not in redefined and user.customer_id not in table.customers:
                problems.append(
                    Problem(
                        users.source,
                        users.user_lines[user.external_id],
                        f"customer_id {user.customer_id!r} is in neither the customers file nor the dimensions topic",
                    )
                )
    return problems
