"""The sink stage: enriched topic → ClickHouse, committing offsets only after the insert.

Records are buffered across polls until the batch is full by rows or bytes, or old enough; then one
insert carries a deduplication token made of the batch's topic/partition/offset ranges, so a batch
re-inserted after a crash between insert and commit is dropped by ClickHouse instead of doubled. A
rebalance flushes before partitions are taken away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Histogram

from pipeline import contract, kafka
from pipeline.settings import Settings
from sink import store
from sink.rows import EVENT_COLUMNS, BadRow, event_row

log = logging.getLogger(__name__)

ROWS = Counter("whereby_sink_rows_total", "Rows handled by the sink, by outcome", ["outcome"])
INSERT_SECONDS = Histogram("whereby_sink_insert_duration_seconds", "Duration of one ClickHouse insert")
BATCH_ROWS = Histogram(
    "whereby_sink_batch_rows", "Rows per insert", buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000)
)


class _Batch:
    """Rows waiting for one insert, and the offsets they came from."""

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self.bytes = 0
        self.started = time.monotonic()
        self.first: dict[TopicPartition, int] = {}
        self.last: dict[TopicPartition, int] = {}

    def add_offset(self, tp: TopicPartition, offset: int) -> None:
        self.first.setdefault(tp, offset)
        self.last[tp] = offset

    def token(self) -> str:
        """Same records → same token, which is what makes a re-insert after a crash a no-op."""
        return ",".join(f"{tp.topic}:{tp.partition}:{self.first[tp]}-{self.last[tp]}" for tp in sorted(self.first))


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: SinkService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.service.flush()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class SinkService:
    """Consumes enriched events and writes them to ClickHouse."""

    name = "sink"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = settings.clickhouse_database
        self.client: Client | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._batch = _Batch()
        self._flush_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._run_finished: asyncio.Event | None = None
        self._ready = False

    async def start(self) -> None:
        self.client = await asyncio.to_thread(store.connect, self.settings.clickhouse_url)
        await asyncio.to_thread(store.migrate, self.client, self.db)
        await kafka.prepare(self.settings)
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        self._consumer = kafka.consumer(self.settings, group_id=self.settings.sink_group)
        self._consumer.subscribe([self.settings.topic_enriched], listener=_FlushOnRevoke(self))
        await self._consumer.start()
        self._ready = True

    def ready(self) -> bool:
        return self._ready and not self._stopping.is_set()

    def routes(self) -> list[web.RouteDef]:
        return []

    async def run(self) -> None:
        self._run_finished = finished = asyncio.Event()
        try:
            while not self._stopping.is_set():
                await self.poll_once()
            await self.flush()
        finally:
            finished.set()

    async def poll_once(self) -> None:
        """Poll once, buffer what came, and flush if the batch is full or old enough."""
        assert self._consumer is not None
        timeout_ms = max(1, int(self.settings.sink_batch_seconds * 1000 / 4))
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self.settings.sink_batch_rows)
        for tp, records in batches.items():
            for record in records:
                await self._add(tp, record.offset, record.key, record.value or b"")
        batch = self._batch
        if batch.first and (
            len(batch.rows) >= self.settings.sink_batch_rows
            or batch.bytes >= self.settings.sink_batch_bytes
            or time.monotonic() - batch.started >= self.settings.sink_batch_seconds
        ):
            await self.flush()

    async def _add(self, tp: TopicPartition, offset: int, key: bytes | None, value: bytes) -> None:
        self._batch.add_offset(tp, offset)
        try:
            self._batch.rows.append(event_row(value))
            self._batch.bytes += len(value)
        except BadRow as exc:
            ROWS.labels("deadletter").inc()
            assert self._producer is not None
            row = contract.bad_row(
                stage="sink",
                reason=exc.reason,
                detail=exc.detail,
                payload=value,
                source_topic=tp.topic,
                source_partition=tp.partition,
                source_offset=offset,
            )
            # Awaited with the flush: the offset is committed only once the bad row is on its topic.
            await self._producer.send(self.settings.topic_deadletter, row, key=key)

    async def flush(self) -> None:
        """Insert the buffered rows (if any), then commit their offsets."""
        async with self._flush_lock:
            batch, self._batch = self._batch, _Batch()
            if not batch.first:
                return
            assert self.client is not None and self._consumer is not None and self._producer is not None
            if batch.rows:
                started = time.monotonic()
                await asyncio.to_thread(
                    self.client.insert,
                    f"{self.db}.events",
                    batch.rows,
                    column_names=EVENT_COLUMNS,
                    settings={"insert_deduplication_token": batch.token()},
                )
                INSERT_SECONDS.observe(time.monotonic() - started)
                BATCH_ROWS.observe(len(batch.rows))
                ROWS.labels("inserted").inc(len(batch.rows))
            await self._producer.flush()
            await self._consumer.commit({tp: last + 1 for tp, last in batch.last.items()})

    async def stop(self) -> None:
        self._stopping.set()
        self._ready = False
        if self._run_finished is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._run_finished.wait(), timeout=30)
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
        if self.client is not None:
            client, self.client = self.client, None
            await asyncio.to_thread(client.close)
