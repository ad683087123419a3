"""Property tests of every parser that takes bytes from outside: whatever the input, each returns a value
or raises its module's own error, never anything else (a stray TypeError or RecursionError would stop a
stage or abort a replay on one record).

Parsers: the envelope check (`pipeline.envelope`, used by ingest's `envelope.parse` and enrich's
`_envelope`), the whole enrichment of one raw record (`enrich.enricher.enrich_record`), the metadata
parser (`enrich.metadata`) and the dimension record decoder (`pipeline.dimensions`).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enrich.dimensions import DimensionTable
from enrich.enricher import BadEvent, _envelope, enrich_record
from enrich.metadata import MAX_KEY_CHARS, MAX_KEYS, MAX_VALUE_CHARS, parse_metadata
from ingest import envelope as ingest_envelope
from pipeline import dimensions, envelope

PROPERTY = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------------------- building blocks

TEXT = st.text(max_size=30) | st.sampled_from(["", " ", "\x00", "\u2028", "\u00e9", "\u00b2", "\U0001d7d7"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond what orjson reads as an integer
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=25,
)


def deep(depth: int, opener: str = "[", closer: str = "]", core: str = "1") -> str:
    return opener * depth + core + closer * depth


DEEP_JSON = st.integers(min_value=200, max_value=1200).flatmap(
    lambda n: st.sampled_from([deep(n), deep(n, '{"a":', "}"), deep(n, '[{"a":', "}]")])
)

DATE_PARTS = st.tuples(
    st.sampled_from(["2026", "0000", "0001", "9999", "\u0662\u0660\u0662\u0666", "20262"]),
    st.sampled_from(["01", "02", "13", "00", "W01"]),
    st.sampled_from(["01", "29", "30", "31", "32", "1"]),
    st.sampled_from(["T", "t", " ", "", "_"]),
    st.sampled_from(["00:00:00", "23:59:59", "24:00:00", "00:00:60", "00:00", "12"]),
    st.sampled_from(["", ".1", ".123", ".123456789", ".1234567890", ".", ".-12", ".\u0661\u0662\u0663"]),
    st.sampled_from(["Z", "z", "", "+00:00", "-23:59", "+24:00", "+0530", "+05", "ZZ", "-01:00Z", "+99:99"]),
)
DATE_TIMES = DATE_PARTS.map(lambda p: f"{p[0]}-{p[1]}-{p[2]}{p[3]}{p[4]}{p[5]}{p[6]}")
CREATED_AT = DATE_TIMES | SCALARS | JSON

METADATA = st.one_of(
    TEXT,
    JSON.map(lambda v: json.dumps(v, ensure_ascii=False)),
    DEEP_JSON,
    st.dictionaries(st.text(max_size=80), st.text(max_size=300), max_size=40).map(
        lambda d: json.dumps(d, ensure_ascii=False)
    ),
    st.lists(st.tuples(st.text(max_size=70), st.text(max_size=300)), max_size=40).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
    ),
)

DATA = st.fixed_dictionaries(
    {},
    optional={
        "roomName": st.sampled_from(["/acme-1", "/", ""]) | SCALARS,
        "participantId": st.sampled_from(["p-1", ""]) | SCALARS,
        "roomSessionId": SCALARS,
        "externalId": st.sampled_from(["ext-ada", "bad id", "x" * 300]) | SCALARS,
        "metadata": METADATA | SCALARS,
        "displayName": SCALARS,
        "roleName": st.sampled_from(["visitor", "recorder"]) | SCALARS,
        "numClients": SCALARS,
        "subdomain": SCALARS,
        "meetingId": SCALARS | JSON,
        "isDialIn": SCALARS,
    },
)
ENVELOPES = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["e-1", "x" * 256, "x" * 257]) | SCALARS | JSON,
        "type": st.sampled_from(["room.client.joined", "room.session.started", "x.y"]) | SCALARS,
        "createdAt": CREATED_AT,
        "data": DATA | JSON,
        "apiVersion": SCALARS | JSON,
    },
).map(lambda doc: json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"))

# Bodies that broke a stage before this test existed: metadata nested deeper than orjson writes back.
DEEP_METADATA_EVENT = orjson.dumps(
    {
        "id": "e-deep",
        "type": "room.client.joined",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "data": {"roomName": "/acme-1", "participantId": "p-1", "metadata": '{"a":' + deep(300, '{"b":', "}") + "}"},
    }
)

BODIES = st.one_of(
    ENVELOPES,
    st.binary(max_size=200),
    DEEP_JSON.map(str.encode),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.just(b'{"id":"e","type":"t","createdAt":"2026-01-01T00:00:00Z","data":' + deep(300).encode() + b"}"),
)

# --------------------------------------------------------------------------------------------- properties


@PROPERTY
@given(CREATED_AT)
def test_created_at_is_milliseconds_or_value_error(value: Any) -> None:
    try:
        ms = envelope.created_at_ms(value)
    except ValueError:
        return
    assert isinstance(ms, int)
    assert envelope.is_date_time(value)


@PROPERTY
@given(BODIES)
def test_the_envelope_check_returns_an_envelope_or_its_own_error(body: bytes) -> None:
    try:
        env = envelope.check(body)
    except envelope.EnvelopeError as exc:
        assert exc.reason in {"invalid_json", "not_an_object"} or exc.reason == f"invalid_{exc.field}"
        return
    assert isinstance(env.event_id, str) and 0 < len(env.event_id) <= envelope.MAX_ID_LENGTH
    assert isinstance(env.created_at_ms, int) and isinstance(env.data, dict)
    assert ingest_envelope.parse(body) == env  # ingest's parser is this check


@PROPERTY
@given(BODIES)
def test_enrich_envelope_returns_an_envelope_or_bad_event(body: bytes) -> None:
    try:
        env = _envelope(body)
    except BadEvent as exc:
        assert exc.reason
        return
    assert isinstance(env, envelope.Envelope)


@PROPERTY
@given(BODIES)
def test_ingest_and_enrich_judge_every_body_alike(body: bytes) -> None:
    """One rule set: enrich refuses what ingest refuses, with the same reason and event id; of what ingest
    accepts, enrich refuses only what `require_usage_fields` names (`missing_field`)."""
    try:
        ingest_envelope.parse(body)
        ingest: tuple[str, str | None] | None = None
    except envelope.EnvelopeError as exc:
        ingest = (exc.reason, exc.event_id)
    try:
        _envelope(body)
        enrich: tuple[str, str | None] | None = None
    except BadEvent as exc:
        enrich = (exc.reason, exc.event_id)
    assert enrich == ingest or (ingest is None and enrich is not None and enrich[0] == "missing_field")


TABLE = DimensionTable()
TABLE.apply(b"customer:c-acme", b'{"room_name_prefixes": ["acme-"]}', 0)
TABLE.apply(b"user:ext-ada", b'{"customer_id": "c-acme"}', 1)


@PROPERTY
@example(DEEP_METADATA_EVENT, None, None)
@given(
    BODIES,
    st.one_of(st.none(), st.binary(max_size=20), st.sampled_from([b"1767258000123", b"-1", b"\xff"])),
    st.one_of(st.none(), st.binary(max_size=10), st.just(b"insights")),
)
def test_enriching_a_raw_record_gives_json_or_bad_event(
    body: bytes, received_at: bytes | None, source: bytes | None
) -> None:
    try:
        value, customer, user, _ = enrich_record(body, received_at, source, TABLE, 1_767_258_000_000)
    except BadEvent as exc:
        assert exc.reason
        return
    event = orjson.loads(value)
    assert (event["customer_resolution"], event["user_resolution"]) == (customer, user)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in event["metadata"].items())


@PROPERTY
@example('{"a":' + deep(300, '{"b":', "}") + "}")
@given(METADATA | st.none())
def test_metadata_is_always_a_bounded_map_and_a_form(raw: str | None) -> None:
    attributes, form = parse_metadata(raw)

    assert form in {"none", "json", "query", "raw"}
    assert len(attributes) <= MAX_KEYS
    assert all(len(k) <= MAX_KEY_CHARS and len(v) <= MAX_VALUE_CHARS for k, v in attributes.items())
    if form in {"none", "raw"}:
        assert attributes == {}


KEYS = st.one_of(
    st.none(),
    st.binary(max_size=30),
    st.tuples(st.sampled_from(["customer:", "user:", "erase:", "team:", "customer", ""]), st.text(max_size=40)).map(
        lambda p: (p[0] + p[1]).encode("utf-8", "surrogatepass")
    ),
    st.just(("erase:" + "ab" * 32).encode()),
)
RECORD_DOCS = st.fixed_dictionaries(
    {},
    optional={
        "customer_id": st.sampled_from(["c-1", "has space", ""]) | SCALARS,
        "external_id": st.sampled_from(["ext-1", "bad.id"]) | SCALARS,
        "user_id": SCALARS,
        "name": SCALARS | JSON,
        "email": st.sampled_from(["a@b", "nobody"]) | SCALARS,
        "room_name_prefixes": st.lists(st.sampled_from(["acme-", "Bad", "", "a" * 40]) | SCALARS, max_size=3) | JSON,
        "attributes": st.dictionaries(TEXT, JSON, max_size=5) | JSON,
        "pseudonym": st.sampled_from(["forgotten-" + "0a" * 10, "forgotten-", "Forgotten-x"]) | SCALARS,
        "erased_at_ms": SCALARS,
    },
)
VALUES = st.one_of(
    st.none(),
    st.binary(max_size=60),
    RECORD_DOCS.map(lambda d: json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    DEEP_JSON.map(lambda text: ('{"attributes":{"a":' + text + "}}").encode()),
)


@PROPERTY
@example(b"customer:c-deep", ('{"attributes":{"a":' + deep(300) + "}}").encode())
@given(KEYS, VALUES)
def test_a_dimension_record_decodes_or_raises_dimension_error(key: bytes | None, value: bytes | None) -> None:
    try:
        record = dimensions.decode(key, value)
    except dimensions.DimensionError as exc:
        assert exc.reason == "invalid_dimension"
        return
    assert isinstance(record, dimensions.Customer | dimensions.User | dimensions.Erasure | dimensions.Tombstone)
    if not isinstance(record, dimensions.Tombstone):
        orjson.dumps(record.to_doc())  # what was accepted can be written back
