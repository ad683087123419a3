"""The enrich stage: raw topic → enriched topic (and dead-letter topic), with live dimensions.

Delivery is at-least-once: each polled batch is enriched, every produce is started without awaiting
it individually, all acknowledgements are awaited together, and only then are the batch's offsets
committed. A crash in between re-enriches the batch; the sink removes the duplicates by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge

from enrich.dimensions import DimensionError, DimensionTable
from enrich.enricher import BadEvent, enrich
from pipeline import contract, kafka
from pipeline.settings import Settings

log = logging.getLogger(__name__)

EVENTS = Counter("whereby_enrich_events_total", "Raw events processed, by outcome", ["outcome"])
RESOLUTION = Counter(
    "whereby_enrich_resolutions_total", "Customer and user resolutions, by kind and result", ["kind", "result"]
)
DEADLETTERS = Counter("whereby_enrich_deadletter_total", "Bad rows written by enrich, by reason", ["reason"])
DIM_SIZE = Gauge("whereby_enrich_dimension_entries", "Entries in the dimension table", ["kind"])
DIM_VERSION = Gauge("whereby_enrich_dimension_version", "Dimension version (topic position) in use")


class DimensionFollower:
    """Owns a group-less consumer of the dimensions topic and keeps a DimensionTable current."""

    def __init__(self, settings: Settings, table: DimensionTable) -> None:
        self.settings = settings
        self.table = table
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Assign every partition, read from the beginning to the current end, then return."""
        consumer = kafka.consumer(self.settings, group_id=None)
        await consumer.start()
        self._consumer = consumer
        tps = await kafka.partitions_of(self.settings, self.settings.topic_dimensions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            self._apply(await consumer.getmany(timeout_ms=500))

    async def follow(self) -> None:
        """Apply updates as they arrive, until cancelled."""
        assert self._consumer is not None
        while True:
            self._apply(await self._consumer.getmany(timeout_ms=1000))

    def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batches.values():
            for record in records:
                try:
                    self.table.apply(record.key, record.value, record.offset)
                except DimensionError as exc:
                    # The CLI validates before writing; a record that still fails is skipped, not fatal.
                    log.warning("dimension record rejected", extra={"offset": record.offset, "error": str(exc)})
        DIM_SIZE.labels("customer").set(len(self.table.customers))
        DIM_SIZE.labels("user").set(len(self.table.users))
        DIM_SIZE.labels("prefix").set(len(self.table.prefixes))
        DIM_VERSION.set(self.table.version)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


class EnrichService:
    """Consumes raw events, enriches them and produces the results, committing after the acks."""

    name = "enrich"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = DimensionTable()
        self._dims = DimensionFollower(settings, self.table)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._run_finished: asyncio.Event | None = None
        self._ready = False

    async def start(self) -> None:
        await kafka.prepare(self.settings)
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        await self._dims.start()
        self._consumer = kafka.consumer(self.settings, self.settings.topic_raw, group_id=self.settings.enrich_group)
        await self._consumer.start()
        self._ready = True

    def ready(self) -> bool:
        return self._ready and not self._stopping.is_set()

    def routes(self) -> list[web.RouteDef]:
        return []

    async def run(self) -> None:
        self._run_finished = finished = asyncio.Event()
        follower = asyncio.create_task(self._dims.follow(), name="enrich-dimensions")
        try:
            while not self._stopping.is_set():
                if follower.done():
                    follower.result()  # re-raise: dimensions that stop updating are a failure
                await self.process_batch()
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            finished.set()

    async def process_batch(self) -> int:
        """Poll, enrich, produce and commit one batch; returns the number of records handled."""
        assert self._consumer is not None and self._producer is not None
        batches = await self._consumer.getmany(timeout_ms=500, max_records=2000)
        if not batches:
            return 0
        producer = self._producer
        deliveries = []
        now = contract.now_ms()
        count = 0
        for tp, records in batches.items():
            for record in records:
                count += 1
                headers = contract.headers_dict(record.headers)
                try:
                    event = enrich(record.value or b"", headers, self.table, now_ms=now)
                except BadEvent as exc:
                    EVENTS.labels("deadletter").inc()
                    DEADLETTERS.labels(exc.reason).inc()
                    row = contract.bad_row(
                        stage="enrich",
                        reason=exc.reason,
                        detail=exc.detail,
                        payload=record.value,
                        source_topic=tp.topic,
                        source_partition=tp.partition,
                        source_offset=record.offset,
                        event_id=exc.event_id,
                    )
                    deliveries.append(await producer.send(self.settings.topic_deadletter, row, key=record.key))
                    continue
                EVENTS.labels("enriched").inc()
                RESOLUTION.labels("customer", event["customer_resolution"]).inc()
                RESOLUTION.labels("user", event["user_resolution"]).inc()
                deliveries.append(
                    await producer.send(self.settings.topic_enriched, orjson.dumps(event), key=record.key)
                )
        await asyncio.gather(*deliveries)
        await self._consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
        return count

    async def stop(self) -> None:
        self._stopping.set()
        self._ready = False
        if self._run_finished is not None:
            # Let the batch in hand finish: its produces are awaited and its offsets committed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_finished.wait(), timeout=30)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
        await self._dims.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
