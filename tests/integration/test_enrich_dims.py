"""`whereby-pipeline dims load|list|delete` against a real broker: all-or-nothing loads, conflicts with
what is already on the topic, listing and deleting."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enrich.cli import delete_dimensions, list_dimensions, load_files
from enrich.dimtopic import read_dimensions
from pipeline.settings import Settings
from tests.support import read_topic

pytestmark = pytest.mark.integration

CUSTOMERS = "customer_id,name,room_name_prefix\nc-acme,Acme,acme-\nc-acme,Acme,acme2-\nc-labs,Acme Labs,acme-labs-\n"
USERS = (
    "external_id,user_id,customer_id,name,email\next-ada,u-ada,c-labs,Ada,ada@example.com\next-bob,u-bob,c-acme,Bob,\n"
)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


async def test_load_list_and_delete(settings: Settings, tmp_path: Path) -> None:
    out = io.StringIO()
    code = await load_files(
        settings, write(tmp_path, "c.csv", CUSTOMERS), write(tmp_path, "u.csv", USERS), out=out, err=out
    )
    assert code == 0, out.getvalue()
    assert "loaded 2 customers (3 prefixes) and 2 users" in out.getvalue()

    table, rejected = await read_dimensions(settings)
    assert rejected == 0
    assert table.customers["c-acme"].room_name_prefixes == ("acme-", "acme2-")
    assert table.customer_for_room("/acme-labs-1").customer_id == "c-labs"  # type: ignore[union-attr]
    assert table.users["ext-ada"].email == "ada@example.com"

    listing = io.StringIO()
    assert await list_dimensions(settings, users=True, jsonl=False, out=listing) == 0
    assert listing.getvalue().splitlines()[:4] == [
        "2 customers, 3 prefixes, 2 users (dimension version 4); user ids from externalId (USER_ID_SOURCE)",
        "customer_id  name       room_name_prefixes",
        "c-acme       Acme       acme- acme2-",
        "c-labs       Acme Labs  acme-labs-",
    ]
    exported = io.StringIO()
    await list_dimensions(settings, users=True, jsonl=True, out=exported)
    # The JSON Lines export loads back unchanged.
    again = io.StringIO()
    jsonl = exported.getvalue().splitlines()
    assert (
        await load_files(
            settings,
            write(tmp_path, "c.jsonl", "\n".join(jsonl[:2])),
            write(tmp_path, "u.jsonl", "\n".join(jsonl[2:])),
            out=again,
            err=again,
        )
        == 0
    ), again.getvalue()
    assert (await read_dimensions(settings))[0].customers == table.customers

    gone = io.StringIO()
    assert await delete_dimensions(settings, ["c-acme"], ["ext-bob"], out=gone, err=gone) == 0
    table, _ = await read_dimensions(settings)
    assert sorted(table.customers) == ["c-labs"] and sorted(table.users) == ["ext-ada"]
    assert table.customer_for_room("/acme-1") is None
    missing = io.StringIO()
    assert await delete_dimensions(settings, ["c-acme"], [], out=missing, err=missing) == 1
    assert "not on the dimensions topic: customer 'c-acme'" in missing.getvalue()


async def test_a_bad_line_in_either_file_loads_nothing(settings: Settings, tmp_path: Path) -> None:
    bad_users = USERS + "not valid!,u-x,c-acme,X,\n"
    err = io.StringIO()

    code = await load_files(
        settings, write(tmp_path, "c.csv", CUSTOMERS), write(tmp_path, "u.csv", bad_users), out=err, err=err
    )

    assert code == 1
    assert err.getvalue().splitlines() == [
        f"{tmp_path / 'u.csv'}:4: external_id 'not valid!' must be 1-36 characters of A-Z, a-z, 0-9, '_' and '-'",
        "nothing loaded: 1 problem(s)",
    ]
    assert await read_topic(settings, settings.topic_dimensions, expect=1, timeout_s=1) == []


async def test_a_prefix_owned_by_another_customer_on_the_topic_is_refused(settings: Settings, tmp_path: Path) -> None:
    assert await load_files(settings, write(tmp_path, "c.csv", CUSTOMERS), None, out=io.StringIO()) == 0
    err = io.StringIO()

    code = await load_files(
        settings,
        write(tmp_path, "new.csv", "customer_id,name,room_name_prefix\nc-new,New,acme-labs-\nc-new,New,acme-x-\n"),
        None,
        out=err,
        err=err,
    )

    assert code == 1
    assert f"{tmp_path / 'new.csv'}:2: prefix 'acme-labs-' already belongs to customer 'c-labs'" in err.getvalue()
    assert "c-new" not in (await read_dimensions(settings))[0].customers


def test_the_command_prints_one_line_per_problem_and_no_traceback(settings: Settings, tmp_path: Path) -> None:
    bad = write(tmp_path, "c.csv", "customer_id,name,room_name_prefix\nc-1,One,One-\nc-2,Two,two-\nc-3,Three,two-\n")
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "TOPIC_DIMENSIONS": settings.topic_dimensions,
        "TOPIC_RAW": settings.topic_raw,
        "TOPIC_ENRICHED": settings.topic_enriched,
        "TOPIC_DEADLETTER": settings.topic_deadletter,
    }
    cli = [sys.executable, "-c", "from pipeline.cli import main; main()"]

    result = subprocess.run([*cli, "dims", "load", "--customers", bad], env=env, capture_output=True, text=True)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:2: room name prefix 'One-' must be 1-39 characters of a-z, 0-9 and '-' "
        "(Whereby lower-cases prefixes and removes spaces: use 'one-')",
        f"{bad}:4: prefix 'two-' is already given to customer 'c-2' on line 3",
        "nothing loaded: 2 problem(s)",
    ]
    missing = subprocess.run(
        [*cli, "dims", "load", "--users", str(tmp_path / "nope.csv")], env=env, capture_output=True, text=True
    )
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"whereby-pipeline: cannot read {tmp_path / 'nope.csv'}: No such file or directory",
    )
