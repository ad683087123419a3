"""`whereby-pipeline supervise`: every stage as one or more processes on this machine (what `make run` runs).

    INGEST_WORKERS=2 ENRICH_INSTANCES=3 whereby-pipeline supervise [--stages sink,enrich,ingest] [--log-dir D]

- **ingest**: INGEST_WORKERS processes on one port (SO_REUSEPORT: the kernel spreads connections over
  them); worker i also answers on its own INSTANCE_PORT (INGEST_PORT + 100·(i+1)) for probes and scrapes.
- **enrich**: ENRICH_INSTANCES processes in one consumer group (Kafka spreads the raw topic's partitions
  over them; more instances than partitions idle); instance i serves metrics on ENRICH_PORT + 100·i.
- **sink**: SINK_INSTANCES processes in one group, on SINK_PORT + 100·i; more than one needs a ClickHouse
  server (the settings refuse it on chdb://, where one process owns the embedded store).

Each process gets its own INSTANCE_ID (`<INSTANCE_ID or hostname>-<stage>-<i>`), which names it in Kafka
client ids and record headers. Stages start sink first, so consumers are in place before webhooks arrive,
and stop in the reverse order on SIGTERM/SIGINT (ingest stops taking requests, enrich and sink drain).

Each stage gets SHUTDOWN_TIMEOUT_S plus GRACE_MARGIN_S to stop before it is killed (the margin the deploy
files' grace periods add too); a second SIGTERM/SIGINT stops the supervisor at once (exit 143/130), after
passing the signal on, so the stages already draining exit at once as well.

A process that exits on its own is restarted with backoff, as an orchestrator would; one that fails with
exit code 2 (a configuration error: restarting cannot help) or keeps crashing stops the whole pipeline,
since a half-running pipeline is worse than a stopped one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pipeline.settings import GRACE_MARGIN_S, ConfigError, Settings

STAGES = ("sink", "enrich", "ingest")  # start order; stop order is the reverse
PORT_STEP = 100  # instance i of a stage listens on its base port + PORT_STEP * i
CONFIG_ERROR_EXIT = 2  # what every stage exits with on a configuration error


@dataclass(frozen=True)
class Instance:
    """One process to run: which stage, its name, and the environment it gets on top of ours."""

    stage: str
    index: int
    name: str
    env: Mapping[str, str]


def _offset(base: int, steps: int) -> int:
    """Port `base` moved by `steps` instance slots; 0 (any free port) stays 0."""
    return base + PORT_STEP * steps if base else 0


def parse_stages(text: str) -> tuple[str, ...]:
    """`sink,enrich,ingest` (any subset, any order) as a tuple in start order; ConfigError otherwise."""
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown or not wanted:
        raise ConfigError(f"--stages takes a comma-separated subset of {','.join(STAGES)}, got {text!r}")
    return tuple(stage for stage in STAGES if stage in wanted)


def plan(settings: Settings, stages: Sequence[str] = STAGES, *, base_id: str | None = None) -> list[Instance]:
    """The processes to start for `stages`, in start order. Pure: reads only `settings`."""
    base = base_id or socket.gethostname()
    counts = {"ingest": settings.ingest_workers, "enrich": settings.enrich_instances, "sink": settings.sink_instances}
    out: list[Instance] = []
    for stage in STAGES:
        if stage not in stages:
            continue
        for i in range(counts[stage]):
            env = {"INSTANCE_ID": f"{base}-{stage}-{i}"}
            if stage == "ingest":
                # Every worker on INGEST_PORT; its own port only when there are several (else it is the same).
                env["INSTANCE_PORT"] = str(_offset(settings.ingest_port, i + 1)) if counts[stage] > 1 else "0"
            elif stage == "enrich":
                env["ENRICH_PORT"] = str(_offset(settings.enrich_port, i))
            else:
                env["SINK_PORT"] = str(_offset(settings.sink_port, i))
            name = stage if counts[stage] == 1 else f"{stage}-{i}"
            out.append(Instance(stage, i, name, env))
    return out


@dataclass
class RestartPolicy:
    """Restart a crashed process after a growing delay; give up after `limit` crashes within `window_s`."""

    limit: int = 5
    window_s: float = 60.0
    first_delay_s: float = 1.0
    max_delay_s: float = 15.0
    _crashes: dict[str, deque[float]] = field(default_factory=dict)

    def after_exit(self, name: str, code: int, now: float) -> float | None:
        """Seconds to wait before restarting `name`, or None when the pipeline must stop instead."""
        if code == CONFIG_ERROR_EXIT:
            return None
        crashes = self._crashes.setdefault(name, deque())
        crashes.append(now)
        while crashes and now - crashes[0] > self.window_s:
            crashes.popleft()
        if len(crashes) > self.limit:
            return None
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** (len(crashes) - 1)))


def _term_when_parent_dies() -> None:
    """In the child before exec: ask Linux for SIGTERM when the supervisor dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _say(message: str) -> None:
    print(f"supervise: {message}", file=sys.stderr, flush=True)


