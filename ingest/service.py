"""The ingest stage: `POST /webhooks/whereby` → check → verify → produce to the raw topic → answer.

The answer is 2xx only after the broker acknowledged the record (acks=all, idempotent producer). If it
cannot within PRODUCE_TIMEOUT_S the answer is 503 with Retry-After, so Whereby retries; client faults
get 4xx and never a retry. The decisions live in pure modules (`admission`, `signature`, `envelope`,
`answers`); this module is the adapter between them, aiohttp and the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

import orjson
from aiohttp import HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError
from aiokafka import AIOKafkaProducer

from ingest import admission, answers, config, envelope, metrics, openapi, readiness, signature
from ingest.answers import Answer
from ingest.batcher import Batcher, StoreError, partitions_of
from pipeline import contract, deadletters, kafka
from pipeline.settings import ConfigError, IngestSettings
from pipeline.stage import Stage

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/whereby"
OPENAPI_PATH = "/openapi.json"

# How often readiness re-checks the broker when no produce has told us anything newer.
PROBE_INTERVAL_S = 1.0
# Producers per service: each partition can have this many batches in flight (see ingest.batcher).
PRODUCER_LANES = 2
# Cyclic GC: every request allocates dozens of container objects (aiohttp's request and response,
# headers, futures), so with the default threshold (700) a young collection runs every few requests
# and the older generations, which hold every module and client object, are scanned far too often.
# Freezing what exists after start-up and collecting the young generation less often cut the
# CPU per request by a quarter to a third in the benchmark; the garbage held meanwhile is a few MB at most.
GC_THRESHOLDS = (20_000, 20, 100)

_JSON = answers.JSON_CONTENT_TYPE
# The metric children of the hot path (202), looked up once.
_STORED_REQUESTS = metrics.requests(answers.ACCEPTED, "stored")
_ACCEPTED_DURATION = metrics.request_duration(answers.ACCEPTED)


class IngestService(Stage[IngestSettings]):
    """Receives webhooks and makes them durable on Kafka before answering."""

    name = "ingest"
    tracks_progress = True  # run() probes the broker every PROBE_INTERVAL_S

    def __init__(
        self, settings: IngestSettings, *, probe_interval_s: float = PROBE_INTERVAL_S, lanes: int = PRODUCER_LANES
    ) -> None:
        config.check(settings)  # the same rules as `whereby-pipeline config check --stage ingest`
        super().__init__(settings)
        self._lanes = lanes
        self._secrets = settings.webhook_secrets
        self._probe_interval_s = probe_interval_s
        self._producers: list[AIOKafkaProducer] = []
        self._raw: Batcher | None = None
        self._deadletter: Batcher | None = None
        self._accepting = False
        self._in_flight = 0
        self._health = readiness.BrokerHealth()
        self._instance = settings.instance_id.encode()
        self._openapi = orjson.dumps(openapi.document(settings, WEBHOOK_PATH))
        # Read at scrape time: no per-request cost. (The latest service in a process owns the gauge.)
        metrics.IN_FLIGHT.set_function(lambda: self._in_flight)

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        """Wait (bounded) for the broker, ensure the topics, start the producers, then accept requests."""
        await kafka.prepare(self.settings)
        # No linger: the batcher already groups concurrent requests, and an idle receiver should
        # answer a lone webhook as soon as the broker acknowledged it.
        for lane in range(self._lanes):
            client_id = f"whereby-{self.settings.instance_id}-{lane}"
            producer = kafka.producer(self.settings, linger_ms=0, client_id=client_id)
            await producer.start()
            self.closing(stack, f"producer {lane}", producer.stop)  # flushes whatever is still buffered
            self._producers.append(producer)
        self._raw = await self._batcher(self.settings.topic_raw)
        self._deadletter = await self._batcher(self.settings.topic_deadletter)
        self._health.succeeded()
        gc.collect()
        gc.freeze()  # start-up objects live as long as the process: never scan them again
        gc.set_threshold(*GC_THRESHOLDS)
        self._accepting = True

    async def _batcher(self, topic: str) -> Batcher:
        timeout_s = self.settings.kafka_connect_timeout_s
        known = [await partitions_of(producer, topic, timeout_s) for producer in self._producers]
        if not known[0]:
            raise ConfigError(f"Kafka topic {topic!r} has no partitions; create it with `whereby-pipeline topics`")
        return Batcher(
            self._producers, topic, known[0], timeout_s=self.settings.produce_timeout_s, on_outcome=self._outcome
        )

    def _outcome(self, ok: bool, why: str) -> None:
        if ok:
            self._health.succeeded()
        else:
            self._health.failed(why)

    async def run(self) -> None:
        """Probe the broker periodically until stopped, so readiness follows real connectivity."""
        self._running = True
        while not self.stopping:
            if self._producers:
                await readiness.probe(self._producers[0], self._health, timeout_s=max(self._probe_interval_s, 1.0))
                for batcher in (self._raw, self._deadletter):
                    if batcher is not None:
                        batcher.refresh_partitions()
            self.progressed_at = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._probe_interval_s)

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting, then wait for the records in flight (bounded); the producers flush as they close.
        The runner stops the HTTP server first, so every request still being handled has its produce by now."""
        self._accepting = False
        for batcher in (self._raw, self._deadletter):
            if batcher is not None:
                await batcher.drain(min(self.settings.produce_timeout_s, timeout_s))

    def ready(self) -> bool:
        """Accepting requests and the broker answered the latest produce or probe."""
        return self._accepting and self._health.reachable

    def routes(self) -> list[web.RouteDef]:
        """The webhook (all methods, so a wrong one gets our 405) and the OpenAPI document."""
        return [
            web.route("*", WEBHOOK_PATH, self.handle_webhook, expect_handler=self._expect),
            web.get(OPENAPI_PATH, self.handle_openapi),
        ]

    async def handle_openapi(self, _: web.Request) -> web.Response:
        """The OpenAPI document of this endpoint."""
        return web.Response(body=self._openapi, content_type="application/json")

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """Answer one webhook request; see the module docstring and `ingest.answers` for the answers."""
        started = time.perf_counter()
        answer = await self._answer(request)
        if isinstance(answer, str):  # stored (the hot path): its event id; answered without an Answer object
            _STORED_REQUESTS.inc()
            _ACCEPTED_DURATION.observe(time.perf_counter() - started)
            return web.Response(status=202, body=answers.accepted_body(answer), content_type=_JSON)
        _observe(answer, started)
        return _respond(answer)

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: refuse on the headers alone, before the client sends the body."""
        started = time.perf_counter()
        headers = request.headers
        rejection = admission.check_headers(
            request.method,
            headers.get("Content-Type"),
            request.content_length,
            self.settings.webhook_max_bytes,
            headers.get("Content-Encoding"),
        )
        if rejection is not None:
            _observe(rejection, started)
            return _respond(rejection)
        # What aiohttp's default expect handler does, which we replace to get the early refusal above.
        if request.version != HttpVersion11 or request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"unknown Expect: {request.headers.get('Expect', '')[:40]}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    async def _answer(self, request: web.Request) -> Answer | str:
        """The answer to one request, or the event id when it was stored (202)."""
        received_at_ms = contract.now_ms()
        limit = self.settings.webhook_max_bytes
        headers = request.headers
        rejection = admission.check_headers(
            request.method, headers.get("Content-Type"), request.content_length, limit, headers.get("Content-Encoding")
        )
        if rejection is not None:
            return rejection
        if not self._accepting or self._raw is None or self._deadletter is None:
            return answers.shutting_down()

        body = await _read_body(request, limit, self.settings.webhook_body_timeout_s)
        if isinstance(body, Answer):
            return body
        # In flight only once the body is in: a request still sending its body holds a connection (capped
        # by HTTP_MAX_CONNECTIONS, dropped after WEBHOOK_BODY_TIMEOUT_S) but never one of the slots that
        # bound produce memory, so slow or withheld bodies cannot turn real webhooks away with 503.
        if self._in_flight >= self.settings.max_in_flight:
            return answers.saturated()
        self._in_flight += 1
        try:
            return await self._store_event(body, request, received_at_ms)
        finally:
            self._in_flight -= 1

    async def _store_event(self, body: bytes, request: web.Request, received_at_ms: int) -> Answer | str:
        """Verify, check and store one body that has been read in full (the in-flight part of a request)."""
        raw, deadletter = self._raw, self._deadletter
        assert raw is not None and deadletter is not None
        metrics.BODY_SIZE.observe(len(body))

        try:
            signature.verify(
                request.headers.get("Whereby-Signature"),
                body,
                self._secrets,
                tolerance_s=self.settings.webhook_tolerance_s,
            )
        except signature.SignatureError as exc:
            return answers.invalid_signature(exc.reason, exc.detail)

        stamp = [
            (contract.HEADER_RECEIVED_AT_MS, str(received_at_ms).encode()),
            (contract.HEADER_INGRESS_INSTANCE, self._instance),
            *contract.RAW_VERSION_HEADERS,
        ]
        try:
            env = envelope.parse(body)
        except envelope.EnvelopeError as exc:
            return await self._dead_letter(deadletter, body, exc, stamp)

        headers = [
            (contract.HEADER_EVENT_ID, env.event_id.encode()),
            (contract.HEADER_EVENT_TYPE, env.event_type.encode()),
            *stamp,
        ]
        key = env.room_name.encode() if env.room_name else None
        failure = await _store(raw, "raw", body, key, headers)
        if failure is not None:
            log.warning("event not stored", extra={"event_id": env.event_id, "reason": failure})
            return answers.not_stored(failure)
        metrics.events(envelope.type_label(env.event_type)).inc()
        return env.event_id

    async def _dead_letter(
        self, batcher: Batcher, body: bytes, exc: envelope.EnvelopeError, stamp: list[tuple[str, bytes]]
    ) -> Answer:
        """A signed but malformed body: keep it on the dead-letter topic, then answer 400 (503 if we could not)."""
        event_id = exc.event_id
        row = deadletters.bad_row(self.name, exc, body)
        failure = await _store(batcher, "deadletter", row, None, stamp)
        if failure is not None:
            log.warning("malformed event not dead-lettered", extra={"event_id": event_id, "reason": failure})
            return answers.not_stored("deadletter_failed")
        metrics.DEADLETTERS.labels(exc.reason).inc()
        return answers.invalid_event(exc.reason, exc.detail, exc.field)


async def _store(
    batcher: Batcher, label: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
) -> str | None:
    """Store one record and wait for the acknowledgement; None when stored, else the failure reason."""
    started = time.perf_counter()
    try:
        await batcher.store(value, key, headers)
    except StoreError as exc:
        failure: str | None = exc.reason
    else:
        failure = None
    metrics.produce_duration(label, "error" if failure else "ok").observe(time.perf_counter() - started)
    return failure


async def _read_body(request: web.Request, limit: int, timeout_s: float) -> bytes | Answer:
    """Read at most `limit` bytes within `timeout_s`; one byte more means 413 and the rest is never read,
    a body still incomplete after `timeout_s` means 408 (and the connection is closed)."""
    stream = request.content
    declared = request.content_length  # already checked against `limit`; None when chunked
    chunks: list[bytes] = []
    size = 0
    try:
        if stream.is_eof():
            # The usual case: the whole body arrived with the headers and is buffered; take it in one call.
            # (Bounded: the declared length was checked above; a chunked body is capped by aiohttp's buffer.)
            body = stream.read_nowait(limit + 1)
            if len(body) > limit:
                return answers.payload_too_large(limit, declared=False)
            if stream.at_eof():  # nothing left: this is the whole body
                return body
            chunks.append(body)
            size = len(body)
        # The rest is still on its way: bounded in time as well as in size (the fast path above never waits).
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await stream.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return answers.payload_too_large(limit, declared=False)
                if size == declared:
                    break  # aiohttp never delivers more than the declared length: no need to wait for EOF
    except TimeoutError:
        return answers.body_timeout(timeout_s)
    except (HttpProcessingError, ConnectionError):
        return answers.incomplete_body()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _observe(answer: Answer, started: float) -> None:
    metrics.requests(answer.outcome, answer.reason).inc()
    metrics.request_duration(answer.outcome).observe(time.perf_counter() - started)


def _respond(answer: Answer) -> web.Response:
    response = web.Response(
        status=answer.status,
        body=answer.body_bytes(),
        content_type="application/json",
        headers=answer.headers or None,
    )
    if answer.close_connection:
        response.force_close()  # do not drain an oversized body: close instead
    return response
