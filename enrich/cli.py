"""Enrich's subcommands: `enrich` (run the stage), `dims load|list|delete` (manage customers and users),
`forget` (erase a person) and `replay` (re-enrich the raw topic with today's dimensions).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka.errors import KafkaError

from enrich.dimensions import Customer, DimensionTable, User
from enrich.dimfiles import CustomerFile, Problem, UserFile, check_against, parse_customers, parse_users
from enrich.dimtopic import publish, read_dimensions
from enrich.forget import forget
from enrich.replay import replay
from enrich.service import EnrichService
from pipeline import contract, kafka, times
from pipeline.cli import load_settings, run_async, run_service
from pipeline.settings import ConfigError, EnrichSettings, Settings

MAX_PROBLEMS_SHOWN = 200


def _one_shot(coro: Coroutine[Any, Any, int]) -> int:
    """Run an operator command: Kafka client chatter stays quiet and Kafka failures become one line."""
    # aiokafka logs transient errors (e.g. a leader moving right after topic creation) that it retries itself.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return run_async(coro)
    except KafkaError as exc:
        raise ConfigError(f"Kafka failed: {exc}; check KAFKA_BOOTSTRAP_SERVERS and the broker") from None


def _read_text(path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return raw.decode("utf-8-sig")  # spreadsheet exports often start with a byte-order mark
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _report(problems: list[Problem], out: TextIO) -> None:
    ordered = sorted(problems, key=lambda p: (p.source, p.line or 0))
    for problem in ordered[:MAX_PROBLEMS_SHOWN]:
        print(problem, file=out)
    if len(ordered) > MAX_PROBLEMS_SHOWN:
        print(f"... and {len(ordered) - MAX_PROBLEMS_SHOWN} more problems", file=out)


async def load_files(
    settings: Settings,
    customers_path: str | None,
    users_path: str | None,
    *,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Validate the files, check them against the topic and publish them; returns an exit code.

    All or nothing: if any line of any file is bad, every problem is reported and nothing is written.
    """
    customers: CustomerFile | None = None
    users: UserFile | None = None
    if customers_path:
        customers = parse_customers(_read_text(customers_path), customers_path)
    if users_path:
        users = parse_users(_read_text(users_path), users_path)
    problems = [*(customers.problems if customers else []), *(users.problems if users else [])]
    if not problems:
        await kafka.prepare(settings)
        table, _ = await read_dimensions(settings)
        problems = check_against(table, customers, users)
    if problems:
        _report(problems, err)
        print(f"nothing loaded: {len(problems)} problem(s)", file=err)
        return 1
    records: list[tuple[str, bytes | None]] = []
    if customers:
        records += [(c.key, orjson.dumps(c.to_doc())) for c in customers.customers.values()]
    if users:
        records += [(u.key, orjson.dumps(u.to_doc())) for u in users.users.values()]
    n_customers = len(customers.customers) if customers else 0
    n_prefixes = len(customers.prefix_lines) if customers else 0
    n_users = len(users.users) if users else 0
    what = f"{n_customers} customers ({n_prefixes} prefixes) and {n_users} users"
    if dry_run:
        print(f"valid: {what}; nothing written (--dry-run)", file=out)
        return 0
    await publish(settings, records)
    print(f"loaded {what} to {settings.topic_dimensions}; the enrich stage applies them live", file=out)
    return 0


def _print_table(table: DimensionTable, *, users: bool, out: TextIO) -> None:
    erased = f", {len(table.erasures)} erased people" if table.erasures else ""
    print(
        f"{len(table.customers)} customers, {len(table.prefixes)} prefixes, {len(table.users)} users{erased} "
        f"(dimension version {table.version}); user ids from {table.user_id_source_text} (USER_ID_SOURCE)",
        file=out,
    )
    rows = [("customer_id", "name", "room_name_prefixes")]
    rows += [(c.customer_id, c.name, " ".join(c.room_name_prefixes)) for c in sorted(table.customers.values(), key=_id)]
    if users:
        rows += [("", "", ""), ("external_id", "user_id", "customer_id")]
        rows += [(u.external_id, u.user_id, u.customer_id or "") for u in sorted(table.users.values(), key=_ext)]
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip(), file=out)


