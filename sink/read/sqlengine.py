"""Read-only SQL on the embedded engine, one query at a time per connection, for the HTTP interface.

Every query opens its own chdb connection to the engine the sink already runs (a connection costs
about 0.3 ms; chdb runs queries of different connections in parallel, while one connection must be
used by one thread at a time). The connection string carries the server's own settings, applied
before the client's: `readonly=1`, the time limit and the result-size limit, each with the `throw`
overflow mode. The client's settings are then applied with `SET` on that read-only connection, so the
engine itself accepts them (an unchanged value) or refuses them with its own `READONLY` error, exactly
as a server does for a `readonly=1` user. The sink's writer uses its own clickhouse-connect client and
never shares a connection with this module.

`max_execution_time` is the one client setting treated as the Grafana documentation asks a server
profile to allow it (`CHANGEABLE_IN_READONLY` with a maximum): a client may lower the limit; a value
above `SQL_QUERY_TIMEOUT_S`, or 0, is lowered to it. A server would refuse a value above its maximum
instead, which would fail every Grafana query (clickhouse-go sends the query timeout plus 5 s).

`readonly=1` still lets a few statements change shared state, so they are refused before execution,
with the errors a server gives a user without the grant: `KILL QUERY` (every embedded query runs as
the same user, the sink's inserts included), `SYSTEM …` (`SYSTEM STOP MERGES` passes `readonly`), and
`INTO OUTFILE` (it writes a file on the sink's host; a server refuses it over HTTP). Multi-statement
text is refused as a server refuses it (the embedded engine would run each statement). The check
parses the text with the engine's own parser (`formatQuerySingleLine`), never with a regular
expression over the raw SQL, and the original text is what runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import chdb

from sink.read import native, sqlerrors

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# In the engine's single-line rendering: string literals and quoted identifiers, then the clauses.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"")
_OUTFILE = re.compile(r"\bINTO OUTFILE\b")
_FORMAT = re.compile(r"\bFORMAT ([A-Za-z0-9_]+)(?! *\()")
_GUARD_SCOPE = ": In scope SELECT formatQuerySingleLine("
_NATIVE = "Native"


@dataclass(frozen=True)
class Limits:
    """What one query may use (from SQL_QUERY_TIMEOUT_S and SQL_MAX_RESULT_BYTES)."""

    timeout_s: float
    max_result_bytes: int


@dataclass(frozen=True)
class SqlRequest:
    """One query as the HTTP layer decoded it."""

    sql: str
    default_format: str = "TabSeparated"
    database: str = ""
    # Bound parameters without their `param_` prefix, values in ClickHouse's escaped text form.
    params: Mapping[str, str] = field(default_factory=dict)
    # Client settings (not the transport's own parameters), in request order.
    settings: Mapping[str, str] = field(default_factory=dict)
    # `client_protocol_version`: the layout of `Native` the client reads (0: the plain layout).
    protocol_revision: int = 0
    user: str = "default"


@dataclass(frozen=True)
class SqlResult:
    """A finished query: the formatted bytes and what goes into `X-ClickHouse-Summary`."""

    body: bytes
    format: str
    read_rows: int
    read_bytes: int
    elapsed_ns: int


@dataclass(frozen=True)
class ServerInfo:
    """What the interface reports about the engine in its headers and errors."""

    version: str
    timezone: str
    display_name: str


class EmbeddedSql:
    """Runs read-only queries on the embedded engine at `path` (blocking; call from worker threads)."""

    def __init__(self, path: str, default_database: str, limits: Limits) -> None:
        if not _IDENTIFIER.match(default_database):
            raise ValueError(f"not a plain database name: {default_database!r}")
        # chdb compares engine paths literally: use the spelling clickhouse-connect's chdb backend uses.
        self.path = os.path.realpath(path)
        self.default_database = default_database
        self.limits = limits
        self.info = ServerInfo(version="", timezone="UTC", display_name="")

    def probe(self) -> ServerInfo:
        """Read the engine's version, time zone and name once (the interface's headers use them)."""
        conn = self._connect(self.limits.timeout_s)
        try:
            row = conn.query("SELECT version(), timezone(), displayName()", "TabSeparated").bytes()
        finally:
            conn.close()
        version, timezone, display = row.decode().rstrip("\n").split("\t")
        self.info = ServerInfo(version=version, timezone=timezone, display_name=display)
        return self.info

    def execute(self, request: SqlRequest) -> SqlResult:
        """Run one query; raises ClickHouseError with the text a server would send."""
        version = self.info.version
        if not request.sql.strip():
            raise sqlerrors.error(sqlerrors.SYNTAX_ERROR, "Empty query", version)
        settings = dict(request.settings)
        timeout_s = _time_limit(settings.pop("max_execution_time", None), self.limits.timeout_s, version)
        conn = self._connect(timeout_s)
        try:
            rendered = self._check(conn, request)
            out_format = _trailing_format(rendered) or request.default_format
            self._run(conn, f"USE {_identifier(request.database or self.default_database)}")
            for name, value in settings.items():
                if not _SETTING_NAME.match(name):
                    raise sqlerrors.error(sqlerrors.BAD_ARGUMENTS, f"Invalid setting name {name!r}", version)
                self._run(conn, f"SET {name} = {_quote(value)}")
            result = self._run(conn, request.sql, request.default_format, dict(request.params))
            body = bytes(result.bytes() or b"")
            if len(body) > self.limits.max_result_bytes:
                raise sqlerrors.error(
                    sqlerrors.TOO_MANY_ROWS_OR_BYTES,
                    f"Limit for result exceeded, max bytes: {self.limits.max_result_bytes}, current bytes: {len(body)}",
                    version,
                )
            if out_format == _NATIVE and request.protocol_revision:
                body = _with_revision(body, request.protocol_revision, version)
            return SqlResult(
                body=body,
                format=out_format,
                read_rows=int(result.rows_read()),
                read_bytes=int(result.bytes_read()),
                elapsed_ns=int(result.elapsed() * 1e9),
            )
        finally:
            conn.close()

    def _connect(self, timeout_s: float) -> Any:
        # Settings in the connection string apply to this connection's session before any client SET.
        server = {
            "max_execution_time": f"{timeout_s:g}",
            "timeout_overflow_mode": "throw",
            "max_result_bytes": str(self.limits.max_result_bytes),
            "result_overflow_mode": "throw",
            "readonly": "1",
        }
        try:
            return chdb.connect(f"{self.path}?{urlencode(server)}")
        except Exception as exc:
            raise sqlerrors.from_engine(str(exc), self.info.version) from None

    def _run(self, conn: Any, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None) -> Any:
        try:
            return conn.query(sql, fmt, params=params or {})
        except Exception as exc:
            raise sqlerrors.from_engine(str(exc), self.info.version) from None

    def _check(self, conn: Any, request: SqlRequest) -> str:
        """The engine's single-line rendering of the statement, once it is known to be allowed."""
        version = self.info.version
        try:
            rendered = conn.query(
                "SELECT formatQuerySingleLine({q:String})", "TabSeparated", params={"q": _escape(request.sql)}
            ).bytes()
        except Exception as exc:
            # The parser's message is about the client's text; drop the part naming the check's query.
            message = str(exc)
            cut = message.rfind(_GUARD_SCOPE)
            if cut > 0:
                tail = re.search(r"\. \(([A-Z0-9_]+)\)", message[cut:])
                message = message[:cut] + (f". ({tail.group(1)})" if tail else "")
            raise sqlerrors.from_engine(message, version) from None
        line = _unescape(rendered.decode().rstrip("\n"))
        bare = _QUOTED.sub("''", line)
        head = bare.lstrip("( ").split(" ", 1)[0].upper()
        if head in ("KILL", "SYSTEM"):
            grant = "KILL QUERY" if head == "KILL" else "SYSTEM"
            raise sqlerrors.error(
                sqlerrors.ACCESS_DENIED,
                f"{request.user}: Not enough privileges. To execute this query, it's necessary to have the grant "
                f"{grant} ON *.*",
                version,
            )
        if _OUTFILE.search(bare):
            raise sqlerrors.error(sqlerrors.INTO_OUTFILE_NOT_ALLOWED, "INTO OUTFILE is not allowed", version)
        return bare


