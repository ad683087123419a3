"""`replay` on a real broker: re-enriches the raw topic with today's dimensions, newer versions win."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from enrich.replay import replay
from enrich.service import EnrichService
from pipeline import contract
from pipeline.settings import Settings
from tests.support import Running, body, event, produce_raw, publish_dimensions, read_topic

pytestmark = pytest.mark.integration

HOUR_MS = 3600 * 1000


def by_event(records: list[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        doc = orjson.loads(record.value)
        out.setdefault(doc["event_id"], []).append(doc)
    return out


async def test_replay_reattributes_with_current_dimensions_and_supersedes(settings: Settings) -> None:
    room = f"/newco-{uuid.uuid4()}"
    old = [event("room.client.joined", room, i, participant=f"p-{i}", external_id="ext-1") for i in range(3)]
    recent = [event("room.client.left", room, 60 + i, participant=f"p-{i}", external_id="ext-1") for i in range(2)]
    hour_ago = contract.now_ms() - HOUR_MS
    await produce_raw(settings, [body(d) for d in old] + [b"{broken"], timestamp_ms=hour_ago)
    await produce_raw(settings, [body(d) for d in recent])
    async with Running(EnrichService(settings)):
        live = by_event(await read_topic(settings, settings.topic_enriched, expect=5))
        await read_topic(settings, settings.topic_deadletter, expect=1)
    assert {docs[0]["customer_resolution"] for docs in live.values()} == {"unresolved"}

    await publish_dimensions(
        settings,
        [
            ("customer:c-newco", {"customer_id": "c-newco", "name": "NewCo", "room_name_prefixes": ["newco-"]}),
            ("user:ext-1", {"external_id": "ext-1", "user_id": "u-1", "customer_id": "c-newco"}),
        ],
    )
    seen: list[tuple[int, int]] = []

    summary = await replay(settings, progress=lambda done, total: seen.append((done, total)))

    assert (summary.total, summary.read, summary.enriched, dict(summary.bad)) == (6, 6, 5, {"invalid_json": 1})
    assert dict(summary.customer) == {"prefix": 5} and dict(summary.user) == {"external_id": 5}
    assert summary.dimension_version == 2
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    after = by_event(await read_topic(settings, settings.topic_enriched, expect=10))
    assert sorted(after) == sorted(live)
    for event_id, docs in after.items():
        assert len(docs) == 2
        first, replayed = sorted(docs, key=lambda d: d["enrichment_version"])
        assert first == live[event_id][0]
        assert (replayed["customer_id"], replayed["user_id"], replayed["dimension_version"]) == ("c-newco", "u-1", 2)
        assert replayed["enrichment_version"] > first["enrichment_version"]
    # Bad rows were written once, by the live stage; the replay only counts them.
    assert len(await read_topic(settings, settings.topic_deadletter, expect=2, timeout_s=1)) == 1

    since = await replay(settings, since_ms=hour_ago + HOUR_MS // 2)

    assert (since.total, since.read, since.enriched) == (2, 2, 2)
    assert len(await read_topic(settings, settings.topic_enriched, expect=12)) == 12


async def test_replay_of_an_empty_range_is_a_quick_no_op(settings: Settings) -> None:
    summary = await replay(settings, since_ms=contract.now_ms() + HOUR_MS)

    assert (summary.total, summary.read) == (0, 0)
    assert summary.lines()[0].startswith("replayed 0 raw events")
