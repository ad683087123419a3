"""Settings per stage: each stage reads and validates only its own variables (and the common ones), so a
bad value for one stage never stops another; errors stay one line naming the variable, and
`config check --stage NAME` reads exactly what the stage reads."""

from __future__ import annotations

import pytest

from pipeline import checks
from pipeline.settings import (
    CommonSettings,
    ConfigError,
    EnrichSettings,
    IngestSettings,
    Settings,
    SinkSettings,
)

SECRET = {"WHEREBY_WEBHOOK_SECRET": "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"}

# A variable only one stage reads, with a bad value: (variable, bad value, the only class that refuses it).
OWN = [
    pytest.param("WEBHOOK_TOLERANCE_S", "99999", IngestSettings, id="ingest-tolerance"),
    pytest.param("PRODUCE_TIMEOUT_S", "soon", IngestSettings, id="ingest-produce-timeout"),
    pytest.param("USER_ID_SOURCE", "nonsense:", EnrichSettings, id="enrich-user-id-source"),
    pytest.param("STORE_DISPLAY_NAMES", "maybe", EnrichSettings, id="enrich-display-names"),
    pytest.param("SINK_BATCH_ROWS", "many", SinkSettings, id="sink-batch-rows"),
    pytest.param("CLICKHOUSE_URL", "ftp://x", SinkSettings, id="sink-clickhouse-url"),
    pytest.param("SQL_PORT", "70000", SinkSettings, id="sink-sql-port"),
]
STAGES = {IngestSettings: "ingest", EnrichSettings: "enrich", SinkSettings: "sink"}


@pytest.mark.parametrize(("variable", "value", "owner"), OWN)
def test_only_the_stage_that_uses_a_variable_refuses_a_bad_value(
    variable: str, value: str, owner: type[CommonSettings]
) -> None:
    env = {**SECRET, variable: value}
    for klass, stage in STAGES.items():
        if klass is owner:
            with pytest.raises(ConfigError) as caught:
                klass.from_env(env)
            assert variable in str(caught.value) and "\n" not in str(caught.value)
            with pytest.raises(ConfigError, match=variable):
                checks.run(stage, env)  # `config check --stage` reads the same
        else:
            assert isinstance(klass.from_env(env), klass)
            checks.run(stage, env)
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)  # the tools that span stages read everything


@pytest.mark.parametrize("klass", [IngestSettings, EnrichSettings, SinkSettings, Settings])
def test_every_stage_refuses_a_bad_common_value(klass: type[CommonSettings]) -> None:
    with pytest.raises(ConfigError, match=r"^KAFKA_TOPIC_PARTITIONS must be a whole number"):
        klass.from_env({"KAFKA_TOPIC_PARTITIONS": "six"})


def test_the_checks_read_their_stage_s_own_class() -> None:
    found = {stage: checks.settings_class(check) for stage, check in checks.available().items()}
    assert found == {"ingest": IngestSettings, "enrich": EnrichSettings, "sink": SinkSettings}


def test_settings_is_every_stage_s_settings() -> None:
    settings = Settings.from_env(SECRET)
    assert isinstance(settings, IngestSettings | EnrichSettings | SinkSettings)
    assert IngestSettings.from_env(SECRET).webhook_secrets == settings.webhook_secrets
    assert SinkSettings.from_env({}).sink_port == settings.sink_port == 8082
