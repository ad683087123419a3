"""Helpers for tests: building Whereby events, signing them, reading topics back."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from pipeline import contract, kafka
from pipeline.settings import Settings

T0 = datetime(2026, 1, 1, 9, 0, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def event(
    event_type: str,
    room: str,
    at: datetime | float,
    *,
    participant: str | None = None,
    session: str | None = "sess-1",
    external_id: str | None = None,
    role: str = "visitor",
    metadata: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A Whereby event body; `at` is a datetime or seconds after T0."""
    when = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    data: dict[str, Any] = {"meetingId": "1001", "roomName": room, "roomSessionId": session, "subdomain": "examplecorp"}
    if participant is not None:
        data.update(
            participantId=participant,
            displayName="Someone",
            metadata=metadata,
            externalId=external_id,
            roleName=role,
            numClients=1,
            numClientsByRoleName={role: 1},
            isDialIn=False,
        )
    return {
        "id": event_id or uuid.uuid4().hex + uuid.uuid4().hex,
        "apiVersion": "1.0",
        "createdAt": iso(when),
        "type": event_type,
        "data": data,
    }


def body(doc: dict[str, Any]) -> bytes:
    """Compact JSON, as Whereby sends it."""
    return orjson.dumps(doc)


async def read_topic(
    settings: Settings, topic: str, *, expect: int, timeout_s: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the beginning until `expect` records arrived (or the timeout)."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(out) < expect and loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


class Running:
    """Runs a stage in-process (start → run task → stop), the way `pipeline.runner.serve` does.

    With `http=True` the stage's HTTP app is served on a real loopback port (`self.url`).
    """

    def __init__(self, service: Any, *, http: bool = False) -> None:
        self.service = service
        self.http = http
        self.url = ""
        self._task: asyncio.Task[None] | None = None
        self._runner: Any = None

    async def __aenter__(self) -> Running:
        from aiohttp import web

        from pipeline.runner import build_app

        try:
            await self.service.start()
        except BaseException:
            await self.service.stop()
            raise
        self._task = asyncio.create_task(self.service.run())
        if self.http:
            self._runner = web.AppRunner(build_app(self.service), shutdown_timeout=5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self.service.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout=30)


async def publish_dimensions(settings: Settings, records: list[tuple[str, dict[str, Any] | None]]) -> None:
    """Write dimension records (key, value or None for a tombstone) to the dimensions topic."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(
                settings.topic_dimensions, None if value is None else orjson.dumps(value), key=key.encode()
            )
    finally:
        await producer.stop()


async def wait_for(predicate: Any, *, timeout_s: float = 30.0, interval_s: float = 0.2) -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy; fail after the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Any = None
    while loop.time() < deadline:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


async def derived(client: Any, database: str, *, timeout_s: float = 30.0) -> None:
    """Wait until the sink's deriver has turned every stored event into connection and session rows."""
    from sink.derive import caught_up

    await wait_for(lambda: asyncio.to_thread(caught_up, client, database), timeout_s=timeout_s)


async def produce_raw(
    settings: Settings, bodies: list[bytes], *, timestamp_ms: int | None = None
) -> list[tuple[int, int]]:
    """Write raw webhook bodies as ingest does (key roomName, contract headers); returns (partition, offset)s.

    A body that is not a JSON object with `data.roomName` is written without a key and without event headers.
    """
    producer = kafka.producer(settings)
    await producer.start()
    try:
        futures = []
        for raw in bodies:
            key: bytes | None = None
            headers: list[tuple[str, bytes]] = []
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict):
                data = doc.get("data")
                room = data.get("roomName") if isinstance(data, dict) else None
                key = room.encode() if isinstance(room, str) else None
                headers = [
                    (contract.HEADER_EVENT_ID, str(doc.get("id", "")).encode()),
                    (contract.HEADER_EVENT_TYPE, str(doc.get("type", "")).encode()),
                ]
            headers.append((contract.HEADER_RECEIVED_AT_MS, str(contract.now_ms()).encode()))
            futures.append(
                await producer.send(settings.topic_raw, raw, key=key, headers=headers, timestamp_ms=timestamp_ms)
            )
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def signed_headers(raw: bytes, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """Request headers Whereby would send with `raw`: JSON content type and a `Whereby-Signature`."""
    from ingest import signature

    return {"Content-Type": "application/json", "Whereby-Signature": signature.sign(raw, secret, timestamp)}


async def topic_record_count(settings: Settings, topic: str) -> int:
    """How many records `topic` holds (sum of end offsets): exact at once, no waiting for a timeout.

    Only meaningful for topics written without transactions (no control records), as all of ours are.
    """
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await kafka.partitions_of(settings, topic)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        return sum(end[tp] - begin[tp] for tp in tps)
    finally:
        await consumer.stop()
