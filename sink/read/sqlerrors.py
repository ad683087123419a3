"""ClickHouse exceptions as the HTTP interface answers them: the code, the text and the HTTP status.

A real server answers a failed query with the status from its `exceptionCodeToHTTPStatus` table, the
header `X-ClickHouse-Exception-Code`, and the body `Code: N. DB::Exception: <message>. (NAME) (version
V)` plus a newline. Clients rely on all three: clickhouse-connect reads the header and the body,
clickhouse-go parses `Code: N.` from the body, both show the text to the user. The engine's own
exceptions keep their text (see :func:`from_engine`); the few errors this interface raises itself
(authentication, admission, limits) use the codes and wording a server uses for the same case.

Pure: no I/O.
"""

from __future__ import annotations

import re

# The codes this interface raises itself, with their ClickHouse names.
UNKNOWN_EXCEPTION = 1002
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
CANNOT_PARSE_NUMBER = 72
CANNOT_PARSE_INPUT_ASSERTION_FAILED = 27
BAD_ARGUMENTS = 36
TIMEOUT_EXCEEDED = 159
READONLY = 164
REQUIRED_PASSWORD = 194
TOO_MANY_SIMULTANEOUS_QUERIES = 202
CANNOT_DECOMPRESS = 271
INTO_OUTFILE_NOT_ALLOWED = 358
TOO_MANY_ROWS_OR_BYTES = 396
ACCESS_DENIED = 497
AUTHENTICATION_FAILED = 516
QUERY_IS_TOO_LARGE = 229

_NAMES = {
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    CANNOT_PARSE_NUMBER: "CANNOT_PARSE_NUMBER",
    CANNOT_PARSE_INPUT_ASSERTION_FAILED: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    TIMEOUT_EXCEEDED: "TIMEOUT_EXCEEDED",
    READONLY: "READONLY",
    REQUIRED_PASSWORD: "REQUIRED_PASSWORD",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    INTO_OUTFILE_NOT_ALLOWED: "INTO_OUTFILE_NOT_ALLOWED",
    TOO_MANY_ROWS_OR_BYTES: "TOO_MANY_ROWS_OR_BYTES",
    ACCESS_DENIED: "ACCESS_DENIED",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
}

# ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp (26.x), by code number. Parse errors of
# IPv4/IPv6 and UNSUPPORTED_MEDIA_TYPE, newer than the code table read here, fall back to 500.
_STATUS_BY_CODE: dict[int, int] = {
    REQUIRED_PASSWORD: 401,
    # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, SET_NON_GRANTED_ROLE, ACCESS_DENIED
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    # BAD_ARGUMENTS, CANNOT_COMPILE_REGEXP, CANNOT_PARSE_{TEXT, ESCAPE_SEQUENCE, QUOTED_STRING, DATE,
    # DATETIME, NUMBER, DOMAIN_VALUE_FROM_STRING, INPUT_ASSERTION_FAILED, UUID}, DUPLICATE_COLUMN,
    # ILLEGAL_COLUMN, UNKNOWN_ELEMENT_IN_AST, UNKNOWN_TYPE_OF_AST_NODE, THERE_IS_NO_COLUMN, TOO_DEEP_AST,
    # TOO_BIG_AST, UNEXPECTED_AST_STRUCTURE, SYNTAX_ERROR, INCORRECT_DATA, TYPE_MISMATCH,
    # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    **dict.fromkeys(
        (36, 427, 6, 25, 26, 38, 41, 72, 441, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321), 400
    ),
    # UNKNOWN_{TABLE, FUNCTION, IDENTIFIER, TYPE, STORAGE, DATABASE, SETTING, DIRECTION_OF_SORTING,
    # AGGREGATE_FUNCTION, FORMAT, DATABASE_ENGINE, TYPE_OF_QUERY, ROLE}
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    QUERY_IS_TOO_LARGE: 413,
    NOT_IMPLEMENTED: 501,
    **dict.fromkeys((209, 76), 503),  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE
    381: 411,  # HTTP_LENGTH_REQUIRED
    TIMEOUT_EXCEEDED: 408,
    439: 503,  # CANNOT_SCHEDULE_TASK
}  # fmt: skip

_CODE = re.compile(r"^Code: (\d+)\. ")
# chdb wraps an exception raised while building the query context in more of the same code:
# "Code: 164. DB::Exception: Code: 164. DB::Exception: <text> (version V). (READONLY)"; a server sends
# the innermost one.
_DOUBLE = re.compile(r"^Code: (\d+)\. DB::Exception: (Code: \1\. DB::Exception: .*)\. \([A-Z0-9_]+\)$", re.DOTALL)
_VERSION = re.compile(r"\(version [^()]*(?:\([^()]*\))?\)\s*$")


class ClickHouseError(Exception):
    """An exception as the HTTP interface sends it: `text` is the whole first line of the body."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    @property
    def status(self) -> int:
        """The HTTP status a ClickHouse server answers this code with."""
        return http_status(self.code)


def http_status(code: int) -> int:
    """ClickHouse's mapping of an exception code to an HTTP status (500 for everything else)."""
    return _STATUS_BY_CODE.get(code, 500)


def error(code: int, message: str, version: str) -> ClickHouseError:
    """An exception raised by this interface, worded as a server words it."""
    name = _NAMES.get(code, "UNKNOWN_EXCEPTION")
    return ClickHouseError(code, f"Code: {code}. DB::Exception: {message}. ({name}) (version {version})")


def from_engine(message: str, version: str) -> ClickHouseError:
    """The engine's exception text as a server sends it: one level of wrapping, with the version."""
    text = message.strip()
    at = text.find("Code: ")
    if at > 0:
        text = text[at:]  # chdb may put its own prefix before the ClickHouse message
    while double := _DOUBLE.match(text):
        text = double.group(2)
    match = _CODE.match(text)
    if not match:
        return error(UNKNOWN_EXCEPTION, text or "unknown error", version)
    if not _VERSION.search(text):
        text = f"{text} (version {version})"
    return ClickHouseError(int(match.group(1)), text)