def _time_limit(requested: str | None, cap_s: float, version: str) -> float:
    """The client's max_execution_time, lowered to the server's cap (0 means none: the cap)."""
    if requested is None:
        return cap_s
    try:
        value = float(requested)
    except ValueError:
        raise sqlerrors.error(
            sqlerrors.CANNOT_PARSE_NUMBER, f"Cannot parse number {requested!r} for setting max_execution_time", version
        ) from None
    return cap_s if value <= 0 else min(value, cap_s)


def _trailing_format(rendered: str) -> str | None:
    """The statement's own FORMAT clause (it wins over `default_format`), from the engine's rendering."""
    found = _FORMAT.findall(rendered)
    return found[-1] if found else None


def _with_revision(body: bytes, revision: int, version: str) -> bytes:
    try:
        return native.with_revision(body, revision)
    except native.UnsupportedType as exc:
        raise sqlerrors.error(
            sqlerrors.NOT_IMPLEMENTED,
            f"Native output for client_protocol_version={revision} is not implemented for the type {exc} by the "
            "embedded SQL interface; read it in another format (e.g. RowBinaryWithNamesAndTypes)",
            version,
        ) from None
    except native.MalformedNative as exc:
        raise sqlerrors.error(sqlerrors.UNKNOWN_EXCEPTION, f"cannot re-encode Native output: {exc}", version) from None


def _identifier(name: str) -> str:
    """A database name from the client as a quoted identifier (it may hold any character)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _quote(value: str) -> str:
    """A setting value as a string literal; ClickHouse converts it to the setting's type."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _escape(text: str) -> str:
    """A query parameter value in ClickHouse's escaped text form (what `param_x` carries over HTTP)."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(text: str) -> str:
    """TabSeparated unescaping of one value (the rendering is one line, so only a few escapes occur)."""
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r", "0": "\0"}.get(m.group(1), m.group(1)), text)
