"""Enrichment of one raw event against a dimension table: resolution, parsing and bad events."""

from __future__ import annotations

import orjson
import pytest

from enrich.dimensions import DimensionTable
from enrich.enricher import BadEvent, enrich, enrich_record, parse_created_at_ms, role_class
from pipeline import contract
from tests.support import body, event

NOW = 1_767_258_000_000
ROOM = "/acme-labs-3f2b8c1d-9e4a-4b7c-8d2e-1a5f6b7c8d9e"


def table() -> DimensionTable:
    dims = DimensionTable()
    records = [
        ("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]}),
        ("customer:c-labs", {"customer_id": "c-labs", "name": "Acme Labs", "room_name_prefixes": ["acme-labs-"]}),
        ("user:ext-ada", {"external_id": "ext-ada", "user_id": "u-ada", "customer_id": "c-labs"}),
    ]
    for offset, (key, value) in enumerate(records):
        dims.apply(key.encode(), orjson.dumps(value), offset)
    return dims


def run(doc: dict[str, object] | bytes, headers: dict[str, str] | None = None) -> contract.EnrichedEvent:
    raw = doc if isinstance(doc, bytes) else body(doc)
    return enrich(raw, headers or {}, table(), now_ms=NOW)


def test_joined_event_resolves_customer_by_longest_prefix_and_user_by_external_id() -> None:
    doc = event("room.client.joined", ROOM, 0, participant="p-1", external_id="ext-ada", metadata="plan=pro")

    out = run(doc, {contract.HEADER_RECEIVED_AT_MS: "1767258000123"})

    assert out["event_id"] == doc["id"]
    assert out["event_type"] == "room.client.joined"
    assert out["created_at_ms"] == 1_767_258_000_000  # tests.support.T0, 2026-01-01T09:00:00.000Z
    assert out["received_at_ms"] == 1_767_258_000_123
    assert (out["customer_id"], out["customer_name"], out["customer_resolution"]) == ("c-labs", "Acme Labs", "prefix")
    assert out.get("customer_prefix") == "acme-labs-"
    assert (out["user_id"], out["user_resolution"], out.get("user_customer_id")) == ("u-ada", "external_id", "c-labs")
    assert out["metadata"] == {"plan": "pro"}
    assert out.get("metadata_form") == "query"
    assert (out["role_name"], out["role_class"]) == ("visitor", "human")
    assert out["participant_id"] == "p-1"
    assert out["subdomain"] == "examplecorp"
    assert out["dimension_version"] == 3
    assert out["enrichment_version"] == contract.enrichment_version(3)
    assert (out["source"], out["user_name"]) == ("webhook", None)
    assert out["enriched_at_ms"] == NOW


def test_unregistered_prefix_and_user_are_unresolved_not_dropped() -> None:
    out = run(event("room.client.joined", "/zeta-1234", 0, participant="p-1", external_id="ext-nobody"))

    assert (out["customer_id"], out["customer_resolution"], out.get("customer_prefix")) == (None, "unresolved", None)
    assert (out["user_id"], out["user_resolution"]) == (None, "unresolved")
    assert out["external_id"] == "ext-nobody"


def test_user_resolution_absent_and_invalid() -> None:
    absent = run(event("room.client.joined", ROOM, 0, participant="p-1", external_id=None))
    invalid = run(event("room.client.joined", ROOM, 0, participant="p-1", external_id="has space/" + "x" * 100))

    assert (absent["external_id"], absent["user_resolution"]) == (None, "absent")
    assert invalid["user_resolution"] == "invalid"
    assert invalid["user_id"] is None
    assert invalid["external_id"] is not None and len(invalid["external_id"]) == 64


def test_event_without_room_name_has_absent_customer() -> None:
    doc = {"id": "e1", "apiVersion": "1.0", "createdAt": "2026-01-01T00:00:00.000Z", "type": "recording.finished"}
    doc["data"] = {"recordingId": "r1", "filename": "x.mp4", "status": "completed"}

    out = run(doc)

    assert (out["room_name"], out["customer_resolution"], out["customer_id"]) == ("", "absent", None)
    assert out["participant_id"] is None
    assert out["role_class"] is None


def test_unknown_event_type_and_unknown_role_are_kept() -> None:
    doc = event("room.client.joined", ROOM, 0, participant="p-1", role="none")
    doc["type"] = "room.client.teleported"

    out = run(doc)

    assert out["event_type"] == "room.client.teleported"
    assert out["role_class"] == "human"


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("owner", "human"),
        ("host", "human"),
        ("granted_viewer", "human"),
        ("recorder", "recorder"),
        ("streamer", "streamer"),
        ("captioner", "captioner"),
        ("assistant", "assistant"),
        ("something-new", "human"),
        (None, None),
    ],
)
def test_role_class(role: str | None, expected: str | None) -> None:
    assert role_class(role) == expected


