"""`make chaos`: fault scenarios against the real broker and the real ClickHouse engine.

    .venv/bin/python -m chaos.run [--only NAME ...]

A private Kafka broker (127.0.0.1:28092, its own data directory) is started for the run, since one
scenario stops and restarts it. Each scenario runs in its own process (the embedded engine allows one
data directory per process) with its own topics, groups and database; the stages are real processes
(`tests.stack.Stack`), restarted by a small supervisor when they die, as Kubernetes would. Load comes
from a simulated Whereby (retries on 5xx/timeouts, at most twice) on loopback, bounded in count and
time. Writes chaos/report.json and prints a table; exits 1 if any scenario lost or doubled an event,
or if the negative control failed to see duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from chaos import check
from chaos.whereby import Whereby
from chaos.workload import CUSTOMERS, Event, expected_minutes, meetings, whereby_style
from pipeline import kafka
from pipeline.settings import Settings
from tests.stack import KAFKA_SH, REPO, Stack, isolated_env

REPORT = REPO / "chaos" / "report.json"
LOGS = REPO / "chaos" / "logs"
# Below the ephemeral range (32768+), so no outgoing connection can be holding the port.
BROKER_PORT = 28092
SCENARIO_TIMEOUT_S = 300


def broker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(KAFKA_PORT=str(BROKER_PORT), KAFKA_DATA_DIR=str(REPO / ".data" / "kafka-chaos"))
    return env


def broker(action: str) -> None:
    subprocess.run(["bash", str(KAFKA_SH), action], env=broker_env(), check=True, stdout=subprocess.DEVNULL)


# Every scenario's pipeline, so that a scenario that fails midway still stops its stage processes.
_ACTIVE: list[Scenario] = []


class Scenario:
    """One isolated pipeline plus the bookkeeping every scenario needs."""

    def __init__(self, name: str, **overrides: str) -> None:
        _ACTIVE.append(self)
        self.name = name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
        self.env = isolated_env(
            f"127.0.0.1:{BROKER_PORT}",
            f"chdb://{self.workdir / 'clickhouse'}",
            KAFKA_CONNECT_TIMEOUT_S="60",
            **overrides,
        )
        self.settings = Settings.from_env(self.env)
        self.stack = Stack(self.env, LOGS / name)
        self.whereby = Whereby(self.stack.url("ingest", "/webhooks/whereby"), self.env["WHEREBY_WEBHOOK_SECRET"])
        self.restarts = 0
        self._supervising = True
        self._supervisor: asyncio.Task[None] | None = None

    async def prepare(self) -> None:
        await kafka.prepare(self.settings)
        producer = kafka.producer(self.settings)
        await producer.start()
        try:
            for customer_id, prefix in CUSTOMERS.items():
                value = {"customer_id": customer_id, "name": customer_id, "room_name_prefixes": [prefix]}
                await producer.send_and_wait(
                    self.settings.topic_dimensions, orjson.dumps(value), key=f"customer:{customer_id}".encode()
                )
        finally:
            await producer.stop()

    async def start(self, stages: tuple[str, ...] = ("sink", "enrich", "ingest")) -> None:
        """Start the stages, then keep restarting any that dies, as an orchestrator would."""
        for stage in stages:
            await asyncio.to_thread(self.stack.start, stage)
        self._supervisor = asyncio.create_task(self._supervise(stages))

    async def _supervise(self, stages: tuple[str, ...]) -> None:
        while self._supervising:
            for stage in stages:
                proc = self.stack.procs.get(stage)
                if self._supervising and (proc is None or proc.poll() is not None):
                    self.restarts += 1
                    # A stage that dies while starting (e.g. broker still down) is tried again next round.
                    with contextlib.suppress(RuntimeError):
                        await asyncio.to_thread(self.stack.start, stage, timeout_s=120)
            await asyncio.sleep(0.5)

    async def stop_supervising(self) -> None:
        self._supervising = False
        if self._supervisor is not None:
            await self._supervisor

    async def drained(self, timeout_s: float = 120.0) -> None:
        """Wait until both consumer groups have committed everything on their input topics."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self._lag(self.settings.enrich_group, self.settings.topic_raw) == 0 and (
                await self._lag(self.settings.sink_group, self.settings.topic_enriched) == 0
            ):
                return
            await asyncio.sleep(1)
        raise RuntimeError(f"{self.name}: pipeline did not drain within {timeout_s}s")

    async def _lag(self, group: str, topic: str) -> int:
        from aiokafka.admin import AIOKafkaAdminClient

        tps = await kafka.partitions_of(self.settings, topic)
        consumer = kafka.consumer(self.settings, group_id=None)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await consumer.start()
        await admin.start()
        try:
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group)
            return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
        finally:
            await consumer.stop()
            await admin.close()

    async def raw_enriched_ids(self) -> list[str]:
        """Every enriched record delivered, duplicates included (for the negative control)."""
        from tests.support import read_topic

        end_total = 0
        consumer = kafka.consumer(self.settings, group_id=None)
        await consumer.start()
        try:
            tps = await kafka.partitions_of(self.settings, self.settings.topic_enriched)
            end_total = sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()
        records = await read_topic(self.settings, self.settings.topic_enriched, expect=end_total)
        return [orjson.loads(r.value)["event_id"] for r in records]

    def observe(self) -> check.Observed:
        """Stop everything, open the store in this process and read what it counts."""
        self.stack.stop_all()
        import clickhouse_connect

        client = clickhouse_connect.get_client(dsn=self.env["CLICKHOUSE_URL"])
        try:
            return check.from_store(client, self.env["CLICKHOUSE_DATABASE"])
        finally:
            client.close()

    def result(self, events: list[Event], observed: check.Observed, **extra: Any) -> dict[str, Any]:
        acked = self.whereby.acked
        out = {"name": self.name, "negative_control": False}
        out.update(check.verdict(acked, observed, expected_minutes([e for e in events if e.event_id in acked])))
        out.update(
            sent=len(events),
            gave_up=len(self.whereby.gave_up),
            stage_restarts=self.restarts,
            statuses=dict(self.whereby.statuses),
            **extra,
        )
        return out


