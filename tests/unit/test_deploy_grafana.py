"""Grafana: dashboards parse, use the provisioned datasources, query only catalogued metrics and
recording rules; their PromQL parses (promtool); their SQL runs on the real schema (chdb)."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy_prometheus import RULES, promtool
from tests.unit.test_metrics_catalogue import catalogue, metric_names_in

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Grafana's own variables, replaced by a plain range so promtool can parse the expression.
GRAFANA_RANGES = ("$__rate_interval", "$__interval", "$__range")


def targets(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dashboard/panel title, target) of every query whose datasource is of type `kind`."""
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel.get("datasource") or {}).get("type") == kind:
                    yield f"{path.name}: {panel['title']}", target


def provisioned() -> dict[str, str]:
    """uid -> type of the datasources Grafana is provisioned with."""
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())
    return {d["uid"]: d["type"] for d in config["datasources"]}


def test_two_dashboards_parse_with_unique_uids() -> None:
    docs = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert {d["uid"] for d in docs} == {"whereby-sre", "whereby-usage"}
    for doc in docs:
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), doc["uid"]


def test_panels_use_provisioned_datasources() -> None:
    sources = provisioned()
    assert set(sources.values()) == {"prometheus", "grafana-clickhouse-datasource"}
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for ds in [panel.get("datasource"), *(t.get("datasource") for t in panel.get("targets", []))]:
                if ds:
                    assert sources.get(ds["uid"]) == ds["type"], f"{path.name}: {panel['title']}: {ds}"


def test_promql_uses_only_catalogued_metrics_and_defined_recordings() -> None:
    known = set(catalogue())
    recorded = {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r}
    exprs = list(targets("prometheus"))
    assert len(exprs) > 20
    for where, target in exprs:
        unknown = metric_names_in(target["expr"]) - known
        assert not unknown, f"{where}: not in docs/metrics.md: {unknown}"
        missing = set(re.findall(r"\bwhereby:[a-z0-9_:]+", target["expr"])) - recorded
        assert not missing, f"{where}: no such recording rule: {missing}"


def test_sre_dashboard_covers_rate_errors_latency_and_lag_per_stage() -> None:
    text = (GRAFANA / "dashboards" / "sre-overview.json").read_text()
    for needed in ("whereby_ingest_requests_total", "whereby_ingest_request_duration_seconds_bucket",
                   "whereby_enrich_events_total", "whereby_sink_rows_total", "whereby_sink_latency_seconds_bucket",
                   'whereby_consumer_lag_records{stage=\\"enrich\\"}', 'whereby_consumer_lag_records{stage=\\"sink\\"}',
                   "whereby:deadletters:rate5m"):  # fmt: skip
        assert needed in text, needed


def test_promql_parses(tmp_path: Path) -> None:
    """Each expression as a recording rule, so `promtool check rules` parses it."""
    tool = promtool()
    rules = []
    for n, (_, target) in enumerate(targets("prometheus")):
        expr = target["expr"]
        for variable in GRAFANA_RANGES:
            expr = expr.replace(variable, "5m")
        rules.append({"record": f"dashboard:expr_{n}", "expr": expr})
    (tmp_path / "exprs.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run([tool, "check", "rules", str(tmp_path / "exprs.yml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.integration
def test_usage_sql_runs_on_the_real_schema(clickhouse_url: str) -> None:
    """The usage dashboard's SQL (macros filled in) against the sink's migrated schema, on the real engine."""
    from sink import store

    client = store.connect(clickhouse_url)
    database = f"dash_{uuid.uuid4().hex[:10]}"
    store.migrate(client, database)
    fills = {"$__fromTime": "toDateTime('2026-01-01 00:00:00')", "$__toTime": "toDateTime('2026-02-01 00:00:00')",
             "${customer:singlequote}": "'acme', 'unresolved'", "${metadata_key:singlequote}": "'plan'",
             "${stale_s}": "21600", "whereby.": f"{database}."}  # fmt: skip
    queries = [t["rawSql"] for _, t in targets("grafana-clickhouse-datasource")]
    usage = json.loads((GRAFANA / "dashboards" / "usage.json").read_text())
    queries += [v["query"] for v in usage["templating"]["list"] if v["type"] == "query"]
    assert any("usage_by_customer_day" in q and "participant_minutes" in q for q in queries)
    for sql in queries:
        for macro, value in fills.items():
            sql = sql.replace(macro, value)
        assert "$" not in sql, sql
        client.query(sql)


def test_sre_dashboard_shows_replication_and_rebalances() -> None:
    """Issue 17: in-sync replicas, under-replicated partitions and rebalance counts are on the SRE dashboard."""
    text = (GRAFANA / "dashboards" / "sre-overview.json").read_text()
    for needed in ("whereby:kafka_under_replicated_partitions:count", "whereby_kafka_partition_in_sync_replicas",
                   "whereby_consumer_rebalances_total", "whereby_consumer_assigned_partitions"):  # fmt: skip
        assert needed in text, needed


def test_usage_dashboard_splits_minutes_by_a_metadata_key_and_shows_live_occupancy() -> None:
    """Issue 18: minutes by a metadata key (a variable listing the keys seen), who is in a room now, and
    sessions whose guests waited for the host."""
    usage = json.loads((GRAFANA / "dashboards" / "usage.json").read_text())
    variables = {v["name"]: v for v in usage["templating"]["list"]}
    assert "mapKeys(metadata)" in variables["metadata_key"]["query"]
    assert variables["stale_s"]["type"] == "constant"
    sql = {p["title"]: " ".join(t["rawSql"] for t in p.get("targets", [])) for p in usage["panels"]}
    by_key = [q for title, q in sql.items() if "${metadata_key}" in title]
    assert by_key and all("usage_by_metadata_period" in q and "${metadata_key:singlequote}" in q for q in by_key)
    live = [q for q in sql.values() if "whereby.live_connections" in q]
    assert len(live) >= 3 and all("${stale_s}" in q for q in live)
    assert any("host_after_guest_s" in q for q in sql.values())
    assert usage["refresh"]  # live panels refresh by themselves
