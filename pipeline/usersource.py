"""Where enrichment takes a participant's user id from: the `USER_ID_SOURCE` setting (issue 18).

Whereby tells companies to pass their own user id in `externalId` **or** in `metadata` (shared
reference §3), so the source is a setting, an ordered list of places to look:

| Source | The user id is |
|---|---|
| `externalId` | the `externalId` (default) |
| `metadata` | the whole `metadata` value, when it is a bare id (not a JSON object, not `k=v&…`) |
| `metadata:<key>` | the value of `<key>` in the parsed `metadata` (JSON object or `k=v&…`) |

`externalId,metadata:userId` looks at `externalId` first and falls back to `metadata`'s `userId`.
The first *valid* id found wins; when every id found is invalid, the first one is kept as invalid
(attributed, never dropped, never fatal); when none is found the participant has no user.

A valid id: an `externalId` follows Whereby's own rule (1-36 of `A-Z a-z 0-9 - _`); an id from
`metadata` is 1-64 printable characters without spaces. An invalid one is kept cut to a length no
valid id has, so an invalid id can never be mistaken for a valid one.

The effective value is recorded on the dimensions topic (`config:user_id_source`, see
:mod:`pipeline.dimensions`): every enrich process and every replay reads it from there, so they agree,
and a change moves the topic position, which is what `enrichment_version` is made of. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

EXTERNAL_ID = "externalId"
METADATA = "metadata"
DEFAULT_TEXT = EXTERNAL_ID
# Looking in more places than this is a configuration mistake, not a need.
MAX_SOURCES = 4
# Metadata keys are bounded by enrich when it parses metadata (enrich/metadata.py MAX_KEY_CHARS): a
# longer key can never be found, so naming one is refused here.
MAX_METADATA_KEY_CHARS = 64
# A user id taken from metadata: at most this long to be valid; an invalid one is kept cut to the
# second length, longer than any valid id, so the two can never collide in a per-user row.
MAX_METADATA_ID_CHARS = 64
MAX_INVALID_METADATA_ID_CHARS = 80
# The same for externalId: Whereby accepts at most 36 characters; invalid ones were always cut to 64.
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
MAX_INVALID_EXTERNAL_ID_CHARS = 64

_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


class UserIdSourceError(ValueError):
    """The USER_ID_SOURCE text is not a valid list of sources; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Source:
    """One place to look for a user id: `externalId`, `metadata`, or `metadata` with a key."""

    kind: str  # EXTERNAL_ID | METADATA
    key: str | None = None

    @property
    def label(self) -> str:
        """The source as written in the setting and stored in `user_source`: `metadata:userId`."""
        return self.kind if self.key is None else f"{self.kind}:{self.key}"


DEFAULT: tuple[Source, ...] = (Source(EXTERNAL_ID),)


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in _CONTROL_CATEGORIES for ch in text)


def parse(text: str) -> tuple[Source, ...]:
    """The sources of a USER_ID_SOURCE text (comma-separated, in order); UserIdSourceError if invalid.

    Names are case-insensitive (`externalid` is `externalId`); metadata keys are taken as written.
    """
    if not text.strip():
        raise UserIdSourceError(f"is empty; use {EXTERNAL_ID}, {METADATA}, {METADATA}:<key> or a comma-separated list")
    out: list[Source] = []
    for raw in text.split(","):
        part = raw.strip()
        name, colon, key = part.partition(":")
        if name.lower() == EXTERNAL_ID.lower() and not colon:
            source = Source(EXTERNAL_ID)
        elif name.lower() == METADATA and not colon:
            source = Source(METADATA)
        elif name.lower() == METADATA and colon:
            if not key or len(key) > MAX_METADATA_KEY_CHARS or _has_control(key) or key != key.strip():
                raise UserIdSourceError(
                    f"metadata key {key[:40]!r} must be 1-{MAX_METADATA_KEY_CHARS} characters, "
                    "no control characters and no surrounding spaces"
                )
            source = Source(METADATA, key)
        else:
            raise UserIdSourceError(f"unknown source {part[:40]!r}; use {EXTERNAL_ID}, {METADATA} or {METADATA}:<key>")
        if source in out:
            raise UserIdSourceError(f"lists {source.label[:60]!r} twice")
        out.append(source)
    if len(out) > MAX_SOURCES:
        raise UserIdSourceError(f"lists {len(out)} sources; at most {MAX_SOURCES} are allowed")
    return tuple(out)


def text_of(sources: tuple[Source, ...]) -> str:
    """The canonical text of `sources` (what is recorded on the topic): `externalId,metadata:userId`."""
    return ",".join(s.label for s in sources)


def is_valid_metadata_id(value: str) -> bool:
    """A user id taken from metadata: 1-64 printable characters, none of them a space."""
    return 0 < len(value) <= MAX_METADATA_ID_CHARS and all(ch.isprintable() and not ch.isspace() for ch in value)


@dataclass(frozen=True, slots=True)
class Found:
    """The user id a participant's event names: the id, the source it came from, and whether it is valid."""

    key: str
    source: str
    valid: bool


def _candidate(source: Source, external_id: str | None, metadata: dict[str, str], bare: str | None) -> Found | None:
    if source.kind == EXTERNAL_ID:
        if external_id is None:
            return None
        if EXTERNAL_ID_RE.match(external_id):
            return Found(external_id, source.label, True)
        return Found(external_id[:MAX_INVALID_EXTERNAL_ID_CHARS], source.label, False)
    value = bare if source.key is None else metadata.get(source.key)
    if value is None or value == "":
        return None
    if is_valid_metadata_id(value):
        return Found(value, source.label, True)
    return Found(value[:MAX_INVALID_METADATA_ID_CHARS], source.label, False)


def find(
    sources: tuple[Source, ...], external_id: str | None, metadata: dict[str, str], bare: str | None
) -> Found | None:
    """The user id of an event: the first valid one in `sources` order, else the first invalid one,
    else None. `bare` is the whole metadata text when it is neither JSON nor `k=v` (else None)."""
    first_invalid: Found | None = None
    for source in sources:
        found = _candidate(source, external_id, metadata, bare)
        if found is None:
            continue
        if found.valid:
            return found
        first_invalid = first_invalid or found
    return first_invalid
