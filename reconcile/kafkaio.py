"""Reconcile's Kafka edges, over `pipeline.kafka`: the registered prefixes from the dimensions topic, the
backfilled events onto the raw topic, the results onto the reconciliation topic.

Backfilled events are written exactly as ingest writes a webhook (key = roomName, the contract headers,
through `pipeline.contract.raw_record`) plus `HEADER_EVENT_SOURCE: insights`, so they flow through
enrichment and the sink like any webhook and stay recognisable as synthesized. The producer is the
contract's idempotent acks=all producer; `send_*` return once the broker acknowledged every record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType

from aiokafka import AIOKafkaProducer

from pipeline import contract, kafka
from pipeline.settings import ConfigError, Settings
from reconcile import results
from reconcile.backfill import SyntheticEvent
from reconcile.customers import Registry
from reconcile.report import Report


async def read_registry(settings: Settings, *, timeout_s: float = 60.0) -> Registry:
    """The registered customers' prefixes: the dimensions topic read from its start to its current end."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    registry = Registry()
    try:
        tps = await kafka.partitions_of(settings, settings.topic_dimensions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        async with asyncio.timeout(timeout_s):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if contract.version_failure(record.headers) is None:  # newer releases' records: unread
                            registry.apply(record.key, record.value)
    except TimeoutError:
        raise ConfigError(
            f"could not read the dimensions topic {settings.topic_dimensions!r} to its end within {timeout_s:.0f}s"
        ) from None
    finally:
        await consumer.stop()
    return registry


class Publisher:
    """Owns one producer for a run (or a long-running process). Use as `async with`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._instance = f"reconcile@{settings.instance_id}".encode()

    async def __aenter__(self) -> Publisher:
        producer = kafka.producer(self.settings)
        await producer.start()
        self._producer = producer
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):
                await producer.stop()

    async def send_events(self, events: Sequence[SyntheticEvent]) -> None:
        """Backfilled events onto the raw topic, as ingest writes webhooks, marked as from Insights."""
        assert self._producer is not None, "use Publisher as `async with`"
        received = contract.now_ms()
        sends = []
        for event in events:
            key, headers = contract.raw_record(
                event.room_name,
                event.event_id,
                event.event_type,
                received_at_ms=received,
                source=contract.SOURCE_INSIGHTS,
                instance=self._instance,
            )
            sends.append(await self._producer.send(self.settings.topic_raw, event.body, key=key, headers=headers))
        await asyncio.gather(*sends)

    async def send_results(self, report: Report) -> None:
        """The run's per-session results onto the reconciliation topic (key: roomSessionId)."""
        assert self._producer is not None, "use Publisher as `async with`"
        headers = contract.version_headers("reconcile")
        sends = [
            await self._producer.send(self.settings.topic_reconciliation, value, key=key, headers=list(headers))
            for key, value in results.records(report)
        ]
        await asyncio.gather(*sends)
