"""2xx only after the acknowledgement, across a broker crash: on a private broker this test kills and restarts.

The shared test broker is never touched: this module starts its own (deploy/kafka/kafka.sh on port 29092,
data in .data/kafka-ingest-test) and always stops it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest

from harness import REPO
from harness.broker import KAFKA_SH, broker_env
from ingest.service import WEBHOOK_PATH, IngestService
from pipeline import kafka
from tests.conftest import make_settings
from tests.support import Running, body, event, read_topic, signed_headers, topic_record_count, wait_for

pytestmark = pytest.mark.integration

SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"
PORT = 29092
DATA_DIR = REPO / ".data" / "kafka-ingest-test"
# Whereby gives up on a request after 5 s (reference §1.6); every answer here must come before that.
WHEREBY_TIMEOUT = aiohttp.ClientTimeout(total=5)


def kafka_sh(command: str, *, attempts: int = 1) -> None:
    env = broker_env(PORT, DATA_DIR)
    for attempt in range(attempts):
        result = subprocess.run(["bash", str(KAFKA_SH), command], env=env, capture_output=True, text=True)
        if result.returncode == 0:
            return
        if attempt + 1 < attempts:  # e.g. the killed JVM still holds its port for a moment
            subprocess.run(["sleep", "1"], check=True)
    raise AssertionError(f"kafka.sh {command} failed: {result.stderr.strip()}")


@pytest.fixture(scope="module")
def private_broker() -> Iterator[str]:
    if not shutil.which("java"):
        pytest.skip("needs java to run a private broker (deploy/kafka/kafka.sh)")
    kafka_sh("start", attempts=3)
    try:
        yield f"127.0.0.1:{PORT}"
    finally:
        kafka_sh("stop")


async def test_2xx_only_after_ack_across_a_broker_crash(private_broker: str, clickhouse_url: str) -> None:
    s = make_settings(private_broker, clickhouse_url, PRODUCE_TIMEOUT_S="1")
    await kafka.wait_for_broker(s, timeout_s=60)
    await kafka.ensure_topics(s)
    room = f"/acme-{uuid.uuid4()}"
    answers: list[tuple[bytes, int]] = []
    phase = "up"

    async with (
        Running(IngestService(s, probe_interval_s=0.2), http=True) as ingest,
        aiohttp.ClientSession(timeout=WHEREBY_TIMEOUT) as http,
    ):

        async def send(n: int) -> int:
            raw = body(event("room.client.joined", room, n, participant=f"p-{n}-{phase}"))
            async with http.post(ingest.url + WEBHOOK_PATH, data=raw, headers=signed_headers(raw, SECRET)) as response:
                if response.status == 503:
                    assert int(response.headers["Retry-After"]) >= 1
                answers.append((raw, response.status))
                return response.status

        async def ready() -> int:
            async with http.get(ingest.url + "/readyz") as response:
                return response.status

        # Steady traffic through the whole story, so some requests are in flight when the broker dies.
        stop_traffic = asyncio.Event()

        async def traffic(worker: int) -> None:
            n = worker * 1_000_000
            while not stop_traffic.is_set():
                n += 1
                await send(n)
                await asyncio.sleep(0.02)

        workers = [asyncio.create_task(traffic(w)) for w in range(4)]
        try:
            await wait_for(lambda: sum(1 for _, st in answers if st == 202) >= 20)
            assert await ready() == 200

            phase = "down"
            # In a thread: the receiver shares this event loop and must keep answering meanwhile.
            await asyncio.to_thread(kafka_sh, "kill")  # SIGKILL: a crash, not a clean shutdown
            outage_start = len(answers)
            await wait_for(lambda: sum(1 for _, st in answers[outage_start:] if st == 503) >= 20)
            await wait_for(lambda: _ready_is(ready, 503))

            phase = "back"
            await asyncio.to_thread(kafka_sh, "start", attempts=5)
            await wait_for(lambda: _ready_is(ready, 200), timeout_s=60)
            back = len(answers)
            await wait_for(lambda: sum(1 for _, st in answers[back:] if st == 202) >= 20, timeout_s=60)
        finally:
            stop_traffic.set()
            outcomes = await asyncio.gather(*workers, return_exceptions=True)
        # A worker only ends early on an exception, e.g. a request not answered within Whereby's 5 s.
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes

    statuses = {st for _, st in answers}
    assert statuses <= {202, 503}, statuses  # nothing else, and never a client timeout (it would have raised)
    accepted = [raw for raw, st in answers if st == 202]
    refused = [raw for raw, st in answers if st == 503]
    assert refused, "the outage must have been noticed"
    # Every request that got a 2xx is on the topic, byte for byte, exactly once. A 503'd one may be there
    # too (written after its answer): Whereby retries it and downstream dedupes on the event id.
    stored = await read_topic(s, s.topic_raw, expect=await topic_record_count(s, s.topic_raw), timeout_s=60)
    values = [r.value for r in stored]
    missing = [raw for raw in accepted if raw not in values]
    assert not missing, f"{len(missing)} acknowledged events are not on the topic"
    assert all(values.count(raw) == 1 for raw in accepted)


async def _ready_is(ready: Callable[[], Awaitable[int]], status: int) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        return await ready() == status
    return False
