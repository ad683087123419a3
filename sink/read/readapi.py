"""The read API and the usage page, as aiohttp routes for whichever process owns a ClickHouse client.

In the embedded default (`chdb://`) only the sink may open the store, so the sink serves these routes
next to its health and metrics endpoints; against a ClickHouse server `whereby-pipeline serve-api`
serves them on their own (:mod:`sink.read.readservice`). Both hand :func:`routes` a query runner; the
queries themselves are in :mod:`sink.read.queries`.

Queries run read-only and bounded in time (`store.read_settings`, READ_QUERY_TIMEOUT_S) in the read API's
own threads (:class:`ReadPool`, READ_QUERY_THREADS): the ClickHouse client blocks, and the sink's writer
inserts from asyncio's default executor, so a burst of slow reads can neither delay an insert nor wait
behind one. Past a bounded queue a request is answered 503 rather than held.

Every request parameter is checked before anything runs, and any malformed one is answered 400 with a
JSON error: names and values must be text of bounded length; the rest is `sink.read.queries`' parsing.

Access: the data endpoints require `Authorization: Bearer <READ_API_TOKEN>` whenever a token is set,
and :func:`check_access` refuses to start a server that listens beyond loopback without one. The page
and its script carry no data and no secret, so they are served openly; the page asks for the token
when the API answers 401.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client
from multidict import MultiMapping
from prometheus_client import Counter

from pipeline.settings import ConfigError
from sink import store
from sink.errors import error_code
from sink.read import queries

log = logging.getLogger(__name__)

QueryRunner = Callable[[str, dict[str, Any]], list[dict[str, Any]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MIN_TOKEN_LENGTH = 16
DEFAULT_QUERY_THREADS = 4
DEFAULT_QUERY_TIMEOUT_S = 30.0
# Requests waiting for a read thread, per thread, before new ones are answered 503.
QUEUED_PER_THREAD = 8
# Longest parameter name and value accepted (a URL is at most 8 KiB anyway); ids are far shorter.
MAX_PARAMETER_CHARS = 1024
# ClickHouse's TIMEOUT_EXCEEDED: the query ran longer than max_execution_time.
TIMEOUT_EXCEEDED = 159

REQUESTS = Counter(
    "whereby_read_api_requests_total",
    "Read API requests by endpoint and answer (ok, bad_request, unauthorized, unavailable, error)",
    ["endpoint", "outcome"],
)

# The page may talk to its own origin only; nothing is loaded from anywhere else.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSETS = {
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/style.css": ("style.css", "text/css"),
}


class StoreUnavailable(Exception):
    """No ClickHouse client yet (starting) or any more (stopping)."""


class Busy(Exception):
    """Every read thread is taken and the queue in front of them is full."""


class ReadPool:
    """The read API's own bounded thread pool; the owning service closes it when it stops."""

    def __init__(self, threads: int = DEFAULT_QUERY_THREADS) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="read-query")
        self._limit = threads * (1 + QUEUED_PER_THREAD)
        self._pending = 0

    @property
    def pending(self) -> int:
        """Queries running or queued now."""
        return self._pending

    async def run(self, run: QueryRunner, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """`run(sql, params)` in one of the pool's threads; Busy when too many are running and queued."""
        if self._pending >= self._limit:
            raise Busy
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run, sql, params)
        finally:
            self._pending -= 1

    def close(self) -> None:
        """Stop taking queries; the running ones finish in their threads. Idempotent."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: assume reachable from elsewhere


def check_access(host: str, token: str, *, host_variable: str = "SINK_HOST") -> None:
    """Refuse to serve data beyond loopback without a token (ConfigError, one line, says what to set)."""
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"READ_API_TOKEN must be at least {MIN_TOKEN_LENGTH} characters; use a long random secret")
    if not token and not is_loopback(host):
        raise ConfigError(
            f"{host_variable}={host} exposes the read API beyond this machine: set READ_API_TOKEN to a long random "
            f"secret (clients send 'Authorization: Bearer <token>'), or set {host_variable}=127.0.0.1"
        )


def client_runner(
    get_client: Callable[[], Client | None], *, timeout_s: float = DEFAULT_QUERY_TIMEOUT_S
) -> QueryRunner:
    """A query runner over the client `get_client` returns at the time of each request; every query runs
    read-only and is stopped by the server after `timeout_s` (see `store.read_settings`)."""
    settings = store.read_settings(timeout_s)

    def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        client = get_client()
        if client is None:
            raise StoreUnavailable
        return store.query_dicts(client, sql, params, settings)

    return run


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _authorized(request: web.Request, token: str) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # aiohttp hands header bytes that are not UTF-8 over as lone surrogates: encode them back to the bytes
    # that were sent (which then simply do not match) instead of failing on them.
    sent = given.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent, token.encode())


def request_args(query: MultiMapping[str]) -> dict[str, str]:
    """The query string as a flat mapping; BadParameter for a repeated name or an unusable name or value.

    yarl has already decoded it (invalid UTF-8 became U+FFFD); what is left to refuse is size, NUL and
    text that is not valid Unicode, none of which any parameter of ours can hold.
    """
    repeated = sorted({k for k in query if len(query.getall(k)) > 1})
    if repeated:
        raise queries.BadParameter(f"parameter(s) given more than once: {', '.join(r[:40] for r in repeated)}")
    args: dict[str, str] = {}
    for name in query:
        value = query[name]
        for text, what in ((name, "a parameter name"), (value, f"parameter {name[:40]!r}")):
            if len(text) > MAX_PARAMETER_CHARS:
                raise queries.BadParameter(f"{what} is longer than {MAX_PARAMETER_CHARS} characters")
            if "\x00" in text or not _is_unicode(text):
                raise queries.BadParameter(f"{what} holds a NUL or text that is not valid Unicode")
        args[name] = value
    return args


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def _data_handler(
    path: str, builder: queries.Builder, run: QueryRunner, database: str, token: str, pool: ReadPool
) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if not _authorized(request, token):
            REQUESTS.labels(path, "unauthorized").inc()
            return _json(
                {"error": "missing or wrong bearer token (Authorization: Bearer <READ_API_TOKEN>)"},
                401,
                {"WWW-Authenticate": 'Bearer realm="whereby-usage"'},
            )
        try:
            query = builder(database, request_args(request.query))
        except queries.BadParameter as exc:
            REQUESTS.labels(path, "bad_request").inc()
            return _json({"error": str(exc)}, 400)
        except Exception as exc:  # a parameter the parsing did not foresee: our bug, but still a JSON answer
            REQUESTS.labels(path, "error").inc()
            log.error(f"read parameters not parsed: {type(exc).__name__}", extra={"endpoint": path})
            return _json({"error": "the request could not be parsed; see the server log"}, 500)
        try:
            rows = await pool.run(run, query.sql, query.params)
        except StoreUnavailable:
            REQUESTS.labels(path, "unavailable").inc()
            return _json({"error": "the store is not open yet (starting or stopping); retry shortly"}, 503)
        except Busy:
            REQUESTS.labels(path, "unavailable").inc()
            return _json({"error": "too many read queries at once; retry shortly"}, 503, {"Retry-After": "1"})
        except Exception as exc:
            if error_code(exc) == TIMEOUT_EXCEEDED:
                REQUESTS.labels(path, "unavailable").inc()
                return _json({"error": "the query took longer than READ_QUERY_TIMEOUT_S; narrow the range"}, 503)
            REQUESTS.labels(path, "error").inc()
            # The SQL is constant and values are bound server-side, so the message names no display name.
            log.error(f"read query failed: {exc}", extra={"endpoint": path})
            return _json({"error": "query failed; see the server log"}, 500)
        try:
            doc = queries.result(query, rows)
        except Exception as exc:  # rows of an unexpected shape: our bug, but still a JSON answer
            REQUESTS.labels(path, "error").inc()
            log.error(f"read result not shaped: {type(exc).__name__}", extra={"endpoint": path})
            return _json({"error": "the result could not be read; see the server log"}, 500)
        REQUESTS.labels(path, "ok").inc()
        return _json(doc)

    return handle


def _asset_handler(name: str, content_type: str) -> Handler:
    body = resources.files("sink.read").joinpath("web", name).read_bytes()

    async def handle(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_PAGE_HEADERS)

    return handle


def routes(
    run: QueryRunner,
    database: str,
    *,
    token: str = "",
    pool: ReadPool | None = None,
    stale_after_s: float = queries.DEFAULT_STALE_AFTER_S,
) -> list[web.RouteDef]:
    """The read API (`/usage/*`, `/insights/*`, `/sessions/*`, `/live/*`) and the page (`/`, `/static/*`);
    queries run in `pool` (a pool of its own when not given, e.g. in tests). `stale_after_s` is
    STALE_CONNECTION_S: `/live/rooms` shows connections open longer as stale."""
    pool = pool or ReadPool()
    data = [
        web.get(path, _data_handler(path, builder, run, database, token, pool))
        for path, builder in queries.endpoints(stale_after_s=stale_after_s).items()
    ]
    page = [web.get(path, _asset_handler(name, kind)) for path, (name, kind) in _ASSETS.items()]
    return [*data, *page]
