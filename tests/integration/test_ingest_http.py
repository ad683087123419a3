"""The webhook endpoint over real HTTP on loopback, producing to a real broker: every answer it gives.

Each test gets its own topics (see tests/conftest.py), so "nothing on the topic" is an exact count.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from ingest import signature
from ingest.service import OPENAPI_PATH, WEBHOOK_PATH, IngestService
from pipeline import contract, deadletters, kafka
from pipeline.settings import Settings
from tests.conftest import make_settings
from tests.support import Running, body, event, read_topic, signed_headers, topic_record_count, wait_for

pytestmark = pytest.mark.integration

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
LIMIT = 64 * 1024


@pytest.fixture
async def ingest(settings: Settings) -> AsyncIterator[Running]:
    """A receiver on fresh topics, for tests that store something."""
    async with Running(IngestService(settings), http=True) as running:
        yield running


@pytest.fixture(scope="module")
async def gate_settings(kafka_bootstrap: str, clickhouse_url: str) -> Settings:
    return await isolated_settings(kafka_bootstrap, clickhouse_url)


@pytest.fixture(scope="module")
async def gate(gate_settings: Settings) -> AsyncIterator[Running]:
    """One receiver shared by the tests whose requests must all be refused: its topics stay empty,
    and each of those tests checks that they still are."""
    async with Running(IngestService(gate_settings), http=True) as running:
        yield running


async def assert_nothing_stored(s: Settings) -> None:
    assert await topic_record_count(s, s.topic_raw) == 0
    assert await topic_record_count(s, s.topic_deadletter) == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def isolated_settings(kafka_bootstrap: str, clickhouse_url: str, **overrides: str) -> Settings:
    s = make_settings(kafka_bootstrap, clickhouse_url, **overrides)
    await kafka.ensure_topics(s)
    return s


async def post(
    http: aiohttp.ClientSession, url: str, raw: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with http.post(url + WEBHOOK_PATH, data=raw, headers=headers) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def raw_http(url: str, request: bytes) -> bytes:
    """Send bytes on a fresh connection (without ever sending a body they announce); return the response."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(reader.readexactly(length), timeout=10)
    finally:
        writer.close()


# ---------------------------------------------------------------- accepted


async def test_accepted_event_is_on_the_raw_topic_exactly_as_sent(
    settings: Settings, ingest: Running, http: aiohttp.ClientSession
) -> None:
    doc = event("room.client.joined", f"/acme-{uuid.uuid4()}", 0, participant="p-1")
    # Whitespace and key order a re-serialiser would change: the stored bytes must be the sent bytes.
    raw = b'{ "type":"room.client.joined", ' + orjson.dumps(doc)[1:]
    before = contract.now_ms()
    status, answer, _ = await post(http, ingest.url, raw, signed_headers(raw, SECRET))
    after = contract.now_ms()

    assert (status, answer) == (202, {"status": "accepted", "id": doc["id"]})
    [record] = await read_topic(settings, settings.topic_raw, expect=1)
    assert record.value == raw
    assert record.key == doc["data"]["roomName"].encode()
    headers = contract.headers_dict(record.headers)
    assert headers[contract.HEADER_EVENT_ID] == doc["id"]
    assert headers[contract.HEADER_EVENT_TYPE] == "room.client.joined"
    assert headers[contract.HEADER_INGRESS_INSTANCE] == settings.instance_id
    assert before <= int(headers[contract.HEADER_RECEIVED_AT_MS]) <= after


async def test_unknown_type_and_missing_room_are_accepted_and_forwarded(
    settings: Settings, ingest: Running, http: aiohttp.ClientSession
) -> None:
    doc = {"id": "e-1", "apiVersion": "2.0", "createdAt": "2026-01-01T00:00:00Z", "type": "future.thing", "data": {}}
    raw = body(doc)
    status, _, _ = await post(http, ingest.url, raw, signed_headers(raw, SECRET))
    assert status == 202
    [record] = await read_topic(settings, settings.topic_raw, expect=1)
    assert (record.value, record.key) == (raw, None)
    assert contract.headers_dict(record.headers)[contract.HEADER_EVENT_TYPE] == "future.thing"


