"""pipeline.lag with a stand-in consumer: the arithmetic, the gauge and removal of revoked partitions."""

from __future__ import annotations

import asyncio
from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from pipeline import lag

T = "whereby.test.lag"


class FakeConsumer:
    """Answers the four calls `lag.measure` makes, from plain dicts."""

    def __init__(self, ends: dict[int, int], committed: dict[int, int | None], starts: dict[int, int]) -> None:
        self.owned = {TopicPartition(T, p) for p in ends}
        self.ends, self.commits, self.starts = ends, committed, starts
        self.fail = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.fail:
            raise KafkaConnectionError("broker gone")
        return {tp: self.ends[tp.partition] for tp in tps}

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.commits[tp.partition]

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.starts[tp.partition] for tp in tps}


def sample(stage: str, partition: int) -> float | None:
    labels = {"stage": stage, "topic": T, "partition": str(partition)}
    return REGISTRY.get_sample_value("whereby_consumer_lag_records", labels)


def consumer(fake: FakeConsumer) -> AIOKafkaConsumer:
    return cast(AIOKafkaConsumer, fake)


async def test_lag_is_end_minus_committed_or_beginning() -> None:
    fake = FakeConsumer(ends={0: 10, 1: 7, 2: 5}, committed={0: 4, 1: None, 2: 5}, starts={0: 0, 1: 2, 2: 0})
    lags = await lag.measure(consumer(fake), "unit-a")
    assert {tp.partition: n for tp, n in lags.items()} == {0: 6, 1: 5, 2: 0}
    assert (sample("unit-a", 0), sample("unit-a", 1), sample("unit-a", 2)) == (6, 5, 0)


async def test_revoked_partitions_stop_reporting() -> None:
    fake = FakeConsumer(ends={0: 3, 1: 3}, committed={0: 1, 1: 1}, starts={0: 0, 1: 0})
    await lag.measure(consumer(fake), "unit-b")
    fake.owned = {TopicPartition(T, 1)}
    await lag.measure(consumer(fake), "unit-b")
    assert sample("unit-b", 0) is None
    assert sample("unit-b", 1) == 2
    fake.owned = set()
    assert await lag.measure(consumer(fake), "unit-b") == {}
    assert sample("unit-b", 1) is None


async def test_report_forever_survives_broker_errors_and_forgets_on_cancel() -> None:
    fake = FakeConsumer(ends={0: 9}, committed={0: 4}, starts={0: 0})
    fake.fail = True
    task = asyncio.create_task(lag.report_forever(consumer(fake), "unit-c", interval_s=0.01))
    await asyncio.sleep(0.05)
    assert not task.done()  # a failed measurement is logged, not fatal
    fake.fail = False
    for _ in range(100):
        if sample("unit-c", 0) == 5:
            break
        await asyncio.sleep(0.01)
    assert sample("unit-c", 0) == 5
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sample("unit-c", 0) is None


def test_stages_do_not_touch_each_other() -> None:
    lag.LAG.labels("unit-d", T, "0").set(1)
    lag._reported.add(("unit-d", T, "0"))
    lag.forget("unit-e")
    assert sample("unit-d", 0) == 1
    lag.forget("unit-d")
    assert sample("unit-d", 0) is None
