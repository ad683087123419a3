"""Sink's subcommands: `sink` (run the stage), `schema` (apply and upgrade the ClickHouse schema),
`report` and `serve-api`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pipeline.cli import load_settings, run_service
from pipeline.settings import SinkSettings
from sink import store
from sink.derive import Deriver, enqueue_all
from sink.read import readservice, report
from sink.service import SinkService


def _schema(args: argparse.Namespace) -> int:
    """`schema [upgrade]`: apply the migrations, then derive every room left underived (after an upgrade
    from a release without derived rows: all of them), with progress. `schema rebuild` re-derives every
    room from the stored events (e.g. after the deriver was down longer than room_changes keeps notes)."""
    settings = load_settings()
    db = settings.clickhouse_database
    client = store.connect(settings.clickhouse_url, settings.clickhouse_access)
    derive_client = store.connect(settings.clickhouse_url, settings.clickhouse_access)
    try:
        applied = store.migrate(client, db, settings.clickhouse_cluster)
        print(f"schema up to date in {db}" + (f" (applied {', '.join(applied)})" if applied else ""))
        if args.action == "rebuild":
            rooms = enqueue_all(client, db)
            print(f"queued {rooms:,} rooms to be derived again from their stored events")
        deriver = Deriver(derive_client, db)
        deriver.load()
        started = time.monotonic()

        # On a terminal one line counts up; elsewhere (an init container's log, a CI job) a line every 5 s,
        # since a log collector shows nothing of a line until its newline.
        tty = sys.stderr.isatty()
        last = [started]

        def progress(done: int, total: int) -> None:
            if tty:
                print(f"\rderiving connections: {done:,}/{total:,} rooms", end="", file=sys.stderr, flush=True)
            elif time.monotonic() - last[0] >= 5 or done == total:
                last[0] = time.monotonic()
                print(f"deriving connections: {done:,}/{total:,} rooms", file=sys.stderr, flush=True)

        outcome = deriver.drain(progress)
        if outcome.rooms:
            if tty:
                print(file=sys.stderr)
            print(
                f"derived {outcome.rooms:,} rooms from {outcome.events:,} events in {time.monotonic() - started:.1f}s"
            )
    finally:
        derive_client.close()
        client.close()
    return 0


def register(sub: Any) -> None:
    """Add sink's subcommands to the `whereby-pipeline` parser."""
    run = sub.add_parser("sink", help="run the ClickHouse sink (SINK_HOST:SINK_PORT)")
    run.set_defaults(
        handler=lambda _: run_service(SinkService, lambda s: (s.sink_host, s.sink_port), settings_class=SinkSettings)
    )
    schema = sub.add_parser(
        "schema",
        help="apply the ClickHouse schema migrations and derive what they require (idempotent)",
        description="upgrade (the default): apply new migrations, then derive the connection and session rows "
        "of every room left underived, with progress; run it before starting a new release's sink (make run "
        "does). rebuild: derive every room again from its stored events.",
    )
    schema.add_argument("action", nargs="?", choices=("upgrade", "rebuild"), default="upgrade")
    schema.set_defaults(handler=_schema)
    report.register(sub)
    readservice.register(sub)
