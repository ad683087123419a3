"""The dimensions topic on Kafka: following it into a DimensionTable, and publishing records to it.

The topic is compacted and has one partition, so reading it from the beginning to its end gives the
current state of every customer and user (and every setting, such as `config:user_id_source`), in the
order the records were written.

A record that fails validation (`pipeline.dimensions.decode`, a prefix another customer owns, or a
`contract-version` newer than this release reads: reason `unsupported_version`) is skipped, counted and
handed to `on_rejected`, which the service uses to dead-letter it; it never stops the load or the
follower. Enrich has no committed position on this topic (it rebuilds the table from the beginning at
every start), so each enrich process reports each invalid record once per start: the bad rows carry the
record's topic, partition and offset to tell repeats apart. The sink, which reads the
topic in a consumer group, reports each one once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import Counter, Gauge

from enrich.dimensions import DimensionError, DimensionTable, Setting
from pipeline import contract, kafka
from pipeline.dimensions import SETTING_USER_ID_SOURCE
from pipeline.settings import CommonSettings, EnrichSettings

log = logging.getLogger(__name__)

DIM_SIZE = Gauge("whereby_enrich_dimension_entries", "Entries in the dimension table", ["kind"])
DIM_VERSION = Gauge("whereby_enrich_dimension_version", "Dimension version (topic position) in use")
DIM_REJECTED = Counter("whereby_enrich_dimension_rejected_total", "Dimension records rejected as invalid")


# Every dimension record is written by the enrich package's commands (`dims`, `forget`) or the stage.
_HEADERS = contract.version_headers("enrich")

# Called with each rejected record and why (reason: `invalid_dimension`, `dimension_conflict`, `internal_error`).
RejectHandler = Callable[[ConsumerRecord[bytes, bytes], DimensionError], Awaitable[None]]


class DimensionFollower:
    """Owns a group-less consumer of the dimensions topic and keeps a DimensionTable current.

    `start()` returns once the table holds everything that was on the topic when it was called; then
    `follow()` applies later records as they arrive, so a change is live without a restart.
    """

    def __init__(
        self,
        settings: EnrichSettings,
        table: DimensionTable,
        *,
        metrics: bool = True,
        on_rejected: RejectHandler | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.rejected = 0
        self._metrics = metrics
        self._on_rejected = on_rejected
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Assign every partition, read from the beginning to the current end, then return."""
        consumer = kafka.consumer(self.settings, group_id=None)
        await consumer.start()
        self._consumer = consumer
        tps = await kafka.partitions_of(self.settings, self.settings.topic_dimensions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        await self.catch_up()

    async def catch_up(self) -> None:
        """Apply every record on the topic up to its end as of now (e.g. one this process just wrote).
        Not while `follow()` runs: both would read from the same consumer."""
        consumer = self._consumer
        assert consumer is not None
        tps = list(consumer.assignment())
        end = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            await self._apply(await consumer.getmany(timeout_ms=500))
        self._publish_metrics()

    async def follow(self) -> None:
        """Apply updates as they arrive, until cancelled."""
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            if batches:
                await self._apply(batches)
                self._publish_metrics()

    async def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        rejected: list[tuple[ConsumerRecord[bytes, bytes], DimensionError]] = []
        for records in batches.values():
            for record in records:
                unreadable = contract.version_failure(record.headers)
                if unreadable is not None:
                    rejected.append((record, DimensionError(unreadable.detail, unreadable.reason)))
                    continue
                try:
                    self.table.apply(record.key, record.value, record.offset)
                except DimensionError as exc:
                    rejected.append((record, exc))
                except Exception as exc:
                    # A bug must not stop enrichment (at start it would stop it at every restart): the
                    # record is skipped like an invalid one. Only the type: the message may quote the record.
                    log.error(f"unexpected {type(exc).__name__} applying a dimension record; skipped")
                    rejected.append((record, DimensionError(f"{type(exc).__name__}: {exc}", "internal_error")))
        for record, error in rejected:
            # The CLI validates before writing; a record that still fails is skipped, never fatal.
            self.rejected += 1
            if self._metrics:
                DIM_REJECTED.inc()
            # Reason and position only: ids and names in the message are personal data.
            log.warning("dimension record rejected", extra={"offset": record.offset, "reason": error.reason})
            if self._on_rejected is not None:
                await self._on_rejected(record, error)

    def _publish_metrics(self) -> None:
        if not self._metrics:
            return
        DIM_SIZE.labels("customer").set(len(self.table.customers))
        DIM_SIZE.labels("user").set(len(self.table.users))
        DIM_SIZE.labels("prefix").set(len(self.table.prefixes))
        DIM_SIZE.labels("erasure").set(len(self.table.erasures))
        DIM_VERSION.set(self.table.version)

    async def stop(self) -> None:
        """Close the consumer. Idempotent."""
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()


async def read_dimensions(settings: EnrichSettings) -> tuple[DimensionTable, int]:
    """The current dimension table and the number of records on the topic rejected as invalid."""
    table = DimensionTable()
    follower = DimensionFollower(settings, table, metrics=False)
    try:
        await follower.start()
    finally:
        await follower.stop()
    return table, follower.rejected


async def record_user_id_source(follower: DimensionFollower) -> bool:
    """Make this process's USER_ID_SOURCE the topic's (before any event is enriched); True if written.

    Nothing is written when the topic already says the same, so instances that agree write nothing and
    a restart changes no version. Otherwise one `config:user_id_source` record is written and read back,
    so the table (and the dimension version every later enrichment carries) has moved past it before
    the first event. If another process wrote a different value meanwhile, the topic's latest wins and
    is used; the disagreement is logged.
    """
    table, settings = follower.table, follower.settings
    desired = settings.desired_user_id_source
    if table.user_id_source_text == desired:
        return False
    setting = Setting(SETTING_USER_ID_SOURCE, desired, contract.producer("enrich") + f" ({settings.instance_id})")
    await publish(settings, [(setting.key, orjson.dumps(setting.to_doc(contract.now_ms())))])
    await follower.catch_up()
    # The value is configuration, not personal data: safe to log.
    if table.user_id_source_text != desired:
        log.warning(
            "USER_ID_SOURCE differs from the dimensions topic's latest; using the topic's",
            extra={"configured": desired, "topic": table.user_id_source_text},
        )
    else:
        log.info("USER_ID_SOURCE recorded on the dimensions topic", extra={"user_id_source": desired})
    return True


async def publish(settings: CommonSettings, records: Sequence[tuple[str, bytes | None]]) -> None:
    """Write records (key, JSON value or None for a tombstone) and return once all are acknowledged.

    Sends are pipelined and acknowledged together; one producer keeps them in order on the single
    partition, so a later record for the same key always wins.
    """
    producer = kafka.producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic_dimensions, value, key=key.encode("utf-8"), headers=list(_HEADERS))
            for key, value in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
