"""The local Kafka broker of `deploy/kafka/kafka.sh`, for tests, benchmarks and chaos scenarios.

`KAFKA_BOOTSTRAP_SERVERS`, when set, always wins: nothing is started then.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from harness import REPO

KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


def broker_env(port: int, data_dir: Path) -> dict[str, str]:
    """Environment for `kafka.sh` to act on a private broker on `port` with its own data directory."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(KAFKA_PORT=str(port), KAFKA_DATA_DIR=str(data_dir))
    return env


def running(env: dict[str, str]) -> bool:
    """Whether the broker `env` names (see `broker_env`) is up."""
    return subprocess.run(["bash", str(KAFKA_SH), "status"], env=env, capture_output=True).returncode == 0


@contextlib.contextmanager
def local_broker(port: int = 9092, data_dir: Path | None = None) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else the local broker from deploy/kafka on `port`.

    A broker started here is stopped on exit; one that was already running is left alone.
    """
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    env = broker_env(port, data_dir or REPO / ".data" / "kafka")
    already_running = running(env)
    subprocess.run(["bash", str(KAFKA_SH), "start"], env=env, check=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if not already_running:
            subprocess.run(["bash", str(KAFKA_SH), "stop"], env=env, check=False)
