"""ClickHouse's HTTP interface on the embedded store, read-only, for BI tools (Grafana, Metabase, curl).

With `CLICKHOUSE_URL=chdb://…` no other process can open the store, so the sink serves the part of
ClickHouse's HTTP protocol that query clients use, on `SQL_HOST:SQL_PORT` (127.0.0.1:8123 by default;
`SQL_PORT=0` turns it off; against a ClickHouse server it is never started: the server has its own).
What it speaks, as the server does (see `sink/README.md`, "SQL over HTTP", for the list):

- `GET|POST /` with the query in `query=` and/or the body (joined by a newline), or in a
  `multipart/form-data` field; `param_<name>` for `{name:Type}` bound server-side; `database=` or
  `X-ClickHouse-Database`; `default_format=` or `X-ClickHouse-Format` (a `FORMAT` clause wins);
  settings as URL parameters; `client_protocol_version` for `Native`; `query_id`.
- Credentials as a server takes them: HTTP basic, `X-ClickHouse-User`/`X-ClickHouse-Key`, or
  `user=`/`password=`, never two at once. The password is `READ_API_TOKEN`; any user name is accepted.
- Answers with the `X-ClickHouse-*` headers clients read; response compression chosen from
  `Accept-Encoding` in the server's order (zstd, lz4, gzip, deflate, xz, bz2); errors with the status,
  the `X-ClickHouse-Exception-Code` header and the `Code: N. DB::Exception: …` text of the server.
- `GET /ping` (and `/`, `/replicas_status`) answer `Ok.`.

The whole result is computed before the first byte is sent (as with `wait_end_of_query=1`), so an error
always arrives as a clean status, never after rows. Queries run in this module's own bounded thread
pool (never the default executor that the sink's writer uses), at most SQL_MAX_CONCURRENT at once; a
query waits up to QUEUE_WAIT_S for a slot and is then refused with TOO_MANY_SIMULTANEOUS_QUERIES.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bz2
import concurrent.futures
import dataclasses
import gzip
import hmac
import logging
import lzma
import secrets
import string
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import lz4.frame
import orjson
from aiohttp import BodyPartReader, web
from backports import zstd
from multidict import MultiDict
from prometheus_client import Counter, Histogram

from pipeline.settings import ConfigError, SinkSettings
from sink.read import readapi, sqlerrors
from sink.read.sqlengine import EmbeddedSql, Limits, SqlRequest, SqlResult
from sink.read.sqlerrors import ClickHouseError

log = logging.getLogger(__name__)

QUEUE_WAIT_S = 5.0  # like a server's queue_max_wait_ms: how long a query waits for a free slot
BODY_TIMEOUT_S = 10.0  # the whole request body must arrive within this (a slow client holds no slot)
GRACE_S = 2.0  # past the engine's own time limit, answer the client anyway
STOP_TIMEOUT_S = 5.0  # requests in progress at shutdown get this long to finish
DEFAULT_RESPONSE = b"Ok.\n"
REALM = 'Basic realm="ClickHouse server HTTP API"'

REQUESTS = Counter(
    "whereby_sql_http_requests_total",
    "Requests to the embedded SQL interface by answer: ok, client_error, unauthorized, refused, timeout, "
    "overloaded, error",
    ["outcome"],
)
QUERY_SECONDS = Histogram(
    "whereby_sql_http_query_seconds",
    "Queries of the embedded SQL interface: admitted → answered",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

# Request parameters the HTTP layer consumes; every other parameter is a setting.
_TRANSPORT = frozenset(
    {
        "query", "database", "default_format", "user", "password", "quota_key", "query_id", "session_id",
        "session_timeout", "session_check", "close_session", "compress", "decompress", "buffer_size",
        "wait_end_of_query", "client_protocol_version", "stacktrace", "role",
    }
)  # fmt: skip
# Response compression in the order a server prefers it (chooseHTTPCompressionMethod), with what we have.
_ENCODINGS: tuple[tuple[str, Callable[[bytes], bytes]], ...] = (
    ("zstd", lambda data: zstd.compress(data)),
    ("lz4", lambda data: lz4.frame.compress(data)),
    ("gzip", lambda data: gzip.compress(data, compresslevel=3)),
    ("deflate", lambda data: zlib.compress(data, 3)),
    ("xz", lambda data: lzma.compress(data)),
    ("bz2", lambda data: bz2.compress(data)),
)
_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
_BINARY_FORMATS = ("Native", "RowBinary", "Parquet", "Arrow", "ArrowStream", "ORC", "Avro", "Npy", "MsgPack")
_TEXT = "text/plain; charset=UTF-8"


@dataclass(frozen=True)
class Config:
    """The interface's settings (SQL_* and READ_API_TOKEN; see the README's configuration table)."""

    host: str
    port: int
    token: str
    timeout_s: float
    max_concurrent: int
    max_result_bytes: int
    max_query_bytes: int
    queue_wait_s: float = QUEUE_WAIT_S
    body_timeout_s: float = BODY_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: SinkSettings) -> Config:
        """The interface's part of the pipeline settings."""
        return cls(
            host=settings.sql_host,
            port=settings.sql_port,
            token=settings.read_api_token,
            timeout_s=settings.sql_query_timeout_s,
            max_concurrent=settings.sql_max_concurrent,
            max_result_bytes=settings.sql_max_result_bytes,
            max_query_bytes=settings.sql_max_query_bytes,
        )