async def test_concurrent_requests_are_each_acknowledged_and_stored_once(
    settings: Settings, ingest: Running, http: aiohttp.ClientSession
) -> None:
    rooms = [f"/acme-{uuid.uuid4()}" for _ in range(5)]
    raws = [body(event("room.client.joined", rooms[i % 5], i, participant=f"p-{i}")) for i in range(200)]
    results = await asyncio.gather(*(post(http, ingest.url, raw, signed_headers(raw, SECRET)) for raw in raws))
    assert [status for status, _, _ in results] == [202] * len(raws)
    records = await read_topic(settings, settings.topic_raw, expect=len(raws))
    assert sorted(r.value for r in records) == sorted(raws)
    # Per-room order is per-partition order: every room's records sit in one partition.
    assert all(len({r.partition for r in records if r.key == room.encode()}) == 1 for room in rooms)


# ---------------------------------------------------------------- cheap checks


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_other_methods_get_405_with_allow(gate: Running, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, gate.url + WEBHOOK_PATH, data=b"{}") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"] == "method_not_allowed"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_content_type_gets_415(
    gate: Running, http: aiohttp.ClientSession, content_type: str | None
) -> None:
    raw = body(event("room.session.started", "/r", 0))
    headers = signed_headers(raw, SECRET)
    del headers["Content-Type"]
    if content_type:
        headers["Content-Type"] = content_type
    status, answer, _ = await post(http, gate.url, raw, headers)
    assert (status, answer["error"]) == (415, "unsupported_media_type")


async def test_declared_oversize_body_gets_413_without_being_read(gate: Running) -> None:
    # Ten megabytes declared, none sent: the answer comes anyway, and the connection is not kept alive
    # (aiohttp discards what still arrives for a bounded lingering time, so the client sees the answer).
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Whereby-Signature: t=1,v1={'0' * 64}\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n"
    ).encode()
    response = await raw_http(gate.url, head)
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"payload_too_large"' in response
    assert b"Connection: close" in response


async def test_expect_continue_with_oversize_length_is_refused_before_the_body(gate: Running) -> None:
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {LIMIT + 1}\r\n\r\n"
    ).encode()
    response = await raw_http(gate.url, head)
    assert response.startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in response


async def test_chunked_body_over_the_limit_gets_413(
    gate_settings: Settings, gate: Running, http: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):  # 100 KiB, no Content-Length: only counting the bytes can catch it
            yield b" " * 1024

    async with http.post(
        gate.url + WEBHOOK_PATH, data=chunks(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"
    await assert_nothing_stored(gate_settings)


async def test_body_exactly_at_the_limit_is_read_and_checked(gate: Running, http: aiohttp.ClientSession) -> None:
    raw = b" " * LIMIT
    status, answer, _ = await post(http, gate.url, raw, {"Content-Type": "application/json"})
    assert (status, answer["detail"]) == (401, "Whereby-Signature header is missing")


# ---------------------------------------------------------------- signature


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "Whereby-Signature header is missing"),
        ("v1=" + "0" * 64, "Whereby-Signature has no valid t=<unix seconds>"),
        ("t=now,v1=" + "0" * 64, "Whereby-Signature has no valid t=<unix seconds>"),
        ("t={now}", "Whereby-Signature has no valid v1=<64 hex characters>"),
        ("t={old},v1={good}", "timestamp outside tolerance of 300s"),
        ("t={future},v1={good}", "timestamp outside tolerance of 300s"),
        ("t={now},v1=" + "0" * 64, "no signature matches the body"),
        ("wrong-secret", "no signature matches the body"),
    ],
)
async def test_signature_failures_get_401_naming_the_check(
    gate_settings: Settings, gate: Running, http: aiohttp.ClientSession, header: str | None, detail: str
) -> None:
    raw = body(event("room.client.left", f"/acme-{uuid.uuid4()}", 0, participant="p"))
    now = int(time.time())
    headers = {"Content-Type": "application/json"}
    if header == "wrong-secret":
        headers["Whereby-Signature"] = signature.sign(raw, "not-the-secret")
    elif header is not None:
        # `good` is the right digest for `now`: only the timestamp check can reject those headers.
        headers["Whereby-Signature"] = header.format(
            now=now, old=now - 301, future=now + 301, good=signature.compute(SECRET, str(now), raw)
        )
    status, answer, _ = await post(http, gate.url, raw, headers)

    assert (status, answer) == (401, {"error": "invalid_signature", "detail": detail})
    assert signature.compute(SECRET, str(now), raw) not in answer["detail"]
    await assert_nothing_stored(gate_settings)


