"""The room actor: tick schedule, inputs, fan-out, lag policy, membership, timers, snapshots."""

from __future__ import annotations

import math

import msgpack
import pytest
import trio
import trio.testing
from fakes import ClientMirror, FakeLink, MemorySink, ToyRules

from actors._arena import ArenaRules
from actors._errors import MailboxFull, RoomClosed, RoomError, RoomFull
from actors._mailbox import JoinRequest, Mailbox, Reply, Stop
from actors._registry import RoomHandle
from actors._room import InvalidSnapshot, Room, RoomConfig
from protocol import (
    CborCodec,
    CloseCode,
    Error,
    Input,
    Joined,
    Leave,
    MsgpackCodec,
    Ping,
    Pong,
    Rpc,
    RpcResult,
    Signal,
    State,
    f32,
)
from protocol import Event as EventFrame

PERIOD = 1 / 20


class CountingMsgpack(MsgpackCodec):
    bodies = 0

    def state_body(self, tick, back, delta):
        CountingMsgpack.bodies += 1
        return super().state_body(tick, back, delta)


class CountingCbor(CborCodec):
    bodies = 0

    def state_body(self, tick, back, delta):
        CountingCbor.bodies += 1
        return super().state_body(tick, back, delta)


def make_room(rules=None, *, mode=None, config=None, **kw) -> Room:
    rules = rules or ArenaRules()
    mode = mode or next(iter(rules.modes()))
    config = config or RoomConfig(empty_grace=3600.0)
    return Room(rules, code="ABCD", mode=mode, config=config, seed=7, **kw)


async def join(room: Room, pid: str, codec=None, frame_id: int = 1) -> FakeLink:
    link = FakeLink(pid, codec)
    await RoomHandle(room).join(pid, pid.upper(), link, frame_id)
    return link


async def ticks(room: Room, n: int) -> None:
    """Let the room run ``n`` more ticks (virtual time)."""
    target = room.tick + n
    while room.tick < target:
        await trio.sleep(PERIOD / 4)


def mirror_of(link: FakeLink) -> ClientMirror:
    mirror = ClientMirror(link)
    mirror.update()
    return mirror


# -- the schedule --------------------------------------------------------------


async def test_ticks_hold_the_rate_for_minutes_without_drift(autojump_clock):
    seen: list[tuple[int, float]] = []
    room = make_room(tick_hook=lambda r, tick: seen.append((tick, trio.current_time())))
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        nursery.start_soon(room.run)
        await trio.sleep(120 + PERIOD / 2)
        nursery.cancel_scope.cancel()
    # the first tick runs at once (t0), then one every period: 0 .. 120 s is 2401 ticks
    assert len(seen) == 2401
    for n, (tick, at) in enumerate(seen, start=1):
        assert tick == n
        assert at == t0 + (n - 1) / 20  # exactly on the absolute grid: no accumulated error
    stats = room.statistics()
    assert (stats.ticks, stats.overruns, stats.skipped_deadlines) == (2401, 0, 0)
    assert stats.late_ticks == 0
    assert len(stats.tick_durations) == room.config.tick_samples
    assert sum(stats.tick_histogram) == 2401


async def test_a_slow_tick_is_an_overrun_and_the_grid_holds(autojump_clock):
    seen: list[tuple[int, float]] = []

    def hook(room, tick):
        seen.append((tick, trio.current_time()))
        if tick == 10:
            autojump_clock.jump(0.120)  # this tick's work takes 120 ms

    room = make_room(tick_hook=hook)
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        nursery.start_soon(room.run)
        await trio.sleep(2.0 + PERIOD / 2)
        nursery.cancel_scope.cancel()
    # the first tick runs at once; tick 10 ran at 0.45 s and ended at 0.57 s: the
    # deadlines at 0.50 and 0.55 are skipped (no burst), and tick 11 runs at 0.60,
    # back on the grid.
    assert seen[9] == (10, t0 + 9 / 20)
    assert seen[10] == (11, t0 + 12 / 20)
    for tick, at in seen[10:]:
        assert at == t0 + (tick + 1) / 20
    stats = room.statistics()
    assert stats.overruns == 1
    assert stats.skipped_deadlines == 2
    assert max(stats.tick_durations) == pytest.approx(0.120)
    assert stats.tick_histogram[-1] == 1  # the 120 ms tick is in the "longer" bucket


