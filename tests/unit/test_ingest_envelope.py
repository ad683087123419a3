"""Envelope validation: each field's missing and mistyped cases name the field; unknown types pass."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ingest import envelope

VALID: dict[str, Any] = {
    "id": "5c1f0e9a7b3d2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
    "apiVersion": "1.0",
    "createdAt": "2026-01-01T00:00:00.412Z",
    "type": "room.client.joined",
    "data": {"roomName": "/acme-3f2b8c1d", "meetingId": "1"},
}


def with_(**changes: Any) -> bytes:
    doc = {**VALID, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()


def test_valid_envelope_is_parsed() -> None:
    env = envelope.parse(orjson.dumps(VALID))
    assert env == envelope.Envelope(
        event_id=VALID["id"],
        event_type="room.client.joined",
        created_at=VALID["createdAt"],
        room_name="/acme-3f2b8c1d",
        created_at_ms=1_767_225_600_412,
        doc=VALID,
        data=VALID["data"],
    )


def test_unknown_type_is_accepted() -> None:
    assert envelope.parse(with_(type="meeting.teleported")).event_type == "meeting.teleported"


def test_room_name_is_optional_and_only_taken_when_a_string() -> None:
    assert envelope.parse(with_(data={})).room_name is None
    assert envelope.parse(with_(data={"roomName": 7})).room_name is None
    assert envelope.parse(with_(data={"roomName": ""})).room_name is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b"[]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"null", "not_an_object"),
        (b"42", "not_an_object"),
    ],
)
def test_body_level_errors(body: bytes, reason: str) -> None:
    with pytest.raises(envelope.EnvelopeError) as err:
        envelope.parse(body)
    assert err.value.reason == reason
    assert err.value.field is None


@pytest.mark.parametrize("field", ["id", "type", "createdAt", "data"])
def test_missing_field_is_named(field: str) -> None:
    with pytest.raises(envelope.EnvelopeError) as err:
        envelope.parse(with_(**{field: _DROP}))
    assert err.value.field == field
    assert err.value.reason == f"invalid_{field}"
    assert "missing" in err.value.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 123),
        ("id", None),
        ("id", ""),
        ("id", ["a"]),
        ("id", "x" * 257),
        ("type", 1.5),
        ("type", {"a": 1}),
        ("type", ""),
        ("createdAt", 1767225600),
        ("createdAt", "yesterday"),
        ("createdAt", "2026-01-01"),
        ("createdAt", "2026-01-01T00:00:00"),
        ("createdAt", "2026-13-01T00:00:00Z"),
        ("createdAt", "2026-01-01T25:00:00Z"),
        ("data", None),
        ("data", "{}"),
        ("data", [1, 2]),
    ],
)
def test_mistyped_field_is_named(field: str, value: Any) -> None:
    with pytest.raises(envelope.EnvelopeError) as err:
        envelope.parse(with_(**{field: value}))
    assert err.value.field == field
    assert err.value.reason == f"invalid_{field}"


def test_first_failing_field_in_documented_order_is_reported() -> None:
    with pytest.raises(envelope.EnvelopeError) as err:
        envelope.parse(orjson.dumps({"data": 1, "createdAt": 2, "type": 3, "id": 4}))
    assert err.value.field == "id"


@pytest.mark.parametrize(
    "value",
    ["2023-10-31T13:09:44.373Z", "2023-10-31T13:09:44Z", "2023-10-31T13:09:44.373+02:00", "2023-10-31 13:09:44+0000"],
)
def test_date_time_forms_accepted(value: str) -> None:
    assert envelope.is_date_time(value)


def test_type_label_is_bounded() -> None:
    assert envelope.type_label("room.client.left") == "room.client.left"
    assert envelope.type_label("x" * 200) == envelope.OTHER_EVENT_TYPE
    assert len(envelope.KNOWN_EVENT_TYPES) == 11


def event_id_of(body: bytes) -> str | None:
    with pytest.raises(envelope.EnvelopeError) as caught:
        envelope.parse(body)
    return caught.value.event_id


def test_the_failure_of_a_malformed_body_carries_its_usable_id() -> None:
    assert event_id_of(with_(createdAt="nope")) == VALID["id"]
    assert event_id_of(with_(type=5)) == VALID["id"]
    assert event_id_of(b"not json") is None
    assert event_id_of(b"[1]") is None
    assert event_id_of(with_(id=5)) is None
