"""The points budget keeps our spending under the limit over any 60-second window."""

from __future__ import annotations

import pytest

from reconcile.budget import PointsBudget


def test_spending_fits_until_the_window_is_full_then_waits_for_the_oldest_to_leave() -> None:
    budget = PointsBudget(10)
    for t in (0.0, 1.0, 2.0):
        assert budget.delay(3, t) == 0
        budget.spend(3, t)
    assert budget.delay(1, 3.0) == 0  # 9 + 1 = 10 fits
    assert budget.delay(3, 3.0) == pytest.approx(57.0)  # the 3 points of t=0 leave at 60
    budget.spend(3, 60.0)
    assert budget.delay(3, 60.5) == pytest.approx(0.5)  # t=1 leaves at 61


def test_a_call_dearer_than_the_whole_budget_waits_for_an_empty_window() -> None:
    budget = PointsBudget(2)
    budget.spend(2, 0.0)
    assert budget.delay(5, 10.0) == pytest.approx(50.0)
    assert budget.delay(5, 60.0) == 0


async def test_acquire_sleeps_on_the_injected_clock() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    budget = PointsBudget(6, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        await budget.acquire(3)
    assert slept == [pytest.approx(60.0)]  # the third waits for the first two to leave; the fourth fits
    assert budget.waited_s == pytest.approx(60.0)
