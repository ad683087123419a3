"""Faults with several instances of a stage: scaling enrich's consumer group under load, and killing one
of several ingest workers that share a port while it handles requests.

Each fault checks that it did what it claims (the group really spread its partitions, the worker really
had requests in flight when it was killed) and reports the evidence next to the checker's verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition

from harness import REPO
from harness.ports import free_port_block
from harness.ready import http_ok, wait_for
from harness.stack import instance_name
from pipeline import kafka

if TYPE_CHECKING:
    from chaos.run import Scenario

INGEST_WORKERS = 3
KILLS = 2


def _instance_metric(sc: Scenario, name: str, metric: str, **labels: str) -> float:
    return sc.stack.metric(name, metric, **labels)


async def _until(predicate: Any, *, timeout_s: float, what: str) -> None:
    """Wait for a blocking `predicate` (it reads HTTP endpoints) without holding up the event loop."""
    await wait_for(lambda: asyncio.to_thread(predicate), timeout_s=timeout_s, what=what)


def _owned_partitions(sc: Scenario, name: str) -> list[int]:
    """Raw-topic partitions an enrich instance reports lag for, i.e. owns (CONSUMER_LAG_INTERVAL_S=1)."""
    with contextlib.suppress(urllib.error.URLError, OSError):
        with urllib.request.urlopen(sc.stack.url(name, "/metrics"), timeout=2) as response:
            text = response.read().decode()
        topic = f'topic="{sc.settings.topic_raw}"'
        return sorted(
            int(line.split('partition="')[1].split('"')[0])
            for line in text.splitlines()
            if line.startswith("whereby_consumer_lag_records{") and topic in line and 'stage="enrich"' in line
        )
    return []


async def _uncommitted(sc: Scenario, partitions: list[int]) -> int:
    """Records on these raw partitions that the enrich group has not committed yet."""
    tps = [TopicPartition(sc.settings.topic_raw, p) for p in partitions]
    consumer = kafka.consumer(sc.settings, group_id=None)
    admin = kafka.admin_client(sc.settings)
    await consumer.start()
    await admin.start()
    try:
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(sc.settings.enrich_group, partitions=tps)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()


async def enrich_scaling(sc: Scenario) -> dict[str, Any]:
    """enrich 1 → 3 instances, kill -9 of one holding uncommitted records (the supervisor restarts it), → 1.

    The victim is frozen (SIGSTOP) first and killed only once its partitions hold records it has not
    committed: those are in flight, and the rebalance after the kill hands them to another instance.
    """
    await asyncio.sleep(2)
    await sc.scale("enrich", 3)
    names = [instance_name("enrich", i) for i in range(3)]

    def spread() -> bool:
        return all(_instance_metric(sc, n, "whereby_consumer_assigned_partitions", stage="enrich") > 0 for n in names)

    await _until(spread, timeout_s=60, what="the three enrich instances did not all get partitions")
    victim = random.choice(names[1:])

    def settled() -> bool:  # its lag series (refreshed each second) name exactly the partitions it holds now
        owned = _owned_partitions(sc, victim)
        return bool(owned) and len(owned) == _instance_metric(
            sc, victim, "whereby_consumer_assigned_partitions", stage="enrich"
        )

    await _until(settled, timeout_s=30, what=f"{victim} did not report the partitions it owns")
    partitions = _owned_partitions(sc, victim)
    batches = _instance_metric(sc, victim, "whereby_enrich_batch_records_count")
    os.kill(sc.stack.procs[victim].pid, signal.SIGSTOP)
    uncommitted = 0
    deadline = time.monotonic() + 15
    while uncommitted == 0 and time.monotonic() < deadline:
        uncommitted = await _uncommitted(sc, partitions)
        await asyncio.sleep(0.2)
    sc.stack.kill(victim)  # no drain, no commit: its uncommitted records go to the next owner
    if uncommitted == 0:
        raise RuntimeError(f"{victim} had no uncommitted records on partitions {partitions} when killed")
    await sc.wait_restarted(victim)
    await asyncio.sleep(2)
    rebalances = sum(
        _instance_metric(sc, n, "whereby_consumer_rebalances_total", stage="enrich") for n in names
    )  # a lower bound: the killed instance's count died with it
    await sc.scale("enrich", 1)
    return {
        "fault": f"enrich scaled 1 -> 3 -> 1 under load; kill -9 of {victim} with {uncommitted} uncommitted "
        f"records on its partitions {partitions}, restarted by the supervisor",
        "killed_instance": victim,
        "uncommitted_at_kill": uncommitted,
        "victim_batches_before_kill": int(batches),
        "rebalances_seen": int(rebalances),
    }


async def redeliveries(sc: Scenario) -> dict[str, Any]:
    """Enriched records of the same event written more than once: the batches that rebalances and the kill
    handed to a new owner before their offsets were committed. The store must still count each once."""
    ids = await sc.raw_enriched_ids()
    return {"enriched_records": len(ids), "enriched_redeliveries": len(ids) - len(set(ids))}


def shared_port_block(workers: int) -> int:
    """A port P with P and P + 100·i (the supervisor's per-worker ports) free, below the ephemeral range."""
    return free_port_block(100 * i for i in range(workers + 1))


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _worker_pid(supervisor: int, instance_port: int) -> int | None:
    """The supervisor's child listening on `instance_port` (read from its environment)."""
    for child in _children(supervisor):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"INSTANCE_PORT={instance_port}".encode() in environ:
                return child
    return None


def _ready(port: int) -> bool:
    return http_ok(f"http://127.0.0.1:{port}/readyz")


def start_ingest_workers(sc: Scenario, workers: int = INGEST_WORKERS) -> subprocess.Popen[bytes]:
    """`whereby-pipeline supervise --stages ingest` with `workers` workers on the scenario's ingest URL.

    The supervisor stands in the stack as "ingest", so stopping the stack stops it (and it its workers);
    each worker's own port is in the stack as `ingest-<i>`, for probes and metrics.
    """
    port = shared_port_block(workers)
    sc.stack.ports["ingest"] = port
    sc.whereby.url = sc.stack.url("ingest", "/webhooks/whereby")
    for i in range(workers):
        sc.stack.ports[f"ingest-{i}"] = port + 100 * (i + 1)
    env = {**os.environ, **sc.stack.env, "INGEST_PORT": str(port), "INGEST_WORKERS": str(workers)}
    log = open(sc.stack.log_dir / "supervise.log", "ab")  # noqa: SIM115 - owned by the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "supervise", "--stages", "ingest", "--log-dir", str(sc.stack.log_dir)],
        env=env,
        stdout=log,
        stderr=log,
        cwd=REPO,
    )
    sc.stack.procs["ingest"] = proc
    sc.instances["ingest"] = workers
    deadline = time.monotonic() + 90
    while not all(_ready(port + 100 * (i + 1)) for i in range(workers)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ingest workers not ready; see {sc.stack.log_dir / 'supervise.log'}")
        time.sleep(0.3)
    return proc


async def ingest_workers(sc: Scenario) -> dict[str, Any]:
    """Kill -9 ingest workers while they have requests in flight; the supervisor restarts each."""
    supervisor = sc.stack.procs["ingest"]
    kills = []
    for k in range(KILLS):
        await asyncio.sleep(2)
        worker = k % INGEST_WORKERS
        port = sc.stack.ports["ingest"] + 100 * (worker + 1)
        pid = _worker_pid(supervisor.pid, port)
        if pid is None:
            raise RuntimeError(f"ingest worker on port {port} not found under supervisor {supervisor.pid}")
        in_flight = 0.0
        deadline = time.monotonic() + 10
        # Mid-request: wait until the worker says it is handling webhooks right now (its own metrics port).
        while time.monotonic() < deadline:
            in_flight = await asyncio.to_thread(
                _instance_metric, sc, f"ingest-{worker}", "whereby_ingest_in_flight_requests"
            )
            if in_flight > 0:
                break
            await asyncio.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        kills.append({"worker": worker, "pid": pid, "in_flight_at_kill": int(in_flight)})
        await _until(
            lambda port=port, pid=pid: _worker_pid(supervisor.pid, port) not in (None, pid) and _ready(port),
            timeout_s=60,
            what=f"ingest worker {worker} was not restarted",
        )
    if not any(k["in_flight_at_kill"] > 0 for k in kills):
        raise RuntimeError(f"no worker had a request in flight when killed: {kills}")
    return {
        "fault": f"{INGEST_WORKERS} ingest workers on one port (SO_REUSEPORT); kill -9 of a worker with "
        f"requests in flight, {KILLS} times, each restarted by the supervisor",
        "kills": kills,
    }
