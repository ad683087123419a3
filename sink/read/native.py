"""ClickHouse's `Native` format at a client protocol revision, made from the engine's revision-0 output.

A ClickHouse server writes `Native` for an HTTP client according to the request's
`client_protocol_version`: from revision 1 on, every block starts with a block-info header, and from
54454 on (custom serialization) every column's type is followed by a one-byte "custom serialization"
flag. clickhouse-go in HTTP mode (so Grafana's ClickHouse data source) always asks for its revision and
cannot read revision-0 blocks; clickhouse-connect probes for it and falls back to revision 0.

The embedded engine only writes revision 0 (no client revision reaches `clickhouse-local`), so this
module rewrites its output: it walks each block, copies every column's bytes unchanged, and inserts the
header and the flags. Walking needs the byte length of each column, hence a small reader of the type
names and of the bulk serialization of the common types. Types whose serialization depends on the
revision itself (Variant, Dynamic, JSON, Object, AggregateFunction) are refused with
:class:`UnsupportedType` rather than guessed: the caller answers with a ClickHouse error naming the type.

Pure functions over bytes; no I/O.
"""

from __future__ import annotations

import struct

# Protocol revisions that change the block layout (ClickHouse's DBMS_MIN_REVISION_* constants).
BLOCK_INFO_REVISION = 1
CUSTOM_SERIALIZATION_REVISION = 54454

# field 1 (is_overflows) = false, field 2 (bucket_num) = -1, end of fields: what a server writes for a
# block that is not part of a two-level aggregation.
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"

_FIXED: dict[str, int] = {
    "UInt8": 1, "Int8": 1, "Bool": 1, "Enum8": 1,
    "UInt16": 2, "Int16": 2, "Date": 2, "Enum16": 2, "BFloat16": 2,
    "UInt32": 4, "Int32": 4, "Float32": 4, "Date32": 4, "DateTime": 4, "IPv4": 4, "Decimal32": 4, "Time": 4,
    "UInt64": 8, "Int64": 8, "Float64": 8, "DateTime64": 8, "Decimal64": 8, "Time64": 8,
    "UInt128": 16, "Int128": 16, "UUID": 16, "IPv6": 16, "Decimal128": 16,
    "UInt256": 32, "Int256": 32, "Decimal256": 32,
    "Nothing": 1,
    "Point": 16,
}  # fmt: skip
# Geo types are aliases of arrays of points.
_GEO = {
    "Ring": "Array(Point)",
    "LineString": "Array(Point)",
    "Polygon": "Array(Array(Point))",
    "MultiLineString": "Array(Array(Point))",
    "MultiPolygon": "Array(Array(Array(Point)))",
}
_LC_HAS_ADDITIONAL_KEYS = 1 << 9
_LC_NEEDS_GLOBAL_DICTIONARY = 1 << 8
_LC_INDEX_WIDTH = {0: 1, 1: 2, 2: 4, 3: 8}


class UnsupportedType(Exception):
    """A column type this module cannot walk; the message names it."""


class MalformedNative(Exception):
    """The bytes are not a revision-0 Native stream (a bug or a truncated result)."""


def with_revision(data: bytes, revision: int) -> bytes:
    """`data` (revision-0 Native, any number of blocks) as a server writes it for `revision`."""
    if revision < BLOCK_INFO_REVISION or not data:
        return data
    flags = revision >= CUSTOM_SERIALIZATION_REVISION
    out = bytearray()
    reader = _Reader(data)
    while not reader.done():
        out += BLOCK_INFO
        start = reader.pos
        columns = reader.varint()
        rows = reader.varint()
        out += data[start : reader.pos]
        for _ in range(columns):
            start = reader.pos
            reader.string()
            type_name = reader.string().decode()
            out += data[start : reader.pos]
            if flags:
                out += b"\x00"  # no custom (sparse) serialization: the engine wrote full columns
            start = reader.pos
            if rows:
                kind = parse_type(type_name)
                _skip_prefix(reader, kind)
                _skip_data(reader, kind, rows)
            out += data[start : reader.pos]
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedNative(f"truncated Native data at byte {self.pos}")
        self.pos += n

    def varint(self) -> int:
        value = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise MalformedNative(f"truncated varint at byte {self.pos}")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise MalformedNative("varint too long")

    def uint64(self) -> int:
        start = self.pos
        self.take(8)
        value: int = struct.unpack_from("<Q", self.data, start)[0]
        return value

    def string(self) -> bytes:
        n = self.varint()
        start = self.pos
        self.take(n)
        return self.data[start : self.pos]


# A parsed type: (name, arguments). Arguments are parsed types for the composite types and raw text
# for the others (precision, time zone, enum values), which only the fixed-size table needs.
Kind = tuple[str, list["Kind | str"]]


