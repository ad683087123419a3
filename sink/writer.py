"""Writing one batch to ClickHouse: one insert per table with its deduplication token, splitting a
rejected batch to isolate the bad rows.

`write_split` is pure logic around an injected `insert` function, so the split-and-isolate policy is
unit-tested with a fake; :class:`ClickHouseWriter` supplies the real inserts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from sink import metrics
from sink.batch import Batch, DeadLetter, RecordLike, halves, token
from sink.errors import Failure, classify
from sink.reconciliation_rows import RECONCILIATION_COLUMNS, RECONCILIATION_TABLE, reconciliation_row
from sink.rows import (
    ARCHIVE_COLUMNS,
    ARCHIVE_TABLE,
    CUSTOMER_COLUMNS,
    CUSTOMERS_TABLE,
    USER_COLUMNS,
    USERS_TABLE,
    BadRow,
    archive_row,
    dimension_row,
)

EVENTS_INPUT = "events_input"

InsertFn = Callable[[Sequence[RecordLike], str], None]


class RetryLater(Exception):
    """ClickHouse cannot take the batch right now; keep it, back off and try again."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


class FatalInsertError(Exception):
    """Neither retrying nor dead-lettering can help; the stage must stop without committing."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"ClickHouse insert failed: {failure.detail}")
        self.failure = failure


@dataclass
class Outcome:
    """What became of a batch's rows."""

    inserted: int = 0
    inserts: int = 0
    rejected: list[DeadLetter] = field(default_factory=list)
    # Valid dimension records of a kind with no table here (e.g. `config:` settings): taken, not inserted.
    skipped: int = 0


def write_split(table: str, records: Sequence[RecordLike], insert: InsertFn) -> Outcome:
    """Insert `records`; when ClickHouse rejects the data, bisect until each bad record is alone.

    Raises RetryLater for a retriable failure (even half-way: the halves already inserted carry
    their own tokens, so the retry does not duplicate them) and FatalInsertError for a fatal one.
    """
    outcome = Outcome()
    pending: list[Sequence[RecordLike]] = [records] if records else []
    while pending:
        part = pending.pop()
        try:
            insert(part, token(table, part))
            outcome.inserts += 1
            outcome.inserted += len(part)
        except Exception as exc:
            outcome.inserts += 1
            failure = classify(exc)
            if failure.kind == "retriable":
                raise RetryLater(failure) from exc
            if failure.kind == "fatal":
                raise FatalInsertError(failure) from exc
            if len(part) == 1:
                outcome.rejected.append(DeadLetter(part[0], "rejected_by_clickhouse", failure.detail))
            else:
                left, right = halves(part)
                pending.extend((right, left))  # left first: keeps inserts in offset order
    return outcome


