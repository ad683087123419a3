"""Shared fixtures: a real Kafka broker, the real ClickHouse engine, and per-test isolation.

Kafka, chosen automatically (documented in the README):
1. `KAFKA_BOOTSTRAP_SERVERS` set → that broker is used, nothing is started.
2. else a Docker engine answers → testcontainers starts `apache/kafka`.
3. else the local broker from `deploy/kafka/kafka.sh` (Maven Central jars) on 127.0.0.1:19092, with its
   own data directory, so it never collides with the `make run` broker on 9092.

ClickHouse: the embedded engine (chdb) in one directory per test session (chdb allows one directory per
process); each test gets its own database. `CLICKHOUSE_URL=http://…` points the tests at a server.

Each test gets its own topic names and consumer groups, so tests never see each other's records.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from harness import REPO
from harness.broker import KAFKA_SH, broker_env, running
from harness.stack import isolated_env
from pipeline import kafka
from pipeline.settings import Settings

TEST_KAFKA_PORT = 19092


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real broker for the whole test session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if _docker_engine():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    env = broker_env(TEST_KAFKA_PORT, REPO / ".data" / "kafka-test")
    already_running = running(env)
    subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, check=True)
    try:
        yield f"127.0.0.1:{TEST_KAFKA_PORT}"
    finally:
        if not already_running:  # leave a broker someone else started alone
            subprocess.run(["bash", str(KAFKA_SH), "stop"], env=env, check=False)


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded ClickHouse directory per session (or the server named by CLICKHOUSE_URL)."""
    return os.environ.get("CLICKHOUSE_URL") or f"chdb://{tmp_path_factory.mktemp('clickhouse')}"


def make_settings(kafka_bootstrap: str, clickhouse_url: str, **overrides: str) -> Settings:
    """Settings isolated to one test: unique topics, groups and database (see `harness.stack.isolated_env`)."""
    env = isolated_env(
        kafka_bootstrap,
        clickhouse_url,
        SINK_BATCH_SECONDS="0.2",
        INGEST_PORT="0",
        ENRICH_PORT="0",
        SINK_PORT="0",
    )
    env.update(overrides)
    return Settings.from_env(env)


@pytest.fixture
async def settings(kafka_bootstrap: str, clickhouse_url: str) -> AsyncIterator[Settings]:
    """Per-test settings with the contract's topics already created on the real broker."""
    s = make_settings(kafka_bootstrap, clickhouse_url)
    await kafka.wait_for_broker(s, timeout_s=60)
    await kafka.ensure_topics(s)
    yield s
