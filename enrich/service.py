"""The enrich stage: raw topic → enriched topic (and dead-letter topic), with live dimensions.

Delivery is at-least-once. Each polled batch is enriched into one record batch per output partition,
each handed to the producer whole (`send_batch`: one await per partition batch, not one per record),
then all acknowledgements are awaited together and only then are the batch's offsets committed. A crash
in between re-enriches the batch; the sink removes the duplicates by event id.

Design decision, co-partitioning: the enriched record of a raw record from partition p goes to
partition p of the enriched topic whenever both topics have the same partition count (the contract
creates them alike). Ingest keys the raw topic by roomName with Kafka's default partitioner, so p is
exactly the partition that hashing the key would pick: per-room order carries through, the records stay
keyed by roomName (for compaction and for consumers that look at keys), and the stage skips hashing
every key (aiokafka's murmur2 is pure Python and was a fifth of the stage's time). When the counts
differ (e.g. partitions were added to one topic only) or a raw record has no key, the output partition
comes from the key with the default partitioner's hash (`pipeline.partitioning`, cached per key), as
`send(key=...)` would pick.

Rebalances: the batch in hand holds a lock that the revocation callback waits for, so partitions are
handed over only after the batch's records are acknowledged and its offsets committed. If the group
moved on anyway (e.g. this member was too slow), the commit fails, the new owner re-enriches from the
last committed offset, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import Counter, Histogram

from enrich import config
from enrich.dimensions import DimensionError, DimensionTable
from enrich.dimtopic import DimensionFollower, record_user_id_source
from enrich.enricher import CUSTOMER_RESOLUTIONS, USER_RESOLUTIONS, BadEvent, enrich_record
from pipeline import contract, deadletters, kafka, kafkaerrors, lag, rebalance, replicas
from pipeline.backoff import Backoff
from pipeline.partitioning import partition_for
from pipeline.settings import EnrichSettings
from pipeline.stage import Background, ConsumerStage

log = logging.getLogger(__name__)

EVENTS = Counter("whereby_enrich_events_total", "Raw events processed, by outcome", ["outcome"])
RESOLUTION = Counter(
    "whereby_enrich_resolutions_total", "Customer and user resolutions, by kind and result", ["kind", "result"]
)
DEADLETTERS = Counter("whereby_enrich_deadletter_total", "Bad rows written by enrich, by reason", ["reason"])
PRODUCE_FAILURES = Counter(
    "whereby_enrich_produce_failures_total", "Batches whose produce was not acknowledged and were retried"
)
BATCH_RECORDS = Histogram(
    "whereby_enrich_batch_records",
    "Raw records handled per polled batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000),
)
PRODUCE_SECONDS = Histogram(
    "whereby_enrich_produce_duration_seconds",
    "From the batch's first send to the last acknowledgement of its enriched and bad rows",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMIT_FAILURES = Counter(
    "whereby_enrich_commit_failures_total", "Batches whose offsets could not be committed after a rebalance"
)

MAX_POLL_RECORDS = 2000
# Waits between retries of a batch the broker did not acknowledge: from half a second, up to 30 s.
RETRY_BASE_S = 0.5
RETRY_CAP_S = 30.0

# Touch every label once so the series exist (at zero) before the first event, for dashboards and alerts.
for _outcome in ("enriched", "deadletter"):
    EVENTS.labels(_outcome)
for _result in CUSTOMER_RESOLUTIONS:
    RESOLUTION.labels("customer", _result)
for _result in USER_RESOLUTIONS:
    RESOLUTION.labels("user", _result)


def _raw_headers(headers: Sequence[tuple[str, bytes]]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The three raw-record headers enrichment reads (received-at, event-source, contract-version),
    undecoded; decoding them all costs. A webhook carries no event-source header, a record of the release
    before no contract-version."""
    received = source = version = None
    for name, value in headers:
        if name == contract.HEADER_RECEIVED_AT_MS:
            received = value
        elif name == contract.HEADER_EVENT_SOURCE:
            source = value
        elif name == contract.HEADER_CONTRACT_VERSION:
            version = value
    return received, source, version


