"""Ingress benchmark: the real ingest (signature check + acks=all produce) vs. a bare aiohttp handler.

    .venv/bin/python -m bench.ingest_bench [--duration 10] [--concurrency 64 256] [--rounds 2]

Both servers run as their own process on 127.0.0.1 and get the same load from the same generator, in
the same run, alternating `--rounds` times. The generator is wrk (C, one thread; `apt-get install wrk`)
when it is installed, else an async aiohttp client in its own process; either way it is bounded by time
with a fixed number of concurrent connections, and sends the same pre-signed bodies to both servers, so
its own work is identical. Its CPU use is reported next to the servers' to show which side was the
bottleneck.

Two load levels by default: 64 concurrent requests, where ingest's answer waits on the broker's round
trip, and 256, where its batches grow and both servers are CPU-bound. Kafka is the broker named by
KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), on topics made for this run. Prints a Markdown table
and writes bench/results-ingest.json.

Not part of the test suite: wall-clock numbers belong here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
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

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results-ingest.json"
SECRET = "bench-secret-k3v9q2m7x1p8r4t6w0z5"
GOAL = 0.6
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the bare server


def serve_bare(port: int) -> None:
    """An aiohttp handler that reads the body and answers 200: the ceiling for any handler."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/webhooks/whereby", handle)
    app.router.add_get("/readyz", lambda _: _ok())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


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


def _run_wrk(url: str, args: argparse.Namespace, script: Path, concurrency: int) -> dict[str, Any]:
    base = ["wrk", "-t1", f"-c{concurrency}", "-s", str(script), "--timeout", "10s"]
    subprocess.run([*base, f"-d{max(1, round(args.warmup))}s", url], check=True, capture_output=True)
    before = os.times()
    out = subprocess.run([*base, f"-d{max(1, round(args.duration))}s", url], check=True, capture_output=True)
    after = os.times()
    last = out.stdout.decode().strip().splitlines()[-1]
    r = json.loads(last)
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
        "generator_cpu": (after.children_user + after.children_system - before.children_user - before.children_system)
        / seconds,
    }


# ---------------------------------------------------------------- the orchestrator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=1) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"server not ready at {url} within {timeout_s}s")


def _server(kind: str, port: int, bootstrap: str, tag: str) -> subprocess.Popen[bytes]:
    if kind == "bare":
        cmd = [sys.executable, "-m", "bench.ingest_bench", "serve-bare", "--port", str(port)]
        env = dict(os.environ)
    else:
        cmd = [sys.executable, "-m", "ingest"]
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "WHEREBY_WEBHOOK_SECRET": SECRET,
            "INGEST_HOST": "127.0.0.1",
            "INGEST_PORT": str(port),
            "TOPIC_RAW": f"bench{tag}.raw",
            "TOPIC_ENRICHED": f"bench{tag}.enriched",
            "TOPIC_DIMENSIONS": f"bench{tag}.dimensions",
            "TOPIC_DEADLETTER": f"bench{tag}.deadletter",
            "KAFKA_TOPIC_PARTITIONS": "3",
            "LOG_LEVEL": "WARNING",
        }
    return subprocess.Popen(cmd, cwd=REPO, env=env)


def _measure(kind: str, args: argparse.Namespace, tag: str, concurrency: int) -> dict[str, Any]:
    result: dict[str, Any]
    port = _free_port()
    server = _server(kind, port, args.bootstrap, tag)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        url = f"http://127.0.0.1:{port}/webhooks/whereby"
        cpu0 = _cpu_seconds(server.pid)
        t0 = time.monotonic()
        if args.generator == "wrk":
            script = RESULTS.parent / f".wrk-{tag}.lua"
            _wrk_script(script, 2000)  # signed now: well inside the 300 s tolerance for this run
            try:
                result = _run_wrk(url, args, script, concurrency)
            finally:
                script.unlink(missing_ok=True)
        else:
            out = subprocess.run(
                [
                    *(sys.executable, "-m", "bench.ingest_bench", "load", "--url", url),
                    *("--duration", str(args.duration), "--warmup", str(args.warmup)),
                    *("--concurrency", str(concurrency)),
                ],
                cwd=REPO,
                capture_output=True,
                check=True,
            )
            result = json.loads(out.stdout.decode().strip().splitlines()[-1])
        elapsed = time.monotonic() - t0
        # Averaged over warm-up and measurement (the server cannot tell them apart): a lower bound.
        result["server_cpu"] = (_cpu_seconds(server.pid) - cpu0) / elapsed
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "req_per_s": statistics.mean(r["req_per_s"] for r in rs),
        "p50_ms": statistics.median(r["p50_ms"] for r in rs if r["p50_ms"] is not None),
        "p99_ms": statistics.median(r["p99_ms"] for r in rs if r["p99_ms"] is not None),
        "server_cpu": statistics.mean(r["server_cpu"] for r in rs),
        "generator_cpu": statistics.mean(r["generator_cpu"] for r in rs),
        "non_2xx": sum(r["requests"] - r["ok"] + r["errors"] for r in rs),
    }


