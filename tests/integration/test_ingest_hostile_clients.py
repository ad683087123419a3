"""The webhook endpoint against clients that hold connections open, over real TCP on loopback.

Slow or withheld bodies, idle and half-sent request heads, floods of connections and compressed bodies:
none of them may stop a signed webhook from Whereby being stored and answered 202.
"""

from __future__ import annotations

import asyncio
import gzip
import resource
import uuid
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from ingest.service import WEBHOOK_PATH, IngestService
from pipeline import kafka
from pipeline.settings import Settings
from tests.conftest import make_settings
from tests.support import Running, body, event, read_topic, signed_headers, topic_record_count, wait_for

pytestmark = pytest.mark.integration

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
SLOW_CONNECTIONS = 2100  # more than INGEST_MAX_IN_FLIGHT (2000), the slots the slow bodies used to hold
DECLARED = 60_000  # each slow request announces a 60 kB body...
SENT = b'{"id":"slo'  # ...and sends these 10 bytes of it


async def started(kafka_bootstrap: str, clickhouse_url: str, **env: str) -> Settings:
    s = make_settings(kafka_bootstrap, clickhouse_url, **env)
    await kafka.ensure_topics(s)
    return s


def slow_request_head(port: int) -> bytes:
    return (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {DECLARED}\r\n\r\n"
    ).encode() + SENT


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_slow(port: int, count: int) -> list[Connection]:
    """`count` connections, each with a request head and the first 10 bytes of its body, then nothing."""
    opened: list[Connection] = []
    request = slow_request_head(port)
    for start in range(0, count, 100):  # in waves: the listen backlog is finite
        wave = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(start, min(count, start + 100)))
        )
        for _, writer in wave:
            writer.write(request)
        await asyncio.gather(*(writer.drain() for _, writer in wave))
        opened.extend(wave)
    return opened


async def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in connections), return_exceptions=True)


async def response_of(reader: asyncio.StreamReader, timeout_s: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the one response on a raw connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=timeout_s)
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    payload = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout=timeout_s)
    return int(lines[0].split()[1]), headers, payload


@pytest.fixture
def enough_file_descriptors() -> None:
    """Client and server ends of every connection live in this process: about two descriptors each."""
    needed = 2 * SLOW_CONNECTIONS + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post_signed(http: aiohttp.ClientSession, url: str, raw: bytes) -> tuple[int, dict[str, str]]:
    async with http.post(url + WEBHOOK_PATH, data=raw, headers=signed_headers(raw, SECRET)) as response:
        return response.status, await response.json(content_type=None)


async def test_2100_slow_bodies_do_not_turn_a_signed_webhook_away(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession, enough_file_descriptors: None
) -> None:
    # A body timeout far longer than the test, so every slow request is still held when the webhook comes.
    s = await started(kafka_bootstrap, clickhouse_url, WEBHOOK_BODY_TIMEOUT_S="120")
    async with Running(IngestService(s), http=True) as ingest:
        slow = await open_slow(ingest.server.port, SLOW_CONNECTIONS)
        try:
            # Every slow request reached the handler and is waiting for the rest of its body.
            await wait_for(lambda: ingest.server.requests_started >= SLOW_CONNECTIONS, timeout_s=60)
            raw = body(event("room.client.joined", f"/acme-{uuid.uuid4()}", 0, participant="p-1"))
            status, answer = await asyncio.wait_for(post_signed(http, ingest.url, raw), timeout=10)

            assert (status, answer["status"]) == (202, "accepted"), answer
            # ...while every slow request is still held open and unanswered.
            peeks = await asyncio.gather(*(asyncio.wait_for(r.read(1), 0.05) for r, _ in slow), return_exceptions=True)
            assert all(isinstance(p, TimeoutError) for p in peeks)
            [record] = await read_topic(s, s.topic_raw, expect=1)
            assert record.value == raw
        finally:
            await close_all(slow)


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_is_closed(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession
) -> None:
    s = await started(kafka_bootstrap, clickhouse_url, WEBHOOK_BODY_TIMEOUT_S="0.5")
    async with Running(IngestService(s), http=True) as ingest:
        slow = await open_slow(ingest.server.port, 20)
        try:
            answers = await asyncio.gather(*(response_of(reader) for reader, _ in slow))
            for status, headers, payload in answers:
                assert status == 408
                assert headers["content-type"].startswith("application/json")
                assert headers["connection"].lower() == "close"
                assert orjson.loads(payload) == {
                    "error": "request_timeout",
                    "detail": "the body did not arrive within 0.5s",
                }
            rest = await asyncio.gather(*(asyncio.wait_for(r.read(), 10) for r, _ in slow))
            assert rest == [b""] * len(slow)  # and then closed by the server
        finally:
            await close_all(slow)
        raw = body(event("room.session.ended", f"/acme-{uuid.uuid4()}", 0))
        assert (await post_signed(http, ingest.url, raw))[0] == 202
    assert await topic_record_count(s, s.topic_deadletter) == 0
    assert await topic_record_count(s, s.topic_raw) == 1


