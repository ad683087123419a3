"""deploy/k8s: every manifest against its schema (built-in kinds: the schemas shipped with the
kubernetes-validate package, strict; KEDA: deploy/schemas), and the operational contract: probes,
drain, resources, disruption budgets, autoscaling bounded by partitions, secrets that exist."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline import checks
from pipeline.cli import build_parser
from pipeline.settings import Settings
from sink import cli as sink_cli
from tests.deployfiles import documented_secrets, kubernetes_containers, kustomize_resources
from tests.unit.test_deploy_compose import documented_variables

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest version still supported by the major cloud providers
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
}
STAGES = ("ingest", "enrich", "sink")


@cache
def documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, document) for every resource in deploy/k8s (the kustomization excluded)."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return tuple(found)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


def config() -> dict[str, str]:
    data: dict[str, str] = of_kind("ConfigMap")["whereby-config"]["data"]
    return data


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_every_manifest_matches_its_schema() -> None:
    for name, doc in documents():
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if custom:
            schema = json.loads((DEPLOY / "schemas" / custom).read_text())
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
            assert not errors, f"{where}: {[e.message for e in errors]}"
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no schema for {doc['apiVersion']} {doc['kind']}; add one to deploy/schemas")


def test_the_validator_rejects_a_typo() -> None:
    """Guard against a validator that accepts anything (e.g. a non-strict schema)."""
    deployment = json.loads(json.dumps(of_kind("Deployment")["whereby-sink"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("stage", STAGES)
def test_deployment_probes_drain_and_resources(stage: str) -> None:
    deployment = of_kind("Deployment")[f"whereby-{stage}"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [stage]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    # The sleep, then SHUTDOWN_TIMEOUT_S and a margin: tests/unit/test_deploy_grace.py.
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_a_service_and_a_disruption_budget(stage: str) -> None:
    labels = of_kind("Deployment")[f"whereby-{stage}"]["spec"]["template"]["metadata"]["labels"]
    for kind, path in (("Service", ("spec", "selector")), ("PodDisruptionBudget", ("spec", "selector", "matchLabels"))):
        selector = of_kind(kind)[f"whereby-{stage}"]
        for key in path:
            selector = selector[key]
        assert selector.items() <= labels.items(), f"{kind} whereby-{stage} selects no pod"


def test_autoscaling_cpu_for_ingest_lag_for_consumers_bounded_by_partitions() -> None:
    hpa = of_kind("HorizontalPodAutoscaler")["whereby-ingest"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    partitions = int(config()["KAFKA_TOPIC_PARTITIONS"])
    settings = Settings.from_env({})
    expected = {
        "whereby-enrich": (settings.enrich_group, settings.topic_raw),
        "whereby-sink": (settings.sink_group, settings.topic_enriched),
    }
    scaled = of_kind("ScaledObject")
    assert set(scaled) == set(expected)
    for name, (group, topic) in expected.items():
        spec = scaled[name]["spec"]
        assert spec["scaleTargetRef"]["name"] in of_kind("Deployment")
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert (trigger["metadata"]["consumerGroup"], trigger["metadata"]["topic"]) == (group, topic)
        assert trigger["metadata"]["bootstrapServers"] == config()["KAFKA_BOOTSTRAP_SERVERS"]


def test_no_secret_is_applied_by_the_kustomization() -> None:
    """A placeholder Secret in `kubectl apply -k` would overwrite the real one: they are created by hand."""
    kinds = {doc["kind"] for _, doc in kustomize_resources(K8S)}
    assert "Secret" not in kinds
    assert set(documented_secrets(K8S / "README.md")) >= {"whereby-webhook", "whereby-read-api", "whereby-clickhouse"}


def test_referenced_secrets_exist_with_their_keys() -> None:
    secrets = {name: set(keys) for name, keys in documented_secrets(K8S / "README.md").items()}
    for name, deployment in of_kind("Deployment").items():
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                ref = volume["secret"]
                assert ref["secretName"] in secrets, f"{name}: {ref['secretName']}"
                assert {i["key"] for i in ref.get("items", [])} <= secrets[ref["secretName"]], name
    for ref in of_kind("TriggerAuthentication")["whereby-kafka"]["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]]


def test_each_container_environment_is_documented() -> None:
    """Every variable a pod sets is in the README's configuration table. (That the environment starts
    its stage is tests/unit/test_deploy_start.py.)"""
    for rendered in kubernetes_containers(K8S, K8S / "README.md"):
        assert set(rendered.env) <= documented_variables(), (rendered.where, set(rendered.env) - documented_variables())


def test_the_sink_store_is_upgraded_by_an_init_container_with_the_sinks_config(tmp_path: Path) -> None:
    """Issue 19: an upgrade's rebuild can outlast any startupProbe, so it runs before the sink, in an init
    container (no probes) running `whereby-pipeline schema upgrade` against the same store, as the sink."""
    pod = of_kind("Deployment")["whereby-sink"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (sink,) = pod["containers"]
    args = build_parser().parse_args(init["args"])
    assert args.handler is sink_cli._schema and args.action == "upgrade"
    # Same image, settings, secrets, limits and hardening: it opens the sink's store as the sink would.
    for key in ("image", "envFrom", "env", "volumeMounts", "resources", "securityContext"):
        assert init.get(key) == sink.get(key), key
    assert not {"startupProbe", "livenessProbe", "readinessProbe"} & set(init)
    assert "restartPolicy" not in init  # a sidecar would run alongside the sink instead of before it
    # And that environment, rendered as the kubelet would, passes the sink's own start check.
    containers = kubernetes_containers(K8S, K8S / "README.md")
    (rendered,) = [r for r in containers if r.where.endswith("Deployment/whereby-sink container schema-upgrade")]
    settings = checks.run("sink", rendered.materialise(tmp_path))
    assert settings.clickhouse_url == config()["CLICKHOUSE_URL"]
    assert settings.clickhouse_access.username == "whereby_sink"
