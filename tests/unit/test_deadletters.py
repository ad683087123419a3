"""The one bad-row shape every stage writes (pipeline.deadletters)."""

from __future__ import annotations

import orjson
import pytest

from pipeline import contract, deadletters
from pipeline.envelope import EnvelopeError, check
from pipeline.failures import Failure
from sink.batch import Record


@pytest.mark.parametrize(
    ("payload", "encoding"),
    [(b'{"id": "e"}', "utf-8"), (b"\xff\xfe\x00binary", "base64"), (None, None)],
    ids=["utf-8", "binary", "none"],
)
def test_a_bad_row_keeps_the_payload_whole(payload: bytes | None, encoding: str | None) -> None:
    row = orjson.loads(deadletters.bad_row("enrich", Failure("invalid_json", "not JSON"), payload))
    assert row["payload_encoding"] == encoding
    assert deadletters.bad_row_payload(row) == payload


def test_a_bad_row_names_its_failure_source_and_versions() -> None:
    source = Record("whereby.events.enriched", 3, 41, b"/acme-1", b"{}")
    row = orjson.loads(deadletters.bad_row("sink", Failure("empty_record", "no value", "e-1"), b"{}", source))
    assert row["schema_version"] == contract.CONTRACT_VERSION
    assert row["producer"] == contract.producer("sink")
    assert (row["stage"], row["reason"], row["detail"], row["event_id"]) == ("sink", "empty_record", "no value", "e-1")
    assert row["source"] == {"topic": "whereby.events.enriched", "partition": 3, "offset": 41}
    assert isinstance(row["failed_at_ms"], int)


def test_ingest_has_no_source_record() -> None:
    row = orjson.loads(deadletters.bad_row("ingest", Failure("invalid_id", "x"), b"{}"))
    assert row["source"] == {"topic": None, "partition": None, "offset": None}


def test_an_envelope_failure_carries_the_usable_id_into_the_bad_row() -> None:
    with pytest.raises(EnvelopeError) as caught:
        check(orjson.dumps({"id": "e-7", "type": 5, "createdAt": "2026-01-01T00:00:00Z", "data": {}}))
    assert (caught.value.reason, caught.value.event_id) == ("invalid_type", "e-7")
    row = orjson.loads(deadletters.bad_row("ingest", caught.value, b"{}"))
    assert row["event_id"] == "e-7"
    with pytest.raises(EnvelopeError) as caught:
        check(orjson.dumps({"id": "x" * 300, "type": "t", "createdAt": "2026-01-01T00:00:00Z", "data": {}}))
    assert caught.value.event_id is None  # an unusable id is not copied into the bad row
