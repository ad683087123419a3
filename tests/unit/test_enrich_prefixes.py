"""Longest-prefix matching of room names against registered prefixes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from enrich.prefixes import PrefixIndex


def index(**owners: str) -> PrefixIndex:
    idx = PrefixIndex()
    for owner, prefix in owners.items():
        idx.add(prefix, owner)
    return idx


def test_longer_prefix_of_another_customer_wins() -> None:
    idx = index(acme="acme-", labs="acme-labs-")

    assert idx.longest_match("acme-labs-3f2b8c1d-9e4a-4b7c-8d2e-1a5f6b7c8d9e") == ("acme-labs-", "labs")
    assert idx.longest_match("acme-3f2b8c1d-9e4a-4b7c-8d2e-1a5f6b7c8d9e") == ("acme-", "acme")
    # Shares characters with acme-labs- but does not complete it: the shorter prefix applies.
    assert idx.longest_match("acme-lab-3f2b8c1d") == ("acme-", "acme")


def test_matching_is_by_characters_never_by_hyphen_separated_parts() -> None:
    idx = index(short="c12", long="c123-")

    assert idx.longest_match("c1234-abcd") == ("c12", "short")
    assert idx.longest_match("c123-abcd") == ("c123-", "long")


def test_no_match_and_empty_index() -> None:
    assert PrefixIndex().longest_match("acme-1") is None
    assert index(acme="acme-").longest_match("other-acme-1") is None
    assert index(acme="acme-").longest_match("acm") is None


def test_remove_forgets_only_that_prefix_and_keeps_longer_ones() -> None:
    idx = index(acme="acme-", labs="acme-labs-")

    idx.remove("acme-")

    assert len(idx) == 1
    assert idx.longest_match("acme-1") is None
    assert idx.longest_match("acme-labs-1") == ("acme-labs-", "labs")
    idx.remove("acme-labs-")
    idx.remove("never-registered-")
    assert len(idx) == 0
    assert idx.longest_match("acme-labs-1") is None


def test_owner_of_is_exact() -> None:
    idx = index(acme="acme-", labs="acme-labs-")

    assert idx.owner_of("acme-") == "acme"
    assert idx.owner_of("acme-l") is None
    assert idx.owner_of("acme-labs-") == "labs"


PREFIX = st.text(alphabet="ab-", min_size=1, max_size=6)


@given(st.dictionaries(PREFIX, st.sampled_from(["x", "y", "z"]), max_size=12), st.text(alphabet="ab-", max_size=10))
def test_agrees_with_a_scan_over_all_prefixes(registered: dict[str, str], name: str) -> None:
    idx = PrefixIndex()
    for prefix, owner in registered.items():
        idx.add(prefix, owner)
    candidates = [p for p in registered if name.startswith(p)]
    expected = max(candidates, key=len) if candidates else None

    assert idx.longest_match(name) == (None if expected is None else (expected, registered[expected]))
