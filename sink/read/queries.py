"""The canned read queries behind the read API, the report command and the web page.

Pure: each builder turns request parameters (a flat string mapping, as they arrive in a query string)
into a :class:`Query` — a constant SQL text with ClickHouse `{name:Type}` placeholders plus the bound
values — and :func:`result` turns the rows into the response document. No text from a request ever
becomes SQL: the only interpolated name is the database, which comes from the settings and is checked
to be a plain identifier. Anything wrong with a parameter raises :class:`BadParameter` with a message
meant for the caller (the API answers it as a 400).

Usage endpoints (`/usage/*`) aggregate connections by the UTC instant they joined (and sessions by the
instant they started), inside an optional `[from, to)` range; `customer_id: null` is the unresolved
bucket. Insights endpoints (`/insights/*`) mirror Whereby's Insights API (camelCase fields, opaque
cursor, `limit` 1 to 100, `sortBy=field:asc|desc`) with customer and user segmentation added; their
pages are keyset pages, so rows that arrive between two calls never shift or repeat a page.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from pipeline import times

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# fromUnixTimestamp64Milli bounds for "all time": DateTime64(3) covers 1900..2299.
ALL_TIME = (0, 10_413_791_999_000)  # 1970-01-01 .. 2299-12-31T23:59:59Z
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BadParameter(ValueError):
    """A request parameter is missing, malformed or not allowed; the message is for the caller."""


@dataclass(frozen=True)
class Sort:
    """One allowed `sortBy` field: its key expressions (the field, then unique tie-breakers) and their types."""

    keys: tuple[str, ...]
    types: tuple[str, ...]


@dataclass(frozen=True)
class Paging:
    """How a paged query continues: the page size and what the next cursor must carry."""

    limit: int
    sort: str
    fingerprint: str
    width: int


# Turns the rows of a query into its response document, for answers that are not a flat list of rows.
Shape = Callable[[list[dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Query:
    """A constant SQL text, its bound parameters and, for Insights endpoints, its paging (or its shape)."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    paging: Paging | None = None
    shape: Shape | None = None


Builder = Callable[[str, Mapping[str, str]], Query]


# ------------------------------------------------------------------------------------------ parameters


def _db(database: str) -> str:
    if not _DATABASE_NAME.match(database):
        raise ValueError(f"database name must be a plain identifier, got {database!r}")
    return database


