"""Parsing of the participant `metadata` string into attributes."""

from __future__ import annotations

import orjson
import pytest

from enrich.metadata import MAX_KEY_CHARS, MAX_KEYS, MAX_METADATA_CHARS, MAX_VALUE_CHARS, parse_metadata


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
    raw = "k=" + "v" * (MAX_METADATA_CHARS * 2) + "&late=1"

    attributes, form = parse_metadata(raw)

    assert (form, attributes) == ("query", {"k": "v" * MAX_VALUE_CHARS})  # `late` was past the cut


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "raw",
    [
        '{"deep":' + nested(300) + "}",  # orjson reads it, but cannot write the value back as text
        '{"ok":"yes","deep":' + nested(300) + "}",  # unusable further on: unusable
        nested(2000),  # deeper than orjson reads
        '{"a":' + "[" * 300 + "]" * 300 + "}",
    ],
    ids=["object-300-deep", "after-a-good-key", "2000-deep", "array-300-deep"],
)
def test_deeply_nested_json_is_raw_text_with_an_empty_map(raw: str) -> None:
    assert parse_metadata(raw) == ({}, "raw")


@pytest.mark.parametrize("form", ["json", "query"])
def test_the_map_is_bounded_in_keys_key_length_and_value_length(form: str) -> None:
    pairs = [("k" * (MAX_KEY_CHARS + 1), "long key"), ("big", "v" * 1000)] + [(f"k{i}", str(i)) for i in range(50)]
    raw = orjson.dumps(dict(pairs)).decode() if form == "json" else "&".join(f"{k}={v}" for k, v in pairs)

    attributes, parsed_form = parse_metadata(raw)

    assert parsed_form == form
    assert len(attributes) == MAX_KEYS
    assert "k" * (MAX_KEY_CHARS + 1) not in attributes
    assert attributes["big"] == "v" * MAX_VALUE_CHARS
    assert list(attributes)[1:] == [f"k{i}" for i in range(MAX_KEYS - 1)]


def test_cached_parses_are_independent_copies() -> None:
    first, _ = parse_metadata("plan=pro")
    first["plan"] = "changed"

    assert parse_metadata("plan=pro") == ({"plan": "pro"}, "query")
