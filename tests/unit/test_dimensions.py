"""Validation of dimension records and the dimension table built from the topic's records."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from enrich.dimensions import DimensionError, DimensionTable, customer_from_doc, user_from_doc


def apply(table: DimensionTable, key: str, value: dict[str, Any] | None) -> None:
    table.apply(key.encode(), None if value is None else orjson.dumps(value), table.version)


def customer(cid: str, *prefixes: str, name: str = "Name") -> dict[str, Any]:
    return {"customer_id": cid, "name": name, "room_name_prefixes": list(prefixes)}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "x"}, "`customer_id` is required"),
        ({"customer_id": "  "}, "`customer_id` is required"),
        ({"customer_id": "has space"}, "printable characters, no spaces"),
        ({"customer_id": "c", "room_name_prefixes": "acme-"}, "must be a list of strings"),
        ({"customer_id": "c", "room_name_prefixes": ["Acme-"]}, "1-39 characters of a-z, 0-9 and '-'"),
        ({"customer_id": "c", "room_name_prefixes": ["acme_"]}, "1-39 characters"),
        ({"customer_id": "c", "room_name_prefixes": ["a" * 40]}, "1-39 characters"),
        ({"customer_id": "c", "room_name_prefixes": [""]}, "1-39 characters"),
        ({"customer_id": "c", "room_name_prefixes": ["a-", "a-"]}, "the same prefix twice"),
        ({"customer_id": "c", "attributes": ["x"]}, "`attributes` must be an object"),
        ({"customer_id": True}, "must be a string"),
        ([], "must be a JSON object"),
    ],
)
def test_invalid_customer_records(doc: Any, message: str) -> None:
    with pytest.raises(DimensionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        customer_from_doc(doc)


def test_valid_customer_record_defaults_and_round_trip() -> None:
    parsed = customer_from_doc({"customer_id": "c1", "room_name_prefixes": ["a" * 39], "attributes": {"tier": 2}})

    assert parsed.name == "c1"
    assert parsed.attributes == {"tier": "2"}
    assert parsed.key == "customer:c1"
    assert customer_from_doc(parsed.to_doc()) == parsed


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"user_id": "u"}, "`external_id` is required"),
        ({"external_id": "a" * 37}, "must be 1-36 characters"),
        ({"external_id": "bad id"}, "must be 1-36 characters"),
        ({"external_id": "bad.id"}, "must be 1-36 characters"),
        ({"external_id": "ok", "email": "not-an-address"}, "`email` must look like an e-mail address"),
    ],
)
def test_invalid_user_records(doc: Any, message: str) -> None:
    with pytest.raises(DimensionError, match=message):
        user_from_doc(doc)


def test_valid_user_record_defaults_and_round_trip() -> None:
    parsed = user_from_doc({"external_id": "Ab_9-" + "x" * 31, "email": "ada@example.com"})

    assert parsed.user_id == parsed.external_id
    assert parsed.customer_id is None
    assert user_from_doc(parsed.to_doc()) == parsed


def test_extending_another_customers_prefix_is_allowed_and_longest_wins() -> None:
    table = DimensionTable()
    apply(table, "customer:acme", customer("acme", "acme-"))
    apply(table, "customer:labs", customer("labs", "acme-labs-"))

    assert table.customer_for_room("/acme-labs-1").customer_id == "labs"  # type: ignore[union-attr]
    assert table.customer_for_room("/acme-1").customer_id == "acme"  # type: ignore[union-attr]


def test_same_prefix_on_two_customers_is_rejected_and_the_first_keeps_it() -> None:
    table = DimensionTable()
    apply(table, "customer:acme", customer("acme", "acme-"))

    with pytest.raises(DimensionError, match="already belongs to customer 'acme'"):
        apply(table, "customer:evil", customer("evil", "evil-", "acme-"))

    assert "evil" not in table.customers
    assert table.customer_for_room("/acme-1").customer_id == "acme"  # type: ignore[union-attr]
    assert table.customer_for_room("/evil-1") is None


def test_updating_a_customer_replaces_its_prefixes() -> None:
    table = DimensionTable()
    apply(table, "customer:acme", customer("acme", "acme-", "old-"))
    apply(table, "customer:acme", customer("acme", "acme-", "new-", name="Acme Inc"))

    assert table.customer_for_room("/old-1") is None
    assert table.customer_for_room("/new-1").name == "Acme Inc"  # type: ignore[union-attr]
    assert len(table.prefixes) == 2


def test_a_released_prefix_can_move_to_another_customer() -> None:
    table = DimensionTable()
    apply(table, "customer:a", customer("a", "shared-"))
    apply(table, "customer:a", customer("a"))
    apply(table, "customer:b", customer("b", "shared-"))

    assert table.customer_for_room("/shared-1").customer_id == "b"  # type: ignore[union-attr]


def test_tombstones_delete_customers_and_users() -> None:
    table = DimensionTable()
    apply(table, "customer:acme", customer("acme", "acme-"))
    apply(table, "user:ext-1", {"external_id": "ext-1", "user_id": "u1"})

    apply(table, "customer:acme", None)
    apply(table, "user:ext-1", None)
    apply(table, "user:never-existed", None)

    assert table.customers == {} and table.users == {} and len(table.prefixes) == 0
    assert table.customer_for_room("/acme-1") is None
    assert table.version == 5


def test_key_must_match_the_record_and_have_a_known_kind() -> None:
    table = DimensionTable()
    with pytest.raises(DimensionError, match="does not match customer_id"):
        apply(table, "customer:acme", customer("other", "x-"))
    with pytest.raises(DimensionError, match="does not match external_id"):
        apply(table, "user:ext-1", {"external_id": "ext-2"})
    with pytest.raises(DimensionError, match="must start with one of 'customer:', 'user:'"):
        apply(table, "team:x", {"x": 1})
    with pytest.raises(DimensionError, match="not valid JSON"):
        table.apply(b"user:x", b"{", 7)

    assert table.customers == {} and table.users == {}
    assert table.version == 8  # rejected records still advance the version: it is the topic position


def test_room_resolutions_are_cached_but_follow_every_customer_change() -> None:
    table = DimensionTable()
    apply(table, "customer:acme", customer("acme", "acme-"))
    room = "/acme-labs-3f2b8c1d"
    assert table.customer_for_room(room).customer_id == "acme"  # type: ignore[union-attr]

    apply(table, "customer:labs", customer("labs", "acme-labs-"))
    assert table.customer_for_room(room).customer_id == "labs"  # type: ignore[union-attr]

    apply(table, "customer:labs", None)
    assert table.customer_for_room(room).customer_id == "acme"  # type: ignore[union-attr]

    apply(table, "customer:acme", customer("acme", "other-"))
    assert table.customer_for_room(room) is None
