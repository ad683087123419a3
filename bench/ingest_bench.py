"""Ingress benchmark: the real ingest (signature check + acks=all produce) vs. a bare aiohttp handler,
each with 1 and 2 worker processes on one port.

    .venv/bin/python -m bench.ingest_bench [--duration 10] [--concurrency 64 256] [--workers 1 2] [--rounds 2]

Both servers run as their own processes on 127.0.0.1 (N workers share the port with SO_REUSEPORT, as
`INGEST_WORKERS=N` runs ingest) and get the same load from the same generator, in the same run,
alternating `--rounds` times. The generator is wrk (C, one thread; `make tools` installs Debian's
package) when it is installed, else an async aiohttp client in its own process; either way it is bounded
by time with a fixed number of concurrent connections, and sends the same pre-signed bodies to both
servers, so its own work is identical.

Honest figures: the CPU of every process on each side is read from /proc over the same window, and a
round is **invalid when the generator is the busiest process** (then it, not the server, set the pace;
the one-process Python generator does that to a bare server). Ratios are taken over valid rounds only.

Two load levels by default: 64 concurrent requests, where ingest's answer waits on the broker's round
trip, and 256, where its batches grow and the servers are CPU-bound. Kafka is the broker named by
KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), on topics made for this run. Prints a Markdown table
and writes bench/results-ingest.json.

Not part of the test suite: wall-clock numbers belong here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from harness import REPO
from harness.ports import free_port
from harness.ready import wait_ready

RESULTS = REPO / "bench" / "results-ingest.json"
SECRET = "bench-secret-k3v9q2m7x1p8r4t6w0z5"
GOAL = 0.6
KINDS = ("bare", "ingest")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the bare server


def serve_bare(port: int, *, reuse_port: bool = False, instance_port: int = 0) -> None:
    """An aiohttp handler that reads the body and answers 200: the ceiling for any handler. With
    `reuse_port` it is one of several workers on `port`; `instance_port` is its own port for readiness."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, body=b'{"status":"ok"}', content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/webhooks/whereby", handle)
        app.router.add_get("/readyz", lambda _: _ok())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=reuse_port or None).start()
        if instance_port:
            await web.TCPSite(runner, "127.0.0.1", instance_port).start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


async def _ok() -> web.Response:
    return web.Response(text="ok")


# ---------------------------------------------------------------- the load generator


def _bodies(count: int) -> list[tuple[bytes, str]]:
    """`count` distinct compact `room.client.joined` bodies with their signature headers (signed now)."""
    from ingest import signature

    out = []
    for i in range(count):
        doc = {
            "id": uuid.uuid4().hex + uuid.uuid4().hex,
            "apiVersion": "1.0",
            "createdAt": "2026-01-01T00:00:00.412Z",
            "type": "room.client.joined",
            "data": {
                "meetingId": "91827364",
                "roomName": f"/acme-{uuid.UUID(int=i % 500)}",
                "roomSessionId": "0b6c2d4e-8f1a-4c3b-9d5e-7a2b4c6d8e0f",
                "subdomain": "examplecorp",
                "participantId": str(uuid.uuid4()),
                "displayName": "Bench User",
                "metadata": "plan=enterprise",
                "externalId": f"user-{i:05d}",
                "roleName": "visitor",
                "numClients": 2,
                "numClientsByRoleName": {"host": 1, "visitor": 1},
                "isDialIn": False,
            },
        }
        raw = orjson.dumps(doc)
        out.append((raw, signature.sign(raw, SECRET)))
    return out


