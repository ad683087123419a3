"""Replay: re-enrich the raw topic with today's dimensions, so ClickHouse reflects the current customers
and users for past events (e.g. meetings held before their customer was registered).

The user ids come from USER_ID_SOURCE as the enrich stage recorded it on the dimensions topic
(`config:user_id_source`): changing the setting on enrich and then replaying moves history between users
the same way, since the record moved the dimension version.

Safe while the pipeline runs: the replay reads with its own group-less consumer (the enrich group's
offsets are untouched), stops at the end offsets captured when it started (the live stage handles
everything after), and writes ordinary enriched records whose `enrichment_version` is that of the
dimensions it applied: higher than any enrichment made with older dimensions. The sink keeps one row
per event id, the newest enrichment winning, so replaying moves usage between customers and never
counts it twice.

Events that fail to parse are counted and skipped, not dead-lettered again: the live stage wrote their
bad row when it first saw them.

History older than the raw topic's retention comes from the raw archive (every accepted body, kept by
the sink in ClickHouse), read through the read API: re-attribution reaches all of it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition

from enrich import archive
from enrich.dimensions import DimensionTable
from enrich.dimtopic import read_dimensions
from enrich.enricher import BadEvent, enrich
from pipeline import contract, kafka
from pipeline.contract import EnrichedEvent
from pipeline.settings import Settings

ProgressCallback = Callable[[int, int], None]


@dataclass
class ReplaySummary:
    """What a replay did, for the closing report."""

    total: int = 0
    read: int = 0
    enriched: int = 0
    bad: collections.Counter[str] = field(default_factory=collections.Counter)
    customer: collections.Counter[str] = field(default_factory=collections.Counter)
    user: collections.Counter[str] = field(default_factory=collections.Counter)
    dimension_version: int = 0
    user_id_source: str = ""
    # This process's USER_ID_SOURCE when it is set and differs from the topic's (which the replay used).
    user_id_source_ignored: str = ""
    rejected_dimensions: int = 0
    first_version: int = 0
    from_archive: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The summary as human-readable lines."""
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"replayed {self.read:,} raw events in {self.seconds:.1f}s ({rate:,.0f}/s) "
            f"with dimension version {self.dimension_version}",
            f"  user ids from: {self.user_id_source} (USER_ID_SOURCE as recorded on the dimensions topic)",
            f"  enriched: {self.enriched:,}; bad (skipped, already dead-lettered): {sum(self.bad.values()):,}",
            f"  from the raw archive (older than the raw topic holds): {self.from_archive:,}",
            "  customer: " + _counts(self.customer),
            "  user: " + _counts(self.user),
        ]
        if self.bad:
            out.append("  bad by reason: " + _counts(self.bad))
        if self.user_id_source_ignored:
            out.append(
                f"  warning: USER_ID_SOURCE={self.user_id_source_ignored} here was not used: the enrich stage "
                "records its setting on the dimensions topic when it starts; restart enrich with it, then replay"
            )
        if self.rejected_dimensions:
            out.append(f"  warning: {self.rejected_dimensions} invalid dimension records were ignored")
        out.append(
            "  these records supersede enrichments made with older dimensions "
            f"(enrichment_version {self.first_version})"
        )
        return out


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counter.items())) or "none"


async def _start_offsets(
    consumer: Any, tps: list[TopicPartition], end: dict[TopicPartition, int], since_ms: int | None
) -> dict[TopicPartition, int]:
    if since_ms is None:
        begin: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        return begin
    found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    # No record at or after `since_ms` in a partition: nothing to replay there.
    return {tp: found[tp].offset if found.get(tp) is not None else end[tp] for tp in tps}


async def _end_offsets(
    consumer: Any, tps: list[TopicPartition], end: dict[TopicPartition, int], until_ms: int | None
) -> dict[TopicPartition, int]:
    """The offsets to stop at: the topic's end now, or the first record at or after `until_ms`."""
    if until_ms is None:
        return end
    found = await consumer.offsets_for_times(dict.fromkeys(tps, until_ms))
    return {tp: min(end[tp], found[tp].offset) if found.get(tp) is not None else end[tp] for tp in tps}


async def topic_holds_since(consumer: Any, tps: list[TopicPartition]) -> int | None:
    """The time from which the raw topic still holds every partition's records (None: all of it, nothing
    was ever deleted). Earlier records aged out (retention) and are only in the raw archive."""
    begin: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
    end: dict[TopicPartition, int] = await consumer.end_offsets(tps)
    if not any(begin[tp] > 0 for tp in tps):
        return None
    held = 0
    for tp in tps:
        if begin[tp] >= end[tp]:
            # Everything this partition ever held has aged out: only the archive knows it.
            if begin[tp] > 0:
                held = max(held, contract.now_ms())
            continue
        consumer.seek(tp, begin[tp])
        first = await consumer.getone(tp)
        held = max(held, int(first.timestamp))
    return held


