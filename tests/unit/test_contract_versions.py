"""The contract version rule (pipeline.contract, docs/contract.md): no header is version 1, every
version up to ours is read, anything else is `unsupported_version`; the same rule in each reader."""

from __future__ import annotations

import pytest

from enrich.dimensions import DimensionTable
from enrich.enricher import BadEvent, enrich, enrich_record
from pipeline import contract
from sink.batch import Record
from sink.rows import readable_run
from tests.support import body, event

OURS = str(contract.CONTRACT_VERSION).encode()
NEWER = str(contract.CONTRACT_VERSION + 1).encode()

VERDICTS = [
    pytest.param(None, True, id="absent-is-version-1"),
    pytest.param(b"1", True, id="version-1"),
    pytest.param(OURS, True, id="ours"),
    pytest.param(NEWER, False, id="newer"),
    pytest.param(b"99", False, id="far-newer"),
    pytest.param(b"0", False, id="zero"),
    pytest.param(b"02", False, id="not-canonical"),
    pytest.param(b"two", False, id="not-a-number"),
    pytest.param(b"", False, id="empty"),
]


@pytest.mark.parametrize(("value", "readable"), VERDICTS)
def test_which_versions_a_reader_reads(value: bytes | None, readable: bool) -> None:
    assert contract.readable_version(value) is readable
    assert contract.readable_version(None if value is None else value.decode()) is readable
    headers = [] if value is None else [("producer", b"x"), (contract.HEADER_CONTRACT_VERSION, value)]
    failure = contract.version_failure(headers)
    assert (failure is None) is readable
    if failure is not None:
        assert failure.reason == "unsupported_version" and "upgrade readers before writers" in failure.detail
    record = Record("t", 0, 1, None, b"{}", headers=headers)
    assert readable_run([Record("t", 0, 0, None, b"{}"), record]) is readable


def test_every_writer_stamps_the_current_version_and_its_name() -> None:
    assert dict(contract.version_headers("sink")) == {
        contract.HEADER_CONTRACT_VERSION: OURS,
        contract.HEADER_PRODUCER: f"sink@{contract.PACKAGE_VERSION}".encode(),
    }
    assert contract.version_headers("ingest") == contract.RAW_VERSION_HEADERS
    assert contract.version_headers("enrich") == contract.ENRICHED_VERSION_HEADERS


@pytest.mark.parametrize(("value", "readable"), VERDICTS)
def test_enrich_refuses_a_raw_record_it_cannot_read(value: bytes | None, readable: bool) -> None:
    raw = body(event("room.client.joined", "/acme-1", 0, participant="p-1"))
    table = DimensionTable()
    if readable:
        enrich_record(raw, None, None, table, 0, True, value)
        enrich(raw, {} if value is None else {contract.HEADER_CONTRACT_VERSION: value.decode()}, table, now_ms=0)
        return
    with pytest.raises(BadEvent) as caught:
        enrich_record(raw, None, None, table, 0, True, value)
    assert caught.value.reason == "unsupported_version"
    with pytest.raises(BadEvent):  # replay's path: headers decoded into a dict
        enrich(raw, {contract.HEADER_CONTRACT_VERSION: value.decode()}, table, now_ms=0)  # type: ignore[union-attr]
