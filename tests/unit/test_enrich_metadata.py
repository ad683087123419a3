"""Parsing of the participant `metadata` string into attributes."""

from __future__ import annotations

import pytest

from enrich.metadata import MAX_METADATA_CHARS, parse_metadata


@pytest.mark.parametrize(
    ("raw", "attributes", "form"),
    [
        (None, {}, "none"),
        ("", {}, "none"),
        ("   ", {}, "none"),
        ('{"plan":"enterprise","seats":12,"beta":true}', {"plan": "enterprise", "seats": "12", "beta": "true"}, "json"),
        ('{"nested":{"a":1}}', {"nested": '{"a":1}'}, "json"),
        ("plan=enterprise&team=blue", {"plan": "enterprise", "team": "blue"}, "query"),
        ("plan=enterprise%20plus&empty=", {"plan": "enterprise plus", "empty": ""}, "query"),
        ("just some text", {}, "raw"),
        ("[1,2,3]", {}, "raw"),
        ('{"broken": ', {}, "raw"),
        ("=value", {}, "raw"),
    ],
)
def test_forms(raw: str | None, attributes: dict[str, str], form: str) -> None:
    assert parse_metadata(raw) == (attributes, form)


def test_overlong_metadata_is_cut_before_parsing() -> None:
    raw = "k=" + "v" * (MAX_METADATA_CHARS * 2)

    attributes, form = parse_metadata(raw)

    assert form == "query"
    assert len(attributes["k"]) == MAX_METADATA_CHARS - 2


def test_cached_parses_are_independent_copies() -> None:
    first, _ = parse_metadata("plan=pro")
    first["plan"] = "changed"

    assert parse_metadata("plan=pro") == ({"plan": "pro"}, "query")