def check_names(args: Mapping[str, str], allowed: set[str]) -> None:
    """Reject unknown parameters: a misspelt filter would otherwise silently widen the answer."""
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise BadParameter(f"unknown parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def parse_instant(name: str, raw: str) -> int:
    """An ISO date (`2026-01-01`, midnight UTC) or date-time (UTC unless it has an offset) in epoch ms."""
    try:
        ms = times.instant_ms(raw.strip(), assume_utc=True)
    except ValueError:
        raise BadParameter(
            f"{name} must be an ISO date (2026-01-31) or date-time (2026-01-31T12:00:00Z), got {raw!r}"
        ) from None
    if not ALL_TIME[0] <= ms <= ALL_TIME[1]:
        raise BadParameter(f"{name} must be between 1970 and 2299, got {raw!r}")
    return ms


def time_range(args: Mapping[str, str]) -> tuple[int, int]:
    """(from_ms, to_ms) from `from` (inclusive) and `to` (exclusive); an absent bound means all time."""
    low = parse_instant("from", args["from"]) if args.get("from") else ALL_TIME[0]
    high = parse_instant("to", args["to"]) if args.get("to") else ALL_TIME[1]
    if low >= high:
        raise BadParameter("from must be before to")
    return low, high


def parse_limit(args: Mapping[str, str], maximum: int = MAX_LIMIT) -> int:
    """`limit`: a whole number from 1 to `maximum` (100, as Whereby's Insights API), 10 when absent."""
    raw = args.get("limit", "")
    if raw == "":
        return DEFAULT_LIMIT
    # ASCII digits only, and few of them: str.isdigit() also takes `²` (U+00B2) or Arabic-Indic digits,
    # which int() then refuses (or reads), and int() of thousands of digits hits Python's own limit.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(maximum))) or not 1 <= int(raw) <= maximum:
        raise BadParameter(f"limit must be a whole number from 1 to {maximum}, got {raw[:40]!r}")
    return int(raw)


def customer_filter(args: Mapping[str, str], params: dict[str, Any]) -> str:
    """SQL condition for `customer_id=` (one customer) or `unresolved=true` (the unresolved bucket)."""
    unresolved = args.get("unresolved", "")
    if unresolved not in ("", "true", "false"):
        raise BadParameter(f"unresolved must be true or false, got {unresolved!r}")
    customer = args.get("customer_id", "")
    if unresolved == "true":
        if customer:
            raise BadParameter("give either customer_id or unresolved=true, not both")
        return "customer_id IS NULL"
    if customer:
        params["customer_id"] = customer
        return "customer_id = {customer_id:String}"
    return "1"


def _required(args: Mapping[str, str], name: str) -> str:
    value = args.get(name, "")
    if not value:
        raise BadParameter(f"{name} is required")
    return value


def _room_names(room: str) -> tuple[str, str]:
    """A room as given and in Whereby's stored form (leading `/`), so both spellings find it."""
    return room, room if room.startswith("/") else "/" + room


# -------------------------------------------------------------------------------------------- cursors


def _fingerprint(path: str, filters: Mapping[str, str]) -> str:
    canonical = orjson.dumps([path, sorted(filters.items())])
    return hashlib.sha256(canonical).hexdigest()[:16]


def encode_cursor(sort: str, fingerprint: str, key: list[Any]) -> str:
    """An opaque cursor: the last row's sort key, bound to the sort and the filters it was made for."""
    doc = orjson.dumps({"s": sort, "f": fingerprint, "k": key})
    return base64.urlsafe_b64encode(doc).decode().rstrip("=")


def decode_cursor(raw: str, sort: str, fingerprint: str, sort_spec: Sort) -> list[Any]:
    """The key a cursor carries; BadParameter if it is not one of ours or belongs to another query."""
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        raise BadParameter("cursor is not valid: pass back the cursor of the previous page unchanged") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("k"), list):
        raise BadParameter("cursor is not valid: pass back the cursor of the previous page unchanged")
    if doc.get("s") != sort or doc.get("f") != fingerprint:
        raise BadParameter("cursor belongs to another query: keep the filters and sortBy of the first page")
    key: list[Any] = doc["k"]
    expected = [int if t == "Int64" else str for t in sort_spec.types]
    if len(key) != len(expected) or not all(
        type(v) is kind and (type(v) is not int or INT64_MIN <= v <= INT64_MAX)  # bool is not an int here
        for v, kind in zip(key, expected, strict=True)
    ):
        # A number outside Int64 cannot be bound to its {_cN:Int64} placeholder: only a forged cursor has one.
        raise BadParameter("cursor is not valid: pass back the cursor of the previous page unchanged")
    return key


def _paged(
    path: str,
    args: Mapping[str, str],
    filters: Mapping[str, str],
    *,
    select: str,
    source: str,
    params: dict[str, Any],
    sorts: Mapping[str, Sort],
    default_sort: str,
    max_limit: int = MAX_LIMIT,
) -> Query:
    """A keyset page over `SELECT select FROM source`: sorted by an allowed key, after the cursor's key."""
    sort_by = args.get("sortBy") or default_sort
    name, _, direction = sort_by.partition(":")
    direction = direction or "asc"
    if name not in sorts or direction not in ("asc", "desc"):
        raise BadParameter(f"sortBy must be one of {', '.join(sorted(sorts))} with :asc or :desc, got {sort_by!r}")
    sort_by = f"{name}:{direction}"
    spec = sorts[name]
    limit = parse_limit(args, max_limit)
    fingerprint = _fingerprint(path, filters)
    keys = ", ".join(f"{expr} AS _k{i}" for i, expr in enumerate(spec.keys))
    key_tuple = "tuple(" + ", ".join(f"_k{i}" for i in range(len(spec.keys))) + ")"
    after = "1"
    if args.get("cursor"):
        for i, value in enumerate(decode_cursor(args["cursor"], sort_by, fingerprint, spec)):
            params[f"_c{i}"] = value
        bound = ", ".join(f"{{_c{i}:{t}}}" for i, t in enumerate(spec.types))
        # The comparison operator and direction come from this fixed table, never from the request text.
        after = f"{key_tuple} {'>' if direction == 'asc' else '<'} tuple({bound})"
    order = ", ".join(f"_k{i} {direction.upper()}" for i in range(len(spec.keys)))
    params["_limit"] = limit + 1  # one more than asked tells whether there is a next page
    sql = (
        f"SELECT * FROM (SELECT {select}, {keys} FROM {source}) WHERE {after} ORDER BY {order} LIMIT {{_limit:UInt32}}"
    )
    return Query(sql, params, Paging(limit, sort_by, fingerprint, len(spec.keys)))


# ----------------------------------------------------------------------------------------- usage/*

# The [from, to) range as the arguments of the parameterised views (usage_by_customer_period and the
# others of sink/schema/007_views.sql): they read only the months of the range.
PERIOD = "from = fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC'), to = fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')"

