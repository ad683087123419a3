"""Every `whereby-pipeline` command is reachable: each component's subcommands arrive through the
`whereby_pipeline.commands` entry points (pipeline/ never imports a stage, not even by a module name in a
string), and every command, down to the nested ones, runs a handler."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from pipeline import cli

REPO = Path(__file__).resolve().parents[2]

# Who offers which top-level command. A new command is added here on purpose, so that a command that
# silently disappears (an entry point lost from pyproject.toml, a stale install) fails this test.
OWN = {"topics", "supervise", "config"}
BY_COMPONENT = {
    "ingest": {"ingest", "sign"},
    "enrich": {"enrich", "dims", "forget", "replay"},
    "sink": {"sink", "schema", "report", "serve-api"},
    "reconcile": {"reconcile"},
}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command path that ends in a runnable parser (one without further subcommands)."""
    children = _subcommands(parser)
    if not children:
        return [(path, parser)]
    return [leaf for name, child in children.items() for leaf in _leaves(child, (*path, name))]


def test_each_component_offers_its_commands_through_an_entry_point() -> None:
    points = {point.name: point for point in entry_points(group=cli.COMMANDS_GROUP)}
    assert set(points) == set(BY_COMPONENT), "pyproject.toml [project.entry-points] vs. an installed package"
    for name, point in points.items():
        assert point.value == f"{name}.cli:register"
        parser = argparse.ArgumentParser()
        point.load()(parser.add_subparsers())
        assert set(_subcommands(parser)) == BY_COMPONENT[name]


def test_the_command_line_offers_every_command() -> None:
    offered = set(_subcommands(cli.build_parser()))
    assert offered == OWN.union(*BY_COMPONENT.values())


@pytest.mark.parametrize("path", [path for path, _ in _leaves(cli.build_parser())], ids=lambda path: " ".join(path))
def test_every_command_runs_a_handler(path: tuple[str, ...]) -> None:
    parser = cli.build_parser()
    for name in path:
        parser = _subcommands(parser)[name]
    assert callable(parser.get_default("handler")), f"`whereby-pipeline {' '.join(path)}` has no handler"


def test_the_installed_console_command_lists_them_all() -> None:
    """A real process, as a user runs it: the entry points come from the installed metadata."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for command in OWN.union(*BY_COMPONENT.values()):
        assert f"    {command}" in done.stdout


def _dynamic_imports(path: Path) -> list[str]:
    """What each `import_module(...)` / `__import__(...)` call in `path` imports (`?` when not a literal)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in {"import_module", "__import__"}:
            first = node.args[0] if node.args else None
            found.append(first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else "?")
    return found


def test_pipeline_never_imports_a_stage_by_name() -> None:
    """The import contract (lint-imports) sees `import` statements; this closes the dynamic way around it."""
    stages = set(BY_COMPONENT)
    for path in sorted((REPO / "pipeline").glob("*.py")):
        for module in _dynamic_imports(path):
            assert module != "?" and module.split(".")[0] not in stages, f"pipeline/{path.name} imports {module}"
