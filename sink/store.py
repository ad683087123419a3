"""The ClickHouse connection and the versioned schema.

`CLICKHOUSE_URL` selects the engine: `chdb://<dir>` runs ClickHouse embedded in this process (one
process owns a data directory at a time); `http(s)://user:pass@host:8123` uses a server. The same SQL
runs on both. Schema files `schema/NNN_name.sql` are applied once each, in order, and recorded in
`schema_migrations` with a checksum of the file. Every statement is idempotent (`IF NOT EXISTS`), and
"already exists" answers are accepted, so two sinks starting at once cannot break each other: at worst
both apply a file and both record it, and the ReplacingMergeTree keeps one row per version. With
`CLICKHOUSE_CLUSTER` set, the same files are rewritten for a cluster (see :mod:`sink.cluster`).

An applied migration is never edited: start-up compares each recorded checksum with the shipped file
and refuses a changed one with a one-line message. Files applied by a release that recorded no
checksum (before 005) get theirs recorded on the first start of this one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from pipeline.security import ClickHouseAccess
from pipeline.settings import ConfigError
from sink.cluster import SHARD_HINT, ClusterRewriter

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# TABLE_ALREADY_EXISTS, DATABASE_ALREADY_EXISTS: another sink won the race to create it.
_ALREADY_EXISTS = {57, 82}

MIGRATIONS_TABLE = """
-- cluster shard key: version
CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


CHECKSUM_COLUMN = """
ALTER TABLE {db}.schema_migrations ADD COLUMN IF NOT EXISTS checksum String DEFAULT ''
"""


def connect(url: str, access: ClickHouseAccess | None = None) -> Client:
    """Open a client for `url` (with separate credentials and TLS trust from `access`, if given).

    Raises ConfigError with what to fix if it cannot.
    """
    try:
        if url.startswith("chdb://"):
            Path(url.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(**(access or ClickHouseAccess()).connect_kwargs(url))
    except Exception as exc:
        raise ConfigError(f"cannot open ClickHouse at {_redact(url)}: {exc}; check CLICKHOUSE_URL") from None


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def checksum(sql: str) -> str:
    """The recorded fingerprint of a migration file (sha256 of its text)."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every schema file shipped with the sink, in order."""
    found = []
    for entry in resources.files("sink").joinpath("schema").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def check_database(database: str) -> None:
    """Refuse a CLICKHOUSE_DATABASE that cannot be put into the schema's statements as it is."""
    if not _DATABASE_NAME.match(database):
        raise ConfigError(f"CLICKHOUSE_DATABASE must be a plain identifier, got {database!r}")


def split(sql: str, database: str) -> list[tuple[str, str | None]]:
    """Split a schema file into (statement, shard key hint) pairs with the database name put in."""
    check_database(database)
    # Comments go before splitting (they may hold a ';'); shard key hints stay, to be read per statement.
    kept = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--") or SHARD_HINT.match(line))
    out = []
    for chunk in kept.split(";"):
        hint = SHARD_HINT.search(chunk)
        body = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--")).strip()
        if body:
            out.append((body.replace("{db}", database), hint.group(1) if hint else None))
    return out


def statements(sql: str, database: str, cluster: str = "", rewriter: ClusterRewriter | None = None) -> list[str]:
    """The statements to run for one schema file: as written, or rewritten for `cluster`."""
    pairs = split(sql, database)
    if not cluster:
        return [statement for statement, _ in pairs]
    rewriter = rewriter or ClusterRewriter(cluster)
    return [out for statement, hint in pairs for out in rewriter.rewrite(statement, hint)]


def schema_statements(database: str, cluster: str = "") -> list[tuple[int, str, list[str]]]:
    """Every migration as (version, name, statements), for one node or rewritten for a cluster."""
    rewriter = ClusterRewriter(cluster) if cluster else None
    return [(version, name, statements(sql, database, cluster, rewriter)) for version, name, sql in migrations()]


def _run(client: Client, statement: str) -> None:
    try:
        client.command(statement)
    except Exception as exc:
        if getattr(exc, "code", None) not in _ALREADY_EXISTS:
            raise


def migrate(client: Client, database: str, cluster: str = "") -> list[str]:
    """Apply the schema files not yet recorded; returns the names applied now."""
    try:
        rewriter = ClusterRewriter(cluster) if cluster else None
        on_cluster = f" ON CLUSTER '{cluster}'" if cluster else ""
        _run(client, f"CREATE DATABASE IF NOT EXISTS {database}{on_cluster}")
        for statement in statements(MIGRATIONS_TABLE, database, cluster, rewriter):
            _run(client, statement)
        # Added after the first release: its rows (the files it applied) have an empty checksum.
        for statement in statements(CHECKSUM_COLUMN, database, cluster, rewriter):
            _run(client, statement)
        done = {
            int(version): str(recorded)
            for version, recorded in client.query(
                f"SELECT version, argMax(checksum, applied_at) FROM {database}.schema_migrations GROUP BY version"
            ).result_rows
        }
        record = {"distributed_foreground_insert": 1} if cluster else None
        applied = []
        for version, name, sql in migrations():
            # Always rewritten (even when skipped) so the rewriter knows which tables became _local.
            todo = statements(sql, database, cluster, rewriter)
            if version in done:
                if not done[version]:  # applied by a release that recorded no checksum: trust it now
                    client.insert(
                        f"{database}.schema_migrations",
                        [[version, name, checksum(sql)]],
                        column_names=["version", "name", "checksum"],
                        settings=record,
                    )
                elif done[version] != checksum(sql):
                    raise ConfigError(
                        f"schema file {name} was changed after it was applied to {database} (checksum "
                        f"{done[version][:12]}, file {checksum(sql)[:12]}): restore it and put the change "
                        "in a new numbered file"
                    )
                continue
            for statement in todo:
                _run(client, statement)
            client.insert(
                f"{database}.schema_migrations",
                [[version, name, checksum(sql)]],
                column_names=["version", "name", "checksum"],
                settings=record,
            )
            applied.append(name)
            log.info("schema migration applied", extra={"migration": name})
        return applied
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"ClickHouse schema migration failed: {exc}") from None


def read_settings(timeout_s: float) -> dict[str, Any]:
    """Query settings for every read the read API and the report make: read-only, bounded in time.

    `readonly=1` refuses anything but reading, including changing settings from the query; the
    settings given here are applied together with it, so they still take effect. It does not get in the
    way of parameterised queries: `{name:Type}` values are bound as query parameters, not settings
    (readonly=2, which also lets a query change settings, would only be needed if it did).
    `max_execution_time` makes the server stop a query that runs longer (error 159, TIMEOUT_EXCEEDED).

    Only for SELECTs: the embedded engine applies a SETTINGS clause of a statement such as CREATE to the
    whole session, which the sink's writer shares, so a non-SELECT must never carry these.
    """
    return {"readonly": 1, "max_execution_time": max(1, round(timeout_s))}


def query_dicts(
    client: Client, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run a parameterised query and return rows as dicts (for tests, the CLI and the read API)."""
    result = client.query(sql, parameters=parameters or {}, settings=settings)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
