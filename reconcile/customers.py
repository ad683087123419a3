"""Registered customers and their room-name prefixes, as enrichment resolves them. Pure.

Built from the records of the compacted dimensions topic in topic order, with enrichment's rules (see
`enrich/dimensions.py`; this component may not import it): a customer record lists its
`room_name_prefixes`, each lower-case `[a-z0-9-]`, 1-39 characters; a record whose prefix another
customer already owns is rejected; a tombstone removes the customer. A room belongs to the customer
with the **longest** registered prefix of its name (leading `/` removed, never split on `-`), so with
`acme-` and `acme-labs-` registered, `/acme-labs-x` belongs to the second.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline import contract

PREFIX_RE = re.compile(r"^[a-z0-9-]{1,39}$")
MAX_PREFIX_CHARS = 39


@dataclass
class Registry:
    """customer id -> prefixes and prefix -> customer id, kept consistent record by record."""

    prefixes: dict[str, str] = field(default_factory=dict)
    customers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    rejected: int = 0

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one dimensions-topic record; user records are ignored, invalid ones counted in `rejected`."""
        text = (key or b"").decode("utf-8", "replace")
        if not text.startswith(contract.DIM_CUSTOMER_PREFIX):
            return
        ident = text.removeprefix(contract.DIM_CUSTOMER_PREFIX)
        if value is None:
            self._remove(ident)
            return
        prefixes = _prefixes(value, ident)
        if prefixes is None or any(self.prefixes.get(p, ident) != ident for p in prefixes):
            self.rejected += 1  # enrichment rejects it too, so it resolves nothing there either
            return
        self._remove(ident)
        self.customers[ident] = prefixes
        for prefix in prefixes:
            self.prefixes[prefix] = ident

    def _remove(self, customer_id: str) -> None:
        for prefix in self.customers.pop(customer_id, ()):
            if self.prefixes.get(prefix) == customer_id:
                del self.prefixes[prefix]

    def resolve(self, room_name: str) -> tuple[str, str] | None:
        """(prefix, customer id) of the longest registered prefix of `room_name`, or None (unresolved)."""
        name = room_name.removeprefix("/")
        for length in range(min(len(name), MAX_PREFIX_CHARS), 0, -1):
            owner = self.prefixes.get(name[:length])
            if owner is not None:
                return name[:length], owner
        return None

    def covering_prefixes(self) -> list[str]:
        """The fewest prefixes whose room listings find every registered customer's rooms: a prefix that
        starts with another registered prefix (`acme-labs-` after `acme-`) adds no room to its listing."""
        kept: list[str] = []
        for prefix in sorted(self.prefixes):  # a prefix sorts right after the shorter prefixes it extends
            if not any(prefix.startswith(k) for k in kept):
                kept.append(prefix)
        return kept


def _prefixes(value: bytes, ident: str) -> tuple[str, ...] | None:
    """The valid prefixes of a customer record for `ident`, or None when enrichment would reject it."""
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or str(doc.get("customer_id", "")).strip() != ident:
        return None
    prefixes = doc.get("room_name_prefixes") or []
    if not isinstance(prefixes, list) or not all(isinstance(p, str) and PREFIX_RE.match(p) for p in prefixes):
        return None
    if len(set(prefixes)) != len(prefixes):
        return None
    return tuple(prefixes)


def registry_of(records: Iterable[tuple[bytes | None, bytes | None]]) -> Registry:
    """A registry from dimension records (key, value) in topic order."""
    registry = Registry()
    for key, value in records:
        registry.apply(key, value)
    return registry
