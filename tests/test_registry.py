"""The room registry: codes, lookup, limits, quick-join, empty-room grace and lifetime."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing
from fakes import FakeLink, ToyRules

from actors._arena import ArenaRules
from actors._errors import RoomError, RoomFull, RoomNotFound
from actors._registry import CODE_ALPHABET, RoomRegistry, normalize_code
from actors._room import InvalidSnapshot, RoomConfig
from protocol import Event as EventFrame
from protocol import Rpc

PERIOD = 1 / 20


async def start(nursery: trio.Nursery, rules=None, **kw) -> RoomRegistry:
    kw.setdefault("rng", random.Random(1))
    registry = RoomRegistry(rules or [ArenaRules(), ToyRules()], **kw)
    return await nursery.start(registry.run)


async def test_codes_are_fresh_unambiguous_and_case_insensitive(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery)
        handles = [registry.create("arena") for _ in range(300)]
        codes = [h.code for h in handles]
        assert len(set(codes)) == 300
        assert all(len(c) == 4 and set(c) <= set(CODE_ALPHABET) for c in codes)
        assert not set(CODE_ALPHABET) & set("0O1IL")
        assert registry.get(codes[0].lower()) is handles[0]
        assert registry.get(f" {codes[1]} ") is handles[1]
        for bad in ("", "ABC", "ABCDE", "0000", 42, None):
            with pytest.raises(RoomNotFound):
                registry.get(bad)
        unused = next(
            a + b + c + d
            for a in CODE_ALPHABET
            for b in CODE_ALPHABET
            for c in CODE_ALPHABET
            for d in CODE_ALPHABET
            if a + b + c + d not in codes
        )
        with pytest.raises(RoomNotFound):
            registry.get(unused)
        assert len(registry.rooms()) == 300
        nursery.cancel_scope.cancel()


def test_normalize_code():
    assert normalize_code(" acdf ") == "ACDF"
    with pytest.raises(RoomNotFound):
        normalize_code("AB-D")


async def test_limits_and_unknown_modes(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery, max_rooms=2)
        registry.create("arena")
        with pytest.raises(RoomError) as info:
            registry.create("chess")
        assert info.value.code == "unknown_mode"
        with pytest.raises(RoomError) as info:
            registry.create("arena", {"max_players": 0})
        assert info.value.code == "invalid_options"
        registry.create("toy")
        with pytest.raises(RoomError) as info:
            registry.create("arena")
        assert info.value.code == "server_full"
        stats = registry.statistics()
        assert (stats.rooms, stats.created, stats.max_rooms) == (2, 2, 2)
        nursery.cancel_scope.cancel()
    with pytest.raises(RuntimeError):
        RoomRegistry(ArenaRules()).create("arena")
    with pytest.raises(ValueError):
        RoomRegistry([ArenaRules(), ArenaRules()])


async def test_concurrent_joins_through_handles_never_exceed_the_seats(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery)
        handle = registry.create("arena", {"max_players": 8})
        outcomes: list[object] = []

        async def one(i: int) -> None:
            try:
                outcomes.append(await handle.join(f"p{i}", "P", FakeLink(f"p{i}"), i))
            except RoomFull as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as joins:
            for i in range(20):
                joins.start_soon(one, i)
        assert sum(not isinstance(o, RoomFull) for o in outcomes) == 8
        assert handle.member_count == 8 and handle.free_seats == 0
        nursery.cancel_scope.cancel()


async def test_quick_join_fills_rooms_and_opens_new_ones(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery)
        placed: dict[str, str] = {}

        async def one(i: int) -> None:
            handle, result = await registry.quick_join("arena", f"p{i}", "P", FakeLink(f"p{i}"), i)
            placed[result.player_id] = handle.code

        async with trio.open_nursery() as joins:
            for i in range(20):
                joins.start_soon(one, i)
        sizes = sorted((h.member_count for h in registry.rooms()), reverse=True)
        assert sizes == [8, 8, 4]
        assert len(placed) == 20
        # a later quick-join tops up the open room instead of opening a fourth
        handle, _ = await registry.quick_join("arena", "late", "L", FakeLink("late"), 99)
        assert handle.member_count == 5
        assert len(registry.rooms()) == 3
        nursery.cancel_scope.cancel()


async def test_quick_join_skips_a_room_that_refuses_and_rooms_in_play(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery)
        closing = registry.create("toy")
        await closing.join("a", "A", FakeLink("a"), 1)
        registry.close(closing.code, "maintenance")  # closes at its next tick
        handle, result = await registry.quick_join("toy", "b", "B", FakeLink("b"), 2)
        assert handle.code != closing.code and result.seat == 0
        # a room whose game started takes nobody
        host = FakeLink("c")
        await registry.get(handle.code).join("c", "C", host, 3)
        host.push(Rpc(1, "room", "start"))
        await trio.sleep(2 * PERIOD)
        other, _ = await registry.quick_join("toy", "d", "D", FakeLink("d"), 4)
        assert other.code not in (handle.code, closing.code)
        nursery.cancel_scope.cancel()


async def test_quick_join_tries_the_next_room_when_the_chosen_one_refuses(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery)
        busy = registry.create("arena", config=RoomConfig(mailbox_size=1))
        await busy.join("a", "A", FakeLink("a"), 1)
        busy.room.join_nowait("b", "B", FakeLink("b"), 2)  # its mailbox is now full
        assert registry.quick_join_target("arena") is busy
        handle, result = await registry.quick_join("arena", "c", "C", FakeLink("c"), 3)
        assert handle is not busy and result.seat == 0
        nursery.cancel_scope.cancel()


async def test_empty_rooms_close_after_the_grace_period(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery, config=RoomConfig(empty_grace=30.0))
        never_joined = registry.create("arena")
        left = registry.create("arena")
        link = FakeLink("a")
        await left.join("a", "A", link, 1)
        await trio.sleep(20)
        left.leave_nowait("a")
        await trio.sleep(11)
        with pytest.raises(RoomNotFound):
            registry.get(never_joined.code)
        assert registry.get(left.code) is left
        assert link.detached == "left"
        await trio.sleep(20)
        with pytest.raises(RoomNotFound):
            registry.get(left.code)
        assert registry.rooms() == []
        assert registry.statistics().closed == 2
        nursery.cancel_scope.cancel()


async def test_rooms_expire_after_their_lifetime_telling_members(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery, config=RoomConfig(max_lifetime=120.0))
        handle = registry.create("arena")
        link = FakeLink("a")
        await handle.join("a", "A", link, 1)
        await trio.sleep(119)
        assert registry.get(handle.code) is handle
        await trio.sleep(1 + PERIOD * 2)
        with pytest.raises(RoomNotFound):
            registry.get(handle.code)
        assert link.messages()[-1] == EventFrame("room_closed", {"reason": "expired"})
        assert link.detached == "expired"
        nursery.cancel_scope.cancel()


async def test_restore_through_the_registry(autojump_clock):
    async with trio.open_nursery() as nursery:
        registry = await start(nursery)
        handle = registry.create("toy")
        await handle.join("a", "A", FakeLink("a"), 1)
        snap = handle.room.snapshot()
        with pytest.raises(RoomError) as info:
            registry.restore(snap)
        assert info.value.code == "room_exists"
        registry.close(handle.code)
        await trio.sleep(2 * PERIOD)
        link = FakeLink("a")
        restored = registry.restore(snap, links={"a": link})
        assert registry.get(snap["code"]) is restored
        await trio.sleep(2 * PERIOD)
        assert [m.player_id for m in restored.members()] == ["a"]
        assert link.frames()[0].back == 0
        with pytest.raises(RoomError):
            registry.restore({"mode": "chess"})
        with pytest.raises(InvalidSnapshot):
            registry.restore({"mode": "toy", "code": "ZZZZ"})
        nursery.cancel_scope.cancel()
