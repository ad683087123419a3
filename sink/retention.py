"""How long the raw archive keeps webhook bodies: RAW_ARCHIVE_RETENTION_DAYS, set as a TTL at sink start.

`raw_archive` holds every accepted body exactly as Whereby sent it (so `replay` can re-enrich history the
raw topic no longer holds), display names and externalIds included, and `forget` does not rewrite it: an
erased person's original webhooks stay there until this TTL removes them (README, "Personal data").

A setting rather than a migration, since operators choose it: at every start the sink compares the
table's TTL with the setting and changes it only when they differ (changing it rewrites the table's
parts once, dropping what is already older). 0 removes the TTL: bodies are kept forever.
"""

from __future__ import annotations

import logging
import re

from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

ARCHIVE = "raw_archive"
_TTL_DAYS = re.compile(r"\bTTL toDateTime\(received_at\) \+ toIntervalDay\((\d+)\)")


def current_days(engine_full: str) -> int | None:
    """The archive TTL in days as ClickHouse shows it in `system.tables.engine_full`, or None for none."""
    match = _TTL_DAYS.search(engine_full)
    return int(match.group(1)) if match else None


def statement(database: str, days: int, cluster: str = "") -> str:
    """The ALTER that sets the archive's TTL to `days` (0: removes it), on the `_local` tables of a cluster."""
    table = f"{database}.{ARCHIVE}_local ON CLUSTER '{cluster}'" if cluster else f"{database}.{ARCHIVE}"
    if days == 0:
        return f"ALTER TABLE {table} REMOVE TTL"
    return f"ALTER TABLE {table} MODIFY TTL toDateTime(received_at) + INTERVAL {int(days)} DAY"


def apply_archive_retention(client: Client, database: str, days: int, cluster: str = "") -> bool:
    """Make the archive's TTL `days` (blocking); returns True when it had to be changed."""
    name = f"{ARCHIVE}_local" if cluster else ARCHIVE
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {name:String}",
        parameters={"db": database, "name": name},
    ).result_rows
    have = current_days(str(rows[0][0])) if rows else None
    if have == (days or None):
        return False
    client.command(statement(database, days, cluster))
    log.info(
        f"raw archive retention set to {days} days" if days else "raw archive retention removed (kept forever)",
        extra={"previous_days": have},
    )
    return True
