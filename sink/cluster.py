"""The cluster variant of the schema, generated from the single-node SQL files by a rewrite step.

One source of truth: `sink/schema/NNN_*.sql` is written for one node. With `CLICKHOUSE_CLUSTER` set,
each statement is rewritten before it runs:

- `CREATE DATABASE`, `CREATE TABLE`, `CREATE VIEW`, `CREATE MATERIALIZED VIEW` get `ON CLUSTER '<c>'`.
- A `*MergeTree` table `T` becomes `T_local` with the `Replicated*MergeTree` engine (Keeper path
  `/clickhouse/tables/{shard}/<db>/T_local`, replica `{replica}`), plus a `Distributed` table `T` over
  it, sharded by the expression in the `-- cluster shard key: <expr>` comment just before the
  statement (`rand()` without one). `events` and its aggregates shard by `cityHash64(room_name)`: every
  event of a room, and every copy of the same event, lands on one shard, so deduplication and the
  aggregates stay shard-local.
- A materialized view reading a `*MergeTree` table reads its `_local` table and writes the `_local`
  target on the same node; one reading a table that stays as it is (the `Null` input table) writes the
  `Distributed` target, so an insert on any node is routed to the right shard.
- Views keep the names of the `Distributed` tables, so BI queries are the same on both variants.
- `ALTER TABLE` runs on the `_local` table and on its `Distributed` table (both need a new column);
  `DROP` and `CREATE OR REPLACE VIEW` get `ON CLUSTER`; an `INSERT … SELECT` (a data migration) runs as
  written on one node, reading and writing the `Distributed` tables.

Pure string rewriting, no I/O: unit-tested, and the output is checked to parse on the embedded engine.
"""

from __future__ import annotations

import re

SHARD_HINT = re.compile(r"^\s*--\s*cluster shard key:\s*(.+?)\s*$", re.MULTILINE)
_CREATE_DB = re.compile(r"^CREATE DATABASE IF NOT EXISTS (\S+)", re.IGNORECASE)
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+)", re.IGNORECASE)
_CREATE_MV = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+)\.(\w+) TO (\w+)\.(\w+)(.*?)\bFROM (\w+)\.(\w+)",
    re.IGNORECASE | re.DOTALL,
)
_CREATE_VIEW = re.compile(r"^CREATE (?:OR REPLACE )?VIEW (?:IF NOT EXISTS )?(\w+)\.(\w+)", re.IGNORECASE)
_ALTER_TABLE = re.compile(r"^ALTER TABLE (\w+)\.(\w+)", re.IGNORECASE)
_DROP = re.compile(r"^DROP (?:TABLE|VIEW) IF EXISTS (\w+)\.(\w+)", re.IGNORECASE)
_INSERT = re.compile(r"^INSERT INTO ", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(\w*)MergeTree\s*(?:\(([^()]*)\))?", re.IGNORECASE)
_DEDUP_WINDOW = re.compile(r"\s*SETTINGS\s+non_replicated_deduplication_window\s*=\s*\d+\s*$", re.IGNORECASE)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ClusterRewriter:
    """Rewrites single-node statements for a cluster; remembers which tables became `_local`."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.on_cluster = f"ON CLUSTER {_quote(cluster)}"
        self.replicated: set[tuple[str, str]] = set()

    def rewrite(self, statement: str, shard_key: str | None = None) -> list[str]:
        """The cluster statements for one single-node statement (one or two of them)."""
        statement = statement.strip()
        if match := _CREATE_DB.match(statement):
            return [f"{match.group(0)} {self.on_cluster}{statement[match.end() :]}"]
        if match := _CREATE_TABLE.match(statement):
            return self._table(statement, match, shard_key)
        if match := _CREATE_MV.match(statement):
            return [self._materialized_view(statement, match)]
        if match := _CREATE_VIEW.match(statement):
            return [f"{match.group(0)} {self.on_cluster}{statement[match.end() :]}"]
        if match := _ALTER_TABLE.match(statement):
            db, name = match.groups()
            rest = statement[match.end() :]
            out = [f"ALTER TABLE {db}.{name}_local {self.on_cluster}{rest}"] if (db, name) in self.replicated else []
            return [*out, f"ALTER TABLE {db}.{name} {self.on_cluster}{rest}"]
        if match := _DROP.match(statement):
            return [f"{match.group(0)} {self.on_cluster}{statement[match.end() :]}"]
        if _INSERT.match(statement):
            return [statement]
        raise ValueError(f"no cluster rewrite for statement: {statement[:80]!r}")

    def _table(self, statement: str, match: re.Match[str], shard_key: str | None) -> list[str]:
        db, name = match.group(1), match.group(2)
        engine = _ENGINE.search(statement)
        if engine is None:  # Null and other non-replicated engines: the same table on every node
            return [f"{match.group(0)} {self.on_cluster}{statement[match.end() :]}"]
        local = f"{name}_local"
        args = [_quote(f"/clickhouse/tables/{{shard}}/{db}/{local}"), "'{replica}'"]
        if engine.group(2) and engine.group(2).strip():
            args.append(engine.group(2).strip())
        body = statement[match.end() : engine.start()]
        rest = _DEDUP_WINDOW.sub("", statement[engine.end() :])  # Keeper deduplicates replicated inserts
        self.replicated.add((db, name))
        return [
            f"CREATE TABLE IF NOT EXISTS {db}.{local} {self.on_cluster}{body}"
            f"ENGINE = Replicated{engine.group(1)}MergeTree({', '.join(args)}){rest}",
            f"CREATE TABLE IF NOT EXISTS {db}.{name} {self.on_cluster} AS {db}.{local} "
            f"ENGINE = Distributed({_quote(self.cluster)}, {db}, {local}, {shard_key or 'rand()'})",
        ]

    def _materialized_view(self, statement: str, match: re.Match[str]) -> str:
        db, name, to_db, to_name, middle, from_db, from_name = match.groups()
        if (from_db, from_name) in self.replicated:
            source, target = f"{from_db}.{from_name}_local", f"{to_db}.{to_name}_local"
        else:
            source, target = f"{from_db}.{from_name}", f"{to_db}.{to_name}"
        head = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name} {self.on_cluster} TO {target}{middle}FROM {source}"
        return head + statement[match.end() :]
