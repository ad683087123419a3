"""One Kafka principal per stage, with exactly the ACLs the stage needs, as documented in
deploy/k8s/README.md (the `kafka-acls.sh` commands are read from there), and each stage's pod logging
in as its own principal (its mounted SASL user name, rendered by tests/deployfiles.py)."""

from __future__ import annotations

import itertools
import shlex
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest

from pipeline import contract
from pipeline.settings import Settings
from tests.deployfiles import documented_secrets, kubernetes_containers

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
README = K8S / "README.md"
DEFAULTS = Settings.from_env({})
RAW, ENRICHED, DIMENSIONS, DEADLETTER = (
    contract.TOPIC_RAW,
    contract.TOPIC_ENRICHED,
    contract.TOPIC_DIMENSIONS,
    contract.TOPIC_DEADLETTER,
)
RECONCILIATION = contract.TOPIC_RECONCILIATION
CONTRACT_TOPICS = {RAW, ENRICHED, DIMENSIONS, DEADLETTER, RECONCILIATION}


class Grant(NamedTuple):
    operation: str
    kind: str  # topic, group, cluster
    name: str
    pattern: str  # literal, prefixed


def documented_acls() -> dict[str, set[Grant]]:
    """Principal -> its grants, from every `kafka-acls.sh ... --add` command in the k8s README."""
    grants: dict[str, set[Grant]] = defaultdict(set)
    for line in README.read_text().replace("\\\n", " ").splitlines():
        if not line.lstrip().startswith("kafka-acls.sh"):
            continue
        words = shlex.split(line, comments=True)
        assert "--add" in words, line
        assert not {"--producer", "--consumer", "--deny-principal"} & set(words), f"explicit operations only: {line}"
        values: dict[str, list[str]] = defaultdict(list)
        for flag, value in itertools.pairwise(words):
            if flag.startswith("--"):
                values[flag].append(value)
        pattern = (values["--resource-pattern-type"] or ["literal"])[0]
        resources = [("topic", t) for t in values["--topic"]] + [("group", g) for g in values["--group"]]
        if "--cluster" in words:
            resources.append(("cluster", "kafka-cluster"))
        for principal in values["--allow-principal"]:
            for operation in values["--operation"]:
                grants[principal.removeprefix("User:")] |= {Grant(operation, k, n, pattern) for k, n in resources}
    return dict(grants)


def beyond_describe(principal: str) -> set[tuple[str, str, str]]:
    return {(g.operation, g.kind, g.name) for g in documented_acls()[principal] if g.operation != "Describe"}


EXPECTED = {
    "whereby-ingest": {("Write", "topic", RAW), ("Write", "topic", DEADLETTER)},
    "whereby-enrich": {
        ("Read", "topic", RAW),
        ("Read", "topic", DIMENSIONS),
        ("Write", "topic", ENRICHED),
        ("Write", "topic", DEADLETTER),
        ("Read", "group", DEFAULTS.enrich_group),
    },
    "whereby-sink": {
        ("Read", "topic", ENRICHED),
        ("Read", "topic", DIMENSIONS),
        ("Read", "topic", RAW),  # the raw archive
        ("Read", "topic", RECONCILIATION),
        ("Write", "topic", DEADLETTER),
        ("Read", "group", DEFAULTS.sink_group),
    },
    "whereby-reconcile": {("Read", "topic", DIMENSIONS), ("Write", "topic", RAW), ("Write", "topic", RECONCILIATION)},
    "whereby-keda": set(),
}


@pytest.mark.parametrize("principal", sorted(EXPECTED))
def test_each_principal_may_do_exactly_what_its_stage_does(principal: str) -> None:
    assert beyond_describe(principal) == EXPECTED[principal]
    for grant in documented_acls()[principal]:
        assert grant.pattern == "literal" and grant.kind != "cluster", grant
        if grant.operation == "Describe":
            assert (grant.kind == "topic" and grant.name in CONTRACT_TOPICS) or (
                principal == "whereby-keda" and grant.kind == "group"
            ), grant


def test_ingest_writes_only_the_raw_and_dead_letter_topics() -> None:
    written = {g.name for g in documented_acls()["whereby-ingest"] if g.operation in ("Write", "All")}
    assert written == {RAW, DEADLETTER}


def test_the_admin_principal_is_separate_and_limited_to_the_pipeline() -> None:
    admin = documented_acls()["whereby-admin"]
    assert admin == {Grant("All", "topic", "whereby.", "prefixed"), Grant("All", "group", "whereby-", "prefixed")}
    assert all(name.startswith("whereby.") for name in CONTRACT_TOPICS)


def test_each_stage_pod_logs_in_as_its_own_principal(tmp_path: Path) -> None:
    stages = {"ingest", "enrich", "sink", "reconcile"}
    seen = set()
    for rendered in kubernetes_containers(K8S, README):
        stage = rendered.command[0] if rendered.command else ""
        if stage in stages:
            username = rendered.files[rendered.env["KAFKA_SASL_USERNAME_FILE"]]
            assert username == f"whereby-{stage}", rendered.where
            seen.add(stage)
    assert seen == stages
    keda = documented_secrets(README)["whereby-kafka-keda"]
    assert keda["username"] == "whereby-keda"
