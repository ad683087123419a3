"""The read API against generated requests, over real HTTP on the real engine: every answer is 200, 400
or 401 with a JSON body, never a 500, whatever the parameter names, values and Authorization header.

Each of these answered 500 before: `limit=²` (a digit `int()` takes but the range check did not
expect), an `Authorization` header that is not UTF-8, and a cursor carrying a number out of Int64's range.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.httpserver import HttpLimits, HttpServer
from pipeline.runner import build_app
from sink.read import queries, readapi
from tests.integration.test_sink_model import engine, meeting, records, write  # noqa: F401  (engine: fixture)

pytestmark = pytest.mark.integration

TOKEN = "t0k3n-for-the-fuzzer-0123456789"
# The parameters each endpoint takes (anything else is a 400 of its own, which the fuzzer also sends).
PAGED = ["sortBy", "cursor", "limit"]
GROUPED = ["group_by", "group_limit"]
ALLOWED = {
    "/usage/customers": ["from", "to", *GROUPED],
    "/usage/customer-days": ["from", "to", "customer_id", "unresolved"],
    "/usage/users": ["from", "to", "customer_id", "unresolved", *GROUPED],
    "/live/rooms": ["customer_id", "unresolved"],
    "/sessions/arrivals": ["from", "to", "customer_id", "unresolved", "cursor", "limit"],
    "/usage/rooms": ["from", "to", "customer_id", "unresolved"],
    "/insights/rooms": ["roomNamePrefix", "customer_id", "unresolved", *PAGED],
    "/insights/room-sessions": ["roomName", "roomSessionId", *PAGED],
    "/insights/participants": ["roomSessionId", "externalId", "userId", "userKey", *PAGED],
    "/archive/raw": ["from", "to", "cursor", "limit"],
}
# aiohttp reads request lines of up to 8,190 bytes (its `max_line_size`); the method and version take a few.
MAX_REQUEST_LINE = 8190 - len("GET  HTTP/1.1")
SORTS = [
    "roomName",
    "totalParticipantMinutes",
    "totalSessions",
    "lastSessionStartedAt",
    "startedAt",
    "joinedAt",
    "leftAt",
    "receivedAt",
]


class _Reader:
    name = "read"

    def __init__(self, client: Client, db: str) -> None:
        self._routes = readapi.routes(readapi.client_runner(lambda: client), db, token=TOKEN)

    def ready(self) -> bool:
        return True

    def routes(self) -> list[web.RouteDef]:
        return self._routes


@dataclass
class Served:
    """The read API served by `pipeline.httpserver` on a loop in its own thread (the fuzzer is synchronous)."""

    port: int = 0
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)


@pytest.fixture
def served(engine: tuple[Client, str]) -> Iterator[Served]:  # noqa: F811
    client, db = engine
    write(client, db, records(meeting("/acme-standup") + meeting("/stranger-call", customer=None)))
    target = Served()
    ready = threading.Event()
    server = HttpServer(build_app(_Reader(client, db)), "127.0.0.1", 0, HttpLimits())  # type: ignore[arg-type]

    def run() -> None:
        asyncio.set_event_loop(target.loop)
        target.loop.run_until_complete(server.start())
        target.port = server.port
        ready.set()
        target.loop.run_forever()
        target.loop.run_until_complete(server.stop())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield target
    finally:
        target.loop.call_soon_threadsafe(target.loop.stop)
        thread.join(30)


# ---------------------------------------------------------------------------------------------- strategies

# Superscripts, Arabic-Indic, fullwidth and mathematical digits, a Roman numeral and a vulgar fraction:
# str.isdigit() or int() take some of them.
UNICODE_DIGITS = st.sampled_from(
    ["\u00b2", "\u00b3", "\u00b9\u2070", "\u0661\u0662", "\u0663", "\uff10", "\U0001d7d7", "\u216b", "\u00bd",
     "10\u00b2", "\u0660\u0660\u0661"]
)  # fmt: skip
HUGE_NUMBERS = st.integers(min_value=-(10**30), max_value=10**30).map(str) | st.sampled_from(
    ["9" * 5000, "1e999", "-0", "NaN", "inf", "0x10", "1_000", " 5", "5 "]
)
CONTROL = st.text(alphabet=st.characters(max_codepoint=0x9F, categories=("Cc",)), max_size=5)
ISO = st.sampled_from(
    ["2026-01-01", "2026-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2026-02-30",
     "2026-01-01T25:00:00", "20260101", "2026-W01-1", "2026-01-01T00:00:00ZZ", "\uff12\uff10\uff12\uff16-01-01"]
)  # fmt: skip
CURSOR_KEYS = st.lists(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.text(max_size=20),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False),
    ),
    max_size=4,
)


def raw_cursor(doc: Any) -> str:
    """A cursor as the API encodes one (`queries.encode_cursor`), but from any JSON document: `json`, unlike
    orjson, writes integers of any size, which is what a forged cursor may carry."""
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


ROOMS_FINGERPRINT = queries._fingerprint("/insights/rooms", {})


@st.composite
def cursors(draw: st.DrawFn) -> str:
    """Well-formed cursors with hostile keys (and matching or mismatched sort and fingerprint), or junk."""
    kind = draw(st.sampled_from(["ours", "json", "bytes"]))
    if kind == "ours":
        sort = draw(st.sampled_from(SORTS)) + draw(st.sampled_from([":asc", ":desc", ""]))
        fingerprint = draw(st.sampled_from(["0" * 16, ROOMS_FINGERPRINT]))
        return raw_cursor({"s": sort, "f": fingerprint, "k": draw(CURSOR_KEYS)})
    if kind == "json":
        return raw_cursor(
            draw(st.dictionaries(st.sampled_from(["s", "f", "k", "x"]), st.one_of(CURSOR_KEYS, st.text())))
        )
    return base64.urlsafe_b64encode(draw(st.binary(max_size=40))).decode()


VALUES = st.one_of(
    st.text(max_size=40),
    UNICODE_DIGITS,
    HUGE_NUMBERS,
    CONTROL,
    ISO,
    cursors(),
    st.sampled_from(["true", "false", "", "roomName:asc", "totalSessions:desc", "joinedAt:sideways", "acme-"]),
    # group_by: a metadata key, then anything after the prefix (quotes, placeholders, control characters).
    st.builds(lambda key: "metadata." + key, st.text(max_size=70)),
    st.sampled_from(["metadata.plan", "metadata.", "metadata.{group_key:String}", "plan", "metadata.a'b"]),
)


def mostly(likely: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`likely` four times in five: the fuzzer should mostly get past one check to reach the next."""
    return st.integers(0, 4).flatmap(lambda n: likely if n else other)


