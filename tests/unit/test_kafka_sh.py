"""deploy/kafka/kafka.sh argument handling, without starting a JVM: verbs, node numbers, cluster size,
and the ports a cluster uses. Starting a real cluster is tests/integration/test_kafka_cluster.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"


def kafka_sh(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    clean.update(KAFKA_DATA_DIR=str(tmp / "data"), **env)
    return subprocess.run(["bash", str(KAFKA_SH), *args], env=clean, capture_output=True, text=True, timeout=30)


def test_bootstrap_of_one_broker(tmp_path: Path) -> None:
    assert kafka_sh("bootstrap", tmp=tmp_path).stdout.strip() == "127.0.0.1:9092"
    assert kafka_sh("bootstrap", tmp=tmp_path, KAFKA_PORT="19092").stdout.strip() == "127.0.0.1:19092"


def test_a_cluster_uses_consecutive_client_ports(tmp_path: Path) -> None:
    out = kafka_sh("bootstrap", tmp=tmp_path, KAFKA_PORT="29392", KAFKA_CLUSTER_SIZE="3").stdout.strip()
    assert out == "127.0.0.1:29392,127.0.0.1:29393,127.0.0.1:29394"


def test_the_cluster_verb_means_three_nodes(tmp_path: Path) -> None:
    out = kafka_sh("cluster", "bootstrap", tmp=tmp_path, KAFKA_PORT="29392").stdout.strip()
    assert out.count(",") == 2
    five = kafka_sh("cluster", "bootstrap", tmp=tmp_path, KAFKA_CLUSTER_SIZE="5").stdout.strip()
    assert five.count(",") == 4


def test_status_reports_every_node_and_fails_when_one_is_down(tmp_path: Path) -> None:
    done = kafka_sh("cluster", "status", tmp=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["kafka node 1/3", "kafka node 2/3", "kafka node 3/3"]
    assert all(f"node-{i}" in line for i, line in enumerate(lines, start=1))
    one = kafka_sh("cluster", "status", "2", tmp=tmp_path)
    assert one.returncode == 1 and one.stdout.count("\n") == 1 and "node-2" in one.stdout


def test_stop_and_kill_of_stopped_nodes_are_no_ops(tmp_path: Path) -> None:
    for verb in ("stop", "kill"):
        assert kafka_sh("cluster", verb, tmp=tmp_path).returncode == 0
        assert kafka_sh("cluster", verb, "3", tmp=tmp_path).returncode == 0
        assert kafka_sh(verb, tmp=tmp_path).returncode == 0


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        ((), {}, 2, "usage:"),
        (("restart",), {}, 2, "usage:"),
        (("start", "1", "2"), {}, 2, "usage:"),
        (("bootstrap", "1"), {}, 2, "usage:"),
        (("cluster", "start", "1", "x"), {}, 2, "usage:"),
        (("status", "2"), {}, 1, "node must be between 1 and 1"),
        (("cluster", "kill", "4"), {}, 1, "node must be between 1 and 3"),
        (("cluster", "stop", "0"), {}, 1, "node must be between 1 and 3"),
        (("status",), {"KAFKA_CLUSTER_SIZE": "zero"}, 1, "KAFKA_CLUSTER_SIZE must be a whole number"),
        (("status",), {"KAFKA_CLUSTER_SIZE": "0"}, 1, "KAFKA_CLUSTER_SIZE must be a whole number"),
    ],
)
def test_bad_arguments_fail_with_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], code: int, message: str
) -> None:
    done = kafka_sh(*args, tmp=tmp_path, **env)
    assert done.returncode == code
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
