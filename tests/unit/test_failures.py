"""Every stage's failure is a pipeline.failures.Failure: one reason + detail shape for metrics, dead
letters and answers."""

from __future__ import annotations

import pytest

from enrich.enricher import BadEvent
from ingest.batcher import StoreError
from ingest.signature import SignatureError
from pipeline.dimensions import DimensionError
from pipeline.envelope import EnvelopeError
from pipeline.failures import Failure
from sink.rows import BadRow


def test_a_failure_carries_reason_detail_and_event_id() -> None:
    failure = Failure("invalid_id", "`id` is missing", event_id="e-1")
    assert (failure.reason, failure.detail, failure.event_id, str(failure)) == (
        "invalid_id",
        "`id` is missing",
        "e-1",
        "`id` is missing",
    )
    assert Failure("r", "d").event_id is None


@pytest.mark.parametrize(
    "failure",
    [
        BadEvent("missing_field", "no room", "e-1"),
        BadRow("empty_record", "no value"),
        SignatureError("malformed_header", "no t="),
        StoreError("produce_timeout", "no acknowledgement in time"),
        DimensionError("`name` is missing"),
        EnvelopeError("id", "`id` is missing"),
    ],
    ids=lambda f: type(f).__name__,
)
def test_every_stage_failure_is_a_failure(failure: Failure) -> None:
    assert isinstance(failure, Failure)
    assert failure.reason and failure.detail and str(failure) == failure.detail


def test_stage_specific_extras_are_kept() -> None:
    envelope_error = EnvelopeError("createdAt", "no offset")
    assert (envelope_error.reason, envelope_error.field) == ("invalid_createdAt", "createdAt")
    assert EnvelopeError(None, "not JSON", "invalid_json").reason == "invalid_json"
    dimension_error = DimensionError("taken", "dimension_conflict")
    assert isinstance(dimension_error, ValueError)  # callers that validate values catch ValueError
    assert dimension_error.reason == "dimension_conflict"