def test_metadata_json_object_becomes_string_map_and_raw_text_is_kept() -> None:
    as_json = run(event("room.client.joined", ROOM, 0, participant="p", metadata='{"plan":"pro","seats":3}'))
    as_text = run(event("room.client.joined", ROOM, 0, participant="p", metadata="hello there"))

    assert as_json["metadata"] == {"plan": "pro", "seats": "3"}
    assert (as_text["metadata"], as_text["metadata_raw"], as_text.get("metadata_form")) == ({}, "hello there", "raw")


def test_missing_received_at_header_falls_back_to_now() -> None:
    assert run(event("room.session.started", ROOM, 0))["received_at_ms"] == NOW


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'{"type":"room.session.started","createdAt":"2026-01-01T00:00:00Z","data":{}}', "invalid_envelope"),
        (b'{"id":"e","createdAt":"2026-01-01T00:00:00Z","data":{}}', "invalid_envelope"),
        (b'{"id":"e","type":"x","createdAt":"yesterday","data":{}}', "invalid_envelope"),
        (b'{"id":"e","type":"x","createdAt":"2026-01-01T00:00:00-01:00Z","data":{}}', "invalid_envelope"),
        (b'{"id":"e","type":"x","createdAt":"2026-01-01T00:00:00.-12Z","data":{}}', "invalid_envelope"),
        (b'{"id":"e","type":"x","createdAt":"2026-01-01T00:00:60.000Z","data":{}}', "invalid_envelope"),
        (b'{"id":"e","type":"x","createdAt":"2026-01-01T00:00:00Z","data":"nope"}', "invalid_envelope"),
        (b'{"id":"e","type":"room.session.started","createdAt":"2026-01-01T00:00:00Z","data":{}}', "missing_field"),
        (
            b'{"id":"e","type":"room.client.left","createdAt":"2026-01-01T00:00:00Z","data":{"roomName":"/r"}}',
            "missing_field",
        ),
    ],
)
def test_bad_events_raise_with_a_bounded_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadEvent) as caught:
        run(raw)

    assert caught.value.reason == reason


def test_bad_event_keeps_the_event_id_when_it_has_one() -> None:
    with pytest.raises(BadEvent) as caught:
        run(b'{"id":"e-7","type":"x","createdAt":"nope","data":{}}')

    assert caught.value.event_id == "e-7"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2023-10-31T13:09:44.373Z", 1_698_757_784_373),
        ("2023-10-31T13:09:44.373+00:00", 1_698_757_784_373),
        ("2023-10-31T14:09:44.373+01:00", 1_698_757_784_373),
        ("2023-10-31T13:09:44.373", 1_698_757_784_373),  # no offset: UTC, never the host's zone
        ("2023-10-31T13:09:44.3739Z", 1_698_757_784_373),  # sub-millisecond digits are truncated
        ("2023-10-31T13:09:44Z", 1_698_757_784_000),
    ],
)
def test_created_at_is_exact_utc_milliseconds(text: str, ms: int) -> None:
    assert parse_created_at_ms(text) == ms


def test_the_enrichment_version_is_the_dimension_position_never_a_clock() -> None:
    """Item 7 of issue 12: two enrichments with the same dimensions agree (a replay and a live event),
    newer dimensions win, and every version outranks the previous release's clock-based versions."""
    doc = event("room.client.joined", ROOM, 0, participant="p-1", external_id="ext-ada")
    dims = table()
    first = enrich(body(doc), {}, dims, now_ms=NOW)
    later = enrich(body(doc), {}, dims, now_ms=NOW + 86_400_000)  # a replay a day later, same dimensions
    assert first["enrichment_version"] == later["enrichment_version"] == contract.enrichment_version(dims.version)
    dims.apply(b"user:ext-bob", orjson.dumps({"external_id": "ext-bob", "user_id": "u-bob"}), dims.version)
    newer = enrich(body(doc), {}, dims, now_ms=NOW)
    assert newer["enrichment_version"] == first["enrichment_version"] + 1
    assert first["enrichment_version"] > 1_800_000_000_000_000 * 1000  # above any epoch-microsecond version


@pytest.mark.parametrize(("header", "source"), [(None, "webhook"), ("insights", "insights"), ("other", "webhook")])
def test_the_event_source_header_marks_synthesized_events(header: str | None, source: str) -> None:
    doc = event("room.client.left", ROOM, 0, participant="p-1")
    headers = {} if header is None else {contract.HEADER_EVENT_SOURCE: header}
    assert run(doc, headers)["source"] == source


@pytest.mark.parametrize("received", [b"1767258000123", None, b"not-a-number"])
def test_enrich_record_is_enrich_serialised_with_the_raw_header_value(received: bytes | None) -> None:
    doc = event("room.client.joined", ROOM, 0, participant="p-1", external_id="ext-ada", metadata='{"a":1}')
    headers = {} if received is None else {contract.HEADER_RECEIVED_AT_MS: received.decode()}
    dims = table()

    value, customer, user, room = enrich_record(body(doc), received, None, dims, NOW)

    assert orjson.loads(value) == enrich(body(doc), headers, dims, now_ms=NOW)
    assert (customer, user, room) == ("prefix", "external_id", ROOM)
    assert orjson.loads(value)["received_at_ms"] == (NOW if received != b"1767258000123" else 1_767_258_000_123)