# What every usage result reports next to its keys (VIEWS.md): minutes by role class, and how many
# connections are closed (counted), open, incomplete (no join) or estimated (a lower bound).
MINUTES = ("participant_minutes", "recorder_minutes", "streamer_minutes", "assistant_minutes", "captioner_minutes")
CONNECTION_COUNTS = ("connections", "open_connections", "incomplete_connections", "estimated_connections")
USAGE = (*MINUTES, *CONNECTION_COUNTS)

# `participant_minutes` counts human connections only, but Whereby bills, and Insights' `totalParticipantMinutes`
# reports, everyone but the recorder and the streamer (assistants and captioners too): reconcile compares that
# sum. Every usage result carries it under its own name, so nobody has to know which columns to add
# (VIEWS.md §5). Written after the minutes it adds: in an aggregating SELECT the names are the sums' aliases.
BILLABLE = "billable_participant_minutes"
_BILLABLE_SUM = "toUInt64(participant_minutes + assistant_minutes + captioner_minutes)"
_BILLABLE = f"{_BILLABLE_SUM} AS {BILLABLE}"


def _columns(names: tuple[str, ...]) -> str:
    return ", ".join(names)


# ------------------------------------------------------------------------- group_by=metadata.<key>

GROUP_BY_PREFIX = "metadata."
# Enrich keeps metadata keys of at most 64 characters (enrich/metadata.py MAX_KEY_CHARS): no longer key
# can match, so a longer one is a mistake (or an attack), answered 400.
MAX_GROUP_KEY_CHARS = 64
DEFAULT_GROUP_LIMIT = 20
MAX_GROUP_LIMIT = 100
# What the values outside the top `group_limit` are reported as (with `group_other: true`).
OTHER = "other"
_KEY_CONTROL = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


@dataclass(frozen=True)
class GroupBy:
    """`group_by=metadata.<key>`: split usage by one metadata key, its `limit` most used values by name
    (by participant minutes), every other value as `other`."""

    key: str
    limit: int

    @property
    def label(self) -> str:
        """As the caller wrote it: `metadata.<key>`."""
        return GROUP_BY_PREFIX + self.key


def parse_group_by(args: Mapping[str, str]) -> GroupBy | None:
    """`group_by` (`metadata.<key>`) and `group_limit` (1-100, default 20); None when not grouping.

    The key is only ever bound as a query parameter, never put into the SQL text; what is checked here is
    that it can name a key at all: 1-64 characters, no control characters.
    """
    raw = args.get("group_by", "")
    limit_raw = args.get("group_limit", "")
    if not raw:
        if limit_raw:
            raise BadParameter("group_limit needs group_by=metadata.<key>")
        return None
    key = raw.removeprefix(GROUP_BY_PREFIX)
    if not raw.startswith(GROUP_BY_PREFIX) or not key:
        raise BadParameter(f"group_by must be metadata.<key> (a key of the participants' metadata), got {raw[:40]!r}")
    if len(key) > MAX_GROUP_KEY_CHARS or any(unicodedata.category(ch) in _KEY_CONTROL for ch in key):
        raise BadParameter(
            f"group_by: a metadata key is 1-{MAX_GROUP_KEY_CHARS} characters without control characters "
            "(longer keys are not kept by enrichment)"
        )
    limit = DEFAULT_GROUP_LIMIT
    if limit_raw:
        limit = parse_limit({"limit": limit_raw}, MAX_GROUP_LIMIT)
    return GroupBy(key, limit)


def _grouped_source(db: str, group: GroupBy, where: str, params: dict[str, Any]) -> str:
    """The connections of the range (`usage_rows`) with `group_value`: the key's value, `other` beyond the
    top values, NULL for connections without the key; `group_other` tells a real value `other` apart."""
    params["group_key"], params["group_limit"] = group.key, group.limit
    value = "metadata[{group_key:String}]"
    rows = f"{db}.usage_rows({PERIOD})"
    return f"""
    SELECT *,
        mapContains(metadata, {{group_key:String}}) AS _has_key,
        _has_key AND {value} NOT IN (
            SELECT {value} AS v FROM {rows}
            WHERE kind = 'connection' AND {where} AND mapContains(metadata, {{group_key:String}})
            GROUP BY v
            ORDER BY sum(participant_minutes) DESC, count() DESC, v
            LIMIT {{group_limit:UInt32}}) AS group_other,
        if(_has_key, if(group_other, '{OTHER}', {value}), NULL) AS group_value
    FROM {rows}
    WHERE kind = 'connection' AND {where}"""


