"""pipeline.rebalance.Counted: counts assignments and passes every callback on to the stage's listener."""

from __future__ import annotations

from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client import REGISTRY

from pipeline.rebalance import Counted


class Recorder(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[TopicPartition]]] = []

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.calls.append(("revoked", revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.calls.append(("assigned", assigned))


def value(name: str, stage: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stage": stage})


async def test_counts_each_assignment_and_forwards_in_order() -> None:
    inner = Recorder()
    listener = Counted("unit-rebalance", inner)
    assert value("whereby_consumer_rebalances_total", "unit-rebalance") == 0  # exists before the first join
    tps = [TopicPartition("t", 0), TopicPartition("t", 1)]
    await listener.on_partitions_revoked([])
    await listener.on_partitions_assigned(tps)
    assert value("whereby_consumer_assigned_partitions", "unit-rebalance") == 2
    await listener.on_partitions_revoked(tps)
    assert value("whereby_consumer_assigned_partitions", "unit-rebalance") == 0
    await listener.on_partitions_assigned(tps[:1])
    assert value("whereby_consumer_rebalances_total", "unit-rebalance") == 2
    assert value("whereby_consumer_assigned_partitions", "unit-rebalance") == 1
    assert [c[0] for c in inner.calls] == ["revoked", "assigned", "revoked", "assigned"]


async def test_works_without_an_inner_listener() -> None:
    listener = Counted("unit-rebalance-bare")
    await listener.on_partitions_assigned([TopicPartition("t", 0)])
    assert value("whereby_consumer_rebalances_total", "unit-rebalance-bare") == 1
