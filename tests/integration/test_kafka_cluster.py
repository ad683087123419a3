"""A real three-broker KRaft cluster from deploy/kafka/kafka.sh, on free loopback ports with its own data
directory: the contract's topics get replication factor 3 and min.insync.replicas 2, the pipeline's
acks=all idempotent producer writes and its consumer reads back everything, and a kill -9 of a partition
leader loses nothing acknowledged. The cluster is always stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.broker import KAFKA_SH
from harness.ports import free_port_block
from pipeline import kafka, replicas
from pipeline.settings import Settings
from tests.conftest import make_settings
from tests.support import read_topic, wait_for

pytestmark = pytest.mark.integration

NODES = 3


def free_base_port() -> int:
    """A client port base with base..base+2 and base+100..base+102 (controllers) free."""
    return free_port_block(offset + i for offset in (0, 100) for i in range(NODES))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not shutil.which("java"):
        pytest.skip("needs java to run a private Kafka cluster (deploy/kafka/kafka.sh)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(
        KAFKA_CLUSTER_SIZE=str(NODES),
        KAFKA_PORT=str(free_base_port()),
        KAFKA_DATA_DIR=str(tmp_path_factory.mktemp("kafka-cluster")),
        KAFKA_START_TIMEOUT_S="90",  # three JVMs starting at once on two busy cores
    )
    try:
        subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        subprocess.run(["bash", str(KAFKA_SH), "kill"], env=env, check=False)
        raise AssertionError(f"kafka.sh cluster start failed: {exc.stderr.strip()}") from None
    try:
        yield env
    finally:
        subprocess.run(["bash", str(KAFKA_SH), "kill"], env=env, check=False)  # temporary data: no need to flush


def bootstrap(env: dict[str, str]) -> str:
    done = subprocess.run(["bash", str(KAFKA_SH), "bootstrap"], env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip()


async def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Send with the pipeline's producer (acks=all, idempotent) and wait for every acknowledgement."""
    producer = kafka.producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=v[-1:]) for v in values]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def test_replicated_topics_survive_a_leader_kill(cluster: dict[str, str], clickhouse_url: str) -> None:
    s = make_settings(bootstrap(cluster), clickhouse_url, KAFKA_REPLICATION_FACTOR="3", KAFKA_MIN_INSYNC_REPLICAS="2")
    await kafka.wait_for_broker(s, timeout_s=60)
    await kafka.ensure_topics(s)

    # A new cluster's brokers learn of created topics a moment apart: wait until the one answering
    # describes every contract topic with its full replica set (seen empty right after creation).
    async def fully_described() -> tuple[list[replicas.PartitionState], dict[str, int]] | None:
        found, insync = await replicas.describe(s)
        complete = {st.topic for st in found} == set(replicas.contract_topics(s))
        return (found, insync) if complete and all(len(st.isr) == 3 for st in found) else None

    states, min_insync = await wait_for(fully_described, timeout_s=60)
    assert {st.topic for st in states} == set(replicas.contract_topics(s))
    assert all(len(st.replicas) == 3 and len(st.isr) == 3 for st in states), states
    assert min_insync == {topic: 2 for topic in replicas.contract_topics(s)}
    assert len({st.leader for st in states if st.topic == s.topic_raw}) == NODES  # leadership is spread

    before = [f"before-{i}".encode() for i in range(300)]
    await produce(s, s.topic_raw, before)

    # kill -9 the leader of partition 0: its partitions move to the followers, which already have every
    # acknowledged record (acks=all waited for the whole in-sync set).
    leader = next(st.leader for st in states if st.topic == s.topic_raw and st.partition == 0)
    await asyncio.to_thread(subprocess.run, ["bash", str(KAFKA_SH), "kill", str(leader)], env=cluster, check=True)
    after = [f"after-{i}".encode() for i in range(300)]
    await produce(s, s.topic_raw, after)  # ISR 2 >= min.insync.replicas 2: still accepted

    records = await read_topic(s, s.topic_raw, expect=600, timeout_s=60)
    assert sorted(r.value for r in records) == sorted(before + after)

    states, _ = await replicas.describe(s, [s.topic_raw])
    assert all(leader not in st.isr and len(st.isr) == 2 for st in states), states
    assert all(st.leader != leader for st in states)


def test_min_insync_of_the_brokers_default(cluster: dict[str, str]) -> None:
    """Topics made without the pipeline's settings get RF 3 / min.insync 2 from the brokers' defaults too."""
    node = Path(cluster["KAFKA_DATA_DIR"]) / "node-1" / "server.properties"
    props = dict(line.split("=", 1) for line in node.read_text().splitlines() if "=" in line and line[0] != "#")
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["controller.quorum.voters"].count("@127.0.0.1:") == NODES
