"""The Grafana ClickHouse data source is provisioned so one file serves a ClickHouse server and the
sink's embedded SQL interface: its address comes from Grafana's environment, which the compose stack
fills with the server's by default (README, "SQL for BI tools"); it logs in as the read-only user
`grafana` with a password from a mounted secret (the SQL interface takes any user name, and its
READ_API_TOKEN as that password)."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_clickhouse_data_source_takes_its_address_and_credentials_from_the_environment() -> None:
    config = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text())
    (source,) = [d for d in config["datasources"] if d["type"] == "grafana-clickhouse-datasource"]
    data = source["jsonData"]
    assert data["protocol"] == "http"  # the protocol of both a server and the embedded interface
    assert (data["host"], data["port"], data["username"]) == ("$CLICKHOUSE_HOST", "$CLICKHOUSE_PORT", "grafana")
    assert source["secureJsonData"]["password"] == "$__file{/run/secrets/grafana_clickhouse_password}"
    assert data["defaultDatabase"] == "whereby"

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    env = compose["services"]["grafana"]["environment"]
    assert env["CLICKHOUSE_HOST"] == "${GRAFANA_CLICKHOUSE_HOST:-clickhouse}"
    assert env["CLICKHOUSE_PORT"] == "${GRAFANA_CLICKHOUSE_PORT:-8123}"
    assert "grafana_clickhouse_password" in compose["services"]["grafana"]["secrets"]
