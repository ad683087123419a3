"""Sink benchmark: rows/s through the sink vs. a direct bulk insert, and a 10M-event usage query.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:39092 .venv/bin/python -m bench.sink_bench [--rows 200000]

1. N enriched records are produced to a fresh topic (not timed).
2. Baseline: the same records inserted straight into ClickHouse through clickhouse-connect (JSONEachRow,
   batches of SINK_BATCH_ROWS, into the same schema, materialized views included).
3. Sink: the SinkService consumes, batches, inserts and commits them; timed from its first poll until
   every row is committed. Goal: sink rows/s ≥ 0.7 x baseline rows/s.
4. 10 million synthetic events in one month (5M connections, 20,000 rooms, 50 customers) generated with a
   few large INSERT ... SELECT FROM numbers() through the real input table and views; every room derived
   by the real deriver (timed: what an upgrade costs per million events); once merges have settled, the
   three BI queries of issue 15 through the read API's query builders (median of 5 after a warm-up):
   monthly usage per customer, usage per customer per day, top rooms of one customer; and the baseline,
   the same GROUP BY over plain MergeTree tables holding one precomputed row per connection and per
   session. `bi_ratio` = monthly / baseline. The two must agree on every customer's minutes.

`--query-only` skips the Kafka parts (steps 1 to 3); `--skip-query` skips step 4 (when iterating on the
sink); `--reuse DIR` only re-times step 4's queries over the dataset an earlier run left in DIR (its
`sink-bench-*` temporary directory), e.g. once a shared machine is quieter. `--rounds N` repeats steps 2
and 3 N times on the same topic (each round a fresh database and a fresh consumer group), alternating
which of the two goes first; it prints each round's ratio and reports the median of the per-round ratios
(paired ratios cancel most of the drift of a shared machine).

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
from sink import metrics, store
from sink.derive import Deriver, caught_up
from sink.read import queries
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


async def sink_rate(settings: Settings, n: int) -> tuple[float, float]:
    """(rows/s from the first poll until every row is committed, seconds after that until the deriver
    had derived every room: usage trails the inserts by that much at the end of the burst)."""
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
        assert service.client is not None
        while not await asyncio.to_thread(caught_up, service.client, settings.clickhouse_database):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        derive_lag = time.perf_counter() - started - elapsed
    finally:
        await service.stop()
        await asyncio.wait_for(task, 30)
    return n / elapsed, derive_lag


def round_settings(env: dict[str, str], tag: str, r: int) -> Settings:
    """Round `r`'s sink settings: the same topics, a fresh consumer group and a fresh database."""
    return Settings.from_env(
        {**env, "SINK_GROUP": f"bench-sink-{tag}-{r}", "CLICKHOUSE_DATABASE": f"bench_sink_{tag}_{r}"}
    )


