"""The shared tick timer: grid-rounded wake-ups, cancellation, batching, shutdown."""

from __future__ import annotations

import math

import pytest
import trio

from actors._ticker import Ticker


async def test_sleepers_wake_at_their_deadline_rounded_up_to_the_grid(autojump_clock):
    ticker = Ticker(slot=0.01)
    woke: dict[str, float] = {}

    async def sleeper(name: str, deadline: float) -> None:
        await ticker.sleep_until(deadline)
        woke[name] = trio.current_time()

    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        t0 = trio.current_time()
        nursery.start_soon(sleeper, "a", t0 + 0.0501)
        nursery.start_soon(sleeper, "b", t0 + 0.0549)
        nursery.start_soon(sleeper, "c", t0 + 0.0300)
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    for name, deadline in (("a", 0.0501), ("b", 0.0549), ("c", 0.0300)):
        expected = math.ceil((t0 + deadline) / 0.01) * 0.01
        assert woke[name] == pytest.approx(expected)
        assert woke[name] >= t0 + deadline - 1e-9  # never early
    assert woke["a"] == woke["b"]  # the same slot: one batch
    assert ticker.wakeups == 2 and ticker.woken == 3


async def test_an_earlier_sleeper_moves_the_timer_forward(autojump_clock):
    ticker = Ticker(slot=0.01)
    order: list[str] = []

    async def sleeper(name: str, delay: float) -> None:
        await ticker.sleep_until(trio.current_time() + delay)
        order.append(name)

    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        nursery.start_soon(sleeper, "late", 1.0)
        await trio.sleep(0.05)
        nursery.start_soon(sleeper, "early", 0.1)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert order == ["early", "late"]


async def test_a_parked_task_can_be_cancelled(autojump_clock):
    ticker = Ticker(slot=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(ticker.run)
        with trio.move_on_after(0.5) as scope:
            await ticker.sleep_until(trio.current_time() + 10)
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(0.5, abs=0.02)
        # the abandoned slot does not disturb later sleepers
        start = trio.current_time()
        await ticker.sleep_until(start + 0.1)
        assert trio.current_time() - start == pytest.approx(0.1, abs=0.011)
        nursery.cancel_scope.cancel()


async def test_sleepers_outlive_a_stopped_ticker_and_keep_their_deadline(autojump_clock):
    ticker = Ticker(slot=0.01)
    woke: list[float] = []

    async def sleeper() -> None:
        await ticker.sleep_until(5.0)
        woke.append(trio.current_time())

    async with trio.open_nursery() as outer:
        outer.start_soon(sleeper)
        async with trio.open_nursery() as inner:
            await inner.start(ticker.run)
            await trio.sleep(0.1)
            inner.cancel_scope.cancel()  # the ticker stops with a sleeper parked
    assert woke == [pytest.approx(5.0)]
    assert not ticker.running


async def test_without_a_running_ticker_it_is_trio_sleep_until(autojump_clock):
    ticker = Ticker(slot=0.01)
    await ticker.sleep_until(0.123)
    assert trio.current_time() == pytest.approx(0.123)


def test_the_slot_must_be_positive():
    for slot in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError):
            Ticker(slot=slot)
