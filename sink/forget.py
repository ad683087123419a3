"""Applying an erasure to what is already stored: ClickHouse mutations, run by the sink's writer.

For one erased person (subject = SHA-256 of their externalId, and their pseudonym), every row whose
`external_id`, `user_key` or a `metadata` value hashes to the subject (USER_ID_SOURCE may take the id
from metadata) is rewritten in place, in every table that holds one:

| Table | Change |
|---|---|
| `events` | the id → pseudonym in `external_id`, `user_key`, `metadata` (then `metadata_raw` → NULL); (*) |
| `connection_rows` | the same (it has no `metadata_raw`), in every version of every row (superseded, deleted) |
| `connection_states` | (the release before 005; kept for a rollback) the packed `dims` state, likewise |
| `dim_users` | every row of that externalId deleted (the record, its older versions and its tombstone) |

(*) On the person's own rows (id or user key) also `display_name`, `user_id`, `user_name` → NULL and, in
`events`, `user_resolution` → `erased`; their id in someone else's metadata changes only that value.

`session_rows`, `reconciliation` and the dimension tables of customers hold no personal data;
`raw_archive` keeps the webhook bodies as received until its TTL removes them (README, "Personal
data"). Minutes, times, sessions and keys are never touched, so every count stays as it was, and the
pseudonym still counts as one user.

How: `ALTER TABLE … UPDATE/DELETE` with `mutations_sync = 2`, which rewrites the affected parts and
returns once they are written (the old parts are dropped by ClickHouse within minutes). The subject is
put in a temporary `Set` table (which nobody can SELECT from) and the mutations test
`hex(SHA256(external_id)) IN` it, so the mutation texts ClickHouse keeps (`system.mutations`) show the
pseudonym but never the subject beside it: nobody who can read system tables can link an id they
know to its pseudonym. On a cluster (CLICKHOUSE_CLUSTER) the mutations run `ON CLUSTER` on the
`_local` tables with the subject written into them, since a Set table is per node (documented).

The deriver is held off meanwhile (its lock), so it cannot write rows from events it read before the
rewrite. Every statement is idempotent: the writer runs this inside the flush whose offsets are
committed only afterwards, and a crash in between repeats it, changing nothing more.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from pipeline import erasure
from pipeline.dimensions import Erasure

SUBJECT_TABLE = "erasure_subject"
# Wait until the rewritten parts are written on every replica before the offsets are committed.
_SYNC = {"mutations_sync": 2}


@dataclass(frozen=True)
class Target:
    """One table to rewrite: its name and the mutation (`{match}`: the condition on the subject)."""

    table: str
    mutation: str


def _columns_update(pseudonym: str, *extra: tuple[str, str], raw: bool = False) -> str:
    """Rewrite every row naming the person, by the rule of `pipeline.erasure.erase_event`: their id as
    the `externalId`, as the user key (USER_ID_SOURCE may take it from metadata) or as a metadata value
    becomes the pseudonym (and the raw metadata text goes); on their own rows the names go too."""
    hit = "hex(SHA256({col})) {{match}}"
    own = f"({hit.format(col='external_id')} OR {hit.format(col='user_key')})"
    in_metadata = "arrayExists(v -> hex(SHA256(v)) {match}, mapValues(metadata))"
    sets = [
        f"external_id = if({hit.format(col='external_id')}, '{pseudonym}', external_id)",
        f"user_key = if({hit.format(col='user_key')}, '{pseudonym}', user_key)",
        f"metadata = mapApply((k, v) -> (k, if(hex(SHA256(v)) {{match}}, '{pseudonym}', v)), metadata)",
        *(f"{column} = if({own}, NULL, {column})" for column in ("display_name", "user_id", "user_name")),
        *([f"metadata_raw = if({in_metadata}, NULL, metadata_raw)"] if raw else []),
        *(f"{column} = if({own}, {value}, {column})" for column, value in extra),
    ]
    return f"UPDATE {', '.join(sets)} WHERE {own} OR {in_metadata}"


def targets(pseudonym: str) -> list[Target]:
    """The mutations that erase one person with `pseudonym` (its shape is checked, since it is inlined)."""
    if not erasure.is_pseudonym(pseudonym):
        raise ValueError("not a pseudonym")
    # The packed legacy state (002_aggregates.sql): fields 3, 4 and 5 are user_id, external_id and
    # display_name. The rewritten state gets the lowest key, and every row of the person is rewritten, so
    # whichever month wins the argMax of a connection, it is an erased one.
    legacy = (
        "UPDATE dims = arrayReduce('argMaxState', [arrayStringConcat(arrayMap((x, i) -> multiIf(i = 3, '', "
        f"i = 4, '={pseudonym}', i = 5, '', x), splitByChar('\\x1f', finalizeAggregation(dims)) AS d, "
        "arrayEnumerate(d)), '\\x1f')], [toUInt256(0)]) "
        "WHERE hex(SHA256(substring(splitByChar('\\x1f', finalizeAggregation(dims))[4], 2))) {match}"
    )
    return [
        Target("events", _columns_update(pseudonym, ("user_resolution", "'erased'"), raw=True)),
        Target("connection_rows", _columns_update(pseudonym)),
        Target("connection_states", legacy),
        Target("dim_users", "DELETE WHERE hex(SHA256(external_id)) {match}"),
    ]


def statements(database: str, record: Erasure, cluster: str = "") -> list[str]:
    """The mutations for one erasure. Single node: they read the subject from `SUBJECT_TABLE`, which
    the caller fills first. Cluster: on each node's `_local` tables, the subject written in."""
    if not erasure.SUBJECT_RE.match(record.subject):
        raise ValueError("not a subject digest")
    out = []
    for target in targets(record.pseudonym):
        if cluster:
            table = f"{database}.{target.table}_local ON CLUSTER '{cluster}'"
            match = f"= '{record.subject.upper()}'"
        else:
            table = f"{database}.{target.table}"
            match = f"IN {database}.{SUBJECT_TABLE}"
        out.append(f"ALTER TABLE {table} {target.mutation.replace('{match}', match)}")
    return out


class Forgetter:
    """Applies erasures to the stored rows of one database (blocking; run from the writer's thread)."""

    def __init__(self, client: Client, database: str, *, cluster: str = "", lock: threading.Lock | None = None) -> None:
        self.client = client
        self.db = database
        self.cluster = cluster
        # Shared with the deriver: no derivation runs while rows are rewritten.
        self.lock = lock or threading.Lock()

    def apply(self, records: Sequence[Erasure]) -> float:
        """Rewrite every stored row of each erased person; returns the seconds it took."""
        started = time.monotonic()
        with self.lock:
            for record in records:
                with self._subject(record):
                    for statement in statements(self.db, record, self.cluster):
                        self.client.command(statement, settings=_SYNC)
        return time.monotonic() - started

    @contextlib.contextmanager
    def _subject(self, record: Erasure) -> Iterator[None]:
        """The subject in a memory-only Set table for the statements (single node), dropped afterwards."""
        if self.cluster:
            yield
            return
        table = f"{self.db}.{SUBJECT_TABLE}"
        # Left over by a crash: its content is someone else's subject.
        self.client.command(f"DROP TABLE IF EXISTS {table}")
        self.client.command(f"CREATE TABLE {table} (subject String) ENGINE = Set SETTINGS persistent = 0")
        try:
            self.client.insert(table, [[record.subject.upper()]], column_names=["subject"])
            yield
        finally:
            self.client.command(f"DROP TABLE IF EXISTS {table}")
