"""deploy/docker-compose.yml and deploy/Dockerfile, checked statically (no Docker engine needed):
the compose-spec schema, the wiring between services, and that the stages' environment is a
configuration the code accepts."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deployfiles import compose_services
from tests.unit.test_deploy_start import MAKE_UP_ENV

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
STAGES = {"ingest": 8080, "enrich": 8081, "sink": 8082}


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def documented_variables() -> set[str]:
    """Every variable named in the README's configuration table."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


def test_compose_matches_the_compose_spec() -> None:
    # The compose-spec JSON schema as shipped (and kept current) by the check-jsonschema package.
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema = json.loads(text)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_stack_has_every_part() -> None:
    services = compose()["services"]
    assert {"kafka", "clickhouse", "prometheus", "grafana", *STAGES} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_are_built_here_and_configured(stage: str) -> None:
    """The wiring of each stage. (That its environment starts the stage is tests/unit/test_deploy_start.py.)"""
    service = compose()["services"][stage]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert service["command"] == [stage]
    env = compose_services(COMPOSE, MAKE_UP_ENV)[stage].env
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    if stage == "sink":
        assert env["CLICKHOUSE_URL"] == "http://clickhouse:8123"
        assert service["depends_on"]["clickhouse"] == {"condition": "service_healthy"}
    assert env[f"{stage.upper()}_HOST"] == "0.0.0.0"  # reachable by Prometheus from its container
    assert int(env[f"{stage.upper()}_PORT"]) == STAGES[stage]
    assert set(env) <= documented_variables(), set(env) - documented_variables()


def test_mounted_files_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"


def test_prometheus_scrapes_every_stage() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs == {f"whereby-{stage}": [f"{stage}:{port}"] for stage, port in STAGES.items()}


def test_dockerfile_builds_the_package_and_runs_the_cli() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert 'ENTRYPOINT ["whereby-pipeline"]' in text
    assert re.search(r"^USER \d+$", text, re.M)  # not root
    for package in ("pipeline", "ingest", "enrich", "sink"):
        assert f"COPY {package}/ {package}/" in text