class _FinishBatchOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Holds a revocation until the batch in hand is acknowledged and committed."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:
            return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class EnrichService(ConsumerStage[EnrichSettings]):
    """Consumes raw events, enriches them and produces the results, committing after the acks."""

    name = "enrich"

    def __init__(self, settings: EnrichSettings) -> None:
        super().__init__(settings)
        self.table = DimensionTable()
        self._dims = DimensionFollower(settings, self.table, on_rejected=self._dead_letter_dimension)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._batch_lock = asyncio.Lock()
        self._hashed_partitions: tuple[int, ...] = ()
        self._backoff = Backoff(base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S)

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        """Producer, then the dimension table, then the consumer (closed in the reverse order)."""
        config.check(self.settings)  # the same rules as `whereby-pipeline config check --stage enrich`
        await kafka.prepare(self.settings)
        producer = kafka.producer(self.settings)
        await producer.start()
        self.closing(stack, "producer", producer.stop)  # flushes what is still buffered
        self._producer = producer
        # Both topics' partition counts in the producer's metadata (kept fresh by it): co-partitioning.
        await producer.partitions_for(self.settings.topic_raw)
        await producer.partitions_for(self.settings.topic_enriched)
        # The whole dimension table is loaded before the first event is read, with this process's
        # USER_ID_SOURCE recorded on the topic if it differs (then enrichment uses the topic's value).
        self.closing(stack, "dimensions consumer", self._dims.stop)
        await self._dims.start()
        await record_user_id_source(self._dims)
        # It is long-lived (200k+ objects with 100k users): move it, and everything else alive now, out of
        # the cyclic GC's reach, so full collections while events stream through stop re-scanning it.
        gc.collect()
        gc.freeze()
        consumer = kafka.consumer(self.settings, group_id=self.settings.enrich_group)
        consumer.subscribe(
            [self.settings.topic_raw], listener=rebalance.Counted("enrich", _FinishBatchOnRevoke(self._batch_lock))
        )
        await consumer.start()
        self.closing(stack, "consumer", consumer.stop)  # leaves the group: its partitions move on at once
        self._consumer = consumer

    def background(self) -> list[Background]:
        assert self._consumer is not None
        interval = self.settings.lag_interval_s
        return [
            # Dimensions that stop updating are a failure: the stage stops rather than enrich with stale ones.
            Background("dimensions", self._dims.follow(), critical=True),
            Background("lag", lag.report_forever(self._consumer, "enrich", interval_s=interval)),
            Background("replicas", replicas.report_forever(self.settings, interval_s=interval)),
        ]

    async def step(self) -> None:
        await self.process_batch()

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
        started = time.perf_counter()
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
        PRODUCE_SECONDS.observe(time.perf_counter() - started)
        BATCH_RECORDS.observe(count)
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
        except KafkaError as exc:
            if kafkaerrors.classify(exc) == "fatal":
                raise kafkaerrors.fatal(exc, "offset commit") from exc
            # Transient: the next batch's commit covers these offsets too (commits are cumulative).
            COMMIT_FAILURES.inc()
            log.warning(kafkaerrors.describe(exc, "offset commit"), extra={"error": type(exc).__name__})
        self._backoff.reset()
        return count

    async def _enrich_and_send(
        self,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        deliveries: list[asyncio.Future[Any]],
        resolutions: collections.Counter[tuple[str, str]],
        bad: collections.Counter[str],
    ) -> int:
        """Enrich every record and hand the results to the producer in one record batch per output
        partition; the delivery futures (one per batch, one per bad row) go into `deliveries`.
        """
        producer = self._producer
        assert producer is not None
        table = self.table
        enriched_topic = self.settings.topic_enriched
        now = contract.now_ms()
        copartitioned = await self._copartitioned_count()
        display_names = self.settings.store_display_names
        # One list for every record (aiokafka's C builder wants a list; it encodes the headers at once).
        headers = list(contract.ENRICHED_VERSION_HEADERS)
        builders: dict[int, Any] = {}  # output partition -> open aiokafka BatchBuilder
        new_batch = producer.create_batch
        count = 0
        for tp, records in batches.items():
            same = tp.partition if tp.partition < copartitioned else None
            for record in records:
                try:
                    received, source, version = _raw_headers(record.headers)
                    value, customer, user, room = enrich_record(
                        record.value or b"", received, source, table, now, display_names, version
                    )
                except BadEvent as exc:
                    deliveries.append(await self._dead_letter(tp, record, exc))
                    bad[exc.reason] += 1
                    continue
                except Exception as exc:
                    # A bug must not stall the partition: the event becomes a bad row like any other and
                    # can be replayed once fixed. Only the type is logged: the message may quote user data.
                    log.error(
                        f"unexpected {type(exc).__name__} while enriching; dead-lettered",
                        extra={"partition": tp.partition, "offset": record.offset},
                    )
                    internal = BadEvent("internal_error", f"{type(exc).__name__}: {exc}")
                    deliveries.append(await self._dead_letter(tp, record, internal))
                    bad[internal.reason] += 1
                    continue
                resolutions[customer, user] += 1
                key = record.key
                if key is None:
                    key = room.encode()
                    partition = partition_for(key, self._hashed_partitions)
                else:
                    partition = partition_for(key, self._hashed_partitions) if same is None else same
                builder = builders.get(partition)
                if builder is None or builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
                    if builder is not None:  # full: hand it over, start the next one
                        deliveries.append(await self._submit(builder, enriched_topic, partition))
                    builder = builders[partition] = new_batch()
                    builder.append(timestamp=None, key=key, value=value, headers=headers)  # a batch takes its first
            count += len(records)
        for partition, builder in builders.items():
            deliveries.append(await self._submit(builder, enriched_topic, partition))
        return count

    async def _submit(self, builder: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        """Hand a complete record batch to the producer; closed, so it is sent without lingering."""
        assert self._producer is not None
        builder.close()
        future: asyncio.Future[Any] = await self._producer.send_batch(builder, topic, partition=partition)
        return future

    async def _dead_letter(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], exc: BadEvent
    ) -> asyncio.Future[Any]:
        """Send one bad row (with the record's source position) keyed like its source; rare, so one send each."""
        assert self._producer is not None
        return await deadletters.send(self._producer, self.settings.topic_deadletter, self.name, exc, record)

    async def _dead_letter_dimension(self, record: ConsumerRecord[bytes, bytes], exc: DimensionError) -> None:
        """Dead-letter a dimension record the table refused, and wait for the acknowledgement.

        A failed send is logged and not retried: the record stays skipped and counted either way, and the
        sink dead-letters the same invalid record from its committed position.
        """
        assert self._producer is not None
        try:
            await (await deadletters.send(self._producer, self.settings.topic_deadletter, self.name, exc, record))
        except KafkaError as error:
            log.error(
                "rejected dimension record not dead-lettered",
                extra={"offset": record.offset, "error": type(error).__name__},
            )
            return
        DEADLETTERS.labels(exc.reason).inc()

    async def _copartitioned_count(self) -> int:
        """The partition count shared by the raw and enriched topics, or 0 when they differ (or are unknown).

        Read per batch from the producer's metadata, so a partition change is picked up by its refresh.
        """
        assert self._producer is not None
        cluster = self._producer.client.cluster
        raw: set[int] | None = cluster.partitions_for_topic(self.settings.topic_raw)
        # Unknown only if the metadata lost the topic: wait for it (a KafkaError if it is gone: retried).
        out: set[int] = cluster.partitions_for_topic(
            self.settings.topic_enriched
        ) or await self._producer.partitions_for(self.settings.topic_enriched)
        self._hashed_partitions = tuple(sorted(out))
        return len(out) if raw == out else 0

    async def _rewind(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], error: BaseException
    ) -> None:
        """A produce was not acknowledged: commit nothing, seek back, and let the next poll retry the batch
        after a growing wait; a failure retrying cannot fix (pipeline/kafkaerrors.py) stops the stage."""
        assert self._consumer is not None
        PRODUCE_FAILURES.inc()
        if not isinstance(error, KafkaError):
            raise error  # a bug, not the broker: surface it as it is
        if kafkaerrors.classify(error) == "fatal":
            raise kafkaerrors.fatal(error, "produce")
        delay = self._backoff.next()
        log.error(
            f"{kafkaerrors.describe(error, 'produce')}; retrying the batch in {delay:.1f}s",
            extra={"error": repr(error)},
        )
        assigned = self._consumer.assignment()
        for tp, records in batches.items():
            if tp in assigned:
                self._consumer.seek(tp, records[0].offset)
        await asyncio.sleep(delay)
