"""The HTTP server every stage listens with: aiohttp, plus the limits an internet-facing endpoint needs.

aiohttp bounds a request's size but not how long a client may hold a connection or how many it may
open. Here:

- **Open connections are capped** (`HTTP_MAX_CONNECTIONS`): a connection beyond the cap is answered
  `503` with `Connection: close` before anything is read (Whereby retries a 5xx), so a flood of
  connections costs file descriptors up to the cap and no more. The cap is an fd budget, not a
  fairness policy: someone able to open that many connections can still crowd the port, which only a
  proxy with per-client limits in front of the receiver can stop (see ingest/README.md).
- **Idle time and header time are bounded** (`HTTP_IDLE_TIMEOUT_S`): aiohttp's keep-alive timer starts
  when a connection opens and again after each response, and closes the connection if no complete
  request head has arrived by then. So one setting bounds both an idle keep-alive connection and a
  client that trickles (or never finishes) its request line and headers.
- **A short lingering close**: after answering a request whose body was not read in full (408, 413,
  415), aiohttp reads and discards what still arrives before closing, so the client is not reset before
  it has read the answer. aiohttp lingers up to 10 s; here `LINGER_S`, so a client that was answered
  408 for withholding its body cannot hold the connection much longer.
- **No transparent decompression**: a `Content-Encoding: gzip` body would be inflated by aiohttp before
  any of our checks; nothing we serve accepts compressed bodies (ingest answers 415 to them).

The body read itself is bounded by the handler that reads it (ingest's `WEBHOOK_BODY_TIMEOUT_S`), since
only it knows what a body is worth waiting for.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

OPEN_CONNECTIONS = Gauge("whereby_http_open_connections", "HTTP connections open on this stage's port")
REFUSED_CONNECTIONS = Counter(
    "whereby_http_refused_connections_total", "HTTP connections refused with 503 because HTTP_MAX_CONNECTIONS were open"
)

# Seconds to read and discard the unread rest of a body after answering (see the module docstring).
LINGER_S = 1.0
# File descriptors kept free of the connection cap: Kafka sockets, the embedded ClickHouse's files, logs.
RESERVED_FDS = 256

_REFUSAL_BODY = b'{"error":"unavailable","detail":"too many open connections; retry shortly"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)


@dataclass(frozen=True)
class HttpLimits:
    """Connection limits of one listening port (see the module docstring)."""

    max_connections: int = 4096
    idle_timeout_s: float = 15.0


class _Refusal(asyncio.Protocol):
    """The protocol of a connection over the cap: answer 503 at once and close, reading nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


class ConnectionGate:
    """The listening socket's protocol factory: aiohttp's request handler for a connection under the cap,
    a 503 refusal over it.

    Open connections are those aiohttp's server tracks (from `connection_made` until the handler
    finished) plus the ones created in this loop iteration whose `connection_made` has not run yet
    (asyncio schedules it with `call_soon` after calling the factory; `_settle`, scheduled just before
    it, moves the connection from one count to the other, so the sum never misses a connection).
    """

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self._server = server
        self._max = max_connections
        self._pending = 0

    @property
    def open(self) -> int:
        """Connections open now (accepted and not yet finished)."""
        return len(self._server.connections) + self._pending

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self._max:
            REFUSED_CONNECTIONS.inc()
            return _Refusal()
        self._pending += 1
        asyncio.get_running_loop().call_soon(self._settle)
        handler: asyncio.BaseProtocol = self._server()
        return handler

    def _settle(self) -> None:
        self._pending -= 1


def usable_connections(wanted: int, reserved: int = RESERVED_FDS) -> int:
    """The connection cap this process can honour: `wanted`, after raising the soft RLIMIT_NOFILE toward
    the hard limit if it is too low for that (any process may), else what the hard limit leaves."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + reserved
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    return max(1, soft - reserved)


class HttpServer:
    """Serves an aiohttp application on one address with :class:`HttpLimits`; `start()`, then `stop()`.

    `reuse_port` lets several processes listen on `port` together (SO_REUSEPORT: the kernel spreads new
    connections over them); `instance_port`, when not 0, serves the same application on a port of this
    process alone, so each of those processes can be probed and scraped on its own. Both listeners share
    one connection cap.
    """

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        limits: HttpLimits,
        *,
        shutdown_timeout_s: float = 10.0,
        reuse_port: bool = False,
        instance_port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.limits = limits
        self.reuse_port = reuse_port
        self.instance_port = instance_port
        self._extra: asyncio.Server | None = None
        self._runner = web.AppRunner(
            app,
            shutdown_timeout=shutdown_timeout_s,
            access_log=None,
            keepalive_timeout=limits.idle_timeout_s,
            lingering_time=LINGER_S,
            auto_decompress=False,
        )
        self._listener: asyncio.Server | None = None
        self._gate: ConnectionGate | None = None
        self._set_up = False

    @property
    def open_connections(self) -> int:
        """Connections open now (0 before start and after stop)."""
        return 0 if self._gate is None else self._gate.open

    @property
    def requests_started(self) -> int:
        """Requests whose head was read and handed to a handler since start (aiohttp's own count)."""
        server = self._runner.server
        return 0 if server is None else server.requests_count

    async def start(self) -> None:
        """Listen (OSError if the address is taken); `port` is the bound port afterwards (for port 0)."""
        await self._runner.setup()
        self._set_up = True
        server = self._runner.server
        assert server is not None
        cap = usable_connections(self.limits.max_connections)
        if cap < self.limits.max_connections:
            log.warning(
                f"HTTP_MAX_CONNECTIONS={self.limits.max_connections} exceeds what the open-files limit allows: "
                f"capping at {cap}; raise `ulimit -n` (RLIMIT_NOFILE) to allow more"
            )
        self._gate = gate = ConnectionGate(server, cap)
        OPEN_CONNECTIONS.set_function(lambda: gate.open)
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(
                gate, self.host, self.port, backlog=1024, reuse_address=True, reuse_port=self.reuse_port or None
            )
            if self.instance_port:
                self._extra = await loop.create_server(
                    gate, self.host, self.instance_port, backlog=1024, reuse_address=True
                )
        except OSError:
            await self.stop()
            raise
        self.port = int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, let in-flight requests finish (bounded by the shutdown timeout), close. Idempotent."""
        for name in ("_listener", "_extra"):
            listener = getattr(self, name)
            if listener is not None:
                setattr(self, name, None)
                listener.close()
        if self._set_up:
            self._set_up = False
            await self._runner.cleanup()
        self._gate = None
