"""Enrich benchmark: the real enrich stage vs. a bare consume→produce passthrough, same broker, same run.

    .venv/bin/python -m bench.enrich_bench [--events 100000] [--rounds 3] [--no-batched] [--profile]

Loads 10,000 customers and 100,000 users onto a dimensions topic made for this run, pre-produces the
same raw events once, then runs, `--rounds` times and in a rotating order:
- `passthrough` (the baseline of the goal): a group consumer → producer of the unchanged bytes, one
  `send(key=...)` per record, commit after the acks, same client settings and batch size as the stage;
- `enrich`: the stage (`EnrichService`, dimension table loaded, its follower task running);
- `batched` (for context, not the goal): the passthrough written the way the stage produces (one
  record batch per partition, co-partitioned), i.e. the ceiling for the stage's own producing. The
  enrich/batched ratio is what the enrichment itself costs.

Each run is a separate child process (`--child KIND`), so the contenders start alike and the stage's
RSS is its own (the generated data stays in the parent): peak RSS of the process, and the RSS the
dimension table added when it was loaded. Each run uses a fresh consumer group over the same raw
records, and is timed from its first polled batch to its last commit; CPU seconds are the child's
(including the client's background tasks). The load average is recorded per run: the figures are
medians over rounds because the machine is shared. Kafka is the broker named by KAFKA_BOOTSTRAP_SERVERS
(default 127.0.0.1:9092).

Prints a Markdown table and writes bench/results-enrich.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from enrich.dimtopic import publish
from enrich.service import EnrichService
from pipeline import contract, kafka
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results-enrich.json"
GOAL = 0.8
CUSTOMERS = 10_000
USERS = 100_000
BATCH = 2000  # the enrich stage's max records per poll; the passthrough uses the same
KINDS = ("passthrough", "enrich", "batched")


def bench_settings(tag: str) -> Settings:
    env = dict(os.environ)
    env.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    env.update(
        TOPIC_RAW=f"bench-{tag}.raw",
        TOPIC_ENRICHED=f"bench-{tag}.enriched",
        TOPIC_DIMENSIONS=f"bench-{tag}.dimensions",
        TOPIC_DEADLETTER=f"bench-{tag}.deadletter",
        INSTANCE_ID=f"bench-{tag}",
    )
    return Settings.from_env(env)


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report its
    parent's peak (the generated data) instead of its own.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------- data


def dimension_records(rng: random.Random) -> list[tuple[str, bytes | None]]:
    records: list[tuple[str, bytes | None]] = []
    for i in range(CUSTOMERS):
        prefixes = [f"c{i:05d}-"]
        if i % 10 == 0:
            prefixes.append(f"c{i:05d}-team-")  # extends its own prefix: longest match must win
        doc = {"customer_id": f"cust-{i}", "name": f"Customer {i}", "room_name_prefixes": prefixes}
        records.append((f"customer:cust-{i}", orjson.dumps(doc)))
    for j in range(USERS):
        doc = {"external_id": f"user-{j:06d}", "user_id": f"u{j}", "customer_id": f"cust-{rng.randrange(CUSTOMERS)}"}
        records.append((f"user:user-{j:06d}", orjson.dumps(doc)))
    return records


def raw_events(n: int, rng: random.Random) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, body, headers) like ingest writes them: resolved, unresolved, bots, all metadata forms."""
    out = []
    rooms = []
    for _ in range(max(1, n // 20)):
        roll = rng.random()
        if roll < 0.8:
            prefix = f"c{rng.randrange(CUSTOMERS):05d}-"
        elif roll < 0.85:
            prefix = f"c{rng.randrange(0, CUSTOMERS, 10):05d}-team-"
        else:
            prefix = "zz-unknown-"
        rooms.append(f"/{prefix}{uuid.UUID(int=rng.getrandbits(128))}")
    metadata = [None, "plan=pro&seats=12", '{"plan":"enterprise","tier":2}', "just text"]
    roles = ["visitor"] * 8 + ["host", "recorder"]
    base = contract.now_ms()
    for k in range(n):
        room = rng.choice(rooms)
        kind = rng.random()
        if kind < 0.05:
            etype, data = "room.session.started", {}
        else:
            etype = "room.client.joined" if kind < 0.55 else "room.client.left"
            roll = rng.random()
            external = (
                f"user-{rng.randrange(USERS):06d}" if roll < 0.7 else ("nobody-" + str(k) if roll < 0.9 else None)
            )
            data = {
                "participantId": str(uuid.UUID(int=rng.getrandbits(128))),
                "displayName": "Someone",
                "metadata": rng.choice(metadata),
                "externalId": external,
                "roleName": rng.choice(roles),
                "numClients": 2,
                "numClientsByRoleName": {"visitor": 2},
                "isDialIn": False,
            }
        doc = {
            "id": f"{rng.getrandbits(256):064x}",
            "apiVersion": "1.0",
            "createdAt": "2026-01-01T00:00:00.412Z",
            "type": etype,
            "data": {
                "meetingId": "91827364",
                "roomName": room,
                "roomSessionId": "0b6c2d4e-8f1a-4c3b-9d5e-7a2b4c6d8e0f",
                "subdomain": "examplecorp",
                **data,
            },
        }
        headers = [
            (contract.HEADER_EVENT_ID, doc["id"].encode()),
            (contract.HEADER_EVENT_TYPE, etype.encode()),
            (contract.HEADER_RECEIVED_AT_MS, str(base + k).encode()),
        ]
        out.append((room.encode(), orjson.dumps(doc), headers))
    return out


async def produce_raw(settings: Settings, events: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        for start in range(0, len(events), 20_000):
            futures = [
                await producer.send(settings.topic_raw, body, key=key, headers=headers)
                for key, body, headers in events[start : start + 20_000]
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


# ---------------------------------------------------------------- the two contenders


async def run_passthrough(settings: Settings, n: int, out_topic: str) -> dict[str, float]:
    """The ceiling: poll, hand every record unchanged to the producer, await the acks, commit."""
    producer = kafka.producer(settings)
    consumer = kafka.consumer(settings, settings.topic_raw, group_id=f"bench-pass-{uuid.uuid4().hex[:8]}")
    await producer.start()
    await consumer.start()
    try:
        done, started, cpu0 = 0, 0.0, 0.0
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH)
            if not batches:
                continue
            if not started:
                started, cpu0 = time.perf_counter(), time.process_time()
            futures = []
            for records in batches.values():
                for record in records:
                    futures.append(await producer.send(out_topic, record.value, key=record.key))
                done += sum(1 for _ in records)
            await asyncio.gather(*futures)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
        return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu0}
    finally:
        await consumer.stop()
        await producer.stop()


async def run_batched(settings: Settings, n: int, out_topic: str) -> dict[str, float]:
    """The passthrough as the stage produces: one closed record batch per partition, co-partitioned."""
    producer = kafka.producer(settings)
    consumer = kafka.consumer(settings, settings.topic_raw, group_id=f"bench-batch-{uuid.uuid4().hex[:8]}")
    await producer.start()
    await consumer.start()
    try:
        done, started, cpu0 = 0, 0.0, 0.0
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH)
            if not batches:
                continue
            if not started:
                started, cpu0 = time.perf_counter(), time.process_time()
            futures = []
            for tp, records in batches.items():
                builder = producer.create_batch()
                for record in records:
                    if builder.append(timestamp=None, key=record.key, value=record.value) is None:
                        builder.close()
                        futures.append(await producer.send_batch(builder, out_topic, partition=tp.partition))
                        builder = producer.create_batch()
                        builder.append(timestamp=None, key=record.key, value=record.value)
                builder.close()
                futures.append(await producer.send_batch(builder, out_topic, partition=tp.partition))
                done += len(records)
            await asyncio.gather(*futures)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
        return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu0}
    finally:
        await consumer.stop()
        await producer.stop()


