"""What to do about a failed ClickHouse insert: retry it, split it, or stop. Pure functions.

- **Retriable**: the server or the network is (for now) unable to take the insert. The batch is kept,
  the partitions are paused and the insert is retried with exponential backoff; nothing is committed
  meanwhile, so nothing is lost. The codes are those the ClickHouse Kafka Connect sink retries, plus
  UNKNOWN_TABLE/UNKNOWN_DATABASE (a table detached for maintenance, or an `ON CLUSTER` DDL not yet
  on this replica), plus connection-level errors.
- **Rejected**: ClickHouse refused the *data* (a parse error, a type error, a violated constraint).
  Some row of the batch is bad: the writer splits the batch to isolate it and dead-letters it.
- **Fatal**: anything else (wrong credentials, a missing column, a bug). Retrying cannot help and
  dead-lettering would hide it: the stage stops without committing, and the records are redelivered
  once an operator has fixed the cause.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Literal

# Re-exported: the sink's insert retries wait like every other retry of the pipeline.
from pipeline.backoff import backoff_delay as backoff_delay

# code -> metric label (a small, fixed set: the `code_class` label of whereby_sink_retries_total)
RETRIABLE_CODES: dict[int, str] = {
    3: "network",  # UNEXPECTED_END_OF_FILE
    107: "storage",  # FILE_DOESNT_EXIST
    159: "timeout",  # TIMEOUT_EXCEEDED
    164: "readonly",  # READONLY
    202: "overload",  # TOO_MANY_SIMULTANEOUS_QUERIES
    203: "overload",  # NO_FREE_CONNECTION
    209: "timeout",  # SOCKET_TIMEOUT
    210: "network",  # NETWORK_ERROR
    241: "overload",  # MEMORY_LIMIT_EXCEEDED
    242: "readonly",  # TABLE_IS_READ_ONLY
    252: "overload",  # TOO_MANY_PARTS
    285: "replication",  # TOO_FEW_LIVE_REPLICAS
    319: "replication",  # UNKNOWN_STATUS_OF_INSERT
    425: "storage",  # SYSTEM_ERROR
    999: "replication",  # KEEPER_EXCEPTION
    60: "unavailable",  # UNKNOWN_TABLE
    81: "unavailable",  # UNKNOWN_DATABASE
}

# Codes that mean "this data cannot go into this table": the batch holds at least one bad row.
REJECTED_CODES: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    25: "CANNOT_PARSE_ESCAPE_SEQUENCE",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    32: "ATTEMPT_TO_READ_AFTER_EOF",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    130: "CANNOT_READ_ARRAY_FROM_TEXT",
    131: "TOO_LARGE_STRING_SIZE",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    469: "VIOLATED_CONSTRAINT",
}

_CODE_IN_MESSAGE = re.compile(r"\bCode:\s*(\d+)\b")

Kind = Literal["retriable", "rejected", "fatal"]


@dataclass(frozen=True)
class Failure:
    """A classified insert failure. `label` is bounded (a metric label); `detail` is for people."""

    kind: Kind
    code: int | None
    label: str
    detail: str


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of `exc`: its `code` attribute, else the first `Code: N` in its text."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        return code
    match = _CODE_IN_MESSAGE.search(str(exc))
    return int(match.group(1)) if match else None


def _is_connection_error(exc: BaseException) -> bool:
    # clickhouse-connect raises OperationalError for transport failures; the stdlib ones can leak through.
    if isinstance(exc, ConnectionError | TimeoutError | socket.timeout | OSError):
        return True
    return type(exc).__name__ == "OperationalError"


def classify(exc: BaseException) -> Failure:
    """Decide whether a failed insert is retried, split to isolate bad rows, or stops the stage."""
    detail = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
    code = error_code(exc)
    if code in RETRIABLE_CODES:
        return Failure("retriable", code, RETRIABLE_CODES[code], detail)
    if code in REJECTED_CODES:
        return Failure("rejected", code, REJECTED_CODES[code], detail)
    if code is None and _is_connection_error(exc):
        return Failure("retriable", None, "connection", detail)
    if code is None and isinstance(exc, TypeError | ValueError | OverflowError | UnicodeError):
        # Raised while the client serialises a row (e.g. a number too big for its column).
        return Failure("rejected", None, "client_serialization", detail)
    if code is None and type(exc).__name__ == "DataError":
        return Failure("rejected", None, "client_serialization", detail)
    return Failure("fatal", code, "fatal", detail)
