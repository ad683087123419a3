"""Records of the dimensions topic: one decoder, used by every stage that reads the topic.

Enrich materialises the topic into its dimension table and the sink stores it in ClickHouse; both
call :func:`decode`, so a record is valid for both or for neither. Anyone can write to the topic (the
`dims` CLI validates first, but a hand-written record does not go through it), so :func:`decode` takes
any bytes and returns a typed record or raises :class:`DimensionError`, nothing else: a stage
dead-letters the record and goes on.

Keys and values (a null value, i.e. a tombstone, deletes):

| Key | Value | Record |
|---|---|---|
| `customer:<id>` | `{customer_id, name, room_name_prefixes[], attributes{}}` | :class:`Customer` |
| `user:<externalId>` | `{external_id, user_id, customer_id, name, email, attributes{}}` | :class:`User` |
| `config:<name>` | `{value, set_by?, set_at_ms?}`: a pipeline-wide setting | :class:`Setting` |
| `erase:<sha256 of externalId>` | `{pseudonym, erased_at_ms}` | :class:`Erasure` (see :mod:`pipeline.erasure`) |
| any of them, null value | — | :class:`Tombstone` (`config:` back to its default; `erase:` withdrawn) |

The id field inside a value may be left out (the key names it); when given it must match the key.

Settings (`config:<name>`) are what every enrich process must agree on and what changes enrichment
results, so they live on this topic: applying one moves the topic position, i.e. the dimension version
every later enrichment carries (:func:`pipeline.contract.enrichment_version`). Known names are
validated (`config:user_id_source`, :mod:`pipeline.usersource`); a name this release does not know is
kept as text and ignored by every stage (a newer release may have written it).

A new kind of record is one decoder registered in :data:`DECODERS` under its key prefix, plus whatever
each stage does with the new record type (a stage ignores record types it has no use for).

Memory: enrich keeps every record in every process, so records are slotted frozen dataclasses, a user's
customer id is interned (one string per customer, not one per user) and records without attributes
share one empty mapping.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from pipeline import contract, erasure, usersource
from pipeline.failures import Failure

PREFIX_RE = re.compile(r"^[a-z0-9-]{1,39}$")
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")

# An id is part of a Kafka key and a ClickHouse sort key: bounded, printable, no spaces.
MAX_ID_CHARS = 200
# Free text (names, e-mail): ends up in reports, spreadsheets and the page.
MAX_TEXT_CHARS = 256
# Attributes become a Map(String, String) column and labels in reports: bounded in count and size.
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 1024

# Most records have no attributes: they share one read-only empty mapping instead of an empty dict each
# (100,000 users would otherwise carry 6 MiB of empty dicts).
NO_ATTRIBUTES: Mapping[str, str] = MappingProxyType({})

# Characters that make text lie about its shape in a terminal, a CSV file or a log line: C0/C1 controls
# (tab, CR, LF, ESC, NUL, ...) and the Unicode line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


class DimensionError(Failure, ValueError):
    """A dimension record is invalid. The message says which field and why; `reason` is a bounded code
    for metrics and the dead-letter row (`invalid_dimension`, or `dimension_conflict` for a prefix that
    another customer owns, which only the dimension table can tell)."""

    def __init__(self, message: str, reason: str = "invalid_dimension") -> None:
        super().__init__(reason, message)


@dataclass(frozen=True, slots=True)
class Customer:
    """A company whose meetings are created with one or more room-name prefixes."""

    customer_id: str
    name: str
    room_name_prefixes: tuple[str, ...]
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The record key on the dimensions topic."""
        return contract.DIM_CUSTOMER_PREFIX + self.customer_id

    def to_doc(self) -> dict[str, Any]:
        """The JSON record written to the dimensions topic (inverse of `customer_from_doc`)."""
        return {
            "customer_id": self.customer_id,
            "name": self.name,
            "room_name_prefixes": list(self.room_name_prefixes),
            "attributes": dict(self.attributes),
        }


