"""The stage lifecycle (pipeline/stage.py): closes in reverse order that never skip each other, a failed
start that closes what it opened, and a stop bounded by SHUTDOWN_TIMEOUT_S even when the loop is stuck."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.runner import build_app
from pipeline.settings import GRACE_MARGIN_S, ConfigError, Settings
from pipeline.stage import ConsumerStage, Stage


def settings(**changes: object) -> Settings:
    return dataclasses.replace(Settings.from_env({}), **changes)  # type: ignore[arg-type]


class Recording(Stage):
    name = "recording"

    def __init__(self, settings: Settings, *, fail_close: str = "", fail_open_after: str = "") -> None:
        super().__init__(settings)
        self.closed: list[str] = []
        self.fail_close = fail_close
        self.fail_open_after = fail_open_after

    async def open(self, stack: contextlib.AsyncExitStack) -> None:
        for what in ("producer", "dimensions", "consumer"):
            self.closing(stack, what, self._closer(what))
            if what == self.fail_open_after:
                raise RuntimeError("broker went away")

    def _closer(self, what: str):  # type: ignore[no-untyped-def]
        async def close() -> None:
            self.closed.append(what)
            if what == self.fail_close:
                raise RuntimeError(f"{what} close failed")

        return close


async def test_closes_run_in_reverse_order_and_a_failing_one_skips_none(caplog: pytest.LogCaptureFixture) -> None:
    async with Recording(settings(), fail_close="consumer") as stage:
        assert stage.ready()
    assert stage.closed == ["consumer", "dimensions", "producer"]
    assert not stage.ready()
    assert "closing consumer failed" in caplog.text
    await stage.stop()  # idempotent: nothing closed twice
    assert stage.closed == ["consumer", "dimensions", "producer"]


async def test_a_failed_start_closes_what_it_had_opened() -> None:
    stage = Recording(settings(), fail_open_after="dimensions")
    with pytest.raises(RuntimeError, match="broker went away"):
        await stage.start()
    assert stage.closed == ["dimensions", "producer"]
    assert not stage.ready()


class Stuck(ConsumerStage):
    """A loop whose step never returns (a poll that hangs)."""

    name = "stuck"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.steps = 0
        self.cancelled = False

    async def step(self) -> None:
        self.steps += 1
        if self.steps >= 3:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        await asyncio.sleep(0)


async def test_a_stuck_loop_is_cancelled_within_the_shutdown_budget() -> None:
    stage = Stuck(settings(shutdown_timeout_s=1.0))
    await stage.start()
    run = asyncio.create_task(stage.run())
    while stage.steps < 3:  # noqa: ASYNC110 (a test polling a counter)
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await stage.stop()
    await asyncio.wait_for(run, timeout=1)  # run() returns normally after the cancellation
    assert time.monotonic() - started < 1.5
    assert stage.cancelled


class Failing(ConsumerStage):
    name = "failing"

    async def step(self) -> None:
        raise ValueError("bad poll")


async def test_a_failing_loop_fails_run() -> None:
    stage = Failing(settings())
    await stage.start()
    with pytest.raises(ValueError, match="bad poll"):
        await stage.run()
    await stage.stop()


@pytest.mark.parametrize("raw", ["0", "0.5", "601", "soon"])
def test_the_shutdown_budget_is_validated(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^SHUTDOWN_TIMEOUT_S"):
        Settings.from_env({"SHUTDOWN_TIMEOUT_S": raw})


def test_the_shutdown_budget_defaults_below_kubernetes_default_grace_period() -> None:
    assert Settings.from_env({}).shutdown_timeout_s + GRACE_MARGIN_S <= 30


class Stallable(ConsumerStage):
    """Empty polls until `stall` is set, then a poll that never returns."""

    name = "stallable"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.stall = asyncio.Event()

    async def step(self) -> None:
        if self.stall.is_set():
            await asyncio.sleep(3600)
        await asyncio.sleep(0.05)  # an empty poll


async def test_healthz_answers_503_once_the_loop_stalls_and_empty_polls_keep_it_alive() -> None:
    stage = Stallable(settings(liveness_stall_s=0.5, shutdown_timeout_s=1.0))
    async with stage, TestClient(TestServer(build_app(stage))) as http:
        run = asyncio.create_task(stage.run())
        await asyncio.sleep(1.0)  # twice the bound, with nothing but empty polls
        async with http.get("/healthz") as r:
            assert r.status == 200
        stage.stall.set()
        await asyncio.sleep(1.0)
        async with http.get("/healthz") as r:
            assert r.status == 503
            answer = await r.json()
        assert answer["status"] == "stalled" and answer["idle_s"] >= 0.5
        async with http.get("/readyz") as r:
            assert r.status == 200  # readiness is a different question
    await asyncio.wait_for(run, timeout=1)  # the stop cancelled the stuck loop
