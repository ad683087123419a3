"""Batching policy: what goes into one insert, when it is due, and its deduplication token. Pure.

A batch holds consumed Kafka records until it is full by rows or bytes, or old enough. It remembers
the next offset per partition, which is what gets committed once every row of the batch is either in
ClickHouse or on the dead-letter topic.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol

from pipeline.deadletters import SourceRecord

TopicPartitionKey = tuple[str, int]


class RecordLike(SourceRecord, Protocol):
    """What the sink reads of a consumed record (topic, partition, offset, key, value and these): a
    :class:`Record`, or aiokafka's ConsumerRecord as it comes (the hot path keeps those rather than
    copying each into a Record)."""

    @property
    def timestamp(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as much of it as the sink needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that goes to the dead-letter topic instead of ClickHouse; `reason` is a bounded code."""

    record: RecordLike
    reason: str
    detail: str


@dataclass(frozen=True)
class Limits:
    """When a batch is due: whichever of rows, bytes or age is reached first."""

    rows: int = 10_000
    bytes: int = 16 * 1024 * 1024
    seconds: float = 1.0


@dataclass
class Batch:
    """Records waiting for one flush, split by destination, and the offsets to commit after it."""

    started: float
    events: list[RecordLike] = field(default_factory=list)
    dimensions: list[RecordLike] = field(default_factory=list)
    # Raw-topic records (webhook bodies as received), for the raw archive.
    archive: list[RecordLike] = field(default_factory=list)
    # Records of the reconciliation topic (one per room session per reconcile run): few, converted to rows.
    reconciliations: list[RecordLike] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    next_offsets: dict[TopicPartitionKey, int] = field(default_factory=dict)
    rows: int = 0
    bytes: int = 0

    def track(self, record: RecordLike) -> None:
        """Count `record` as consumed: its offset is committed with this batch, whatever becomes of it."""
        self.next_offsets[(record.topic, record.partition)] = record.offset + 1
        self.rows += 1
        self.bytes += len(record.value or b"")

    def track_run(self, topic: str, partition: int, records: Sequence[RecordLike], size: int) -> None:
        """Count a run of consecutive records of one partition (as polled, in offset order) as consumed:
        the same as :meth:`track` on each, without a Python step per record. `size`: their value bytes."""
        if records:
            self.next_offsets[(topic, partition)] = records[-1].offset + 1
            self.rows += len(records)
            self.bytes += size

    def empty(self) -> bool:
        return not self.next_offsets

    def due(self, limits: Limits, now: float) -> bool:
        """True when the batch should be flushed now."""
        if self.empty():
            return False
        return self.rows >= limits.rows or self.bytes >= limits.bytes or now - self.started >= limits.seconds

    def full(self, limits: Limits) -> bool:
        """True when the batch must not grow any more (memory bound while the previous insert runs)."""
        return self.rows >= limits.rows or self.bytes >= limits.bytes


_PARTITION_OF = attrgetter("topic", "partition")
_OFFSET_OF = attrgetter("offset")


def token(table: str, records: Sequence[RecordLike]) -> str:
    """The insert deduplication token of `records` for `table`: same records, same token.

    Built from the topic/partition/offset range of each partition plus the row count, so a batch
    re-inserted after a crash between insert and commit (or a retry after a lost acknowledgement) is
    recognised by ClickHouse and dropped. Sub-batches made by splitting have their own ranges, hence
    their own tokens. Hashed when long, since a batch may span many partitions.
    """
    ranges: dict[TopicPartitionKey, list[int]] = {}
    # One Python step per run of records of the same partition (a batch is a few such runs), not per record.
    for tp, run in itertools.groupby(records, _PARTITION_OF):
        offsets = list(map(_OFFSET_OF, run))
        lo, hi = min(offsets), max(offsets)
        span = ranges.setdefault(tp, [lo, hi])
        span[0] = min(span[0], lo)
        span[1] = max(span[1], hi)
    parts = ",".join(f"{t}:{p}:{lo}-{hi}" for (t, p), (lo, hi) in sorted(ranges.items()))
    text = f"{table}|{len(records)}|{parts}"
    if len(text) <= 200:
        return text
    return f"{table}|{len(records)}|sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def halves(records: Sequence[RecordLike]) -> tuple[Sequence[RecordLike], Sequence[RecordLike]]:
    """Split a rejected batch in two contiguous halves (bisection isolates k bad rows in O(k log n) inserts)."""
    middle = len(records) // 2
    return records[:middle], records[middle:]