class ClickHouseWriter:
    """The real inserts: enriched JSON into `events_input`, dimension rows into their tables."""

    def __init__(self, client: Client, database: str, *, cluster: bool = False) -> None:
        self.client = client
        self.db = database
        self.settings: dict[str, Any] = {
            # Apply the token to the tables the materialized views write, too: a re-sent batch then
            # changes neither `events` nor the aggregates (which are idempotent anyway).
            "deduplicate_blocks_in_dependent_materialized_views": 1,
            "input_format_skip_unknown_fields": 1,
            # A batch normally spans one or two months; a replay of history may span more.
            "throw_on_max_partitions_per_insert_block": 0,
        }
        if cluster:
            # Acknowledge only once the Distributed table has written to the shards.
            self.settings["distributed_foreground_insert"] = 1

    def _insert_events(self, records: Sequence[RecordLike], dedup_token: str) -> None:
        body = b"\n".join([r.value or b"" for r in records])
        started = time.monotonic()
        self.client.raw_insert(
            f"{self.db}.{EVENTS_INPUT}",
            None,
            body,
            settings={**self.settings, "insert_deduplication_token": dedup_token},
            fmt="JSONEachRow",
        )
        metrics.INSERT_SECONDS.labels("events").observe(time.monotonic() - started)

    def _insert_archive(self, records: Sequence[RecordLike], dedup_token: str) -> None:
        started = time.monotonic()
        self.client.insert(
            f"{self.db}.{ARCHIVE_TABLE}",
            [archive_row(r) for r in records],
            column_names=list(ARCHIVE_COLUMNS),
            settings={**self.settings, "insert_deduplication_token": dedup_token},
        )
        metrics.INSERT_SECONDS.labels("archive").observe(time.monotonic() - started)

    def _dimension_insert(self, table: str, rows: dict[int, list[Any]]) -> InsertFn:
        columns = CUSTOMER_COLUMNS if table == CUSTOMERS_TABLE else USER_COLUMNS

        def insert(records: Sequence[RecordLike], dedup_token: str) -> None:
            started = time.monotonic()
            self.client.insert(
                f"{self.db}.{table}",
                [rows[r.offset] for r in records],
                column_names=columns,
                settings={**self.settings, "insert_deduplication_token": dedup_token},
            )
            metrics.INSERT_SECONDS.labels("dimensions").observe(time.monotonic() - started)

        return insert

    def _reconciliation_insert(self, rows: dict[tuple[int, int], list[Any]]) -> InsertFn:
        def insert(records: Sequence[RecordLike], dedup_token: str) -> None:
            started = time.monotonic()
            self.client.insert(
                f"{self.db}.{RECONCILIATION_TABLE}",
                [rows[(r.partition, r.offset)] for r in records],
                column_names=RECONCILIATION_COLUMNS,
                settings={**self.settings, "insert_deduplication_token": dedup_token},
            )
            metrics.INSERT_SECONDS.labels("reconciliation").observe(time.monotonic() - started)

        return insert

    def _reconciliation_part(self, batch: Batch, total: Outcome) -> tuple[str, list[RecordLike], InsertFn]:
        """Reconciliation records as rows (bad ones rejected into `total`), with their insert."""
        records: list[RecordLike] = []
        rows: dict[tuple[int, int], list[Any]] = {}
        for record in batch.reconciliations:
            try:
                rows[(record.partition, record.offset)] = reconciliation_row(record.value)
            except BadRow as exc:
                total.rejected.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            records.append(record)
        return RECONCILIATION_TABLE, records, self._reconciliation_insert(rows)

    def write(self, batch: Batch) -> Outcome:
        """Insert everything of `batch` (blocking); returns what was inserted and what was rejected."""
        total = Outcome()
        by_table: dict[str, list[RecordLike]] = {CUSTOMERS_TABLE: [], USERS_TABLE: []}
        rows: dict[str, dict[int, list[Any]]] = {CUSTOMERS_TABLE: {}, USERS_TABLE: {}}
        for record in batch.dimensions:
            try:
                found = dimension_row(record.key, record.value, record.offset)
            except BadRow as exc:
                total.rejected.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            except Exception as exc:
                # A bug must not stop the sink on this record at every restart: dead-letter it like an
                # invalid one (the type only in the detail's head; the record itself is in the bad row).
                total.rejected.append(DeadLetter(record, "internal_error", f"{type(exc).__name__}: {exc}"))
                continue
            if found is None:
                total.skipped += 1  # a valid kind of record that has no table here
                continue
            table, row = found
            by_table[table].append(record)
            rows[table][record.offset] = row
        parts = [(table, recs, self._dimension_insert(table, rows[table])) for table, recs in by_table.items()]
        parts.append((ARCHIVE_TABLE, batch.archive, self._insert_archive))
        parts.append(self._reconciliation_part(batch, total))
        parts.append((EVENTS_INPUT, batch.events, self._insert_events))
        for table, records, insert in parts:
            outcome = write_split(table, records, insert)
            total.inserted += outcome.inserted
            total.inserts += outcome.inserts
            total.rejected.extend(outcome.rejected)
        return total