def _id(customer: Customer) -> str:
    return customer.customer_id


def _ext(user: User) -> str:
    return user.external_id


async def list_dimensions(settings: Settings, *, users: bool, jsonl: bool, out: TextIO = sys.stdout) -> int:
    """Print the customers (and users) currently on the dimensions topic."""
    await kafka.prepare(settings)
    table, rejected = await read_dimensions(settings)
    if jsonl:
        # One record per line, exactly as on the topic: `dims load` reads this back.
        for customer in sorted(table.customers.values(), key=_id):
            out.write(orjson.dumps(customer.to_doc()).decode() + "\n")
        if users:
            for user in sorted(table.users.values(), key=_ext):
                out.write(orjson.dumps(user.to_doc()).decode() + "\n")
        return 0
    _print_table(table, users=users, out=out)
    if rejected:
        print(f"warning: {rejected} invalid records on the topic were ignored", file=sys.stderr)
    return 0


async def delete_dimensions(
    settings: Settings,
    customer_ids: list[str],
    external_ids: list[str],
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Write tombstones for the given customers and users; unknown ids are an error and nothing is deleted."""
    if not customer_ids and not external_ids:
        raise ConfigError("name at least one --customer or --user to delete")
    await kafka.prepare(settings)
    table, _ = await read_dimensions(settings)
    unknown = [f"customer {c!r}" for c in customer_ids if c not in table.customers]
    unknown += [f"user {u!r}" for u in external_ids if u not in table.users]
    if unknown:
        for item in unknown:
            print(f"not on the dimensions topic: {item}", file=err)
        print("nothing deleted", file=err)
        return 1
    records: list[tuple[str, bytes | None]] = [(contract.DIM_CUSTOMER_PREFIX + c, None) for c in customer_ids]
    records += [(contract.DIM_USER_PREFIX + u, None) for u in external_ids]
    await publish(settings, records)
    print(f"deleted {len(customer_ids)} customers and {len(external_ids)} users", file=out)
    orphans = sum(1 for u in table.users.values() if u.customer_id in set(customer_ids))
    if orphans:
        print(f"note: {orphans} users still name a deleted customer", file=out)
    return 0


def parse_since(value: str) -> int:
    """`--from` as epoch milliseconds: an ISO-8601 date or date-time, UTC unless it carries an offset."""
    try:
        return times.instant_ms(value.strip(), assume_utc=True)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO-8601 time (e.g. 2026-01-01 or 2026-01-01T09:00:00Z)"
        ) from None


class ProgressBar:
    """A plain-text progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.out = out
        self.width = width
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        filled = int(share * self.width)
        line = (
            f"replay [{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%} {done:,}/{total:,} events {rate:,.0f}/s"
        )
        if self.tty:
            self.out.write("\r" + line + ("\n" if done >= total else ""))
            self.out.flush()
        elif int(share * 10) != self._last_decile:
            self._last_decile = int(share * 10)
            print(line, file=self.out, flush=True)


async def _replay(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.since_ms is not None and args.until_ms is not None and args.since_ms >= args.until_ms:
        raise ConfigError("replay: --from must be before --to")
    summary = await replay(
        settings,
        since_ms=args.since_ms,
        until_ms=args.until_ms,
        source=args.source,
        api=args.api,
        progress=ProgressBar(),
    )
    for line in summary.lines():
        print(line)
    return 0


def register(sub: Any) -> None:
    """Add enrich's subcommands to the `whereby-pipeline` parser."""
    run = sub.add_parser("enrich", help="run the enrichment consumer (metrics on ENRICH_HOST:ENRICH_PORT)")
    run.set_defaults(
        handler=lambda _: run_service(
            EnrichService, lambda s: (s.enrich_host, s.enrich_port), settings_class=EnrichSettings
        )
    )

    dims = sub.add_parser("dims", help="manage customers and users (the dimensions topic)")
    dims_sub = dims.add_subparsers(dest="dims_command", required=True, metavar="ACTION")
    load = dims_sub.add_parser(
        "load",
        help="validate and publish customers and/or users from CSV or JSON Lines files (all or nothing)",
        description="Customers CSV: customer_id,name,room_name_prefix (one row per prefix). Users CSV: "
        "external_id,user_id,customer_id,name[,email]. Extra CSV columns become attributes. JSON Lines: one "
        "record per line as on the topic. A customer in the file replaces its earlier record, prefixes included.",
    )
    load.add_argument("--customers", metavar="FILE", help="customers file (.csv or .jsonl)")
    load.add_argument("--users", metavar="FILE", help="users file (.csv or .jsonl)")
    load.add_argument("--dry-run", action="store_true", help="validate (also against the topic) but write nothing")

    def _load(args: argparse.Namespace) -> int:
        if not args.customers and not args.users:
            raise ConfigError("dims load: give --customers FILE and/or --users FILE")
        return _one_shot(load_files(load_settings(), args.customers, args.users, dry_run=args.dry_run))

    load.set_defaults(handler=_load)
    lst = dims_sub.add_parser("list", help="print the customers (and users) on the dimensions topic")
    lst.add_argument("--users", action="store_true", help="include users")
    lst.add_argument("--jsonl", action="store_true", help="print records as JSON Lines (what `dims load` reads)")
    lst.set_defaults(handler=lambda a: _one_shot(list_dimensions(load_settings(), users=a.users, jsonl=a.jsonl)))
    delete = dims_sub.add_parser("delete", help="delete customers and/or users (writes tombstones)")
    delete.add_argument("--customer", action="append", default=[], metavar="ID", help="customer_id (repeatable)")
    delete.add_argument("--user", action="append", default=[], metavar="EXTERNAL_ID", help="external_id (repeatable)")
    delete.set_defaults(handler=lambda a: _one_shot(delete_dimensions(load_settings(), a.customer, a.user)))

    erase = sub.add_parser(
        "forget",
        help="erase a person: their externalId becomes a pseudonym and their display names go, everywhere downstream",
        description="Records the erasure on the dimensions topic (key: the SHA-256 of the externalId; value: a "
        "pseudonym keyed with ERASURE_KEY) and deletes their registered user record. Enrich applies it to new "
        "events and replays; the sink rewrites every stored row of theirs. Minutes and counts stay. The raw "
        "topic and the raw archive keep the original webhooks until they age out (README, 'Personal data').",
    )
    erase.add_argument(
        "--external-id", dest="external_ids", action="append", default=[], metavar="ID", help="repeatable"
    )
    erase.set_defaults(handler=lambda a: _one_shot(forget(load_settings(), a.external_ids)))

    rep = sub.add_parser(
        "replay",
        help="re-enrich raw events with today's dimensions (safe while the pipeline runs)",
        description="Reads the raw topic up to its current end with its own consumer, and the raw archive (through "
        "the read API) for history the topic no longer holds, and produces new enriched records that supersede "
        "earlier ones in ClickHouse (the enrichment with the newest dimensions wins per event id).",
    )
    rep.add_argument(
        "--from",
        dest="since_ms",
        type=parse_since,
        metavar="ISO-TIME",
        help="start at events received at or after this time (default: all history)",
    )
    rep.add_argument(
        "--to",
        dest="until_ms",
        type=parse_since,
        metavar="ISO-TIME",
        help="stop before events received at or after this time (default: now)",
    )
    rep.add_argument(
        "--source",
        choices=("auto", "topic", "archive"),
        default="auto",
        help="auto (default): the raw archive for what the topic no longer holds, the topic for the rest",
    )
    rep.add_argument(
        "--api",
        default="http://127.0.0.1:8082",
        help="the read API serving the raw archive (the sink, or serve-api); token from READ_API_TOKEN",
    )
    rep.set_defaults(handler=lambda a: _one_shot(_replay(a)))
