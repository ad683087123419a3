"""Helpers for tests: building Whereby events, signing them, writing them to the topics.

Reading topics back, running a stage in-process and waiting come from the harness package (shared with
bench/ and chaos/) and are re-exported here, so a test imports its helpers from one place.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from harness.ready import wait_for
from harness.running import Running
from harness.topics import read_topic, topic_record_count
from pipeline import contract, kafka
from pipeline.settings import Settings

__all__ = [  # the harness's helpers, re-exported
    "Running",
    "read_topic",
    "topic_record_count",
    "wait_for",
]

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
