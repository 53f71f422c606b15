"""Timers (absolute deadlines, firing order, snapshots) and the room clock."""

from __future__ import annotations

import math
import time

import pytest
import trio
import trio.testing

from actors._clock import Clock
from actors._timers import Timers


def test_due_timers_fire_in_deadline_order_then_arming_order():
    timers = Timers()
    timers.start("c", 30.0)
    timers.start("a", 10.0)
    timers.start("b", 10.0)
    timers.start("d", 40.0)
    assert timers.next_deadline() == 10.0
    assert timers.pop_due(9.99) == []
    assert timers.pop_due(30.0) == ["a", "b", "c"]
    assert list(timers.as_dict()) == ["d"]
    assert timers.next_deadline() == 40.0
    assert timers.pop_due(100.0) == ["d"]
    assert timers.next_deadline() is None and len(timers) == 0


def test_rearming_replaces_and_cancel_disarms():
    timers = Timers()
    timers.start("round", 10.0)
    timers.start("round", 20.0)
    assert timers.get("round") == 20.0
    assert timers.pop_due(15.0) == []
    timers.start("early", 5.0)
    assert timers.cancel("early") and not timers.cancel("early")
    assert timers.next_deadline() == 20.0
    timers.start("x", 1.0)
    timers.start("y", 2.0)
    assert sorted(timers.cancel_all(keep={"y"})) == ["round", "x"]
    assert timers.as_dict() == {"y": 2.0} and "y" in timers and "x" not in timers


def test_copies_are_independent_and_snapshots_round_trip():
    timers = Timers({"b": 2.0, "a": 1.0})
    assert list(timers.as_dict()) == ["a", "b"]
    other = timers.copy()
    other.start("c", 0.5)
    other.cancel("a")
    assert timers.as_dict() == {"a": 1.0, "b": 2.0}
    assert Timers(other.as_dict()).as_dict() == other.as_dict() == {"c": 0.5, "b": 2.0}


@pytest.mark.parametrize("deadline", [math.nan, math.inf, "10", None])
def test_bad_deadlines_are_refused(deadline):
    with pytest.raises(ValueError):
        Timers().start("t", deadline)
    with pytest.raises(TypeError):
        Timers().start(3, 1.0)


async def test_the_clock_is_wall_time_that_moves_with_virtual_time(autojump_clock):
    clock = Clock()
    assert abs(clock.now() - time.time()) < 5
    before = clock.now()
    await trio.sleep(3600)
    assert clock.now() - before == pytest.approx(3600)
    assert clock.to_trio(clock.now()) == pytest.approx(trio.current_time())
    pinned = Clock(offset=1_700_000_000.0)
    assert pinned.now() == 1_700_000_000.0 + trio.current_time()
    with pytest.raises(ValueError):
        Clock(offset=math.nan)
