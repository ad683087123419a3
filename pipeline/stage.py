"""One lifecycle for every stage: start, run, a bounded stop, and closes that never skip each other.

    async with EnrichService(settings) as stage:       # start(): open() acquires clients in order
        await stage.run()                              # until stop() (or a failure)
    # stop(): stop intake → drain (bounded) → close everything open() acquired, in reverse order

    Stage.start ──▶ open(stack) ──▶ ready ──▶ run ─┐
                     │ fails: the stack closes      │ SIGTERM
                     ▼ what was opened so far       ▼
                   raise                     Stage.stop ──▶ drain() within the budget ──▶ stack.aclose()

A :class:`Stage` acquires its clients in `open()` through a :class:`contextlib.AsyncExitStack`
(`enter_async_context` for an `async with` client, :meth:`Stage.closing` for one with a `stop()`), so
what was acquired is released in reverse order in one place, whether the start failed half-way or the
stage is stopping. Every close is wrapped so that one that raises is logged (one line) and the closes
after it still run: a consumer that fails to leave its group never keeps the producer from flushing.

A :class:`ConsumerStage` also owns its poll loop: `run()` runs `step()` (poll → handle → commit) as a
task of its own until stopped, next to the background tasks the stage declares (the lag reporter among
them), and records the loop's progress for liveness (`/healthz`). `stop()` gives the loop the shutdown
budget to finish the batch in hand (its produces acknowledged and offsets committed) and cancels it
after that: a stop never hangs past SHUTDOWN_TIMEOUT_S, and a batch cut short is simply consumed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

from aiohttp import web

from pipeline.settings import CommonSettings

log = logging.getLogger(__name__)

# The stage's own settings class (pipeline/settings.py: IngestSettings, EnrichSettings, SinkSettings, ...).
S = TypeVar("S", bound=CommonSettings)

# How SHUTDOWN_TIMEOUT_S is shared: the runner's HTTP server lets requests in flight finish in the first
# part (pipeline.runner.HTTP_FRACTION, 0.2); the drain gets DRAIN_FRACTION; the closes after it (leaving
# the group, flushing a producer: well under a second normally) the rest. All of it stays below the deploy
# files' grace periods, which are the budget plus a margin (tests/unit/test_deploy_grace.py).
DRAIN_FRACTION = 0.6


@dataclass(frozen=True)
class Background:
    """A task a consumer stage runs beside its poll loop. `critical`: its end (or failure) stops the stage,
    e.g. dimensions that stop updating; otherwise it is only cancelled at stop (reporters)."""

    name: str
    coroutine: Coroutine[Any, Any, None]
    critical: bool = False


class Stage(Generic[S]):
    """Base of every long-running stage: `async with Stage(settings) as s:` starts it and stops it.

    Subclasses implement `open(stack)` (acquire clients, in order) and `run()`; `drain()` is what a stop
    waits for, bounded by the shutdown budget, before the stack is closed. A stage whose `run()` stamps
    `progressed_at` at every turn of its loop sets `tracks_progress`, and is then reported dead
    (`alive()`, `/healthz`) when the loop stalls.
    """

    name = "stage"
    tracks_progress = False

    def __init__(self, settings: S) -> None:
        self.settings: S = settings
        self._stack: contextlib.AsyncExitStack | None = None
        self._stopping = asyncio.Event()
        self._stopped = False
        self._ready = False
        self._stop_deadline: float | None = None
        self._running = False  # set by a loop that stamps progress (see alive())
        # Liveness: stamped by every step of the stage's loop (see ConsumerStage); a stage without a
        # loop of its own counts as progressing.
        self.progressed_at = time.monotonic()

    # -- what a stage provides -------------------------------------------------------------------------

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        """Acquire the stage's clients, registering each one's close on `stack`; raise ConfigError on bad config."""

    async def run(self) -> None:
        """Do the work until `stop()`; returning early or raising means the stage failed."""
        await self._stopping.wait()

    async def drain(self, timeout_s: float) -> None:
        """Let in-flight work finish (within `timeout_s`) after intake stopped; before the clients close."""
        del timeout_s

    def routes(self) -> list[web.RouteDef]:
        """Extra HTTP routes served on the stage's port (may be empty)."""
        return []

    def ready(self) -> bool:
        """True while the stage can do its work (its clients are started and it is not stopping)."""
        return self._ready and not self._stopping.is_set()

    def idle_s(self) -> float:
        """Seconds since the stage's loop last completed a step."""
        return time.monotonic() - self.progressed_at

    def alive(self) -> bool:
        """False when the loop has made no progress for LIVENESS_STALL_S (an empty poll is progress).

        Only while it runs: before the loop starts there is nothing to judge, and a stage that is stopping
        is bounded by the shutdown budget instead (a restart then would only cut the drain short).
        """
        if not self.tracks_progress or not self._running or self._stopping.is_set():
            return True
        return self.idle_s() < self.settings.liveness_stall_s

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def shutdown_timeout_s(self) -> float:
        """The whole stop's budget (SHUTDOWN_TIMEOUT_S): drain and closes together."""
        return float(self.settings.shutdown_timeout_s)

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called: the loop finishes what it holds and takes nothing new."""
        return self._stopping.is_set()

    def time_left_s(self) -> float:
        """Seconds left of the stop's drain budget (the whole budget before a stop)."""
        if self._stop_deadline is None:
            return self.shutdown_timeout_s * DRAIN_FRACTION
        return max(0.0, self._stop_deadline - time.monotonic())

    async def start(self) -> None:
        """Open the stage's clients; if one fails, close what was opened so far and raise."""
        stack = contextlib.AsyncExitStack()
        self._stack = stack
        try:
            await self.open(stack)
        except BaseException:
            self._stack = None
            await _close_logged(self.name, stack)
            raise
        self._ready = True

    async def stop(self) -> None:
        """Stop intake, drain within the budget, then close every client in reverse order. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._ready = False
        drain_s = self.shutdown_timeout_s * DRAIN_FRACTION
        self._stop_deadline = time.monotonic() + drain_s
        self._stopping.set()
        started = time.monotonic()
        try:
            await self.drain(drain_s)
        except Exception as exc:  # a drain that failed must not keep the clients open
            log.error(f"{self.name}: drain failed: {exc!r}", extra={"service": self.name})
        stack, self._stack = self._stack, None
        if stack is not None:
            await _close_logged(self.name, stack)
        log.info(f"{self.name}: stopped in {time.monotonic() - started:.1f}s", extra={"service": self.name})

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- helpers for open() -----------------------------------------------------------------------------

    def closing(self, stack: contextlib.AsyncExitStack, what: str, close: Callable[[], Awaitable[Any]]) -> None:
        """Register `close` on `stack`; if it raises, the failure is logged and the closes after it still run."""

        async def logged() -> None:
            try:
                await close()
            except Exception as exc:
                log.error(f"{self.name}: closing {what} failed: {exc!r}", extra={"service": self.name})

        stack.push_async_callback(logged)


async def _close_logged(name: str, stack: contextlib.AsyncExitStack) -> None:
    """Close `stack`; an exception escaping it (a close not registered through `closing`) is logged once."""
    try:
        await stack.aclose()
    except Exception as exc:
        log.error(f"{name}: closing failed: {exc!r}", extra={"service": name})


class ConsumerStage(Stage[S]):
    """A stage around a poll loop: owns the loop task, its background tasks, its progress and its bounded stop.

    Subclasses implement `step()` (one poll → handle → commit; it returns after at most a poll timeout,
    also when nothing came) and may declare `background()` tasks and a `finish()` run once the loop ends
    normally (e.g. the sink's last flush).
    """

    tracks_progress = True

    def __init__(self, settings: S) -> None:
        super().__init__(settings)
        self._loop_task: asyncio.Task[None] | None = None

    async def step(self) -> None:
        """One poll of the loop and what it brought (possibly nothing)."""
        raise NotImplementedError

    def background(self) -> list[Background]:
        """Tasks run beside the loop while it runs (lag and replica reporters, followers)."""
        return []

    async def finish(self) -> None:
        """After the loop stopped taking new work: flush what it holds (bounded by `time_left_s()`)."""

    async def wind_down(self) -> None:
        """After the loop ended, however it ended, before its background tasks are cancelled (e.g. let a
        helper thread finish the cycle in hand)."""

    async def run(self) -> None:
        """Run the loop as a task of its own until stopped; its failure (or a critical task's) is raised."""
        self._loop_task = asyncio.create_task(self._loop(), name=f"{self.name}-loop")
        try:
            await self._loop_task
        except asyncio.CancelledError:
            if not self._loop_task.cancelled():
                raise  # run() itself was cancelled
            # The stop budget ran out and stop() cancelled the loop: a normal (if abrupt) end.

    async def _loop(self) -> None:
        tasks = [(b, asyncio.create_task(b.coroutine, name=f"{self.name}-{b.name}")) for b in self.background()]
        self.progressed_at = time.monotonic()
        self._running = True
        try:
            while not self._stopping.is_set():
                for spec, task in tasks:
                    if spec.critical and task.done():
                        task.result()  # re-raise; a critical task that simply ended is a failure too
                        raise RuntimeError(f"{self.name}: {spec.name} ended")
                await self.step()
                self.progressed_at = time.monotonic()  # empty polls count: the loop is alive
            await self.finish()
        finally:
            self._running = False
            try:
                await self.wind_down()
            finally:
                for _, task in tasks:
                    task.cancel()
                await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)

    async def drain(self, timeout_s: float) -> None:
        """Wait for the loop to finish its batch (and `finish()`); cancel it when the budget is spent."""
        task = self._loop_task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning(
                f"{self.name}: the loop did not stop within {timeout_s:.0f}s; cancelling it (the batch in hand "
                "is uncommitted and will be consumed again)",
                extra={"service": self.name},
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
