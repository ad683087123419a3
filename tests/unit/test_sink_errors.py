"""Classifying ClickHouse insert failures, and the backoff between retries."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from sink.errors import RETRIABLE_CODES, backoff_delay, classify, error_code


def ch_error(code: int, name: str) -> DatabaseError:
    return DatabaseError(f"Code: {code}. DB::Exception: something went wrong. ({name})")


@pytest.mark.parametrize(
    ("code", "label"),
    [(3, "network"), (159, "timeout"), (164, "readonly"), (202, "overload"), (209, "timeout"), (210, "network"),
     (241, "overload"), (242, "readonly"), (252, "overload"), (285, "replication"), (319, "replication"),
     (425, "storage"), (999, "replication"), (60, "unavailable")],
)  # fmt: skip
def test_transient_server_errors_are_retried(code: int, label: str) -> None:
    failure = classify(ch_error(code, "X"))
    assert (failure.kind, failure.code, failure.label) == ("retriable", code, label)


def test_the_code_attribute_wins_over_the_message() -> None:
    exc = DatabaseError("Code: 6. looks like a parse error")
    exc.code = 242  # type: ignore[attr-defined]
    assert error_code(exc) == 242
    assert classify(exc).kind == "retriable"


@pytest.mark.parametrize("exc", [OperationalError("connection refused"), ConnectionResetError(), TimeoutError()])
def test_connection_errors_are_retried(exc: BaseException) -> None:
    assert (classify(exc).kind, classify(exc).label) == ("retriable", "connection")


@pytest.mark.parametrize(("code", "name"), [(26, "CANNOT_PARSE_QUOTED_STRING"), (469, "VIOLATED_CONSTRAINT"),
                                             (53, "TYPE_MISMATCH"), (117, "INCORRECT_DATA")])  # fmt: skip
def test_data_errors_reject_rows(code: int, name: str) -> None:
    failure = classify(ch_error(code, name))
    assert (failure.kind, failure.label) == ("rejected", name)


def test_client_side_serialisation_errors_reject_rows() -> None:
    assert classify(OverflowError("int too big")).kind == "rejected"


@pytest.mark.parametrize("code", [16, 47, 516])  # no such column, unknown identifier, authentication failed
def test_everything_else_is_fatal(code: int) -> None:
    assert classify(ch_error(code, "X")).kind == "fatal"
    assert classify(RuntimeError("bug")).kind == "fatal"


def test_retriable_and_rejected_codes_do_not_overlap() -> None:
    from sink.errors import REJECTED_CODES

    assert not set(RETRIABLE_CODES) & set(REJECTED_CODES)


def test_backoff_doubles_up_to_the_cap_with_half_of_it_random() -> None:
    low = [backoff_delay(a, base_s=0.5, cap_s=8, jitter=lambda: 0.0) for a in range(7)]
    high = [backoff_delay(a, base_s=0.5, cap_s=8, jitter=lambda: 1.0) for a in range(7)]
    assert high == [0.5, 1, 2, 4, 8, 8, 8]
    assert low == [h / 2 for h in high]  # never collapses to zero
