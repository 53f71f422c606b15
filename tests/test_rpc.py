"""Relayed RPCs: targets, correlation, timeouts, callees leaving, buffered calls.

The first half drives a ``Room`` in virtual time with in-memory links (every
edge case, deterministic); the second runs a real relay on loopback with the
client SDK (every target kind, timeouts, a callee leaving mid-call, a late
joiner receiving buffered calls, the one-frame-per-tick rule).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import trio
from fakes import FakeLink, ToyRules
from relay_fixtures import TRANSPORTS, fast_config, open_raw
from relay_fixtures import start_relay as start

from actors._registry import RoomHandle
from actors._room import Room, RoomConfig
from actors._rpc import RpcSettings, call_timeout
from protocol import Error, Join, Joined, Leave, Rpc, RpcResult, State
from relay.client import RelayClient, RpcError, connect

PERIOD = 1 / 20


def make_room(**config: Any) -> Room:
    config.setdefault("empty_grace", 3600.0)
    return Room(ToyRules(8), code="ABCD", mode="toy", config=RoomConfig(**config), seed=1)


async def join(room: Room, pid: str) -> FakeLink:
    link = FakeLink(pid)
    await RoomHandle(room).join(pid, pid.upper(), link, 1)
    return link


async def ticks(room: Room, n: int = 1) -> None:
    target = room.tick + n
    while room.tick < target:
        await trio.sleep(PERIOD / 4)


def take(link: FakeLink, kind: type | None = None) -> list[Any]:
    """The messages of ``kind`` (any, if None) sent to ``link`` since the last call
    for that kind."""
    seen: dict[Any, int] = link.__dict__.setdefault("seen", {})
    msgs = [m for m in link.messages() if kind is None or type(m) is kind]
    start = seen.get(kind, 0)
    seen[kind] = len(msgs)
    return msgs[start:]


# -- in-memory room: routing and correlation -------------------------------------------


async def test_a_call_to_one_player_reaches_it_with_the_caller_set_by_the_room(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b, c = [await join(room, p) for p in "abc"]
        await ticks(room)
        for link in (a, b, c):
            take(link)
        a.push(Rpc(7, "b", "greet", {"hi": 1}, caller="c"))  # a forged caller is ignored
        await ticks(room)
        calls = take(b, Rpc)
        assert len(calls) == 1
        call = calls[0]
        assert (call.method, call.args, call.caller, call.target) == ("greet", {"hi": 1}, "a", "b")
        assert take(c, Rpc) == [] and take(a, RpcResult) == []
        b.push(RpcResult(call.id, True, "hello a"))
        await ticks(room)
        assert take(a, RpcResult) == [RpcResult(7, True, "hello a")]
        assert take(b, RpcResult) == [] and take(c, RpcResult) == []  # the caller only
        nursery.cancel_scope.cancel()


async def test_callers_with_the_same_ids_get_their_own_answers(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b, c = [await join(room, p) for p in "abc"]
        a.push(Rpc(1, "c", "who"))
        b.push(Rpc(1, "c", "who"))
        await ticks(room)
        calls = take(c, Rpc)
        assert [x.caller for x in calls] == ["a", "b"]
        assert calls[0].id != calls[1].id
        c.push(RpcResult(calls[1].id, True, "to b"), RpcResult(calls[0].id, False, {"code": "no"}))
        await ticks(room)
        assert take(a, RpcResult) == [RpcResult(1, False, {"code": "no"})]
        assert take(b, RpcResult) == [RpcResult(1, True, "to b")]
        nursery.cancel_scope.cancel()


async def test_an_answer_only_counts_from_a_callee_of_that_call(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b, c = [await join(room, p) for p in "abc"]
        a.push(Rpc(3, "b", "secret"))
        await ticks(room)
        (call,) = take(b, Rpc)
        c.push(RpcResult(call.id, True, "hijacked"))  # c was not called
        await ticks(room)
        assert take(a, RpcResult) == []
        b.push(RpcResult(call.id, True, "genuine"), RpcResult(call.id, True, "again"))
        await ticks(room)
        assert take(a, RpcResult) == [RpcResult(3, True, "genuine")]  # once
        assert room._rpc.unmatched == 2
        nursery.cancel_scope.cancel()


async def test_host_others_all_and_lists(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b, c = [await join(room, p) for p in "abc"]
        links = {"a": a, "b": b, "c": c}
        assert room.host == "a"
        c.push(Rpc(1, "host", "h"))
        b.push(Rpc(2, "others", "o"), Rpc(3, "all", "x"), Rpc(4, ["c", "zed", "c", "a"], "l"))
        await ticks(room)
        got = {pid: [(x.method, x.caller) for x in take(link, Rpc)] for pid, link in links.items()}
        assert got == {
            "a": [("o", "b"), ("x", "b"), ("l", "b"), ("h", "c")],  # seat order: b, then c
            "b": [("x", "b")],
            "c": [("o", "b"), ("x", "b"), ("l", "b")],
        }
        # everyone answers everything with its own name
        for pid, link in links.items():
            calls = [m for m in link.messages() if type(m) is Rpc]
            link.push(*(RpcResult(x.id, True, pid) for x in calls))
        await ticks(room)
        assert take(c, RpcResult) == [RpcResult(1, True, "a")]
        results = {r.id: r for r in take(b, RpcResult)}
        ok = {"ok": True}
        assert results[2] == RpcResult(
            2, True, {"a": {**ok, "value": "a"}, "c": {**ok, "value": "c"}}
        )
        assert results[3].ok and set(results[3].value) == {"a", "b", "c"}
        listed = results[4].value
        assert list(listed) == ["c", "zed", "a"]  # the target's order, repeats dropped
        assert listed["zed"]["ok"] is False
        assert listed["zed"]["value"]["code"] == "no_such_player"
        assert listed["c"] == {"ok": True, "value": "c"} and listed["a"] == {
            "ok": True,
            "value": "a",
        }
        nursery.cancel_scope.cancel()


async def test_others_with_nobody_else_answers_at_once(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        a.push(Rpc(1, "others", "anyone"), Rpc(2, "all", "me"))
        await ticks(room)
        assert take(a, RpcResult) == [RpcResult(1, True, {})]
        (call,) = take(a, Rpc)  # "all" includes the caller itself
        a.push(RpcResult(call.id, True, 42))
        await ticks(room)
        assert take(a, RpcResult) == [RpcResult(2, True, {"a": {"ok": True, "value": 42}})]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (Rpc(1, "nobody", "m"), "no_such_player"),
        (Rpc(1, [], "m"), "invalid_target"),
        (Rpc(1, [f"p{i}" for i in range(65)], "m"), "invalid_target"),
        (Rpc(1, "b", ""), "invalid_method"),
        (Rpc(1, "b", "m" * 65), "invalid_method"),
        (Rpc(1, "b", "m", buffered=True), "not_bufferable"),
        (Rpc(1, "host", "m", buffered=True), "not_bufferable"),
        (Rpc(1, ["b"], "m", buffered=True), "not_bufferable"),
        (Rpc(1, "room", "bump", buffered=True), "not_bufferable"),
        (Rpc(1, "room", "voice.nothing"), "no_such_method"),
        (Rpc(1, "room", "rpc.nothing"), "no_such_method"),
    ],
)
async def test_refused_calls_get_a_clear_error_at_once(autojump_clock, frame, code):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b = await join(room, "a"), await join(room, "b")
        a.push(frame)
        await ticks(room)
        (result,) = take(a, RpcResult)
        assert (result.id, result.ok, result.value["code"]) == (1, False, code)
        assert result.value["message"]
        assert take(b, Rpc) == []
        assert room.public_state["game"]["count"] == 0
        nursery.cancel_scope.cancel()


# -- timeouts and departures -------------------------------------------------------------


async def test_a_call_nobody_answers_times_out_at_its_deadline(autojump_clock):
    room = make_room(rpc_timeout=2.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b, c = [await join(room, p) for p in "abc"]
        a.push(Rpc(1, "b", "slow"), Rpc(2, "others", "slow"))
        await ticks(room)
        (to_c,) = take(c, Rpc)
        c.push(RpcResult(to_c.id, True, "c is quick"))
        await trio.sleep(1.9)
        assert take(a, RpcResult) == []  # nothing before the deadline
        await trio.sleep(0.2)
        results = {r.id: r for r in take(a, RpcResult)}
        assert results[1].ok is False and results[1].value["code"] == "rpc_timeout"
        gathered = results[2].value
        assert gathered["c"] == {"ok": True, "value": "c is quick"}
        assert gathered["b"]["ok"] is False and gathered["b"]["value"]["code"] == "rpc_timeout"
        assert room._rpc.timeouts == 2 and len(room._rpc) == 0
        # a late answer is dropped: the caller hears nothing more
        for call in take(b, Rpc):
            b.push(RpcResult(call.id, True, "late"))
        await ticks(room, 2)
        assert take(a, RpcResult) == []
        nursery.cancel_scope.cancel()


def test_a_call_timeout_is_the_default_or_what_it_asks_capped():
    settings = RpcSettings(timeout=10.0, timeout_max=30.0)
    assert call_timeout(None, settings) == 10.0
    assert call_timeout(2.5, settings) == 2.5
    assert call_timeout(3600.0, settings) == 30.0
    assert call_timeout(0.0, settings) == 10.0
    assert call_timeout(math.nan, settings) == 10.0
    with pytest.raises(ValueError):
        RoomConfig(rpc_timeout=61.0, rpc_timeout_max=60.0)


async def test_a_callee_that_leaves_fails_its_calls_at_once(autojump_clock):
    room = make_room(rpc_timeout=30.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b, c = [await join(room, p) for p in "abc"]
        a.push(Rpc(1, "b", "wait"), Rpc(2, ["b", "c"], "wait"))
        await ticks(room)
        for call in take(c, Rpc):
            c.push(RpcResult(call.id, True, "c"))
        b.push(Leave())
        await ticks(room)
        results = {r.id: r for r in take(a, RpcResult)}
        assert results[1].ok is False and results[1].value["code"] == "no_such_player"
        assert results[2].value["b"]["value"]["code"] == "no_such_player"
        assert results[2].value["c"] == {"ok": True, "value": "c"}
        assert len(room._rpc) == 0
        # and a new call to the player who left fails at once too
        a.push(Rpc(3, "b", "wait"))
        await ticks(room)
        assert take(a, RpcResult)[0].value["code"] == "no_such_player"
        nursery.cancel_scope.cancel()


async def test_a_callee_whose_connection_drops_fails_with_player_disconnected(autojump_clock):
    room = make_room(reconnect_grace=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b = await join(room, "a"), await join(room, "b")
        a.push(Rpc(1, "b", "wait"))
        await ticks(room)
        b.drop()
        await ticks(room)
        (result,) = take(a, RpcResult)
        assert result.value["code"] == "player_disconnected"
        a.push(Rpc(2, "b", "wait"), Rpc(3, "others", "wait"))
        await ticks(room)
        results = {r.id: r for r in take(a, RpcResult)}
        assert results[2].value["code"] == "player_disconnected"
        assert results[3].value["b"]["value"]["code"] == "player_disconnected"
        nursery.cancel_scope.cancel()


async def test_a_caller_that_leaves_is_forgotten(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b = await join(room, "a"), await join(room, "b")
        a.push(Rpc(1, "b", "wait"), Leave())
        await ticks(room)
        (call,) = take(b, Rpc)
        assert len(room._rpc) == 0
        b.push(RpcResult(call.id, True, "nobody listens"))
        await ticks(room, 2)
        assert "a" not in room.public_state["players"]
        nursery.cancel_scope.cancel()


async def test_one_caller_may_have_a_bounded_number_of_calls_waiting(autojump_clock):
    room = make_room(max_pending_rpcs=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b = await join(room, "a"), await join(room, "b")
        a.push(*(Rpc(i, "b", "m") for i in range(1, 6)))
        b.push(Rpc(9, "a", "m"))  # others are not limited by a's calls
        await ticks(room)
        refused = take(a, RpcResult)
        assert [(r.id, r.value["code"]) for r in refused] == [
            (4, "too_many_calls"),
            (5, "too_many_calls"),
        ]
        assert len(take(b, Rpc)) == 3
        assert room._rpc.pending_by_caller == {"a": 3, "b": 1}
        nursery.cancel_scope.cancel()


async def test_a_relayed_call_and_its_answer_each_ride_in_the_next_tick_frame(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b = await join(room, "a"), await join(room, "b")
        await ticks(room)
        sent_a, sent_b = len(a.sent), len(b.sent)
        a.push(Rpc(1, "b", "m"))
        await ticks(room)
        call_tick = room.tick
        frames = [b.codec.decode(x) for x in b.sent[sent_b:]]
        assert [type(f) for f in frames] == [State]  # one frame, carrying the call
        assert frames[0].tick == call_tick and type(frames[0].msgs[0]) is Rpc
        b.push(RpcResult(frames[0].msgs[0].id, True, None))
        await ticks(room)
        frames = [a.codec.decode(x) for x in a.sent[sent_a:]]
        assert [type(f) for f in frames] == [State]  # nothing in the call's tick: no change
        assert frames[0].tick == call_tick + 1 and frames[0].msgs == (RpcResult(1, True, None),)
        nursery.cancel_scope.cancel()


# -- buffered calls ----------------------------------------------------------------------


async def test_buffered_calls_are_replayed_to_late_joiners_in_order(autojump_clock):
    room = make_room()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b = await join(room, "a"), await join(room, "b")
        a.push(
            Rpc(1, "others", "spawn", {"n": 1}, buffered=True),
            Rpc(2, "all", "paint", "red", buffered=True),
            Rpc(3, "others", "flash"),  # not buffered
        )
        b.push(Rpc(1, "all", "spawn", {"n": 2}, buffered=True))
        await ticks(room)
        for call in take(b, Rpc):
            b.push(RpcResult(call.id, True, None))
        (own,) = [x for x in take(a, Rpc) if x.caller == "b"]
        a.push(RpcResult(own.id, True, None))
        await ticks(room)
        take(a, RpcResult)
        take(b, RpcResult)
        c = await join(room, "c")
        await ticks(room)
        replayed = [(x.caller, x.method, x.args, x.buffered) for x in take(c, Rpc)]
        assert replayed == [
            ("a", "spawn", {"n": 1}, True),
            ("a", "paint", "red", True),
            ("b", "spawn", {"n": 2}, True),
        ]
        # the late joiner's answers are nobody's business
        c.push(*(RpcResult(x.id, True, "c") for x in c.messages() if type(x) is Rpc))
        await ticks(room)
        assert take(a, RpcResult) == [] and take(b, RpcResult) == []
        assert room._rpc.unmatched == 3
        # the sender removes one; a sender who leaves takes all of its own with it
        a.push(Rpc(4, "room", "rpc.unbuffer", {"method": "paint"}))
        b.push(Leave())
        await ticks(room)
        assert take(a, RpcResult) == [RpcResult(4, True, {"removed": 1})]
        d = await join(room, "d")
        await ticks(room)
        assert [(x.caller, x.method) for x in take(d, Rpc)] == [("a", "spawn")]
        a.push(Rpc(5, "room", "rpc.unbuffer"))
        await ticks(room)
        assert take(a, RpcResult) == [RpcResult(5, True, {"removed": 1})]
        e = await join(room, "e")
        await ticks(room)
        assert take(e, Rpc) == []
        nursery.cancel_scope.cancel()


async def test_a_room_keeps_a_bounded_number_of_buffered_calls(autojump_clock):
    room = make_room(max_buffered_rpcs=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a = await join(room, "a")
        a.push(*(Rpc(i, "others", "m", i, buffered=True) for i in range(1, 4)))
        a.push(Rpc(9, "room", "rpc.unbuffer", {"id": 2}), Rpc(10, "room", "rpc.unbuffer", []))
        await ticks(room)
        results = take(a, RpcResult)
        assert results[:2] == [RpcResult(1, True, {}), RpcResult(2, True, {})]
        assert (results[2].id, results[2].value["code"]) == (3, "buffer_full")
        assert results[3] == RpcResult(9, True, {"removed": 1})
        assert (results[4].id, results[4].value["code"]) == (10, "invalid_args")
        nursery.cancel_scope.cancel()


# -- end to end over loopback ------------------------------------------------------------


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def _room_of(r: Any, n: int, clients: list[RelayClient]) -> str:
    code = await clients[0].create("arena")
    for c in clients[1:n]:
        await c.join(code)
    await clients[0].wait_for(lambda c: len(c.state["room"]["members"]) == n)
    return code


async def test_rpc_to_each_target_kind_end_to_end(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
        connect(r.url, codec="cbor") as c,
    ):
        for client in (a, b, c):
            client.register("whoami", lambda caller, args, me=client: [me.player_id, caller, args])

        async def slow_double(caller: str | None, args: Any) -> int:
            await trio.sleep(0.01)  # async handlers run on their own task
            return args * 2

        c.register("double", slow_double)
        await _room_of(r, 3, [a, b, c])
        pa, pb, pc = a.player_id, b.player_id, c.player_id
        # one player, by id
        assert await b.rpc(pc, "whoami", {"x": 1.5}) == [pc, pb, {"x": 1.5}]
        assert await a.rpc(pc, "double", 21) == 42
        # the host (the creator)
        assert await c.rpc("host", "whoami") == [pa, pc, None]
        # a list, others, all: one answer per callee
        assert await a.rpc([pb, pc], "whoami", 0) == {
            pb: {"ok": True, "value": [pb, pa, 0]},
            pc: {"ok": True, "value": [pc, pa, 0]},
        }
        others = await b.rpc("others", "whoami")
        assert set(others) == {pa, pc} and others[pa]["value"] == [pa, pb, None]
        everyone = await c.rpc("all", "whoami")
        assert set(everyone) == {pa, pb, pc}
        # a callee with no handler, and one whose handler raises
        with pytest.raises(RpcError) as refused:
            await a.rpc(pb, "nothing_here")
        assert refused.value.code == "no_such_method"
        b.register("boom", lambda caller, args: 1 / 0)
        with pytest.raises(RpcError) as failed:
            await a.rpc(pb, "boom")
        assert failed.value.code == "rpc_failed"
        # the room's own methods
        with pytest.raises(RpcError) as room_refused:
            await a.rpc("room", "dance")
        assert room_refused.value.code == "invalid_event"
        # a player who is not in the room
        with pytest.raises(RpcError) as absent:
            await a.rpc("nobody-at-all", "whoami")
        assert absent.value.code == "no_such_player"


async def test_timeout_and_a_callee_leaving_mid_call_end_to_end(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(tmp_path, transport, tick_rate=50, rpc_timeout=0.4)
    async with start(config) as r, connect(r.url) as a, connect(r.url) as b:
        never = trio.Event()

        async def hang(caller: str | None, args: Any) -> None:
            await never.wait()

        b.register("hang", hang)
        await _room_of(r, 2, [a, b])
        started = trio.current_time()
        with pytest.raises(RpcError) as timed_out:
            await a.rpc(b.player_id, "hang")  # the relay's default timeout applies
        elapsed = trio.current_time() - started
        assert timed_out.value.code == "rpc_timeout"
        assert 0.35 < elapsed < 2.0, elapsed

        async def leave_soon() -> None:
            await trio.sleep(0.1)
            await b.leave()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(leave_soon)
            with pytest.raises(RpcError) as gone:
                await a.rpc(b.player_id, "hang", timeout=5)
        # at once: waiting for the timeout would have given rpc_timeout
        assert gone.value.code == "no_such_player"
        never.set()


async def test_a_buffered_call_reaches_a_late_joiner_end_to_end(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
        connect(r.url) as late,
    ):
        received: dict[str, list[Any]] = {"b": [], "late": []}
        b.register("spawn", lambda caller, args: received["b"].append((caller, args)))
        late.register("spawn", lambda caller, args: received["late"].append((caller, args)))
        code = await _room_of(r, 2, [a, b])
        assert await a.rpc("others", "spawn", {"id": 1}, buffered=True) == {
            b.player_id: {"ok": True, "value": None}
        }
        await a.rpc("others", "spawn", {"id": 2}, buffered=True)
        await a.rpc("others", "spawn", {"id": 3})  # not buffered
        await late.join(code)
        await late.wait_for(lambda c: len(received["late"]) == 2)
        assert received["late"] == [(a.player_id, {"id": 1}), (a.player_id, {"id": 2})]
        assert [args["id"] for _, args in received["b"]] == [1, 2, 3]
        assert await a.unbuffer(method="spawn") == 2
        await late.leave()
        received["late"].clear()
        await late.join(code)
        await late.rpc("room", "voice.leave")  # a round trip: the replay would be in by now
        assert received["late"] == []


async def test_relayed_calls_travel_inside_state_frames(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as caller,
    ):
        code = await caller.create("arena")
        room = r.relay.registry.get(code).room
        async with open_raw(r.port) as raw:
            await raw.hello()
            await raw.send(Join(1, code))
            joined = await raw.recv()
            assert type(joined) is Joined
            answers: list[Any] = []

            async def call() -> None:
                answers.append(await caller.rpc(joined.player_id, "echo", [1, 2, 3]))

            async with trio.open_nursery() as nursery:
                called_at = room.tick
                nursery.start_soon(call)
                ticks_seen: list[int] = []
                calls: list[Rpc] = []
                while not calls:
                    frame = await raw.recv()
                    assert type(frame) is State, frame  # never a frame of its own
                    ticks_seen.append(frame.tick)
                    calls = [m for m in frame.msgs if type(m) is Rpc]
                (rpc,) = calls
                assert rpc.caller == caller.player_id and rpc.args == [1, 2, 3]
                # relayed at the next tick (loosely: a busy machine may be late)
                assert frame.tick - called_at <= 5, (frame.tick, called_at)
                assert not [m for m in frame.msgs if type(m) is Error]
                await raw.send(RpcResult(rpc.id, True, "pong"))
            assert answers == ["pong"]
            assert ticks_seen == sorted(set(ticks_seen))
