"""Sink benchmark: rows/s through the sink vs. a direct bulk insert, and a 10M-event usage query.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:39092 .venv/bin/python -m bench.sink_bench [--rows 200000]

1. N enriched records are produced to a fresh topic (not timed).
2. Baseline: the same records inserted straight into ClickHouse through clickhouse-connect (JSONEachRow,
   batches of SINK_BATCH_ROWS, into the same schema, materialized views included).
3. Sink: the SinkService consumes, batches, inserts and commits them; timed from its first poll until
   every row is committed. Goal: sink rows/s ≥ 0.7 x baseline rows/s.
4. 10 million synthetic events (5M connections, 50 customers, 3 months) generated with a few large
   INSERT ... SELECT FROM numbers() through the real input table and views; then the latency of
   "participant/recorder minutes, sessions and unique users per customer for one month" (median of 3),
   two ways on the same data: the all-time view `usage_by_customer_day` filtered by day (merges every
   connection before the filter can apply: the path BI used before) and the parameterised
   `usage_by_customer_period(from, to)` (reads the month and its neighbours only), plus the read
   API's `/usage/customers?from&to` query. The two views must agree.

`--query-only` skips the Kafka parts (steps 1 to 3); `--skip-query` skips step 4 (when iterating on the
sink). `--rounds N` repeats steps 2 and 3 N times on the same topic (each round a fresh database and a
fresh consumer group), alternating which of the two goes first; it prints each round's ratio and
reports the median of the per-round ratios (paired ratios cancel most of the drift of a shared machine).

Prints a Markdown table and writes bench/results-sink.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from pipeline import kafka
from pipeline.settings import Settings
from sink import metrics, queries, store
from sink.service import SinkService

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def enriched(i: int) -> bytes:
    """A realistic enriched record (~700 bytes): half joins, half lefts of distinct connections."""
    conn = i // 2
    at = T0_MS + conn * 1000 + (i % 2) * 600_000
    return orjson.dumps(
        {
            "event_id": uuid.uuid4().hex + uuid.uuid4().hex,
            "event_type": "room.client.left" if i % 2 else "room.client.joined",
            "api_version": "1.0",
            "created_at_ms": at,
            "received_at_ms": at + 40,
            "room_name": f"/cust{conn % 50}-room-{conn % 5000}",
            "meeting_id": str(conn % 5000),
            "subdomain": "examplecorp",
            "room_session_id": f"sess-{conn % 5000}-{conn // 50000}",
            "participant_id": f"p-{conn}",
            "display_name": "Someone Somebody",
            "role_name": "visitor",
            "role_class": "human",
            "external_id": f"ext-{conn % 3000}",
            "metadata": {"plan": "enterprise", "team": "blue"},
            "metadata_raw": "plan=enterprise&team=blue",
            "is_dial_in": False,
            "num_clients": 3,
            "customer_id": f"c-{conn % 50}",
            "customer_name": f"Customer {conn % 50}",
            "customer_resolution": "prefix",
            "user_id": f"u-{conn % 3000}",
            "user_resolution": "external_id",
            "dimension_version": 12,
            "enrichment_version": at * 1000,
            "enriched_at_ms": at + 60,
        }
    )


async def produce(settings: Settings, values: list[bytes]) -> None:
    producer = kafka.producer(settings, linger_ms=20, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        pending = []
        for v in values:
            pending.append(await producer.send(settings.topic_enriched, v, key=v[14:40]))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def baseline(client: Any, db: str, values: list[bytes], batch_rows: int) -> float:
    """Rows/s of a direct bulk insert of the same records (same format, same batch size, same schema)."""
    store.migrate(client, db)
    started = time.perf_counter()
    for start in range(0, len(values), batch_rows):
        client.raw_insert(
            f"{db}.events_input",
            None,
            b"\n".join(values[start : start + batch_rows]),
            fmt="JSONEachRow",
            settings={"input_format_skip_unknown_fields": 1},
        )
    return len(values) / (time.perf_counter() - started)


async def sink_rate(settings: Settings, n: int) -> float:
    service = SinkService(settings)
    await service.start()
    inserted = metrics.ROWS.labels("event", "inserted")
    before = inserted._value.get()
    started = time.perf_counter()
    task = asyncio.create_task(service.run())
    try:
        while inserted._value.get() < before + n:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        await asyncio.wait_for(task, 30)
    return n / elapsed


def round_settings(env: dict[str, str], tag: str, r: int) -> Settings:
    """Round `r`'s sink settings: the same topics, a fresh consumer group and a fresh database."""
    return Settings.from_env(
        {**env, "SINK_GROUP": f"bench-sink-{tag}-{r}", "CLICKHOUSE_DATABASE": f"bench_sink_{tag}_{r}"}
    )


