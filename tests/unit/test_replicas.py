"""pipeline.replicas: broker descriptions into partition states and gauges (the broker side is covered by
tests/integration/test_kafka_cluster.py against a real three-node cluster)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY

from pipeline import replicas
from pipeline.replicas import PartitionState

T = "whereby.test.replicas"


def described(*partitions: tuple[int, int, list[int], list[int]], topic: str = T) -> list[dict[str, object]]:
    rows = [
        {"error_code": 0, "partition": p, "leader": leader, "replicas": r, "isr": i} for p, leader, r, i in partitions
    ]
    return [{"error_code": 0, "topic": topic, "is_internal": False, "partitions": rows}]


def test_states_from_a_description_sorted_and_flagged() -> None:
    states = replicas.partitions_from(described((1, 3, [3, 1, 2], [3, 1]), (0, 2, [2, 3, 1], [2, 3, 1])))
    assert states == [
        PartitionState(T, 0, 2, (2, 3, 1), (2, 3, 1)),
        PartitionState(T, 1, 3, (3, 1, 2), (3, 1)),
    ]
    assert [s.under_replicated for s in states] == [False, True]


def test_topics_with_errors_are_left_out() -> None:
    missing = [{"error_code": 3, "topic": "nope", "is_internal": False, "partitions": []}]
    assert replicas.partitions_from(missing + described((0, 1, [1], [1]))) == [PartitionState(T, 0, 1, (1,), (1,))]


def test_min_insync_from_describe_configs_responses() -> None:
    response = SimpleNamespace(
        resources=[
            (0, "", 2, "a", [("min.insync.replicas", "2", False, 5, False, [])]),
            (0, "", 2, "b", [("min.insync.replicas", "1", False, 5, False, [])]),
            (3, "unknown topic", 2, "c", []),
        ]
    )
    assert replicas.min_insync_from([response]) == {"a": 2, "b": 1}


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_publish_sets_gauges_and_forgets_vanished_partitions() -> None:
    replicas.publish(
        replicas.partitions_from(described((0, 1, [1, 2, 3], [1, 2]), (1, 2, [2, 3, 1], [2, 3, 1]))), {T: 2}
    )
    assert sample("whereby_kafka_partition_replicas", topic=T, partition="0") == 3
    assert sample("whereby_kafka_partition_in_sync_replicas", topic=T, partition="0") == 2
    assert sample("whereby_kafka_partition_in_sync_replicas", topic=T, partition="1") == 3
    assert sample("whereby_kafka_topic_min_insync_replicas", topic=T) == 2
    replicas.publish(replicas.partitions_from(described((1, 2, [2, 3, 1], [2, 3, 1]))), {})
    assert sample("whereby_kafka_partition_in_sync_replicas", topic=T, partition="0") is None
    assert sample("whereby_kafka_partition_in_sync_replicas", topic=T, partition="1") == 3
    assert sample("whereby_kafka_topic_min_insync_replicas", topic=T) is None