async def _load(url: str, duration_s: float, warmup_s: float, concurrency: int) -> dict[str, Any]:
    bodies = _bodies(4000)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + warmup_s
        stop_at = measure_from + duration_s
        cpu: list[float] = []

        async def cpu_meter() -> None:
            # The generator's own CPU over exactly the measured window.
            await asyncio.sleep(warmup_s)
            cpu.append(time.process_time())
            await asyncio.sleep(duration_s)
            cpu.append(time.process_time())

        async def worker(n: int) -> None:
            nonlocal errors
            i = n
            while loop.time() < stop_at:
                raw, sig = bodies[i % len(bodies)]
                i += concurrency
                t0 = loop.time()
                try:
                    async with session.post(
                        url, data=raw, headers={"Content-Type": "application/json", "Whereby-Signature": sig}
                    ) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError:
                    errors += 1
                    continue
                t1 = loop.time()
                if measure_from <= t0 and t1 <= stop_at:  # count requests wholly inside the window
                    latencies.append(t1 - t0)
                    statuses[str(status)] = statuses.get(str(status), 0) + 1

        await asyncio.gather(cpu_meter(), *(worker(n) for n in range(concurrency)))
        cpu_used = cpu[1] - cpu[0]
    latencies.sort()
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    return {
        "requests": len(latencies),
        "ok": ok,
        "statuses": statuses,
        "errors": errors,
        "req_per_s": ok / duration_s,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
        "generator_cpu": cpu_used / duration_s,
    }


def load(url: str, duration_s: float, warmup_s: float, concurrency: int) -> None:
    """Run the generator and print its result as one JSON line (read by the orchestrator)."""
    print(json.dumps(asyncio.run(_load(url, duration_s, warmup_s, concurrency))), flush=True)


