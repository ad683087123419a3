"""The receiver as a real process (`python -m ingest`): fuzzed with thousands of bad requests, and
stopped with SIGTERM while a request is in flight.

The fuzz test is synchronous (a plain HTTP client against another process, driven by Hypothesis); its
Kafka checks run on a private event loop. Every generated request is bad by construction and the test
knows which answer it must get, so it checks the exact status, not only "no 5xx".
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import string
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import REPO
from harness.ports import free_port
from harness.ready import NotReady, wait_for, wait_ready
from ingest import signature
from ingest.service import WEBHOOK_PATH
from pipeline import kafka
from pipeline.settings import Settings
from tests.conftest import make_settings
from tests.support import body, event, read_topic, signed_headers, topic_record_count

pytestmark = pytest.mark.integration

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
LIMIT = 64 * 1024
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private loop (the sync tests here must not touch the session's loop)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@dataclass
class IngestProcess:
    """`python -m ingest` on a loopback port, with its settings and its log file."""

    settings: Settings
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def start_ingest(s: Settings, log: Path) -> IngestProcess:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers,
        "KAFKA_TOPIC_PARTITIONS": str(s.topic_partitions),
        "TOPIC_RAW": s.topic_raw,
        "TOPIC_ENRICHED": s.topic_enriched,
        "TOPIC_DIMENSIONS": s.topic_dimensions,
        "TOPIC_DEADLETTER": s.topic_deadletter,
        "WHEREBY_WEBHOOK_SECRET": ",".join(s.webhook_secrets),
        "INSTANCE_ID": s.instance_id,
        "INGEST_HOST": "127.0.0.1",
        "INGEST_PORT": str(port),
        "LOG_LEVEL": "INFO",
    }
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ingest"], cwd=REPO, env=env, stderr=out)
    proc = IngestProcess(s, port, process, log)
    try:
        wait_ready(f"{proc.url}/readyz", process, timeout_s=60, interval_s=0.1, name="ingest")
    except NotReady as exc:
        proc.stop()
        raise AssertionError(f"{exc}: {log.read_text()[-2000:]}") from None
    return proc


# ---------------------------------------------------------------- generated bad requests


@dataclass(frozen=True)
class BadRequest:
    kind: str
    method: str
    headers: dict[str, str]
    body: bytes
    expect: int


_TOKEN = st.text(alphabet=string.ascii_lowercase + string.digits + ".+-", min_size=1, max_size=12)
_INTS = st.integers(-(2**63), 2**63 - 1)  # what JSON libraries agree on
_HEADER_TEXT = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation + " ", max_size=120)
_JSON = st.recursive(
    st.none() | st.booleans() | _INTS | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_ANY_BODY = st.binary(max_size=300) | _JSON.map(orjson.dumps)
_NOT_A_STRING = st.none() | st.booleans() | _INTS | st.floats(allow_nan=False, allow_infinity=False) | st.lists(_INTS)
_NOT_A_DATE_TIME = _NOT_A_STRING | st.text(max_size=30).filter(lambda s: not s[:4].isdigit())
_NOT_AN_OBJECT = _NOT_A_STRING | st.text(max_size=10)


def _valid_doc(n: int) -> dict[str, Any]:
    return event("room.client.joined", f"/acme-fuzz-{n % 7}", n, participant=f"p-{n}")


@st.composite
def wrong_method(draw: st.DrawFn) -> BadRequest:
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    raw = draw(st.binary(max_size=64))
    return BadRequest("method", method, signed_headers(raw, SECRET), raw, 405)


@st.composite
def wrong_media_type(draw: st.DrawFn) -> BadRequest:
    content_type = draw(
        st.sampled_from(["text/plain", "application/xml", "multipart/form-data", "application/jsonl", ""])
        | st.builds("{}/{}".format, st.sampled_from(["text", "application", "image", "x"]), _TOKEN)
    )
    if content_type.split(";")[0].strip().lower() == "application/json":
        content_type = "text/json"
    raw = body(_valid_doc(draw(st.integers(0, 10**6))))
    headers = {**signed_headers(raw, SECRET), "Content-Type": content_type}
    if not content_type:
        del headers["Content-Type"]
    return BadRequest("media_type", "POST", headers, raw, 415)


@st.composite
def too_large(draw: st.DrawFn) -> BadRequest:
    size = draw(st.integers(LIMIT + 1, LIMIT + 4096))
    raw = b'{"pad":"' + b"x" * (size - 10) + b'"}'
    return BadRequest("size", "POST", signed_headers(raw, SECRET), raw, 413)


@st.composite
def bad_signature(draw: st.DrawFn) -> BadRequest:
    raw = draw(_ANY_BODY | st.integers(0, 10**6).map(lambda n: body(_valid_doc(n))))
    now = int(time.time())
    good = signature.compute(SECRET, str(now), raw)
    variant = draw(st.sampled_from(["missing", "garbage", "no_v1", "no_t", "stale", "wrong_secret", "tampered"]))
    header: str | None
    if variant == "missing":
        header = None
    elif variant == "garbage":
        header = draw(_HEADER_TEXT.filter(lambda h: "v1=" not in h))
    elif variant == "no_v1":
        header = f"t={now}"
    elif variant == "no_t":
        header = f"v1={good}"
    elif variant == "stale":
        skew = draw(st.integers(301, 10**7)) * draw(st.sampled_from([-1, 1]))
        header = f"t={now + skew},v1={signature.compute(SECRET, str(now + skew), raw)}"
    elif variant == "wrong_secret":
        header = signature.sign(raw, draw(st.text(min_size=1, max_size=40).filter(lambda s: s != SECRET)), now)
    else:  # signed, then one byte of the body changed
        header = f"t={now},v1={good}"
        raw = raw + b" " if not raw else bytes([raw[0] ^ 0x01]) + raw[1:]
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Whereby-Signature"] = header
    return BadRequest(f"signature_{variant}", "POST", headers, raw, 401)


@st.composite
def signed_malformed(draw: st.DrawFn) -> BadRequest:
    doc: Any = _valid_doc(draw(st.integers(0, 10**6)))
    field = draw(st.sampled_from(["id", "type", "createdAt", "data", "body"]))
    if field == "body":
        doc = draw(_JSON.filter(lambda v: not isinstance(v, dict)) | st.dictionaries(st.text(max_size=8), _JSON))
        if isinstance(doc, dict):
            doc.pop("id", None)  # an object without `id` can never be a valid envelope
    elif draw(st.booleans()):
        del doc[field]
    elif field in ("id", "type"):
        doc[field] = draw(_NOT_A_STRING | st.just("") | st.just("x" * 257))
    elif field == "createdAt":
        doc[field] = draw(_NOT_A_DATE_TIME)
    else:
        doc[field] = draw(_NOT_AN_OBJECT)
    raw = orjson.dumps(doc) if draw(st.booleans()) else draw(st.binary(min_size=1, max_size=50)) + b"\xff"
    return BadRequest(f"envelope_{field}", "POST", signed_headers(raw, SECRET), raw, 400)


BAD_REQUESTS = st.one_of(wrong_method(), wrong_media_type(), too_large(), bad_signature(), signed_malformed())


@pytest.fixture(scope="module")
def fuzz_target(
    kafka_bootstrap: str, clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngestProcess]:
    s = make_settings(kafka_bootstrap, clickhouse_url)
    run(kafka.ensure_topics(s))
    proc = start_ingest(s, tmp_path_factory.mktemp("ingest") / "fuzz.log")
    try:
        yield proc
    finally:
        proc.stop()


def test_thousands_of_bad_requests_get_their_4xx_and_store_nothing_but_dead_letters(
    fuzz_target: IngestProcess,
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fuzz_target.port, timeout=10)
    seen: Counter[tuple[str, int]] = Counter()

    # Ten requests per example: the same coverage for a fraction of Hypothesis' per-example overhead.
    @settings(
        max_examples=220,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(st.lists(BAD_REQUESTS, min_size=10, max_size=10))
    def ten(requests: list[BadRequest]) -> None:
        for request in requests:
            conn.request(request.method, WEBHOOK_PATH, body=request.body, headers=request.headers)
            response = conn.getresponse()
            payload = response.read()
            seen[request.kind, response.status] += 1
            assert response.status == request.expect, (request.kind, response.status, payload[:200])
            if request.method != "HEAD":
                assert orjson.loads(payload)["error"]

    try:
        ten()
    finally:
        conn.close()

    total = sum(seen.values())
    assert total >= 2000, seen
    assert {kind.split("_")[0] for kind, _ in seen} == {"method", "media", "size", "signature", "envelope"}
    s = fuzz_target.settings
    rejected_signed = sum(n for (_, status), n in seen.items() if status == 400)
    # Nothing reached the raw topic; every signed-but-malformed body is on the dead-letter topic, once.
    assert run(topic_record_count(s, s.topic_raw)) == 0
    assert run(topic_record_count(s, s.topic_deadletter)) == rejected_signed
    # And the process is fine: alive, live and ready.
    assert fuzz_target.process.poll() is None
    assert (fuzz_target.get("/healthz"), fuzz_target.get("/readyz")) == (200, 200)


# ---------------------------------------------------------------- SIGTERM


async def test_sigterm_stops_intake_answers_in_flight_requests_and_exits_cleanly(
    settings: Settings, tmp_path: Path
) -> None:
    proc = await asyncio.to_thread(start_ingest, settings, tmp_path / "ingest.log")
    room = f"/acme-{uuid.uuid4()}"
    raws = [body(event("room.client.joined", room, n, participant=f"p-{n}")) for n in range(400)]
    outcomes: list[tuple[bytes, int | None, bool]] = []  # body, status (None: no answer), after SIGTERM
    signalled, twenty_answered = asyncio.Event(), asyncio.Event()
    try:
        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as http:

            async def send(raw: bytes) -> None:
                try:
                    async with http.post(proc.url + WEBHOOK_PATH, data=raw, headers=signed_headers(raw, SECRET)) as r:
                        await r.read()
                        outcomes.append((raw, r.status, signalled.is_set()))
                except aiohttp.ClientError:
                    outcomes.append((raw, None, signalled.is_set()))
                if len(outcomes) >= 20:
                    twenty_answered.set()

            tasks = [asyncio.create_task(send(raw)) for raw in raws]
            await twenty_answered.wait()
            proc.process.send_signal(signal.SIGTERM)
            signalled.set()
            # Intake stops: once the receiver says it is draining, new connections are refused...
            await _wait_for_log(proc.log, "stopping: draining in-flight work")
            await _wait_until_refused(proc.port)
            await asyncio.gather(*tasks)
        code = await asyncio.to_thread(proc.process.wait, 30)
    finally:
        await asyncio.to_thread(proc.stop)

    log = proc.log.read_text()
    assert code == 0, log[-2000:]
    assert "ingest stopped" in log
    assert SECRET not in log
    assert {status for _, status, _ in outcomes} <= {202, 503, None}
    # ...while requests already being handled were finished and answered after the signal,
    assert any(status == 202 and after for _, status, after in outcomes)
    # and every 2xx is on the topic: the producer was flushed before the process ended.
    accepted = {raw for raw, status, _ in outcomes if status == 202}
    stored = await read_topic(settings, settings.topic_raw, expect=len(accepted))
    assert accepted <= {r.value for r in stored}


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def _wait_until_refused(port: int, timeout_s: float = 10) -> None:
    await wait_for(
        lambda: _refused(port), timeout_s=timeout_s, interval_s=0.05, what=f"port {port} closed after SIGTERM"
    )


async def _wait_for_log(log: Path, text: str, timeout_s: float = 30) -> None:
    await wait_for(
        lambda: asyncio.to_thread(lambda: text in log.read_text()),
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"{text!r} logged",
    )


async def test_a_second_sigterm_exits_at_once(settings: Settings, tmp_path: Path) -> None:
    proc = await asyncio.to_thread(start_ingest, settings, tmp_path / "ingest.log")
    try:
        # A request whose body never completes keeps the first stop waiting (for WEBHOOK_BODY_TIMEOUT_S).
        raw = body(event("room.client.joined", "/acme-slow", 0, participant="p-1"))
        head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(raw, SECRET).items())
        _, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n{head}\r\n".encode())
        writer.write(raw[:10])
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is reading the body
        proc.process.send_signal(signal.SIGTERM)
        await _wait_for_log(proc.log, "stopping: draining in-flight work")
        started = time.monotonic()
        proc.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.process.wait, 30)
        waited = time.monotonic() - started
        writer.close()
    finally:
        await asyncio.to_thread(proc.stop)
    log = proc.log.read_text()
    assert code == 128 + signal.SIGTERM, log[-2000:]
    assert "second SIGTERM, exiting now" in log
    assert waited < 3  # not the body timeout (5 s) nor the budget
