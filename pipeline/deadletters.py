"""The dead-letter topic's one writer: a :class:`~pipeline.failures.Failure` and the bytes it concerns
become one bad-row record, built and sent the same way by every stage.

The bad row's fields (`schema_version`, `producer`, `stage`, `reason`, `detail`, `event_id`, `source`,
`failed_at_ms`, `payload`, `payload_encoding`) are documented in docs/contract.md. The record is keyed
like its source and carries the contract headers (`contract-version`, `producer`).
Dead-lettering is rare, so this is not on the hot path: one send per bad row.
"""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from pipeline import contract
from pipeline.failures import Failure

if TYPE_CHECKING:  # only a type here: the sink's pure batch module imports SourceRecord, never aiokafka
    from aiokafka import AIOKafkaProducer


class SourceRecord(Protocol):
    """What a bad row keeps of the consumed record it replaces (aiokafka's ConsumerRecord, the sink's Record)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def bad_row(stage: str, failure: Failure, payload: bytes | None, source: SourceRecord | None = None) -> bytes:
    """Serialise one dead-letter record (the table above). The payload is kept whole so the event can be
    repaired and replayed."""
    record: dict[str, Any] = {
        "schema_version": contract.CONTRACT_VERSION,
        "producer": contract.producer(stage),
        "stage": stage,
        "reason": failure.reason,
        "detail": failure.detail,
        "event_id": failure.event_id,
        "source": {
            "topic": source.topic if source is not None else None,
            "partition": source.partition if source is not None else None,
            "offset": source.offset if source is not None else None,
        },
        "failed_at_ms": contract.now_ms(),
    }
    if payload is None:
        record["payload"], record["payload_encoding"] = None, None
    else:
        try:
            record["payload"], record["payload_encoding"] = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            record["payload"] = base64.b64encode(payload).decode("ascii")
            record["payload_encoding"] = "base64"
    return orjson.dumps(record)


def bad_row_payload(record: dict[str, Any]) -> bytes | None:
    """The original bytes of a decoded dead-letter record (inverse of the encoding in `bad_row`)."""
    payload = record.get("payload")
    if payload is None:
        return None
    if record.get("payload_encoding") == "base64":
        return base64.b64decode(payload)
    return str(payload).encode("utf-8")


async def send(
    producer: AIOKafkaProducer, topic: str, stage: str, failure: Failure, source: SourceRecord
) -> asyncio.Future[Any]:
    """Hand the bad row of consumed record `source` to the producer (keyed like it, with the contract
    headers); returns the delivery future, which the caller awaits before committing `source`'s offset."""
    row = bad_row(stage, failure, source.value, source)
    future: asyncio.Future[Any] = await producer.send(
        topic, row, key=source.key, headers=list(contract.version_headers(stage))
    )
    return future