async def test_connections_over_the_cap_get_503_and_the_cap_frees_as_they_close(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession
) -> None:
    s = await started(kafka_bootstrap, clickhouse_url, HTTP_MAX_CONNECTIONS="50")
    async with Running(IngestService(s), http=True) as ingest:
        port = ingest.server.port
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        try:
            await wait_for(lambda: ingest.server.open_connections >= 50)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            status, headers, payload = await response_of(reader)
            writer.close()
            assert (status, headers["connection"].lower(), headers["retry-after"]) == (503, "close", "1")
            assert orjson.loads(payload)["error"] == "unavailable"
        finally:
            await close_all(held)
        await wait_for(lambda: ingest.server.open_connections == 0)
        raw = body(event("room.session.ended", f"/acme-{uuid.uuid4()}", 0))
        assert (await post_signed(http, ingest.url, raw))[0] == 202


@pytest.mark.parametrize(
    "sent", [b"", b"POST /webhooks/whereby HTTP/1.1\r\nHost: x\r\nContent-Ty"], ids=["idle", "half-head"]
)
async def test_idle_connections_and_unfinished_request_heads_are_closed(
    kafka_bootstrap: str, clickhouse_url: str, sent: bytes
) -> None:
    s = await started(kafka_bootstrap, clickhouse_url, HTTP_IDLE_TIMEOUT_S="0.5")
    async with Running(IngestService(s), http=True) as ingest:
        reader, writer = await asyncio.open_connection("127.0.0.1", ingest.server.port)
        writer.write(sent)
        await writer.drain()
        try:
            assert await asyncio.wait_for(reader.read(), timeout=20) == b""  # closed by the server, no answer
        finally:
            writer.close()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "GZIP", "identity, gzip"])
async def test_compressed_bodies_get_415_unread_and_are_never_inflated(
    kafka_bootstrap: str, clickhouse_url: str, http: aiohttp.ClientSession, encoding: str
) -> None:
    s = await started(kafka_bootstrap, clickhouse_url)
    raw = body(event("room.session.ended", f"/acme-{uuid.uuid4()}", 0))
    packed = gzip.compress(raw)
    headers = {**signed_headers(raw, SECRET), "Content-Encoding": encoding}
    async with Running(IngestService(s), http=True) as ingest:
        async with http.post(ingest.url + WEBHOOK_PATH, data=packed, headers=headers) as response:
            assert response.status == 415
            assert await response.json() == {
                "error": "unsupported_media_type",
                "detail": "Content-Encoding must be identity: send the JSON uncompressed",
            }
        identity = {**signed_headers(raw, SECRET), "Content-Encoding": "identity"}
        async with http.post(ingest.url + WEBHOOK_PATH, data=raw, headers=identity) as response:
            assert response.status == 202
    assert await topic_record_count(s, s.topic_raw) == 1
    assert await topic_record_count(s, s.topic_deadletter) == 0
