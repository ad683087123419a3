"""The sink's read side is a package of its own (sink/read/) with a one-way dependency: the import
contract `sink-read-never-writes` (pyproject.toml, run by `make lint`) lists the write side's modules.
This test keeps that list complete, so a new module in sink/ is either shared with the read side on
purpose or kept out of its reach."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# What the read side may use: the connection and the versioned schema, the cluster rewrite the
# connection applies, and the classification of ClickHouse errors.
SHARED = {"store", "cluster", "errors"}


def _contract(contract_id: str) -> dict[str, object]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["id"] == contract_id)


def test_every_sink_module_outside_the_read_side_is_shared_or_forbidden_to_it() -> None:
    contract = _contract("sink-read-never-writes")
    assert contract["source_modules"] == ["sink.read"]
    forbidden = {name.removeprefix("sink.") for name in contract["forbidden_modules"]}  # type: ignore[attr-defined]
    modules = {path.stem for path in (REPO / "sink").glob("*.py")} - {"__init__", "__main__"}
    assert forbidden | SHARED == modules, "classify a new sink module: shared with sink.read, or write side"
    assert not forbidden & SHARED


def test_the_page_is_packaged_with_the_read_side() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert package_data["sink.read"] == ["web/*"]
    assert {p.name for p in (REPO / "sink" / "read" / "web").iterdir()} >= {"index.html", "app.js", "style.css"}
