"""Settings for several instances and a replicated cluster: what is refused at start, in one line,
and what reaches the topic specs."""

from __future__ import annotations

import pytest

from pipeline import kafka
from pipeline.settings import ConfigError, Settings


def config_error(**env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_several_sinks_are_refused_on_the_embedded_engine() -> None:
    message = config_error(SINK_INSTANCES="2", CLICKHOUSE_URL="chdb:///tmp/store")
    assert message.startswith("SINK_INSTANCES=2 needs a ClickHouse server")
    assert "CLICKHOUSE_URL=http(s)://" in message


def test_several_sinks_need_the_default_embedded_url_changed_too() -> None:
    assert "SINK_INSTANCES=3" in config_error(SINK_INSTANCES="3")  # the default URL is chdb://


@pytest.mark.parametrize("url", ["http://clickhouse:8123", "https://ch.example.com:8443"])
def test_several_sinks_are_allowed_with_a_server(url: str) -> None:
    assert Settings.from_env({"SINK_INSTANCES": "3", "CLICKHOUSE_URL": url}).sink_instances == 3


def test_one_sink_is_fine_on_the_embedded_engine() -> None:
    assert Settings.from_env({"SINK_INSTANCES": "1"}).sink_instances == 1


@pytest.mark.parametrize("name", ["INGEST_WORKERS", "ENRICH_INSTANCES", "SINK_INSTANCES"])
@pytest.mark.parametrize("value", ["0", "-1", "two", "65"])
def test_instance_counts_are_bounded(name: str, value: str) -> None:
    assert name in config_error(**{name: value, "CLICKHOUSE_URL": "http://ch:8123"})


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    message = config_error(KAFKA_REPLICATION_FACTOR="1", KAFKA_MIN_INSYNC_REPLICAS="2")
    assert "KAFKA_MIN_INSYNC_REPLICAS=2 is above KAFKA_REPLICATION_FACTOR=1" in message


def test_min_insync_reaches_every_contract_topic() -> None:
    s = Settings.from_env({"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2"})
    specs = kafka.topic_specs(s)
    assert len(specs) == 5  # raw, enriched, dimensions, dead letters, reconciliation
    for spec in specs:
        assert spec.replication_factor == 3
        assert spec.topic_configs["min.insync.replicas"] == "2", spec.name


def test_unset_min_insync_leaves_the_broker_default() -> None:
    """Writing min.insync.replicas=1 on a production cluster would silently weaken its own default."""
    for spec in kafka.topic_specs(Settings.from_env({"KAFKA_REPLICATION_FACTOR": "3"})):
        assert "min.insync.replicas" not in spec.topic_configs
