"""`whereby-pipeline forget --external-id ID`: erase one person (or several) from everything downstream.

What it writes, on the dimensions topic, in this order (one producer, one partition, so in this order
for every reader):

1. a tombstone for `user:<externalId>` when that person is a registered user, so the compacted topic
   drops their record (name, e-mail) and the sink deletes its copy in `dim_users`;
2. an erasure record `erase:<sha256 of externalId>` → `{pseudonym, erased_at_ms}` (see
   :mod:`pipeline.erasure` for why the key is a digest and the pseudonym is keyed).

Enrich applies the erasure to every later event and to any replay; the sink rewrites what is already
stored (README, "Personal data"). Forgetting someone twice is harmless: the recorded pseudonym is reused,
so the second record changes nothing and the sink's rewrite finds nothing left to change.

Nothing personal is printed or logged: the output is a count.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import orjson

from enrich.dimensions import DimensionError, DimensionTable
from enrich.dimtopic import publish, read_dimensions
from pipeline import contract, erasure, kafka
from pipeline.dimensions import Erasure, validate_id
from pipeline.settings import ConfigError, Settings


def check_external_id(value: str) -> str:
    """An externalId `forget` can match: 1-200 printable characters without spaces, quotes or backslashes
    (Whereby allows only `A-Z a-z 0-9 - _`; the sink finds ids in enriched JSON without decoding escapes).
    Raises ConfigError without quoting the value (it is personal data)."""
    try:
        validate_id(value, "external_id")
    except DimensionError:
        raise ConfigError("--external-id must be 1-200 printable characters without spaces") from None
    if '"' in value or "\\" in value:
        raise ConfigError("--external-id cannot contain quotes or backslashes (Whereby never sends them)")
    return value


def erasure_records(
    table: DimensionTable, external_ids: Sequence[str], key: str, *, now_ms: int
) -> tuple[list[tuple[str, bytes | None]], int]:
    """The records that erase `external_ids` against the current `table`: (records in order, how many
    registered users they delete). An id erased before keeps its recorded pseudonym."""
    records: list[tuple[str, bytes | None]] = []
    users = 0
    for external_id in dict.fromkeys(external_ids):  # each person once, in the order given
        subject = erasure.subject(external_id)
        if external_id in table.users:
            records.append((contract.DIM_USER_PREFIX + external_id, None))
            users += 1
        pseudonym = table.erasures.pseudonym_of(subject) or erasure.pseudonym(external_id, key)
        record = Erasure(subject, pseudonym, now_ms)
        records.append((record.key, orjson.dumps(record.to_doc())))
    return records, users


async def forget(settings: Settings, external_ids: Sequence[str], *, out: TextIO = sys.stdout) -> int:
    """Record the erasure of each externalId on the dimensions topic; returns an exit code."""
    key = settings.require_erasure_key()
    ids = [check_external_id(value) for value in external_ids]
    if not ids:
        raise ConfigError("forget: give at least one --external-id")
    await kafka.prepare(settings)
    table, _ = await read_dimensions(settings)
    already = sum(1 for value in set(ids) if table.erasures.pseudonym_for(value) is not None)
    records, users = erasure_records(table, ids, key, now_ms=contract.now_ms())
    await publish(settings, records)
    people = len(set(ids))
    print(
        f"recorded the erasure of {people} person(s) on {settings.topic_dimensions} "
        f"({already} erased before; {users} registered user record(s) deleted). Enrich applies it to new events "
        "and replays at once; the sink rewrites the stored rows at its next flush. The raw topic and the raw "
        "archive keep the original webhooks until they age out (README, 'Personal data').",
        file=out,
    )
    return 0
