"""What we run is pinned: requirements/*.lock (versions and hashes, from `make lock`) agree with
pyproject.toml's ranges, are what `make install` and the Dockerfile install, and the ranges keep out
known-vulnerable versions and the next minor release of the libraries whose internals we use."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = REPO / "requirements" / "runtime.lock"
DEV_LOCK = REPO / "requirements" / "dev.lock"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements(group: str) -> dict[str, Requirement]:
    entries = PROJECT["dependencies"] if group == "runtime" else PROJECT["optional-dependencies"][group]
    found = {}
    for entry in entries:
        requirement = Requirement(entry)
        found[canonicalize_name(requirement.name)] = requirement
    return found


def locked(path: Path) -> dict[str, Version]:
    """name -> pinned version of each entry whose marker applies here (a universal lock has forks)."""
    pins: dict[str, Version] = {}
    for entry in re.split(r"\n(?=[a-z0-9])", path.read_text().split("\n", 2)[2]):
        head = entry.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        spec, _, marker = head.partition(";")
        name, _, pinned = spec.strip().partition("==")
        assert pinned, f"{path.name}: not pinned with ==: {head}"
        assert "--hash=sha256:" in entry, f"{path.name}: no hash for {name}"
        if not marker.strip() or Marker(marker.strip()).evaluate():
            pins[canonicalize_name(name)] = Version(pinned)
    return pins


@pytest.mark.parametrize(
    ("package", "refused", "accepted"),
    [
        ("aiohttp", "3.13.3", "3.13.4"),  # known-vulnerable below 3.13.4
        ("orjson", "3.9.14", "3.9.15"),  # known-vulnerable below 3.9.15
        ("aiokafka", "0.15.0", "0.14.0"),  # internals used on the hot path: next minor not yet checked
        ("prometheus-client", "0.27.0", "0.26.0"),
    ],
)
def test_ranges_keep_out_vulnerable_and_unchecked_versions(package: str, refused: str, accepted: str) -> None:
    specifier = requirements("runtime")[package].specifier
    assert refused not in specifier
    assert accepted in specifier


@pytest.mark.parametrize(("lock", "groups"), [(RUNTIME_LOCK, ["runtime"]), (DEV_LOCK, ["runtime", "dev"])])
def test_the_lock_pins_every_dependency_within_its_range(lock: Path, groups: list[str]) -> None:
    pins = locked(lock)
    for group in groups:
        for name, requirement in requirements(group).items():
            assert name in pins, f"{lock.name}: {name} is missing; run make lock"
            assert pins[name] in requirement.specifier, f"{lock.name}: {name}=={pins[name]} outside {requirement}"
    assert {"setuptools", "wheel"} <= set(pins)  # the build backend, for --no-build-isolation


def test_dev_and_runtime_locks_agree() -> None:
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_make_install_and_the_image_install_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)
    assert stamp is not None
    assert "$(LOCKS)" in stamp.group(1) and "requirements/runtime.lock requirements/dev.lock" in makefile
    assert "--require-hashes -r requirements/dev.lock" in makefile
    assert "--no-deps --no-build-isolation -e ." in makefile
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements/runtime.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
    assert "!requirements/runtime.lock" in (REPO / "deploy" / "Dockerfile.dockerignore").read_text()


def test_the_environment_runs_the_locked_versions() -> None:
    """`make install` installed what the lock says (a stale .venv: run make install)."""
    stale = {}
    for name, pinned in locked(DEV_LOCK).items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            stale[name] = "not installed"
            continue
        if installed != pinned:
            stale[name] = f"{installed} (lock: {pinned})"
    assert not stale, stale
