"""The read API and the usage page, as aiohttp routes for whichever process owns a ClickHouse client.

In the embedded default (`chdb://`) only the sink may open the store, so the sink serves these routes
next to its health and metrics endpoints; against a ClickHouse server `whereby-pipeline serve-api`
serves them on their own (:mod:`sink.readservice`). Both hand :func:`routes` a query runner; the
queries themselves are in :mod:`sink.queries` and run in a worker thread (the ClickHouse client blocks;
chdb tolerates concurrent use from threads, so the sink's writer keeps going meanwhile).

Access: the data endpoints require `Authorization: Bearer <READ_API_TOKEN>` whenever a token is set,
and :func:`check_access` refuses to start a server that listens beyond loopback without one. The page
and its script carry no data and no secret, so they are served openly; the page asks for the token
when the API answers 401.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter

from pipeline.settings import ConfigError
from sink import queries, store

log = logging.getLogger(__name__)

QueryRunner = Callable[[str, dict[str, Any]], list[dict[str, Any]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MIN_TOKEN_LENGTH = 16

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


def client_runner(get_client: Callable[[], Client | None]) -> QueryRunner:
    """A query runner over the client `get_client` returns at the time of each request."""

    def run(sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        client = get_client()
        if client is None:
            raise StoreUnavailable
        return store.query_dicts(client, sql, params)

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
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _data_handler(path: str, builder: queries.Builder, run: QueryRunner, database: str, token: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if not _authorized(request, token):
            REQUESTS.labels(path, "unauthorized").inc()
            return _json(
                {"error": "missing or wrong bearer token (Authorization: Bearer <READ_API_TOKEN>)"},
                401,
                {"WWW-Authenticate": 'Bearer realm="whereby-usage"'},
            )
        try:
            repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
            if repeated:
                raise queries.BadParameter(f"parameter(s) given more than once: {', '.join(repeated)}")
            query = builder(database, {k: request.query[k] for k in request.query})
        except queries.BadParameter as exc:
            REQUESTS.labels(path, "bad_request").inc()
            return _json({"error": str(exc)}, 400)
        try:
            rows = await asyncio.to_thread(run, query.sql, query.params)
        except StoreUnavailable:
            REQUESTS.labels(path, "unavailable").inc()
            return _json({"error": "the store is not open yet (starting or stopping); retry shortly"}, 503)
        except Exception as exc:
            REQUESTS.labels(path, "error").inc()
            # The SQL is constant and values are bound server-side, so the message names no display name.
            log.error(f"read query failed: {exc}", extra={"endpoint": path})
            return _json({"error": "query failed; see the server log"}, 500)
        REQUESTS.labels(path, "ok").inc()
        return _json(queries.result(query, rows))

    return handle


def _asset_handler(name: str, content_type: str) -> Handler:
    body = resources.files("sink").joinpath("web", name).read_bytes()

    async def handle(_: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_PAGE_HEADERS)

    return handle


def routes(run: QueryRunner, database: str, *, token: str = "") -> list[web.RouteDef]:
    """The read API (`/usage/*`, `/insights/*`) and the page (`/`, `/static/*`)."""
    data = [
        web.get(path, _data_handler(path, builder, run, database, token)) for path, builder in queries.ENDPOINTS.items()
    ]
    page = [web.get(path, _asset_handler(name, kind)) for path, (name, kind) in _ASSETS.items()]
    return [*data, *page]
