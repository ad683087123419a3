"""Erasures applied to enriched records on their way into ClickHouse. Pure.

Enrich applies an erasure to every event it enriches after it read the erasure record, and the sink
rewrites what was stored before (:mod:`sink.forget`). Between the two, events that enrich had already
enriched with the person's name can still be on the enriched topic (enrich ran ahead of the sink, or an
enrich instance had not read the record yet). They would be stored after the sink's rewrite, with the
name: so every batch is checked here first.

The check costs C-level regex passes over the batch (about 0.7 µs a record for the ids) and one SHA-256
per distinct externalId, user key and metadata value in it, and nothing while no one has been erased.
Only records naming an erased person are decoded and rewritten, by the rule enrich applies
(`pipeline.erasure.erase_event`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import orjson

from pipeline.erasure import ErasureSet, erase_event
from sink.batch import Record, RecordLike

# Where an erased id can be in enriched JSON (orjson writes `"key":"value"` without spaces): the externalId,
# the user key (USER_ID_SOURCE may take it from metadata) and the metadata map's values. A value with an
# escape in it does not match: `forget` refuses ids with quotes or backslashes, so none is erased. The
# decoded record decides what is rewritten (`pipeline.erasure.erase_event`).
_ID = re.compile(rb'"(?:external_id|user_key)":"([^"\\]*)"')
_METADATA = re.compile(rb'"metadata":\{([^{}]+)\}')
_VALUE = re.compile(rb':"([^"\\]*)"')


def erased_values(values: Sequence[bytes], erasures: ErasureSet) -> dict[bytes, str]:
    """The erased ids (as JSON bytes) found in `values` (externalIds, user keys, metadata values), each
    with its pseudonym."""
    if not erasures or not values:
        return {}
    found: dict[bytes, str] = {}
    joined = b"\n".join(values)
    candidates = set(_ID.findall(joined))
    for inner in _METADATA.findall(joined):
        candidates.update(_VALUE.findall(inner))
    for raw in candidates:
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
        if any(b':"' + raw + b'"' in value for raw in hits):
            rewritten = _scrubbed(value, erasures)
            if rewritten is not None:
                record = Record(record.topic, record.partition, record.offset, record.key, rewritten)
                changed += 1
        out.append(record)
    return out, changed


def _scrubbed(value: bytes, erasures: ErasureSet) -> bytes | None:
    """The record with the erasure applied, or None when it names no erased person (the value matched
    elsewhere) or is not a JSON object (ClickHouse will refuse it anyway)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not erase_event(doc, erasures):
        return None
    return orjson.dumps(doc)
