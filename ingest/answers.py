"""Every answer the webhook endpoint gives, as plain values.

An :class:`Answer` carries the HTTP status, the JSON body and the two bounded metric labels (`outcome`,
`reason`). Whereby treats 5xx and timeouts as "retry" and anything else as final (reference §1.6), so
the status codes here are the contract: 2xx only for a stored event, 4xx for client faults, 503 only
when we could not keep an event that might be fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

ACCEPTED = "accepted"
REJECTED = "rejected"
UNAVAILABLE = "unavailable"

ALLOWED_METHODS = "POST"
JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Answer:
    """One response: status, JSON body and metric labels (all from bounded sets)."""

    status: int
    outcome: str
    reason: str
    body: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    close_connection: bool = False

    def body_bytes(self) -> bytes:
        """The JSON body, compact."""
        return orjson.dumps(self.body)


def _error(
    status: int,
    outcome: str,
    reason: str,
    error: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    close_connection: bool = False,
    extra: dict[str, str] | None = None,
) -> Answer:
    body = {"error": error, "detail": detail, **(extra or {})}
    return Answer(status, outcome, reason, body, headers or {}, close_connection)


def accepted(event_id: str) -> Answer:
    """202: the event is on the raw topic, acknowledged by all in-sync replicas."""
    return Answer(202, ACCEPTED, "stored", {"status": "accepted", "id": event_id})


_ACCEPTED_PREFIX = b'{"status":"accepted","id":'


def accepted_body(event_id: str) -> bytes:
    """The body of `accepted(event_id)`, byte for byte, without building the Answer (the hot path)."""
    return _ACCEPTED_PREFIX + orjson.dumps(event_id) + b"}"


def method_not_allowed(method: str) -> Answer:
    """405 with `Allow`, for anything but POST."""
    return _error(
        405,
        REJECTED,
        "method_not_allowed",
        "method_not_allowed",
        f"use {ALLOWED_METHODS}",
        headers={"Allow": ALLOWED_METHODS},
    )


def unsupported_media_type() -> Answer:
    """415 for a body that is not declared as `application/json`."""
    return _error(
        415,
        REJECTED,
        "unsupported_media_type",
        "unsupported_media_type",
        f"Content-Type must be {JSON_CONTENT_TYPE}",
    )


def unsupported_encoding() -> Answer:
    """415 for a body sent with a Content-Encoding other than `identity` (it is never read or inflated)."""
    return _error(
        415,
        REJECTED,
        "unsupported_encoding",
        "unsupported_media_type",
        "Content-Encoding must be identity: send the JSON uncompressed",
        close_connection=True,
    )


def payload_too_large(limit: int, *, declared: bool) -> Answer:
    """413. The connection is closed rather than drained, so the rest of the body is never read."""
    return _error(
        413,
        REJECTED,
        "declared_too_large" if declared else "body_too_large",
        "payload_too_large",
        f"body is larger than {limit} bytes",
        close_connection=True,
    )


def body_timeout(timeout_s: float) -> Answer:
    """408 when the body did not arrive within WEBHOOK_BODY_TIMEOUT_S of the headers; the connection is closed.

    A 4xx: Whereby sends its small bodies with the headers, so a body this late comes from a client
    holding the connection open. Were it Whereby on a bad network, it stopped waiting after its own 5 s
    (which started before our timer did) and retries on its own, whatever we answer.
    """
    return _error(
        408,
        REJECTED,
        "body_timeout",
        "request_timeout",
        f"the body did not arrive within {timeout_s:g}s",
        close_connection=True,
    )


def incomplete_body() -> Answer:
    """400 when the sender ends the body before its declared length (nothing to verify)."""
    return _error(400, REJECTED, "incomplete_body", "incomplete_body", "body ended before Content-Length bytes")


def invalid_signature(reason: str, detail: str) -> Answer:
    """401 naming the check that failed; `detail` comes from `signature` and never holds expected values."""
    return _error(401, REJECTED, reason, "invalid_signature", detail)


def invalid_event(reason: str, detail: str, field_name: str | None) -> Answer:
    """400 for a correctly signed body that is not a usable envelope (it went to the dead-letter topic)."""
    return _error(400, REJECTED, reason, "invalid_event", detail, extra={"field": field_name} if field_name else None)


def saturated(retry_after_s: int = 1) -> Answer:
    """503: too many requests in flight; bounded memory matters more than this request, which Whereby retries."""
    return _error(
        503,
        UNAVAILABLE,
        "saturated",
        "unavailable",
        "too many requests in flight",
        headers={"Retry-After": str(retry_after_s)},
    )


def shutting_down() -> Answer:
    """503 during shutdown: another instance (or this one, restarted) takes the retry."""
    return _error(503, UNAVAILABLE, "shutting_down", "unavailable", "shutting down", headers={"Retry-After": "1"})


def not_stored(reason: str, retry_after_s: int = 2) -> Answer:
    """503 when the broker did not acknowledge in time (or failed): not durable, so ask for a retry."""
    return _error(
        503,
        UNAVAILABLE,
        reason,
        "unavailable",
        "event could not be stored in time",
        headers={"Retry-After": str(retry_after_s)},
    )


# The bounded `reason` label values, for documentation and tests (signature reasons come from `signature`).
REASONS = frozenset(
    {
        "stored",
        "method_not_allowed",
        "unsupported_media_type",
        "unsupported_encoding",
        "declared_too_large",
        "body_too_large",
        "incomplete_body",
        "body_timeout",
        "missing_header",
        "malformed_header",
        "timestamp",
        "no_match",
        "invalid_json",
        "not_an_object",
        "invalid_id",
        "invalid_type",
        "invalid_createdAt",
        "invalid_data",
        "saturated",
        "shutting_down",
        "produce_timeout",
        "produce_failed",
        "deadletter_failed",
    }
)
