"""pipeline.lag against the real broker: produced, partly committed, measured."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from pipeline import kafka, lag
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


async def test_lag_per_partition_on_a_real_broker(settings: Settings) -> None:
    topic = settings.topic_raw  # created with 3 partitions by the fixture
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for partition, count in ((0, 5), (1, 3)):
            for i in range(count):
                await producer.send_and_wait(topic, f"r{i}".encode(), partition=partition)
    finally:
        await producer.stop()

    consumer = kafka.consumer(settings, group_id=settings.sink_group)
    tps = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(tps)
    await consumer.start()
    try:
        await consumer.commit({tps[0]: OffsetAndMetadata(2, "")})
        lags = await lag.measure(consumer, "it")
        assert {tp.partition: n for tp, n in lags.items()} == {0: 3, 1: 3, 2: 0}
    finally:
        await consumer.stop()
        lag.forget("it")
