"""Replay: re-enrich the raw topic with today's dimensions, so ClickHouse reflects the current customers
and users for past events (e.g. meetings held before their customer was registered).

Safe while the pipeline runs: the replay reads with its own group-less consumer (the enrich group's
offsets are untouched), stops at the end offsets captured when it started (the live stage handles
everything after), and writes ordinary enriched records whose `enrichment_version` is that of the
dimensions it applied: higher than any enrichment made with older dimensions. The sink keeps one row
per event id, the newest enrichment winning, so replaying moves usage between customers and never
counts it twice.

Events that fail to parse are counted and skipped, not dead-lettered again: the live stage wrote their
bad row when it first saw them.
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

from enrich.dimtopic import read_dimensions
from enrich.enricher import BadEvent, enrich
from pipeline import contract, kafka
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
    rejected_dimensions: int = 0
    first_version: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """The summary as human-readable lines."""
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"replayed {self.read:,} raw events in {self.seconds:.1f}s ({rate:,.0f}/s) "
            f"with dimension version {self.dimension_version}",
            f"  enriched: {self.enriched:,}; bad (skipped, already dead-lettered): {sum(self.bad.values()):,}",
            "  customer: " + _counts(self.customer),
            "  user: " + _counts(self.user),
        ]
        if self.bad:
            out.append("  bad by reason: " + _counts(self.bad))
        if self.rejected_dimensions:
            out.append(f"  warning: {self.rejected_dimensions} invalid dimension records were ignored")
        out.append(
            f"  these records supersede enrichments made with older dimensions (enrichment_version {self.first_version})"
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


async def replay(
    settings: Settings, *, since_ms: int | None = None, progress: ProgressCallback | None = None
) -> ReplaySummary:
    """Re-enrich the raw topic (from `since_ms`, by Kafka record time, or from the beginning) up to its
    end at the time of the call, producing to the enriched topic; returns once everything is acknowledged.
    """
    started = time.monotonic()
    summary = ReplaySummary()
    await kafka.prepare(settings)
    table, summary.rejected_dimensions = await read_dimensions(settings)
    summary.dimension_version = table.version
    consumer = kafka.consumer(settings, group_id=None)
    producer = kafka.producer(settings)
    await consumer.start()
    await producer.start()
    try:
        tps = await kafka.partitions_of(settings, settings.topic_raw)
        consumer.assign(tps)
        end: dict[TopicPartition, int] = await consumer.end_offsets(tps)
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
        summary.first_version = contract.enrichment_version(table.version)
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
                        break  # written after the replay started: the live stage enriches it
                    summary.read += 1
                    try:
                        event = enrich(
                            record.value or b"",
                            contract.headers_dict(record.headers),
                            table,
                            now_ms=now,
                        )
                    except BadEvent as exc:
                        summary.bad[exc.reason] += 1
                        continue
                    summary.enriched += 1
                    summary.customer[event["customer_resolution"]] += 1
                    summary.user[event["user_resolution"]] += 1
                    key = record.key if record.key is not None else event["room_name"].encode()
                    deliveries.append(await producer.send(settings.topic_enriched, orjson.dumps(event), key=key))
                done[tp] = min(end[tp], records[-1].offset + 1)
                if done[tp] >= end[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)  # stop fetching what the live stage will handle
            # Bounded memory and an honest progress bar: a batch counts once the broker has it.
            await asyncio.gather(*deliveries)
            if progress:
                progress(sum(done[tp] - start[tp] for tp in tps), summary.total)
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    summary.seconds = time.monotonic() - started
    return summary
