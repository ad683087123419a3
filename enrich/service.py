"""The enrich stage: raw topic → enriched topic (and dead-letter topic), with live dimensions.

Delivery is at-least-once. Each polled batch is enriched and every record handed to the producer
(`send()` only appends to the producer's buffer; it waits only when that buffer is full), then all
acknowledgements are awaited together and only then are the batch's offsets committed. A crash in
between re-enriches the batch; the sink removes the duplicates by event id.

Rebalances: the batch in hand holds a lock that the revocation callback waits for, so partitions are
handed over only after the batch's records are acknowledged and its offsets committed. If the group
moved on anyway (e.g. this member was too slow), the commit fails, the new owner re-enriches from the
last committed offset, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Counter

from enrich.dimensions import DimensionTable
from enrich.dimtopic import DimensionFollower
from enrich.enricher import CUSTOMER_RESOLUTIONS, USER_RESOLUTIONS, BadEvent, enrich
from enrich.versions import VersionClock
from pipeline import contract, kafka
from pipeline.settings import Settings

log = logging.getLogger(__name__)

EVENTS = Counter("whereby_enrich_events_total", "Raw events processed, by outcome", ["outcome"])
RESOLUTION = Counter(
    "whereby_enrich_resolutions_total", "Customer and user resolutions, by kind and result", ["kind", "result"]
)
DEADLETTERS = Counter("whereby_enrich_deadletter_total", "Bad rows written by enrich, by reason", ["reason"])
PRODUCE_FAILURES = Counter(
    "whereby_enrich_produce_failures_total", "Batches whose produce was not acknowledged and were retried"
)
COMMIT_FAILURES = Counter(
    "whereby_enrich_commit_failures_total", "Batches whose offsets could not be committed after a rebalance"
)

MAX_POLL_RECORDS = 2000
RETRY_BACKOFF_S = 1.0

# Touch every label once so the series exist (at zero) before the first event, for dashboards and alerts.
for _outcome in ("enriched", "deadletter"):
    EVENTS.labels(_outcome)
for _result in CUSTOMER_RESOLUTIONS:
    RESOLUTION.labels("customer", _result)
for _result in USER_RESOLUTIONS:
    RESOLUTION.labels("user", _result)


_NO_HEADERS: dict[str, str] = {}


def _wanted_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The one raw-record header enrichment reads (received-at); decoding them all costs per event."""
    for name, value in headers:
        if name == contract.HEADER_RECEIVED_AT_MS:
            return {name: value.decode("ascii", "replace")}
    return _NO_HEADERS


class _FinishBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds a revocation until the batch in hand is acknowledged and committed."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class EnrichService:
    """Consumes raw events, enriches them and produces the results, committing after the acks."""

    name = "enrich"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = DimensionTable()
        self._dims = DimensionFollower(settings, self.table)
        self._clock = VersionClock()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._batch_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._run_finished: asyncio.Event | None = None
        self._ready = False

    async def start(self) -> None:
        await kafka.prepare(self.settings)
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        # The whole dimension table is loaded before the first event is read.
        await self._dims.start()
        self._consumer = kafka.consumer(self.settings, group_id=self.settings.enrich_group)
        self._consumer.subscribe([self.settings.topic_raw], listener=_FinishBatchOnRevoke(self._batch_lock))
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
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=500, max_records=MAX_POLL_RECORDS)
        if not batches:
            return 0
        async with self._batch_lock:
            return await self._handle(batches)

    async def _handle(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> int:
        assert self._consumer is not None
        deliveries: list[asyncio.Future[Any]] = []
        resolutions: collections.Counter[tuple[str, str]] = collections.Counter()
        bad: collections.Counter[str] = collections.Counter()
        count = 0
        try:
            count = await self._enrich_and_send(batches, deliveries, resolutions, bad)
        except KafkaError as exc:  # the producer's buffer stayed full: the broker is not taking records
            await asyncio.gather(*deliveries, return_exceptions=True)
            await self._rewind(batches, exc)
            return 0

        results = await asyncio.gather(*deliveries, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self._rewind(batches, failed[0])
            return 0

        # Counted once per batch, after the acks: per-event label lookups are measurable on the hot path.
        enriched = sum(resolutions.values())
        EVENTS.labels("enriched").inc(enriched)
        EVENTS.labels("deadletter").inc(count - enriched)
        for reason, n in bad.items():
            DEADLETTERS.labels(reason).inc(n)
        for (customer, user), n in resolutions.items():
            RESOLUTION.labels("customer", customer).inc(n)
            RESOLUTION.labels("user", user).inc(n)

        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced under us: the new owner re-enriches from the last commit (duplicates
            # are removed by event id downstream), so this is noisy but not lossy.
            COMMIT_FAILURES.inc()
            log.warning("offset commit failed after a rebalance", extra={"error": type(exc).__name__})
        return count

    async def _enrich_and_send(
        self,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        deliveries: list[asyncio.Future[Any]],
        resolutions: collections.Counter[tuple[str, str]],
        bad: collections.Counter[str],
    ) -> int:
        """Enrich every record and hand it to the producer; the delivery futures go into `deliveries`."""
        assert self._producer is not None
        send = self._producer.send
        table = self.table
        enriched_topic, deadletter_topic = self.settings.topic_enriched, self.settings.topic_deadletter
        now = contract.now_ms()
        version = self._clock.next()
        count = 0
        for tp, records in batches.items():
            for record in records:
                count += 1
                try:
                    event = enrich(
                        record.value or b"", _wanted_headers(record.headers), table, now_ms=now, version=version
                    )
                except BadEvent as exc:
                    bad[exc.reason] += 1
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
                    deliveries.append(await send(deadletter_topic, row, key=record.key))
                    continue
                resolutions[event["customer_resolution"], event["user_resolution"]] += 1
                key = record.key if record.key is not None else event["room_name"].encode()
                deliveries.append(await send(enriched_topic, orjson.dumps(event), key=key))
        return count

    async def _rewind(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], error: BaseException
    ) -> None:
        """A produce was not acknowledged: commit nothing, seek back, and let the next poll retry the batch."""
        assert self._consumer is not None
        PRODUCE_FAILURES.inc()
        log.error("produce not acknowledged; retrying the batch", extra={"error": repr(error)})
        if not isinstance(error, KafkaError):
            raise error
        assigned = self._consumer.assignment()
        for tp, records in batches.items():
            if tp in assigned:
                self._consumer.seek(tp, records[0].offset)
        await asyncio.sleep(RETRY_BACKOFF_S)

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
