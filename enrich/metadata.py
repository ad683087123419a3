"""Parsing of the participant `metadata` string (shared reference §3).

Whereby passes the raw `metadata` URL parameter through, and the end user's browser controls it. Companies
put either a JSON object or a query-string (`k=v&k2=v2`) in it; anything else is kept raw, never
rejected: the event is enriched and counted whatever its metadata holds.

Metadata that cannot be used as a map becomes raw text with an empty map (form `raw`): not JSON, not an
object, or an object nested deeper than orjson can write back (its values are kept as JSON text). The
map is bounded, so a hostile value cannot make every later query on it expensive:

- at most `MAX_KEYS` (32) entries, the first ones in the order given;
- keys of at most `MAX_KEY_CHARS` (64) characters; an entry with a longer key is left out (cutting keys
  could merge two of them);
- values of at most `MAX_VALUE_CHARS` (256) characters; longer ones are cut to that length.

The text is read up to `MAX_METADATA_CHARS` (4,096); `metadata_raw` on the enriched event keeps all of it.
Whereby documented 512 characters after decoding, so real metadata is never cut.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import islice
from urllib.parse import parse_qsl

import orjson

MAX_METADATA_CHARS = 4096
MAX_KEYS = 32
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 256
# Whereby documented 512 characters; longer values are parsed every time so the cache stays small.
MAX_CACHED_CHARS = 1024


def _scalar(value: object) -> str:
    """A JSON value as map text: strings as they are, anything else as compact JSON (orjson.JSONEncodeError
    if it is nested deeper than orjson writes)."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text[:MAX_VALUE_CHARS]


def _bounded(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The first MAX_KEYS entries with a key of at most MAX_KEY_CHARS characters, values cut to MAX_VALUE_CHARS."""
    kept = ((k, v[:MAX_VALUE_CHARS]) for k, v in pairs if len(k) <= MAX_KEY_CHARS)
    return dict(islice(kept, MAX_KEYS))


def parse_metadata(raw: str | None) -> tuple[dict[str, str], str]:
    """Return (attributes, form) where form is `none`, `json`, `query` or `raw`. Never raises."""
    if raw is None:
        return {}, "none"
    if len(raw) > MAX_CACHED_CHARS:
        return _parse.__wrapped__(raw)
    # A participant sends the same metadata on every event; the parse is cached, the dict copied.
    attributes, form = _parse(raw)
    return dict(attributes), form


@lru_cache(maxsize=16_384)
def _parse(raw: str) -> tuple[dict[str, str], str]:
    if not raw.strip():
        return {}, "none"
    text = raw.strip()[:MAX_METADATA_CHARS]
    if text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:  # also deeper than orjson reads (1,024 levels)
            return {}, "raw"
        if not isinstance(doc, dict):
            return {}, "raw"
        try:
            # Every value is converted (not only the first MAX_KEYS): a map that is fine in its first
            # entries but unusable further on is still unusable, whatever the order of its keys.
            return _bounded([(k, _scalar(v)) for k, v in doc.items()]), "json"
        except orjson.JSONEncodeError:  # a value nested deeper than orjson writes (254 levels)
            return {}, "raw"
    if "=" in text:
        pairs = parse_qsl(text, keep_blank_values=True)
        if pairs and all(k for k, _ in pairs):
            return _bounded(pairs), "query"
    return {}, "raw"
