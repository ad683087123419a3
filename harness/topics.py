"""Reading a topic back, to check what a stage wrote."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from pipeline import kafka
from pipeline.settings import Settings


async def read_topic(
    settings: Settings, topic: str, *, expect: int, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the beginning until `expect` records arrived (or the timeout)."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(out) < expect and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def topic_record_count(settings: Settings, topic: str) -> int:
    """How many records `topic` holds (sum of end offsets): exact at once, no waiting for a timeout.

    Only meaningful for topics written without transactions (no control records), as all of ours are.
    """
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, topic)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        return sum(end[tp] - begin[tp] for tp in tps)
    finally:
        await consumer.stop()
