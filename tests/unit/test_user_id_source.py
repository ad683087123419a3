"""USER_ID_SOURCE (issue 18): the parser, the choice of a user id, the `config:user_id_source` record,
and enrichment under each setting. Pure: no broker."""

from __future__ import annotations

import orjson
import pytest

from enrich.dimensions import DimensionTable
from enrich.enricher import enrich
from pipeline import usersource
from pipeline.dimensions import DimensionError, Setting, Tombstone, decode
from pipeline.settings import ConfigError, Settings
from pipeline.usersource import Found, Source, UserIdSourceError, find, parse, text_of
from sink.rows import dimension_row
from tests.support import body, event

ROOM = "/acme-3f2b8c1d"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("externalId", "externalId", id="default"),
        pytest.param(" EXTERNALID ", "externalId", id="names-are-case-insensitive"),
        pytest.param("metadata", "metadata", id="bare-metadata"),
        pytest.param("metadata:userId", "metadata:userId", id="a-metadata-key"),
        pytest.param("externalId, metadata:userId", "externalId,metadata:userId", id="fallback-order"),
        pytest.param("metadata:user id", "metadata:user id", id="keys-as-written"),
        pytest.param("metadata:a:b", "metadata:a:b", id="a-key-with-a-colon"),
    ],
)
def test_valid_settings_parse_to_their_canonical_text(text: str, expected: str) -> None:
    assert text_of(parse(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("email", "unknown source", id="unknown-source"),
        pytest.param("externalId:x", "unknown source", id="externalId-takes-no-key"),
        pytest.param("metadata:", "metadata key", id="empty-key"),
        pytest.param("metadata:" + "k" * 65, "1-64 characters", id="key-longer-than-enrich-keeps"),
        pytest.param("metadata:a\x1bb", "control characters", id="key-with-escape"),
        pytest.param("externalId,,metadata", "unknown source", id="empty-entry"),
        pytest.param("externalId,externalid", "twice", id="duplicate"),
        pytest.param("metadata:a,metadata:b,metadata:c,metadata:d,metadata", "at most 4", id="too-many"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(UserIdSourceError, match=message):
        parse(text)


def test_the_setting_is_checked_at_start_and_names_the_variable() -> None:
    assert Settings.from_env({"USER_ID_SOURCE": "metadata:userId , externalId"}).user_id_source == (
        "metadata:userId,externalId"
    )
    unset = Settings.from_env({})
    assert (unset.user_id_source, unset.desired_user_id_source) == ("", "externalId")
    with pytest.raises(ConfigError, match="USER_ID_SOURCE unknown source 'mail'"):
        Settings.from_env({"USER_ID_SOURCE": "mail"})


FALLBACK = parse("externalId,metadata:userId")


@pytest.mark.parametrize(
    ("sources", "external_id", "metadata", "bare", "found"),
    [
        pytest.param(FALLBACK, "ext-1", {"userId": "m-1"}, None, Found("ext-1", "externalId", True), id="first-wins"),
        pytest.param(
            parse("metadata:userId,externalId"),
            "ext-1",
            {"userId": "m-1"},
            None,
            Found("m-1", "metadata:userId", True),
            id="order-decides",
        ),
        pytest.param(FALLBACK, None, {"userId": "m-1"}, None, Found("m-1", "metadata:userId", True), id="fallback"),
        pytest.param(FALLBACK, None, {"userId": ""}, None, None, id="empty-value-is-no-value"),
        pytest.param(FALLBACK, None, {}, None, None, id="nothing"),
        pytest.param(
            FALLBACK,
            "not valid!",
            {"userId": "m-1"},
            None,
            Found("m-1", "metadata:userId", True),
            id="a-valid-later-id-beats-an-invalid-one",
        ),
        pytest.param(
            FALLBACK,
            "not valid!",
            {"userId": "has space"},
            None,
            Found("not valid!", "externalId", False),
            id="all-invalid-keeps-the-first",
        ),
        pytest.param(
            parse("metadata:userId"),
            None,
            {"userId": "u" * 65},
            None,
            Found("u" * 65, "metadata:userId", False),
            id="over-long-is-invalid",
        ),
        pytest.param(
            parse("metadata:userId"),
            None,
            {"userId": "ada@example.com"},
            None,
            Found("ada@example.com", "metadata:userId", True),
            id="metadata-ids-may-be-e-mails",
        ),
        pytest.param(parse("metadata"), None, {}, "u-42", Found("u-42", "metadata", True), id="bare-metadata"),
        pytest.param(parse("metadata"), None, {"plan": "pro"}, None, None, id="a-map-is-not-a-bare-id"),
    ],
)
def test_the_first_valid_id_in_order_wins(
    sources: tuple[Source, ...], external_id: str | None, metadata: dict[str, str], bare: str | None, found: Found
) -> None:
    assert find(sources, external_id, metadata, bare) == found


def test_invalid_ids_are_cut_longer_than_any_valid_id() -> None:
    huge = find(parse("metadata"), None, {}, "x" * 5000)
    assert huge is not None and not huge.valid
    assert usersource.MAX_METADATA_ID_CHARS < len(huge.key) == usersource.MAX_INVALID_METADATA_ID_CHARS


def test_the_setting_record_decodes_canonically_and_the_sink_passes_it_by() -> None:
    value = orjson.dumps({"value": "externalId , metadata:userId", "set_by": "enrich@1"})
    expected = Setting("user_id_source", "externalId,metadata:userId", "enrich@1")
    assert decode(b"config:user_id_source", value) == expected
    assert decode(b"config:user_id_source", None) == Tombstone("config:", "user_id_source")
    # A setting this release does not know (a newer one wrote it) is kept as text and ignored.
    assert decode(b"config:retention", b'{"value": "30d"}') == Setting("retention", "30d")
    with pytest.raises(DimensionError, match="unknown source"):
        decode(b"config:user_id_source", b'{"value": "email"}')
    with pytest.raises(DimensionError, match="setting name"):
        decode(b"config:User Id", b'{"value": "x"}')
    assert dimension_row(b"config:user_id_source", value, 3) is None
    assert dimension_row(b"config:user_id_source", None, 4) is None


def table(setting: str | None) -> DimensionTable:
    dims = DimensionTable()
    dims.apply(b"user:u-9", b'{"user_id": "reg-9", "name": "Nine"}', 0)
    if setting is not None:
        dims.apply(b"config:user_id_source", orjson.dumps({"value": setting}), 1)
    return dims


def enriched(dims: DimensionTable, external_id: str | None, metadata: str | None) -> tuple[object, ...]:
    doc = event("room.client.joined", ROOM, 0, participant="p-1", external_id=external_id, metadata=metadata)
    out = enrich(body(doc), {}, dims, now_ms=0)
    return (out.get("user_key"), out.get("user_source"), out["user_resolution"], out["user_id"], out["external_id"])


def test_enrichment_follows_the_topics_setting_and_keeps_external_id_as_sent() -> None:
    meta = '{"userId": "u-9", "plan": "pro"}'
    assert enriched(table(None), "ext-1", meta) == ("ext-1", "externalId", "unresolved", None, "ext-1")
    assert enriched(table(None), None, meta) == (None, None, "absent", None, None)
    fallback = table("externalId,metadata:userId")
    assert fallback.version == 2
    assert enriched(fallback, None, meta) == ("u-9", "metadata:userId", "external_id", "reg-9", None)
    assert enriched(fallback, "ext-1", meta) == ("ext-1", "externalId", "unresolved", None, "ext-1")
    assert enriched(table("metadata"), None, "u-9") == ("u-9", "metadata", "external_id", "reg-9", None)
    assert enriched(table("metadata:userId"), "x" * 40, "userId=has+space") == (
        "has space",
        "metadata:userId",
        "invalid",
        None,
        "x" * 40,
    )
    # A tombstone puts the default back; an invalid record leaves the setting as it was.
    dims = table("metadata:userId")
    with pytest.raises(DimensionError):
        dims.apply(b"config:user_id_source", b'{"value": "nope"}', 2)
    assert dims.user_id_source_text == "metadata:userId"
    dims.apply(b"config:user_id_source", None, 3)
    assert (dims.user_id_source_text, dims.version) == ("externalId", 4)