def orchestrate(args: argparse.Namespace) -> int:
    """Measure bare and ingest, alternating, at each concurrency; print the table, write the JSON."""
    tag = uuid.uuid4().hex[:8]
    load_before = os.getloadavg()
    levels: list[dict[str, Any]] = []
    for concurrency in args.concurrency:
        runs: dict[str, list[dict[str, Any]]] = {"bare": [], "ingest": []}
        for round_no in range(args.rounds):
            for kind in ("bare", "ingest"):
                result = _measure(kind, args, tag, concurrency)
                runs[kind].append(result)
                print(
                    f"c={concurrency} round {round_no + 1} {kind}: {result['req_per_s']:.0f} req/s, "
                    f"statuses {result['statuses']}, errors {result['errors']}, "
                    f"server cpu {result['server_cpu']:.0%}, generator cpu {result['generator_cpu']:.0%}",
                    file=sys.stderr,
                )
        bare, ingest = _summary(runs["bare"]), _summary(runs["ingest"])
        # Each round's pair ran back to back, so its ratio is the least disturbed by other load.
        round_ratios = [i["req_per_s"] / b["req_per_s"] for b, i in zip(runs["bare"], runs["ingest"], strict=True)]
        levels.append(
            {
                "concurrency": concurrency,
                "bare": bare,
                "ingest": ingest,
                "ratio": ingest["req_per_s"] / bare["req_per_s"] if bare["req_per_s"] else 0.0,
                "round_ratios": round_ratios,
                "runs": runs,
            }
        )
    headline = max(levels, key=lambda level: level["concurrency"])
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
        },
        "kafka_bootstrap_servers": args.bootstrap,
        "goal": GOAL,
        # The headline is the highest load level: throughput is a capacity, and only there are both
        # servers saturated (at lower concurrency ingest's figure is bounded by the broker round trip).
        **{k: headline[k] for k in ("concurrency", "bare", "ingest", "ratio")},
        "meets_goal": headline["ratio"] >= GOAL,
        "ratio_by_concurrency": {str(level["concurrency"]): round(level["ratio"], 3) for level in levels},
        "levels": levels,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print("| concurrency | server | req/s | p50 ms | p99 ms | server CPU | generator CPU | non-2xx |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for level in levels:
        for name, s in (("bare aiohttp, 200", level["bare"]), ("ingest: verify + produce acks=all", level["ingest"])):
            print(
                f"| {level['concurrency']} | {name} | {s['req_per_s']:.0f} | {_fmt(s['p50_ms'], 2)} | "
                f"{_fmt(s['p99_ms'], 2)} | {s['server_cpu']:.0%} | {s['generator_cpu']:.0%} | {s['non_2xx']} |"
            )
    print()
    for level in levels:
        rounds = ", ".join(f"{r:.2f}" for r in level["round_ratios"])
        print(
            f"ratio ingest/bare at concurrency {level['concurrency']}: **{level['ratio']:.2f}** "
            f"(per round: {rounds}; goal ≥ {GOAL})"
        )
    loadavg = report["machine"]["loadavg_1m_before_after"]
    print(f"\nload average (1 min) before/after: {loadavg} on {os.cpu_count()} CPUs; written to {RESULTS.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: orchestrate by default; `serve-bare` and `load` are the child processes."""
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    bare = sub.add_parser("serve-bare")
    bare.add_argument("--port", type=int, required=True)
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
        "--generator",
        choices=("auto", "wrk", "aiohttp"),
        default="auto",
        help="load generator: wrk (C, apt-get install wrk) or the aiohttp client; auto prefers wrk",
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating bare/ingest rounds (default 2)")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"), help="Kafka to use"
    )
    args = parser.parse_args(argv)
    if args.role == "serve-bare":
        serve_bare(args.port)
        return 0
    if args.role == "load":
        load(args.url, args.duration, args.warmup, args.concurrency)
        return 0
    if args.generator == "auto":
        args.generator = "wrk" if shutil.which("wrk") else "aiohttp"
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
