"""docs/metrics.md is the catalogue of every whereby_* metric: this test keeps it true.

It imports every module of the packages (so each module-level metric registers itself), then
checks both directions: every registered metric is in the table with its type and labels, and the
table lists nothing that no code defines. Dashboards and alert rules are checked against the same
table (test_deploy_grafana.py, test_deploy_prometheus.py), so a renamed metric fails here, not on a
dark dashboard in production.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "docs" / "metrics.md"
PACKAGES = ("pipeline", "ingest", "enrich", "sink", "reconcile")
# High-cardinality or personal values must never become labels (the issue: bounded labels only).
FORBIDDEN_LABELS = {"room", "room_name", "room_session_id", "participant_id", "user_id", "external_id", "event_id",
                    "customer_id", "display_name", "instance_id"}  # fmt: skip
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_ROW = re.compile(r"^\|\s*`(whereby_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|([^|]*)\|")


@dataclass(frozen=True)
class Entry:
    name: str  # as exposed and queried: counters with their _total suffix
    type: str
    labels: tuple[str, ...]
    unit: str


def catalogue() -> dict[str, Entry]:
    """The table rows of docs/metrics.md, by metric name."""
    entries: dict[str, Entry] = {}
    for line in CATALOGUE.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            name, kind, labels, unit = match.groups()
            assert name not in entries, f"{name} is listed twice in {CATALOGUE.name}"
            entries[name] = Entry(name, kind, tuple(re.findall(r"`(\w+)`", labels)), unit.strip())
    return entries


def registered() -> dict[str, Entry]:
    """Every whereby_* metric that the code registers on import."""
    for package in PACKAGES:
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not info.name.endswith("__main__"):  # running a package is not importing it
                importlib.import_module(info.name)
    found: dict[str, Entry] = {}
    # prometheus_client keeps no public list of collectors with their label names; these private
    # attributes have been stable across its releases and are all this test needs.
    for collector in list(REGISTRY._collector_to_names):
        name = getattr(collector, "_name", "")
        if name.startswith("whereby_"):
            kind = collector._type
            exposed = f"{name}_total" if kind == "counter" else name
            found[exposed] = Entry(exposed, kind, tuple(collector._labelnames), "")
    return found


def metric_names_in(text: str) -> set[str]:
    """whereby_* metric names a PromQL text refers to, histogram series mapped to their metric."""
    known = catalogue()
    names = set()
    for name in re.findall(r"\bwhereby_[a-z0-9_]+", text):
        for suffix in HISTOGRAM_SUFFIXES:
            base = name.removesuffix(suffix)
            if name.endswith(suffix) and known.get(base, Entry("", "", (), "")).type == "histogram":
                name = base
                break
        names.add(name)
    return names


def test_every_registered_metric_is_catalogued_with_its_type_and_labels() -> None:
    documented, actual = catalogue(), registered()
    missing = sorted(set(actual) - set(documented))
    assert not missing, f"add these metrics to docs/metrics.md: {missing}"
    for name, entry in actual.items():
        row = documented[name]
        assert row.type == entry.type, f"{name}: catalogue says {row.type}, code defines a {entry.type}"
        assert set(row.labels) == set(entry.labels), f"{name}: catalogue labels {row.labels}, code {entry.labels}"


def test_catalogue_lists_nothing_that_does_not_exist() -> None:
    stale = sorted(set(catalogue()) - set(registered()))
    assert not stale, f"docs/metrics.md lists metrics no code defines: {stale}"


def test_every_row_has_a_unit_and_labels_are_bounded() -> None:
    for entry in catalogue().values():
        assert entry.unit, f"{entry.name}: give it a unit in docs/metrics.md"
        assert not FORBIDDEN_LABELS & set(entry.labels), f"{entry.name}: unbounded label {entry.labels}"
    for entry in registered().values():
        assert not FORBIDDEN_LABELS & set(entry.labels), f"{entry.name}: unbounded label {entry.labels}"


def test_naming_conventions() -> None:
    """Prometheus conventions: counters end in _total, a unit suffix where there is a unit."""
    for entry in registered().values():
        if entry.type == "counter":
            assert entry.name.endswith("_total")
        if entry.type == "histogram":
            assert entry.name.endswith(("_seconds", "_bytes", "_rows", "_records")), entry.name
