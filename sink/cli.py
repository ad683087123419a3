"""Sink's subcommands: `sink` (run the stage), `schema` (apply the ClickHouse schema), `report` and `serve-api`."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.cli import load_settings, run_service
from sink import readservice, report, store
from sink.service import SinkService


def _schema(_: argparse.Namespace) -> int:
    settings = load_settings()
    client = store.connect(settings.clickhouse_url, settings.clickhouse_access)
    try:
        applied = store.migrate(client, settings.clickhouse_database)
    finally:
        client.close()
    print(
        f"schema up to date in {settings.clickhouse_database}" + (f" (applied {', '.join(applied)})" if applied else "")
    )
    return 0


def register(sub: Any) -> None:
    """Add sink's subcommands to the `whereby-pipeline` parser."""
    run = sub.add_parser("sink", help="run the ClickHouse sink (SINK_HOST:SINK_PORT)")
    run.set_defaults(handler=lambda _: run_service(SinkService, lambda s: (s.sink_host, s.sink_port)))
    schema = sub.add_parser("schema", help="apply the ClickHouse schema migrations (idempotent)")
    schema.set_defaults(handler=_schema)
    report.register(sub)
    readservice.register(sub)
