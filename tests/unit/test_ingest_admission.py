"""The header-only checks and their order: method, media type, declared size."""

from __future__ import annotations

import pytest

from ingest import admission

LIMIT = 65536


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "post"])
def test_only_post_is_allowed(method: str) -> None:
    answer = admission.check_headers(method, "application/json", 10, LIMIT)
    assert answer is not None
    assert answer.status == 405
    assert answer.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/x-www-form-urlencoded", "application/jsonp", "json"]
)
def test_other_media_types_are_refused(content_type: str | None) -> None:
    answer = admission.check_headers("POST", content_type, 10, LIMIT)
    assert answer is not None
    assert (answer.status, answer.reason) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON", " application/json "]
)
def test_json_media_type_with_parameters_passes(content_type: str) -> None:
    assert admission.check_headers("POST", content_type, 10, LIMIT) is None


def test_declared_size_over_the_limit_is_refused_before_reading() -> None:
    answer = admission.check_headers("POST", "application/json", LIMIT + 1, LIMIT)
    assert answer is not None
    assert (answer.status, answer.reason, answer.close_connection) == (413, "declared_too_large", True)
    assert admission.check_headers("POST", "application/json", LIMIT, LIMIT) is None
    assert admission.check_headers("POST", "application/json", None, LIMIT) is None


def test_method_is_checked_before_media_type_and_size() -> None:
    answer = admission.check_headers("GET", "text/plain", LIMIT * 10, LIMIT)
    assert answer is not None and answer.status == 405
    answer = admission.check_headers("POST", "text/plain", LIMIT * 10, LIMIT)
    assert answer is not None and answer.status == 415


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-gzip", "GZip", "identity, gzip", "zstd"])
def test_compressed_bodies_are_refused_before_reading(encoding: str) -> None:
    answer = admission.check_headers("POST", "application/json", 10, LIMIT, encoding)
    assert answer is not None
    assert (answer.status, answer.reason, answer.close_connection) == (415, "unsupported_encoding", True)


@pytest.mark.parametrize("encoding", [None, "", "identity", " Identity "])
def test_an_identity_encoding_passes(encoding: str | None) -> None:
    assert admission.check_headers("POST", "application/json", 10, LIMIT, encoding) is None


def test_media_type_is_checked_before_the_encoding() -> None:
    answer = admission.check_headers("POST", "text/plain", 10, LIMIT, "gzip")
    assert answer is not None and answer.reason == "unsupported_media_type"
