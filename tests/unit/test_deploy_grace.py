"""Grace periods are derived from the shutdown budget: every process our deploy files start gets, before the
SIGKILL, at least the SHUTDOWN_TIMEOUT_S it will use (read from that file's own environment, as the
process would read it) plus GRACE_MARGIN_S, plus the preStop sleep in Kubernetes (the grace period
counts from the preStop hook, SIGTERM comes after it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.settings import GRACE_MARGIN_S, Settings
from tests.deployfiles import Cluster, documented_secrets, kustomize_resources, workloads
from tests.unit.test_deploy_start import COMPOSE, K8S, compose_names, compose_stages, ours

KUBERNETES_DEFAULT_GRACE_S = 30  # terminationGracePeriodSeconds when a pod spec does not set it
COMPOSE_DEFAULT_GRACE_S = 10  # stop_grace_period when a service does not set it


def duration_s(text: str) -> float:
    """A compose duration (`30s`, `1m30s`, `1h`, `500ms`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("service", compose_names())
def test_compose_grace_period_covers_the_shutdown_budget(service: str, tmp_path: Path) -> None:
    rendered = compose_stages(tmp_path)[service]
    budget = Settings.from_env(rendered.materialise(tmp_path)).shutdown_timeout_s
    spec = yaml.safe_load(COMPOSE.read_text())["services"][service]  # anchors and `<<` merged by the loader
    grace = duration_s(str(spec["stop_grace_period"])) if "stop_grace_period" in spec else COMPOSE_DEFAULT_GRACE_S
    assert grace >= budget + GRACE_MARGIN_S, f"{service}: stop_grace_period {grace:g}s < {budget:g}s + margin"


def k8s_pods() -> dict[str, tuple[Cluster, dict[str, object]]]:
    resources = kustomize_resources(K8S)
    cluster = Cluster(resources, documented_secrets(K8S / "README.md"))
    return {where: (cluster, pod) for where, pod in workloads(resources)}


@pytest.mark.parametrize("where", sorted(k8s_pods()))
def test_kubernetes_grace_period_covers_prestop_and_the_shutdown_budget(where: str, tmp_path: Path) -> None:
    cluster, pod = k8s_pods()[where]
    grace = float(pod.get("terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE_S))  # type: ignore[arg-type]
    checked = 0
    for container in pod["containers"]:  # type: ignore[attr-defined]
        rendered = cluster.container(where, pod, container)
        if not ours(rendered):
            continue
        budget = Settings.from_env(rendered.materialise(tmp_path)).shutdown_timeout_s
        command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop = float(command[1]) if command[:1] == ["sleep"] else 0.0
        assert grace >= pre_stop + budget + GRACE_MARGIN_S, (
            f"{rendered.where}: terminationGracePeriodSeconds {grace:g} < preStop {pre_stop:g}s + "
            f"SHUTDOWN_TIMEOUT_S {budget:g}s + margin {GRACE_MARGIN_S:g}s"
        )
        checked += 1
    assert checked, f"{where}: no container of ours"


def test_the_compose_duration_parser() -> None:
    assert duration_s("30s") == 30
    assert duration_s("1m30s") == 90
    with pytest.raises(ValueError):
        duration_s("30")
