"""Consumer lag per partition (end offset - committed offset), as a Prometheus gauge shared by all stages.

Each replica reports only the partitions assigned to it, so `max by (stage, topic, partition)` over all
pods is the group's lag even while a rebalance briefly has two pods reporting one partition. Series of
partitions this process no longer owns are removed, so a revoked partition does not report a stale lag
forever. Partition numbers are a small bounded set, so they are fine as a label.

A stage starts `report_forever(consumer, "enrich")` as a task next to its poll loop and cancels it on stop.
The consumer must belong to a group (committed offsets are per group): aiokafka raises IllegalOperation
for a group-less one, and that programming error ends the task instead of being retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

log = logging.getLogger(__name__)

LAG = Gauge(
    "whereby_consumer_lag_records",
    "Records in a partition not yet committed by this consumer group (end offset - committed offset)",
    ["stage", "topic", "partition"],
)

# (stage, topic, partition) label tuples this process has set, so revoked partitions can be removed.
_reported: set[tuple[str, str, str]] = set()


def _labels(stage: str, tp: TopicPartition) -> tuple[str, str, str]:
    return (stage, tp.topic, str(tp.partition))


async def measure(
    consumer: AIOKafkaConsumer, stage: str, partitions: Iterable[TopicPartition] | None = None
) -> dict[TopicPartition, int]:
    """Lag of each assigned partition (or of `partitions`), set on the gauge and returned.

    A partition with no committed offset yet counts from its beginning offset, which is where a new
    group with auto_offset_reset=earliest starts reading.
    """
    owned = sorted(consumer.assignment() if partitions is None else partitions)
    if owned:
        ends = await consumer.end_offsets(owned)
        committed = await asyncio.gather(*(consumer.committed(tp) for tp in owned))
        missing = [tp for tp, offset in zip(owned, committed, strict=True) if offset is None]
        starts = await consumer.beginning_offsets(missing) if missing else {}
        lags = {
            tp: max(0, ends[tp] - (offset if offset is not None else starts[tp]))
            for tp, offset in zip(owned, committed, strict=True)
        }
    else:
        lags = {}
    current = {_labels(stage, tp) for tp in lags}
    for labels in {labels for labels in _reported if labels[0] == stage} - current:
        with contextlib.suppress(KeyError):
            LAG.remove(*labels)
        _reported.discard(labels)
    for tp, lag in lags.items():
        LAG.labels(*_labels(stage, tp)).set(lag)
    _reported.update(current)
    return lags


def forget(stage: str) -> None:
    """Remove every lag series of `stage` (call on stop: a stopped consumer owns no partitions)."""
    for labels in [labels for labels in _reported if labels[0] == stage]:
        with contextlib.suppress(KeyError):
            LAG.remove(*labels)
        _reported.discard(labels)


async def report_forever(consumer: AIOKafkaConsumer, stage: str, *, interval_s: float = 15.0) -> None:
    """Measure lag every `interval_s` until cancelled. Broker errors are logged and retried next round:
    a missing lag sample must never stop the stage."""
    try:
        while True:
            try:
                await measure(consumer, stage)
            except (KafkaError, OSError) as exc:
                log.warning(f"consumer lag not measured: {exc!r}", extra={"stage": stage})
            await asyncio.sleep(interval_s)
    finally:
        forget(stage)
