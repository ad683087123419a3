"""Signed webhooks in, usage out of the read API and the report command: all three stages in-process on
the real broker and the real engine, the sink serving the read routes on a real port.

`pipeline` below is shared with the page test (tests/e2e/test_web_page.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from enrich.service import EnrichService
from ingest.service import WEBHOOK_PATH, IngestService
from sink import store
from sink.service import SinkService
from tests.conftest import make_settings
from tests.support import Running, body, derived, event, publish_dimensions, signed_headers, wait_for

pytestmark = pytest.mark.e2e

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
CLI = Path(sys.executable).parent / "whereby-pipeline"


@dataclass
class Pipeline:
    """The running pipeline with its meetings delivered: the sink's base URL and the ids used."""

    url: str
    acme_room: str
    acme_session: str
    stranger_room: str
    stranger_session: str


def meetings(acme_room: str, acme_session: str, stranger_room: str, stranger_session: str) -> list[dict[str, Any]]:
    """Acme: Ada 610.5 s (11 min) and Bob 120 s (2 min), one session. A room with no registered prefix:
    Zed (externalId not registered) 61 s (2 min), one session."""
    return [
        event("room.client.joined", acme_room, 0, participant="p-ada", external_id="ext-ada", session=None),
        event("room.session.started", acme_room, 1, session=acme_session),
        event("room.client.joined", acme_room, 5, participant="p-bob", external_id="ext-bob", session=acme_session),
        event("room.client.left", acme_room, 125, participant="p-bob", external_id="ext-bob", session=acme_session),
        event("room.client.left", acme_room, 610.5, participant="p-ada", external_id="ext-ada", session=acme_session),
        event("room.session.ended", acme_room, 700, session=acme_session),
        event("room.client.joined", stranger_room, 0, participant="p-zed", external_id="ext-zed", session=None),
        event("room.session.started", stranger_room, 0.5, session=stranger_session),
        event(
            "room.client.left", stranger_room, 61, participant="p-zed", external_id="ext-zed", session=stranger_session
        ),
        event("room.session.ended", stranger_room, 70, session=stranger_session),
    ]


@pytest.fixture(scope="module")
async def pipeline(kafka_bootstrap: str, clickhouse_url: str) -> AsyncIterator[Pipeline]:
    """ingest → enrich → sink (serving the read API), every meeting posted as a signed webhook and stored."""
    from pipeline import kafka

    settings = make_settings(kafka_bootstrap, clickhouse_url)
    await kafka.wait_for_broker(settings, timeout_s=60)
    await kafka.ensure_topics(settings)
    await publish_dimensions(
        settings,
        [
            ("customer:c-acme", {"customer_id": "c-acme", "name": "Acme", "room_name_prefixes": ["acme-"]}),
            ("customer:c-idle", {"customer_id": "c-idle", "name": "Idle Ltd", "room_name_prefixes": ["idle-"]}),
            ("user:ext-ada", {"external_id": "ext-ada", "user_id": "u-ada", "customer_id": "c-acme"}),
            ("user:ext-bob", {"external_id": "ext-bob", "user_id": "u-bob", "customer_id": "c-acme"}),
        ],
    )
    ids = Pipeline("", f"/acme-{uuid.uuid4()}", str(uuid.uuid4()), f"/stranger-{uuid.uuid4()}", str(uuid.uuid4()))
    docs = meetings(ids.acme_room, ids.acme_session, ids.stranger_room, ids.stranger_session)
    async with (
        Running(SinkService(settings), http=True) as sink,
        Running(EnrichService(settings)),
        Running(IngestService(settings), http=True) as ingest,
        aiohttp.ClientSession() as http,
    ):
        for doc in docs:
            raw = body(doc)
            headers = signed_headers(raw, SECRET)
            async with http.post(ingest.url + WEBHOOK_PATH, data=raw, headers=headers) as response:
                assert response.status == 202, await response.text()
        client, db = sink.service.client, settings.clickhouse_database

        def stored() -> bool:
            dims = store.query_dicts(client, f"SELECT count() AS n FROM {db}.customers")[0]["n"]
            events = store.query_dicts(client, f"SELECT count() AS n FROM {db}.events FINAL")[0]["n"]
            return int(dims) == 2 and int(events) == len(docs)

        await wait_for(lambda: asyncio.to_thread(stored), timeout_s=60)
        await derived(client, db)
        ids.url = sink.url
        yield ids