@dataclass(frozen=True, slots=True)
class User:
    """A person, known by the `externalId` the company passes to the room."""

    external_id: str
    user_id: str
    customer_id: str | None
    name: str | None
    email: str | None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The record key on the dimensions topic."""
        return contract.DIM_USER_PREFIX + self.external_id

    def to_doc(self) -> dict[str, Any]:
        """The JSON record written to the dimensions topic (inverse of `user_from_doc`)."""
        return {
            "external_id": self.external_id,
            "user_id": self.user_id,
            "customer_id": self.customer_id,
            "name": self.name,
            "email": self.email,
            "attributes": dict(self.attributes),
        }


@dataclass(frozen=True, slots=True)
class Erasure:
    """One person erased by `forget`: events and rows whose externalId hashes to `subject` carry
    `pseudonym` instead, and no display name. `erased_at_ms` is when `forget` recorded it (0 if unknown)."""

    subject: str
    pseudonym: str
    erased_at_ms: int = 0

    @property
    def key(self) -> str:
        """The record key on the dimensions topic: the subject digest, never the externalId."""
        return contract.DIM_ERASE_PREFIX + self.subject

    def to_doc(self) -> dict[str, Any]:
        """The JSON record written to the dimensions topic (inverse of the `erase:` decoder)."""
        return {"pseudonym": self.pseudonym, "erased_at_ms": self.erased_at_ms}


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null value: the record of `kind` (a key prefix such as `customer:`) with id `ident` is deleted."""

    kind: str
    ident: str


@dataclass(frozen=True, slots=True)
class Setting:
    """A pipeline-wide setting recorded on the topic (`config:<name>`): its name and canonical value."""

    name: str
    value: str
    set_by: str | None = None

    @property
    def key(self) -> str:
        """The record key on the dimensions topic."""
        return contract.DIM_CONFIG_PREFIX + self.name

    def to_doc(self, set_at_ms: int | None = None) -> dict[str, Any]:
        """The JSON record written to the dimensions topic (inverse of `_setting`)."""
        doc: dict[str, Any] = {"value": self.value}
        if self.set_by is not None:
            doc["set_by"] = self.set_by
        if set_at_ms is not None:
            doc["set_at_ms"] = set_at_ms
        return doc


DimensionRecord = Customer | User | Erasure | Setting | Tombstone


# A decoder gets the id (the key without its prefix) and the raw value (None for a tombstone).
Decoder = Callable[[str, bytes | None], DimensionRecord]


def control_character(text: str) -> str | None:
    """The first control character in `text` (see `_CONTROL_CATEGORIES`) as `U+XXXX`, or None."""
    for ch in text:
        if unicodedata.category(ch) in _CONTROL_CATEGORIES:
            return f"U+{ord(ch):04X}"
    return None


