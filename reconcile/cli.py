"""`whereby-pipeline reconcile`: compare our minutes with Whereby's Insights, optionally backfill.

    whereby-pipeline reconcile --from 2026-01-01 --to 2026-01-02 [--backfill] [--format table|json]
    whereby-pipeline reconcile --every 1h --lag 30m [--backfill]          # long-running
    whereby-pipeline reconcile --every 1h --lag 30m --once [--backfill]   # the newest due period (CronJob)

Exit codes: 0 when it ran (whatever it found); 1 when it could not (bad key, API unreachable after
retries, read API or Kafka failing), with one line on stderr; 2 for a bad option or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pipeline import contract, kafka, logs
from pipeline.cli import load_settings, run_service
from pipeline.settings import Settings
from reconcile import results
from reconcile.job import ReconcileFailed, execute
from reconcile.ourapi import DEFAULT_API
from reconcile.report import Report
from reconcile.run import Options
from reconcile.schedule import latest_period
from reconcile.service import ScheduledReconcile
from reconcile.times import parse_duration, parse_instant

PROG = "whereby-pipeline reconcile"


class UsageError(Exception):
    """A bad combination of options (exit code 2)."""


def options_from(args: argparse.Namespace, now_ms: int) -> tuple[Options, tuple[int, int] | None]:
    """The run's options, and (every, lag) in seconds for the long-running mode (None for one run)."""
    try:
        zero = args.verify_timeout.strip() in ("0", "0s")
        verify = 0 if zero else parse_duration("--verify-timeout", args.verify_timeout)
        if args.every:
            if args.from_ or args.to:
                raise UsageError("give either --from/--to or --every, not both")
            every = parse_duration("--every", args.every)
            lag = parse_duration("--lag", args.lag or "30m")
            from_ms, to_ms = latest_period(now_ms, every, lag)
            schedule = None if args.once else (every, lag)
        else:
            if args.once or args.lag:
                raise UsageError("--once and --lag go with --every")
            if not args.from_ or not args.to:
                raise UsageError("give --from and --to (ISO dates or date-times, UTC), or --every")
            from_ms, to_ms = parse_instant("--from", args.from_), parse_instant("--to", args.to)
            if from_ms >= to_ms:
                raise UsageError("--from must be before --to")
            schedule = None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options = Options(
        from_ms, to_ms, backfill=args.backfill, verify_timeout_s=verify, unresolved=not args.no_unresolved
    )
    return options, schedule


async def _once(settings: Settings, options: Options, read_api: str) -> Report:
    await kafka.prepare(settings)
    return await execute(settings, options, read_api=read_api)


def handle(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    try:
        options, schedule = options_from(args, contract.now_ms())
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    settings = load_settings()
    settings.whereby_api.require_key()  # ConfigError: one line, exit code 2 (pipeline.cli)
    if schedule is not None:
        every, lag = schedule
        return run_service(
            lambda s: ScheduledReconcile(
                s,
                every_s=every,
                lag_s=lag,
                backfill=options.backfill,
                read_api=args.api,
                verify_timeout_s=options.verify_timeout_s,
                unresolved=options.unresolved,
            ),
            lambda s: (s.reconcile_host, s.reconcile_port),
            settings_class=Settings,
        )
    logs.configure("reconcile")
    try:
        report = asyncio.run(_once(settings, options, args.api))
    except ReconcileFailed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(results.render_json(report) if args.format == "json" else results.render_table(report))
    return 0


def register(sub: Any) -> None:
    """Add `reconcile` to the `whereby-pipeline` parser."""
    p = sub.add_parser(
        "reconcile",
        help="compare our minutes with Whereby's Insights API per session; --backfill repairs lost webhooks",
        description="For every room session that started in [--from, --to), compare our participant, recorder "
        "and streamer minutes with Whereby's Insights and report match, mismatch or missing.",
    )
    p.add_argument("--from", dest="from_", default="", help="ISO date or date-time (UTC), inclusive")
    p.add_argument("--to", default="", help="ISO date or date-time (UTC), exclusive")
    p.add_argument("--backfill", action="store_true", help="synthesize the lost join/leave events onto the raw topic")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (table)")
    p.add_argument("--every", default="", help="long-running: reconcile each period of this length (e.g. 1h)")
    p.add_argument("--lag", default="", help="with --every: wait this long after a period ends (default 30m)")
    p.add_argument("--once", action="store_true", help="with --every: only the newest due period, then exit")
    p.add_argument("--api", default=DEFAULT_API, help=f"our read API base URL (default {DEFAULT_API})")
    p.add_argument(
        "--verify-timeout",
        default="60s",
        help="after a backfill, wait up to this long for the repaired sessions to match (0: do not wait)",
    )
    p.add_argument(
        "--no-unresolved",
        action="store_true",
        help="skip the listing of all rooms that finds rooms no registered prefix matches (saves API points)",
    )
    p.set_defaults(handler=handle)