def _sums(fields: tuple[str, ...]) -> str:
    return ",\n    ".join(f"toUInt64(sum({f})) AS {f}" for f in fields)


_USAGE_AGGREGATES = (
    f"{_sums(MINUTES)},\n"
    "    toUInt64(countIf(closed)) AS connections,\n"
    "    toUInt64(countIf(open)) AS open_connections,\n"
    "    toUInt64(countIf(incomplete)) AS incomplete_connections,\n"
    "    toUInt64(countIf(estimated)) AS estimated_connections,\n"
    f"    {_BILLABLE}"
)


def _usage_customers_grouped(db: str, group: GroupBy, params: dict[str, Any]) -> Query:
    params["group_by"] = group.label
    sql = f"""
SELECT
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    {{group_by:String}} AS group_by,
    group_value,
    group_other,
    {_USAGE_AGGREGATES},
    toUInt64(uniqExact(human_participant)) AS unique_participants,
    toUInt64(uniqExact(counted_user)) AS unique_users,
    toUInt64(uniqExact(session_key)) AS sessions
FROM ({_grouped_source(db, group, "1", params)})
GROUP BY customer_id, group_value, group_other
ORDER BY participant_minutes DESC, customer_id IS NULL, customer_id, group_other, group_value IS NULL, group_value
"""
    return Query(sql, params)


def usage_customers(database: str, args: Mapping[str, str]) -> Query:
    """Usage per customer in the range; registered customers without usage are listed with zeros. With
    `group_by=metadata.<key>`: per customer and value of that key (customers with usage only; `sessions`
    then counts the distinct sessions of the row's connections)."""
    check_names(args, {"from", "to", "group_by", "group_limit"})
    db = _db(database)
    low, high = time_range(args)
    group = parse_group_by(args)
    if group is not None:
        return _usage_customers_grouped(db, group, {"from_ms": low, "to_ms": high})
    fields = (*USAGE, "unique_participants", "unique_users", "sessions")
    sums = ",\n    ".join(f"toUInt64(sum({f})) AS {f}" for f in fields)
    zeros = ", ".join(f"0 AS {f}" for f in fields)
    sql = f"""
SELECT
    customer_id,
    argMax(customer_name, (kind = 'customer', customer_name IS NOT NULL)) AS customer_name,
    {sums},
    {_BILLABLE}
FROM (
    SELECT 'usage' AS kind, customer_id, customer_name, {_columns(fields)}
    FROM {db}.usage_by_customer_period({PERIOD})
    UNION ALL
    SELECT 'customer' AS kind, CAST(customer_id AS Nullable(String)) AS customer_id, name AS customer_name, {zeros}
    FROM {db}.customers
)
GROUP BY customer_id
ORDER BY participant_minutes DESC, customer_id IS NULL, customer_id
"""
    return Query(sql, {"from_ms": low, "to_ms": high})


def usage_customer_days(database: str, args: Mapping[str, str]) -> Query:
    """Usage per customer per UTC day (the page's chart), days with usage only."""
    check_names(args, {"from", "to", "customer_id", "unresolved"})
    db = _db(database)
    low, high = time_range(args)
    params: dict[str, Any] = {"from_ms": low, "to_ms": high}
    customer = customer_filter(args, params)
    sql = f"""
SELECT toString(day) AS day, customer_id, customer_name, {_columns(USAGE)}, {_BILLABLE}, sessions
FROM {db}.usage_by_customer_day_period({PERIOD})
WHERE {customer}
ORDER BY day, customer_id IS NULL, customer_id
"""
    return Query(sql, params)


def usage_users(database: str, args: Mapping[str, str]) -> Query:
    """Usage per (customer, user key) in the range, registered or not: the user id USER_ID_SOURCE chose
    (the externalId by default); connections without one form one row per customer with `user_key: null`.
    With `group_by=metadata.<key>`: per user and value of that key."""
    check_names(args, {"from", "to", "customer_id", "unresolved", "group_by", "group_limit"})
    db = _db(database)
    low, high = time_range(args)
    params: dict[str, Any] = {"from_ms": low, "to_ms": high}
    customer = customer_filter(args, params)
    group = parse_group_by(args)
    user = "customer_id, customer_name, user_key, user_source, external_id, user_id, user_name"
    order = "participant_minutes DESC, customer_id IS NULL, customer_id, user_key IS NULL, user_key"
    if group is None:
        sql = f"""
SELECT {user}, {_columns(USAGE)}, {_BILLABLE}, sessions
FROM {db}.usage_by_user_period({PERIOD})
WHERE {customer}
ORDER BY {order}
"""
        return Query(sql, params)
    params["group_by"] = group.label
    sql = f"""
SELECT
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    user_key,
    argMax(tuple(user_source), (dims_version, at)).1 AS user_source,
    argMax(tuple(external_id), (dims_version, at)).1 AS external_id,
    argMax(tuple(user_id), dims_version).1 AS user_id,
    argMax(tuple(user_name), dims_version).1 AS user_name,
    {{group_by:String}} AS group_by,
    group_value,
    group_other,
    {_USAGE_AGGREGATES},
    toUInt64(uniqExact(session_key)) AS sessions
FROM ({_grouped_source(db, group, customer, params)})
GROUP BY customer_id, user_key, group_value, group_other
ORDER BY {order}, group_other, group_value IS NULL, group_value
"""
    return Query(sql, params)


