"""Kafka client factories and topic set-up, so every stage talks to the broker the same way.

Producers are idempotent with acks=all: a record acknowledged by the broker is on every in-sync replica
and a retried send is never written twice. Consumers never auto-commit: each stage commits offsets
itself, only after the next hop acknowledged what it produced or inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from pipeline.settings import CommonSettings, ConfigError

log = logging.getLogger(__name__)

# Retention long enough to rebuild everything downstream by replaying the raw topic.
RAW_RETENTION_MS = 90 * 24 * 3600 * 1000


def topic_specs(settings: CommonSettings) -> list[NewTopic]:
    """The topics of the contract, with explicit partition counts and configs.

    With KAFKA_MIN_INSYNC_REPLICAS set (2 with replication factor 3), an acks=all write is acknowledged
    only once that many replicas have it, and refused (ingest answers 503, Whereby retries) when fewer
    are in sync: an acknowledged event survives the loss of any one broker. Unset, the broker's default
    applies, so a production broker's own setting is never lowered by accident.
    """
    rf = settings.topic_replication_factor
    parts = settings.topic_partitions
    durability = (
        {"min.insync.replicas": str(settings.topic_min_insync_replicas)} if settings.topic_min_insync_replicas else {}
    )
    return [
        NewTopic(settings.topic_raw, parts, rf, topic_configs={"retention.ms": str(RAW_RETENTION_MS), **durability}),
        NewTopic(
            settings.topic_enriched, parts, rf, topic_configs={"retention.ms": str(7 * 24 * 3600 * 1000), **durability}
        ),
        NewTopic(
            settings.topic_dimensions,
            1,  # one partition: dimension updates are applied in the order they were written
            rf,
            topic_configs={"cleanup.policy": "compact", "min.compaction.lag.ms": "0", **durability},
        ),
        NewTopic(
            settings.topic_deadletter, parts, rf, topic_configs={"retention.ms": str(RAW_RETENTION_MS), **durability}
        ),
        # One record per room session per reconcile run: little traffic, so one partition; kept as long as
        # the raw topic, so the sink can rebuild its `reconciliation` table from it.
        NewTopic(
            settings.topic_reconciliation, 1, rf, topic_configs={"retention.ms": str(RAW_RETENTION_MS), **durability}
        ),
    ]


def producer(settings: CommonSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent, acks=all producer. Not started: the caller owns its lifecycle."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"whereby-{settings.instance_id}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30_000,
        **settings.kafka_client_kwargs(),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def consumer(settings: CommonSettings, *topics: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A manually committing consumer reading from the earliest offset when the group is new."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": f"whereby-{settings.instance_id}",
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 2000,
        "fetch_max_wait_ms": 100,
        **settings.kafka_client_kwargs(),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def admin_client(settings: CommonSettings, *, request_timeout_ms: int = 15000) -> AIOKafkaAdminClient:
    """An admin client with the same TLS/SASL settings as producers and consumers. Not started."""
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=request_timeout_ms,
        **settings.kafka_client_kwargs(),
    )


async def wait_for_broker(settings: CommonSettings, timeout_s: float | None = None) -> None:
    """Wait (bounded) until the broker answers, else raise a ConfigError saying what to check."""
    timeout_s = settings.kafka_connect_timeout_s if timeout_s is None else timeout_s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        admin = admin_client(settings, request_timeout_ms=5000)
        try:
            await admin.start()
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if loop.time() >= deadline:
                raise ConfigError(
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer within {timeout_s:.0f}s "
                    f"({type(exc).__name__}); start it with `make kafka` or set KAFKA_BOOTSTRAP_SERVERS"
                ) from None
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def ensure_topics(settings: CommonSettings) -> list[str]:
    """Create the contract's topics if they do not exist yet; returns the names created now."""
    admin = admin_client(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(settings) if spec.name not in existing]
        if missing:
            # Another process may create one between our list and create: that is the goal anyway.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def prepare(settings: CommonSettings) -> None:
    """What every stage does before its clients start: wait (bounded) for the broker, ensure topics."""
    await wait_for_broker(settings)
    await ensure_topics(settings)


async def partitions_of(settings: CommonSettings, topic: str) -> list[TopicPartition]:
    """All partitions of `topic`, for consumers that assign partitions themselves instead of joining a group."""
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p["partition"] for d in described if d.get("error_code", 0) == 0 for p in d.get("partitions", [])]
    if not partitions:
        raise ConfigError(f"Kafka topic {topic!r} does not exist; create it with `whereby-pipeline topics`")
    return [TopicPartition(topic, p) for p in sorted(partitions)]
