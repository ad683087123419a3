"""sink.read.sqlerrors: exceptions with the code, text and HTTP status a ClickHouse server answers with."""

from __future__ import annotations

import pytest

from sink.read import sqlerrors

VERSION = "26.9.2.1"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (194, 401),  # REQUIRED_PASSWORD
        (516, 403),  # AUTHENTICATION_FAILED
        (497, 403),  # ACCESS_DENIED
        (62, 400),  # SYNTAX_ERROR
        (60, 404),  # UNKNOWN_TABLE
        (81, 404),  # UNKNOWN_DATABASE
        (115, 404),  # UNKNOWN_SETTING
        (159, 408),  # TIMEOUT_EXCEEDED
        (229, 413),  # QUERY_IS_TOO_LARGE
        (48, 501),  # NOT_IMPLEMENTED
        (164, 500),  # READONLY
        (396, 500),  # TOO_MANY_ROWS_OR_BYTES
        (202, 500),  # TOO_MANY_SIMULTANEOUS_QUERIES
    ],
)
def test_http_status_follows_the_server_s_table(code: int, status: int) -> None:
    assert sqlerrors.http_status(code) == status


def test_engine_text_keeps_its_words_and_gets_the_version_trailer() -> None:
    e = sqlerrors.from_engine(
        "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY)", VERSION
    )
    assert e.code == 164 and e.status == 500
    assert e.text == (
        "Code: 164. DB::Exception: default: Cannot execute query in readonly mode. (READONLY) (version 26.9.2.1)"
    )


def test_the_engine_s_nested_wrapping_is_unwrapped_to_what_a_server_sends() -> None:
    inner = (
        "Code: 164. DB::Exception: Cannot modify 'max_threads' setting in readonly mode. (READONLY) (version 26.9.2.1)"
    )
    wrapped = (
        f"Code: 164. DB::Exception: Code: 164. DB::Exception: {inner[len('Code: 164. DB::Exception: ') :]}. (READONLY)"
    )
    twice = f"Code: 164. DB::Exception: {wrapped}. (READONLY)"
    assert sqlerrors.from_engine(wrapped, VERSION).text == inner
    assert sqlerrors.from_engine(twice, VERSION).text == inner


def test_a_message_without_a_code_is_an_unknown_exception() -> None:
    e = sqlerrors.from_engine("something broke", VERSION)
    assert (e.code, e.status) == (1002, 500)
    assert e.text == "Code: 1002. DB::Exception: something broke. (UNKNOWN_EXCEPTION) (version 26.9.2.1)"


def test_own_errors_are_worded_as_a_server_words_them() -> None:
    e = sqlerrors.error(sqlerrors.AUTHENTICATION_FAILED, "bi: Authentication failed: password is incorrect", VERSION)
    assert e.text.endswith(". (AUTHENTICATION_FAILED) (version 26.9.2.1)") and e.status == 403