def usage_rooms(database: str, args: Mapping[str, str]) -> Query:
    """Usage per room (and customer) in the range."""
    check_names(args, {"from", "to", "customer_id", "unresolved"})
    db = _db(database)
    low, high = time_range(args)
    params: dict[str, Any] = {"from_ms": low, "to_ms": high}
    customer = customer_filter(args, params)
    sql = f"""
SELECT room_name, customer_id, customer_name, {_columns(USAGE)}, {_BILLABLE}, sessions, unique_participants
FROM {db}.rooms_between({PERIOD})
WHERE {customer}
ORDER BY participant_minutes DESC, room_name, customer_id IS NULL, customer_id
"""
    return Query(sql, params)


# -------------------------------------------------------------------------------------- insights/*

_ROOM_SORTS = {
    "roomName": Sort(("room_name",), ("String",)),
    "totalParticipantMinutes": Sort(("toInt64(participant_minutes)", "room_name"), ("Int64", "String")),
    "totalSessions": Sort(("toInt64(sessions)", "room_name"), ("Int64", "String")),
    "lastSessionStartedAt": Sort(
        ("ifNull(toUnixTimestamp64Milli(last_session_started_at), 0)", "room_name"), ("Int64", "String")
    ),
}

_SESSION_SORTS = {
    "startedAt": Sort(("ifNull(toUnixTimestamp64Milli(started_at), 0)", "session_key"), ("Int64", "String")),
    "totalParticipantMinutes": Sort(("toInt64(participant_minutes)", "session_key"), ("Int64", "String")),
}

# A participant can have several connections (rejoins): the connection id makes the order total.
_PARTICIPANT_TIEBREAK = ("room_name", "connection_id")
_PARTICIPANT_SORTS = {
    "joinedAt": Sort(
        ("ifNull(toUnixTimestamp64Milli(joined_at), 0)", *_PARTICIPANT_TIEBREAK), ("Int64", "String", "String")
    ),
    # Open connections have no end yet: they sort after every ended one.
    "leftAt": Sort(
        (f"ifNull(toUnixTimestamp64Milli(coalesce(ended_at, left_at)), {INT64_MAX})", *_PARTICIPANT_TIEBREAK),
        ("Int64", "String", "String"),
    ),
}


def insights_rooms(database: str, args: Mapping[str, str]) -> Query:
    """Whereby's `GET /insights/rooms`, filtered by room-name prefix and/or customer."""
    filters_allowed = {"roomNamePrefix", "customer_id", "unresolved"}
    check_names(args, filters_allowed | {"sortBy", "cursor", "limit"})
    db = _db(database)
    params: dict[str, Any] = {}
    where = [customer_filter(args, params)]
    if args.get("roomNamePrefix"):
        params["prefix"], params["prefix_slash"] = _room_names(args["roomNamePrefix"])
        where.append("(startsWith(room_name, {prefix:String}) OR startsWith(room_name, {prefix_slash:String}))")
    select = f"""
        room_name AS roomName, customer_id AS customerId, customer_name AS customerName,
        first_session_started_at AS firstSessionStartedAt, last_session_started_at AS lastSessionStartedAt,
        participant_minutes AS totalParticipantMinutes, recorder_minutes AS totalRecorderMinutes,
        streamer_minutes AS totalStreamerMinutes, unique_participants AS totalUniqueParticipants,
        unique_recorders AS totalUniqueRecorders, unique_streamers AS totalUniqueStreamers,
        unique_users AS totalUniqueUsers, sessions AS totalSessions, assistant_minutes AS totalAssistantMinutes,
        captioner_minutes AS totalCaptionerMinutes,
        {_BILLABLE_SUM} AS totalBillableParticipantMinutes,
        open_connections AS openConnections,
        incomplete_connections AS incompleteConnections, estimated_connections AS estimatedConnections"""
    return _paged(
        "/insights/rooms",
        args,
        {k: v for k, v in args.items() if k in filters_allowed},
        select=select,
        source=f"{db}.rooms WHERE {' AND '.join(where)}",
        params=params,
        sorts=_ROOM_SORTS,
        default_sort="roomName:asc",
    )


