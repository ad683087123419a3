"""End-to-end latency and memory: webhook answered → row queryable, at an offered rate.

    .venv/bin/python -m bench.e2e_bench [--rate 1000] [--duration 60]

The three stages run as real processes (as `make run` starts them) on the broker named by
KAFKA_BOOTSTRAP_SERVERS (default: the local broker on 127.0.0.1:9092, started if needed) and an
embedded ClickHouse directory made for this run. An open-loop generator in this process sends signed
webhooks at `--rate` per second for `--duration` seconds (bounded in count and time, loopback only) and
records when each was answered. After the run the stages are stopped (they drain) and the store is
opened here: latency = the row's `inserted_at` (set by ClickHouse when the insert made it queryable)
minus the moment the webhook was answered. Also reports peak RSS per stage and events lost.

Not part of the test suite: wall-clock numbers belong here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from harness import REPO
from harness.broker import local_broker
from harness.stack import Stack, isolated_env
from ingest import signature

RESULTS = REPO / "bench" / "results-e2e.json"
SECRET = "bench-e2e-secret-0123456789abcdef"


def make_events(count: int, rooms: int = 200) -> list[tuple[str, bytes]]:
    """`count` join/leave events over `rooms` rooms of two customers, as (event id, compact body)."""
    out = []
    base = time.time()
    for i in range(count):
        room = f"/{'acme' if i % 3 else 'globex'}-{uuid.UUID(int=i % rooms)}"
        participant = f"p-{i // 2}"
        event_id = uuid.uuid4().hex * 2
        doc = {
            "id": event_id,
            "apiVersion": "1.0",
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(base + i / 1000)),
            "type": "room.client.joined" if i % 2 == 0 else "room.client.left",
            "data": {
                "meetingId": "1",
                "roomName": room,
                "roomSessionId": f"s-{i % rooms}",
                "subdomain": "bench",
                "participantId": participant,
                "displayName": "Bench",
                "metadata": "plan=bench",
                "externalId": f"user-{i % 5000}",
                "roleName": "visitor",
                "numClients": 2,
                "numClientsByRoleName": {"visitor": 2},
                "isDialIn": False,
            },
        }
        out.append((event_id, orjson.dumps(doc)))
    return out


async def offer_load(
    url: str, events: list[tuple[str, bytes]], rate: float, max_in_flight: int = 2000
) -> tuple[dict[str, float], dict[int, int], list[float]]:
    """Send `events` at `rate`/s, open loop; returns answer times of accepted ids, status counts, latencies."""
    answered: dict[str, float] = {}
    statuses: dict[int, int] = {}
    response_ms: list[float] = []
    limit = asyncio.Semaphore(max_in_flight)
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def send(event_id: str, body: bytes) -> None:
            try:
                headers = {"Content-Type": "application/json", "Whereby-Signature": signature.sign(body, SECRET)}
                sent = time.time()
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    done = time.time()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    response_ms.append((done - sent) * 1000)
                    if response.status == 202:
                        answered[event_id] = done
            except aiohttp.ClientError:
                statuses[0] = statuses.get(0, 0) + 1
            finally:
                limit.release()

        tasks = []
        start = time.monotonic()
        for i, (event_id, body) in enumerate(events):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await limit.acquire()
            tasks.append(asyncio.create_task(send(event_id, body)))
        await asyncio.gather(*tasks)
    return answered, statuses, response_ms


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(rate: float, duration: float, bootstrap: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    env = isolated_env(
        bootstrap,
        f"chdb://{workdir / 'clickhouse'}",
        WHEREBY_WEBHOOK_SECRET=SECRET,
        KAFKA_TOPIC_PARTITIONS="6",
    )
    stack = Stack(env, workdir / "logs")
    events = make_events(int(rate * duration))
    peaks: dict[str, float] = {}
    try:
        stack.start_all()

        async def drive() -> tuple[dict[str, float], dict[int, int], list[float]]:
            async def sample_rss() -> None:
                while True:
                    for stage in stack.procs:
                        peaks[stage] = max(peaks.get(stage, 0.0), stack.rss_mb(stage)[0])
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample_rss())
            try:
                return await offer_load(stack.url("ingest", "/webhooks/whereby"), events, rate)
            finally:
                sampler.cancel()

        t0 = time.monotonic()
        answered, statuses, response_ms = asyncio.run(drive())
        send_s = time.monotonic() - t0
        # Wait until the sink stops inserting (caught up), bounded.
        last, stable_since = -1.0, time.monotonic()
        while time.monotonic() - stable_since < 3 and time.monotonic() - t0 < duration + 120:
            now = stack.metric("sink", "whereby_sink_rows_total")
            if now != last:
                last, stable_since = now, time.monotonic()
            time.sleep(0.5)
        for stage in stack.procs:
            peaks[stage] = max(peaks.get(stage, 0.0), stack.rss_mb(stage)[1])
    finally:
        stack.stop_all()

    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=env["CLICKHOUSE_URL"])
    rows = client.query(
        f"SELECT event_id, toUnixTimestamp64Milli(min(inserted_at)) FROM {env['CLICKHOUSE_DATABASE']}.events "
        "GROUP BY event_id"
    ).result_rows
    inserted = {event_id: ms / 1000 for event_id, ms in rows}
    latencies = [inserted[e] - t for e, t in answered.items() if e in inserted]
    lost = sum(1 for e in answered if e not in inserted)
    return {
        "offered_rate": rate,
        "duration_s": duration,
        "sent": len(events),
        "send_seconds": round(send_s, 2),
        "achieved_rate": round(len(events) / send_s, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted": len(answered),
        "lost": lost,
        "e2e_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "e2e_p99_s": round(pct(latencies, 0.99), 3) if latencies else None,
        "e2e_max_s": round(max(latencies), 3) if latencies else None,
        "response_p50_ms": round(pct(response_ms, 0.5), 1),
        "response_p99_ms": round(pct(response_ms, 0.99), 1),
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(peaks.items())},
        "broker": bootstrap,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="offered webhooks per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (bounded)")
    args = parser.parse_args()
    if not (0 < args.rate <= 5000 and 0 < args.duration <= 600):
        sys.exit("e2e_bench: --rate must be in (0, 5000] and --duration in (0, 600]")
    with local_broker() as bootstrap:
        result = run(args.rate, args.duration, bootstrap)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| metric | value |\n|---|---|")
    for key in (
        "offered_rate",
        "achieved_rate",
        "accepted",
        "lost",
        "e2e_p50_s",
        "e2e_p99_s",
        "e2e_max_s",
        "response_p50_ms",
        "response_p99_ms",
    ):
        print(f"| {key} | {result[key]} |")
    for stage, mb in result["peak_rss_mb"].items():
        print(f"| peak RSS {stage} (MB) | {mb} |")
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
