"""The usage page in headless Chromium (Debian's `chromium`, driven by playwright; no browser download).

Signed webhooks in (the pipeline fixture of test_read_api), the page out: customers table, chart,
drill-down to participants, and the token prompt. Screenshots are kept in .data/artifacts/ (git-ignored).
When chromium is missing the test is skipped, except under CI=true, where it fails: CI must run it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pipeline.runner import build_app
from sink.read import readapi
from tests.e2e.test_read_api import Pipeline, pipeline  # noqa: F401  (pipeline: fixture)

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / ".data" / "artifacts"
# As root in a container Chromium needs --no-sandbox; the rest keeps it from calling home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _need_browser() -> None:
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium, or `make tools`)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(missing)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh Chromium profile per test; console errors (CSP violations included) are collected."""
    _need_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


async def _open(context: Any, url: str) -> tuple[Any, list[str]]:
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    return page, errors


async def _loaded(page: Any, level: str) -> None:
    await page.wait_for_selector(f"#table[data-level='{level}'][data-loaded='true']", timeout=15_000)


async def _rows(page: Any) -> list[list[str]]:
    return [
        [cell.strip() for cell in await row.locator("td").all_inner_texts()]
        for row in await page.locator("#table tbody tr").all()
    ]


async def test_the_page_shows_usage_and_drills_down_to_participants(pipeline: Pipeline, browser: Any) -> None:  # noqa: F811
    page, errors = await _open(browser, pipeline.url + "/")
    await _loaded(page, "customers")
    rows = await _rows(page)
    # Minutes by role (participant, recorder, streamer, assistant, captioner), then open, no-join and
    # estimated connections, sessions and users.
    assert rows[0] == ["Acme (c-acme)", "13", "0", "0", "0", "0", "13", "0", "0", "0", "1", "2"]
    assert rows[1] == ["(unresolved)", "2", "0", "0", "0", "0", "2", "0", "0", "0", "1", "1"]
    assert rows[2] == ["Idle Ltd (c-idle)", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0"]

    # The chart: one day, one stacked segment per customer with minutes that day.
    await page.wait_for_selector("#chart svg rect.bar")
    bars = {
        (await bar.get_attribute("data-customer"), await bar.get_attribute("data-minutes"))
        for bar in await page.locator("#chart svg rect.bar").all()
    }
    assert bars == {("Acme (c-acme)", "13"), ("(unresolved)", "2")}
    assert {(await bar.get_attribute("data-day")) for bar in await page.locator("#chart rect.bar").all()} == {
        "2026-01-01"
    }
    assert await page.locator("#legend li").all_inner_texts() == ["Acme (c-acme)", "(unresolved)"]
    # Every meeting has ended: the live section says nobody is in a room.
    await page.wait_for_selector("#live[data-loaded='true']")
    assert await page.locator("#live tbody td").all_inner_texts() == ["Nobody is in a room right now."]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "usage-page.png"), full_page=True)

    await page.get_by_role("button", name="Acme (c-acme)").click()
    await _loaded(page, "rooms")
    assert [r[0] for r in await _rows(page)] == [pipeline.acme_room]
    await page.get_by_role("button", name=pipeline.acme_room).click()
    await _loaded(page, "sessions")
    assert [(r[0], r[3]) for r in await _rows(page)] == [(pipeline.acme_session, "13")]
    await page.get_by_role("button", name=pipeline.acme_session).click()
    await _loaded(page, "participants")
    assert [(r[0], r[1], r[2], r[6], r[7]) for r in await _rows(page)] == [
        ("Someone", "u-ada", "ext-ada", "left", "11"),
        ("Someone", "u-bob", "ext-bob", "left", "2"),
    ]
    crumbs = await page.locator("#crumbs > *").all_inner_texts()
    sep = "\u203a"  # the breadcrumb separator
    assert crumbs == ["Customers", sep, "Acme (c-acme)", sep, pipeline.acme_room, sep, pipeline.acme_session]
    await page.screenshot(path=str(ARTIFACTS / "usage-participants.png"), full_page=True)

    # Back to the customers through the breadcrumb, then into the unresolved bucket.
    await page.locator("#crumbs button", has_text="Customers").click()
    await _loaded(page, "customers")
    await page.get_by_role("button", name="(unresolved)").click()
    await _loaded(page, "rooms")
    assert [r[0] for r in await _rows(page)] == [pipeline.stranger_room]

    # A range with no usage empties the chart but keeps the registered customers at zero.
    await page.fill("#from", "2026-02-01")
    await page.click("#range button[type=submit]")
    await _loaded(page, "customers")
    await page.wait_for_selector("#chart p.hint")
    assert [r[1] for r in await _rows(page)] == ["0", "0"]
    assert errors == []


