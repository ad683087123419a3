"""Parsing of the participant `metadata` string (shared reference §3).

Whereby passes the raw `metadata` URL parameter through. Companies put either a JSON object or a
query-string (`k=v&k2=v2`) in it; anything else is kept raw, never rejected.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl

import orjson

MAX_METADATA_CHARS = 4096
# Whereby documented 512 characters; longer values are parsed every time so the cache stays small.
MAX_CACHED_CHARS = 1024


def _scalar(value: object) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def parse_metadata(raw: str | None) -> tuple[dict[str, str], str]:
    """Return (attributes, form) where form is `none`, `json`, `query` or `raw`."""
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
        except orjson.JSONDecodeError:
            return {}, "raw"
        if isinstance(doc, dict):
            return {str(k): _scalar(v) for k, v in doc.items()}, "json"
        return {}, "raw"
    if "=" in text:
        pairs = parse_qsl(text, keep_blank_values=True)
        if pairs and all(k for k, _ in pairs):
            return dict(pairs), "query"
    return {}, "raw"
