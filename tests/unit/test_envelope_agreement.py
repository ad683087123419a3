"""Ingest and enrich judge a body by the same envelope rules, with the same reason codes
(`pipeline.envelope`). Before the shared check they disagreed on a zone-less `createdAt`, an overlong
id and a non-string type (and enrich answered `invalid_envelope` for everything)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from enrich.dimensions import DimensionTable
from enrich.enricher import BadEvent, enrich
from ingest import envelope as ingest_envelope
from pipeline import envelope

BASE: dict[str, Any] = {
    "id": "5c1f0e9a7b3d2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
    "apiVersion": "1.0",
    "createdAt": "2026-01-01T00:00:00.412Z",
    "type": "room.session.started",
    "data": {"roomName": "/acme-1", "roomSessionId": "s-1"},
}
DROP = object()


def ok_body(**changes: Any) -> bytes:
    doc = {**BASE, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not DROP})


VERDICTS = [
    pytest.param(ok_body(), None, id="valid"),
    pytest.param(ok_body(createdAt="2026-01-01T00:00:00+02:00"), None, id="offset"),
    pytest.param(ok_body(createdAt="2026-01-01 00:00:00.123456789Z"), None, id="nanoseconds-space"),
    pytest.param(ok_body(type="future.thing", data={}), None, id="unknown-type"),
    pytest.param(b"{", "invalid_json", id="not-json"),
    pytest.param(b"\xff{}", "invalid_json", id="not-utf8"),
    pytest.param(b"[1]", "not_an_object", id="array"),
    pytest.param(ok_body(id=DROP), "invalid_id", id="id-missing"),
    pytest.param(ok_body(id=""), "invalid_id", id="id-empty"),
    pytest.param(ok_body(id="x" * 257), "invalid_id", id="id-too-long"),
    pytest.param(ok_body(id=7), "invalid_id", id="id-not-string"),
    pytest.param(ok_body(type=5), "invalid_type", id="type-not-string"),
    pytest.param(ok_body(type="t" * 257), "invalid_type", id="type-too-long"),
    pytest.param(ok_body(createdAt="2026-01-01T00:00:00"), "invalid_createdAt", id="zone-less"),
    pytest.param(ok_body(createdAt="2026-01-01"), "invalid_createdAt", id="date-only"),
    pytest.param(ok_body(createdAt="2026-W01-1T00:00:00Z"), "invalid_createdAt", id="week-date"),
    pytest.param(ok_body(createdAt="2026-02-30T00:00:00.000Z"), "invalid_createdAt", id="no-such-day"),
    pytest.param(ok_body(createdAt="2026-01-01T00:00:00+24:00"), "invalid_createdAt", id="offset-out-of-range"),
    pytest.param(ok_body(createdAt=1767225600), "invalid_createdAt", id="epoch-number"),
    pytest.param(ok_body(data=[1]), "invalid_data", id="data-array"),
    pytest.param(ok_body(data=DROP), "invalid_data", id="data-missing"),
]

Check = Callable[[bytes], object]


def ingest_check(body: bytes) -> object:
    return ingest_envelope.parse(body)


def enrich_check(body: bytes) -> object:
    return enrich(body, {}, DimensionTable(), now_ms=0)


def verdict(check: Check, body: bytes) -> str | None:
    """None when the stage accepts the body, else its reason code."""
    try:
        check(body)
    except (ingest_envelope.EnvelopeError, BadEvent) as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(("body", "reason"), VERDICTS)
def test_ingest_and_enrich_agree(body: bytes, reason: str | None) -> None:
    assert verdict(ingest_check, body) == verdict(enrich_check, body) == reason


def test_enrich_alone_requires_the_room_of_in_room_events() -> None:
    # Ingest keeps it (the raw topic stores everything signed); enrich cannot attribute it.
    body = ok_body(data={"roomSessionId": "s-1"})
    assert (verdict(ingest_check, body), verdict(enrich_check, body)) == (None, "missing_field")


USAGE_FIELDS = [
    pytest.param("room.client.joined", {"roomName": "/r", "participantId": "p"}, None, id="client-complete"),
    pytest.param("room.client.joined", {"participantId": "p"}, "data.roomName", id="client-no-room"),
    pytest.param("room.client.left", {"roomName": "/r", "participantId": ""}, "data.participantId", id="empty-p"),
    pytest.param("room.client.left", {"roomName": "/r", "participantId": 5}, "data.participantId", id="p-number"),
    pytest.param("room.session.started", {"roomName": "/r"}, None, id="session-needs-no-participant"),
    pytest.param("room.session.ended", {"roomName": ""}, "data.roomName", id="session-empty-room"),
    pytest.param("transcription.started", {}, None, id="other-types-carry-what-they-carry"),
]


@pytest.mark.parametrize(("event_type", "data", "field"), USAGE_FIELDS)
def test_enrichs_usage_fields_rule(event_type: str, data: dict[str, Any], field: str | None) -> None:
    """pipeline.envelope.require_usage_fields, the one rule enrich adds (reason missing_field)."""
    env = envelope.check(ok_body(type=event_type, data=data))
    if field is None:
        envelope.require_usage_fields(env)
        return
    with pytest.raises(envelope.EnvelopeError) as caught:
        envelope.require_usage_fields(env)
    assert (caught.value.reason, caught.value.field, caught.value.event_id) == ("missing_field", field, BASE["id"])
    assert verdict(enrich_check, ok_body(type=event_type, data=data)) == "missing_field"
