"""`whereby-pipeline config check`: the configuration checks a stage runs at start, without starting it.

A stage refuses to start on bad configuration (design principle 8): settings that do not parse, a
missing webhook secret, a read API exposed without a token, TLS files that do not load. Those rules
live with their stage, in one `check(settings)` function that the stage's service calls at start.
The stage also offers that same function under the `whereby_pipeline.config_checks` entry point group
(pyproject.toml), which is how this module finds it: `pipeline/` never imports a stage, and there is
no second copy of any rule. So `config check --stage sink` fails exactly when `whereby-pipeline sink`
would fail at start for its configuration, which lets CI and the deploy tests run a deploy file's
environment through it.

A check reads the environment and local files (mounted secrets, TLS files) only; it never connects to
Kafka or ClickHouse, so it answers the same on a laptop, in CI and in an init container.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pipeline.settings import CommonSettings, ConfigError, Settings

ENTRY_POINT_GROUP = "whereby_pipeline.config_checks"
ALL = "all"

# Each check takes its stage's own settings class (IngestSettings, ...): `settings_class` reads which.
Check = Callable[[Any], None]


def available() -> dict[str, Check]:
    """Stage name -> the check its service runs at start, as installed (entry point group above), by name."""
    found: dict[str, Check] = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        found.setdefault(point.name, point.load())
    return found


def run(stage: str, environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None) -> CommonSettings:
    """Parse the settings as `stage` does at start (its own class only), then run its own checks; returns them.

    Raises ConfigError with the stage's one-line message (what to set) when it would refuse to start,
    and KeyError for a stage that offers no check.
    """
    check = available()[stage]
    settings = settings_class(check).from_env(environ, dotenv=dotenv)
    check(settings)
    return settings


def settings_class(check: Check) -> type[CommonSettings]:
    """The settings class a check (and so its stage) reads: the type of its parameter, e.g. IngestSettings.
    Only that class's variables are read, as the stage does at start; `Settings` (all) if it names none."""
    hints = {name: hint for name, hint in typing.get_type_hints(check).items() if name != "return"}
    found = next(iter(hints.values()), Settings)
    return found if isinstance(found, type) and issubclass(found, CommonSettings) else Settings


def _command(args: argparse.Namespace) -> int:
    """`config check --stage NAME|all`: `ok`, or the one-line error on stderr and exit code 2."""
    dotenv = Path(".env")  # the same file `whereby-pipeline <stage>` reads (pipeline.cli.load_settings)
    if args.stage != ALL:
        run(args.stage, dotenv=dotenv)  # a ConfigError becomes one line and exit 2 in pipeline.cli.main
        print("ok")
        return 0
    failed = 0
    for stage in available():
        try:
            run(stage, dotenv=dotenv)
        except ConfigError as exc:
            print(f"{stage}: {exc}", file=sys.stderr)
            failed += 1
        else:
            print(f"{stage}: ok")
    return 2 if failed else 0


def register(sub: Any) -> None:
    """Add `config check` to the `whereby-pipeline` parser."""
    config = sub.add_parser("config", help="check the configuration in the environment (and .env)")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="run the configuration checks a stage runs at start (no network); prints ok or the error",
    )
    check.add_argument("--stage", required=True, choices=[*available(), ALL], help="which stage's checks to run")
    check.set_defaults(handler=_command)