def parse_type(text: str) -> Kind:
    """Parse a ClickHouse type name such as `Map(String, Array(Nullable(UInt8)))`."""
    text = text.strip()
    if text in _GEO:
        return parse_type(_GEO[text])
    open_at = text.find("(")
    if open_at < 0:
        return (text, [])
    if not text.endswith(")"):
        raise MalformedNative(f"cannot read the type {text!r}")
    name = text[:open_at].strip()
    parts = _split_arguments(text[open_at + 1 : -1])
    if name in ("Nullable", "Array", "LowCardinality", "Map"):
        return (name, [parse_type(p) for p in parts])
    if name == "Tuple":
        return (name, [parse_type(_element_type(p)) for p in parts])
    if name == "SimpleAggregateFunction":
        return parse_type(parts[-1])
    return (name, list(parts))


def _split_arguments(text: str) -> list[str]:
    """Split on top-level commas, minding brackets and quoted names or values."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return parts


def _element_type(text: str) -> str:
    """The type of a tuple element, without its name (`a UInt8`, `` `a b` String``)."""
    if text.startswith(("`", '"')):
        end = text.index(text[0], 1)
        return text[end + 1 :].strip()
    head, _, rest = text.partition(" ")
    if rest and "(" not in head:
        return rest.strip()
    return text


def _fixed_size(kind: Kind) -> int | None:
    name, args = kind
    if name == "Decimal":
        precision = int(str(args[0]))
        return 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
    if name == "FixedString":
        return int(str(args[0]))
    if name.startswith("Interval"):
        return 8
    return _FIXED.get(name)


def _skip_prefix(reader: _Reader, kind: Kind) -> None:
    """The serialization state prefixes, written once per column before its data, nested ones first."""
    name, args = kind
    if name == "LowCardinality":
        reader.take(8)  # key serialization version
    elif name in ("Nullable", "Array"):
        _skip_prefix(reader, _sub(args[0]))
    elif name == "Map":
        _skip_prefix(reader, _sub(args[0]))
        _skip_prefix(reader, _sub(args[1]))
    elif name == "Tuple":
        for arg in args:
            _skip_prefix(reader, _sub(arg))


def _skip_data(reader: _Reader, kind: Kind, rows: int) -> None:
    name, args = kind
    size = _fixed_size(kind)
    if size is not None:
        reader.take(size * rows)
    elif name in ("String", "JSONString"):
        reader.pos = _skip_strings(reader.data, reader.pos, rows)
    elif name == "Nullable":
        reader.take(rows)
        _skip_data(reader, _sub(args[0]), rows)
    elif name in ("Array", "Map"):
        total = 0
        for _ in range(rows):
            total = reader.uint64()  # offsets are cumulative: the last one is the element count
        if name == "Array":
            _skip_data(reader, _sub(args[0]), total)
        else:
            _skip_data(reader, _sub(args[0]), total)
            _skip_data(reader, _sub(args[1]), total)
    elif name == "Tuple":
        for arg in args:
            _skip_data(reader, _sub(arg), rows)
    elif name == "LowCardinality":
        _skip_low_cardinality(reader, _sub(args[0]), rows)
    else:
        raise UnsupportedType(name)


def _skip_strings(data: bytes, pos: int, rows: int) -> int:
    """Past `rows` length-prefixed strings: the hot loop of a wide result, so kept free of calls."""
    try:
        for _ in range(rows):
            length = data[pos]
            pos += 1
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    byte = data[pos]
                    pos += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
            pos += length
    except IndexError:
        raise MalformedNative("truncated String column") from None
    if pos > len(data):
        raise MalformedNative("truncated String column")
    return pos


def _skip_low_cardinality(reader: _Reader, inner: Kind, rows: int) -> None:
    # The dictionary holds the inner type without Nullable (NULL is key 0).
    dictionary = _sub(inner[1][0]) if inner[0] == "Nullable" else inner
    read = 0
    while read < rows:
        flags = reader.uint64()
        if flags & _LC_NEEDS_GLOBAL_DICTIONARY:
            raise UnsupportedType("LowCardinality with a shared dictionary")
        if flags & _LC_HAS_ADDITIONAL_KEYS:
            keys = reader.uint64()
            _skip_data(reader, dictionary, keys)
        count = reader.uint64()
        width = _LC_INDEX_WIDTH.get(flags & 0xFF)
        if width is None:
            raise MalformedNative(f"unknown LowCardinality index type {flags & 0xFF}")
        reader.take(width * count)
        read += count
        if count == 0:
            raise MalformedNative("empty LowCardinality granule")


def _sub(arg: Kind | str) -> Kind:
    if isinstance(arg, str):
        raise MalformedNative(f"expected a type, got {arg!r}")
    return arg