_WRK_SCRIPT = """
local bodies = {
%s
}
local requests = {}
init = function(args)
  for j, b in ipairs(bodies) do
    requests[j] = wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Whereby-Signature"] = b[2]}, b[1])
  end
end
local i = 0
request = function()
  i = i + 1
  return requests[(i %% #requests) + 1]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"non_2xx":%%d,"socket_errors":%%d,"p50_us":%%d,"p99_us":%%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _wrk_script(path: Path, count: int) -> None:
    """A wrk Lua script cycling through `count` distinct pre-signed bodies (formatted once, in init)."""
    entries = ",\n".join(f"  {{[==[{raw.decode()}]==], [==[{sig}]==]}}" for raw, sig in _bodies(count))
    path.write_text(_WRK_SCRIPT % entries)


def _wrk_result(stdout: str) -> dict[str, Any]:
    r = json.loads(stdout.strip().splitlines()[-1])
    seconds = r["duration_us"] / 1e6
    ok = r["requests"] - r["non_2xx"]
    return {
        "requests": r["requests"],
        "ok": ok,
        "statuses": {"2xx": ok, "other": r["non_2xx"]},
        "errors": r["socket_errors"],
        "req_per_s": ok / seconds,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
    }


# ---------------------------------------------------------------- CPU from /proc, and the validity rule


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process from /proc/<pid>/stat, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def round_validity(generator_cpu: float, server_cpus: list[float]) -> str | None:
    """Why a round cannot be trusted, or None. A round is invalid when the load generator used at least
    as much CPU as the busiest server process: then the generator, not the server, set the pace (the
    issue's case: a one-process Python generator at 0.96 CPU against a bare server at 0.62)."""
    busiest = max(server_cpus, default=0.0)
    if generator_cpu >= busiest:
        return f"generator was the busiest process ({generator_cpu:.2f} CPU vs {busiest:.2f} for the busiest server)"
    return None


def _generate(cmd: list[str], servers: list[int]) -> tuple[str, float, list[float]]:
    """Run the load generator `cmd` to its end; returns its stdout, its CPU and each server process's CPU
    (in cores: CPU seconds per wall second), all from /proc over the same window: the generator's life."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = time.monotonic()
    first = {pid: _cpu_seconds(pid) or 0.0 for pid in servers}
    generator, last, ended = 0.0, dict(first), started
    while proc.poll() is None:  # sample until it exits: the last sample is < 50 ms before its end
        now = _cpu_seconds(proc.pid)
        if now is not None:
            generator, ended = now, time.monotonic()
            last = {pid: _cpu_seconds(pid) or last[pid] for pid in servers}
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed ({proc.returncode}): {stderr.decode().strip()[-300:]}")
    window = max(ended - started, 1e-6)
    return stdout.decode(), generator / window, [(last[pid] - first[pid]) / window for pid in servers]


# ---------------------------------------------------------------- the orchestrator


def _servers(kind: str, workers: int, port: int, bootstrap: str, tag: str) -> list[subprocess.Popen[bytes]]:
    """`workers` server processes on `port` (SO_REUSEPORT when more than one), each ready."""
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for _ in range(workers):
            own = free_port() if workers > 1 else 0  # each worker's own port, for its readiness
            if kind == "bare":
                cmd = [sys.executable, "-m", "bench.ingest_bench", "serve-bare", "--port", str(port)]
                if workers > 1:
                    cmd += ["--reuse-port", "--instance-port", str(own)]
                env = dict(os.environ)
            else:
                cmd = [sys.executable, "-m", "ingest"]
                env = {
                    **os.environ,
                    "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "WHEREBY_WEBHOOK_SECRET": SECRET,
                    "INGEST_HOST": "127.0.0.1",
                    "INGEST_PORT": str(port),
                    "INGEST_WORKERS": str(workers),  # >1: SO_REUSEPORT, as `make run` starts them
                    "INSTANCE_PORT": str(own),
                    "INSTANCE_ID": f"bench-{tag}-{len(procs)}",
                    "TOPIC_RAW": f"bench{tag}.raw",
                    "TOPIC_ENRICHED": f"bench{tag}.enriched",
                    "TOPIC_DIMENSIONS": f"bench{tag}.dimensions",
                    "TOPIC_DEADLETTER": f"bench{tag}.deadletter",
                    "KAFKA_TOPIC_PARTITIONS": "3",
                    "LOG_LEVEL": "WARNING",
                }
            procs.append((subprocess.Popen(cmd, cwd=REPO, env=env), own or port))
        for proc, ready_port in procs:
            wait_ready(f"http://127.0.0.1:{ready_port}/readyz", proc, name=f"{kind} server")
    except BaseException:
        _stop([proc for proc, _ in procs])
        raise
    return [proc for proc, _ in procs]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _measure(kind: str, workers: int, args: argparse.Namespace, tag: str, concurrency: int) -> dict[str, Any]:
    """One round: start `workers` servers of `kind`, warm up, drive the measured load, stop them."""
    port = free_port()
    servers = _servers(kind, workers, port, args.bootstrap, tag)
    pids = [proc.pid for proc in servers]
    url = f"http://127.0.0.1:{port}/webhooks/whereby"
    try:
        if args.generator == "wrk":
            script = RESULTS.parent / f".wrk-{tag}.lua"
            _wrk_script(script, 2000)  # signed now: well inside the 300 s tolerance for this run
            try:
                base = ["wrk", "-t1", f"-c{concurrency}", "-s", str(script), "--timeout", "10s"]
                subprocess.run([*base, f"-d{max(1, round(args.warmup))}s", url], check=True, capture_output=True)
                stdout, generator_cpu, server_cpus = _generate([*base, f"-d{max(1, round(args.duration))}s", url], pids)
                result = _wrk_result(stdout)
            finally:
                script.unlink(missing_ok=True)
        else:
            cmd = [
                *(sys.executable, "-m", "bench.ingest_bench", "load", "--url", url),
                *("--duration", str(args.duration), "--warmup", str(args.warmup)),
                *("--concurrency", str(concurrency)),
            ]
            stdout, generator_cpu, server_cpus = _generate(cmd, pids)
            result = json.loads(stdout.strip().splitlines()[-1])
            # The generator's own figure covers only the measured window; /proc's covers its whole life.
            result["generator_cpu_measured_window"] = result.pop("generator_cpu")
    finally:
        _stop(servers)
    result.update(
        workers=workers,
        generator_cpu=generator_cpu,
        server_cpu=sum(server_cpus),
        server_cpu_per_process=[round(c, 3) for c in server_cpus],
        invalid=round_validity(generator_cpu, server_cpus),
    )
    return result


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the valid rounds (over all of them, flagged, when none is valid)."""
    valid = [r for r in rs if not r["invalid"]]
    use = valid or rs
    return {
        "req_per_s": statistics.mean(r["req_per_s"] for r in use),
        "p50_ms": statistics.median(r["p50_ms"] for r in use if r["p50_ms"] is not None),
        "p99_ms": statistics.median(r["p99_ms"] for r in use if r["p99_ms"] is not None),
        "server_cpu": statistics.mean(r["server_cpu"] for r in use),
        "busiest_server_process_cpu": statistics.mean(max(r["server_cpu_per_process"]) for r in use),
        "generator_cpu": statistics.mean(r["generator_cpu"] for r in use),
        "non_2xx": sum(r["requests"] - r["ok"] + r["errors"] for r in use),
        "rounds": len(rs),
        "valid_rounds": len(valid),
    }


def orchestrate(args: argparse.Namespace) -> int:
    """Measure bare and ingest with each worker count, alternating, at each concurrency; print, write JSON."""
    tag = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()
    levels: list[dict[str, Any]] = []
    for concurrency in args.concurrency:
        runs: dict[tuple[int, str], list[dict[str, Any]]] = {(w, k): [] for w in args.workers for k in KINDS}
        for round_no in range(args.rounds):
            for workers in args.workers:
                for kind in KINDS:
                    result = _measure(kind, workers, args, tag, concurrency)
                    runs[workers, kind].append(result)
                    print(
                        f"c={concurrency} round {round_no + 1} {kind} x{workers}: {result['req_per_s']:.0f} req/s, "
                        f"statuses {result['statuses']}, errors {result['errors']}, server cpu "
                        f"{'+'.join(f'{c:.0%}' for c in result['server_cpu_per_process'])}, "
                        f"generator cpu {result['generator_cpu']:.0%}"
                        + (f"  INVALID: {result['invalid']}" if result["invalid"] else ""),
                        file=sys.stderr,
                    )
        for workers in args.workers:
            bare_runs, ingest_runs = runs[workers, "bare"], runs[workers, "ingest"]
            bare, ingest = _summary(bare_runs), _summary(ingest_runs)
            # Each round's pair ran back to back, so its ratio is the least disturbed by other load.
            round_ratios = [
                i["req_per_s"] / b["req_per_s"]
                for b, i in zip(bare_runs, ingest_runs, strict=True)
                if not b["invalid"] and not i["invalid"] and b["req_per_s"]
            ]
            levels.append(
                {
                    "concurrency": concurrency,
                    "workers": workers,
                    "bare": bare,
                    "ingest": ingest,
                    "ratio": ingest["req_per_s"] / bare["req_per_s"] if bare["req_per_s"] else 0.0,
                    "valid": bool(bare["valid_rounds"] and ingest["valid_rounds"]),
                    "round_ratios": round_ratios,
                    "runs": {"bare": bare_runs, "ingest": ingest_runs},
                }
            )
    # The headline is the highest load level: throughput is a capacity, and only there are both servers
    # saturated (at lower concurrency ingest's figure is bounded by the broker round trip).
    top = max(args.concurrency)
    at_top = {level["workers"]: level for level in levels if level["concurrency"] == top}
    headline = at_top[min(at_top)]
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "load": {
            "generator": "wrk -t1 (one thread)" if args.generator == "wrk" else "aiohttp client, one process",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "invalid_round_rule": "the generator used at least as much CPU as the busiest server process",
        },
        "kafka_bootstrap_servers": args.bootstrap,
        "goal": GOAL,
        **{k: headline[k] for k in ("concurrency", "workers", "bare", "ingest", "ratio", "valid")},
        "meets_goal": headline["valid"] and headline["ratio"] >= GOAL,
        "ratio_by_concurrency": {
            str(level["concurrency"]): round(level["ratio"], 3) for level in levels if level["workers"] == min(at_top)
        },
        "by_workers": {
            str(workers): {
                "bare_req_per_s": round(level["bare"]["req_per_s"]),
                "ingest_req_per_s": round(level["ingest"]["req_per_s"]),
                "ratio": round(level["ratio"], 3),
                "valid": level["valid"],
                "invalid_rounds": 2 * args.rounds - level["bare"]["valid_rounds"] - level["ingest"]["valid_rounds"],
                "ingest_server_cpu": round(level["ingest"]["server_cpu"], 2),
                "generator_cpu": round(level["ingest"]["generator_cpu"], 2),
            }
            for workers, level in sorted(at_top.items())
        },
        "invalid_rounds": sum(
            r["invalid"] is not None for level in levels for rs in level["runs"].values() for r in rs
        ),
        "levels": levels,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(levels))
    loadavg = report["machine"]["loadavg_1m_before_after"]
    print(f"\nload average (1 min) before/after: {loadavg} on {os.cpu_count()} CPUs; written to {RESULTS.name}")
    return 0


