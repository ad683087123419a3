"""Erasures applied to enriched records on their way into ClickHouse. Pure.

Enrich applies an erasure to every event it enriches after it read the erasure record, and the sink
rewrites what was stored before (:mod:`sink.forget`). Between the two, events that enrich had already
enriched with the person's name can still be on the enriched topic (enrich ran ahead of the sink, or an
enrich instance had not read the record yet). They would be stored after the sink's rewrite, with the
name: so every batch is checked here first.

The check costs one C-level regex pass over the batch (about 0.7 µs a record) and one SHA-256 per
distinct externalId in it, and nothing while no one has been erased. Only records whose externalId is
erased are decoded and rewritten, exactly as enrich would have written them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from pipeline.erasure import ErasureSet
from sink.batch import Record, RecordLike

# Every externalId value in a batch of enriched JSON (orjson writes `"key":"value"` without spaces). A value
# with an escape in it does not match: `forget` refuses ids with quotes or backslashes, so none is erased.
# The same key inside `metadata` matches too; the decoded record decides (see `_scrubbed`).
_EXTERNAL_ID = re.compile(rb'"external_id":"([^"\\]*)"')


def erased_values(values: Sequence[bytes], erasures: ErasureSet) -> dict[bytes, str]:
    """The erased externalIds (as JSON bytes) found in `values`, each with its pseudonym."""
    if not erasures or not values:
        return {}
    found: dict[bytes, str] = {}
    for raw in set(_EXTERNAL_ID.findall(b"\n".join(values))):
        pseudonym = erasures.pseudonym_for(raw.decode("utf-8", "replace"))
        if pseudonym is not None:
            found[raw] = pseudonym
    return found


def scrub(records: Sequence[RecordLike], erasures: ErasureSet) -> tuple[Sequence[RecordLike], int]:
    """`records` with every erased person's events rewritten (pseudonym, no name, no registered user),
    and how many were rewritten. The same sequence comes back untouched when nothing matched."""
    hits = erased_values([r.value or b"" for r in records], erasures)
    if not hits:
        return records, 0
    out: list[RecordLike] = []
    changed = 0
    for record in records:
        value = record.value or b""
        if any(b'"external_id":"' + raw + b'"' in value for raw in hits):
            rewritten = _scrubbed(value, erasures)
            if rewritten is not None:
                record = Record(record.topic, record.partition, record.offset, record.key, rewritten)
                changed += 1
        out.append(record)
    return out, changed


def _scrubbed(value: bytes, erasures: ErasureSet) -> bytes | None:
    """The record with its top-level externalId erased, or None when that id is not erased (the match was
    elsewhere, e.g. in `metadata`) or the record is not a JSON object (ClickHouse will refuse it anyway)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    external_id = doc.get("external_id") if isinstance(doc, dict) else None
    pseudonym = erasures.pseudonym_for(external_id) if isinstance(external_id, str) else None
    if pseudonym is None:
        return None
    doc.update(external_id=pseudonym, display_name=None, user_id=None, user_name=None, user_resolution="erased")
    return orjson.dumps(doc)
