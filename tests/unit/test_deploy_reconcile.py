"""deploy/k8s/reconcile-cronjob.yaml: the CronJob runs a command the CLI accepts, on a schedule that fits
its lag and period, with settings that are documented and valid and secrets that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.cli import build_parser
from pipeline.settings import Settings
from reconcile.cli import options_from
from tests.deployfiles import documented_secrets
from tests.unit.test_deploy_compose import documented_variables

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
JAN1_1035 = 1_767_263_700_000  # 2026-01-01T10:35:00Z


def docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((K8S / "reconcile-cronjob.yaml").read_text()) if d}


def container() -> dict[str, Any]:
    pod = docs()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    return only  # type: ignore[no-any-return]


def test_the_job_reconciles_the_newest_due_hour_with_backfill() -> None:
    args = build_parser().parse_args(container()["args"])
    options, schedule = options_from(args, JAN1_1035)
    assert schedule is None  # --once: one period, then the job ends
    assert options.backfill
    # At 10:35 the hour 09:00-10:00 ended more than the 30-minute lag ago.
    assert (options.from_ms, options.to_ms) == (JAN1_1035 - 95 * 60_000, JAN1_1035 - 35 * 60_000)


def test_schedule_runs_after_the_lag_never_twice_at_once_and_ends_before_the_next() -> None:
    spec = docs()["CronJob"]["spec"]
    minute, hour, *_ = spec["schedule"].split()
    assert hour == "*" and int(minute) >= 30  # --every 1h --lag 30m
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 3600


def test_settings_are_documented_accepted_and_secrets_exist(tmp_path: Path) -> None:
    config = yaml.safe_load((K8S / "config.yaml").read_text())["data"]
    env = dict(config)
    for item in container()["env"]:
        env[item["name"]] = item.get("value", "from-a-reference-0123456789")
    assert set(env) <= documented_variables(), set(env) - documented_variables()
    mounts = {m["mountPath"] for m in container()["volumeMounts"]}
    for name, value in list(env.items()):
        if name.endswith("_FILE"):
            assert str(Path(value).parent) in mounts, f"{name}={value} is not on a mounted volume"
            (tmp_path / name).write_text("from-a-secret\n")
            env[name] = str(tmp_path / name)
    assert Settings.from_env(env).whereby_api.require_key() == "from-a-secret"
    # Every secret it mounts is one the deploy README tells the operator to create, with those keys;
    # no Secret (placeholder or not) ships in the manifests.
    documented = documented_secrets(K8S / "README.md")
    assert "Secret" not in docs()
    volumes = docs()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
    for volume in volumes:
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            assert name in documented, name
            assert {i["key"] for i in volume["secret"]["items"]} <= set(documented[name]), name
    assert not [i for i in container()["env"] if "secretKeyRef" in i.get("valueFrom", {})]