class _TokenStub:
    name = "stub"

    def __init__(self, token: str) -> None:
        rows = [{"customer_id": "c-x", "customer_name": "X", "participant_minutes": 4, "recorder_minutes": 0,
                 "streamer_minutes": 0, "sessions": 1, "unique_users": 1, "day": "2026-01-01"}]  # fmt: skip
        self._routes = readapi.routes(lambda sql, params: rows, "whereby", token=token)

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


async def test_the_page_asks_for_the_token_and_keeps_it_out_of_the_page(browser: Any) -> None:
    token = "page-token-0123456789abcdef"
    async with TestServer(build_app(_TokenStub(token)), host="127.0.0.1") as server:  # type: ignore[arg-type]
        page, _ = await _open(browser, str(server.make_url("/")))
        await page.wait_for_selector("#auth:not([hidden])")
        assert await page.locator("#table tbody tr").count() == 0
        await page.fill("#token", token)
        await page.click("#token-form button")
        await _loaded(page, "customers")
        assert (await _rows(page))[0][:2] == ["X (c-x)", "4"]
        assert await page.is_hidden("#auth")
        assert token not in await page.content()


class _LiveStub:
    """A read API whose store has one room with a late host and one with a stale connection: the live
    query gets rows in the shape the live view returns, every other query none."""

    name = "stub"

    def __init__(self) -> None:
        from datetime import datetime

        def person(room: str, pid: str, role: str, party: str, stale: int, **kw: Any) -> dict[str, Any]:
            return {
                "as_of": datetime(2026, 1, 1, 10, 0), "room_name": room, "customer_id": "c-acme",
                "customer_name": "Acme", "participant_id": pid, "connection_id": "e-" + pid, "session_key": "s-1",
                "room_session_id": "s-1", "display_name": pid.title(), "role_name": role, "role_class": "human",
                "party": party, "external_id": None, "user_key": "u-" + pid, "user_source": "externalId",
                "user_id": None, "user_name": None, "joined_at": datetime(2026, 1, 1, 9, 50), "open_s": 600,
                "stale": stale, "session_started_at": datetime(2026, 1, 1, 9, 51),
                "first_host_joined_at": datetime(2026, 1, 1, 9, 54, 5),
                "first_guest_joined_at": datetime(2026, 1, 1, 9, 50), **kw,
            }  # fmt: skip

        rows = [
            person("/acme-standup", "ada", "visitor", "guest", 0),
            person("/acme-standup", "hal", "host", "host", 0),
            person("/acme-old", "zed", "visitor", "guest", 1, session_key=None, room_session_id=None),
        ]

        def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
            return rows if "live_connections" in sql else []

        self._routes = readapi.routes(run, "whereby")

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


async def test_the_page_shows_who_is_in_a_room_now_and_whether_the_host_was_late(browser: Any) -> None:
    async with TestServer(build_app(_LiveStub()), host="127.0.0.1") as server:  # type: ignore[arg-type]
        page, errors = await _open(browser, str(server.make_url("/")))
        await page.wait_for_selector("#live[data-loaded='true']")
        standup = page.locator("#live tr[data-room='/acme-standup'] td")
        cells = await standup.all_inner_texts()
        assert cells[:2] == ["/acme-standup", "Acme (c-acme)"]
        assert cells[3:6] == ["2026-01-01 09:54:05 UTC", "2026-01-01 09:50:00 UTC", "4 min 5 s"]
        assert cells[6].splitlines() == [
            "Ada · visitor · u-ada — since 2026-01-01 09:50:00 UTC",
            "Hal · host · u-hal — since 2026-01-01 09:50:00 UTC",
        ]
        assert await page.locator("#live tr[data-room='/acme-standup'] div.late").count() == 1
        old = page.locator("#live tr[data-room='/acme-old']")
        assert await old.get_attribute("class") == "stale"
        assert (await old.locator("td").all_inner_texts())[6].endswith("(stale)")
        assert (await page.inner_text("#live-note")).startswith("2 in 1 rooms as of 2026-01-01 10:00:00 UTC; 1 stale")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "usage-live.png"), full_page=True)
        assert errors == []