async def _standard(
    name: str,
    fault: Callable[[Scenario], Awaitable[dict[str, Any]]],
    *,
    events: list[Event] | None = None,
    rate: float = 150.0,
    stages: tuple[str, ...] = ("sink", "enrich", "ingest"),
    **overrides: str,
) -> list[dict[str, Any]]:
    """Run load through all three stages while `fault` acts; then drain, stop and check."""
    sc = Scenario(name, **overrides)
    await sc.prepare()
    events = events if events is not None else meetings(120)
    sc.whereby.rate = rate
    await sc.start(stages)  # the supervised stages; a fault may run others itself
    load = asyncio.create_task(sc.whereby.send(events))
    extra = await fault(sc)
    await load
    await sc.drained()
    await sc.stop_supervising()
    return [sc.result(events, await asyncio.to_thread(sc.observe), **extra)]


async def broker_restart(sc: Scenario) -> dict[str, Any]:
    await asyncio.sleep(2)
    await asyncio.to_thread(broker, "stop")
    await asyncio.sleep(6)
    await asyncio.to_thread(broker, "start")
    return {"fault": "broker stopped for 6 s under load, then restarted"}


async def kill_enrich(sc: Scenario) -> dict[str, Any]:
    for _ in range(3):
        await asyncio.sleep(random.uniform(1.0, 2.0))
        sc.stack.kill("enrich")  # the supervisor restarts it
    return {"fault": "kill -9 of enrich three times mid-stream"}


async def kill_sink_before_insert(sc: Scenario) -> dict[str, Any]:
    kills = 0
    for _ in range(3):
        await asyncio.sleep(2.5)  # batches are 2 s old at most: some records are buffered, not inserted
        sc.stack.kill("sink")
        kills += 1
    return {"fault": f"kill -9 of the sink {kills} times with a batch buffered (SINK_BATCH_SECONDS=2)"}


async def kill_sink_after_insert(sc: Scenario) -> dict[str, Any]:
    """Three times: a sink that SIGKILLs itself right after its first insert, before the commit."""
    crashes = 0
    for _ in range(3):
        sc.stack.stop("sink")
        await asyncio.to_thread(sc.stack.start, "sink", extra_env={"CHAOS_SINK_CRASH_AFTER_INSERT": "1"})
        code = await asyncio.to_thread(sc.stack.procs["sink"].wait, 120)
        if code != -signal.SIGKILL:
            raise RuntimeError(f"the sink was expected to SIGKILL itself after an insert, but exited with {code}")
        crashes += 1
    await asyncio.to_thread(sc.stack.start, "sink")
    return {"fault": f"the sink SIGKILLed itself {crashes} times after an insert, before committing"}


async def flood(sc: Scenario) -> dict[str, Any]:
    bad = meetings(60, seed=99)
    await sc.whereby.send(bad, bad_signature=True)
    return {"fault": f"{len(bad)} badly signed requests during the load", "bad_signature_ids": len(bad)}


async def nothing(sc: Scenario) -> dict[str, Any]:
    return {"fault": "each event 1-3 times, locally shuffled"}


async def duplicates_and_control() -> list[dict[str, Any]]:
    sc = Scenario("duplicates_reordering")
    await sc.prepare()
    events = meetings(120)
    sent = whereby_style(events)
    await sc.start()
    await sc.whereby.send(sent)
    await sc.drained()
    delivered = await sc.raw_enriched_ids()
    await sc.stop_supervising()
    result = sc.result(events, await asyncio.to_thread(sc.observe), fault="each event 1-3 times, locally shuffled")
    result["sent"] = len(sent)
    control = {"name": "duplicates_reordering (dedup off)", "negative_control": True}
    control.update(check.verdict(sc.whereby.acked, check.from_deliveries(delivered), {}))
    control["fault"] = "same deliveries, counted without deduplication: must report duplicates"
    return [result, control]


