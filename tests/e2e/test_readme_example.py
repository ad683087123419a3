"""The README's first example, run: the two fixture webhooks signed and posted to ingest, through the
broker and enrich into the sink, and the read API's row for Acme equals the JSON the README shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from enrich.service import EnrichService
from ingest.service import WEBHOOK_PATH, IngestService
from pipeline.settings import Settings
from sink.service import SinkService
from tests.support import Running, publish_dimensions, signed_headers, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SECRET = "k3v9q2m7x1p8r4t6w0z5y2a9b3c7d1e4"  # the secret harness.stack.isolated_env gives ingest


def readme_row() -> dict[str, Any]:
    """The JSON block of the README that shows Acme's usage row."""
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    rows = [orjson.loads(b) for b in blocks if '"customer_id": "c-acme"' in b]
    assert len(rows) == 1, "the README shows Acme's usage row once"
    row: dict[str, Any] = rows[0]
    return row


async def test_the_readme_usage_example_is_what_the_pipeline_answers(settings: Settings) -> None:
    expected = readme_row()
    await publish_dimensions(
        settings,
        [("customer:c-acme", {"customer_id": "c-acme", "name": "Acme Inc", "room_name_prefixes": ["acme-"]})],
    )
    async with (
        Running(SinkService(settings), http=True) as sink,
        Running(EnrichService(settings)),
        Running(IngestService(settings), http=True) as ingest,
        aiohttp.ClientSession() as http,
    ):
        for name in ("joined.json", "left.json"):
            raw = (ROOT / "tests" / "fixtures" / name).read_bytes().strip()
            async with http.post(ingest.url + WEBHOOK_PATH, data=raw, headers=signed_headers(raw, SECRET)) as r:
                assert r.status == 202, await r.text()

        async def acme() -> dict[str, Any] | None:
            params = {"from": "2026-01-01", "to": "2026-02-01"}
            async with http.get(sink.url + "/usage/customers", params=params) as response:
                assert response.status == 200, await response.text()
                rows = (await response.json())["results"]
            row = next((r for r in rows if r["customer_id"] == "c-acme"), None)
            return row if row is not None and row["connections"] else None

        assert await wait_for(acme, timeout_s=60) == expected