async def run_enrich(settings: Settings, n: int, profile: bool) -> dict[str, float]:
    """The real stage: dimension table loaded, follower running, process_batch until all are committed."""
    service_settings = Settings(**{**settings.__dict__, "enrich_group": f"bench-enrich-{uuid.uuid4().hex[:8]}"})
    service = EnrichService(service_settings)
    rss_before_load = current_rss_mb()
    load_started = time.perf_counter()
    await service.start()
    load_seconds = time.perf_counter() - load_started
    rss_after_load = current_rss_mb()
    follower = asyncio.create_task(service._dims.follow())
    profiler = cProfile.Profile() if profile else None
    try:
        done, started, cpu0 = 0, 0.0, 0.0
        while done < n:
            if profiler and started:
                profiler.enable()
            handled = await service.process_batch()
            if profiler:
                profiler.disable()
            if handled and not started:
                started, cpu0 = time.perf_counter(), time.process_time()
            done += handled
        result = {
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu0,
            "dimension_load_seconds": load_seconds,
            "rss_before_load_mb": rss_before_load,
            "dimension_table_rss_mb": rss_after_load - rss_before_load,
            "customers": len(service.table.customers),
            "users": len(service.table.users),
        }
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await service.stop()
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        print(text.getvalue(), file=sys.stderr)
    return result