async def rounds(
    client: Any, env: dict[str, str], tag: str, values: list[bytes], n_rounds: int
) -> tuple[list[float], list[float]]:
    """(direct rows/s, sink rows/s) per round; even rounds run the baseline first, odd ones the sink."""
    directs, sinks = [], []
    for r in range(n_rounds):
        settings = round_settings(env, tag, r)
        cpu: dict[str, float] = {}
        for which in ("direct", "sink") if r % 2 == 0 else ("sink", "direct"):
            # CPU seconds of this process (all threads, the embedded engine's included): a diagnostic
            # that load from other processes disturbs much less than wall-clock rates.
            cpu_before = time.process_time()
            if which == "direct":
                direct = baseline(client, f"bench_direct_{tag}_{r}", values, settings.sink_batch_rows)
            else:
                sink = await sink_rate(settings, len(values))
            cpu[which] = time.process_time() - cpu_before
        directs.append(direct)
        sinks.append(sink)
        print(
            f"round {r + 1}/{n_rounds}: direct {direct:,.0f} rows/s, sink {sink:,.0f} rows/s, "
            f"ratio {sink / direct:.3f}; CPU s direct {cpu['direct']:.2f}, sink {cpu['sink']:.2f} "
            f"(load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    return directs, sinks


# Named columns: the input table has grown since (source, user_name, user_key, user_source: their defaults).
GENERATE = """
INSERT INTO {db}.events_input (event_id, event_type, api_version, created_at_ms, received_at_ms, room_name,
    meeting_id, subdomain, room_session_id, participant_id, display_name, role_name, role_class, external_id,
    metadata, metadata_raw, is_dial_in, num_clients, customer_id, customer_name, customer_resolution, user_id,
    user_resolution, dimension_version, enrichment_version, enriched_at_ms)
SELECT
    lower(hex(cityHash64(number, 'bench'))) || lower(hex(cityHash64(number))) AS event_id,
    if(number % 2 = 0, 'room.client.joined', 'room.client.left') AS event_type,
    '1.0' AS api_version,
    {t0:Int64} + intDiv(number, 2) * 1500 + (number % 2) * (60000 + intDiv(number, 2) % 3600000) AS created_at_ms,
    created_at_ms + 40 AS received_at_ms,
    concat('/cust', toString(intDiv(number, 2) % 50), '-room-', toString(intDiv(number, 2) % 20000)) AS room_name,
    NULL AS meeting_id, 'examplecorp' AS subdomain,
    concat('sess-', toString(intDiv(number, 2) % 20000), '-', toString(intDiv(number, 2000000))) AS room_session_id,
    concat('p-', toString(intDiv(number, 2))) AS participant_id,
    'Someone' AS display_name, 'visitor' AS role_name,
    if(intDiv(number, 2) % 40 = 0, 'recorder', 'human') AS role_class,
    concat('ext-', toString(intDiv(number, 2) % 30000)) AS external_id,
    map('plan', 'pro') AS metadata, 'plan=pro' AS metadata_raw, false AS is_dial_in, 2 AS num_clients,
    concat('c-', toString(intDiv(number, 2) % 50)) AS customer_id, 'Customer' AS customer_name,
    'prefix' AS customer_resolution,
    concat('u-', toString(intDiv(number, 2) % 30000)) AS user_id, 'external_id' AS user_resolution,
    1 AS dimension_version, 1 AS enrichment_version, created_at_ms AS enriched_at_ms
FROM numbers({start:UInt64}, {count:UInt64})
"""

# Before: the all-time daily view, filtered by day (every connection is merged before the filter).
MONTHLY_ALL_TIME = """
SELECT customer_id, sum(participant_minutes) AS participant_minutes, sum(recorder_minutes) AS recorder_minutes,
       sum(sessions) AS sessions
FROM {db}.usage_by_customer_day
WHERE day >= {month:Date} AND day < addMonths({month:Date}, 1)
GROUP BY customer_id
ORDER BY customer_id
"""

# After: the parameterised period view (reads the month's partitions and one on each side).
MONTHLY_PERIOD = """
SELECT customer_id, participant_minutes, recorder_minutes, sessions, unique_users
FROM {db}.usage_by_customer_period(from = toDateTime64({month:Date}, 3, 'UTC'),
                                   to = toDateTime64(addMonths({month:Date}, 1), 3, 'UTC'))
ORDER BY customer_id
"""

GENERATE_STEP = 2_500_000
GENERATE_SETTINGS = {"max_insert_threads": 2, "parallel_view_processing": 1}


def _timed(client: Any, sql: str, parameters: dict[str, Any], runs: int = 3) -> tuple[list[float], Any]:
    timings, rows = [], None
    for _ in range(runs):
        started = time.perf_counter()
        rows = client.query(sql, parameters=parameters).result_rows
        timings.append(time.perf_counter() - started)
    return timings, rows


def big_query(client: Any, db: str, events: int) -> dict[str, Any]:
    store.migrate(client, db)
    started = time.perf_counter()
    for start in range(0, events, GENERATE_STEP):
        client.command(
            GENERATE.replace("{db}", db),
            parameters={"t0": T0_MS, "start": start, "count": min(GENERATE_STEP, events - start)},
            settings=GENERATE_SETTINGS,
        )
    generate_s = time.perf_counter() - started
    client.command(f"OPTIMIZE TABLE {db}.connection_states FINAL")
    client.command(f"OPTIMIZE TABLE {db}.session_states FINAL")
    month = {"month": "2026-01-01"}
    period_t, period = _timed(client, MONTHLY_PERIOD.replace("{db}", db), month)
    all_time_t, all_time = _timed(client, MONTHLY_ALL_TIME.replace("{db}", db), month)
    api = queries.usage_customers(db, {"from": "2026-01-01", "to": "2026-02-01"})
    api_t, _ = _timed(client, api.sql, api.params)
    if [r[:4] for r in period] != [tuple(r) for r in all_time]:
        raise SystemExit(f"period view and all-time view disagree:\n{period[:3]}\n{all_time[:3]}")
    connections = client.query(f"SELECT count() FROM {db}.connection_states").result_rows[0][0]
    return {
        "events": events,
        "connection_states": connections,
        "customers_in_result": len(period),
        "generate_s": round(generate_s, 1),
        "monthly_all_time_view_s_median": round(statistics.median(all_time_t), 3),
        "monthly_all_time_view_s_min": round(min(all_time_t), 3),
        "monthly_period_view_s_median": round(statistics.median(period_t), 3),
        "monthly_period_view_s_min": round(min(period_t), 3),
        "read_api_usage_customers_s_median": round(statistics.median(api_t), 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--query-only", action="store_true", help="only the synthetic-events query part")
    parser.add_argument("--skip-query", action="store_true", help="skip the synthetic-events query part")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/sink pairs (alternating order)")
    args = parser.parse_args()
    if args.query_only and args.skip_query:
        parser.error("--query-only and --skip-query exclude each other")

    tag = uuid.uuid4().hex[:8]
    data_dir = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        "KAFKA_TOPIC_PARTITIONS": "6",
        "TOPIC_RAW": f"bench{tag}.raw",
        "TOPIC_ENRICHED": f"bench{tag}.enriched",
        "TOPIC_DIMENSIONS": f"bench{tag}.dimensions",
        "TOPIC_DEADLETTER": f"bench{tag}.deadletter",
        "CLICKHOUSE_URL": f"chdb://{data_dir}",
        "INSTANCE_ID": f"bench-{tag}",
        "SQL_PORT": "0",  # the sink alone: no SQL interface on 8123 beside a running `make run`
    }
    settings = round_settings(env, tag, 0)
    out = Path(__file__).with_name("results-sink.json")
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if not args.query_only:
        await kafka.prepare(settings)
        values = [enriched(i) for i in range(args.rows)]
        await produce(settings, values)

    client = store.connect(settings.clickhouse_url)
    query: dict[str, Any] | None = None
    try:
        if not args.query_only:
            load_before = os.getloadavg()[0]
            directs, sinks = await rounds(client, env, tag, values, args.rounds)
            ratios = [s / d for s, d in zip(sinks, directs, strict=True)]
            results.update(
                {
                    "rows": args.rows,
                    "batch_rows": settings.sink_batch_rows,
                    "rounds": args.rounds,
                    "direct_rows_per_s": round(statistics.median(directs)),
                    "sink_rows_per_s": round(statistics.median(sinks)),
                    "round_ratios": [round(r, 3) for r in ratios],
                    # The median of the paired per-round ratios, not the ratio of the medians.
                    "ratio": round(statistics.median(ratios), 3),
                    "goal_ratio": 0.7,
                    "load_average_1m_before_sink": round(load_before, 2),
                }
            )
        if not args.skip_query:
            query = big_query(client, f"bench_query_{tag}", args.events)
    finally:
        client.close()

    # Shared machines: the 1-minute load average says how much else was running.
    results.update({"cpus": os.cpu_count(), "load_average_1m_after": round(os.getloadavg()[0], 2)})
    if query is not None:
        results["query"] = query
    print("| What | Value |\n|---|---|")
    if "sink_rows_per_s" in results:
        if args.query_only:
            print("| (the next three rows: kept from the last full run) | |")
        print(f"| direct bulk insert (clickhouse-connect, JSONEachRow) | {results['direct_rows_per_s']:,} rows/s |")
        print(f"| sink (consume, batch, insert, commit) | {results['sink_rows_per_s']:,} rows/s |")
        print(f"| ratio sink / direct, median of per-round ratios (goal ≥ 0.7) | {results['ratio']:.2f} |")
        print(f"| per-round ratios | {', '.join(f'{r:.3f}' for r in results.get('round_ratios', []))} |")
    print(f"| load average (1 min) after | {results['load_average_1m_after']:.2f} |")
    if query is None:
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {out} (query part skipped; its figures are kept from the last full run)")
        return
    print(f"| synthetic events generated | {query['events']:,} ({query['connection_states']:,} connections) |")
    print(f"| generation (INSERT … SELECT through the MVs) | {query['generate_s']:.1f} s |")
    print(
        "| monthly usage per customer, all-time view `usage_by_customer_day` filtered by day, median of 3 "
        f"| {query['monthly_all_time_view_s_median']:.3f} s |"
    )
    print(
        "| monthly usage per customer, `usage_by_customer_period(from, to)`, median of 3 "
        f"| {query['monthly_period_view_s_median']:.3f} s |"
    )
    print(f"| read API `/usage/customers?from&to`, median of 3 | {query['read_api_usage_customers_s_median']:.3f} s |")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    asyncio.run(main())
