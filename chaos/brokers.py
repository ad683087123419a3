"""The brokers `make chaos` runs on, and the faults that take brokers of the three-node cluster away.

Two private setups from `deploy/kafka/kafka.sh`, never the development (9092) or test (19092) brokers:
- one broker on 127.0.0.1:28092 (data in .data/kafka-chaos) for the single-broker scenarios;
- a three-node KRaft cluster on 127.0.0.1:29392-29394 (controllers 29492-29494, data in
  .data/kafka-chaos-cluster) for the cluster scenarios, whose topics have replication factor 3 and
  min.insync.replicas 2: with one broker down every partition still takes acks=all writes.

The faults wait for the brokers' own word that replication recovered (every partition's ISR back to its
full replica set) before they return, so a scenario never ends with a cluster still catching up.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any

from harness import REPO
from harness.broker import KAFKA_SH
from pipeline import replicas
from pipeline.settings import Settings

if TYPE_CHECKING:
    from chaos.run import Scenario

SINGLE_PORT = 28092  # below the ephemeral range (32768+), so no outgoing connection can hold it
CLUSTER_PORT = 29392  # not 29092: tests/integration/test_ingest_broker_outage.py uses that one
CLUSTER_SIZE = 3
# Overrides for a scenario's pipeline on the cluster: replicated topics, writes need two replicas.
CLUSTER_TOPICS = {"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2"}
# How long a killed broker stays down: longer than the controller's broker session timeout (9 s), so its
# partitions' leadership moves to the survivors while it is away, as in a real crash.
DOWN_S = 12.0
IN_SYNC_TIMEOUT_S = 120.0


def env(brokers: int) -> dict[str, str]:
    """Environment for kafka.sh to act on the single chaos broker (1) or the chaos cluster (3)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    if brokers == 1:
        out.update(KAFKA_PORT=str(SINGLE_PORT), KAFKA_DATA_DIR=str(REPO / ".data" / "kafka-chaos"))
    else:
        out.update(
            KAFKA_CLUSTER_SIZE=str(CLUSTER_SIZE),
            KAFKA_PORT=str(CLUSTER_PORT),
            KAFKA_DATA_DIR=str(REPO / ".data" / "kafka-chaos-cluster"),
            KAFKA_START_TIMEOUT_S="120",  # three JVMs at once on a busy two-core machine
        )
    return out


def control(brokers: int, action: str, node: int | None = None) -> None:
    """kafka.sh start|stop|kill|status on every node, or on one node of the cluster."""
    args = ["bash", str(KAFKA_SH), action, *([str(node)] if node is not None else [])]
    subprocess.run(args, env=env(brokers), check=True, stdout=subprocess.DEVNULL)


def bootstrap(brokers: int) -> str:
    """Bootstrap servers of the single chaos broker or of the cluster."""
    if brokers == 1:
        return f"127.0.0.1:{SINGLE_PORT}"
    return ",".join(f"127.0.0.1:{CLUSTER_PORT + i}" for i in range(CLUSTER_SIZE))


async def wait_in_sync(settings: Settings, timeout_s: float = IN_SYNC_TIMEOUT_S) -> float:
    """Wait until every partition of the contract's topics has its whole replica set in sync and a leader;
    returns the seconds waited. Raises when replication does not recover in time."""
    started = time.monotonic()
    last: list[replicas.PartitionState] = []
    while time.monotonic() - started < timeout_s:
        try:
            last, _ = await replicas.describe(settings)
        except Exception:  # a broker that is still starting may refuse the admin connection
            last = []
        if last and all(not s.under_replicated and s.leader >= 0 for s in last):
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)
    lagging = [f"{s.topic}/{s.partition} isr={list(s.isr)}" for s in last if s.under_replicated]
    raise RuntimeError(f"replication did not recover within {timeout_s:.0f}s: {lagging[:5]}")


async def leader_kill(sc: Scenario) -> dict[str, Any]:
    """kill -9 the broker leading the most raw-topic partitions, under load; start it again after DOWN_S."""
    await asyncio.sleep(3)
    states, _ = await replicas.describe(sc.settings, [sc.settings.topic_raw])
    leaders = collections.Counter(s.leader for s in states)
    node, led = min(leaders.items(), key=lambda item: (-item[1], item[0]))
    killed_at = time.monotonic()
    await asyncio.to_thread(control, CLUSTER_SIZE, "kill", node)
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(control, CLUSTER_SIZE, "start", node)
    down_s = time.monotonic() - killed_at
    caught_up_s = await wait_in_sync(sc.settings)
    return {
        "fault": f"kill -9 of broker {node} (leader of {led} of {len(states)} raw partitions) under load, "
        f"restarted after {DOWN_S:.0f} s",
        "killed_broker": node,
        "raw_partitions_led": led,
        "broker_down_s": round(down_s, 1),
        "isr_recovered_after_restart_s": caught_up_s,
    }


async def rolling_restart(sc: Scenario) -> dict[str, Any]:
    """Restart the brokers one after the other (SIGTERM: controlled shutdown), each only once the previous
    one is back in every ISR, as an operator would roll a cluster."""
    steps = []
    for node in range(1, CLUSTER_SIZE + 1):
        await asyncio.sleep(2)
        started = time.monotonic()
        await asyncio.to_thread(control, CLUSTER_SIZE, "stop", node)
        await asyncio.to_thread(control, CLUSTER_SIZE, "start", node)
        back_s = time.monotonic() - started
        caught_up_s = await wait_in_sync(sc.settings)
        steps.append({"broker": node, "restart_s": round(back_s, 1), "isr_recovered_s": caught_up_s})
    return {"fault": f"rolling restart of all {CLUSTER_SIZE} brokers under load", "restarts": steps}
