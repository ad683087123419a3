"""sink.read.native: the engine's revision-0 Native, rewritten for a client's protocol revision.

The inputs are bytes the embedded engine wrote (captured once; see each case), so the walk over the
column serializations is checked without running the engine.
"""

from __future__ import annotations

import pytest

from sink.read import native

# SELECT NULL AS n  (Nullable(Nothing): a null map byte and one byte of Nothing per row)
NULL_COLUMN = b"\x01\x01\x01n\x11Nullable(Nothing)\x010"
# SELECT [1,2] AS a, map('a',1) AS m, (1,'x') AS tup
COMPOSITE = (
    b"\x03\x01\x01a\x0cArray(UInt8)\x02\x00\x00\x00\x00\x00\x00\x00\x01\x02"
    b"\x01m\x12Map(String, UInt8)\x01\x00\x00\x00\x00\x00\x00\x00\x01a\x01"
    b"\x03tup\x14Tuple(UInt8, String)\x01\x01x"
)
# SELECT toLowCardinality('ab') AS lc FROM numbers(2)
LOW_CARDINALITY = (
    b"\x01\x02\x02lc\x16LowCardinality(String)\x01\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x06\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x02ab"
    b"\x02\x00\x00\x00\x00\x00\x00\x00\x01\x01"
)


@pytest.mark.parametrize("raw", [NULL_COLUMN, COMPOSITE, LOW_CARDINALITY], ids=["nothing", "composite", "lowcard"])
def test_revision_zero_is_returned_as_is_and_revision_one_adds_block_info(raw: bytes) -> None:
    assert native.with_revision(raw, 0) == raw
    assert native.with_revision(raw, 54405) == native.BLOCK_INFO + raw


def test_custom_serialization_revision_adds_a_zero_byte_after_each_column_type() -> None:
    got = native.with_revision(COMPOSITE, 54460)
    assert got.startswith(native.BLOCK_INFO + b"\x03\x01\x01a\x0cArray(UInt8)\x00\x02")
    assert b"Map(String, UInt8)\x00\x01" in got and b"Tuple(UInt8, String)\x00\x01\x01x" in got
    assert len(got) == len(native.BLOCK_INFO) + len(COMPOSITE) + 3


def test_every_block_of_a_multi_block_result_gets_its_header() -> None:
    two = LOW_CARDINALITY + NULL_COLUMN
    got = native.with_revision(two, 54460)
    assert got == native.BLOCK_INFO + LOW_CARDINALITY.replace(b"(String)", b"(String)\x00") + (
        native.BLOCK_INFO + NULL_COLUMN.replace(b"(Nothing)", b"(Nothing)\x00")
    )


def test_a_block_without_rows_has_no_column_data() -> None:
    empty = b"\x01\x00\x01x\x06String"
    assert native.with_revision(empty, 54460) == native.BLOCK_INFO + empty + b"\x00"


def test_types_whose_serialization_depends_on_the_revision_are_refused_not_guessed() -> None:
    dynamic = b"\x01\x01\x01d\x07Dynamic\x00"
    with pytest.raises(native.UnsupportedType, match="Dynamic"):
        native.with_revision(dynamic, 54460)


def test_truncated_data_is_reported() -> None:
    with pytest.raises(native.MalformedNative):
        native.with_revision(COMPOSITE[:-3], 54460)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("DateTime64(3, 'UTC')", ("DateTime64", ["3", "'UTC'"])),
        ("Tuple(a UInt8, `b c` Array(String))", ("Tuple", [("UInt8", []), ("Array", [("String", [])])])),
        ("Map(String, Nullable(Int64))", ("Map", [("String", []), ("Nullable", [("Int64", [])])])),
        ("Enum8('a, b' = 1, 'c' = 2)", ("Enum8", ["'a, b' = 1", "'c' = 2"])),
        ("Ring", ("Array", [("Point", [])])),
        ("SimpleAggregateFunction(sum, UInt64)", ("UInt64", [])),
    ],
)
def test_type_names_are_parsed_with_nesting_names_and_quotes(text: str, parsed: native.Kind) -> None:
    assert native.parse_type(text) == parsed
