"""Consumer-group rebalances as metrics: how often a stage's partitions were handed out anew, and how
many this process holds now.

Several instances of a stage share one group, so every scale step, crash and restart makes the group
rebalance: partitions stop moving for a moment and records in flight may be consumed again by their new
owner (duplicates that the sink removes by event id). A rebalance count that keeps rising without a
deploy is a crash loop or a consumer too slow for its poll interval.

Wrap a stage's listener: `consumer.subscribe(topics, listener=rebalance.Counted("enrich", listener))`.
"""

from __future__ import annotations

from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import Counter, Gauge

REBALANCES = Counter(
    "whereby_consumer_rebalances_total",
    "Group rebalances this process took part in (each assignment it received, the first join included)",
    ["stage"],
)
ASSIGNED = Gauge("whereby_consumer_assigned_partitions", "Partitions assigned to this process now", ["stage"])


class Counted(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts assignments, then hands each callback to the stage's own listener unchanged."""

    def __init__(self, stage: str, inner: ConsumerRebalanceListener | None = None) -> None:
        self._stage = stage
        self._inner = inner
        REBALANCES.labels(stage)  # the series exists at zero before the first join
        ASSIGNED.labels(stage).set(0)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self._inner is not None:
            await self._inner.on_partitions_revoked(revoked)
        ASSIGNED.labels(self._stage).set(0)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        REBALANCES.labels(self._stage).inc()
        ASSIGNED.labels(self._stage).set(len(assigned))
        if self._inner is not None:
            await self._inner.on_partitions_assigned(assigned)