def check_access(host: str, token: str) -> None:
    """Refuse to serve SQL beyond loopback without READ_API_TOKEN (ConfigError says what to set)."""
    readapi.check_access(host, token, host_variable="SQL_HOST")


async def start_for(settings: SinkSettings, *, port: int | None = None) -> SqlHttpServer | None:
    """Start the interface when the store is embedded and SQL_PORT is not 0; None otherwise.

    `port` overrides SQL_PORT (tests pass a free port).
    """
    url = settings.clickhouse_url
    config = Config.from_settings(settings)
    if port is not None:
        config = dataclasses.replace(config, port=port)
    if not url.startswith("chdb://") or config.port == 0:
        return None
    check_access(config.host, config.token)
    limits = Limits(timeout_s=config.timeout_s, max_result_bytes=config.max_result_bytes)
    engine = EmbeddedSql(url.removeprefix("chdb://").split("?", 1)[0], settings.clickhouse_database, limits)
    server = SqlHttpServer(engine, config)
    await server.start()
    return server


class SqlHttpServer:
    """The HTTP interface over one :class:`EmbeddedSql`, with its own thread pool and listener."""

    def __init__(self, engine: EmbeddedSql, config: Config) -> None:
        self.engine = engine
        self.config = config
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self._runner: web.AppRunner | None = None
        self.port = config.port

    async def start(self) -> None:
        """Read the engine's version and time zone, then listen (ConfigError if the port is taken)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.config.max_concurrent, thread_name_prefix="sql-http"
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.engine.probe)
        app = web.Application(handler_args={"max_field_size": 16 * 1024, "max_line_size": 64 * 1024})
        app.router.add_route("*", "/", self._root)
        app.router.add_route("GET", "/ping", self._ok)
        app.router.add_route("GET", "/replicas_status", self._ok)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # Bodies are decompressed here, bounded (aiohttp's own decompression has no size limit).
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_TIMEOUT_S, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise ConfigError(
                f"cannot listen on SQL_HOST={self.config.host} SQL_PORT={self.config.port}: {exc.strerror}; "
                "set another SQL_PORT, or SQL_PORT=0 to turn the SQL interface off"
            ) from None
        for address in self._runner.addresses:  # the bound port, when SQL_PORT asked for any free one
            self.port = int(address[1])
        log.info(
            f"ClickHouse HTTP interface (read-only) on http://{self.config.host}:{self.port}",
            extra={"service": "sink"},
        )

    async def stop(self) -> None:
        """Stop listening, give requests in progress STOP_TIMEOUT_S, and drop queued work. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        pool, self._pool = self._pool, None
        if pool is not None:
            # A query still running ends by its own time limit; nobody waits for it here.
            pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------------------------- handlers

    async def _ok(self, _: web.Request) -> web.StreamResponse:
        return web.Response(body=DEFAULT_RESPONSE, content_type="text/html", charset="UTF-8")

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        text = (
            f"There is no handle {request.path}\n\nUse / or /ping for health checks.\n"
            "Or /replicas_status for more sophisticated health checks.\n\n"
            "Send queries from your program with POST method or GET /?query=...\n"
        )
        return web.Response(status=404, text=text, content_type="text/plain", charset="UTF-8")

    async def _root(self, request: web.Request) -> web.StreamResponse:
        query_id = request.query.get("query_id") or request.headers.get("X-ClickHouse-Query-Id") or str(uuid.uuid4())
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={"Allow": "GET, POST, HEAD, OPTIONS"})
        if request.method not in ("GET", "POST", "HEAD"):
            return self._error(
                sqlerrors.error(sqlerrors.NOT_IMPLEMENTED, f"Unsupported HTTP method {request.method}", self._version),
                query_id,
                "client_error",
            )
        if request.method in ("GET", "HEAD") and "query" not in request.query and not request.can_read_body:
            return await self._ok(request)
        try:
            user = self._authenticate(request)
        except ClickHouseError as exc:
            return self._error(exc, query_id, "unauthorized")
        try:
            sql_request = await self._read(request, user)
        except ClickHouseError as exc:
            return self._error(exc, query_id, "client_error")
        started = time.monotonic()
        try:
            result, body, encoding = await self._execute(sql_request, request.headers.get("Accept-Encoding", ""))
        except ClickHouseError as exc:
            outcome = (
                "timeout"
                if exc.code == sqlerrors.TIMEOUT_EXCEEDED
                else "overloaded"
                if exc.code == sqlerrors.TOO_MANY_SIMULTANEOUS_QUERIES
                else "refused"
                if exc.code in (sqlerrors.READONLY, sqlerrors.ACCESS_DENIED, sqlerrors.INTO_OUTFILE_NOT_ALLOWED)
                else "client_error"
                if exc.status < 500
                else "error"
            )
            return self._error(exc, query_id, outcome)
        QUERY_SECONDS.observe(time.monotonic() - started)
        REQUESTS.labels("ok").inc()
        headers = {**self._common_headers(query_id), "X-ClickHouse-Format": result.format}
        headers["X-ClickHouse-Summary"] = _summary(result)
        if encoding:
            headers["Content-Encoding"] = encoding
        headers["Content-Type"] = _content_type(result.format)
        return web.Response(body=body, headers=headers)

    # -------------------------------------------------------------------------------------- helpers

    @property
    def _version(self) -> str:
        return self.engine.info.version

    def _common_headers(self, query_id: str) -> dict[str, str]:
        info = self.engine.info
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": info.display_name,
            "X-ClickHouse-Timezone": info.timezone,
            # 26.x servers tag every answer; clients use it to recognise an exception framed after rows.
            "X-ClickHouse-Exception-Tag": "".join(secrets.choice(string.ascii_lowercase) for _ in range(16)),
        }

    def _error(self, exc: ClickHouseError, query_id: str, outcome: str) -> web.Response:
        REQUESTS.labels(outcome).inc()
        headers = {**self._common_headers(query_id), "X-ClickHouse-Exception-Code": str(exc.code)}
        if exc.code == sqlerrors.REQUIRED_PASSWORD:
            headers["WWW-Authenticate"] = REALM
        headers["Content-Type"] = _TEXT
        return web.Response(status=exc.status, body=(exc.text + "\n").encode(), headers=headers)

    def _authenticate(self, request: web.Request) -> str:
        """The user name, once the credentials are taken the way a server takes them and checked."""
        headers, query = request.headers, request.query
        header_user = headers.get("X-ClickHouse-User", "")
        header_key = headers.get("X-ClickHouse-Key", "")
        has_basic = "Authorization" in headers
        has_params = "user" in query or "password" in query

        def fail(text: str) -> ClickHouseError:
            return sqlerrors.error(sqlerrors.AUTHENTICATION_FAILED, text, self._version)

        def both(first: str, second: str) -> ClickHouseError:
            return fail(f"Invalid authentication: it is not allowed to use {first} and {second} simultaneously")

        if headers.get("X-ClickHouse-SSL-Certificate-Auth", "") == "on":
            raise fail(
                "Invalid authentication: SSL certificate authentication requires nonempty certificate's Common "
                "Name or Subject Alternative Name"
            )
        if header_user or header_key:
            if not header_user:
                raise fail("Got an empty user name from X-ClickHouse HTTP headers")
            if has_basic:
                raise both("X-ClickHouse HTTP headers", "Authorization HTTP header")
            if has_params:
                raise both("X-ClickHouse HTTP headers", "authentication via parameters")
            user, password = header_user, header_key
        elif has_basic:
            if has_params:
                raise both("Authorization HTTP header", "authentication via parameters")
            scheme, _, info = headers["Authorization"].partition(" ")
            if scheme.lower() != "basic":
                raise fail(f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not supported")
            try:
                decoded = base64.b64decode(info.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise fail("Invalid authentication: malformed Basic credentials") from None
            user, _, password = decoded.partition(":")
            if not user:
                raise fail("Got an empty user name from Authorization HTTP header")
        else:
            user = query.get("user", "default")
            password = query.get("password", "")
            if not user:
                raise fail("Got an empty user name from authentication via parameters")
        token = self.config.token
        if token and not hmac.compare_digest(password.encode(), token.encode()):
            message = f"{user}: Authentication failed: password is incorrect, or there is no user with such name"
            if user == "default":
                # A 26.x server asks the browser for a password when `default` fails (401, code 194).
                raise sqlerrors.error(
                    sqlerrors.REQUIRED_PASSWORD,
                    message + ".\n\nThe password of the sink's SQL interface is its READ_API_TOKEN.\n\n",
                    self._version,
                )
            raise fail(message)
        return user

    async def _read(self, request: web.Request, user: str) -> SqlRequest:
        """The query, its parameters and settings from the URL, the headers and the body."""
        fields: MultiDict[str] = MultiDict(request.query)
        body = ""
        content_type = request.headers.get("Content-Type", "")
        try:
            async with asyncio.timeout(self.config.body_timeout_s):
                if content_type.startswith("multipart/form-data"):
                    await self._read_form(request, fields)
                elif request.method == "POST":
                    body = await self._read_body(request)
        except (aiohttp.ClientPayloadError, web.HTTPException, ValueError) as exc:
            raise sqlerrors.error(
                sqlerrors.CANNOT_PARSE_INPUT_ASSERTION_FAILED, f"Cannot read the request body: {exc}", self._version
            ) from None
        except TimeoutError:
            waited = self.config.body_timeout_s
            raise sqlerrors.error(
                sqlerrors.TIMEOUT_EXCEEDED,
                f"Timeout exceeded while reading the request body ({waited:g} s)",
                self._version,
            ) from None
        query = fields.get("query", "")
        sql = f"{query}\n{body}" if query and body else query or body
        if len(sql.encode()) > self.config.max_query_bytes:
            raise self._too_large()
        if _flag(fields.get("compress", "0")) or _flag(fields.get("decompress", "0")):
            raise sqlerrors.error(
                sqlerrors.NOT_IMPLEMENTED,
                "compress=1/decompress=1 (ClickHouse's own block compression) is not implemented by the embedded "
                "SQL interface; use HTTP compression (Accept-Encoding: zstd, lz4 or gzip)",
                self._version,
            )
        revision = fields.get("client_protocol_version", "0")
        if not revision.isdigit():
            raise sqlerrors.error(
                sqlerrors.CANNOT_PARSE_NUMBER, f"Cannot parse client_protocol_version {revision!r}", self._version
            )
        params = {k[len("param_") :]: v for k, v in fields.items() if k.startswith("param_")}
        settings = {k: v for k, v in fields.items() if k not in _TRANSPORT and not k.startswith("param_")}
        return SqlRequest(
            sql=sql,
            default_format=fields.get("default_format") or request.headers.get("X-ClickHouse-Format") or "TabSeparated",
            database=fields.get("database") or request.headers.get("X-ClickHouse-Database") or "",
            params=params,
            settings=settings,
            protocol_revision=int(revision),
            user=user,
        )

    async def _read_body(self, request: web.Request) -> str:
        limit = self.config.max_query_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise self._too_large()
        chunks, total = [], 0
        while chunk := await request.content.read(64 * 1024):
            total += len(chunk)
            if total > limit:
                raise self._too_large()
            chunks.append(chunk)
        raw = b"".join(chunks)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding != "identity":
            raw = _decompress(raw, encoding, limit, self._version)
        return _text(raw, self._version)

    async def _read_form(self, request: web.Request, fields: MultiDict[str]) -> None:
        budget = self.config.max_query_bytes
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.filename is not None:
                raise sqlerrors.error(
                    sqlerrors.NOT_IMPLEMENTED, "External tables are not supported by the embedded SQL interface",
                    self._version,
                )  # fmt: skip
            value = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                value += chunk
                budget -= len(chunk)
                if budget < 0:
                    raise self._too_large()
            if part.name:
                fields[part.name] = _text(bytes(value), self._version)

    def _too_large(self) -> ClickHouseError:
        return sqlerrors.error(
            sqlerrors.QUERY_IS_TOO_LARGE,
            f"The query is larger than SQL_MAX_QUERY_BYTES={self.config.max_query_bytes} bytes",
            self._version,
        )

    async def _execute(self, sql_request: SqlRequest, accept: str) -> tuple[SqlResult, bytes, str]:
        """Run the query in the pool, bounded in slots and in time; compress there too."""
        pool = self._pool
        if pool is None:
            raise sqlerrors.error(439, "The SQL interface is stopping", self._version)
        try:
            async with asyncio.timeout(self.config.queue_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise sqlerrors.error(
                sqlerrors.TOO_MANY_SIMULTANEOUS_QUERIES,
                f"Too many simultaneous queries. Maximum: {self.config.max_concurrent}",
                self._version,
            ) from None

        def job() -> tuple[SqlResult, bytes, str]:
            result = self.engine.execute(sql_request)
            encoding, body = _compress(result.body, accept)
            return result, body, encoding

        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(pool, job)
        except RuntimeError:  # the pool was shut down meanwhile
            self._slots.release()
            raise sqlerrors.error(439, "The SQL interface is stopping", self._version) from None
        # The slot is free only when the thread is: an abandoned query still counts against the bound.
        future.add_done_callback(lambda _: self._slots.release())
        limit = self.engine.limits.timeout_s
        try:
            async with asyncio.timeout(limit + GRACE_S):
                return await asyncio.shield(future)
        except TimeoutError:
            raise sqlerrors.error(
                sqlerrors.TIMEOUT_EXCEEDED,
                f"Timeout exceeded: elapsed {(limit + GRACE_S) * 1000:.3f} ms, maximum: {limit * 1000:.3f} ms",
                self._version,
            ) from None


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _text(raw: bytes, version: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise sqlerrors.error(
            sqlerrors.SYNTAX_ERROR, f"The query is not valid UTF-8 (byte {exc.start})", version
        ) from None


def _decompress(raw: bytes, encoding: str, limit: int, version: str) -> bytes:
    """A compressed request body, decompressed to at most `limit` bytes (no decompression bombs)."""
    decompressor: Any
    if encoding == "gzip":
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decompressor = zlib.decompressobj()
    elif encoding == "zstd":
        decompressor = zstd.ZstdDecompressor()
    elif encoding == "lz4":
        decompressor = lz4.frame.LZ4FrameDecompressor()
    elif encoding == "xz":
        decompressor = lzma.LZMADecompressor()
    elif encoding == "bz2":
        decompressor = bz2.BZ2Decompressor()
    else:
        raise sqlerrors.error(sqlerrors.NOT_IMPLEMENTED, f"Unknown compression method {encoding}", version)
    try:
        out: bytes = decompressor.decompress(raw, limit + 1)
    except Exception as exc:
        raise sqlerrors.error(
            sqlerrors.CANNOT_DECOMPRESS, f"Cannot decompress the request body ({encoding}): {exc}", version
        ) from None
    if len(out) > limit:
        raise sqlerrors.error(
            sqlerrors.QUERY_IS_TOO_LARGE, f"The decompressed query is larger than {limit} bytes", version
        )
    return out


def _compress(body: bytes, accept: str) -> tuple[str, bytes]:
    """(Content-Encoding, body) for the client's Accept-Encoding, chosen in the server's order."""
    if not accept or not body:
        return "", body
    for name, compress in _ENCODINGS:
        if name in accept:  # a server matches substrings of the header the same way
            return name, compress(body)
    return "", body


def _content_type(fmt: str) -> str:
    if fmt in _CONTENT_TYPES:
        return _CONTENT_TYPES[fmt]
    if fmt.startswith(_BINARY_FORMATS):
        return "application/octet-stream"
    return _TEXT


def _summary(result: SqlResult) -> str:
    doc = {
        "read_rows": str(result.read_rows),
        "read_bytes": str(result.read_bytes),
        "written_rows": "0",
        "written_bytes": "0",
        "total_rows_to_read": "0",
        "result_rows": "0",
        "result_bytes": str(len(result.body)),
        "elapsed_ns": str(result.elapsed_ns),
    }
    return orjson.dumps(doc).decode()
