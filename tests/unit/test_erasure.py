"""Erasing a person, the pure parts: the subject and the pseudonym, the `erase:` record, enrichment of
an erased person's events, STORE_DISPLAY_NAMES, the sink's scrub of stale events and its mutations."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from enrich.dimensions import DimensionTable
from enrich.dimfiles import check_against, parse_users
from enrich.enricher import enrich
from enrich.forget import check_external_id, erasure_records
from pipeline import contract, erasure
from pipeline.dimensions import DimensionError, Erasure, Tombstone, decode
from pipeline.settings import ConfigError, Settings
from sink import forget, retention
from sink.batch import Batch, Record
from sink.erasures import apply_record
from sink.rows import dimension_row, erasure_change
from sink.scrub import scrub
from sink.writer import ClickHouseWriter, FatalInsertError, RetryLater
from tests.support import body, event

KEY = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
ADA = "ext-ada"
ROOM = "/acme-3f2b8c1d-9e4a-4b7c-8d2e-1a5f6b7c8d9e"
NOW = 1_767_258_000_000


def erase_record(external_id: str = ADA, key: str = KEY) -> tuple[bytes, bytes]:
    record = Erasure(erasure.subject(external_id), erasure.pseudonym(external_id, key), NOW)
    return record.key.encode(), orjson.dumps(record.to_doc())


# ------------------------------------------------------------------------------ subject and pseudonym


def test_the_subject_is_the_sha256_of_the_external_id_in_lower_case_hex() -> None:
    assert erasure.subject("user-00042") == hashlib.sha256(b"user-00042").hexdigest()
    assert erasure.SUBJECT_RE.match(erasure.subject("user-00042"))


def test_the_pseudonym_is_stable_keyed_and_says_nothing_of_the_subject() -> None:
    first = erasure.pseudonym(ADA, KEY)

    assert first == erasure.pseudonym(ADA, KEY)  # stable: every table, later events and replays agree
    assert erasure.is_pseudonym(first) and first.startswith("forgotten-")
    assert first != erasure.pseudonym("ext-bob", KEY)
    # Keyed: whoever knows the id (or the record's subject) cannot recompute it without the key.
    assert first != erasure.pseudonym(ADA, KEY[::-1])
    assert first.removeprefix("forgotten-") not in erasure.subject(ADA)
    with pytest.raises(ValueError):
        erasure.pseudonym(ADA, "short")


def test_an_erasure_set_looks_ids_up_by_subject_and_can_withdraw_one() -> None:
    erased = erasure.ErasureSet()
    assert not erased and erased.pseudonym_for(ADA) is None

    erased.add(erasure.subject(ADA), "forgotten-" + "0" * 20)

    assert erased.pseudonym_for(ADA) == "forgotten-" + "0" * 20
    assert erased.pseudonym_for("ext-bob") is None
    erased.remove(erasure.subject(ADA))
    assert erased.pseudonym_for(ADA) is None and len(erased) == 0


# -------------------------------------------------------------------------------------- the record


def test_the_erase_record_decodes_for_both_stages_and_its_tombstone_withdraws_it() -> None:
    key, value = erase_record()

    record = decode(key, value)

    assert record == Erasure(erasure.subject(ADA), erasure.pseudonym(ADA, KEY), NOW)
    assert ADA.encode() not in key + value  # the id is nowhere on the compacted topic
    assert decode(key, None) == Tombstone(contract.DIM_ERASE_PREFIX, erasure.subject(ADA))
    assert dimension_row(key, value, 9) is None  # the sink stores no row for it, it applies it
    assert erasure_change(key, value) == record


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("erase:" + ADA, {"pseudonym": "forgotten-" + "0" * 20}, id="id-in-key"),
        pytest.param("erase:" + "AB" * 32, {"pseudonym": "forgotten-" + "0" * 20}, id="upper-case-subject"),
        pytest.param("erase:" + "ab" * 31, {"pseudonym": "forgotten-" + "0" * 20}, id="short-subject"),
        pytest.param("erase:" + "ab" * 32, {}, id="no-pseudonym"),
        pytest.param("erase:" + "ab" * 32, {"pseudonym": "Ada Lovelace"}, id="not-a-pseudonym"),
        pytest.param("erase:" + "ab" * 32, {"pseudonym": "forgotten-" + "0" * 20 + "'"}, id="sql-in-pseudonym"),
        pytest.param("erase:" + "ab" * 32, {"pseudonym": "forgotten-" + "0" * 20, "erased_at_ms": True}, id="bool"),
        pytest.param("erase:" + "ab" * 32, ["forgotten-" + "0" * 20], id="not-an-object"),
    ],
)
def test_a_malformed_erase_record_is_a_dimension_error(key: str, value: object) -> None:
    with pytest.raises(DimensionError) as caught:
        decode(key.encode(), orjson.dumps(value))
    assert caught.value.reason == "invalid_dimension"


def test_the_sinks_follower_applies_erasures_and_withdrawals_and_skips_the_rest() -> None:
    erased = erasure.ErasureSet()
    key, value = erase_record()

    assert apply_record(erased, key, value)
    assert not apply_record(erased, b"user:ext-ada", b'{"user_id": "u"}')
    assert not apply_record(erased, b"erase:nonsense", b"{}")
    assert erased.pseudonym_for(ADA) == erasure.pseudonym(ADA, KEY)
    assert apply_record(erased, key, None)
    assert erased.pseudonym_for(ADA) is None


# ------------------------------------------------------------------------------------------ enrich


def dims(*, erased: bool = True) -> DimensionTable:
    table = DimensionTable()
    records: list[tuple[bytes, bytes | None]] = [
        (b"customer:c-acme", b'{"name": "Acme", "room_name_prefixes": ["acme-"]}'),
        (b"user:ext-ada", b'{"user_id": "u-ada", "customer_id": "c-acme", "name": "Ada L", "email": "ada@x.org"}'),
        (b"user:ext-bob", b'{"user_id": "u-bob", "customer_id": "c-acme", "name": "Bob B"}'),
    ]
    if erased:
        records.append(erase_record())
    for offset, (key, value) in enumerate(records):
        table.apply(key, value, offset)
    return table


def joined(external_id: str | None) -> bytes:
    doc = event("room.client.joined", ROOM, 0, participant="p-1", external_id=external_id)
    doc["data"]["displayName"] = "Ada Lovelace"
    return body(doc)


def test_an_erased_persons_event_carries_the_pseudonym_and_nothing_that_names_them() -> None:
    out = enrich(joined(ADA), {}, dims(), now_ms=NOW)

    assert out["external_id"] == erasure.pseudonym(ADA, KEY)
    assert (out["display_name"], out["user_id"], out.get("user_name")) == (None, None, None)
    assert out["user_resolution"] == "erased"
    assert (out["customer_id"], out["participant_id"], out["role_class"]) == ("c-acme", "p-1", "human")
    assert ADA not in orjson.dumps(out).decode() and "Ada L" not in orjson.dumps(out).decode()


def test_other_people_are_enriched_as_before_and_a_withdrawn_erasure_stops_applying() -> None:
    table = dims()
    bob = enrich(joined("ext-bob"), {}, table, now_ms=NOW)
    assert (bob["external_id"], bob["user_id"], bob["display_name"]) == ("ext-bob", "u-bob", "Ada Lovelace")

    table.apply(erase_record()[0], None, 10)

    assert enrich(joined(ADA), {}, table, now_ms=NOW)["external_id"] == ADA


def test_an_id_taken_from_metadata_is_erased_as_user_key_and_as_a_metadata_value() -> None:
    """USER_ID_SOURCE=metadata:userId: the erased id is the user key; someone else naming it in their
    metadata keeps their own name and user, only that value goes."""
    table = dims()
    table.apply(b"config:user_id_source", b'{"value": "metadata:userId"}', 10)
    pseudonym = erasure.pseudonym(ADA, KEY)

    def joined_with(metadata: str) -> bytes:
        doc = event("room.client.joined", ROOM, 0, participant="p-1", metadata=metadata)
        doc["data"]["displayName"] = "Ada Lovelace"
        return body(doc)

    own = enrich(joined_with(f'{{"userId": "{ADA}", "plan": "pro"}}'), {}, table, now_ms=NOW)
    assert (own["user_key"], own["user_resolution"], own["display_name"]) == (pseudonym, "erased", None)
    assert own["metadata"] == {"userId": pseudonym, "plan": "pro"} and own["metadata_raw"] is None
    assert ADA not in orjson.dumps(own).decode()

    other = enrich(joined_with(f'{{"userId": "ext-bob", "invitedBy": "{ADA}"}}'), {}, table, now_ms=NOW)
    assert (other["user_key"], other["user_id"], other["display_name"]) == ("ext-bob", "u-bob", "Ada Lovelace")
    assert other["metadata"] == {"userId": "ext-bob", "invitedBy": pseudonym} and other["metadata_raw"] is None


def test_a_user_record_of_an_erased_person_is_not_kept_nor_loadable_again() -> None:
    table = dims()
    table.apply(b"user:ext-ada", b'{"user_id": "u-ada", "name": "Ada L"}', 11)
    assert ADA not in table.users

    users = parse_users("external_id,user_id,customer_id,name\next-ada,u-ada,c-acme,Ada\n", "users.csv")
    problems = check_against(table, None, users)

    assert [(p.line, p.message) for p in problems] == [(2, "this person was erased (`forget`)")]


def test_store_display_names_false_writes_every_display_name_as_null() -> None:
    table = dims(erased=False)

    out = enrich(joined("ext-bob"), {}, table, now_ms=NOW, display_names=False)

    assert out["display_name"] is None
    assert (out["external_id"], out["user_id"], out["user_resolution"]) == ("ext-bob", "u-bob", "external_id")
    assert Settings.from_env({"STORE_DISPLAY_NAMES": "false"}).store_display_names is False
    assert Settings.from_env({}).store_display_names is True
    with pytest.raises(ConfigError, match="STORE_DISPLAY_NAMES"):
        Settings.from_env({"STORE_DISPLAY_NAMES": "maybe"})


# ---------------------------------------------------------------------------------- the forget CLI


def test_forget_deletes_the_registered_user_first_and_reuses_a_recorded_pseudonym() -> None:
    table = dims(erased=False)

    records, users = erasure_records(table, [ADA, ADA, "ext-new"], KEY, now_ms=NOW)

    assert users == 1
    assert [key for key, _ in records] == [
        "user:ext-ada",
        "erase:" + erasure.subject(ADA),
        "erase:" + erasure.subject("ext-new"),
    ]
    assert records[0][1] is None
    # Erased before with another key: the recorded pseudonym is kept, so nothing stored changes again.
    table.apply(*erase_record(key="another-key-0123456789"), 20)
    again, _ = erasure_records(table, [ADA], KEY, now_ms=NOW)
    assert orjson.loads(again[-1][1] or b"")["pseudonym"] == erasure.pseudonym(ADA, "another-key-0123456789")


def test_forget_refuses_ids_it_could_not_match_without_quoting_them_and_needs_a_real_key() -> None:
    for bad in ('ada"lovelace', "ada\\x", "ada lovelace", ""):
        with pytest.raises(ConfigError) as caught:
            check_external_id(bad)
        assert bad not in str(caught.value) or not bad
    with pytest.raises(ConfigError, match="ERASURE_KEY is not set"):
        Settings.from_env({}).require_erasure_key()
    for placeholder in ("REPLACE_ME_WITH_A_KEY", "short"):
        with pytest.raises(ConfigError, match="ERASURE_KEY"):
            Settings.from_env({"ERASURE_KEY": placeholder})
    assert Settings.from_env({"ERASURE_KEY": KEY}).require_erasure_key() == KEY
    assert KEY not in repr(Settings.from_env({"ERASURE_KEY": KEY}))


# ---------------------------------------------------------------------------------------- the sink


def enriched(external_id: str, *, metadata: dict[str, str] | None = None) -> bytes:
    return orjson.dumps(
        {
            "event_id": "e-" + external_id,
            "external_id": external_id,
            "display_name": "Ada Lovelace",
            "user_id": "u-1",
            "user_name": "Ada L",
            "user_resolution": "external_id",
            "metadata": metadata or {},
        }
    )


def test_scrub_rewrites_the_erased_persons_events_and_their_id_in_others_metadata() -> None:
    erased = erasure.ErasureSet()
    erased.add(erasure.subject(ADA), erasure.pseudonym(ADA, KEY))
    records = [
        Record("enriched", 0, 1, b"/r", enriched(ADA)),
        Record("enriched", 0, 2, b"/r", enriched("ext-bob", metadata={"external_id": ADA})),
        Record("enriched", 0, 3, b"/r", enriched("ext-bob")),
    ]

    out, changed = scrub(records, erased)

    assert changed == 2
    doc = orjson.loads(out[0].value or b"")
    assert (doc["external_id"], doc["display_name"], doc["user_id"], doc["user_name"], doc["user_resolution"]) == (
        erasure.pseudonym(ADA, KEY),
        None,
        None,
        None,
        "erased",
    )
    assert (out[0].partition, out[0].offset) == (0, 1)  # same position: same insert token, same commit
    other = orjson.loads(out[1].value or b"")  # Bob's event naming Ada in its metadata: only that value goes
    assert other["metadata"] == {"external_id": erasure.pseudonym(ADA, KEY)}
    assert (other["external_id"], other["display_name"], other["user_resolution"]) == (
        "ext-bob",
        "Ada Lovelace",
        "external_id",
    )
    assert out[2:] == records[2:]
    assert scrub(records, erasure.ErasureSet()) == (records, 0)  # nobody erased: the same list, no work


def test_the_mutations_never_write_the_subject_next_to_the_pseudonym_on_one_node() -> None:
    record = Erasure(erasure.subject(ADA), erasure.pseudonym(ADA, KEY))

    single = forget.statements("whereby", record)
    cluster = forget.statements("whereby", record, "main")

    assert [s.split()[2] for s in single] == [
        "whereby.events",
        "whereby.connection_rows",
        "whereby.connection_states",
        "whereby.dim_users",
    ]
    assert all(record.subject.upper() not in s and record.subject not in s for s in single)
    assert all("IN whereby.erasure_subject" in s for s in single)
    # A Set table is per node: on a cluster the subject is in the text (documented in the README).
    assert all("_local ON CLUSTER 'main'" in s and record.subject.upper() in s for s in cluster)
    with pytest.raises(ValueError):
        forget.statements("whereby", Erasure(record.subject, "forgotten-x' OR 1 --"))


def test_the_archive_retention_is_read_back_from_clickhouse_and_set_or_removed() -> None:
    engine = "ReplacingMergeTree ORDER BY x TTL toDateTime(received_at) + toIntervalDay(395) SETTINGS a = 1"

    assert retention.current_days(engine) == 395
    assert retention.current_days("ReplacingMergeTree ORDER BY x") is None
    assert retention.statement("whereby", 30) == (
        "ALTER TABLE whereby.raw_archive MODIFY TTL toDateTime(received_at) + INTERVAL 30 DAY"
    )
    assert (
        retention.statement("whereby", 0, "main")
        == "ALTER TABLE whereby.raw_archive_local ON CLUSTER 'main' REMOVE TTL"
    )
    assert Settings.from_env({}).raw_archive_retention_days == 395
    with pytest.raises(ConfigError, match="RAW_ARCHIVE_RETENTION_DAYS"):
        Settings.from_env({"RAW_ARCHIVE_RETENTION_DAYS": "-1"})


def test_the_records_erasing_an_unregistered_person_hold_no_trace_of_the_id() -> None:
    records, users = erasure_records(dims(erased=False), ["ext-new"], KEY, now_ms=NOW)

    assert users == 0
    assert b"ext-new" not in b"".join(key.encode() + (value or b"") for key, value in records)


class FailingClickHouse:
    """A client whose every statement fails with `error` (inserts of empty parts never reach it)."""

    def __init__(self, error: str) -> None:
        self.error = error

    def command(self, *_: object, **__: object) -> None:
        raise DatabaseError(self.error)


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        pytest.param("Code: 242. DB::Exception: Table is in readonly mode", RetryLater, id="retriable"),
        pytest.param("Code: 47. DB::Exception: Unknown identifier", FatalInsertError, id="fatal"),
        pytest.param("Code: 27. DB::Exception: Cannot parse input", FatalInsertError, id="never-dead-lettered"),
    ],
)
def test_an_erasure_that_fails_is_retried_or_stops_the_stage_and_is_never_committed_past(
    error: str, raised: type[Exception]
) -> None:
    key, value = erase_record()
    record = Record("dimensions", 0, 5, key, value)
    batch = Batch(started=0.0, dimensions=[record])
    batch.track(record)
    writer = ClickHouseWriter(FailingClickHouse(error), "whereby")  # type: ignore[arg-type]

    with pytest.raises(raised, match="erasure not applied"):
        writer.write(batch)
    assert not writer.erasures  # learnt only once applied: the retried batch applies it again
