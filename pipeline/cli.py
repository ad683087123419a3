"""The `whereby-pipeline` command.

Each stage contributes its own subcommands through a `register(subparsers)` function in its `cli`
module, offered under the `whereby_pipeline.commands` entry point group (pyproject.toml), which is how
this file finds them: `pipeline/` never imports a stage, not even by a module name in a string (the
import contract, `make lint`). This file only wires them together, runs the chosen one and turns
configuration errors into a one-line message and exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from pipeline import checks, kafka, logs, supervisor
from pipeline.runner import Service, http_limits, serve
from pipeline.settings import CommonSettings, ConfigError, Settings

COMMANDS_GROUP = "whereby_pipeline.commands"

Register = Callable[[Any], None]


def stage_commands() -> dict[str, Register]:
    """Component name -> its `register(subparsers)`, as installed (entry point group above), by name.

    An installation without them (the project not installed, or installed before the group existed)
    would offer only `topics`, `supervise` and `config`; `make install` re-installs on any change to
    pyproject.toml, and tests/unit/test_cli_commands.py fails when a command is missing.
    """
    found: dict[str, Register] = {}
    for point in sorted(entry_points(group=COMMANDS_GROUP), key=lambda p: p.name):
        found.setdefault(point.name, point.load())
    return found


S = TypeVar("S", bound=CommonSettings)


def load_settings() -> Settings:
    """Every setting from the environment over an optional `.env` in the working directory (for the
    tools that span stages; a stage reads its own class, see `run_service`)."""
    return Settings.from_env(dotenv=Path(".env"))


def run_service(
    factory: Callable[[S], Service],
    host_port: Callable[[S], tuple[str, int]],
    *,
    settings_class: type[S],
    shared_port: Callable[[S], bool] | None = None,
) -> int:
    """Run a stage as a long-lived service with JSON logs; returns the exit code.

    `settings_class`: the stage's own settings (e.g. IngestSettings), read and validated from the
    environment and `.env`; a variable only another stage uses is never read. `shared_port(settings)`
    true: this process is one of several workers listening on the same port.
    """
    settings = settings_class.from_env(dotenv=Path(".env"))
    service = factory(settings)
    logs.configure(service.name)
    host, port = host_port(settings)
    reuse = bool(shared_port and shared_port(settings))
    return asyncio.run(
        serve(service, host, port, limits=http_limits(settings), reuse_port=reuse, instance_port=settings.instance_port)
    )


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run a one-shot async command."""
    return asyncio.run(coro)


async def _topics(_: argparse.Namespace) -> int:
    settings = load_settings()
    await kafka.wait_for_broker(settings)
    created = await kafka.ensure_topics(settings)
    names = [spec.name for spec in kafka.topic_specs(settings)]
    print(
        f"topics ready on {settings.kafka_bootstrap_servers}: {', '.join(names)}"
        + (f" (created {', '.join(created)})" if created else " (all existed)")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whereby-pipeline", description="Whereby webhooks -> Kafka -> ClickHouse usage pipeline"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    topics = sub.add_parser("topics", help="create the Kafka topics of the contract (idempotent)")
    topics.set_defaults(handler=lambda args: run_async(_topics(args)))
    supervisor.register(sub, load_settings)
    for register in stage_commands().values():
        register(sub)
    checks.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args))
    except ConfigError as exc:
        print(f"whereby-pipeline: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
