"""Deploy files that start: every process deploy/docker-compose.yml and deploy/k8s start from our image
gets an environment (variables, env files, ConfigMaps, mounted secrets) that passes the same
configuration check the stage runs at start (`whereby-pipeline config check --stage NAME`).

No engine or cluster is needed: tests/deployfiles.py renders the environment as compose and the kubelet
would; the secrets are those `make up` provides (compose) and those the k8s README's `kubectl create
secret` commands create."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import checks
from pipeline.settings import Settings
from tests.deployfiles import (
    Rendered,
    RenderError,
    compose_services,
    interpolate,
    kubernetes_containers,
)

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
IMAGE = "whereby-pipeline"  # the image deploy/Dockerfile builds (compose tag whereby-pipeline:dev)


def make_up_env(directory: Path) -> dict[str, str]:
    """What `make up` (deploy/compose.sh) puts in the environment of `docker compose`."""
    grafana = directory / "grafana_admin_password"
    grafana.write_text("compose-grafana-admin-password")
    return {
        "WHEREBY_WEBHOOK_SECRET": "compose-webhook-secret-0123456789abcdef",
        "CLICKHOUSE_PASSWORD": "compose-clickhouse-password-0123456789",
        "READ_API_TOKEN": "compose-read-api-token-0123456789abcdef",
        "GRAFANA_CLICKHOUSE_PASSWORD": "compose-grafana-clickhouse-password",
        "GRAFANA_ADMIN_PASSWORD_FILE": str(grafana),
    }


def ours(rendered: Rendered) -> bool:
    return rendered.image.split(":")[0].rsplit("/", 1)[-1] == IMAGE


def start_check(rendered: Rendered, tmp_path: Path) -> None:
    """What the process would check at start: its stage's check, or settings parsing for other commands."""
    env = rendered.materialise(tmp_path)
    stage = rendered.command[0] if rendered.command else ""
    if stage in checks.available():
        checks.run(stage, env)
    else:
        Settings.from_env(env)


def compose_stages(directory: Path) -> dict[str, Rendered]:
    return {name: r for name, r in compose_services(COMPOSE, make_up_env(directory)).items() if ours(r)}


def compose_names() -> list[str]:
    """Our services, from the file as written (for test ids; rendering needs a temporary directory)."""
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return sorted(name for name, s in services.items() if s.get("image", "").split(":")[0] == IMAGE)


def k8s_containers() -> dict[str, Rendered]:
    return {r.where: r for r in kubernetes_containers(K8S, K8S / "README.md") if ours(r)}


@pytest.mark.parametrize("service", compose_names())
def test_compose_service_passes_its_start_check(service: str, tmp_path: Path) -> None:
    start_check(compose_stages(tmp_path)[service], tmp_path)


@pytest.mark.parametrize("where", sorted(k8s_containers()))
def test_kubernetes_container_passes_its_start_check(where: str, tmp_path: Path) -> None:
    start_check(k8s_containers()[where], tmp_path)


def test_every_stage_is_deployed_both_ways(tmp_path: Path) -> None:
    stages = set(checks.available())
    assert set(compose_names()) == set(compose_stages(tmp_path))
    assert {r.command[0] for r in compose_stages(tmp_path).values()} >= stages
    assert {r.command[0] for r in k8s_containers().values()} >= stages


# The renderer itself: a check that passes on anything would prove nothing.


def test_interpolation_forms() -> None:
    host = {"SET": "x", "EMPTY": ""}
    assert interpolate("$SET ${SET} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} ${SET:+alt} $$SET", host) == "x x d d  alt $SET"
    with pytest.raises(RenderError, match="required variable EMPTY is missing a value: say so"):
        interpolate("${EMPTY:?say so}", host)


def test_a_file_variable_pointing_at_nothing_mounted_is_refused(tmp_path: Path) -> None:
    rendered = Rendered("here", IMAGE, ["sink"], {"READ_API_TOKEN_FILE": "/run/secrets/read_api_token"})
    with pytest.raises(RenderError, match="READ_API_TOKEN_FILE=/run/secrets/read_api_token is not a mounted file"):
        rendered.materialise(tmp_path)


def test_a_compose_secret_needs_its_host_variable(tmp_path: Path) -> None:
    missing = make_up_env(tmp_path)
    del missing["WHEREBY_WEBHOOK_SECRET"]
    with pytest.raises(RenderError, match="needs WHEREBY_WEBHOOK_SECRET set on the host"):
        compose_services(COMPOSE, missing)
