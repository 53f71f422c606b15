"""Supervision: restarts from the last good state, intensity, restart types, cancellation."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from fakes import ClientMirror, FakeLink, ToyRules

from actors._registry import RoomHandle
from actors._room import Room, RoomConfig
from actors._supervisor import Restart, Supervisor
from protocol import CloseCode, Input, Rpc, State
from protocol import Event as EventFrame

PERIOD = 1 / 20
CONFIG = RoomConfig(empty_grace=3600.0)


async def start(nursery: trio.Nursery, **kw) -> Supervisor:
    return await nursery.start(Supervisor(**kw).run)


async def join(room: Room, pid: str) -> FakeLink:
    link = FakeLink(pid)
    await RoomHandle(room).join(pid, pid.upper(), link, 1)
    return link


async def ticks(room: Room, n: int) -> None:
    target = room.tick + n
    while room.tick < target:
        await trio.sleep(PERIOD / 4)


async def test_a_crashed_room_restarts_from_its_state_and_keeps_its_members(autojump_clock, caplog):
    caplog.set_level(logging.ERROR, logger="relay.room")
    exits: list[str] = []
    room = Room(ToyRules(), code="BOOM", mode="toy", config=CONFIG)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery)
        sup.start_child(room, on_exit=lambda child, outcome: exits.append(outcome))
        a = await join(room, "a")
        b = await join(room, "b")
        a.push(Rpc(1, "room", "bump"), Rpc(2, "room", "start"), Input(3, {"x": 4.0}))
        await ticks(room, 1)
        deadline = room.timers()["round"]
        state_before = room.public_state
        await trio.sleep(3)
        mirror = ClientMirror(b)
        mirror.update()
        sent_before = len(b.sent)
        crashed_at = room.tick
        a.push(Rpc(4, "room", "bump"), Rpc(5, "room", "boom"))
        await ticks(room, 2)
        # restarted within a tick, from the last committed state: the bump that
        # came with the crash is lost, everything before it is kept
        assert room.statistics().restarts == 1
        assert room.tick <= crashed_at + 2
        assert room.public_state["game"] == state_before["game"]
        assert room.public_state["players"]["a"]["seq"] == 3
        assert room.timers()["round"] == deadline
        # members stayed attached and each got a keyframe
        for link in (a, b):
            assert not link.closed and link.detached is None
        frames = [b.codec.decode(d) for d in b.sent[sent_before:]]
        assert type(frames[0]) is State and frames[0].back == 0
        assert mirror.update() == room.public_state
        # they keep playing on the new incarnation
        a.push(Rpc(6, "room", "bump"))
        await ticks(room, 1)
        assert room.public_state["game"]["count"] == 2
        # the running timer kept its remaining time: it fires at its deadline
        await trio.sleep(deadline - room.clock.now() - 0.1)
        assert room.public_state["game"]["fired"] == []
        await trio.sleep(0.1 + PERIOD)
        assert room.public_state["game"]["fired"] == ["round"]
        records = [r for r in caplog.records if r.name == "relay.room" and "BOOM" in r.getMessage()]
        assert len(records) == 1 and records[0].exc_info is not None
        assert sup.statistics().restarts == 1 and sup.statistics().crashes == 1
        nursery.cancel_scope.cancel()
    assert exits == ["cancelled"]


async def test_a_join_in_the_crashed_tick_is_answered(autojump_clock):
    room = Room(ToyRules(), code="BOOM", mode="toy", config=CONFIG)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery)
        sup.start_child(room)
        a = await join(room, "a")
        a.push(Rpc(1, "room", "boom"))
        reply = room.join_nowait("b", "B", FakeLink("b"), 1)
        await ticks(room, 1)
        assert reply.done
        with pytest.raises(Exception) as info:
            reply.result()
        assert info.value.code == "room_crashed"
        await join(room, "b")  # a retry works
        nursery.cancel_scope.cancel()


async def test_past_the_intensity_the_room_is_closed_and_everyone_told(autojump_clock, caplog):
    caplog.set_level(logging.ERROR, logger="relay.room")
    exits: list[str] = []
    room = Room(ToyRules(), code="DEAD", mode="toy", config=CONFIG)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, intensity=2, period=10.0)
        sup.start_child(room, on_exit=lambda child, outcome: exits.append(outcome))
        a = await join(room, "a")
        b = await join(room, "b")
        for n in range(3):
            a.push(Rpc(n, "room", "boom"))
            await trio.sleep(0.5)
        assert room.closed and room.close_reason == "crashed"
        for link in (a, b):
            assert link.messages()[-1] == EventFrame("room_closed", {"reason": "crashed"})
            assert link.close_code == CloseCode.ROOM_CLOSED
        assert exits == ["gave_up"]
        stats = sup.statistics()
        assert (stats.crashes, stats.restarts, stats.given_up, stats.children) == (3, 2, 1, 0)
        assert len([r for r in caplog.records if "DEAD" in r.getMessage()]) == 3
        with pytest.raises(Exception) as info:
            room.join_nowait("c", "C", FakeLink("c"), 1)
        assert info.value.code == "room_closed"
        nursery.cancel_scope.cancel()


async def test_crashes_spread_over_time_stay_within_the_intensity(autojump_clock):
    room = Room(ToyRules(), code="SLOW", mode="toy", config=CONFIG)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, intensity=2, period=10.0)
        sup.start_child(room)
        a = await join(room, "a")
        for n in range(5):
            a.push(Rpc(n, "room", "boom"))
            await trio.sleep(6)
        assert not room.closed
        assert sup.statistics().restarts == 5
        nursery.cancel_scope.cancel()


async def test_one_room_crashing_out_does_not_disturb_its_siblings(autojump_clock):
    bad = Room(ToyRules(), code="BADD", mode="toy", config=CONFIG)
    good = Room(ToyRules(), code="GOOD", mode="toy", config=CONFIG)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, intensity=0)
        sup.start_child(bad)
        sup.start_child(good)
        a = await join(bad, "a")
        g = await join(good, "g")
        a.push(Rpc(1, "room", "boom"))
        tick = good.tick
        await trio.sleep(1.0)
        assert bad.closed
        assert good.tick >= tick + 19 and not good.closed
        g.push(Rpc(1, "room", "bump"))
        await ticks(good, 1)
        assert good.public_state["game"]["count"] == 1
        assert sup.children() == [good]
        nursery.cancel_scope.cancel()


class Child:
    """A scripted child: each run returns, raises, or waits, as told."""

    def __init__(self, *outcomes: str) -> None:
        self.name = "child"
        self.outcomes = list(outcomes)
        self.runs = 0
        self.recovered: list[object] = []
        self.terminated: list[str] = []

    async def run(self) -> None:
        self.runs += 1
        what = self.outcomes.pop(0) if self.outcomes else "wait"
        await trio.sleep(1)
        if what == "crash":
            raise ValueError("crash")
        if what == "interrupt":
            raise KeyboardInterrupt
        if what == "wait":
            await trio.sleep_forever()

    def recover(self, exc: BaseException | None) -> None:
        self.recovered.append(exc)

    def terminate(self, reason: str) -> None:
        self.terminated.append(reason)


@pytest.mark.parametrize(
    ("restart", "outcomes", "runs", "exit"),
    [
        (Restart.PERMANENT, ["return", "return"], 3, None),
        (Restart.TRANSIENT, ["return"], 1, "normal"),
        (Restart.TRANSIENT, ["crash", "return"], 2, "normal"),
        (Restart.TEMPORARY, ["crash"], 1, "crashed"),
        (Restart.PERMANENT, ["return"] * 5, 4, "gave_up"),  # intensity 3 also bounds returns
    ],
)
async def test_restart_types(autojump_clock, restart, outcomes, runs, exit):
    exits: list[str] = []
    child = Child(*outcomes)
    async with trio.open_nursery() as nursery:
        sup = await start(nursery, intensity=3, period=60.0)
        sup.start_child(child, restart=restart, on_exit=lambda c, outcome: exits.append(outcome))
        await trio.sleep(30)
        assert child.runs == runs
        assert exits == ([] if exit is None else [exit])
        nursery.cancel_scope.cancel()
    if restart is Restart.TEMPORARY:
        assert child.terminated == ["crashed"] and child.recovered == []


async def test_cancellation_passes_through_the_supervisor(autojump_clock):
    child = Child("wait")
    exits: list[str] = []
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            sup = await start(nursery)
            sup.start_child(child, on_exit=lambda c, outcome: exits.append(outcome))
    assert scope.cancelled_caught
    assert child.recovered == [] and child.terminated == []
    assert exits == ["cancelled"]
    assert sup.statistics().crashes == 0
    with pytest.raises(RuntimeError):
        sup.start_child(Child())


async def test_base_exceptions_are_never_caught(autojump_clock):
    child = Child("interrupt")
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            sup = await start(nursery)
            sup.start_child(child)
    assert info.group_contains(KeyboardInterrupt)
    assert child.recovered == [] and child.terminated == []


def test_intensity_is_validated():
    with pytest.raises(ValueError):
        Supervisor(intensity=-1)
    with pytest.raises(ValueError):
        Supervisor(period=0)
