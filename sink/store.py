"""The ClickHouse connection and the versioned schema.

`CLICKHOUSE_URL` selects the engine: `chdb://<dir>` runs ClickHouse embedded in this process (one
process owns a data directory at a time); `http(s)://user:pass@host:8123` uses a server. The same SQL
runs on both. Schema files `schema/NNN_name.sql` are applied once each, in order, and recorded in
`schema_migrations`; every statement is idempotent (`IF NOT EXISTS`), so two sinks starting at once
cannot break each other.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from pipeline.settings import ConfigError

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def connect(url: str) -> Client:
    """Open a client for `url`; raises ConfigError with what to fix if it cannot."""
    try:
        if url.startswith("chdb://"):
            Path(url.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=url)
    except Exception as exc:
        raise ConfigError(f"cannot open ClickHouse at {_redact(url)}: {exc}; check CLICKHOUSE_URL") from None


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every schema file shipped with the sink, in order."""
    found = []
    for entry in resources.files("sink").joinpath("schema").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    return sorted(found)


def statements(sql: str, database: str) -> list[str]:
    """Split a schema file into statements and put the database name in."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip().replace("{db}", database) for s in body.split(";") if s.strip()]


def migrate(client: Client, database: str) -> list[str]:
    """Apply the schema files not yet recorded; returns the names applied now."""
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {row[0] for row in client.query(f"SELECT version FROM {database}.schema_migrations").result_rows}
        applied = []
        for version, name, sql in migrations():
            if version in done:
                continue
            for statement in statements(sql, database):
                client.command(statement)
            client.insert(f"{database}.schema_migrations", [[version, name]], column_names=["version", "name"])
            applied.append(name)
            log.info("schema migration applied", extra={"migration": name})
        return applied
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"ClickHouse schema migration failed: {exc}") from None


def query_dicts(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run a parameterised query and return rows as dicts (for tests, the CLI and the read API)."""
    result = client.query(sql, parameters=parameters or {})
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]