async def test_rotation_accepts_old_and_new_secret_and_several_v1_values(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession
) -> None:
    new_secret, old_secret = "new-secret-1-9f3c2a7d5e", "old-secret-0-4b8e1d6c2a"  # 16+ characters, as required
    s = await isolated_settings(kafka_bootstrap, clickhouse_url, WHEREBY_WEBHOOK_SECRET=f"{new_secret}, {old_secret}")
    raws = [body(event("room.session.ended", f"/acme-{uuid.uuid4()}", i)) for i in range(4)]
    async with Running(IngestService(s), http=True) as ingest:
        new = await post(http, ingest.url, raws[0], signed_headers(raws[0], new_secret))
        old = await post(http, ingest.url, raws[1], signed_headers(raws[1], old_secret))
        ts = int(time.time())
        both = signature.sign(raws[2], "retired", ts) + "," + signature.sign(raws[2], old_secret, ts).split(",")[1]
        several = await post(http, ingest.url, raws[2], {"Content-Type": "application/json", "Whereby-Signature": both})
        retired = await post(http, ingest.url, raws[3], signed_headers(raws[3], "retired"))
    assert [new[0], old[0], several[0], retired[0]] == [202, 202, 202, 401]
    stored = await read_topic(s, s.topic_raw, expect=3)
    assert sorted(r.value for r in stored) == sorted(raws[:3])


# ---------------------------------------------------------------- envelope → 400 + dead letter

_GOOD: dict[str, Any] = {"id": "evt-1", "createdAt": "2026-01-01T00:00:00.000Z", "type": "room.client.joined"}


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"not json", "invalid_json", None),
        (b'["an", "array"]', "not_an_object", None),
        (orjson.dumps({**_GOOD, "id": 7, "data": {}}), "invalid_id", "id"),
        (orjson.dumps({k: v for k, v in _GOOD.items() if k != "type"} | {"data": {}}), "invalid_type", "type"),
        (orjson.dumps({**_GOOD, "createdAt": "last tuesday", "data": {}}), "invalid_createdAt", "createdAt"),
        (orjson.dumps({**_GOOD, "data": "nope"}), "invalid_data", "data"),
        (orjson.dumps(_GOOD), "invalid_data", "data"),
    ],
)
async def test_signed_malformed_body_gets_400_and_goes_to_the_dead_letter_topic(
    settings: Settings,
    ingest: Running,
    http: aiohttp.ClientSession,
    raw: bytes,
    reason: str,
    field: str | None,
) -> None:
    status, answer, _ = await post(http, ingest.url, raw, signed_headers(raw, SECRET))
    assert status == 400
    assert answer["error"] == "invalid_event"
    assert answer.get("field") == field

    [record] = await read_topic(settings, settings.topic_deadletter, expect=1)
    row = orjson.loads(record.value)
    assert (row["stage"], row["reason"], row["detail"]) == ("ingest", reason, answer["detail"])
    assert deadletters.bad_row_payload(row) == raw  # what Whereby signed, kept whole
    assert row["event_id"] == ("evt-1" if reason in {"invalid_createdAt", "invalid_data", "invalid_type"} else None)
    assert await topic_record_count(settings, settings.topic_raw) == 0