class Supervisor:
    """Starts the planned processes, restarts crashed ones, stops all on a signal or a fatal exit."""

    def __init__(
        self,
        instances: list[Instance],
        *,
        stop_timeout_s: float,
        log_dir: Path | None = None,
        policy: RestartPolicy | None = None,
    ):
        self.instances = instances
        # Per stage: its shutdown budget plus a margin, then SIGKILL.
        self.stop_timeout_s = stop_timeout_s
        self.log_dir = log_dir
        self.policy = policy or RestartPolicy()
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._code = 0
        # Opened here, once per instance name (a restarted process appends to the same file); closed by run().
        self._logs: dict[str, IO[bytes]] = (
            {i.name: open(log_dir / f"{i.name}.log", "ab") for i in instances} if log_dir is not None else {}  # noqa: SIM115
        )
        self._tees: set[asyncio.Task[None]] = set()

    async def _spawn(self, inst: Instance) -> None:
        stderr: int | IO[bytes] | None = None
        if self.log_dir is not None:
            stderr = asyncio.subprocess.PIPE
        # Own session: Ctrl-C reaches only the supervisor, which stops the stages in order. The parent-death
        # signal keeps that from leaving orphans: if the supervisor itself is killed, the stages get SIGTERM.
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "pipeline", inst.stage),
            env={**os.environ, **inst.env},
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_term_when_parent_dies,
        )
        self.procs[inst.name] = proc
        if proc.stderr is not None:
            tee = asyncio.create_task(self._tee(proc.stderr, self._logs[inst.name]))
            self._tees.add(tee)
            tee.add_done_callback(self._tees.discard)

    async def _tee(self, stream: asyncio.StreamReader, log: IO[bytes]) -> None:
        """Copy a child's log lines to its file and to our stderr (the terminal of `make run`)."""
        while line := await stream.readline():
            log.write(line)
            log.flush()
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()

    async def _watch(self, inst: Instance) -> None:
        """Wait for the process to end; restart it or stop everything, per the policy."""
        while not self._stopping.is_set():
            code = await self.procs[inst.name].wait()
            if self._stopping.is_set():
                return
            delay = self.policy.after_exit(inst.name, code, time.monotonic())
            if delay is None:
                why = "a configuration error" if code == CONFIG_ERROR_EXIT else "it keeps crashing"
                _say(f"{inst.name} exited with {code} ({why}); stopping the pipeline")
                self._code = code if code > 0 else 1
                self._stopping.set()
                return
            _say(f"{inst.name} exited with {code}; restarting it in {delay:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            if not self._stopping.is_set():
                await self._spawn(inst)

    async def _stop_all(self) -> None:
        """SIGTERM stage by stage, ingest first, so nothing new arrives while the consumers drain."""
        for stage in reversed(STAGES):
            procs = [self.procs[i.name] for i in self.instances if i.stage == stage and i.name in self.procs]
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), timeout=self.stop_timeout_s)
                except TimeoutError:
                    _say(f"pid {proc.pid} did not stop within {self.stop_timeout_s:.0f}s; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()

    def _on_signal(self, sig: signal.Signals) -> None:
        """The first signal stops the stages in order; a second one is passed on and ends us at once."""
        if not self._stopping.is_set():
            self._stopping.set()
            return
        _say(f"second {sig.name}: exiting now")
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
        os._exit(128 + sig.value)

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal exit; returns the exit code for the supervisor."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            for inst in self.instances:
                await self._spawn(inst)
            watchers = [asyncio.create_task(self._watch(inst)) for inst in self.instances]
            await self._stopping.wait()
            _say("stopping (each stage drains in-flight work first)")
            await self._stop_all()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            for proc in self.procs.values():  # no orphans, whatever happened above
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            for log in self._logs.values():
                log.close()
        return self._code


def describe(instances: list[Instance], settings: Settings) -> str:
    """One line per stage: how many processes and where they listen."""
    lines = []
    for stage in STAGES:
        mine = [i for i in instances if i.stage == stage]
        if not mine:
            continue
        if stage == "ingest":
            where = f"{settings.ingest_host}:{settings.ingest_port}"
            if len(mine) > 1:
                where += " shared; own ports " + ",".join(i.env["INSTANCE_PORT"] for i in mine)
        else:
            key = "ENRICH_PORT" if stage == "enrich" else "SINK_PORT"
            where = "ports " + ",".join(i.env[key] for i in mine)
        lines.append(f"{stage} x{len(mine)} ({where})")
    return "; ".join(lines)


def main(args: argparse.Namespace, settings: Settings) -> int:
    """The `supervise` subcommand: plan from the settings, then run until stopped."""
    stages = parse_stages(args.stages)
    instances = plan(settings, stages, base_id=os.environ.get("INSTANCE_ID", "").strip() or None)
    log_dir = Path(args.log_dir) if args.log_dir else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    _say(describe(instances, settings))
    stop_timeout_s = settings.shutdown_timeout_s + GRACE_MARGIN_S
    return asyncio.run(Supervisor(instances, stop_timeout_s=stop_timeout_s, log_dir=log_dir).run())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], load_settings: Callable[[], Settings]) -> None:
    """Add the `supervise` subcommand to the `whereby-pipeline` parser."""
    run = sub.add_parser(
        "supervise", help="run the stages as INGEST_WORKERS / ENRICH_INSTANCES / SINK_INSTANCES processes"
    )
    run.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages to run (default: all)")
    run.add_argument("--log-dir", help="also append each process's log to <dir>/<name>.log")
    run.set_defaults(handler=lambda args: main(args, load_settings()))