async def replay(
    settings: Settings,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    source: str = "auto",
    api: str = "http://127.0.0.1:8082",
    progress: ProgressCallback | None = None,
) -> ReplaySummary:
    """Re-enrich raw events received in `[since_ms, until_ms)` (by arrival time; all of them when absent)
    with today's dimensions, producing to the enriched topic; returns once everything is acknowledged.

    `source`: `topic` reads the raw topic only, `archive` the raw archive only (through the read API at
    `api`), `auto` the archive for the part of the range the topic no longer holds and the topic for
    the rest. An event in both is enriched twice with the same result: the sink keeps one row.
    """
    started = time.monotonic()
    summary = ReplaySummary()
    await kafka.prepare(settings)
    table, summary.rejected_dimensions = await read_dimensions(settings)
    summary.dimension_version = table.version
    # Replay uses the topic's USER_ID_SOURCE, like every enrich process, never its own environment's:
    # a replay that applied another setting at the same version would make results depend on who ran last.
    summary.user_id_source = table.user_id_source_text
    if settings.user_id_source and settings.user_id_source != summary.user_id_source:
        summary.user_id_source_ignored = settings.user_id_source
    summary.first_version = contract.enrichment_version(table.version)
    consumer = kafka.consumer(settings, group_id=None)
    producer = kafka.producer(settings)
    await consumer.start()
    await producer.start()
    try:
        tps = await kafka.partitions_of(settings, settings.topic_raw)
        consumer.assign(tps)
        topic_from = since_ms
        if source in ("auto", "archive"):
            held = await topic_holds_since(consumer, tps) if source == "auto" else None
            archive_until = until_ms if source == "archive" else held
            if archive_until is not None and (since_ms or 0) < archive_until:
                summary.from_archive = await _replay_archive(
                    settings, producer, table, summary, since_ms or 0, archive_until, api, progress
                )
                topic_from = archive_until if since_ms is None else max(since_ms, archive_until)
        if source in ("auto", "topic"):
            await _replay_topic(settings, consumer, producer, table, summary, tps, topic_from, until_ms, progress)
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    summary.seconds = time.monotonic() - started
    return summary


async def _replay_archive(
    settings: Settings,
    producer: Any,
    table: DimensionTable,
    summary: ReplaySummary,
    since_ms: int,
    until_ms: int,
    api: str,
    progress: ProgressCallback | None,
) -> int:
    """Re-enrich the archived events received in `[since_ms, until_ms)`; returns how many were read."""
    read = 0
    async for page in archive.read(api, settings.read_api_token, since_ms, until_ms):
        now = contract.now_ms()
        deliveries = []
        for row in page:
            read += 1
            headers = {
                contract.HEADER_RECEIVED_AT_MS: str(row.received_at_ms),
                contract.HEADER_EVENT_SOURCE: row.source,
            }
            event = _enrich_one(summary, row.body, headers, table, now, settings.store_display_names)
            if event is not None:
                key = row.room_name.encode() if row.room_name else event["room_name"].encode()
                deliveries.append(await _send_enriched(producer, settings, event, key))
        await asyncio.gather(*deliveries)
        if progress:
            # Progress through the archive is measured in time: how far the pages have come.
            span = max(1, until_ms - since_ms)
            progress(int((page[-1].received_at_ms - since_ms) / span * 1000), 1000)
    return read


async def _send_enriched(producer: Any, settings: Settings, event: EnrichedEvent, key: bytes) -> Any:
    """Hand one re-enriched event to the producer as the live stage writes it (same contract headers)."""
    headers = list(contract.ENRICHED_VERSION_HEADERS)
    return await producer.send(settings.topic_enriched, orjson.dumps(event), key=key, headers=headers)


def _enrich_one(
    summary: ReplaySummary,
    body: bytes,
    headers: dict[str, str],
    table: DimensionTable,
    now: int,
    display_names: bool = True,
) -> EnrichedEvent | None:
    """Enrich one replayed body, counting the outcome; a bad one is counted and skipped (its bad row was
    written when the live stage first saw it). Erasures and STORE_DISPLAY_NAMES apply as in the live stage."""
    summary.read += 1
    try:
        event = enrich(body, headers, table, now_ms=now, display_names=display_names)
    except BadEvent as exc:
        summary.bad[exc.reason] += 1
        return None
    summary.enriched += 1
    summary.customer[event["customer_resolution"]] += 1
    summary.user[event["user_resolution"]] += 1
    return event


async def _replay_topic(
    settings: Settings,
    consumer: Any,
    producer: Any,
    table: DimensionTable,
    summary: ReplaySummary,
    tps: list[TopicPartition],
    since_ms: int | None,
    until_ms: int | None,
    progress: ProgressCallback | None,
) -> None:
    """Re-enrich the raw topic's records in `[since_ms, until_ms)` (up to its end at the time of the call)."""
    end = await _end_offsets(consumer, tps, await consumer.end_offsets(tps), until_ms)
    start = await _start_offsets(consumer, tps, end, since_ms)
    for tp in tps:
        consumer.seek(tp, start[tp])
        if start[tp] >= end[tp]:
            consumer.pause(tp)
    summary.total = sum(max(0, end[tp] - start[tp]) for tp in tps)
    done = dict(start)
    pending = {tp for tp in tps if start[tp] < end[tp]}
    if progress:
        progress(0, summary.total)
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=1000, max_records=5000)
        if not batches:
            # Offsets can have gaps (e.g. transaction markers): trust the position, not the records.
            for tp in list(pending):
                done[tp] = await consumer.position(tp)
                if done[tp] >= end[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
            continue
        now = contract.now_ms()
        deliveries = []
        for tp, records in batches.items():
            for record in records:
                if record.offset >= end[tp]:
                    break  # written after the replay started (or after --to): the live stage enriches it
                headers = contract.headers_dict(record.headers)
                event = _enrich_one(summary, record.value or b"", headers, table, now, settings.store_display_names)
                if event is None:
                    continue
                key = record.key if record.key is not None else event["room_name"].encode()
                deliveries.append(await _send_enriched(producer, settings, event, key))
            done[tp] = min(end[tp], records[-1].offset + 1)
            if done[tp] >= end[tp]:
                pending.discard(tp)
                consumer.pause(tp)  # stop fetching what the live stage will handle
        # Bounded memory and an honest progress bar: a batch counts once the broker has it.
        await asyncio.gather(*deliveries)
        if progress:
            progress(sum(done[tp] - start[tp] for tp in tps), summary.total)
