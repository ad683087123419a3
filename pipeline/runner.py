"""The service runner: one owner for a stage's lifecycle.

A stage implements :class:`Service`. The runner starts it (failing fast with a one-line message on bad
config), serves `/healthz` (liveness), `/readyz` (readiness) and `/metrics` next to the stage's own
routes on one port, and on SIGTERM/SIGINT stops intake, lets the stage drain and flush, then closes.

One budget bounds the whole stop: SHUTDOWN_TIMEOUT_S (a setting, below the deploy files' grace periods).
Its first part lets HTTP requests in flight finish (`HTTP_FRACTION`), the rest is the stage's drain and
closes (pipeline/stage.py). A second SIGTERM/SIGINT during the stop exits at once (128 + the signal:
143, 130), for an operator who would rather redeliver the batch in hand than wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from pipeline.httpserver import HttpLimits, HttpServer
from pipeline.kafkaerrors import KafkaFatal
from pipeline.settings import CommonSettings, ConfigError

log = logging.getLogger(__name__)

# The part of SHUTDOWN_TIMEOUT_S that requests in flight get to finish once the port stops listening
# (ingest's produce wait is 3 s by default); the stage's own stop has the rest.
HTTP_FRACTION = 0.2


class Service(Protocol):
    """What a stage provides to the runner (pipeline.stage.Stage implements it)."""

    name: str

    @property
    def settings(self) -> CommonSettings:
        """The stage's settings (its own class: IngestSettings, EnrichSettings, SinkSettings, ...)."""

    async def start(self) -> None:
        """Connect and prepare; raise ConfigError for anything the operator must fix."""

    async def run(self) -> None:
        """Do the work until `stop()` is called; returning early or raising means the stage failed."""

    async def stop(self) -> None:
        """Stop intake, finish in-flight work, flush, commit and close. Idempotent."""

    def ready(self) -> bool:
        """True while the stage can do its work (e.g. its broker connection is up)."""

    def alive(self) -> bool:
        """False when the stage's loop is stuck (no progress for LIVENESS_STALL_S): restart it."""

    def idle_s(self) -> float:
        """Seconds since the stage's loop last made progress."""

    def routes(self) -> list[web.RouteDef]:
        """Extra HTTP routes served on the stage's port (may be empty)."""


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(service: Service, *, client_max_size: int = 1024**2) -> web.Application:
    """The stage's HTTP application: its routes plus health, readiness and metrics."""

    async def healthz(_: web.Request) -> web.Response:
        # Liveness means progress: a loop that stopped turning (a hung poll, a deadlock) answers 503, so
        # Kubernetes restarts it; an empty poll is progress. Readiness (below) says whether it can work now.
        # (A service without a loop of its own, e.g. a bare host of routes, has nothing to judge.)
        alive = getattr(service, "alive", None)
        if alive is None or alive():
            return web.json_response({"status": "alive"})
        idle = round(service.idle_s(), 1)
        return web.json_response({"status": "stalled", "idle_s": idle}, status=503)

    async def readyz(_: web.Request) -> web.Response:
        ok = service.ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    app = web.Application(client_max_size=client_max_size)
    app.add_routes(
        [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", _metrics), *service.routes()]
    )
    return app


def http_limits(settings: CommonSettings) -> HttpLimits:
    """The connection limits of a stage's HTTP port (HTTP_MAX_CONNECTIONS, HTTP_IDLE_TIMEOUT_S)."""
    return HttpLimits(max_connections=settings.http_max_connections, idle_timeout_s=settings.http_idle_timeout_s)


async def serve(
    service: Service,
    host: str,
    port: int,
    *,
    limits: HttpLimits | None = None,
    shutdown_timeout_s: float | None = None,
    reuse_port: bool = False,
    instance_port: int = 0,
) -> int:
    """Run `service` with its HTTP endpoints until a signal or a failure; returns a process exit code.

    `reuse_port` and `instance_port`: see :class:`pipeline.httpserver.HttpServer` (several ingest
    workers on one port, each also on a port of its own). `shutdown_timeout_s` defaults to the stage's
    SHUTDOWN_TIMEOUT_S.
    """
    budget_s = float(service.settings.shutdown_timeout_s if shutdown_timeout_s is None else shutdown_timeout_s)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stopping.is_set():
            # The second signal: the operator does not want to wait. Nothing uncommitted is lost (it is
            # consumed again); what was answered 2xx is already on the broker.
            print(f"{service.name}: second {sig.name}, exiting now", file=sys.stderr, flush=True)
            os._exit(128 + sig.value)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    try:
        await service.start()
    except ConfigError as exc:
        log.error(str(exc), extra={"service": service.name})
        with contextlib.suppress(Exception):
            await service.stop()
        return 2
    except Exception as exc:  # an unexpected start failure: one log line with the cause, not a crash dump
        log.error(f"{service.name} failed to start: {exc!r}", extra={"service": service.name}, exc_info=True)
        with contextlib.suppress(Exception):
            await service.stop()
        return 1

    server = HttpServer(
        build_app(service),
        host,
        port,
        limits or HttpLimits(),
        shutdown_timeout_s=budget_s * HTTP_FRACTION,
        reuse_port=reuse_port,
        instance_port=instance_port,
    )
    try:
        await server.start()
    except OSError as exc:
        log.error(f"cannot listen on {host}:{port}: {exc.strerror}; set another port", extra={"service": service.name})
        await service.stop()
        return 2
    for site_port, shared in [(port, reuse_port)] + ([(instance_port, False)] if instance_port else []):
        log.info(
            f"{service.name} listening on http://{host}:{site_port}" + (" (shared port)" if shared else ""),
            extra={"service": service.name},
        )

    work = asyncio.create_task(service.run(), name=f"{service.name}-run")
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({work, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if work.done() and not stopping.is_set():
        failure = work.exception()
        if isinstance(failure, KafkaFatal):  # already one line saying what to fix
            message = f"{service.name} stopped: {failure}"
        else:
            message = (
                f"{service.name} stopped unexpectedly: {failure!r}" if failure else f"{service.name} run loop ended"
            )
        log.error(message, extra={"service": service.name})
        code = 1
    log.info(
        f"{service.name} stopping: draining in-flight work (within {budget_s:.0f}s)", extra={"service": service.name}
    )
    started = time.monotonic()
    # Stop listening first and let in-flight requests finish (bounded), then let the stage drain,
    # flush and commit: a request that got its answer has already been produced.
    await server.stop()
    await service.stop()
    if not work.done():
        # The stage's stop ended its loop (or cancelled it); what is left is a run() that ignored both.
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(work, timeout=max(1.0, budget_s - (time.monotonic() - started)))
    stop_wait.cancel()
    log.info(f"{service.name} stopped in {time.monotonic() - started:.1f}s", extra={"service": service.name})
    return code
