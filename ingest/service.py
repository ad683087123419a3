"""The ingest stage: `POST /webhooks/whereby` → verify → produce to the raw topic → answer.

The answer is 2xx only after the broker acknowledged the record (acks=all). If it cannot within
PRODUCE_TIMEOUT_S the answer is 503 with Retry-After, so Whereby retries; client faults get 4xx and
never a retry.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiokafka import AIOKafkaProducer

from ingest import envelope, signature
from pipeline import contract, kafka
from pipeline.settings import Settings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/whereby"


def _error(status: int, error: str, detail: str, **headers: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers or None)


class IngestService:
    """Receives webhooks and makes them durable on Kafka before answering."""

    name = "ingest"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._secrets = settings.require_webhook_secrets()
        self._producer: AIOKafkaProducer | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        await kafka.prepare(self.settings)
        self._producer = kafka.producer(self.settings)
        await self._producer.start()

    async def run(self) -> None:
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()  # flushes whatever is still buffered

    def ready(self) -> bool:
        return self._producer is not None and not self._stopped.is_set()

    def routes(self) -> list[web.RouteDef]:
        return [web.post(WEBHOOK_PATH, self.handle_webhook)]

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """Verify, validate and produce one webhook; see the module docstring for the answers."""
        limit = self.settings.webhook_max_bytes
        if request.content_length is not None and request.content_length > limit:
            return _error(413, "payload_too_large", f"body is larger than {limit} bytes")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            return _error(413, "payload_too_large", f"body is larger than {limit} bytes")
        try:
            signature.verify(
                request.headers.get("Whereby-Signature"),
                body,
                self._secrets,
                tolerance_s=self.settings.webhook_tolerance_s,
            )
        except signature.SignatureError as exc:
            return _error(401, "invalid_signature", exc.detail)
        try:
            env = envelope.parse(body)
        except envelope.EnvelopeError as exc:
            return _error(400, "invalid_event", exc.detail)

        producer = self._producer
        if producer is None:
            return _error(503, "unavailable", "shutting down", **{"Retry-After": "1"})
        headers = [
            (contract.HEADER_EVENT_ID, env.event_id.encode()),
            (contract.HEADER_EVENT_TYPE, env.event_type.encode()),
            (contract.HEADER_RECEIVED_AT_MS, str(contract.now_ms()).encode()),
            (contract.HEADER_INGRESS_INSTANCE, self.settings.instance_id.encode()),
        ]
        key = env.room_name.encode() if env.room_name else None
        try:
            async with asyncio.timeout(self.settings.produce_timeout_s):
                delivery = await producer.send(self.settings.topic_raw, body, key=key, headers=headers)
                await delivery
        except (TimeoutError, Exception) as exc:  # any broker failure means "not durable": ask for a retry
            log.warning("produce failed", extra={"event_id": env.event_id, "error": type(exc).__name__})
            return _error(503, "unavailable", "event could not be stored in time", **{"Retry-After": "2"})
        return web.json_response({"status": "accepted", "id": env.event_id}, status=202)
