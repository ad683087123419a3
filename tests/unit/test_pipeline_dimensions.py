"""The one decoder of dimensions-topic records (`pipeline.dimensions`), and that enrich and the sink
take the same verdict from it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest

from enrich.dimensions import DimensionTable
from pipeline import dimensions
from pipeline.dimensions import Customer, DimensionError, Tombstone, User, decode
from sink.rows import BadRow, dimension_row

DEEP = b'{"customer_id":"c","attributes":{"a":' + b"[" * 300 + b"]" * 300 + b"}}"

INVALID = [
    pytest.param(b"customer:c", DEEP, "nested too deeply", id="attributes-deeper-than-orjson-writes"),
    pytest.param(b"customer:c", b"{", "not valid JSON", id="not-json"),
    pytest.param(b"customer:c", b"[1]", "must be a JSON object", id="not-an-object"),
    pytest.param(b"customer:c", b'{"name": 5.5}', "`name` must be a string", id="name-wrong-type"),
    pytest.param(b"customer:c", b'{"room_name_prefixes": "acme-"}', "list of strings", id="prefixes-wrong-type"),
    pytest.param(b"customer:c", b'{"attributes": [1]}', "must be an object", id="attributes-wrong-type"),
    pytest.param(b"customer:c", b'{"attributes": {"": "x"}}', "attribute names", id="empty-attribute-name"),
    pytest.param(b"customer:c", b'{"name": "A\\u001b[31mB"}', "control character (U+001B)", id="name-with-escape"),
    pytest.param(b"customer:c", orjson.dumps({"name": "n" * 300}), "at most 256", id="name-too-long"),
    pytest.param(
        b"customer:c",
        orjson.dumps({"attributes": {f"k{i}": "v" for i in range(65)}}),
        "at most 64",
        id="too-many-attributes",
    ),
    pytest.param(b"customer:c", b'{"customer_id": "d"}', "does not match", id="key-and-id-differ"),
    pytest.param(b"customer:", b"{}", "printable characters", id="empty-customer-id"),
    pytest.param(b"customer:a b", None, "printable characters", id="tombstone-with-a-bad-id"),
    pytest.param(b"user:bad.id", b"{}", "1-36 characters", id="bad-external-id"),
    pytest.param(b"user:u", b'{"email": "nobody"}', "e-mail", id="bad-email"),
    pytest.param(b"user:u", b'{"customer_id": "has space"}', "printable characters", id="bad-customer-reference"),
    pytest.param(b"team:x", b"{}", "must start with one of 'customer:', 'user:'", id="unknown-kind"),
    pytest.param(b"\xff", b"{}", "not UTF-8", id="key-not-utf8"),
    pytest.param(None, b"{}", "must start with", id="no-key"),
]


@pytest.mark.parametrize(("key", "value", "message"), INVALID)
def test_invalid_records_raise_the_module_error_only(key: bytes | None, value: bytes | None, message: str) -> None:
    with pytest.raises(DimensionError, match=re.escape(message)):
        decode(key, value)


@pytest.mark.parametrize(("key", "value", "message"), INVALID)
def test_enrich_and_the_sink_refuse_the_same_records(key: bytes | None, value: bytes | None, message: str) -> None:
    table = DimensionTable()
    with pytest.raises(DimensionError) as in_enrich:
        table.apply(key, value, 0)
    with pytest.raises(BadRow) as in_sink:
        dimension_row(key, value, 0)
    assert (in_sink.value.reason, in_sink.value.detail) == (in_enrich.value.reason, str(in_enrich.value))
    assert table.customers == {} and table.users == {} and table.version == 1


def test_valid_records_and_tombstones_decode_to_typed_records() -> None:
    customer = decode(b"customer:c-1", b'{"room_name_prefixes": ["acme-"], "attributes": {"tier": 2, "x": [1]}}')
    assert customer == Customer("c-1", "c-1", ("acme-",), {"tier": "2", "x": "[1]"})
    user = decode(b"user:ext-1", b'{"customer_id": "c-1", "name": "Ada"}')
    assert user == User("ext-1", "ext-1", "c-1", "Ada", None, {})
    assert decode(b"user:ext-1", None) == Tombstone("user:", "ext-1")
    assert decode(b"customer:c-1", None) == Tombstone("customer:", "c-1")


@dataclass(frozen=True, slots=True)
class Note:
    name: str
    value: str


@pytest.fixture
def note_kind() -> Iterator[None]:
    """Another engineer's new kind of record: one decoder under its key prefix."""

    def decode_note(ident: str, value: bytes | None) -> Note:
        if value is None:
            raise DimensionError("note records cannot be deleted")
        return Note(ident, value.decode())

    dimensions.DECODERS["note:"] = decode_note  # type: ignore[assignment]
    try:
        yield
    finally:
        del dimensions.DECODERS["note:"]


def test_a_new_kind_is_one_decoder_and_stages_without_a_use_for_it_pass_it_by(note_kind: None) -> None:
    assert decode(b"note:retention", b"30d") == Note("retention", "30d")
    table = DimensionTable()
    table.apply(b"note:retention", b"30d", 41)
    assert table.version == 42 and table.customers == {} and table.users == {}
    assert dimension_row(b"note:retention", b"30d", 41) is None
    with pytest.raises(BadRow, match="cannot be deleted"):
        dimension_row(b"note:retention", None, 42)
