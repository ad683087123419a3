"""Kafka records written by the previous release are read, not dead-lettered (issue 19).

tests/integration/test_upgrade.py starts from the previous release's *store*, which already holds every
event: the usage numbers there would match even if this release dead-lettered every old record. Here the
store is empty, so the numbers can only come from the old records: the previous release's raw,
enriched, dimension and dead-letter records (tests/fixtures/previous_release, contract version 1, no
version header or field) are put on fresh topics, this release's enrich and sink read them from the
beginning as real processes, and then:

- the read API gives the usage numbers the previous release reported for the same events;
- enrich re-enriched every old raw webhook against the old dimension records, to the same customer and
  user as the previous release did;
- the dead-letter topic holds nothing new but the one webhook the previous release also rejected: no
  old record of any topic was dead-lettered by the sink, or by enrich for its version.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness.stack import Stack, isolated_env
from pipeline import kafka
from pipeline.settings import Settings
from tests.integration.test_upgrade import FIXTURES, get, keep, seed_topics, wait_until
from tests.support import read_topic, topic_record_count

pytestmark = pytest.mark.integration

BROKEN = "f" * 64  # the webhook without a participantId the previous release dead-lettered


def old_records(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / "records" / f"{name}.jsonl").read_text().splitlines()]


async def group_caught_up(settings: Settings, group: str, topics: list[str]) -> bool:
    """True when `group` has committed every record of `topics` (it has read them all and acted on them)."""
    consumer = kafka.consumer(settings, group_id=group)
    await consumer.start()  # not subscribed: it only reads the group's committed offsets
    try:
        tps = [tp for topic in topics for tp in await kafka.partitions_of(settings, topic)]
        end = await consumer.end_offsets(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if end[tp] and (committed is None or committed < end[tp]):
                return False
        return True
    finally:
        await consumer.stop()


def test_the_previous_release_records_are_read_not_dead_lettered(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = isolated_env(
        kafka_bootstrap,
        f"chdb://{tmp_path / 'clickhouse'}",
        CLICKHOUSE_DATABASE="whereby",
        SINK_BATCH_SECONDS="0.2",
    )
    settings = Settings.from_env(env)
    assert asyncio.run(seed_topics(settings)) == {"dimensions": 6, "raw": 26, "enriched": 25, "deadletter": 1}

    old_enriched = {
        orjson.loads(r["value"]["text"])["event_id"]: orjson.loads(r["value"]["text"]) for r in old_records("enriched")
    }
    raw_ids = {orjson.loads(r["value"]["text"])["id"] for r in old_records("raw")}
    assert raw_ids - set(old_enriched) == {BROKEN}

    stack = Stack(env, tmp_path / "logs")
    try:
        stack.start("sink")
        stack.start("enrich")
        old = json.loads((FIXTURES / "usage.json").read_text())
        minutes = ("customer_id", "participant_minutes", "recorder_minutes", "streamer_minutes", "sessions")
        api = stack.url("sink")

        def same_usage() -> bool:
            now = keep(get(api + "/usage/customers")["results"], *minutes)
            assert now == keep(old["customers"]["results"], *minutes)
            return True

        wait_until(same_usage, timeout_s=90)
        assert keep(get(api + "/usage/rooms")["results"], "room_name", *minutes) == keep(
            old["rooms"]["results"], "room_name", *minutes
        )

        # Both consumers have acted on every record of every topic they read (the sink: all four).
        topics = [settings.topic_raw, settings.topic_enriched, settings.topic_dimensions, settings.topic_reconciliation]
        deadline = time.monotonic() + 60
        while not (
            asyncio.run(group_caught_up(settings, settings.enrich_group, [settings.topic_raw]))
            and asyncio.run(group_caught_up(settings, settings.sink_group, topics))
        ):
            assert time.monotonic() < deadline, "enrich or sink did not get through the old records"
            time.sleep(0.5)

        # Enrich read every old raw webhook with the old dimension records: same customer and user.
        enriched = asyncio.run(read_topic(settings, settings.topic_enriched, expect=50))
        fresh = [orjson.loads(r.value) for r in enriched if "contract_version" in orjson.loads(r.value)]
        assert sorted(e["event_id"] for e in fresh) == sorted(old_enriched)
        for event in fresh:
            before = old_enriched[event["event_id"]]
            assert (event["customer_id"], event["user_id"]) == (before["customer_id"], before["user_id"])

        # Dead letters: the previous release's one, and enrich rejecting the same webhook again; no other.
        count = asyncio.run(topic_record_count(settings, settings.topic_deadletter))
        letters = [
            orjson.loads(r.value) for r in asyncio.run(read_topic(settings, settings.topic_deadletter, expect=count))
        ]
        assert [(d["stage"], d["event_id"]) for d in letters] == [("enrich", BROKEN)] * 2, letters
    finally:
        stack.stop_all()
