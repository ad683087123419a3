"""The configuration the sink checks at start (also `whereby-pipeline config check --stage sink`)."""

from __future__ import annotations

from pipeline.settings import SinkSettings
from sink import store
from sink.read import readapi


def check(settings: SinkSettings) -> None:
    """Raise ConfigError (one line, says what to set) if the sink cannot start with `settings`.

    On top of settings parsing: the read API (served by the sink) and, on an embedded store, the SQL
    interface are not exposed beyond loopback without a token, and the database name can be put into
    the schema's statements.
    """
    readapi.check_access(settings.sink_host, settings.read_api_token)
    if settings.clickhouse_url.startswith("chdb://") and settings.sql_port:
        readapi.check_access(settings.sql_host, settings.read_api_token, host_variable="SQL_HOST")
    store.check_database(settings.clickhouse_database)
