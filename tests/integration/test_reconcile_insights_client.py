"""The Insights client against the Insights double over real HTTP: pages, rate limits, retries, a bad key,
garbage. The client is configured only with a base URL and a key: it cannot tell the double from Whereby."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from harness.ports import free_port
from pipeline.settings import WherebyApi
from reconcile.budget import PointsBudget
from reconcile.customers import registry_of
from reconcile.insights import InsightsClient, InsightsError, Policy, Unauthorized, Unavailable
from reconcile.run import discover_rooms
from tests.insights_double import InsightsDouble, Session, Stay

KEY = "test-api-key-0123456789"
T0 = datetime(2026, 1, 1, 9, tzinfo=UTC)
FAST = Policy(backoff_base_s=0.01, backoff_max_s=0.05, max_attempts=3)


def populate(double: InsightsDouble, rooms: int = 5) -> None:
    for i in range(rooms):
        name = f"/acme-{i:04d}"
        double.add_room(name, T0 - timedelta(days=90))
        stays = [
            Stay(f"p-{i}-{j}", T0 + timedelta(minutes=j), T0 + timedelta(minutes=j + 10, seconds=1)) for j in range(3)
        ]
        double.add_session(Session(f"s-{i}", name, T0, T0 + timedelta(minutes=20), stays))


class Sleeps:
    """An injected sleep: records what the client would have waited, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client(
    double: InsightsDouble, *, key: str = KEY, sleeps: Sleeps | None = None, policy: Policy = FAST
) -> InsightsClient:
    api = WherebyApi(url=double.url, key=key, points_per_minute=10_000)
    return InsightsClient(api, policy=policy, sleep=sleeps or Sleeps())


async def test_pages_are_followed_by_cursor_across_short_pages_with_limit_100() -> None:
    async with InsightsDouble(KEY, page_size=2) as double:
        populate(double, rooms=5)
        async with client(double) as insights:
            rooms = await insights.rooms("/acme-")
            participants = await insights.participants("s-3")
    assert [r.room_name for r in rooms] == [f"/acme-{i:04d}" for i in range(5)]
    assert [p.participant_id for p in participants] == ["p-3-0", "p-3-1", "p-3-2"]
    listing = [r for r in double.requests if r.path == "/insights/rooms"]
    assert len(listing) == 3  # 2 + 2 + 1 rows: a page may hold fewer rows than `limit`
    assert all(r.query["limit"] == "100" and r.query["roomName[startsWith]"] == "/acme-" for r in listing)
    assert "cursor" not in listing[0].query and all(r.query.get("cursor") for r in listing[1:])
    assert all(r.authorized for r in double.requests)


async def test_a_429_in_the_middle_waits_for_retry_after_then_carries_on() -> None:
    sleeps = Sleeps()
    async with InsightsDouble(KEY, page_size=2) as double:
        populate(double, rooms=5)
        double.throttle(after=2, retry_after_s=3)
        async with client(double, sleeps=sleeps) as insights:
            rooms = await insights.rooms()
    assert len(rooms) == 5
    assert sleeps.waits == [3.0]
    assert [r.status for r in double.requests] == [200, 429, 200, 200]
    assert double.requests[1].query == double.requests[2].query  # the same page asked again


async def test_a_bad_key_stops_at_once_with_one_line_that_never_holds_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-9876543210"
    async with InsightsDouble(KEY) as double:
        populate(double, rooms=1)
        async with client(double, key=wrong) as insights:
            with pytest.raises(Unauthorized) as caught:
                await insights.rooms()
    message = str(caught.value)
    assert "401" in message and "WHEREBY_API_KEY" in message and "\n" not in message
    assert len(double.requests) == 1  # no retry burns the budget on a wrong key
    assert wrong not in message and all(
        wrong not in r.getMessage() and wrong not in str(r.__dict__) for r in caplog.records
    )


async def test_transient_failures_are_retried_with_backoff_and_garbage_is_handled() -> None:
    sleeps = Sleeps()
    async with InsightsDouble(KEY) as double:
        populate(double, rooms=2)
        double.fail(after=1, status=503)
        double.answer(after=2, body=b"<html>bad gateway</html>")
        async with client(double, sleeps=sleeps, policy=Policy(backoff_base_s=0.01, max_attempts=5)) as insights:
            rooms = await insights.rooms()
    assert len(rooms) == 2
    assert len(sleeps.waits) == 2 and sleeps.waits[1] > sleeps.waits[0]  # exponential backoff


