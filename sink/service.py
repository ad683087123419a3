"""The sink stage: enriched and dimension topics → ClickHouse, committing offsets only after the insert.

A thin adapter around the pure parts (:mod:`sink.batch`, :mod:`sink.writer`, :mod:`sink.errors`):

- Records are buffered until the batch is due by rows, bytes or age; then one insert per table runs in
  a worker thread while the next batch is being consumed (at most one insert in flight, so offsets are
  committed in order, each batch only once its rows are in ClickHouse or on the dead-letter topic).
- A retriable ClickHouse error keeps the batch, pauses all partitions (memory stays bounded: one batch
  in flight, one buffered) and retries with exponential backoff; the consumer keeps polling so it
  stays in its group. Rejected rows are isolated by splitting and dead-lettered; a fatal error stops
  the stage without committing.
- A rebalance flushes before partitions are revoked; if ClickHouse cannot take the flush in time, the
  batch is dropped uncommitted and the partitions' new owner consumes it again.
- The deriver (:mod:`sink.derive`) turns stored events into connection and session rows on its own
  ClickHouse handle and thread; at start it first catches up with every room left underived (all rooms,
  after an upgrade), so the read API never answers from half-derived rows. Each flush wakes it.
- Erasures (`forget`): a flush applies the erasure records it carries to the stored rows before its
  offsets are committed (:mod:`sink.forget`, holding the deriver's lock), and scrubs every batch's events
  against the erasures known so far, which an :class:`ErasureFollower` reads from the dimensions topic
  before the stage consumes anything (:mod:`sink.erasures`, :mod:`sink.scrub`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import operator
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from clickhouse_connect.driver.client import Client

from pipeline import contract, deadletters, kafka, kafkaerrors, lag, rebalance, replicas
from pipeline.backoff import Backoff
from pipeline.erasure import ErasureSet
from pipeline.failures import Failure
from pipeline.settings import SinkSettings
from pipeline.stage import Background, ConsumerStage
from sink import config, metrics, retention, store
from sink.batch import Batch, DeadLetter, Limits, Record, RecordLike
from sink.derive import Deriver
from sink.erasures import ErasureFollower
from sink.errors import backoff_delay
from sink.read import drift, readapi, sqlhttp
from sink.rows import BadRow, event_line, readable_run, single_lines_size
from sink.writer import ClickHouseWriter, Outcome, RetryLater

log = logging.getLogger(__name__)

REVOKE_TIMEOUT_S = 20.0
_PARTITION_OF = operator.attrgetter("topic", "partition")


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: SinkService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            await self.service.flush(timeout_s=REVOKE_TIMEOUT_S)
        except Exception as exc:
            # aiokafka would only log it and carry on past the unwritten batch: make the stage stop.
            self.service.fail(exc)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.service.assigned()


class SinkService(ConsumerStage[SinkSettings]):
    """Consumes enriched events and dimension records and writes them to ClickHouse."""

    name = "sink"

    def __init__(self, settings: SinkSettings, *, after_insert: Callable[[Batch], None] | None = None) -> None:
        """`after_insert`: called with each batch once it is in ClickHouse (and its bad rows on the
        dead-letter topic), before its offsets are committed. A plug-in point for fault injection
        (`make chaos` crashes the process there); the shipped sink passes none."""
        super().__init__(settings)
        self._after_insert = after_insert
        self.db = settings.clickhouse_database
        self.limits = Limits(settings.sink_batch_rows, settings.sink_batch_bytes, settings.sink_batch_seconds)
        self.client: Client | None = None
        self._derive_client: Client | None = None
        self.deriver: Deriver | None = None
        self._writer: ClickHouseWriter | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._batch = Batch(started=time.monotonic())
        self._inflight: asyncio.Task[None] | None = None
        self._retrying = False
        self._paused = False
        self._failure: BaseException | None = None
        # The read API's threads: never asyncio's default executor, which the writer's inserts use.
        self._read_pool = readapi.ReadPool(settings.read_query_threads)
        self._sql: sqlhttp.SqlHttpServer | None = None
        self.erasures = ErasureSet()
        self._erasure_follower = ErasureFollower(settings, self.erasures)

    def fail(self, exc: BaseException) -> None:
        """Record a failure raised outside the run loop (in the rebalance listener); run() raises it."""
        self._failure = exc

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        """The store (schema, catch-up, SQL interface), then Kafka; each close registered as it opens, so
        the consumer leaves first and the store closes last."""
        config.check(self.settings)  # the same rules as `whereby-pipeline config check --stage sink`
        self.closing(stack, "read pool", _async(self._read_pool.close))
        self.client = client = await asyncio.to_thread(
            store.connect, self.settings.clickhouse_url, self.settings.clickhouse_access
        )
        self.closing(stack, "ClickHouse client", lambda: asyncio.to_thread(client.close))
        cluster = self.settings.clickhouse_cluster
        await asyncio.to_thread(store.migrate, client, self.db, cluster)
        await asyncio.to_thread(
            retention.apply_archive_retention, client, self.db, self.settings.raw_archive_retention_days, cluster
        )
        # Its own handle: a derivation never waits for an insert on the writer's, nor holds one up.
        self._derive_client = derive_client = await asyncio.to_thread(
            store.connect, self.settings.clickhouse_url, self.settings.clickhouse_access
        )
        self.closing(stack, "derive client", lambda: asyncio.to_thread(derive_client.close))
        self.deriver = deriver = Deriver(derive_client, self.db, stale_after_s=self.settings.stale_connection_s)
        self.closing(stack, "deriver", lambda: deriver.stop(timeout_s=self._close_timeout_s()))
        await asyncio.to_thread(catch_up, deriver)
        # ClickHouse's HTTP interface for BI tools, when the store is embedded (after the schema exists).
        self._sql = sql = await sqlhttp.start_for(self.settings)
        if sql is not None:
            self.closing(stack, "SQL interface", sql.stop)  # bounded by sqlhttp.STOP_TIMEOUT_S; before the store
        self._writer = ClickHouseWriter(client, self.db, cluster=cluster, erasures=self.erasures, lock=deriver.lock)
        await kafka.prepare(self.settings)
        # Every erasure on the topic, before the first batch: each one is scrubbed from what it inserts.
        self.closing(stack, "erasure follower", self._erasure_follower.stop)
        await self._erasure_follower.start()
        producer = kafka.producer(self.settings)
        await producer.start()
        self.closing(stack, "producer", producer.stop)
        self._producer = producer
        consumer = kafka.consumer(
            self.settings, group_id=self.settings.sink_group, max_poll_records=self.settings.sink_batch_rows
        )
        # The raw topic too: every accepted webhook body goes to the raw archive, which outlives the
        # topic's retention (replay reads it for older ranges).
        consumer.subscribe(
            [
                self.settings.topic_enriched,
                self.settings.topic_dimensions,
                self.settings.topic_raw,
                self.settings.topic_reconciliation,
            ],
            listener=rebalance.Counted("sink", _FlushOnRevoke(self)),
        )
        await consumer.start()
        self.closing(stack, "consumer", consumer.stop)
        self._consumer = consumer

    def _close_timeout_s(self) -> float:
        """What one close may take: the stop's budget left, at least a second (closes come after the drain)."""
        return max(1.0, self.time_left_s())

    def routes(self) -> list[web.RouteDef]:
        # The read API and page: in embedded mode only this process can open the store.
        run = readapi.client_runner(lambda: self.client, timeout_s=self.settings.read_query_timeout_s)
        return readapi.routes(
            run,
            self.db,
            token=self.settings.read_api_token,
            pool=self._read_pool,
            stale_after_s=self.settings.stale_connection_s,
        )

    def background(self) -> list[Background]:
        assert self._consumer is not None and self.deriver is not None
        interval = self.settings.lag_interval_s
        return [
            Background("lag", lag.report_forever(self._consumer, "sink", interval_s=interval)),
            Background("replicas", replicas.report_forever(self.settings, interval_s=interval)),
            Background("derive", self.deriver.run()),
            Background("drift", drift.report_forever(lambda: self.client, self.db)),
            Background("erasures", self._erasure_follower.follow()),
        ]

    async def step(self) -> None:
        await self.poll_once()

    async def finish(self) -> None:
        """The last flush on a stop, within the drain budget (beyond it the batch is left uncommitted)."""
        await self.flush(timeout_s=max(0.1, self.time_left_s() * 0.9))

    async def wind_down(self) -> None:
        """Let the deriver finish its cycle in hand before its task is cancelled."""
        if self.deriver is not None:
            await self.deriver.stop(timeout_s=self._close_timeout_s())

    async def poll_once(self) -> None:
        """Poll once, buffer what came, and start a flush if the batch is due and none is running."""
        assert self._consumer is not None
        timeout_ms = max(1, int(self.limits.seconds * 1000 / 4))
        if self._paused and self._inflight is not None:
            # Nothing can arrive while paused: wait for the insert itself, so the next batch starts the
            # moment it is acknowledged rather than after a poll timeout.
            await asyncio.wait({self._inflight}, timeout=timeout_ms / 1000)
            self._reap()
            if self._inflight is None and self._batch.due(self.limits, time.monotonic()):
                self._start_flush()
        self._reap()
        self._apply_pause()
        room = max(1, self.limits.rows - self._batch.rows)
        polled = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=room)
        for tp, records in polled.items():
            if tp.topic in (self.settings.topic_dimensions, self.settings.topic_reconciliation):
                for r in records:
                    self._add(r)
            elif tp.topic == self.settings.topic_raw:
                if not readable_run(records):
                    for r in records:
                        self._add(r)
                    continue
                self._batch.track_run(tp.topic, tp.partition, records, sum(len(r.value or b"") for r in records))
                self._batch.archive.extend(records)
            else:
                self._add_events(tp.topic, tp.partition, records)
        self._reap()
        if self._inflight is None and self._batch.due(self.limits, time.monotonic()):
            self._start_flush()
        self._apply_pause()

    def _add_events(self, topic: str, partition: int, records: list[RecordLike]) -> None:
        """A polled run of enriched records of one partition, in offset order: taken as they are when
        every one is already a clean JSONEachRow line of a contract version this release reads (the normal
        case), else record by record."""
        values = [r.value for r in records]
        size = single_lines_size(values)
        if size is not None and readable_run(records):
            self._batch.track_run(topic, partition, records, size)
            self._batch.events.extend(records)
            return
        for r in records:
            self._add(r)

    def _add(self, record: RecordLike) -> None:
        batch = self._batch
        batch.track(record)
        unreadable = contract.version_failure(record.headers)
        if unreadable is not None:  # written by a newer release: dead-lettered, never stored as ours
            batch.dead_letters.append(DeadLetter(record, unreadable.reason, unreadable.detail))
            return
        if record.topic == self.settings.topic_raw:
            batch.archive.append(record)
            return
        if record.topic == self.settings.topic_dimensions:
            batch.dimensions.append(record)
            return
        if record.topic == self.settings.topic_reconciliation:
            batch.reconciliations.append(record)
            return
        try:
            line = event_line(record.value)
        except BadRow as exc:
            batch.dead_letters.append(DeadLetter(record, exc.reason, exc.detail))
            return
        if line is not record.value:
            record = Record(record.topic, record.partition, record.offset, record.key, line)
        batch.events.append(record)

    def _start_flush(self) -> None:
        batch, self._batch = self._batch, Batch(started=time.monotonic())
        self._inflight = asyncio.create_task(self._write_and_commit(batch), name="sink-flush")

    def _reap(self) -> None:
        """Collect a finished flush; a fatal failure in it is raised here and stops the stage."""
        if self._failure is not None:
            raise self._failure
        task = self._inflight
        if task is not None and task.done():
            self._inflight = None
            task.result()

    def _apply_pause(self) -> None:
        """Pause consumption while an insert backs off, or while the next batch is full behind it."""
        if self._consumer is None:
            return
        want = self._inflight is not None and (self._retrying or self._batch.full(self.limits))
        if want == self._paused:
            return
        partitions = self._consumer.assignment()
        if want:
            self._consumer.pause(*partitions)
        else:
            self._consumer.resume(*partitions)
        self._paused = want
        metrics.PAUSED.set(1 if want else 0)

    def assigned(self) -> None:
        """After a rebalance the new assignment starts unpaused."""
        self._paused = False
        metrics.PAUSED.set(0)

    async def _write_and_commit(self, batch: Batch) -> None:
        assert self._writer is not None and self._consumer is not None
        metrics.BATCH_ROWS.observe(batch.rows)
        metrics.BATCH_BYTES.observe(batch.bytes)
        attempt = 0
        while True:
            try:
                outcome = await asyncio.to_thread(self._writer.write, batch)
                break
            except RetryLater as exc:
                metrics.RETRIES.labels(exc.failure.label).inc()
                delay = backoff_delay(attempt)
                attempt += 1
                self._retrying = True
                self._apply_pause()
                log.warning(
                    f"ClickHouse insert failed ({exc.failure.label}, code {exc.failure.code}): retry {attempt} "
                    f"in {delay:.1f}s with partitions paused: {exc.failure.detail}",
                    extra={"service": self.name},
                )
                await asyncio.sleep(delay)
        self._retrying = False
        await self._dead_letter([*batch.dead_letters, *outcome.rejected])
        if self._after_insert is not None:
            self._after_insert(batch)  # e.g. chaos/crashing_sink.py dies here, in the insert → commit window
        try:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in batch.next_offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member meanwhile: it consumes these records again, and
            # the re-insert changes nothing (same event ids; idempotent aggregates).
            log.warning(f"offset commit after insert failed: {exc!r}", extra={"service": self.name})
        except KafkaError as exc:
            if kafkaerrors.classify(exc) == "fatal":
                raise kafkaerrors.fatal(exc, "offset commit") from exc
            # Transient: the next batch's commit covers these offsets too (commits are cumulative).
            log.warning(kafkaerrors.describe(exc, "offset commit"), extra={"service": self.name})
        if self.deriver is not None and batch.events:
            self.deriver.wake()
        self._observe(batch, outcome)

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        """Put each bad record on the dead-letter topic; awaited before the batch's offsets are committed."""
        if not letters:
            return
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        while True:
            try:
                await self._send_dead_letters(letters)
                break
            except KafkaError as exc:
                # Re-sending them all may write a bad row twice; one missing would be worse.
                if kafkaerrors.classify(exc) == "fatal":
                    raise kafkaerrors.fatal(exc, "dead-letter send") from exc
                delay = backoff.next()
                log.warning(
                    f"{kafkaerrors.describe(exc, 'dead-letter send')}; retrying in {delay:.1f}s",
                    extra={"service": self.name},
                )
                await asyncio.sleep(delay)
        kinds = {
            self.settings.topic_dimensions: "dimension",
            self.settings.topic_raw: "archive",
            self.settings.topic_reconciliation: "reconciliation",
        }
        for d in letters:
            metrics.DEADLETTER.labels(d.reason).inc()
            kind = kinds.get(d.record.topic, "event")
            metrics.ROWS.labels(kind, "deadletter").inc()

    async def _send_dead_letters(self, letters: list[DeadLetter]) -> None:
        """One send per bad record, all awaited (the acknowledgements, not just the hand-over)."""
        assert self._producer is not None
        sends = []
        for d in letters:
            failure = Failure(d.reason, d.detail, _event_id(d.record.value))
            sends.append(
                await deadletters.send(self._producer, self.settings.topic_deadletter, self.name, failure, d.record)
            )
        await asyncio.gather(*sends)

    def _observe(self, batch: Batch, outcome: Outcome) -> None:
        dims, archived, recons = len(batch.dimensions), len(batch.archive), len(batch.reconciliations)
        if outcome.rejected:
            rejected = {(d.record.topic, d.record.partition, d.record.offset) for d in outcome.rejected}
            dims = sum(1 for r in batch.dimensions if (r.topic, r.partition, r.offset) not in rejected)
            archived = sum(1 for r in batch.archive if (r.topic, r.partition, r.offset) not in rejected)
            recons = sum(1 for r in batch.reconciliations if (r.topic, r.partition, r.offset) not in rejected)
        metrics.ROWS.labels("dimension", "inserted").inc(dims - outcome.applied)
        if outcome.applied:
            metrics.ROWS.labels("dimension", "applied").inc(outcome.applied)
            dims -= outcome.applied  # not among the inserted rows
        metrics.ROWS.labels("archive", "inserted").inc(archived)
        if recons:
            metrics.ROWS.labels("reconciliation", "inserted").inc(recons)
        metrics.ROWS.labels("event", "inserted").inc(outcome.inserted - dims - archived - recons)
        # Latency is sampled (the newest event of each partition): parsing every row would cost more
        # than the insert. One Python step per run of a partition's records, not per record.
        newest: dict[tuple[str, int], RecordLike] = {}
        for tp, run in itertools.groupby(batch.events, _PARTITION_OF):
            newest[tp] = collections.deque(run, maxlen=1)[0]
        now = contract.now_ms()
        for r in newest.values():
            with contextlib.suppress(Exception):
                doc = orjson.loads(r.value or b"")
                metrics.LATENCY.labels("created").observe(max(0, now - int(doc["created_at_ms"])) / 1000)
                metrics.LATENCY.labels("received").observe(max(0, now - int(doc["received_at_ms"])) / 1000)

    async def flush(self, *, timeout_s: float | None = None) -> None:
        """Finish the running insert and flush what is buffered, committing both.

        With a timeout (rebalance, shutdown) a flush that cannot finish is abandoned uncommitted: the
        records are consumed again by whoever owns the partitions next, so nothing is lost.
        """
        try:
            await asyncio.wait_for(self._flush_all(), timeout=timeout_s)
        except TimeoutError:
            log.warning(
                f"flush did not finish within {timeout_s:.0f}s (ClickHouse unavailable?): leaving "
                f"{self._batch.rows} buffered records uncommitted; they will be consumed again",
                extra={"service": self.name},
            )
            self._inflight = None
            self._batch = Batch(started=time.monotonic())
            self._retrying = False

    async def _flush_all(self) -> None:
        if self._inflight is not None:
            task = self._inflight
            await task
            self._inflight = None
        if not self._batch.empty():
            self._start_flush()
            task = self._inflight  # type: ignore[assignment]
            assert task is not None
            await task
            self._inflight = None


def catch_up(deriver: Deriver) -> None:
    """Derive every room left underived (all of them after an upgrade), logging progress (blocking)."""
    deriver.load()
    started = time.monotonic()
    last = [started]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5 or done == total:
            last[0] = now
            log.info(f"deriving connections: {done:,} of {total:,} rooms", extra={"service": SinkService.name})

    outcome = deriver.drain(progress)
    if outcome.rooms:
        log.info(
            f"derived {outcome.rooms:,} rooms ({outcome.events:,} events) in {time.monotonic() - started:.1f}s",
            extra={"service": SinkService.name},
        )


def _event_id(value: bytes | None) -> str | None:
    """The event id of a bad record when it can still be read (for the dead-letter row), else None."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    event_id = doc.get("event_id") if isinstance(doc, dict) else None
    return event_id if isinstance(event_id, str) else None


def _async(close: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """A synchronous, quick close as an awaitable one (for `Stage.closing`)."""

    async def run() -> None:
        close()

    return run
