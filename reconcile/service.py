"""`reconcile --every 1h --lag 30m`: reconcile each period once it is due, until stopped.

Lifecycle (through `pipeline.runner.serve`, which adds /healthz, /readyz, /metrics and the signals):

    start ──▶ run: ┌─▶ periods due? ──yes──▶ one run per period (a task) ──┐
                   │        │no                                            │
                   └── sleep until the next one is due (or stop) ◀─────────┘
    SIGTERM ──▶ stop: no new run; the run in progress gets the drain part of SHUTDOWN_TIMEOUT_S to finish,
                      then is cancelled (it is idempotent: the period is simply done again next time);
                      the producer closes (pipeline.stage.Stage).

A failed run (Insights or the read API unavailable) is logged and retried after `RETRY_S`; its period
stays due. A restart resumes with the newest complete period: periods missed while nothing ran are not
replayed by themselves (run `reconcile --from --to` over the gap). Up to `MAX_CATCH_UP` periods that fell
due during one long run are caught up in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pipeline import contract, kafka
from pipeline.settings import ConfigError, Settings
from pipeline.stage import Stage
from reconcile.job import ReconcileFailed, execute
from reconcile.kafkaio import Publisher
from reconcile.run import Options
from reconcile.schedule import next_due_ms, periods_since
from reconcile.times import whereby_time

log = logging.getLogger(__name__)

RETRY_S = 300.0
MAX_CATCH_UP = 24


class ScheduledReconcile(Stage[Settings]):
    """The long-running mode as a :class:`pipeline.stage.Stage`."""

    name = "reconcile"

    def __init__(
        self,
        settings: Settings,
        *,
        every_s: int,
        lag_s: int,
        backfill: bool,
        read_api: str,
        verify_timeout_s: float = 60.0,
        unresolved: bool = True,
    ) -> None:
        super().__init__(settings)
        self.every_s = every_s
        self.lag_s = lag_s
        self.backfill = backfill
        self.read_api = read_api
        self.verify_timeout_s = verify_timeout_s
        self.unresolved = unresolved
        self.done_to_ms: int | None = None
        self._publisher: Publisher | None = None
        self._current: asyncio.Task[object] | None = None

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        self.settings.whereby_api.require_key()
        await kafka.prepare(self.settings)
        self._publisher = await stack.enter_async_context(Publisher(self.settings))

    async def run(self) -> None:
        while not self._stopping.is_set():
            due = periods_since(self.done_to_ms, contract.now_ms(), self.every_s, self.lag_s, limit=MAX_CATCH_UP)
            for from_ms, to_ms in due:
                if self._stopping.is_set() or not await self._run_period(from_ms, to_ms):
                    break
            if self._stopping.is_set():
                return
            if self.done_to_ms is None or (due and self.done_to_ms < due[-1][1]):
                wait_s = RETRY_S  # the last run failed: try the same period again later
            else:
                wait_s = max(1.0, (next_due_ms(self.done_to_ms, self.every_s, self.lag_s) - contract.now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait_s)

    async def _run_period(self, from_ms: int, to_ms: int) -> bool:
        """One run as a task stop() can cut short; True when it completed."""
        options = Options(
            from_ms, to_ms, backfill=self.backfill, verify_timeout_s=self.verify_timeout_s, unresolved=self.unresolved
        )
        self._current = asyncio.create_task(
            execute(self.settings, options, read_api=self.read_api, publisher=self._publisher),
            name=f"reconcile-{from_ms}",
        )
        try:
            await self._current
        except asyncio.CancelledError:
            if self._stopping.is_set():
                return False
            raise
        except (ReconcileFailed, ConfigError) as exc:
            log.error(f"reconcile of {whereby_time(from_ms)} .. {whereby_time(to_ms)} failed: {exc}")
            return False
        finally:
            self._current = None
        self.done_to_ms = to_ms
        return True

    async def drain(self, timeout_s: float) -> None:
        """The run in progress gets `timeout_s` to finish, then is cancelled (it is redone next time)."""
        current = self._current
        if current is not None and not current.done():
            done, _ = await asyncio.wait({current}, timeout=timeout_s)
            if not done:
                log.warning("stopping: the run in progress did not finish in time and is cancelled; it is redone next")
                current.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await current
