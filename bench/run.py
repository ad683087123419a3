"""`make bench`: every benchmark in one run, summarised as ratios against same-run baselines.

    .venv/bin/python -m bench.run [--quick]

Runs, one after the other on the same broker (KAFKA_BOOTSTRAP_SERVERS, else the local broker on
127.0.0.1:9092, started if needed):
- ingress: full ingest vs. a bare aiohttp handler, each with 1 and 2 worker processes on one port, same
  load generator (wrk when installed; rounds where the generator is the busiest process are flagged
  invalid and left out of the ratios) (bench/ingest_bench.py)
- enrich: full enrichment with 10k customers / 100k users vs. a bare consume→produce passthrough
  (bench/enrich_bench.py)
- sink: consume, batch, insert, commit vs. a direct bulk insert of the same rows; and monthly usage
  per customer over 10M events (bench/sink_bench.py)
- end to end: webhook answered → row queryable at an offered 1,000 events/s for 60 s, with peak RSS
  per stage, the stages as real processes (bench/e2e_bench.py)

Writes bench/results.json, prints a Markdown table and draws bench/results.png. `--quick` shortens
every run (for trying the harness, not for figures). Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import REPO
from harness.broker import local_broker

BENCH = REPO / "bench"
# Issue 15: each BI query under half a second, and the monthly one at most twice the plain-table baseline.
BI_GOALS = (
    ("bi_monthly_s", 0.5, False),
    ("bi_daily_s", 0.5, False),
    ("bi_rooms_s", 0.5, False),
    ("bi_ratio", 2.0, True),
)
GOALS = {"ingress_ratio": 0.6, "enrich_ratio": 0.8, "sink_ratio": 0.7, "e2e_p99_s": 2.0}
RSS_GOAL_MB = 150.0


def _run(module: str, args: list[str], env: dict[str, str]) -> None:
    print(f"\n## {module} {' '.join(args)}", flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO, check=True)
    print(f"({module} took {time.monotonic() - started:.0f}s)", flush=True)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((BENCH / f"results-{name}.json").read_text())
    return data


def collect() -> dict[str, Any]:
    """Pick the headline figures out of the per-benchmark result files."""
    ingest, enrich, sink, e2e = _load("ingest"), _load("enrich"), _load("sink"), _load("e2e")
    return {
        "ingress_ratio": round(float(ingest["ratio"]), 3),
        # Ingest and the bare handler with 1 and 2 workers at the highest concurrency, side by side.
        "ingress_by_workers": ingest.get("by_workers", {}),
        "ingress_valid": bool(ingest.get("valid", True)),
        "ingress_invalid_rounds": ingest.get("invalid_rounds", 0),
        "ingress_generator": ingest.get("load", {}).get("generator"),
        "enrich_ratio": round(float(enrich["ratio"]), 3),
        "sink_ratio": round(float(sink["ratio"]), 3),
        "e2e_p50_s": e2e["e2e_p50_s"],
        "e2e_p99_s": e2e["e2e_p99_s"],
        "peak_rss_mb": e2e["peak_rss_mb"],
        "rates": {
            "ingest_req_per_s": round(ingest["ingest"]["req_per_s"]),
            "bare_http_req_per_s": round(ingest["bare"]["req_per_s"]),
            "enrich_events_per_s": enrich["enrich_events_per_s"],
            "passthrough_events_per_s": enrich["passthrough_events_per_s"],
            "sink_rows_per_s": sink["sink_rows_per_s"],
            "direct_insert_rows_per_s": sink["direct_rows_per_s"],
            "e2e_offered_per_s": e2e["offered_rate"],
            "e2e_achieved_per_s": e2e["achieved_rate"],
        },
        "e2e_lost": e2e["lost"],
        "ingest_latency_ms": {"p50": ingest["ingest"]["p50_ms"], "p99": ingest["ingest"]["p99_ms"]},
        # Issue 15: the three BI queries over 10M events in a month, and the same-run plain-table baseline.
        **{k: sink.get("query", {}).get(k) for k in ("bi_monthly_s", "bi_daily_s", "bi_rooms_s", "bi_ratio")},
        "bi_baseline_monthly_s": sink.get("query", {}).get("bi_baseline_monthly_s"),
        "derive_s_per_million_events": sink.get("query", {}).get("derive_s_per_million_events"),
        "sink_derive_lag_after_commit_s": sink.get("derive_lag_after_commit_s"),
        "enrich_bench_peak_rss_mb": enrich.get("peak_rss_mb"),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
    }


def table(results: dict[str, Any]) -> str:
    rows = ["| figure | value | goal | met |", "|---|---:|---:|---|"]
    for key, goal in GOALS.items():
        value = results[key]
        met = value is not None and (value <= goal if key.endswith("_s") else value >= goal)
        sign = "≤" if key.endswith("_s") else "≥"
        rows.append(f"| {key} | {value} | {sign} {goal} | {'yes' if met else 'NO'} |")
    rows.append(f"| e2e_p50_s | {results['e2e_p50_s']} | | |")
    for stage, mb in sorted(results["peak_rss_mb"].items()):
        rss_goal = f"≤ {RSS_GOAL_MB:.0f}" if stage in ("ingest", "enrich") else ""
        met = ("yes" if mb <= RSS_GOAL_MB else "NO") if rss_goal else ""
        rows.append(f"| peak RSS {stage} (MB, at 1k events/s) | {mb} | {rss_goal} | {met} |")
    ingress_goal = GOALS["ingress_ratio"]
    for workers, w in sorted(results.get("ingress_by_workers", {}).items()):
        met = ("yes" if w["ratio"] >= ingress_goal else "NO") + ("" if w["valid"] else " (INVALID: generator busiest)")
        rows.append(
            f"| ingress, {workers} worker(s): ingest / bare req/s "
            f"| {w['ingest_req_per_s']} / {w['bare_req_per_s']} = {w['ratio']} | ≥ {ingress_goal} | {met} |"
        )
    if results.get("ingress_invalid_rounds"):
        rows.append(
            f"| ingress rounds flagged invalid (generator busiest) | {results['ingress_invalid_rounds']} | 0 | |"
        )
    lost = results["e2e_lost"]
    rows.append(f"| events lost in the e2e run | {lost} | 0 | {'yes' if lost == 0 else 'NO'} |")
    for key, value in results["rates"].items():
        rows.append(f"| {key} | {value} | | |")
    for key, limit, inclusive in BI_GOALS:
        value = results.get(key)
        met = "" if value is None else "yes" if (value <= limit if inclusive else value < limit) else "NO"
        rows.append(f"| {key} (10M events in a month) | {value} | {'≤' if inclusive else '<'} {limit} | {met} |")
    rows.append(f"| derivation, s per million events | {results.get('derive_s_per_million_events')} | | |")
    return "\n".join(rows)


def chart(results: dict[str, Any], path: Path) -> None:
    """Ratios against their goals, and the e2e p99 against its budget, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 1]})
    names = ["ingress", "enrich", "sink"]
    values = [results["ingress_ratio"], results["enrich_ratio"], results["sink_ratio"]]
    goals = [GOALS["ingress_ratio"], GOALS["enrich_ratio"], GOALS["sink_ratio"]]
    colors = ["tab:green" if v >= g else "tab:red" for v, g in zip(values, goals, strict=True)]
    left.bar(names, values, color=colors)
    for i, goal in enumerate(goals):
        left.hlines(goal, i - 0.4, i + 0.4, colors="black", linestyles="dashed")
    left.set_ylim(0, max(1.1, *values) * 1.08)
    left.set_ylabel("throughput ratio vs. same-run baseline")
    left.set_title("Stage throughput (dashed: goal)")
    p99 = results["e2e_p99_s"] or 0.0
    p99_color = "tab:green" if p99 <= GOALS["e2e_p99_s"] else "tab:red"
    right.bar(["p50", "p99"], [results["e2e_p50_s"] or 0.0, p99], color=["tab:blue", p99_color])
    right.axhline(GOALS["e2e_p99_s"], color="black", linestyle="dashed")
    right.set_ylabel("seconds")
    right.set_title("E2E at 1k events/s")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs to try the harness (figures are noisy)")
    args = parser.parse_args()
    with local_broker() as bootstrap:
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        quick = args.quick
        ingest_args = ["--duration", "3" if quick else "10", "--rounds", "1" if quick else "3", "--workers", "1", "2"]
        _run("bench.ingest_bench", ingest_args, env)
        _run("bench.enrich_bench", ["--events", "20000" if quick else "100000", "--rounds", "1" if quick else "3"], env)
        sink_args = ["--rows", "20000" if quick else "200000", "--events", "200000" if quick else "10000000"]
        _run("bench.sink_bench", sink_args, env)
        _run("bench.e2e_bench", ["--rate", "1000", "--duration", "10" if quick else "60"], env)
    results = collect()
    (BENCH / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table(results))
    chart(results, BENCH / "results.png")
    print("\nwritten to bench/results.json and bench/results.png")


if __name__ == "__main__":
    main()
