"""Replication health of the contract's topics, as Prometheus gauges: replicas, in-sync replicas (ISR) and
min.insync.replicas per partition.

Why the pipeline reports it: an acks=all write is acknowledged once every in-sync replica has it, and
refused when fewer than min.insync.replicas are in sync. A partition whose ISR is below its replica count
is one broker failure closer to refusing writes (ingest then answers 503) or, with the ISR at one, to
losing acknowledged records if that broker's disk dies. `WherebyKafkaUnderReplicatedPartitions` alerts
on it. The brokers know this too, but their JMX metrics need an exporter; these come with the stages.

The consumer stages run `report_forever(settings)` next to their lag task; every pod reports the same
partitions, so aggregate with `min by (topic, partition)`. Topic and partition numbers are a small,
bounded set of label values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from pipeline import kafka
from pipeline.settings import CommonSettings

log = logging.getLogger(__name__)

REPLICAS = Gauge("whereby_kafka_partition_replicas", "Replicas assigned to a partition", ["topic", "partition"])
IN_SYNC = Gauge(
    "whereby_kafka_partition_in_sync_replicas",
    "Replicas in sync with the partition's leader (ISR); below the replica count: under-replicated",
    ["topic", "partition"],
)
MIN_IN_SYNC = Gauge(
    "whereby_kafka_topic_min_insync_replicas",
    "min.insync.replicas of the topic: acks=all writes are refused while the ISR is smaller",
    ["topic"],
)

# Label tuples this process has set, so partitions and topics that disappear stop reporting.
_partitions: set[tuple[str, str]] = set()
_topics: set[str] = set()


@dataclass(frozen=True)
class PartitionState:
    """Where one partition's replicas are, and which of them are in sync with its leader."""

    topic: str
    partition: int
    leader: int  # broker id; -1 while the partition has no leader
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        """Fewer replicas in sync than assigned: a broker is down or cannot keep up."""
        return len(self.isr) < len(self.replicas)


def contract_topics(settings: CommonSettings) -> list[str]:
    """The four topics of the contract, the ones the pipeline writes and reads."""
    return [settings.topic_raw, settings.topic_enriched, settings.topic_dimensions, settings.topic_deadletter]


def partitions_from(described: Iterable[dict[str, Any]]) -> list[PartitionState]:
    """`AIOKafkaAdminClient.describe_topics` output as states; topics that returned an error are left out."""
    out = []
    for topic in described:
        if topic.get("error_code", 0) != 0:
            continue
        for p in topic.get("partitions", []):
            out.append(
                PartitionState(
                    topic=topic["topic"],
                    partition=int(p["partition"]),
                    leader=int(p.get("leader", -1)),
                    replicas=tuple(p.get("replicas", ())),
                    isr=tuple(p.get("isr", ())),
                )
            )
    return sorted(out, key=lambda s: (s.topic, s.partition))


def min_insync_from(responses: Iterable[Any]) -> dict[str, int]:
    """min.insync.replicas per topic from DescribeConfigs responses (resources are protocol tuples:
    error code, message, type, name, configs as (name, value, ...))."""
    out: dict[str, int] = {}
    for response in responses:
        for resource in getattr(response, "resources", ()):
            error_code, _, _, name, configs = resource[:5]
            if error_code != 0:
                continue
            for config in configs:
                if config[0] == "min.insync.replicas" and config[1] is not None:
                    out[name] = int(config[1])
    return out


async def describe(
    settings: CommonSettings, topics: Sequence[str] | None = None
) -> tuple[list[PartitionState], dict[str, int]]:
    """Partition states and min.insync.replicas of `topics` (default: the contract's), fresh from the brokers."""
    names = list(topics) if topics is not None else contract_topics(settings)
    admin = kafka.admin_client(settings)
    await admin.start()
    try:
        return await _describe(admin, names)
    finally:
        await admin.close()


async def _describe(admin: Any, topics: list[str]) -> tuple[list[PartitionState], dict[str, int]]:
    states = partitions_from(await admin.describe_topics(topics))
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, topic, configs={"min.insync.replicas": None})
        for topic in sorted({s.topic for s in states})
    ]
    return states, (min_insync_from(await admin.describe_configs(resources)) if resources else {})


def publish(states: list[PartitionState], min_insync: dict[str, int]) -> None:
    """Set the gauges to `states`; series of partitions or topics no longer described are removed."""
    current = {(s.topic, str(s.partition)) for s in states}
    for labels in _partitions - current:
        for gauge in (REPLICAS, IN_SYNC):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
    for state in states:
        REPLICAS.labels(state.topic, str(state.partition)).set(len(state.replicas))
        IN_SYNC.labels(state.topic, str(state.partition)).set(len(state.isr))
    _partitions.clear()
    _partitions.update(current)
    for topic in _topics - set(min_insync):
        with contextlib.suppress(KeyError):
            MIN_IN_SYNC.remove(topic)
    for topic, value in min_insync.items():
        MIN_IN_SYNC.labels(topic).set(value)
    _topics.clear()
    _topics.update(min_insync)


async def report_forever(
    settings: CommonSettings, topics: Sequence[str] | None = None, *, interval_s: float = 15.0
) -> None:
    """Describe `topics` every `interval_s` and publish the gauges, until cancelled. Broker errors are
    logged and retried next round: a missing sample must never stop the stage. A fresh admin connection
    each round (one handshake per interval) means a broker that went away is never asked again."""
    while True:
        try:
            publish(*await describe(settings, topics))
        except (KafkaError, OSError) as exc:
            log.warning(f"replica state not measured: {exc!r}")
        await asyncio.sleep(interval_s)
