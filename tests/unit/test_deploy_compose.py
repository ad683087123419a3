"""deploy/docker-compose.yml and deploy/Dockerfile, checked statically (no Docker engine needed):
the compose-spec schema, the wiring between services, and that the stages' environment is a
configuration the code accepts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import jsonschema
import pytest
import yaml

from tests.deployfiles import RenderError, compose_services
from tests.unit.test_deploy_start import make_up_env

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
def test_stages_are_built_here_and_configured(stage: str, tmp_path: Path) -> None:
    """The wiring of each stage. (That its environment starts the stage is tests/unit/test_deploy_start.py.)"""
    service = compose()["services"][stage]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert service["command"] == [stage]
    env = compose_services(COMPOSE, make_up_env(tmp_path))[stage].env
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
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    for package in ("pipeline", "ingest", "enrich", "sink", "reconcile"):  # the CLI imports every one
        assert f"COPY {package}/ {package}/" in text
        assert f"!{package}/" in ignore


def test_ports_are_published_on_loopback_only() -> None:
    """Nothing of the stack is reachable from the network by default (a proxy fronts ingest)."""
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            assert host_ip == "127.0.0.1", f"{name}: {port}"


def test_grafana_has_no_default_admin_password(tmp_path: Path) -> None:
    host = make_up_env(tmp_path)
    grafana = compose_services(COMPOSE, host)["grafana"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana.env
    assert grafana.files[grafana.env["GF_SECURITY_ADMIN_PASSWORD__FILE"]] == "compose-grafana-admin-password"
    del host["GRAFANA_ADMIN_PASSWORD_FILE"]
    with pytest.raises(RenderError, match=r"set GRAFANA_ADMIN_PASSWORD .* Grafana has no default admin password"):
        compose_services(COMPOSE, host)


def test_make_up_refuses_to_start_without_a_grafana_password(tmp_path: Path) -> None:
    """deploy/compose.sh says what to set, before it needs a Docker engine."""
    (tmp_path / "deploy").mkdir()
    shutil.copy(DEPLOY / "compose.sh", tmp_path / "deploy" / "compose.sh")
    run = ["bash", str(tmp_path / "deploy" / "compose.sh"), "up"]
    done = subprocess.run(run, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith("GRAFANA_ADMIN_PASSWORD is not set"), done.stderr
    assert not (tmp_path / ".data").exists()


def test_grafana_reads_clickhouse_as_a_read_only_user(tmp_path: Path) -> None:
    users = ElementTree.parse(DEPLOY / "clickhouse" / "users.d" / "grafana.xml").getroot()
    (user,) = next(users.iter("users"))
    profile = users.find(f"profiles/{user.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") == "1"
    # The data source sets max_execution_time on every query: allowed in read-only mode, bounded.
    constraint = profile.find("constraints/max_execution_time")
    assert constraint is not None and constraint.find("changeable_in_readonly") is not None
    assert [q.text for q in user.findall("grants/query")] == ["GRANT SELECT ON whereby.*"]

    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text())
    (clickhouse,) = [d for d in datasources["datasources"] if d["type"] == "grafana-clickhouse-datasource"]
    assert clickhouse["jsonData"]["username"] == user.tag

    # The server gets the user's password from its environment, Grafana from a mounted secret: the same value.
    services = compose_services(COMPOSE, make_up_env(tmp_path))
    password_variable = user.find("password").get("from_env")  # type: ignore[union-attr]
    server_side = services["clickhouse"].env[password_variable]
    source = re.fullmatch(r"\$__file\{(.+)\}", clickhouse["secureJsonData"]["password"])
    assert source is not None
    assert services["grafana"].files[source.group(1)] == server_side
    mounted = [v.split(":")[1] for v in compose()["services"]["clickhouse"]["volumes"]]
    assert "/etc/clickhouse-server/users.d/grafana.xml" in mounted