async def get(url: str, status: int = 200, **params: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def test_usage_per_customer_has_every_registered_customer_and_the_unresolved_bucket(pipeline: Pipeline) -> None:
    doc = await get(pipeline.url + "/usage/customers")
    bots = {"recorder_minutes": 0, "streamer_minutes": 0, "assistant_minutes": 0, "captioner_minutes": 0}
    none = {"open_connections": 0, "incomplete_connections": 0, "estimated_connections": 0}
    assert doc == {
        "results": [
            {"customer_id": "c-acme", "customer_name": "Acme", "participant_minutes": 13, **bots, "connections": 2,
             **none, "unique_participants": 2, "unique_users": 2, "sessions": 1, "billable_participant_minutes": 13},
            {"customer_id": None, "customer_name": None, "participant_minutes": 2, **bots, "connections": 1,
             **none, "unique_participants": 1, "unique_users": 1, "sessions": 1, "billable_participant_minutes": 2},
            {"customer_id": "c-idle", "customer_name": "Idle Ltd", "participant_minutes": 0, **bots, "connections": 0,
             **none, "unique_participants": 0, "unique_users": 0, "sessions": 0, "billable_participant_minutes": 0},
        ]
    }  # fmt: skip
    later = await get(pipeline.url + "/usage/customers", **{"from": "2026-01-02"})
    assert [(r["customer_id"], r["participant_minutes"]) for r in later["results"]] == [("c-acme", 0), ("c-idle", 0)]


async def test_usage_per_user_needs_no_registration(pipeline: Pipeline) -> None:
    acme = await get(pipeline.url + "/usage/users", customer_id="c-acme")
    assert [
        (r["external_id"], r["user_id"], r["customer_id"], r["customer_name"], r["participant_minutes"], r["sessions"])
        for r in acme["results"]
    ] == [("ext-ada", "u-ada", "c-acme", "Acme", 11, 1), ("ext-bob", "u-bob", "c-acme", "Acme", 2, 1)]
    # ext-zed is registered nowhere: it still has its own row, with no user id or name.
    unresolved = await get(pipeline.url + "/usage/users", unresolved="true")
    assert [
        (r["external_id"], r["user_id"], r["user_name"], r["participant_minutes"]) for r in unresolved["results"]
    ] == [("ext-zed", None, None, 2)]


async def test_insights_drill_down_with_pages(pipeline: Pipeline) -> None:
    first = await get(pipeline.url + "/insights/rooms", limit="1")
    second = await get(pipeline.url + "/insights/rooms", limit="1", cursor=first["cursor"])
    assert first["cursor"] is not None and second["cursor"] is None
    assert [r["roomName"] for r in first["results"] + second["results"]] == [pipeline.acme_room, pipeline.stranger_room]
    assert first["results"][0]["customerId"] == "c-acme" and second["results"][0]["customerId"] is None

    sessions = await get(pipeline.url + "/insights/room-sessions", roomName=pipeline.acme_room)
    assert [(s["roomSessionId"], s["totalParticipantMinutes"]) for s in sessions["results"]] == [
        (pipeline.acme_session, 13)
    ]
    page = await get(pipeline.url + "/insights/participants", roomSessionId=pipeline.acme_session, limit="1")
    rest = await get(
        pipeline.url + "/insights/participants", roomSessionId=pipeline.acme_session, limit="1", cursor=page["cursor"]
    )
    assert rest["cursor"] is None
    assert [
        (p["participantId"], p["userId"], p["displayName"], p["minutes"]) for p in page["results"] + rest["results"]
    ] == [
        ("p-ada", "u-ada", "Someone", 11),
        ("p-bob", "u-bob", "Someone", 2),
    ]
    zed = await get(pipeline.url + "/insights/participants", externalId="ext-zed")
    assert [(p["roomName"], p["customerId"], p["minutes"]) for p in zed["results"]] == [
        (pipeline.stranger_room, None, 2)
    ]


async def test_bad_parameters_answer_400_with_a_json_error(pipeline: Pipeline) -> None:
    for path, params, message in [
        ("/usage/customers", {"from": "2026-31-01"}, "from must be an ISO date"),
        ("/insights/rooms", {"limit": "101"}, "limit must be a whole number from 1 to 100"),
        ("/insights/rooms", {"cursor": "bm90IGEgY3Vyc29y"}, "cursor is not valid"),
        ("/insights/room-sessions", {}, "roomName is required"),
        ("/usage/users", {"customer_id": "c-acme", "unresolved": "true"}, "not both"),
    ]:
        doc = await get(pipeline.url + path, 400, **params)
        assert message in doc["error"], path


async def _cli(*args: str) -> tuple[int, str, str]:
    """Run the installed `whereby-pipeline` console script, outside the repo (no .env picked up)."""
    env = {k: v for k, v in os.environ.items() if k != "READ_API_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd="/"
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_report_usage_reads_the_running_read_api(pipeline: Pipeline) -> None:
    code, out, err = await _cli("report", "usage", "--api", pipeline.url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["customer", "name"]
    assert lines[2].split() == ["c-acme", "Acme", "13", "0", "0", "0", "0", "13", "0", "0", "1", "2"]
    assert lines[3].split() == ["(unresolved)", "-", "2", "0", "0", "0", "0", "2", "0", "0", "1", "1"]
    assert lines[-1].split() == ["total", "15", "0", "0", "0", "0", "15", "0", "0", "2"]

    code, out, err = await _cli("report", "usage", "--api", pipeline.url, "--format", "json")
    assert code == 0, err
    assert orjson.loads(out) == await get(pipeline.url + "/usage/customers")

    code, out, err = await _cli(
        "report", "usage", "--api", pipeline.url, "--by", "user", "--customer-id", "c-acme", "--format", "csv"
    )
    assert code == 0, err
    assert list(csv.reader(io.StringIO(out))) == [
        ["customer_id", "user_key", "user_source", "external_id", "user_id", "user_name", "participant_minutes",
         "assistant_minutes", "open_connections", "incomplete_connections", "sessions"],
        ["c-acme", "ext-ada", "externalId", "ext-ada", "u-ada", "", "11", "0", "0", "0", "1"],
        ["c-acme", "ext-bob", "externalId", "ext-bob", "u-bob", "", "2", "0", "0", "0", "1"],
    ]  # fmt: skip

    code, out, err = await _cli("report", "usage", "--api", pipeline.url, "--by", "room", "--from", "yesterday")
    assert code == 2 and out == ""
    assert "read API answered 400: from must be an ISO date" in err
