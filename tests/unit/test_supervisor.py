"""The supervisor's pure parts: which processes it plans, with which ports and ids, and when it restarts."""

from __future__ import annotations

import pytest

from pipeline import supervisor
from pipeline.settings import ConfigError, Settings
from pipeline.supervisor import RestartPolicy, parse_stages, plan


def settings(**env: str) -> Settings:
    return Settings.from_env({"INGEST_PORT": "8080", "ENRICH_PORT": "8081", "SINK_PORT": "8082", **env})


def test_one_of_each_by_default_named_after_the_stage() -> None:
    instances = plan(settings(), base_id="host")
    assert [(i.stage, i.name) for i in instances] == [("sink", "sink"), ("enrich", "enrich"), ("ingest", "ingest")]
    assert [i.env["INSTANCE_ID"] for i in instances] == ["host-sink-0", "host-enrich-0", "host-ingest-0"]
    ingest = instances[-1]
    assert ingest.env["INSTANCE_PORT"] == "0"  # a lone worker needs no second port


def test_several_instances_get_distinct_ids_and_ports() -> None:
    s = settings(INGEST_WORKERS="3", ENRICH_INSTANCES="2", SINK_INSTANCES="2", CLICKHOUSE_URL="http://ch:8123")
    instances = plan(s, base_id="h")
    ids = [i.env["INSTANCE_ID"] for i in instances]
    assert len(ids) == 7 == len(set(ids))
    assert [i.env["SINK_PORT"] for i in instances if i.stage == "sink"] == ["8082", "8182"]
    assert [i.env["ENRICH_PORT"] for i in instances if i.stage == "enrich"] == ["8081", "8181"]
    workers = [i for i in instances if i.stage == "ingest"]
    # All share INGEST_PORT (not overridden); each also answers on its own port.
    assert all("INGEST_PORT" not in w.env for w in workers)
    assert [w.env["INSTANCE_PORT"] for w in workers] == ["8180", "8280", "8380"]
    ports = [int(v) for i in instances for k, v in i.env.items() if k.endswith("PORT")] + [8080]
    assert len(ports) == len(set(ports)), "no two processes may listen on one port by accident"
    assert [w.name for w in workers] == ["ingest-0", "ingest-1", "ingest-2"]


def test_port_zero_stays_zero() -> None:
    s = settings(ENRICH_PORT="0", ENRICH_INSTANCES="3")
    assert {i.env["ENRICH_PORT"] for i in plan(s, ["enrich"])} == {"0"}


def test_only_the_chosen_stages_in_start_order() -> None:
    assert parse_stages("ingest, sink") == ("sink", "ingest")
    assert [i.stage for i in plan(settings(INGEST_WORKERS="2"), parse_stages("ingest"))] == ["ingest", "ingest"]


@pytest.mark.parametrize("text", ["", "ingest,reconcile", ",", "all"])
def test_unknown_stages_are_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--stages takes"):
        parse_stages(text)


def test_a_configuration_error_is_never_restarted() -> None:
    assert RestartPolicy().after_exit("ingest", supervisor.CONFIG_ERROR_EXIT, now=0.0) is None


def test_crashes_are_restarted_with_growing_delay_until_they_loop() -> None:
    policy = RestartPolicy(limit=3, window_s=60, first_delay_s=1, max_delay_s=3)
    assert [policy.after_exit("enrich-1", -9, now=t) for t in (0, 1, 2)] == [1, 2, 3]
    assert policy.after_exit("enrich-1", 1, now=3) is None  # a fourth crash within a minute: stop
    assert policy.after_exit("enrich-0", -9, now=3) == 1  # counted per instance


def test_old_crashes_are_forgotten() -> None:
    policy = RestartPolicy(limit=2, window_s=10, first_delay_s=1)
    assert policy.after_exit("sink", -9, now=0) == 1
    assert policy.after_exit("sink", -9, now=5) == 2
    assert policy.after_exit("sink", -9, now=100) == 1