# -- inputs ------------------------------------------------------------------


async def test_inputs_apply_in_order_and_seq_shows_in_the_state(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        mirror = mirror_of(b)
        a.push(Input(1, {"x": 1.0}), Input(2, {"x": 2.5, "y": 3.1}), Input(3, {"angle": 0.3}))
        await ticks(room, 1)
        entity = room.public_state["players"]["a"]
        assert (entity["x"], entity["y"], entity["angle"], entity["seq"]) == (
            2.5,
            f32(3.1),
            f32(0.3),
            3,
        )
        assert entity["hp"] == 100
        assert mirror.update() == room.public_state
        assert room.statistics().inputs_accepted == 3
        nursery.cancel_scope.cancel()


async def test_forbidden_and_invalid_inputs_are_refused_with_error_frames(autojump_clock):
    room = make_room(ToyRules(), config=RoomConfig(max_input_str=4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        before = room.public_state["players"]["a"]
        bad = [
            (Input(1, {"seq": 9}), "forbidden_field"),
            (Input(2, {"x": "far"}), "invalid_input"),
            (Input(3, {"x": True}), "invalid_input"),
            (Input(4, {"x": math.inf}), "invalid_input"),
            (Input(5, {"x": 1e39}), "invalid_input"),  # beyond binary32
            (Input(6, {"label": "toolong"}), "invalid_input"),
            (Input(7, {"ready": 1}), "invalid_input"),
            (Input(8, {"score": 1.5}), "invalid_input"),
            (Input(9, {"x": {"nested": 1}}), "invalid_input"),
            (Input(10, 42), "invalid_input"),
            (Input(11, [0b100000]), "invalid_input"),  # mask names a 6th key of 5
            (Input(12, [0b11, 1.0]), "invalid_input"),  # two bits, one value
            (Input(13, {"x": 1.0, "hp": 0}), "forbidden_field"),  # all or nothing
        ]
        a.push(*(frame for frame, _ in bad))
        await ticks(room, 2)
        errors = [m for m in a.messages() if type(m) is Error]
        assert [(e.code, e.ref) for e in errors] == [(code, f.seq) for f, code in bad]
        assert room.public_state["players"]["a"] == before
        assert room.statistics().inputs_refused == len(bad)
        nursery.cancel_scope.cancel()


async def test_dense_inputs_apply_against_the_own_entity(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        # sorted keys of the entity: label, ready, score, seq, x
        a.push(Input(1, [0b10011, "hi", True, 0.1]))
        await ticks(room, 1)
        entity = room.public_state["players"]["a"]
        assert entity == {"x": f32(0.1), "label": "hi", "ready": True, "score": 0, "seq": 1}
        a.push(Input(2, [0b01000, 5]))  # seq is server-owned
        await ticks(room, 1)
        errors = [m for m in a.messages() if type(m) is Error]
        assert [(e.code, e.ref) for e in errors] == [("forbidden_field", 2)]
        nursery.cancel_scope.cancel()


# -- fan-out -------------------------------------------------------------------


async def test_one_frame_per_member_per_tick_and_one_body_per_codec(autojump_clock):
    CountingMsgpack.bodies = CountingCbor.bodies = 0
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        links = []
        for i in range(8):
            codec = CountingCbor() if i % 4 == 3 else CountingMsgpack()
            links.append(await join(room, f"p{i}", codec))
        await ticks(room, 1)
        mirrors = [mirror_of(link) for link in links]
        sent_before = [len(link.sent) for link in links]
        CountingMsgpack.bodies = CountingCbor.bodies = 0
        first = room.tick + 1
        for step in range(1, 41):
            for i, link in enumerate(links):
                link.push(Input(step, {"x": float(step + i), "angle": step / 10}))
            await ticks(room, 1)
        for link, before, mirror in zip(links, sent_before, mirrors, strict=True):
            assert len(link.sent) - before == 40
            times = link.sent_at[before:]
            assert len(set(times)) == 40  # never two frames in one tick
            assert mirror.update() == room.public_state
            assert mirror.tick == room.tick
        assert CountingMsgpack.bodies == 40
        assert CountingCbor.bodies == 40
        stats = room.statistics()
        assert stats.tick >= first + 39
        nursery.cancel_scope.cancel()


async def test_a_quiet_tick_sends_nothing_and_back_follows_each_member(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        await ticks(room, 2)
        mirrors = [mirror_of(a), mirror_of(b)]
        counts = (len(a.sent), len(b.sent))
        await ticks(room, 20)
        assert (len(a.sent), len(b.sent)) == counts
        a.push(Ping(7))  # a message alone is worth a frame, to its addressee only
        await ticks(room, 1)
        assert (len(a.sent), len(b.sent)) == (counts[0] + 1, counts[1])
        frame = a.frames()[-1]
        assert type(frame) is State and frame.delta == {} and frame.msgs == (Pong(7),)
        assert frame.back == frame.tick - mirrors[0].tick >= 21
        await ticks(room, 3)
        b.push(Input(1, {"x": 3.0}))
        await ticks(room, 1)
        # a and b were last sent different ticks: same delta, each with its own base
        fa, fb = a.frames()[-1], b.frames()[-1]
        assert fa.tick == fb.tick and fa.delta == fb.delta
        assert fa.back == 4
        assert fb.back == fb.tick - mirrors[1].tick >= 25
        for mirror in mirrors:
            assert mirror.update() == room.public_state
        nursery.cancel_scope.cancel()


async def test_a_member_that_was_not_ready_gets_one_coalesced_delta(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        await ticks(room, 1)
        mirror = mirror_of(b)
        b.is_ready = False
        count = len(b.sent)
        for step in range(1, 11):
            a.push(Input(step, {"x": float(step), "y": step / 3}))
            if step == 5:
                b.push(Input(1, {"hp": 1}))  # its error waits in its queue
            await ticks(room, 1)
        assert len(b.sent) == count
        b.is_ready = True
        await ticks(room, 1)
        assert len(b.sent) == count + 1
        frame = b.frames()[-1]
        assert type(frame) is State
        assert frame.back == frame.tick - mirror.tick  # from the last state it was sent
        assert frame.back >= 11
        assert [type(m) for m in frame.msgs] == [Error]
        assert mirror.update() == room.public_state
        assert room.statistics().catch_ups_sent == 1
        # and it is up to date again: the next delta is the shared one
        a.push(Input(11, {"x": 0.5}))
        await ticks(room, 1)
        assert b.frames()[-1].back == 1
        assert mirror.update() == room.public_state
        nursery.cancel_scope.cancel()


async def test_a_member_behind_the_history_gets_a_keyframe(autojump_clock):
    room = make_room(config=RoomConfig(history_ticks=8))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        mirror = mirror_of(b)
        b.is_ready = False
        for step in range(1, 21):
            a.push(Input(step, {"x": float(step)}))
            await ticks(room, 1)
        b.is_ready = True
        await ticks(room, 1)
        frame = b.frames()[-1]
        assert type(frame) is State and frame.back == 0
        assert mirror.update() == room.public_state
        nursery.cancel_scope.cancel()


async def test_a_slow_member_is_closed_and_the_others_keep_their_rate(autojump_clock):
    room = make_room(config=RoomConfig(max_lag_ticks=10))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        c = await join(room, "c")
        await ticks(room, 1)
        b.is_ready = False
        count_a = len(a.sent)
        for step in range(1, 16):
            a.push(Input(step, {"x": float(step)}))
            await ticks(room, 1)
        assert b.closed and b.close_code == CloseCode.SLOW_CLIENT
        assert len(a.sent) - count_a == 15  # a frame every tick, whatever b did
        assert "b" not in room.public_state["players"]
        assert [m.player_id for m in room.members()] == ["a", "c"]
        assert room.statistics().slow_closed == 1
        assert mirror_of(c).state == room.public_state
        nursery.cancel_scope.cancel()


async def test_a_stall_is_forgotten_once_the_member_reads_again(autojump_clock):
    room = make_room(config=RoomConfig(max_lag_ticks=10, history_ticks=8))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        mirror = mirror_of(b)
        for step in range(1, 40):
            b.is_ready = step % 20 >= 5  # two stalls of 4 and 5 ticks, 15 ticks apart
            a.push(Input(step, {"x": float(step)}))
            await ticks(room, 1)
        assert not b.closed
        assert room.statistics().keyframes_sent == 2  # the two Joined frames only
        assert room.statistics().catch_ups_sent == 2
        assert mirror.update() == room.public_state
        nursery.cancel_scope.cancel()


async def test_too_many_pending_messages_close_a_member(autojump_clock):
    room = make_room(config=RoomConfig(max_pending_msgs=4))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        a.is_ready = False
        for seq in range(6):
            a.push(Input(seq, {"hp": 0}))
        await ticks(room, 2)
        assert a.close_code == CloseCode.SLOW_CLIENT
        nursery.cancel_scope.cancel()


# -- RPCs and messages --------------------------------------------------------


async def test_room_rpcs_answer_with_results_and_relay_to_other_targets(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        a.push(
            Rpc(1, "room", "bump"),
            Rpc(2, "room", "refuse"),
            Rpc(3, "room", "nosuch"),
            Rpc(4, "others", "wave"),
            Signal("offer", "b", b"sdp"),
            Rpc(5, "room", "bump"),
        )
        await ticks(room, 1)
        msgs = a.messages()
        assert msgs[0] == RpcResult(1, True, None)
        assert msgs[1] == RpcResult(2, False, {"code": "not_allowed", "message": "refused"})
        assert msgs[2].id == 3 and not msgs[2].ok and msgs[2].value["code"] == "invalid_event"
        assert msgs[3] == RpcResult(4, True, {})  # "others": nobody else in the room
        assert (type(msgs[4]), msgs[4].code) == (Error, "no_such_player")
        assert msgs[5] == RpcResult(5, True, None)
        assert room.public_state["game"]["count"] == 2
        nursery.cancel_scope.cancel()


async def test_send_to_broadcast_and_private_views(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        a.push(Rpc(1, "room", "whisper", "b"), Rpc(2, "room", "shout"), Rpc(3, "room", "secret"))
        await ticks(room, 1)
        a.push(Rpc(4, "room", "bump"))  # the private view does not change: not sent again
        await ticks(room, 1)
        events_a = [m for m in a.messages() if type(m) is EventFrame]
        events_b = [m for m in b.messages() if type(m) is EventFrame]
        assert events_a == [
            EventFrame("shout", {"from": "a"}),
            EventFrame("private", {"secret": 1}),
        ]
        assert events_b == [
            EventFrame("whisper", {"from": "a"}),
            EventFrame("shout", {"from": "a"}),
        ]
        assert "secret" not in str(room.public_state)
        nursery.cancel_scope.cancel()


# -- membership ----------------------------------------------------------------


async def test_join_sends_joined_with_the_keyframe(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = FakeLink("a")
        result = await RoomHandle(room).join("a", "Ann", a, 41)
        (joined,) = a.frames()
        assert type(joined) is Joined
        assert (joined.id, joined.code, joined.player_id, joined.seat) == (41, "ABCD", "a", 0)
        assert (result.seat, result.tick) == (0, joined.tick)
        assert joined.state == room.public_state
        members = joined.state["room"]["members"]
        assert members == {"a": {"name": "Ann", "seat": 0, "connected": True}}
        assert joined.state["room"]["host"] == "a"
        entity = joined.state["players"]["a"]
        assert set(entity) == {"x", "y", "angle", "hp", "seq"} and 0 <= entity["x"] < 100
        nursery.cancel_scope.cancel()


async def test_join_refusals(autojump_clock):
    room = make_room(ToyRules(seats=2))
    handle = RoomHandle(room)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        await join(room, "a")
        with pytest.raises(RoomError) as info:
            await handle.join("a", "A", FakeLink("a"), 2)
        assert info.value.code == "already_joined"
        await join(room, "b")
        late = FakeLink("c")
        with pytest.raises(RoomFull):
            await handle.join("c", "C", late, 3)
        assert late.sent == [] and late.detached is None  # the link is still the caller's
        with pytest.raises(ValueError):
            room.join_nowait("q", "Q", FakeLink("q"), -1)
        with pytest.raises(RoomError) as info:
            room.join_nowait("q", "Q" * 65, FakeLink("q"), 1)
        assert info.value.code == "invalid_name"
        with pytest.raises(RoomError) as info:
            room.join_nowait("q", "Q", FakeLink("q"), 1, "spectator")
        assert info.value.code == "not_supported"
        nursery.cancel_scope.cancel()


async def test_a_game_in_progress_takes_no_one(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        host = await join(room, "h")
        host.push(Rpc(1, "room", "start"))
        await ticks(room, 1)
        assert not room.accepting
        with pytest.raises(RoomError) as info:
            await RoomHandle(room).join("z", "Z", FakeLink("z"), 1)
        assert info.value.code == "game_in_progress"
        nursery.cancel_scope.cancel()


async def test_concurrent_joins_never_exceed_the_seats(autojump_clock):
    room = make_room()  # arena: 8 seats by default
    handle = RoomHandle(room)
    results: dict[str, object] = {}

    async def one(i: int) -> None:
        try:
            results[f"p{i}"] = await handle.join(f"p{i}", f"P{i}", FakeLink(f"p{i}"), i)
        except RoomFull as exc:
            results[f"p{i}"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        async with trio.open_nursery() as joins:
            for i in range(20):
                joins.start_soon(one, i)
        seated = [r for r in results.values() if not isinstance(r, RoomFull)]
        assert len(seated) == 8
        assert sorted(r.seat for r in seated) == list(range(8))
        assert len(room.public_state["players"]) == 8
        assert room.free_seats == 0
        nursery.cancel_scope.cancel()


async def test_leave_frame_and_dropped_link_release_the_seat(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        c = await join(room, "c")
        mirror = mirror_of(c)
        a.push(Leave(9), Rpc(1, "room", "bump"))  # nothing after a Leave counts
        b.drop()
        await ticks(room, 1)
        assert a.detached == "left"
        assert room.public_state["game"]["count"] == 0
        assert list(room.public_state["players"]) == ["c"]
        assert room.rules_state.players == ("c",)
        # the host left: the next seat is host, and everyone left is told
        assert room.host == "c"
        await ticks(room, 1)
        mirror.update()
        assert mirror.state == room.public_state
        assert EventFrame("host_changed", {"host": "c"}) in mirror.msgs
        nursery.cancel_scope.cancel()


async def test_a_dropped_member_keeps_its_seat_for_the_grace_period(autojump_clock):
    room = make_room(ToyRules(), config=RoomConfig(reconnect_grace=5.0))
    handle = RoomHandle(room)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        await join(room, "b")
        a.drop()
        await ticks(room, 1)
        assert room.public_state["room"]["members"]["a"]["connected"] is False
        a2 = FakeLink("a")
        result = await handle.reconnect("a", a2, 5)
        assert result.reconnected and result.seat == 0
        assert type(a2.frames()[0]) is Joined
        assert room.public_state["room"]["members"]["a"]["connected"] is True
        a2.drop()
        await trio.sleep(4.9)
        assert "a" in room.public_state["players"]
        await trio.sleep(0.2)
        assert "a" not in room.public_state["players"]
        with pytest.raises(RoomError) as info:
            await handle.reconnect("a", FakeLink("a"), 6)
        assert info.value.code == "not_a_member"
        nursery.cancel_scope.cancel()


async def test_a_reconnect_replaces_a_live_connection(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        old = await join(room, "a")
        new = FakeLink("a")
        await RoomHandle(room).reconnect("a", new, 2)
        assert old.close_code == CloseCode.REPLACED
        new.push(Rpc(1, "room", "bump"))
        await ticks(room, 2)
        assert room.public_state["game"]["count"] == 1
        nursery.cancel_scope.cancel()


# -- timers -------------------------------------------------------------------


async def test_timers_fire_at_their_deadline_and_a_phase_change_disarms_them(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        a.push(Rpc(1, "room", "start"))
        await ticks(room, 1)
        started = room.clock.now()
        timers = room.timers()
        assert list(timers) == ["round", "aux"]
        assert timers["round"] == pytest.approx(started + 10, abs=PERIOD)
        await trio.sleep(timers["round"] - room.clock.now() - 0.01)
        assert room.public_state["game"]["fired"] == []
        await trio.sleep(0.01 + PERIOD)
        assert room.public_state["game"]["fired"] == ["round"]
        # firing moved the phase to "done": "aux" was disarmed with it
        assert room.timers() == {}
        a.push(Rpc(2, "room", "next"))
        await ticks(room, 1)
        assert list(room.timers()) == ["round2"]
        nursery.cancel_scope.cancel()


async def test_a_phase_change_keeps_only_the_timers_armed_by_the_same_step(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        a.push(Rpc(1, "room", "start"))
        await ticks(room, 1)
        a.push(Rpc(2, "room", "next"))
        await ticks(room, 1)
        assert list(room.timers()) == ["round2"]
        a.push(Rpc(3, "room", "cancel"), Rpc(4, "room", "bump"))
        await ticks(room, 1)
        assert list(room.timers()) == ["round2"]
        nursery.cancel_scope.cancel()


# -- closing, sinks, snapshots --------------------------------------------------


async def test_stop_room_tells_everyone_and_detaches(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        b.is_ready = False  # a closing room does not wait for readiness
        a.push(Rpc(1, "room", "stop", "bye"))
        await trio.sleep(PERIOD * 2)
        for link in (a, b):
            assert link.messages()[-1] == EventFrame("room_closed", {"reason": "bye"})
            assert link.detached == "bye"
            assert not link.closed
        assert room.closed and room.close_reason == "bye"
        with pytest.raises(RoomClosed):
            room.join_nowait("c", "C", FakeLink("c"), 1)
    # run() returned on its own: the nursery did not need cancelling


async def test_checkpoints_journal_and_game_records_go_to_the_sinks(autojump_clock):
    sink = MemorySink()
    room = make_room(ToyRules(), checkpoint_sink=sink, game_record_sink=sink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        a.push(Input(1, {"x": 2.0}), Rpc(1, "room", "bump"))
        await ticks(room, 1)
        assert [e[0] for e in room.journal()[-1][2]] == ["i", "r"]
        a.push(Rpc(2, "room", "save"))
        await ticks(room, 1)
        code, tick, data, ttl = sink.snapshots[-1]
        assert (code, tick, ttl) == ("ABCD", room.tick, room.config.checkpoint_ttl)
        snap = msgpack.unpackb(data)
        assert snap["state"]["count"] == 1 and snap["players"]["a"]["seq"] == 1
        assert room.journal() == []  # the snapshot covers it
        journal_ticks = [msgpack.unpackb(d)[0] for _, _, d, _ in sink.journal]
        assert journal_ticks == sorted(journal_ticks) and len(journal_ticks) == 3
        a.push(Rpc(3, "room", "finish"))
        await ticks(room, 1)
        assert sink.games[0][0] == "ABCD" and sink.games[0][1].standings == (("a", "a", 1),)
        nursery.cancel_scope.cancel()


async def test_snapshot_restore_round_trip(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        b = await join(room, "b")
        a.push(Input(4, {"x": 1.5, "label": "hi"}), Rpc(1, "room", "secret"))
        b.push(Rpc(2, "room", "start"))
        await ticks(room, 2)
        snap = msgpack.unpackb(msgpack.packb(room.snapshot()))
        deadline = room.timers()["round"]
        public = room.public_state
        nursery.cancel_scope.cancel()
    await trio.sleep(3)
    a2, b2 = FakeLink("a"), FakeLink("b")
    restored = Room.restore(snap, ToyRules(), links={"a": a2, "b": b2}, clock=room.clock)
    assert restored.public_state == public
    assert restored.timers() == {"round": deadline, "aux": snap["timers"]["aux"]}
    assert restored.rules_state == room.rules_state
    async with trio.open_nursery() as nursery:
        nursery.start_soon(restored.run)
        await ticks(restored, 1)
        for link in (a2, b2):  # re-attached members start from a keyframe
            assert link.frames()[0].back == 0
            assert mirror_of(link).state["players"] == restored.public_state["players"]
        assert [e for e in a2.messages() if type(e) is EventFrame] == [
            EventFrame("private", {"secret": 1})
        ]
        # the timer keeps its absolute deadline: it fires 10 s after "start", not 13 s
        await trio.sleep(deadline - restored.clock.now() + PERIOD)
        assert restored.public_state["game"]["fired"] == ["round"]
        nursery.cancel_scope.cancel()


async def test_restore_without_a_link_drops_the_seat(autojump_clock):
    room = make_room(ToyRules())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        await join(room, "a")
        await join(room, "b")
        snap = room.snapshot()
        nursery.cancel_scope.cancel()
    restored = Room.restore(snap, ToyRules(), links={"b": FakeLink("b")})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(restored.run)
        await ticks(restored, 1)
        assert [m.player_id for m in restored.members()] == ["b"]
        assert restored.rules_state.players == ("b",)
        nursery.cancel_scope.cancel()


async def test_restore_refuses_bad_snapshots():
    good_rules = ToyRules()
    bad_snapshots = (
        {},
        {"version": 99},
        {"version": 1, "rules": "arena"},
        {"version": 1, "rules": "toy"},
    )
    for bad in bad_snapshots:
        with pytest.raises(InvalidSnapshot):
            Room.restore(bad, good_rules)


# -- mailbox and replies -------------------------------------------------------


async def test_a_full_mailbox_refuses_without_blocking(autojump_clock):
    room = make_room(config=RoomConfig(mailbox_size=4))  # not running: nothing drains
    t = trio.current_time()
    replies = [room.join_nowait(f"p{i}", "P", FakeLink(f"p{i}"), i) for i in range(4)]
    with pytest.raises(MailboxFull) as info:
        room.join_nowait("p9", "P", FakeLink("p9"), 9)
    assert info.value.code == "room_busy"
    assert trio.current_time() == t
    assert room.statistics().mailbox_depth == 4
    assert room.free_seats == 4  # the 4 waiting joins hold their seats
    assert not any(r.done for r in replies)
    room.stop_nowait("maintenance")  # a stop gets through a full mailbox
    with trio.fail_after(1):
        await room.run()
    assert room.close_reason == "maintenance"
    for reply in replies:
        with pytest.raises(RoomClosed):
            reply.result()


async def test_mailbox_and_reply_basics(autojump_clock):
    box = Mailbox(2, name="ABCD")
    box.send_nowait(Stop("a"))
    box.send_nowait(Stop("b"))
    with pytest.raises(MailboxFull):
        box.send_nowait(Stop("c"))
    assert box.drain() == [Stop("a"), Stop("b")] and box.drain() == []
    box.send_nowait(Stop("d"))
    assert box.close() == [Stop("d")]
    with pytest.raises(RoomClosed):
        box.send_nowait(Stop("e"))
    stats = box.statistics()
    assert (stats.posted, stats.refused, stats.closed) == (3, 2, True)
    with pytest.raises(ValueError):
        Mailbox(0)

    reply: Reply[int] = Reply()
    with pytest.raises(RoomError) as info:
        await reply.wait(1.0)
    assert info.value.code == "room_timeout" and reply.abandoned
    reply2: Reply[int] = Reply()
    reply2.set(5)
    assert await reply2.wait(1.0) == 5
    with pytest.raises(RuntimeError):
        reply2.set(6)


async def test_an_abandoned_join_takes_no_seat(autojump_clock):
    room = make_room()
    link = FakeLink("a")
    with pytest.raises(RoomError) as info:
        await RoomHandle(room).join("a", "A", link, 1, timeout=0.5)  # room not running yet
    assert info.value.code == "room_timeout"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        await ticks(room, 2)
        assert room.members() == [] and link.sent == []
        nursery.cancel_scope.cancel()


async def test_empty_and_expired_rooms_close_themselves(autojump_clock):
    room = make_room(config=RoomConfig(empty_grace=2.0))
    with trio.fail_after(2.0 + 2 * PERIOD):
        await room.run()
    assert room.close_reason == "empty"

    room = make_room(config=RoomConfig(max_lifetime=60.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        await trio.sleep(59)
        assert not room.closed
        await trio.sleep(1 + PERIOD)
        assert room.closed and room.close_reason == "expired"
        assert a.messages()[-1] == EventFrame("room_closed", {"reason": "expired"})
        assert a.detached == "expired"


def test_room_config_is_validated():
    with pytest.raises(ValueError):
        RoomConfig(tick_rate=0)
    with pytest.raises(ValueError):
        RoomConfig(max_lag_ticks=0)
    with pytest.raises(ValueError):
        RoomConfig(empty_grace=-1)


async def test_unknown_mode_and_bad_options_are_room_errors(autojump_clock):
    with pytest.raises(RoomError) as info:
        Room(ArenaRules(), code="ABCD", mode="quiz")
    assert info.value.code == "unknown_mode"
    with pytest.raises(RoomError) as info:
        Room(ArenaRules(), code="ABCD", mode="arena", options={"max_players": 65})
    assert info.value.code == "invalid_options"
    assert Room(ArenaRules(), code="ABCD", mode="arena", options={"max_players": 3}).seats == 3


async def test_joinrequest_is_plain_data():
    reply: Reply[int] = Reply()
    request = JoinRequest("a", "A", FakeLink("a"), 1, reply=reply)
    assert request.reply is reply and request.role == "player"
