"""The parts of aiokafka and prometheus-client the hot paths use beyond their documented API.

ingest and enrich build aiokafka record batches themselves (`create_batch` / `BatchBuilder.append` /
`send_batch`), pick partitions with aiokafka's `murmur2` as Kafka's default partitioner does, and read
partition counts from `producer.client.cluster`; ingest's lock-free metrics replace prometheus-client's
private `_value`, `_sum` and `_buckets` after `_metric_init`. pyproject.toml caps both libraries below
their next minor release; before raising a cap, this file must pass on the new version (make install
from a lock regenerated with the new cap, then these tests).
"""

from __future__ import annotations

import inspect
import random

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.partitioner import DefaultPartitioner, murmur2
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ingest.metrics import _LoopCounter, _LoopHistogram
from pipeline.partitioning import partition_for
from sink.batch import RecordLike

# Kafka's own test vectors for its murmur2 (clients/src/test/.../common/utils/UtilsTest.java), as
# unsigned 32-bit values: the Java client, and so every other producer, puts a key where these say.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


# ------------------------------------------------------------------------------------------- aiokafka


@pytest.mark.parametrize(("key", "java"), JAVA_MURMUR2.items(), ids=[k.decode()[:12] for k in JAVA_MURMUR2])
def test_murmur2_is_kafkas(key: bytes, java: int) -> None:
    assert murmur2(key) == java & 0xFFFFFFFF


def test_our_partition_choice_is_the_default_partitioners() -> None:
    """ingest.batcher and enrich.service hash keys themselves (pipeline.partitioning) instead of `send(key=...)`."""
    partitioner = DefaultPartitioner()
    rng = random.Random(7)
    for _ in range(500):
        key = rng.randbytes(rng.randint(1, 40))
        partitions = list(range(rng.randint(1, 24)))
        expected = partitioner(key, partitions, partitions)
        assert partition_for(key, partitions) == expected
        assert partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)] == expected  # enrich's formula


def test_send_batch_and_create_batch_signatures() -> None:
    assert list(inspect.signature(AIOKafkaProducer.create_batch).parameters) == ["self"]
    send_batch = inspect.signature(AIOKafkaProducer.send_batch).parameters
    assert list(send_batch) == ["self", "batch", "topic", "partition"]
    assert send_batch["partition"].kind is inspect.Parameter.KEYWORD_ONLY
    assert inspect.iscoroutinefunction(AIOKafkaProducer.send_batch)


async def test_a_batch_builder_fills_up_then_refuses_and_a_fresh_one_takes_any_record() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=1024)
    try:
        builder = producer.create_batch()
        appended = 0
        # The calls exactly as ingest (with headers) and enrich (without) make them.
        while builder.append(key=b"room", value=b"x" * 100, timestamp=None, headers=[("h", b"v")]) is not None:
            appended += 1
        assert 1 < appended < 10  # 1 KiB of ~130-byte records
        assert builder.append(timestamp=None, key=b"room", value=b"y") is None  # full stays full
        builder.close()
        fresh = producer.create_batch()
        assert fresh.append(timestamp=None, key=b"room", value=b"z" * 4096) is not None  # larger than the batch
    finally:
        await producer.stop()


async def test_partition_counts_come_from_the_producers_cluster_metadata() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
    try:
        assert isinstance(producer.client, AIOKafkaClient)
        cluster = producer.client.cluster
        assert isinstance(cluster, ClusterMetadata)
        assert cluster.partitions_for_topic("not-known-yet") is None  # unknown topic: None, not an error
        assert callable(producer.client.force_metadata_update)  # ingest's readiness probe
        assert not [p for p in inspect.signature(producer.client.force_metadata_update).parameters.values()
                    if p.default is inspect.Parameter.empty]  # fmt: skip
    finally:
        await producer.stop()


def test_consumer_records_have_what_the_sink_reads_in_place() -> None:
    needed = {name for name, _ in inspect.getmembers(RecordLike, lambda m: isinstance(m, property))}
    assert needed == {"topic", "partition", "offset", "key", "value", "timestamp", "headers"}  # the last two: archive
    assert needed <= set(inspect.signature(ConsumerRecord).parameters)


# ---------------------------------------------------------------------------------- prometheus-client


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text format without the `_created` samples (creation times differ between registries)."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_the_lock_free_counter_exposes_what_a_counter_does() -> None:
    ours, stock = CollectorRegistry(), CollectorRegistry()
    loop = _LoopCounter("t_requests", "doc", ["outcome"], registry=ours)
    plain = Counter("t_requests", "doc", ["outcome"], registry=stock)
    for counter in (loop, plain):
        counter.labels("accepted").inc()
        counter.labels("accepted").inc(2.5)
        counter.labels("rejected").inc(0)
    assert exposition(ours) == exposition(stock)
    assert 't_requests_total{outcome="accepted"} 3.5' in exposition(ours)
    with pytest.raises(ValueError):
        loop.labels("accepted").inc(-1)


def test_the_lock_free_histogram_exposes_what_a_histogram_does() -> None:
    ours, stock = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1.0, 5.0)
    loop = _LoopHistogram("t_seconds", "doc", ["outcome"], registry=ours, buckets=buckets)
    plain = Histogram("t_seconds", "doc", ["outcome"], registry=stock, buckets=buckets)
    unlabelled = (
        _LoopHistogram("t_bytes", "doc", registry=ours, buckets=(128, 1024)),
        Histogram("t_bytes", "doc", registry=stock, buckets=(128, 1024)),
    )
    # On the bucket bounds too: a bound is inclusive (le), as bisect_left over _upper_bounds assumes.
    for value in (0.0, 0.001, 0.0011, 0.01, 0.5, 1.0, 4.9, 5.0, 7.0, 1e9):
        loop.labels("accepted").observe(value)
        plain.labels("accepted").observe(value)
    for histogram in unlabelled:
        for value in (1, 128, 129, 5000):
            histogram.observe(value)
    assert exposition(ours) == exposition(stock)
    assert 't_seconds_bucket{le="+Inf",outcome="accepted"} 10.0' in exposition(ours)


def test_the_private_attributes_the_metrics_replace_still_exist() -> None:
    counter = Counter("t_private_counter", "doc", registry=CollectorRegistry())
    histogram = Histogram("t_private_seconds", "doc", registry=CollectorRegistry(), buckets=(1.0, 2.0))
    assert callable(counter._value.get) and callable(counter._value.inc)
    assert [b.get() for b in histogram._buckets] == [0.0, 0.0, 0.0]
    assert histogram._upper_bounds == [1.0, 2.0, float("inf")]
    assert histogram._sum.get() == 0.0
