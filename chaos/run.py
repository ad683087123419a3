"""`make chaos`: fault scenarios against the real broker and the real ClickHouse engine.

    .venv/bin/python -m chaos.run [--only NAME ...]

Private brokers are started for the run (`chaos/brokers.py`), since scenarios stop, kill and restart
them: one broker (127.0.0.1:28092) for the single-broker scenarios, and a three-node KRaft cluster
(127.0.0.1:29392-29394, topics with replication factor 3 and min.insync.replicas 2) for the cluster
scenarios; each is started only when a selected scenario needs it and stopped afterwards. Each scenario
runs in its own process (the embedded engine allows one data directory per process) with its own topics,
groups and database; the stages are real processes (`harness.stack.Stack`), several instances of a stage
where the scenario asks for them, restarted by a small supervisor when they die, as Kubernetes would.
Load comes from a simulated Whereby (retries on 5xx/timeouts, at most twice) on loopback, bounded in
count and time. Writes chaos/report.json (each row with `brokers` and `instances`) and prints a table;
exits 1 if any scenario lost or doubled an event, if a fault outlasted its load, or if the negative
control failed to see duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson

from chaos import brokers, check, scaling
from chaos.whereby import Whereby
from chaos.workload import CUSTOMERS, Event, expected_minutes, meetings, whereby_style
from harness import REPO
from harness.stack import STAGES, Stack, instance_name, isolated_env
from pipeline import kafka
from pipeline.settings import Settings

REPORT = REPO / "chaos" / "report.json"
LOGS = REPO / "chaos" / "logs"
SCENARIO_TIMEOUT_S = 300
CLUSTER_TIMEOUT_S = 600  # three JVMs, several stage processes and broker restarts on two cores


def broker(action: str) -> None:
    """kafka.sh on the single chaos broker (the one `broker_restart` stops and starts)."""
    brokers.control(1, action)


# Every scenario's pipeline, so that a scenario that fails midway still stops its stage processes.
_ACTIVE: list[Scenario] = []


class Scenario:
    """One isolated pipeline plus the bookkeeping every scenario needs."""

    def __init__(self, name: str, *, brokers_used: int = 1, **overrides: str) -> None:
        _ACTIVE.append(self)
        self.name = name
        self.brokers = brokers_used
        self.workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
        topics = brokers.CLUSTER_TOPICS if brokers_used > 1 else {}
        self.env = isolated_env(
            brokers.bootstrap(brokers_used),
            f"chdb://{self.workdir / 'clickhouse'}",
            KAFKA_CONNECT_TIMEOUT_S="60",
            **{**topics, **overrides},
        )
        self.settings = Settings.from_env(self.env)
        self.stack = Stack(self.env, LOGS / name)
        self.whereby = Whereby(self.stack.url("ingest", "/webhooks/whereby"), self.env["WHEREBY_WEBHOOK_SECRET"])
        self.restarts = 0
        # Instance name -> (stage, index) that the supervisor keeps running; the most seen per stage.
        self.desired: dict[str, tuple[str, int]] = {}
        self.instances: dict[str, int] = {}
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

    async def start(
        self, stages: tuple[str, ...] = ("sink", "enrich", "ingest"), instances: dict[str, int] | None = None
    ) -> None:
        """Start the stages (`instances[stage]` processes each, default 1), then keep restarting any that
        dies, as an orchestrator would."""
        for stage in stages:
            await self.scale(stage, (instances or {}).get(stage, 1))
        self._supervisor = asyncio.create_task(self._supervise())

    async def scale(self, stage: str, count: int) -> None:
        """Run exactly `count` instances of `stage`: start the missing ones (each waited for until ready),
        stop the extra ones with SIGTERM (they drain and commit, as a scale-down does)."""
        running = sorted(index for st, index in self.desired.values() if st == stage)
        for index in range(len(running), count):
            await asyncio.to_thread(self.stack.start, stage, instance=index, timeout_s=120)
            self.desired[instance_name(stage, index)] = (stage, index)  # after the start: no double start
        for index in running[count:]:
            name = instance_name(stage, index)
            del self.desired[name]
            await asyncio.to_thread(self.stack.stop, name)
        self.instances[stage] = max(self.instances.get(stage, 0), count)

    async def wait_restarted(self, name: str, timeout_s: float = 120.0) -> None:
        """Wait until the supervisor has `name` running again after a kill."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.stack.procs.get(name)
            if (
                proc is not None
                and proc.poll() is None
                and self.stack.metric(name, "whereby_consumer_rebalances_total")
            ):
                return
            await asyncio.sleep(0.3)
        raise RuntimeError(f"{self.name}: {name} was not restarted within {timeout_s:.0f}s")

    async def _supervise(self) -> None:
        while self._supervising:
            for name, (stage, index) in list(self.desired.items()):
                proc = self.stack.procs.get(name)
                if self._supervising and name in self.desired and (proc is None or proc.poll() is not None):
                    self.restarts += 1
                    # A stage that dies while starting (e.g. broker still down) is tried again next round.
                    with contextlib.suppress(RuntimeError):
                        await asyncio.to_thread(self.stack.start, stage, instance=index, timeout_s=120)
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
        from harness.topics import read_topic

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
        out: dict[str, Any] = {"name": self.name, "negative_control": False}
        out.update(check.verdict(acked, observed, expected_minutes([e for e in events if e.event_id in acked])))
        out.update(
            brokers=self.brokers,
            instances={stage: self.instances.get(stage, 1) for stage in STAGES},
            sent=len(events),
            gave_up=len(self.whereby.gave_up),
            stage_restarts=self.restarts,
            statuses=dict(self.whereby.statuses),
            **self.whereby.outage(),
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
    instances: dict[str, int] | None = None,
    brokers_used: int = 1,
    load_until_fault_done: bool = False,
    setup: Callable[[Scenario], Any] | None = None,
    evidence: Callable[[Scenario], Awaitable[dict[str, Any]]] | None = None,
    **overrides: str,
) -> list[dict[str, Any]]:
    """Run load through all three stages while `fault` acts; then drain, stop and check.

    With `load_until_fault_done` the load keeps going (from `events`, in order) until the fault has
    finished plus a short tail, so a fault that takes longer than expected still acts under load; if the
    events run out first the scenario fails rather than claim a fault under load it did not test.
    """
    sc = Scenario(name, brokers_used=brokers_used, **overrides)
    await sc.prepare()
    events = events if events is not None else meetings(120)
    sc.whereby.rate = rate
    await sc.start(stages, instances)  # the supervised stages; a fault may run others itself
    if setup is not None:
        await asyncio.to_thread(setup, sc)
    fault_done = asyncio.Event()
    sent: list[Event] = []

    def feed() -> Iterator[Event]:
        tail_until: float | None = None
        for event in events:
            if load_until_fault_done and fault_done.is_set():
                tail_until = tail_until or time.monotonic() + 2.0
                if time.monotonic() > tail_until:
                    return
            sent.append(event)
            yield event

    load = asyncio.create_task(sc.whereby.send(feed()))
    extra = await fault(sc)
    fault_done.set()
    if load_until_fault_done:
        extra["load_outlasted_fault"] = not load.done()
    await load
    await sc.drained()
    if evidence is not None:  # what the fault left behind, read before the stages stop
        extra.update(await evidence(sc))
    await sc.stop_supervising()
    return [sc.result(sent, await asyncio.to_thread(sc.observe), **extra)]


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
        # It may insert, and so kill itself, before its first readiness probe (e.g. with the uncommitted
        # records of the previous crash waiting): that is the fault, not a failed start.
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(sc.stack.start, "sink", module="chaos.crashing_sink")
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
    from harness.topics import read_topic

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
    from harness.running import Running
    from sink.service import SinkService

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


