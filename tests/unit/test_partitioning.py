"""pipeline.partitioning (used by ingest's batcher and enrich's record batches) matches Kafka's default
partitioner, so per-room order holds."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from pipeline.partitioning import partition_for


def test_same_partition_as_kafkas_default_partitioner() -> None:
    partitions = [0, 1, 2, 3, 4, 5]
    default = DefaultPartitioner()
    for i in range(500):
        key = f"/acme-{i:08x}-room".encode()
        assert partition_for(key, partitions) == default(key, partitions, partitions)


def test_keyless_records_go_to_some_partition() -> None:
    assert {partition_for(None, (0, 1, 2)) for _ in range(200)} == {0, 1, 2}