async def rounds(
    client: Any, env: dict[str, str], tag: str, values: list[bytes], n_rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """(direct rows/s, sink rows/s, derivation lag s) per round; even rounds run the baseline first."""
    directs, sinks, lags = [], [], []
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
                sink, lag = await sink_rate(settings, len(values))
                lags.append(lag)
            cpu[which] = time.process_time() - cpu_before
        directs.append(direct)
        sinks.append(sink)
        print(
            f"round {r + 1}/{n_rounds}: direct {direct:,.0f} rows/s, sink {sink:,.0f} rows/s, "
            f"ratio {sink / direct:.3f}, rows derived {lags[-1]:.1f} s after the last commit; "
            f"CPU s direct {cpu['direct']:.2f}, sink {cpu['sink']:.2f} "
            f"(load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    return directs, sinks, lags


# Named columns: the input table has grown since (user_key, user_source: their defaults).
GENERATE = """
INSERT INTO {db}.events_input (event_id, event_type, api_version, created_at_ms, received_at_ms, room_name,
    meeting_id, subdomain, room_session_id, participant_id, display_name, role_name, role_class, external_id,
    metadata, metadata_raw, is_dial_in, num_clients, customer_id, customer_name, customer_resolution, user_id,
    user_resolution, dimension_version, enrichment_version, enriched_at_ms, source, user_name)
SELECT
    lower(hex(cityHash64(number, 'bench'))) || lower(hex(cityHash64(number))) AS event_id,
    if(number % 2 = 0, 'room.client.joined', 'room.client.left') AS event_type,
    '1.0' AS api_version,
    {t0:Int64} + intDiv(number, 2) * 500 + (number % 2) * (60000 + intDiv(number, 2) % 3600000) AS created_at_ms,
    created_at_ms + 40 AS received_at_ms,
    concat('/cust', toString(intDiv(number, 2) % 50), '-room-', toString(intDiv(number, 2) % 20000)) AS room_name,
    NULL AS meeting_id, 'examplecorp' AS subdomain,
    concat('sess-', toString(intDiv(number, 2) % 20000), '-', toString(intDiv(number, 500000))) AS room_session_id,
    concat('p-', toString(intDiv(number, 2))) AS participant_id,
    'Someone' AS display_name, 'visitor' AS role_name,
    if(intDiv(number, 2) % 40 = 0, 'recorder', 'human') AS role_class,
    concat('ext-', toString(intDiv(number, 2) % 30000)) AS external_id,
    map('plan', 'pro') AS metadata, 'plan=pro' AS metadata_raw, false AS is_dial_in, 2 AS num_clients,
    concat('c-', toString(intDiv(number, 2) % 50)) AS customer_id, 'Customer' AS customer_name,
    'prefix' AS customer_resolution,
    concat('u-', toString(intDiv(number, 2) % 30000)) AS user_id, 'external_id' AS user_resolution,
    1 AS dimension_version, 1 AS enrichment_version, created_at_ms AS enriched_at_ms,
    'webhook' AS source, NULL AS user_name
FROM numbers({start:UInt64}, {count:UInt64})
"""

GENERATE_STEP = 2_500_000
GENERATE_SETTINGS = {"max_insert_threads": 2, "parallel_view_processing": 1}
MONTH = {"from": "2026-01-01", "to": "2026-02-01"}
BI_CUSTOMER = "c-7"

# The baseline of issue 15: the same GROUP BY as `usage_by_customer_period` (via `usage_rows`), over plain
# MergeTree tables holding exactly one precomputed row per connection and per session: no FINAL, no
# deleted rows, nothing to merge. The best any design could read.
BASELINE_MONTHLY = """
SELECT
    customer_id,
    argMax(customer_name, dims_version) AS customer_name,
    toUInt64(sum(participant_minutes)) AS participant_minutes, toUInt64(sum(recorder_minutes)) AS recorder_minutes,
    toUInt64(sum(streamer_minutes)) AS streamer_minutes, toUInt64(sum(assistant_minutes)) AS assistant_minutes,
    toUInt64(sum(captioner_minutes)) AS captioner_minutes, toUInt64(countIf(closed)) AS connections,
    toUInt64(countIf(open)) AS open_connections, toUInt64(countIf(incomplete)) AS incomplete_connections,
    toUInt64(countIf(estimated)) AS estimated_connections,
    toUInt64(uniqExact(human_participant)) AS unique_participants,
    toUInt64(uniqExact(user_key)) AS unique_users, toUInt64(sum(session)) AS sessions
FROM (
    SELECT customer_id, customer_name, dims_version,
           if(role_class = 'human', ifNull(minutes, 0), 0) AS participant_minutes,
           if(role_class = 'recorder', ifNull(minutes, 0), 0) AS recorder_minutes,
           if(role_class = 'streamer', ifNull(minutes, 0), 0) AS streamer_minutes,
           if(role_class = 'assistant', ifNull(minutes, 0), 0) AS assistant_minutes,
           if(role_class = 'captioner', ifNull(minutes, 0), 0) AS captioner_minutes,
           end_source IN ('left', 'session_end', 'estimated') AS closed, end_source = 'open' AS open,
           end_source = 'no_join' AS incomplete, end_source = 'estimated' AS estimated,
           if(role_class = 'human', participant_id, NULL) AS human_participant,
           if(role_class = 'human', coalesce(user_id, external_id), NULL) AS user_key, 0 AS session
    FROM {db}.bi_baseline_connections
    WHERE anchor_at >= toDateTime64({low:String}, 3, 'UTC') AND anchor_at < toDateTime64({high:String}, 3, 'UTC')
    UNION ALL
    SELECT customer_id, customer_name, dims_version, 0, 0, 0, 0, 0, false, false, false, false, NULL, NULL, 1
    FROM {db}.bi_baseline_sessions
    WHERE started_at >= toDateTime64({low:String}, 3, 'UTC') AND started_at < toDateTime64({high:String}, 3, 'UTC')
)
GROUP BY customer_id
ORDER BY customer_id
"""


def _timed(client: Any, sql: str, parameters: dict[str, Any], runs: int = 5) -> tuple[list[float], Any]:
    """Wall-clock seconds of `runs` executions after one warm-up (the figure is a steady-state query)."""
    rows = client.query(sql, parameters=parameters).result_rows
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = client.query(sql, parameters=parameters).result_rows
        timings.append(time.perf_counter() - started)
    return timings, rows


def _settle_merges(client: Any, db: str, timeout_s: float = 300.0) -> float:
    """Wait until ClickHouse has no merge running on the database (a month that is over looks like this
    in production); returns the seconds waited. Nothing is forced (no OPTIMIZE)."""
    started = time.perf_counter()
    quiet = 0
    while time.perf_counter() - started < timeout_s and quiet < 3:
        running = client.query(f"SELECT count() FROM system.merges WHERE database = '{db}'").result_rows[0][0]
        quiet = quiet + 1 if running == 0 else 0
        time.sleep(1)
    return time.perf_counter() - started


def _by_customer(result: Any, column: str) -> dict[str, int]:
    """customer id -> a column's non-zero values, from a clickhouse-connect query result."""
    index, key = result.column_names.index(column), result.column_names.index("customer_id")
    return {r[key]: r[index] for r in result.result_rows if r[index]}


def big_query(client: Any, db: str, events: int, derive_client: Any) -> dict[str, Any]:
    """10M events in one month through the real input table, derived by the real deriver, then the three
    BI queries of issue 15 through the read API's builders, and the plain-table baseline."""
    store.migrate(client, db)
    started = time.perf_counter()
    for start in range(0, events, GENERATE_STEP):
        client.command(
            GENERATE.replace("{db}", db),
            parameters={"t0": T0_MS, "start": start, "count": min(GENERATE_STEP, events - start)},
            settings=GENERATE_SETTINGS,
        )
    generate_s = time.perf_counter() - started
    deriver = Deriver(derive_client, db, chunk_rooms=1000)
    deriver.load()
    started = time.perf_counter()
    derived = deriver.drain()
    derive_s = time.perf_counter() - started
    settle_s = _settle_merges(client, db)
    # The baseline tables: exactly one row per connection and per session, copied from the views.
    for name, view, month in (
        ("bi_baseline_connections", "connections", "anchor_at"),
        ("bi_baseline_sessions", "room_sessions", "started_at"),
    ):
        client.command(
            f"CREATE TABLE {db}.{name} ENGINE = MergeTree PARTITION BY toYYYYMM({month}) "
            f"ORDER BY room_name AS SELECT * FROM {db}.{view}",
            settings={"allow_suspicious_low_cardinality_types": 1},  # the views' flags over LowCardinality
        )
    _settle_merges(client, db)
    return {
        "events": events,
        "generate_s": round(generate_s, 1),
        "derive_s": round(derive_s, 1),
        "derive_events_per_s": round(derived.events / derive_s) if derive_s else None,
        "derive_s_per_million_events": round(derive_s / (events / 1e6), 1),
        "merge_settle_s": round(settle_s, 1),
        **bi_queries(client, db),
    }


def bi_queries(client: Any, db: str) -> dict[str, Any]:
    """Time the three BI queries through the read API's builders and the baseline over a database that
    `big_query` built (also alone, with `--reuse`, to re-time a kept dataset on a quieter machine)."""
    parts = client.query(
        f"SELECT count() FROM system.parts WHERE database = '{db}' AND table = 'connection_rows' AND active"
    ).result_rows[0][0]

    def through_api(builder: Any, args: dict[str, str]) -> tuple[list[float], Any]:
        query = builder(db, args)
        return _timed(client, query.sql, query.params)

    monthly_t, monthly = through_api(queries.usage_customers, MONTH)
    daily_t, daily = through_api(queries.usage_customer_days, MONTH)
    rooms_t, rooms = through_api(queries.usage_rooms, {**MONTH, "customer_id": BI_CUSTOMER})
    bounds = {"low": MONTH["from"], "high": MONTH["to"]}
    baseline_t, _ = _timed(client, BASELINE_MONTHLY.replace("{db}", db), bounds)
    # Minutes and distinct counts must agree: the read API counts distinct participants from each
    # connection's previous anchor (VIEWS.md §9) and users by a stored hash, the baseline with uniqExact
    # over the raw ids.
    api_query = queries.usage_customers(db, MONTH)
    for column in ("participant_minutes", "unique_participants", "unique_users"):
        ours = _by_customer(client.query(api_query.sql, parameters=api_query.params), column)
        theirs = _by_customer(client.query(BASELINE_MONTHLY.replace("{db}", db), parameters=bounds), column)
        if ours != theirs:
            raise SystemExit(f"the read API and the baseline disagree on {column}")
    connections = client.query(f"SELECT count() FROM {db}.bi_baseline_connections").result_rows[0][0]
    monthly_s, baseline_s = statistics.median(monthly_t), statistics.median(baseline_t)
    return {
        "connections": connections,
        "customers_in_result": len(monthly),
        "connection_rows_parts": parts,
        "bi_monthly_s": round(monthly_s, 3),
        "bi_daily_s": round(statistics.median(daily_t), 3),
        "bi_rooms_s": round(statistics.median(rooms_t), 3),
        "bi_baseline_monthly_s": round(baseline_s, 3),
        "bi_ratio": round(monthly_s / baseline_s, 2),
        "bi_daily_rows": len(daily),
        "bi_rooms_rows": len(rooms),
        "runs": len(monthly_t),
        "load_average_1m_before_queries": round(os.getloadavg()[0], 2),
    }


def reuse(data_dir: str) -> dict[str, Any]:
    """Re-time the BI queries over the 10M-event database an earlier run left in `data_dir` (it keeps its
    temporary directory), e.g. once a shared machine is quieter; generation and derivation are not redone."""
    client = store.connect(f"chdb://{data_dir}")
    try:
        names = client.query("SELECT name FROM system.databases WHERE name LIKE 'bench_query_%'").result_rows
        if len(names) != 1:
            raise SystemExit(f"{data_dir}: expected one bench_query_* database, found {len(names)}")
        return bi_queries(client, names[0][0])
    finally:
        client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--query-only", action="store_true", help="only the synthetic-events query part")
    parser.add_argument("--skip-query", action="store_true", help="skip the synthetic-events query part")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/sink pairs (alternating order)")
    parser.add_argument(
        "--reuse", metavar="DIR", help="only re-time the BI queries over the dataset a --query-only run left in DIR"
    )
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
    query: dict[str, Any] | None = None
    if args.reuse:
        query = {**results.get("query", {}), **reuse(args.reuse)}
    else:
        if not args.query_only:
            await kafka.prepare(settings)
            values = [enriched(i) for i in range(args.rows)]
            await produce(settings, values)

        client = store.connect(settings.clickhouse_url)
        try:
            if not args.query_only:
                load_before = os.getloadavg()[0]
                directs, sinks, lags = await rounds(client, env, tag, values, args.rounds)
                ratios = [s / d for s, d in zip(sinks, directs, strict=True)]
                results.update(
                    {
                        "rows": args.rows,
                        "batch_rows": settings.sink_batch_rows,
                        "rounds": args.rounds,
                        "direct_rows_per_s": round(statistics.median(directs)),
                        "sink_rows_per_s": round(statistics.median(sinks)),
                        "round_ratios": [round(r, 3) for r in ratios],
                        # Rows are committed before they are derived: how long usage trailed the burst's end.
                        "derive_lag_after_commit_s": [round(x, 2) for x in lags],
                        # The median of the paired per-round ratios, not the ratio of the medians.
                        "ratio": round(statistics.median(ratios), 3),
                        "goal_ratio": 0.7,
                        "load_average_1m_before_sink": round(load_before, 2),
                    }
                )
            if not args.skip_query:
                derive_client = store.connect(settings.clickhouse_url)
                try:
                    query = big_query(client, f"bench_query_{tag}", args.events, derive_client)
                finally:
                    derive_client.close()
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
    print(f"| synthetic events generated (one month) | {query['events']:,} ({query['connections']:,} connections) |")
    print(f"| generation (INSERT … SELECT through the input table and its views) | {query['generate_s']:.1f} s |")
    print(
        f"| derivation of every room (the deriver, as after an upgrade) | {query['derive_s']:.1f} s "
        f"({query['derive_s_per_million_events']:.1f} s per million events) |"
    )
    print(f"| monthly usage per customer, read API (`/usage/customers`) | {query['bi_monthly_s']:.3f} s |")
    print(f"| usage per customer per day for the month (`/usage/customer-days`) | {query['bi_daily_s']:.3f} s |")
    print(f"| top rooms of one customer for the month (`/usage/rooms`) | {query['bi_rooms_s']:.3f} s |")
    print(f"| baseline: the same GROUP BY over one plain row per connection | {query['bi_baseline_monthly_s']:.3f} s |")
    print(f"| bi_ratio = monthly / baseline (goal ≤ 2; each query goal < 0.5 s) | {query['bi_ratio']:.2f} |")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    asyncio.run(main())