async def test_a_failure_that_persists_ends_as_unavailable_after_the_attempts() -> None:
    async with InsightsDouble(KEY) as double:
        for n in range(1, 4):
            double.fail(after=n, status=502)
        async with client(double) as insights:
            with pytest.raises(Unavailable, match="failed 3 times in a row"):
                await insights.rooms()
    assert len(double.requests) == 3


async def test_an_unreachable_api_is_unavailable() -> None:
    api = WherebyApi(url=f"http://127.0.0.1:{free_port()}/v1", key=KEY, timeout_s=2)
    async with InsightsClient(api, policy=FAST, sleep=Sleeps()) as insights:
        with pytest.raises(Unavailable, match="is WHEREBY_API_URL right"):
            await insights.rooms()


@pytest.mark.parametrize(
    "body",
    [
        b'{"cursor": null, "results": "many"}',
        b'{"cursor": {"page": 2}, "results": []}',
        b"[]",
        b'{"cursor": null, "results": [' + b'{"roomName": "/acme-x"},' * 200_000 + b"{}]}",  # ~5 MB over 4 MiB cap
    ],
    ids=["results-not-a-list", "cursor-not-a-string", "not-an-object", "huge-page"],
)
async def test_answers_that_are_not_insights_pages_are_retried_then_refused(body: bytes) -> None:
    async with InsightsDouble(KEY) as double:
        for n in range(1, 4):
            double.answer(after=n, body=body)
        policy = Policy(backoff_base_s=0.01, max_attempts=3, max_body_bytes=4 * 1024 * 1024)
        async with client(double, policy=policy) as insights:
            with pytest.raises(Unavailable):
                await insights.rooms()


async def test_rows_with_wrong_types_are_skipped_and_counted() -> None:
    rows = (
        b'{"cursor": null, "results": [{"roomName": "/acme-1"}, {"roomName": 5}, "text", null,'
        b' {"roomName": "/acme-2", "totalSessions": "many", "createdAt": "soon"}]}'
    )
    async with InsightsDouble(KEY) as double:
        double.answer(after=1, body=rows)
        async with client(double) as insights:
            rooms = await insights.rooms()
    assert [r.room_name for r in rooms] == ["/acme-1", "/acme-2"]
    assert rooms[1].total_sessions is None and rooms[1].created_at_ms is None
    assert insights.skipped == {"rooms": 3}


async def test_a_cursor_that_repeats_is_an_error_not_a_loop() -> None:
    page = b'{"cursor": "same", "results": []}'
    async with InsightsDouble(KEY) as double:
        double.answer(after=1, body=page)
        double.answer(after=2, body=page)
        async with client(double) as insights:
            with pytest.raises(InsightsError, match="same cursor twice"):
                await insights.rooms()


async def test_the_points_budget_paces_requests() -> None:
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    async with InsightsDouble(KEY, page_size=1) as double:
        populate(double, rooms=4)
        api = WherebyApi(url=double.url, key=KEY, points_per_minute=6)  # two calls of 3 points a minute
        budget = PointsBudget(6, clock=lambda: now[0], sleep=sleep)
        async with InsightsClient(api, budget=budget, policy=FAST) as insights:
            rooms = await insights.rooms()
    assert len(rooms) == 4
    assert budget.waited_s == pytest.approx(60.0)  # 4 pages: the third and fourth wait for a new minute


async def test_an_api_that_refuses_the_unfiltered_listing_still_gets_the_prefixed_rooms_checked() -> None:
    registry = registry_of([(b"customer:c-acme", b'{"customer_id": "c-acme", "room_name_prefixes": ["acme-"]}')])
    async with InsightsDouble(KEY) as double:
        populate(double, rooms=2)
        double.answer(after=2, body=b'{"error": "roomName filter required"}', status=400)
        async with client(double) as insights:
            rooms = await discover_rooms(insights, registry, unresolved=True)
    assert sorted(rooms) == ["/acme-0000", "/acme-0001"]


async def test_a_numeric_cursor_is_passed_back_as_it_came() -> None:
    async with InsightsDouble(KEY) as double:
        double.answer(after=1, body=b'{"cursor": 2, "results": [{"roomName": "/acme-1"}]}')
        double.answer(after=2, body=b'{"cursor": null, "results": [{"roomName": "/acme-2"}]}')
        async with client(double) as insights:
            rooms = await insights.rooms()
    assert [r.room_name for r in rooms] == ["/acme-1", "/acme-2"]
    assert double.requests[1].query["cursor"] == "2"