def insights_room_sessions(database: str, args: Mapping[str, str]) -> Query:
    """Whereby's `GET /insights/room-sessions`: the sessions of one room (`roomName` is required)."""
    filters_allowed = {"roomName", "roomSessionId"}
    check_names(args, filters_allowed | {"sortBy", "cursor", "limit"})
    db = _db(database)
    params: dict[str, Any] = {}
    params["room"], params["room_slash"] = _room_names(_required(args, "roomName"))
    where = ["room_name IN ({room:String}, {room_slash:String})"]
    if args.get("roomSessionId"):
        params["session"] = args["roomSessionId"]
        where.append("room_session_id = {session:String}")
    select = f"""
        room_session_id AS roomSessionId, room_name AS roomName, customer_id AS customerId,
        customer_name AS customerName, started_at AS startedAt, ended_at AS endedAt,
        participant_minutes AS totalParticipantMinutes, recorder_minutes AS totalRecorderMinutes,
        streamer_minutes AS totalStreamerMinutes, unique_participants AS totalUniqueParticipants,
        unique_recorders AS totalUniqueRecorders, unique_streamers AS totalUniqueStreamers,
        assistant_minutes AS totalAssistantMinutes, captioner_minutes AS totalCaptionerMinutes,
        {_BILLABLE_SUM} AS totalBillableParticipantMinutes,
        open_connections AS openConnections, incomplete_connections AS incompleteConnections,
        estimated_connections AS estimatedConnections"""
    return _paged(
        "/insights/room-sessions",
        args,
        {k: v for k, v in args.items() if k in filters_allowed},
        select=select,
        source=f"{db}.room_sessions WHERE {' AND '.join(where)}",
        params=params,
        sorts=_SESSION_SORTS,
        default_sort="startedAt:desc",
    )


def insights_participants(database: str, args: Mapping[str, str]) -> Query:
    """Whereby's `GET /insights/participants` by `roomSessionId` or `externalId` (or our `userId`, or
    `userKey`: the user id USER_ID_SOURCE chose)."""
    filters_allowed = {"roomSessionId", "externalId", "userId", "userKey"}
    check_names(args, filters_allowed | {"sortBy", "cursor", "limit"})
    db = _db(database)
    if not any(args.get(name) for name in filters_allowed):
        raise BadParameter("one of roomSessionId, externalId, userId or userKey is required")
    params: dict[str, Any] = {}
    where = []
    for name, column in (
        ("roomSessionId", "room_session_id"),
        ("externalId", "external_id"),
        ("userId", "user_id"),
        ("userKey", "user_key"),
    ):
        if args.get(name):
            params[name] = args[name]
            where.append(f"{column} = {{{name}:String}}")
    # Display names are personal data: returned here (as Whereby's Insights do), never logged.
    select = """
        room_session_id AS roomSessionId, room_name AS roomName, participant_id AS participantId,
        user_id AS userId, external_id AS externalId, user_key AS userKey, user_source AS userSource,
        customer_id AS customerId, customer_name AS customerName,
        user_name AS userName, role_name AS roleName, role_class AS roleClass, display_name AS displayName,
        joined_at AS joinedAt, coalesce(ended_at, left_at) AS leftAt, end_source AS endSource, minutes AS minutes,
        toBool(is_open) AS isOpen, toBool(is_incomplete) AS isIncomplete, sources AS sources"""
    return _paged(
        "/insights/participants",
        args,
        {k: v for k, v in args.items() if k in filters_allowed},
        select=select,
        source=f"{db}.connections WHERE {' AND '.join(where)}",
        params=params,
        sorts=_PARTICIPANT_SORTS,
        default_sort="joinedAt:asc",
    )


# ------------------------------------------------------------------------------------------ live/*

# The open connections one answer lists at most (a room cut short is possible past it: `truncated`).
LIVE_MAX_CONNECTIONS = 5000
DEFAULT_STALE_AFTER_S = 6 * 3600