def _table(levels: list[dict[str, Any]]) -> str:
    rows = [
        "| concurrency | workers | server | req/s | p50 ms | p99 ms | server CPU (all processes) "
        "| busiest server process | generator CPU | valid rounds | non-2xx |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        for name, s in (("bare aiohttp, 200", level["bare"]), ("ingest: verify + produce acks=all", level["ingest"])):
            rows.append(
                f"| {level['concurrency']} | {level['workers']} | {name} | {s['req_per_s']:.0f} "
                f"| {_fmt(s['p50_ms'], 2)} | {_fmt(s['p99_ms'], 2)} | {s['server_cpu']:.0%} "
                f"| {s['busiest_server_process_cpu']:.0%} | {s['generator_cpu']:.0%} "
                f"| {s['valid_rounds']}/{s['rounds']} | {s['non_2xx']} |"
            )
    rows.append("")
    for level in levels:
        rounds = ", ".join(f"{r:.2f}" for r in level["round_ratios"]) or "none valid"
        flag = "" if level["valid"] else " — INVALID: the generator was the busiest process in every round"
        rows.append(
            f"ratio ingest/bare at concurrency {level['concurrency']}, {level['workers']} worker(s): "
            f"**{level['ratio']:.2f}** (valid rounds: {rounds}; goal ≥ {GOAL}){flag}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Entry point: orchestrate by default; `serve-bare` and `load` are the child processes."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    bare = sub.add_parser("serve-bare")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--reuse-port", action="store_true", help="one of several workers on --port")
    bare.add_argument("--instance-port", type=int, default=0, help="this worker's own port (readiness)")
    gen = sub.add_parser("load")
    gen.add_argument("--url", required=True)
    for p in (parser, gen):
        p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
        p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run (default 2)")
    gen.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[64, 256],
        help="requests in flight, one level or several (default 64 256)",
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="server processes on the port (default 1 2)"
    )
    parser.add_argument(
        "--generator",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="load generator: wrk (C, `make tools` installs it) or the aiohttp client; auto prefers wrk",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/ingest rounds (default 2)")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="Kafka to use"
    )
    args = parser.parse_args(argv)
    if args.role == "serve-bare":
        serve_bare(args.port, reuse_port=args.reuse_port, instance_port=args.instance_port)
        return 0
    if args.role == "load":
        load(args.url, args.duration, args.warmup, args.concurrency)
        return 0
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "aiohttp"
        if args.generator == "aiohttp":
            print(
                "ingest_bench: wrk is not installed (`make tools`); falling back to the Python generator, "
                "whose rounds are often invalid (it is the busiest process)",
                file=sys.stderr,
            )
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
