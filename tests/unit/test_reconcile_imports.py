"""reconcile is a fourth component: it may import `pipeline` but never a stage, and its pure modules do
no I/O (no aiohttp, aiokafka or ClickHouse), so they are tested without a network."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "reconcile"
STAGES = {"ingest", "enrich", "sink"}
PURE = ["backfill", "budget", "compare", "customers", "report", "results", "schedule", "shapes", "times", "wherebymath"]
IO = {"aiohttp", "aiokafka", "clickhouse_connect", "urllib", "socket"}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _modules(path: Path) -> set[str]:
    return {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_reconcile_never_imports_a_stage(path: Path) -> None:
    assert not imported(path) & STAGES


def test_pure_modules_do_no_io() -> None:
    for name in PURE:
        found = imported(PACKAGE / f"{name}.py")
        assert not found & IO, f"reconcile/{name}.py imports {found & IO}"
        inner = {m.split(".")[1] for m in _modules(PACKAGE / f"{name}.py") if m.startswith("reconcile.")}
        assert inner <= set(PURE), f"reconcile/{name}.py reaches beyond the pure modules: {inner}"