def live_rooms(database: str, args: Mapping[str, str], *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> Query:
    """`GET /live/rooms`: the rooms with connections open now, their participants and, per session, when
    its first host and its first guest joined. A connection open longer than `stale_after_s`
    (STALE_CONNECTION_S) is listed as stale, not counted as present. Filters: `customer_id`, `unresolved`.

    Backed by the derived rows (the `live_connections` view, `session_rows`), so it trails the stored
    events by the deriver's lag, like every usage number.
    """
    check_names(args, {"customer_id", "unresolved"})
    db = _db(database)
    params: dict[str, Any] = {"stale_s": max(0, int(stale_after_s)), "_limit": LIVE_MAX_CONNECTIONS + 1}
    customer = customer_filter(args, params)
    # A LEFT JOIN without a match fills the right side with type defaults: started_at is made Nullable so
    # that an open connection without a session row reads as NULL, not as 1970.
    sql = f"""
SELECT
    now64(3) AS as_of,
    c.room_name AS room_name, c.customer_id AS customer_id, c.customer_name AS customer_name,
    c.participant_id AS participant_id, c.connection_id AS connection_id,
    c.session_key AS session_key, c.room_session_id AS room_session_id,
    c.display_name AS display_name, c.role_name AS role_name, c.role_class AS role_class, c.party AS party,
    c.external_id AS external_id, c.user_key AS user_key, c.user_source AS user_source,
    c.user_id AS user_id, c.user_name AS user_name,
    c.joined_at AS joined_at, c.open_s AS open_s, c.open_s > {{stale_s:UInt64}} AS stale,
    s.started_at AS session_started_at,
    s.first_host_joined_at AS first_host_joined_at, s.first_guest_joined_at AS first_guest_joined_at
FROM (SELECT * FROM {db}.live_connections WHERE {customer}) AS c
LEFT JOIN (
    SELECT room_name, session_key, toNullable(started_at) AS started_at, first_host_joined_at, first_guest_joined_at
    FROM {db}.session_rows FINAL
    WHERE (room_name, session_key) IN (
            SELECT room_name, assumeNotNull(session_key) FROM {db}.live_connections WHERE session_key IS NOT NULL)
      AND NOT deleted
) AS s ON c.room_name = s.room_name AND c.session_key = s.session_key
ORDER BY room_name, joined_at, connection_id
LIMIT {{_limit:UInt32}}
"""
    return Query(sql, params, shape=functools.partial(_live_shape, stale_after_s=max(0, int(stale_after_s))))


_PARTICIPANT_FIELDS = (
    "participant_id",
    "connection_id",
    "session_key",
    "room_session_id",
    "display_name",
    "role_name",
    "role_class",
    "party",
    "external_id",
    "user_key",
    "user_source",
    "user_id",
    "user_name",
    "joined_at",
    "open_s",
    "stale",
)


def _gap_s(host: datetime | None, guest: datetime | None) -> float | None:
    """Seconds from the first guest's join to the first host's (positive: the guests waited)."""
    if host is None or guest is None:
        return None
    return round((host - guest).total_seconds(), 3)


def _live_shape(rows: list[dict[str, Any]], *, stale_after_s: int) -> dict[str, Any]:
    """The open connections (ordered by room) as one entry per room: its participants (`stale` ones are
    listed but not `present`) and its sessions with their arrival times."""
    truncated = len(rows) > LIVE_MAX_CONNECTIONS
    rooms: dict[str, dict[str, Any]] = {}
    sessions: dict[tuple[str, str], dict[str, Any]] = {}
    as_of = rows[0]["as_of"] if rows else None
    for row in rows[:LIVE_MAX_CONNECTIONS]:
        room = rooms.get(row["room_name"])
        if room is None:
            room = rooms[row["room_name"]] = {
                "room_name": row["room_name"],
                "customer_id": row["customer_id"],
                "customer_name": row["customer_name"],
                "present": 0,
                "stale": 0,
                "sessions": [],
                "participants": [],
            }
        stale = bool(row["stale"])
        room["stale" if stale else "present"] += 1
        room["participants"].append(
            {f: _json_value(bool(row[f]) if f == "stale" else row[f]) for f in _PARTICIPANT_FIELDS}
        )
        key = row["session_key"]
        if key is not None and (row["room_name"], key) not in sessions:
            session = {
                "session_key": key,
                "room_session_id": row["room_session_id"],
                "started_at": _json_value(row["session_started_at"]),
                "first_host_joined_at": _json_value(row["first_host_joined_at"]),
                "first_guest_joined_at": _json_value(row["first_guest_joined_at"]),
                "host_after_guest_s": _gap_s(row["first_host_joined_at"], row["first_guest_joined_at"]),
            }
            sessions[(row["room_name"], key)] = session
            room["sessions"].append(session)
    return {
        "as_of": _json_value(as_of),
        "stale_after_s": stale_after_s,
        "truncated": truncated,
        "results": list(rooms.values()),
    }


# ------------------------------------------------------------------------------------------ sessions/*

ARRIVALS_MAX_LIMIT = 1000
_ARRIVAL_SORTS = {
    "startedAt": Sort(
        ("toUnixTimestamp64Milli(started_at)", "room_name", "session_key"), ("Int64", "String", "String")
    ),
}


def session_arrivals(database: str, args: Mapping[str, str]) -> Query:
    """`GET /sessions/arrivals`: per session that started in `[from, to)`, its room, customer, and when its
    first host and its first guest joined, with the gap (`host_after_guest_s`: positive when the guests
    waited). Keyset pages of up to 1,000, oldest first. Filters: `customer_id`, `unresolved`."""
    filters_allowed = {"from", "to", "customer_id", "unresolved"}
    check_names(args, filters_allowed | {"cursor", "limit"})
    db = _db(database)
    low, high = time_range(args)
    params: dict[str, Any] = {"from_ms": low, "to_ms": high}
    customer = customer_filter(args, params)
    select = """
        room_name, room_session_id, session_key, customer_id, customer_name, started_at, ended_at,
        first_host_joined_at, first_guest_joined_at, host_after_guest_s"""
    return _paged(
        "/sessions/arrivals",
        args,
        {k: v for k, v in args.items() if k in filters_allowed},
        select=select,
        source=f"{db}.sessions_between({PERIOD}) WHERE {customer}",
        params=params,
        sorts=_ARRIVAL_SORTS,
        default_sort="startedAt:asc",
        max_limit=ARRIVALS_MAX_LIMIT,
    )


# ------------------------------------------------------------------------------------------ archive

ARCHIVE_MAX_LIMIT = 5000
_ARCHIVE_SORTS = {"receivedAt": Sort(("toUnixTimestamp64Milli(received_at)", "event_id"), ("Int64", "String"))}


def archive_raw(database: str, args: Mapping[str, str]) -> Query:
    """The raw archive in `[from, to)` of arrival time, oldest first, in keyset pages of up to 5,000:
    what `replay` reads for ranges the raw topic no longer holds. Bodies are personal data: the endpoint
    is behind the read API's token like every other, and nothing here is logged."""
    check_names(args, {"from", "to", "cursor", "limit"})
    db = _db(database)
    low, high = time_range(args)
    params: dict[str, Any] = {"from_ms": low, "to_ms": high}
    select = """
        toUnixTimestamp64Milli(received_at) AS receivedAtMs, event_id AS eventId, event_type AS eventType,
        room_name AS roomName, source AS source, body AS body"""
    return _paged(
        "/archive/raw",
        args,
        {k: v for k, v in args.items() if k in ("from", "to")},
        select=select,
        source=(
            f"{db}.raw_archive FINAL WHERE received_at >= fromUnixTimestamp64Milli({{from_ms:Int64}}, 'UTC') "
            "AND received_at < fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')"
        ),
        params=params,
        sorts=_ARCHIVE_SORTS,
        default_sort="receivedAt:asc",
        max_limit=ARCHIVE_MAX_LIMIT,
    )


ENDPOINTS: dict[str, Builder] = {
    "/usage/customers": usage_customers,
    "/usage/customer-days": usage_customer_days,
    "/usage/users": usage_users,
    "/usage/rooms": usage_rooms,
    "/insights/rooms": insights_rooms,
    "/insights/room-sessions": insights_room_sessions,
    "/insights/participants": insights_participants,
    "/sessions/arrivals": session_arrivals,
    "/live/rooms": live_rooms,
    "/archive/raw": archive_raw,
}


def endpoints(*, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> dict[str, Builder]:
    """ENDPOINTS with the settings some of them need (STALE_CONNECTION_S for `/live/rooms`)."""
    return {**ENDPOINTS, "/live/rooms": functools.partial(live_rooms, stale_after_s=stale_after_s)}


# --------------------------------------------------------------------------------------------- results


def _json_value(value: Any) -> Any:
    """ClickHouse values as JSON: DateTime64 (returned naive, in UTC) as ISO 8601 with `Z`."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


def result(query: Query, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The response document: `{"results": [...]}`, plus `cursor` (null on the last page) when paged."""
    if query.shape is not None:
        return query.shape(rows)
    paging = query.paging
    if paging is None:
        return {"results": [{k: _json_value(v) for k, v in row.items()} for row in rows]}
    page = rows[: paging.limit]
    cursor = None
    if len(rows) > paging.limit:
        last = page[-1]
        cursor = encode_cursor(paging.sort, paging.fingerprint, [last[f"_k{i}"] for i in range(paging.width)])
    results = [{k: _json_value(v) for k, v in row.items() if not k.startswith("_k")} for row in page]
    return {"cursor": cursor, "results": results}