# The cluster scenarios: three brokers, several instances of a stage, load that outlasts the fault.
# 60 events/s keeps three JVMs, five stage processes and the load generator within two cores.
CLUSTER_RATE = 60.0
CLUSTER = {"brokers_used": brokers.CLUSTER_SIZE, "rate": CLUSTER_RATE, "load_until_fault_done": True}


def cluster_scenario(
    name: str, fault: Callable[[Scenario], Awaitable[dict[str, Any]]], **options: Any
) -> Callable[[], Coroutine[Any, Any, list[dict[str, Any]]]]:
    """A scenario on the three-broker cluster, with load from 1,500 meetings (~12,000 events, far more
    than any fault needs: the load stops 2 s after the fault is done)."""
    return lambda: _standard(name, fault, events=meetings(1500), **{**CLUSTER, **options})


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
    "cluster_leader_kill": cluster_scenario("cluster_leader_kill", brokers.leader_kill, instances={"enrich": 2}),
    "cluster_rolling_restart": cluster_scenario(
        "cluster_rolling_restart", brokers.rolling_restart, instances={"enrich": 2}
    ),
    "cluster_enrich_scaling": cluster_scenario(
        "cluster_enrich_scaling",
        scaling.enrich_scaling,
        evidence=scaling.redeliveries,
        CONSUMER_LAG_INTERVAL_S="1",  # each instance names the partitions it owns within a second
    ),
    "cluster_ingest_workers": cluster_scenario(
        "cluster_ingest_workers",
        scaling.ingest_workers,
        stages=("sink", "enrich"),
        setup=scaling.start_ingest_workers,
    ),
}
# Scenarios on the three-broker cluster; every other one runs on the single chaos broker.
ON_CLUSTER = {name for name in SCENARIOS if name.startswith("cluster_")}