async def poison() -> list[dict[str, Any]]:
    """Poison on the raw topic (not JSON, no id) and signed events the store rejects, among good ones."""
    sc = Scenario("poison")
    await sc.prepare()
    good = meetings(60)
    await sc.start()
    producer = kafka.producer(sc.settings)
    await producer.start()
    poison_raw = [b"\xff\xfe not json", b'{"type":"room.client.joined"}', b"[]", b'{"id":"x","type":1}']
    try:
        load = asyncio.create_task(sc.whereby.send(good))
        for i, value in enumerate(poison_raw * 5):
            await producer.send_and_wait(sc.settings.topic_raw, value, key=f"/poison-{i}".encode())
        await load
    finally:
        await producer.stop()
    await sc.drained()
    from tests.support import read_topic

    letters = await read_topic(sc.settings, sc.settings.topic_deadletter, expect=len(poison_raw) * 5, timeout_s=20)
    await sc.stop_supervising()
    return [
        sc.result(
            good,
            await asyncio.to_thread(sc.observe),
            fault=f"{len(poison_raw) * 5} poison records on the raw topic among good events",
            poison=len(poison_raw) * 5,
            dead_lettered=len(letters),
        )
    ]


async def store_outage() -> list[dict[str, Any]]:
    """The sink runs in this process so the scenario can take its table away and give it back."""
    from sink.service import SinkService
    from tests.support import Running

    sc = Scenario("store_outage")
    await sc.prepare()
    events = meetings(120)
    sink = SinkService(sc.settings)
    async with Running(sink):
        await sc.start(("enrich", "ingest"))
        load = asyncio.create_task(sc.whereby.send(events))
        await asyncio.sleep(2)
        assert sink.client is not None
        db = sc.settings.clickhouse_database
        await asyncio.to_thread(sink.client.command, f"DETACH TABLE {db}.events_input")
        await asyncio.sleep(8)
        await asyncio.to_thread(sink.client.command, f"ATTACH TABLE {db}.events_input")
        await load
        await sc.drained()
        await sc.stop_supervising()
        sc.stack.stop_all()
        observed = check.from_store(sink.client, db)
    return [sc.result(events, observed, fault="the events table detached for 8 s under load, then attached")]


SCENARIOS: dict[str, Callable[[], Coroutine[Any, Any, list[dict[str, Any]]]]] = {
    "broker_restart": lambda: _standard("broker_restart", broker_restart),
    "kill_enrich": lambda: _standard("kill_enrich", kill_enrich),
    "kill_sink_before_insert": lambda: _standard(
        "kill_sink_before_insert", kill_sink_before_insert, SINK_BATCH_SECONDS="2"
    ),
    "kill_sink_after_insert": lambda: _standard(
        "kill_sink_after_insert", kill_sink_after_insert, stages=("enrich", "ingest")
    ),
    "store_outage": store_outage,
    "poison": poison,
    "duplicates_reordering": duplicates_and_control,
    "bad_signature_flood": lambda: _standard("bad_signature_flood", flood),
}


def run_one(name: str) -> None:
    """Child-process entry: run one scenario and print its results as the last line."""
    try:
        results = asyncio.run(SCENARIOS[name]())
    finally:
        for scenario in _ACTIVE:  # no orphaned stages, whatever happened
            scenario.stack.stop_all()
    print(json.dumps(results))


def healthy(row: dict[str, Any]) -> bool:
    if row.get("negative_control"):
        return int(row.get("duplicated", 0)) > 0
    return row.get("error") is None and row.get("lost") == 0 and row.get("duplicated") == 0


def main() -> None:
    parser = argparse.ArgumentParser(description="fault-injection scenarios (see module docstring)")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        run_one(args.scenario)
        return
    broker("start")
    rows: list[dict[str, Any]] = []
    try:
        for name in args.only or list(SCENARIOS):
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "chaos.run", "--scenario", name],
                    capture_output=True,
                    text=True,
                    timeout=SCENARIO_TIMEOUT_S,
                    cwd=REPO,
                )
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                    rows.append({"name": name, "error": tail[0][:300], "negative_control": False})
                else:
                    rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
            except subprocess.TimeoutExpired:
                rows.append(
                    {"name": name, "error": f"timed out after {SCENARIO_TIMEOUT_S}s", "negative_control": False}
                )
            for row in rows:
                row.setdefault("seconds", round(time.monotonic() - started, 1))
            broker("start")  # in case a scenario left it stopped
    finally:
        broker("stop")
    REPORT.write_text(json.dumps({"scenarios": rows}, indent=2) + "\n")
    print("| scenario | acked | lost | duplicated | negative control | result | seconds |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        verdict = "ok" if healthy(row) else ("FAILED: " + row["error"] if row.get("error") else "FAILED")
        print(
            f"| {row['name']} | {row.get('acked', '-')} | {row.get('lost', '-')} | {row.get('duplicated', '-')} "
            f"| {'yes' if row.get('negative_control') else 'no'} | {verdict} | {row.get('seconds', '-')} |"
        )
    print(f"\nwritten to {REPORT.relative_to(REPO)}")
    sys.exit(0 if all(healthy(r) for r in rows) else 1)


if __name__ == "__main__":
    main()