# ---------------------------------------------------------------- main


async def main(args: argparse.Namespace) -> int:
    if args.child:
        return await child(args)
    tag = uuid.uuid4().hex[:8]
    settings = bench_settings(tag)
    try:
        return await measure(args, settings, tag)
    finally:
        await delete_topics(settings, f"bench-{tag}.passthrough")


async def child(args: argparse.Namespace) -> int:
    """One contender in this (fresh) process; prints its result as one JSON line on stdout."""
    settings = bench_settings(args.tag)
    out_topic = f"bench-{args.tag}.passthrough"
    if args.child == "passthrough":
        result = await run_passthrough(settings, args.events, out_topic)
    elif args.child == "batched":
        result = await run_batched(settings, args.events, out_topic)
    else:
        result = await run_enrich(settings, args.events, args.profile)
    result.update(peak_rss_mb=rss_mb(), end_rss_mb=current_rss_mb())
    print(json.dumps(result), flush=True)
    return 0


def run_child(kind: str, tag: str, events: int, profile: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.enrich_bench", "--child", kind, "--tag", tag, "--events", str(events)]
    if profile:
        command.append("--profile")
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def measure(args: argparse.Namespace, settings: Settings, tag: str) -> int:
    rng = random.Random(7)
    await kafka.prepare(settings)
    print(f"loading {CUSTOMERS:,} customers and {USERS:,} users ...", file=sys.stderr)
    await publish(settings, dimension_records(rng))
    print(f"producing {args.events:,} raw events to {settings.topic_raw} ...", file=sys.stderr)
    events = raw_events(args.events, rng)
    await produce_raw(settings, events)
    del events
    await create_topic(settings, f"bench-{tag}.passthrough")

    kinds = [k for k in KINDS if args.batched or k != "batched"]
    runs: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(kinds)  # rotate the order, so no contender always goes first
        for kind in kinds[shift:] + kinds[:shift]:
            print(f"round {round_no}: {kind} ...", file=sys.stderr)
            load = os.getloadavg()[0]
            profile = args.profile and kind == "enrich" and round_no == args.rounds
            result = await asyncio.to_thread(run_child, kind, tag, args.events, profile)
            result.update(kind=kind, round=round_no, events_per_s=args.events / result["seconds"], load_1m=load)
            runs.append(result)

    def median(kind: str, field: str = "events_per_s") -> float:
        return statistics.median(r[field] for r in runs if r["kind"] == kind)

    passthrough, enriched = median("passthrough"), median("enrich")
    ratio = enriched / passthrough
    # Also paired: enrich over the passthrough of the same round (the machine's load drifts between rounds).
    rates = {(r["kind"], r["round"]): r["events_per_s"] for r in runs}
    round_ratios = [rates["enrich", n] / rates["passthrough", n] for n in range(1, args.rounds + 1)]
    batched = median("batched") if args.batched else None
    summary = {
        "events": args.events,
        "rounds": args.rounds,
        "customers": CUSTOMERS,
        "users": USERS,
        "passthrough_events_per_s": round(passthrough),
        "enrich_events_per_s": round(enriched),
        "ratio": round(ratio, 3),
        "goal": GOAL,
        "meets_goal": ratio >= GOAL,
        "ratio_per_round": [round(x, 3) for x in round_ratios],
        "ratio_paired_median": round(statistics.median(round_ratios), 3),
        "batched_passthrough_events_per_s": None if batched is None else round(batched),
        "ratio_vs_batched": None if batched is None else round(enriched / batched, 3),
        "cpu_us_per_event": {k: round(median(k, "cpu_seconds") / args.events * 1e6, 1) for k in kinds},
        "dimension_load_seconds": round(median("enrich", "dimension_load_seconds"), 2),
        # The stage's own process (the generated data lives in the parent): peak RSS while loading the
        # dimensions and enriching the backlog at full speed, and what the loaded table added.
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs if r["kind"] == "enrich"), 1),
        "stage_rss_before_load_mb": round(median("enrich", "rss_before_load_mb"), 1),
        "dimension_table_rss_mb": round(median("enrich", "dimension_table_rss_mb"), 1),
        "passthrough_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs if r["kind"] == "passthrough"), 1),
        "load_1m": [round(r["load_1m"], 2) for r in runs],
        "broker": settings.kafka_bootstrap_servers,
        "partitions": settings.topic_partitions,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
    }
    print()
    print(f"Enrich vs. passthrough: {args.events:,} raw events, {CUSTOMERS:,} customers, {USERS:,} users loaded")
    print()
    print("| run | round | events/s | seconds | CPU s | peak RSS MiB | load 1m |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(
            f"| {r['kind']} | {r['round']} | {r['events_per_s']:,.0f} | {r['seconds']:.2f} | "
            f"{r['cpu_seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['load_1m']:.1f} |"
        )
    print()
    print("| metric | value |")
    print("|---|---:|")
    print(f"| passthrough (median) | {passthrough:,.0f} events/s |")
    print(f"| enrich (median) | {enriched:,.0f} events/s |")
    print(f"| **ratio** (goal ≥ {GOAL}) | **{ratio:.2f}** |")
    per_round = ", ".join(f"{x:.2f}" for x in round_ratios)
    print(f"| ratio per round (median) | {per_round} ({statistics.median(round_ratios):.2f}) |")
    if batched is not None:
        print(f"| batched passthrough, for context (median) | {batched:,.0f} events/s |")
        print(f"| enrich / batched passthrough | {enriched / batched:.2f} |")
    cpu = summary["cpu_us_per_event"]
    print(f"| CPU per event (median) | {', '.join(f'{k} {v} µs' for k, v in cpu.items())} |")
    print(f"| dimension load at start | {summary['dimension_load_seconds']} s |")
    print(
        f"| enrich process RSS: before load → peak | {summary['stage_rss_before_load_mb']} → "
        f"{summary['peak_rss_mb']} MiB (table +{summary['dimension_table_rss_mb']} MiB) |"
    )
    print(f"| passthrough process peak RSS | {summary['passthrough_peak_rss_mb']} MiB |")
    RESULTS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}", file=sys.stderr)
    return 0


async def create_topic(settings: Settings, name: str) -> None:
    """The passthrough's output topic, shaped like the enriched topic (same partitions and replication)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, settings.topic_partitions, settings.topic_replication_factor)])
    finally:
        await admin.close()


async def delete_topics(settings: Settings, *extra: str) -> None:
    """Leave the shared broker as we found it."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        names = [settings.topic_raw, settings.topic_enriched, settings.topic_dimensions, settings.topic_deadletter]
        await admin.delete_topics([*names, *extra])
    except Exception as exc:  # best effort: a leftover topic is not worth failing the benchmark for
        print(f"could not delete the benchmark topics: {exc!r}", file=sys.stderr)
    finally:
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="raw events per run (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every contender (default 3)")
    parser.add_argument("--no-batched", dest="batched", action="store_false", help="skip the batched passthrough")
    parser.add_argument("--profile", action="store_true", help="cProfile the last enrich run (stderr)")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    sys.exit(asyncio.run(main(parser.parse_args())))
