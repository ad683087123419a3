"""An applied migration is never edited (issue 19): `schema_migrations` records each applied file's
checksum, and both `whereby-pipeline schema upgrade` and the sink's start refuse a shipped file that
differs from what was applied, with one line naming the file, before touching the store.

The edited release is real: a copy of the `sink` package whose 012 migration got one more comment line
(the most innocent edit there is), put ahead of the installed one on PYTHONPATH. Real processes, a real
embedded store; the broker is only there because the sink's settings name one (it refuses before
connecting to it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.stack import REPO, isolated_env

pytestmark = pytest.mark.integration

EDITED = "012_first_connections.sql"


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd is not the repository: `python -m` puts the working directory first on sys.path, which would
    # shadow the edited copy on PYTHONPATH with the repository's own sink package.
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def applied(env: dict[str, str], cwd: Path) -> list[list[str]]:
    """(version, checksum) rows of schema_migrations, read by a process of its own (the embedded engine
    lets one process at a time open a store)."""
    script = (
        "import json, os\n"
        "from sink import store\n"
        "c = store.connect(os.environ['CLICKHOUSE_URL'])\n"
        "db = os.environ['CLICKHOUSE_DATABASE']\n"
        "rows = c.query(f'SELECT version, checksum FROM {db}.schema_migrations ORDER BY version, checksum')\n"
        "print(json.dumps([[str(v), str(s)] for v, s in rows.result_rows]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], env={**env, "PATH": "/usr/bin:/bin"}, cwd=cwd, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    rows: list[list[str]] = json.loads(out.stdout)
    return rows


def test_a_changed_applied_migration_is_refused_in_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = isolated_env(kafka_bootstrap, f"chdb://{tmp_path / 'clickhouse'}")
    first = run(["schema", "upgrade"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "applied 001_events.sql" in first.stdout and EDITED in first.stdout
    before = applied(env, tmp_path)
    assert all(checksum for _, checksum in before)  # every applied file has its checksum recorded

    # The next "release": the same files, but 012 edited after it was applied.
    edited = tmp_path / "edited-release"
    shutil.copytree(REPO / "sink", edited / "sink", ignore=shutil.ignore_patterns("__pycache__"))
    migration = edited / "sink" / "schema" / EDITED
    migration.write_text(migration.read_text() + "-- a harmless-looking afterthought\n")
    edited_env = {**env, "PYTHONPATH": str(edited)}

    upgrade = run(["schema", "upgrade"], edited_env, tmp_path)
    assert upgrade.returncode == 2
    (line,) = upgrade.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"whereby-pipeline: schema file {EDITED} was changed after it was applied")
    assert "new numbered file" in line
    assert upgrade.stdout == ""

    sink = run(["sink"], edited_env, tmp_path)
    assert sink.returncode == 2
    records = [json.loads(x) for x in sink.stderr.splitlines() if x.strip()]
    assert "Traceback" not in sink.stderr
    (error,) = [r for r in records if r.get("level") == "error"]
    assert error["msg"].startswith(f"schema file {EDITED} was changed after it was applied")
    assert "\n" not in error["msg"]

    # Nothing was recorded or re-applied by the refused starts; the shipped files start again.
    assert applied(env, tmp_path) == before
    again = run(["schema", "upgrade"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "applied" not in again.stdout