@st.composite
def query_strings(draw: st.DrawFn, path: str) -> str:
    """A query string for `path`: its own and invented names, hostile values, sometimes raw (invalid
    UTF-8) escapes."""
    names = mostly(st.sampled_from(ALLOWED[path]), st.text(min_size=1, max_size=12))
    pairs = draw(st.lists(st.tuples(names, VALUES), max_size=5))
    parts = [f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in pairs]
    if draw(st.integers(0, 4)) == 0:
        raw = draw(st.binary(min_size=1, max_size=12))
        parts.append(urllib.parse.quote_from_bytes(raw, safe="") + "=" + urllib.parse.quote_from_bytes(raw[::-1]))
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(st.sampled_from(["limit=1", "limit=%C2%B2", "%ff%fe=1", "=", "&&", "a", "limit=%00"])))
    return "&".join(parts)


# Any bytes a header value may carry (RFC 9110: visible ASCII, space, tab and obs-text 0x80-0xFF, so
# anything that is not UTF-8); other control bytes are a malformed request that aiohttp refuses before
# any handler runs.
HEADER_BYTES = st.binary(max_size=60).filter(lambda b: all(c in (9, 32) or 33 <= c <= 126 or c >= 128 for c in b))
VALID_TOKEN = st.sampled_from([f"Bearer {TOKEN}".encode(), f"bearer   {TOKEN}  ".encode()])
AUTHORIZATION = mostly(
    VALID_TOKEN,
    st.one_of(
        HEADER_BYTES,
        st.builds(lambda b: b"Bearer " + b, HEADER_BYTES),
        st.just(b"Bearer \xff\xfe"),
        st.just("Bearer tökén".encode()),
        st.none(),
    ),
)


@dataclass(frozen=True)
class Request:
    path: str
    query: str
    authorization: bytes | None

    def target(self) -> str:
        return self.path + ("?" + self.query if self.query else "")


REQUESTS = st.sampled_from(sorted(queries.ENDPOINTS)).flatmap(
    lambda path: st.builds(Request, st.just(path), query_strings(path), AUTHORIZATION)
)


def test_malformed_parameters_and_headers_get_400_or_401_with_json_never_500(served: Served) -> None:
    seen: dict[int, int] = {}

    @settings(
        max_examples=600,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(REQUESTS)
    def one(request: Request) -> None:
        headers: dict[str, Any] = {} if request.authorization is None else {"Authorization": request.authorization}
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
        try:
            conn.request("GET", request.target(), headers=headers)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        seen[response.status] = seen.get(response.status, 0) + 1
        assert response.status in (200, 400, 401), (request, response.status, payload[:300])
        if len(request.target()) > MAX_REQUEST_LINE:
            return  # aiohttp's own 400 (plain text) for a request line it will not read; no handler ran
        assert response.getheader("Content-Type", "").startswith("application/json"), (request, payload[:300])
        doc = orjson.loads(payload)
        if response.status != 200:
            assert isinstance(doc["error"], str) and doc["error"], (request, doc)

    one()
    assert set(seen) == {200, 400, 401}, seen  # the fuzzer reached every kind of answer


@pytest.mark.parametrize(
    ("target", "authorization"),
    [
        ("/insights/rooms?limit=%C2%B2", f"Bearer {TOKEN}".encode()),  # limit=²
        ("/usage/customers", b"Bearer \xff\xfe\xfd"),  # not UTF-8
        (
            "/insights/rooms?sortBy=totalSessions:asc&cursor="
            + raw_cursor({"s": "totalSessions:asc", "f": ROOMS_FINGERPRINT, "k": [2**63, "r"]}),
            f"Bearer {TOKEN}".encode(),
        ),
        (
            "/insights/rooms?sortBy=totalSessions:desc&cursor="
            + raw_cursor({"s": "totalSessions:desc", "f": ROOMS_FINGERPRINT, "k": [2**64 - 1, "r"]}),
            f"Bearer {TOKEN}".encode(),
        ),
    ],
    ids=["limit-superscript-two", "authorization-not-utf8", "cursor-beyond-int64", "cursor-at-uint64-max"],
)
def test_the_three_known_500s_are_answered_as_client_errors(served: Served, target: str, authorization: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        conn.request("GET", target, headers={"Authorization": authorization})
        response = conn.getresponse()
        doc = orjson.loads(response.read())
    finally:
        conn.close()
    assert response.status in (400, 401), doc
    assert doc["error"]