async def test_unsigned_malformed_body_is_401_and_not_dead_lettered(
    gate_settings: Settings, gate: Running, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await post(http, gate.url, b"not json", {"Content-Type": "application/json"})
    assert status == 401
    await assert_nothing_stored(gate_settings)


async def test_dead_letter_failure_answers_503_so_whereby_retries(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession
) -> None:
    s = make_settings(kafka_bootstrap, clickhouse_url)
    # A dead-letter topic that refuses every bad row (they carry the body, so they exceed 1 KiB).
    specs = kafka.topic_specs(s)
    for spec in specs:
        if spec.name == s.topic_deadletter:
            spec.topic_configs["max.message.bytes"] = "1024"
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(specs)
    finally:
        await admin.close()
    raw = orjson.dumps({"id": 1, "padding": "x" * 2048})
    async with Running(IngestService(s), http=True) as ingest:
        status, answer, headers = await post(http, ingest.url, raw, signed_headers(raw, SECRET))
    assert (status, answer["error"]) == (503, "unavailable")
    assert int(headers["Retry-After"]) >= 1
    assert await topic_record_count(s, s.topic_raw) == 0


# ---------------------------------------------------------------- bounded in-flight work


async def test_saturated_receiver_answers_503_instead_of_queueing(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession
) -> None:
    s = await isolated_settings(kafka_bootstrap, clickhouse_url, INGEST_MAX_IN_FLIGHT="1")
    raws = [body(event("room.session.started", f"/acme-{uuid.uuid4()}", i)) for i in range(40)]
    async with Running(IngestService(s), http=True) as ingest:
        # One slot: whichever request is waiting for the broker's acknowledgement holds it, and every
        # other body read meanwhile is told to come back later instead of queueing.
        results = await asyncio.gather(*(post(http, ingest.url, raw, signed_headers(raw, SECRET)) for raw in raws))
    statuses = [status for status, _, _ in results]
    assert set(statuses) == {202, 503}, statuses
    for status, answer, headers in results:
        if status == 503:
            assert (answer["detail"], headers["Retry-After"]) == ("too many requests in flight", "1")
    stored = await read_topic(s, s.topic_raw, expect=statuses.count(202))
    assert sorted(r.value for r in stored) == sorted(raw for raw, st in zip(raws, statuses, strict=True) if st == 202)


async def test_a_body_still_on_its_way_holds_no_in_flight_slot(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession
) -> None:
    s = await isolated_settings(kafka_bootstrap, clickhouse_url, INGEST_MAX_IN_FLIGHT="1")
    async with Running(IngestService(s), http=True) as ingest:
        reader, writer = await asyncio.open_connection("127.0.0.1", ingest.server.port)
        writer.write(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 10\r\n\r\n{{}}".encode()
        )
        await writer.drain()
        await wait_for(lambda: ingest.server.requests_started == 1)  # it reached the handler, waiting for its body
        raw = body(event("room.session.started", "/r", 0))
        status, _, _ = await post(http, ingest.url, raw, signed_headers(raw, SECRET))
        assert status == 202  # the only slot was free: the first request is still sending its body
        writer.write(b"        ")  # finish the first body: it is answered normally
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        writer.close()
        assert first.startswith(b"HTTP/1.1 401")


# ---------------------------------------------------------------- operations endpoints


async def test_health_readiness_and_openapi(gate: Running, http: aiohttp.ClientSession) -> None:
    async with http.get(gate.url + "/healthz") as response:
        assert response.status == 200
    async with http.get(gate.url + "/readyz") as response:
        assert (response.status, await response.json()) == (200, {"ready": True})
    async with http.get(gate.url + OPENAPI_PATH) as response:
        assert response.status == 200
        doc = await response.json()
    assert doc["openapi"].startswith("3.")
    operation = doc["paths"][WEBHOOK_PATH]["post"]
    assert set(operation["responses"]) == {"202", "400", "401", "405", "408", "413", "415", "503"}
    assert operation["parameters"][0]["name"] == "Whereby-Signature"
    envelope_schema = doc["components"]["schemas"]["Envelope"]
    assert envelope_schema["required"] == ["id", "type", "createdAt", "data"]


async def test_metrics_count_outcomes_with_bounded_labels(ingest: Running, http: aiohttp.ClientSession) -> None:
    room = f"/secret-room-{uuid.uuid4()}"
    accepted = body(event("room.client.joined", room, 0, participant="p"))
    odd_type = body({**event("room.client.joined", room, 1), "type": f"custom.{uuid.uuid4()}"})
    for raw in (accepted, odd_type):
        assert (await post(http, ingest.url, raw, signed_headers(raw, SECRET)))[0] == 202
    assert (await post(http, ingest.url, accepted, {"Content-Type": "application/json"}))[0] == 401
    async with http.get(ingest.url + "/metrics") as response:
        text = await response.text()
    for name in (
        'whereby_ingest_requests_total{outcome="accepted",reason="stored"}',
        'whereby_ingest_requests_total{outcome="rejected",reason="missing_header"}',
        'whereby_ingest_request_duration_seconds_bucket{le="0.005",outcome="accepted"}',
        'whereby_ingest_produce_duration_seconds_count{result="ok",topic="raw"}',
        "whereby_ingest_in_flight_requests ",
        "whereby_ingest_request_body_bytes_bucket",
        'whereby_ingest_events_total{type="room.client.joined"}',
        'whereby_ingest_events_total{type="other"}',
        "whereby_ingest_broker_ready 1.0",
    ):
        assert name in text, name
    assert room not in text
    assert "custom." not in text
