"""The pipeline as real processes, for end-to-end benchmarks and fault injection.

`Stack` starts `whereby-pipeline ingest|enrich|sink` exactly as `make run` does (one process each,
configured only through the environment), waits for `/readyz`, and can stop (SIGTERM, which drains),
kill -9 and restart any stage. Every stack gets its own topics, consumer groups and database, so it
never sees another run's records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from harness import REPO
from harness.ports import free_port
from harness.ready import wait_ready

STAGES = ("sink", "enrich", "ingest")


def isolated_env(kafka_bootstrap: str, clickhouse_url: str, **overrides: str) -> dict[str, str]:
    """Environment for one isolated pipeline: unique topics, groups and database."""
    tag = uuid.uuid4().hex[:10]
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PARTITIONS": "3",
        "TOPIC_RAW": f"t{tag}.raw",
        "TOPIC_ENRICHED": f"t{tag}.enriched",
        "TOPIC_DIMENSIONS": f"t{tag}.dimensions",
        "TOPIC_DEADLETTER": f"t{tag}.deadletter",
        "TOPIC_RECONCILIATION": f"t{tag}.reconciliation",
        "ENRICH_GROUP": f"enrich-{tag}",
        "SINK_GROUP": f"sink-{tag}",
        "CLICKHOUSE_URL": clickhouse_url,
        "CLICKHOUSE_DATABASE": f"test_{tag}",
        "WHEREBY_WEBHOOK_SECRET": "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4",
        "INSTANCE_ID": f"test-{tag}",
        "INGEST_HOST": "127.0.0.1",
        "SQL_PORT": "0",  # the SQL interface's default port would collide between stacks; tests opt in
    }
    env.update(overrides)
    return env


def instance_name(stage: str, instance: int = 0) -> str:
    """`enrich` for a stage's first process, `enrich-2` for its third: the key of `Stack.procs` and ports."""
    return stage if instance == 0 else f"{stage}-{instance}"


def stage_of(name: str) -> str:
    """The stage an instance name belongs to (`enrich-2` -> `enrich`)."""
    return name.split("-", 1)[0]


class Stack:
    """The three stages as child processes sharing one isolated configuration.

    A stage can run as several instances (`start("enrich", instance=2)`): each is its own process in the
    stage's consumer group, with its own INSTANCE_ID and HTTP port, keyed `enrich-2` in `procs`/`ports`.
    """

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.ports = {stage: free_port() for stage in STAGES}
        self.env.update(
            INGEST_PORT=str(self.ports["ingest"]),
            ENRICH_PORT=str(self.ports["enrich"]),
            SINK_PORT=str(self.ports["sink"]),
        )
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, stage: str, path: str = "") -> str:
        """URL on the port of a stage or instance name (`enrich-2`)."""
        return f"http://127.0.0.1:{self.ports[stage]}{path}"

    def start(
        self,
        stage: str,
        *,
        timeout_s: float = 60.0,
        extra_env: dict[str, str] | None = None,
        instance: int = 0,
        module: str = "pipeline",
    ) -> None:
        """Start one stage (or another instance of it) and wait until its /readyz answers 200.

        `module`: what `python -m` runs, `pipeline <stage>` by default; a wrapper entry of the stage
        otherwise (e.g. `chaos.crashing_sink`, which takes no stage argument)."""
        name = instance_name(stage, instance)
        env = {**os.environ, **self.env, **(extra_env or {})}
        if instance:  # its own id and port; the same topics, group and database as the stage's others
            port_variable = f"{stage.upper()}_PORT"
            self.ports.setdefault(name, free_port())
            env.update({"INSTANCE_ID": f"{self.env['INSTANCE_ID']}-{instance}", port_variable: str(self.ports[name])})
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child process
        argv = [sys.executable, "-m", module, *([stage] if module == "pipeline" else [])]
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=REPO)
        self.procs[name] = proc
        wait_ready(self.url(name, "/readyz"), proc, timeout_s=timeout_s, name=name, log=self.log_dir / f"{name}.log")

    def start_all(self) -> None:
        for stage in STAGES:
            self.start(stage)

    def pid(self, stage: str) -> int:
        return self.procs[stage].pid

    def stop(self, stage: str, *, timeout_s: float = 60.0) -> int:
        """SIGTERM (drain, flush, commit) and wait; returns the exit code."""
        proc = self.procs.pop(stage, None)
        if proc is None or proc.poll() is not None:
            return 0 if proc is None else int(proc.returncode)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def kill(self, stage: str) -> None:
        """kill -9: no drain, no flush, no commit."""
        proc = self.procs.pop(stage, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        """Stop every instance, ingest first: no new intake while the consumers drain."""
        for stage in reversed(STAGES):
            for name in [n for n in self.procs if stage_of(n) == stage]:
                self.stop(name)

    def metric(self, stage: str, name: str, /, **labels: str) -> float:
        """Sum of a Prometheus sample over series matching `labels` (0 if absent or unreachable)."""
        try:
            with urllib.request.urlopen(self.url(stage, "/metrics"), timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def rss_mb(self, stage: str) -> tuple[float, float]:
        """(current, peak) resident memory of a running stage, in MB."""
        fields = {}
        for line in Path(f"/proc/{self.pid(stage)}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