def run_one(name: str) -> None:
    """Child-process entry: run one scenario and print its results as the last line."""
    try:
        results = asyncio.run(SCENARIOS[name]())
    finally:
        for scenario in _ACTIVE:  # no orphaned stages, whatever happened
            scenario.stack.stop_all()
    print(json.dumps(results))


def healthy(row: dict[str, Any]) -> bool:
    """A scenario passes with nothing lost or doubled (and, where it applies, load that outlasted the
    fault); the negative control passes when it does see duplicates."""
    if row.get("negative_control"):
        return int(row.get("duplicated", 0)) > 0
    return (
        row.get("error") is None
        and row.get("lost") == 0
        and row.get("duplicated") == 0
        and row.get("load_outlasted_fault", True) is True
    )


def _run_scenario(name: str) -> list[dict[str, Any]]:
    """Run one scenario in its own process; its rows, or one row with the error."""
    timeout_s = CLUSTER_TIMEOUT_S if name in ON_CLUSTER else SCENARIO_TIMEOUT_S
    started = time.monotonic()
    rows: list[dict[str, Any]]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "chaos.run", "--scenario", name],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            rows = [{"name": name, "error": tail[0][:300], "negative_control": False}]
        else:
            rows = json.loads(proc.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        rows = [{"name": name, "error": f"timed out after {timeout_s}s", "negative_control": False}]
    for row in rows:
        row["scenario"] = name
        row.setdefault("brokers", brokers.CLUSTER_SIZE if name in ON_CLUSTER else 1)
        row.setdefault("seconds", round(time.monotonic() - started, 1))
    return rows


def _run_on(brokers_used: int, names: list[str]) -> list[dict[str, Any]]:
    """Start the brokers these scenarios need, run them one by one, stop the brokers whatever happens."""
    if brokers_used > 1:
        # The cluster is only ever used by chaos: start it empty, so old runs' topics never slow it down.
        brokers.control(brokers_used, "stop")
        shutil.rmtree(brokers.env(brokers_used)["KAFKA_DATA_DIR"], ignore_errors=True)
    rows: list[dict[str, Any]] = []
    brokers.control(brokers_used, "start")
    try:
        for name in names:
            print(f"chaos: {name} ...", file=sys.stderr, flush=True)
            rows.extend(_run_scenario(name))
            brokers.control(brokers_used, "start")  # in case a scenario left a broker stopped
    finally:
        brokers.control(brokers_used, "stop")
    return rows


def merge(previous: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report after a filtered run: fresh rows replace those of the same scenario; the rest stay,
    all in the order of SCENARIOS."""
    ran = {row["scenario"] for row in fresh}
    kept = [row for row in previous if row.get("scenario", row.get("name")) not in ran]
    order = {name: i for i, name in enumerate(SCENARIOS)}
    return sorted(kept + fresh, key=lambda row: order.get(row.get("scenario", ""), len(order)))


def main() -> None:
    parser = argparse.ArgumentParser(description="fault-injection scenarios (see module docstring)")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        run_one(args.scenario)
        return
    selected = args.only or list(SCENARIOS)
    rows: list[dict[str, Any]] = []
    for brokers_used, names in (
        (1, [n for n in selected if n not in ON_CLUSTER]),
        (brokers.CLUSTER_SIZE, [n for n in selected if n in ON_CLUSTER]),
    ):
        if names:
            rows.extend(_run_on(brokers_used, names))
    if args.only and REPORT.exists():
        rows = merge(json.loads(REPORT.read_text()).get("scenarios", []), rows)
    REPORT.write_text(json.dumps({"scenarios": rows}, indent=2) + "\n")
    print(
        "| scenario | brokers | ingest/enrich/sink processes | acked | lost | duplicated | 503s for (s) | result | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        verdict = "ok" if healthy(row) else ("FAILED: " + row["error"] if row.get("error") else "FAILED")
        counts = row.get("instances") or {}
        instances = "/".join(str(counts.get(stage, "-")) for stage in STAGES[::-1]) if counts else "-"
        control = " (negative control)" if row.get("negative_control") else ""
        print(
            f"| {row['name']}{control} | {row.get('brokers', '-')} | {instances} | {row.get('acked', '-')} "
            f"| {row.get('lost', '-')} | {row.get('duplicated', '-')} | {row.get('answered_503_s', '-')} "
            f"| {verdict} | {row.get('seconds', '-')} |"
        )
    print(f"\nwritten to {REPORT.relative_to(REPO)}")
    sys.exit(0 if all(healthy(r) for r in rows) else 1)


if __name__ == "__main__":
    main()
