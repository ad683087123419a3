"""Answer shapes: status classes match Whereby's retry rules, labels stay in their bounded sets."""

from __future__ import annotations

import orjson

from ingest import answers


def test_accepted_is_202_with_the_id() -> None:
    answer = answers.accepted("abc")
    assert answer.status == 202
    assert orjson.loads(answer.body_bytes()) == {"status": "accepted", "id": "abc"}


def test_client_faults_are_4xx_and_never_ask_for_a_retry() -> None:
    for answer in (
        answers.method_not_allowed("GET"),
        answers.unsupported_media_type(),
        answers.payload_too_large(10, declared=True),
        answers.payload_too_large(10, declared=False),
        answers.incomplete_body(),
        answers.invalid_signature("timestamp", "timestamp outside tolerance of 300s"),
        answers.invalid_event("invalid_createdAt", "bad", "createdAt"),
    ):
        assert 400 <= answer.status < 500
        assert "Retry-After" not in answer.headers
        assert answer.outcome == answers.REJECTED
        assert answer.reason in answers.REASONS


def test_not_stored_is_503_with_retry_after() -> None:
    for answer in (answers.saturated(), answers.shutting_down(), answers.not_stored("produce_timeout")):
        assert answer.status == 503
        assert int(answer.headers["Retry-After"]) >= 1
        assert answer.outcome == answers.UNAVAILABLE
        assert answer.reason in answers.REASONS


def test_signature_error_body_names_the_check() -> None:
    body = orjson.loads(answers.invalid_signature("timestamp", "timestamp outside tolerance of 300s").body_bytes())
    assert body == {"error": "invalid_signature", "detail": "timestamp outside tolerance of 300s"}


def test_invalid_event_names_the_field() -> None:
    body = orjson.loads(answers.invalid_event("invalid_data", "`data` is missing", "data").body_bytes())
    assert body == {"error": "invalid_event", "detail": "`data` is missing", "field": "data"}


def test_accepted_body_fast_path_is_byte_identical() -> None:
    for event_id in ("abc", 'quo"te\\slash', "ünïcode-✓", "x" * 256):
        assert answers.accepted_body(event_id) == answers.accepted(event_id).body_bytes()