def _str(doc: dict[str, Any], name: str, *, required: bool = True, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    value = doc.get(name)
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        if required:
            raise DimensionError(f"`{name}` is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DimensionError(f"`{name}` must be a string")
    text = str(value)
    if len(text) > max_chars:
        raise DimensionError(f"`{name}` must be at most {max_chars} characters")
    bad = control_character(text)
    if bad is not None:
        raise DimensionError(f"`{name}` contains a control character ({bad})")
    return text


def _is_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_CHARS and not any(ch.isspace() or not ch.isprintable() for ch in value)


def validate_id(value: str, name: str = "customer_id") -> str:
    """Check an identifier: 1-200 printable characters, no whitespace (it is part of a key)."""
    if not _is_id(value):
        raise DimensionError(f"`{name}` {value[:40]!r} must be 1-{MAX_ID_CHARS} printable characters, no spaces")
    return value


def _id(doc: dict[str, Any], name: str) -> str:
    """A required identifier field."""
    value = _str(doc, name, max_chars=MAX_ID_CHARS)
    assert value is not None
    return validate_id(value, name)


def _attributes(doc: dict[str, Any]) -> Mapping[str, str]:
    attrs = doc.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise DimensionError("`attributes` must be an object")
    if not attrs:
        return NO_ATTRIBUTES
    if len(attrs) > MAX_ATTRIBUTES:
        raise DimensionError(f"`attributes` has {len(attrs)} entries; at most {MAX_ATTRIBUTES} are allowed")
    out: dict[str, str] = {}
    for key, value in attrs.items():
        if not key or len(key) > MAX_ATTRIBUTE_KEY_CHARS or control_character(key):
            raise DimensionError(
                f"attribute names must be 1-{MAX_ATTRIBUTE_KEY_CHARS} characters without control characters, "
                f"got {key[:40]!r}"
            )
        if isinstance(value, str):
            text = value
        else:
            try:
                text = orjson.dumps(value).decode()
            except orjson.JSONEncodeError:  # nested deeper than orjson serialises (or an odd number)
                raise DimensionError(f"attribute {key[:40]!r} is nested too deeply to store") from None
        if len(text) > MAX_ATTRIBUTE_VALUE_CHARS:
            raise DimensionError(f"attribute {key[:40]!r} is longer than {MAX_ATTRIBUTE_VALUE_CHARS} characters")
        out[key] = text
    return out


def validate_prefix(prefix: str) -> str:
    """Check a room-name prefix as Whereby normalises it: lower-case `[a-z0-9-]`, 1-39 characters."""
    if not PREFIX_RE.match(prefix):
        raise DimensionError(f"room name prefix {prefix!r} must be 1-39 characters of a-z, 0-9 and '-'")
    return prefix


def validate_external_id(external_id: str) -> str:
    """Check an externalId as Whereby accepts it: `[A-Za-z0-9_-]{1,36}`."""
    if not EXTERNAL_ID_RE.match(external_id):
        raise DimensionError(f"external_id {external_id[:40]!r} must be 1-36 characters of A-Z, a-z, 0-9, '_' and '-'")
    return external_id


def customer_from_doc(doc: Any, ident: str | None = None) -> Customer:
    """Validate a customer record; `ident` (the key's id) stands in for a missing `customer_id`."""
    if not isinstance(doc, dict):
        raise DimensionError("customer record must be a JSON object")
    if ident is not None and doc.get("customer_id") in (None, ""):
        doc = {**doc, "customer_id": ident}
    customer_id = _id(doc, "customer_id")
    prefixes = doc.get("room_name_prefixes") or []
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise DimensionError("`room_name_prefixes` must be a list of strings")
    if len(set(prefixes)) != len(prefixes):
        raise DimensionError("`room_name_prefixes` lists the same prefix twice")
    return Customer(
        customer_id=customer_id,
        name=_str(doc, "name", required=False) or customer_id,
        room_name_prefixes=tuple(validate_prefix(p) for p in prefixes),
        attributes=_attributes(doc),
    )


def user_from_doc(doc: Any, ident: str | None = None) -> User:
    """Validate a user record; `ident` (the key's externalId) stands in for a missing `external_id`."""
    if not isinstance(doc, dict):
        raise DimensionError("user record must be a JSON object")
    if ident is not None and doc.get("external_id") in (None, ""):
        doc = {**doc, "external_id": ident}
    external_id = _str(doc, "external_id", max_chars=MAX_ID_CHARS)
    assert external_id is not None
    customer_id = _str(doc, "customer_id", required=False, max_chars=MAX_ID_CHARS)
    if customer_id is not None:
        customer_id = sys.intern(validate_id(customer_id))  # many users per customer: one string, not one per user
    email = _str(doc, "email", required=False)
    if email is not None and ("@" not in email or any(ch.isspace() for ch in email)):
        raise DimensionError("`email` must look like an e-mail address (name@domain)")
    user_id = _str(doc, "user_id", required=False, max_chars=MAX_ID_CHARS)
    return User(
        external_id=validate_external_id(external_id),
        user_id=external_id if user_id is None else validate_id(user_id, "user_id"),
        customer_id=customer_id,
        name=_str(doc, "name", required=False),
        email=email,
        attributes=_attributes(doc),
    )


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise DimensionError("dimension record is not valid JSON (UTF-8)") from None


def _customer(ident: str, value: bytes | None) -> DimensionRecord:
    validate_id(ident)
    if value is None:
        return Tombstone(contract.DIM_CUSTOMER_PREFIX, ident)
    customer = customer_from_doc(_loads(value), ident)
    if customer.customer_id != ident:
        raise DimensionError(f"key {ident[:40]!r} does not match customer_id {customer.customer_id[:40]!r}")
    return customer


def _user(ident: str, value: bytes | None) -> DimensionRecord:
    validate_external_id(ident)
    if value is None:
        return Tombstone(contract.DIM_USER_PREFIX, ident)
    user = user_from_doc(_loads(value), ident)
    if user.external_id != ident:
        raise DimensionError(f"key {ident[:40]!r} does not match external_id {user.external_id[:40]!r}")
    return user


def _erasure(ident: str, value: bytes | None) -> DimensionRecord:
    if not erasure.SUBJECT_RE.match(ident):
        raise DimensionError(f"erasure key {ident[:40]!r} must be the SHA-256 of the externalId in lower-case hex")
    if value is None:
        return Tombstone(contract.DIM_ERASE_PREFIX, ident)
    doc = _loads(value)
    if not isinstance(doc, dict):
        raise DimensionError("erasure record must be a JSON object")
    pseudonym = doc.get("pseudonym")
    # It is written into every table in place of the id: only the shape `forget` produces is accepted.
    if not isinstance(pseudonym, str) or not erasure.is_pseudonym(pseudonym):
        raise DimensionError(
            f"`pseudonym` must be {erasure.PSEUDONYM_PREFIX!r} followed by {erasure.PSEUDONYM_HEX_DIGITS} "
            "lower-case hex digits"
        )
    erased_at = doc.get("erased_at_ms", 0)
    if isinstance(erased_at, bool) or not isinstance(erased_at, int) or not 0 <= erased_at < 2**63:
        raise DimensionError("`erased_at_ms` must be a whole number of milliseconds")
    return Erasure(ident, pseudonym, erased_at)


# Setting names are part of a key: short, lower-case words.
_SETTING_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_SETTING_VALUE_CHARS = 1024
SETTING_USER_ID_SOURCE = "user_id_source"


def _setting_value(name: str, value: str) -> str:
    """The canonical value of a known setting (DimensionError if invalid); other names' text as given."""
    if name == SETTING_USER_ID_SOURCE:
        try:
            return usersource.text_of(usersource.parse(value))
        except usersource.UserIdSourceError as exc:
            raise DimensionError(f"`config:{name}` {exc}") from None
    return value


def _setting(ident: str, value: bytes | None) -> DimensionRecord:
    if not _SETTING_NAME_RE.match(ident):
        raise DimensionError(f"setting name {ident[:40]!r} must be 1-64 characters of a-z, 0-9 and '_'")
    if value is None:
        return Tombstone(contract.DIM_CONFIG_PREFIX, ident)
    doc = _loads(value)
    if not isinstance(doc, dict):
        raise DimensionError("setting record must be a JSON object")
    text = _str(doc, "value", max_chars=MAX_SETTING_VALUE_CHARS)
    assert text is not None
    return Setting(ident, _setting_value(ident, text), _str(doc, "set_by", required=False))


# Key prefix (with its colon) → decoder. Register a new kind of dimension record here.
DECODERS: dict[str, Decoder] = {
    contract.DIM_CUSTOMER_PREFIX: _customer,
    contract.DIM_USER_PREFIX: _user,
    contract.DIM_ERASE_PREFIX: _erasure,
    contract.DIM_CONFIG_PREFIX: _setting,
}


def decode(key: bytes | None, value: bytes | None) -> DimensionRecord:
    """The typed record of one dimensions-topic record; DimensionError for anything invalid.

    Never raises anything else, whatever the bytes (a property test holds it to that).
    """
    try:
        text = (key or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise DimensionError("dimension key is not UTF-8") from None
    prefix, colon, ident = text.partition(":")
    decoder = DECODERS.get(prefix + colon)
    if decoder is None:
        known = ", ".join(f"'{p}'" for p in DECODERS)
        raise DimensionError(f"dimension key {text[:80]!r} must start with one of {known}")
    return decoder(ident, value)
