"""Voice: channels and mutes in the room state, and the WebRTC signalling relay.

Pure ``VoiceState`` and ``check_signal`` first, then a room in virtual time,
then two SDK clients on a real relay doing a whole offer/answer/ICE exchange.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from fakes import FakeLink, ToyRules
from relay_fixtures import TRANSPORTS, fast_config
from relay_fixtures import start_relay as start

from actors._registry import RoomHandle
from actors._room import Room, RoomConfig
from actors._voice import (
    DEFAULT_CHANNEL,
    MAX_KEY_CHARS,
    VoiceError,
    VoiceState,
    call_voice,
    check_signal,
)
from protocol import Error, Leave, Rpc, Signal
from relay.client import RelayClient, RpcError, connect

PERIOD = 1 / 20
ONLINE = SimpleNamespace(link=object())
OFFLINE = SimpleNamespace(link=None)


# -- the pure part ---------------------------------------------------------------------


def test_joining_leaving_and_muting_show_in_the_view():
    v = VoiceState()
    assert v.view == {}
    v = v.join("a").join("b", "team-red").set_key("c", "k4.public.abc")
    assert v.view == {
        "a": {"channel": "room", "muted": False, "muted_by_host": False, "key": None},
        "b": {"channel": "team-red", "muted": False, "muted_by_host": False, "key": None},
        "c": {"channel": None, "muted": False, "muted_by_host": False, "key": "k4.public.abc"},
    }
    assert v.members("room") == ["a"] and v.members("team-red") == ["b"]
    v2 = v.set_muted("a", True).host_mute("b", "team-red", True)
    assert v2.view["a"]["muted"] and v2.view["b"]["muted_by_host"]
    assert v2.view["c"] is v.view["c"]  # unchanged entries are shared
    # a host mute belongs to the channel: it shows only while the player is there
    v3 = v2.join("b", "room")
    assert not v3.view["b"]["muted_by_host"]
    assert v3.join("b", "team-red").view["b"]["muted_by_host"]
    # leaving clears the self-mute; a player with nothing left has no entry
    v4 = v3.leave("a")
    assert "a" not in v4.view
    assert v4.drop("b").view == {"c": v.view["c"]} and not v4.drop("b").host_mutes
    assert v.join("a") is v  # no change, same state
    assert VoiceState.load(v2.dump()).view == v2.view


@pytest.mark.parametrize("channel", ["", "x" * 33, "a b", "é", "a/b", 7, None])
def test_bad_channel_names_are_refused(channel: Any):
    with pytest.raises(VoiceError) as refused:
        VoiceState().join("a", channel)
    assert refused.value.code == "invalid_channel"


@pytest.mark.parametrize("key", ["", "a b", "x" * (MAX_KEY_CHARS + 1), "k\n", 5, b"raw"])
def test_bad_public_keys_are_refused(key: Any):
    with pytest.raises(VoiceError) as refused:
        VoiceState().set_key("a", key)
    assert refused.value.code == "invalid_key"


def _call(state: VoiceState, pid: str, method: str, args: Any = None, host: str = "a"):
    members = {"a": ONLINE, "b": ONLINE, "c": ONLINE}
    return call_voice(state, pid, method, args, host=host, members=members)


def test_voice_calls_and_their_errors():
    v, value = _call(VoiceState(), "b", "voice.join")
    assert value == {"channel": DEFAULT_CHANNEL, "members": ["b"]}
    v, value = _call(v, "a", "voice.join", {"channel": "room"})
    assert value["members"] == ["a", "b"]
    v, _ = _call(v, "a", "voice.host_mute", {"player": "b"})
    assert v.view["b"]["muted_by_host"]
    v, _ = _call(v, "a", "voice.host_mute", {"player": "c", "channel": "room"})
    assert ("c", "room") in v.host_mutes
    v, _ = _call(v, "b", "voice.mute", {"muted": True})
    assert v.view["b"]["muted"]
    refusals = [
        ("b", "voice.host_mute", {"player": "a"}, "not_host"),
        ("a", "voice.host_mute", {"player": "zed"}, "no_such_player"),
        ("a", "voice.host_mute", {"player": "c"}, "not_in_channel"),
        ("a", "voice.host_mute", {"player": "b", "muted": "yes"}, "invalid_args"),
        ("c", "voice.mute", None, "not_in_channel"),
        ("a", "voice.join", ["room"], "invalid_args"),
        ("a", "voice.join", {"channel": "no spaces"}, "invalid_channel"),
        ("a", "voice.set_key", {}, "invalid_args"),
        ("a", "voice.shout", None, "no_such_method"),
    ]
    for pid, method, args, code in refusals:
        with pytest.raises(VoiceError) as refused:
            _call(v, pid, method, args)
        assert refused.value.code == code, (method, args)


def _signal(state: VoiceState, sender: str, frame: Signal, **kw: Any) -> Signal:
    members = {"a": ONLINE, "b": ONLINE, "c": ONLINE, "d": OFFLINE}
    return check_signal(state, sender, frame, members=members, **kw)


def test_a_signal_goes_to_a_peer_of_the_same_channel_unaltered():
    v = VoiceState().join("a").join("b").join("c", "other").join("d")
    payload = os.urandom(300)
    out = _signal(v, "a", Signal("offer", "b", payload))
    assert out == Signal("offer", "a", payload, "room")  # peer is now the sender
    assert out.payload is payload
    assert _signal(v, "a", Signal("ice", "a", b"", "room")).peer == "a"  # echo to self is fine
    refusals = [
        ("a", Signal("hello", "b", b""), "invalid_signal"),
        ("a", Signal("offer", "b", b"x" * 101), "payload_too_large"),
        ("a", Signal("offer", "zed", b""), "no_such_player"),
        ("a", Signal("offer", "c", b""), "not_in_channel"),
        ("c", Signal("offer", "a", b""), "not_in_channel"),
        ("a", Signal("offer", "b", b"", "other"), "not_in_channel"),
        ("a", Signal("offer", "d", b""), "player_disconnected"),
    ]
    for sender, frame, code in refusals:
        with pytest.raises(VoiceError) as refused:
            _signal(v, sender, frame, max_bytes=100)
        assert refused.value.code == code, frame
    with pytest.raises(VoiceError) as refused:
        _signal(VoiceState().join("b"), "a", Signal("offer", "b", b""))
    assert refused.value.code == "not_in_channel"  # the sender is in no channel


def test_a_host_muted_player_may_answer_but_not_offer():
    v = VoiceState().join("a").join("b").host_mute("b", "room", True)
    with pytest.raises(VoiceError) as refused:
        _signal(v, "b", Signal("offer", "a", b"sdp"))
    assert refused.value.code == "muted" and "host" in refused.value.message
    for kind in ("answer", "ice", "bye"):
        assert _signal(v, "b", Signal(kind, "a", b"x")).kind == kind
    v = v.host_mute("b", "room", False)
    assert _signal(v, "b", Signal("offer", "a", b"sdp")).peer == "b"


# -- in a room ---------------------------------------------------------------------------


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


async def test_voice_state_lives_in_the_room_state_and_signals_ride_the_tick(autojump_clock):
    room = make_room(max_signal_bytes=64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        a, b, c = [await join(room, p) for p in "abc"]
        assert room.public_state["voice"] == {}
        a.push(Rpc(1, "room", "voice.join"), Rpc(2, "room", "voice.set_key", {"key": "KA"}))
        b.push(Rpc(1, "room", "voice.join", {"channel": "room"}))
        c.push(Rpc(1, "room", "voice.join", {"channel": "lounge"}))
        await ticks(room)
        voice = room.public_state["voice"]
        assert {p: (e["channel"], e["key"]) for p, e in voice.items()} == {
            "a": ("room", "KA"),
            "b": ("room", None),
            "c": ("lounge", None),
        }
        assert "voice" not in room.public_state["players"]["a"]
        n_b, n_c = len(b.messages()), len(c.messages())
        a.push(
            Signal("offer", "b", b"sdp-1"),
            Signal("ice", "b", b"cand-1"),
            Signal("offer", "c", b"sdp-2"),  # c is in another channel
            Signal("offer", "b", b"x" * 65),
        )
        await ticks(room)
        assert [m for m in b.messages()[n_b:] if type(m) is Signal] == [
            Signal("offer", "a", b"sdp-1", "room"),
            Signal("ice", "a", b"cand-1", "room"),
        ]
        assert [m for m in c.messages()[n_c:] if type(m) is Signal] == []
        errors = [m.code for m in a.messages() if type(m) is Error]
        assert errors == ["not_in_channel", "payload_too_large"]
        # the host mutes b; b's offers are refused, and the state shows it
        a.push(Rpc(3, "room", "voice.host_mute", {"player": "b"}))
        await ticks(room)
        assert room.public_state["voice"]["b"]["muted_by_host"] is True
        b.push(Signal("offer", "a", b"sdp-3"), Signal("answer", "a", b"sdp-4"))
        await ticks(room)
        assert [m.code for m in b.messages() if type(m) is Error] == ["muted"]
        assert [m.payload for m in a.messages() if type(m) is Signal] == [b"sdp-4"]
        # leaving the room clears the player's voice entry
        b.push(Leave())
        await ticks(room)
        assert set(room.public_state["voice"]) == {"a", "c"}
        assert not any(p == "b" for p, _ in room._voice.host_mutes)
        nursery.cancel_scope.cancel()


# -- end to end over loopback ------------------------------------------------------------


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def _pair(r: Any, a: RelayClient, b: RelayClient) -> str:
    code = await a.create("arena")
    await b.join(code)
    await a.join_voice()
    members = await b.join_voice()
    assert sorted(members) == sorted([a.player_id, b.player_id])
    await a.wait_for(lambda c: b.player_id in c.state["voice"])
    return code


async def test_a_whole_offer_answer_ice_exchange_arrives_once_in_order_unaltered(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url, codec="cbor") as b,
    ):
        await _pair(r, a, b)
        pa, pb = a.player_id, b.player_id
        # payloads the relay must not touch: end-to-end encrypted bytes, any values
        offer = b"\x00SDP-offer\xff" + os.urandom(2000)
        answer = b"\x00SDP-answer\xff" + os.urandom(1800)
        ice_a = [b"a-candidate-%d " % i + os.urandom(40) for i in range(8)]
        ice_b = [b"b-candidate-%d " % i + os.urandom(40) for i in range(8)]
        await a.signal("offer", pb, offer)
        got = await b.next_signal(peer=pa)
        assert (got.kind, got.peer, got.payload, got.channel) == ("offer", pa, offer, "room")
        await b.signal("answer", pa, answer)
        for one, two in zip(ice_a, ice_b, strict=True):  # trickle ICE, both ways at once
            await a.signal("ice", pb, one)
            await b.signal("ice", pa, two)
        await a.signal("bye", pb, b"")
        to_b: list[Signal] = []
        to_a: list[Signal] = []
        while len(to_b) < len(ice_a) + 1:
            to_b.append(await b.next_signal())
        while len(to_a) < len(ice_b) + 1:
            to_a.append(await a.next_signal())
        assert [(s.kind, s.payload) for s in to_b] == [*(("ice", x) for x in ice_a), ("bye", b"")]
        assert [(s.kind, s.payload) for s in to_a] == [("answer", answer)] + [
            ("ice", x) for x in ice_b
        ]
        assert {s.peer for s in to_b} == {pa} and {s.peer for s in to_a} == {pb}
        # once: nothing more arrives (a ping is a full round trip behind them)
        await a.ping()
        await b.ping()
        assert not a.signals and not b.signals
        assert not a.errors and not b.errors


async def test_a_signal_to_a_non_member_is_refused(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
        connect(r.url) as c,
        connect(r.url) as elsewhere,
    ):
        code = await _pair(r, a, b)
        await c.join(code)  # in the room, not in voice
        await elsewhere.create("arena")
        await elsewhere.join_voice()
        await a.signal("offer", c.player_id, b"sdp")
        await a.signal("offer", elsewhere.player_id, b"sdp")
        await a.signal("offer", b.player_id, b"sdp")  # the good one still goes through
        await b.next_signal(peer=a.player_id)
        await a.wait_for(lambda a: len(a.errors) == 2)
        assert [e.code for e in a.errors] == ["not_in_channel", "no_such_player"]
        assert not c.signals and not elsewhere.signals
        # c joins another channel: still refused; the same channel: allowed
        await c.join_voice("lounge")
        await a.signal("offer", c.player_id, b"sdp")
        await a.wait_for(lambda a: len(a.errors) == 3)
        await c.join_voice()
        await a.signal("offer", c.player_id, b"sdp")
        assert (await c.next_signal()).payload == b"sdp"


async def test_mute_is_enforced_and_shown(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50, max_signal_bytes=1024)) as r,
        connect(r.url) as host,
        connect(r.url) as b,
    ):
        await _pair(r, host, b)
        pb = b.player_id
        await b.mute()
        await b.set_voice_key("pk-" + "A" * 40)
        await host.wait_for(lambda h: h.state["voice"][pb]["muted"] is True)
        assert host.state["voice"][pb]["key"] == "pk-" + "A" * 40
        with pytest.raises(RpcError) as not_host:
            await b.host_mute(host.player_id)
        assert not_host.value.code == "not_host"
        await host.host_mute(pb)
        await b.wait_for(lambda b: b.state["voice"][pb]["muted_by_host"] is True)
        await b.signal("offer", host.player_id, b"sdp")
        await b.wait_for(lambda b: len(b.errors) == 1)
        assert b.errors[0].code == "muted" and "host" in b.errors[0].message
        await b.signal("ice", host.player_id, b"cand")  # not an offer: relayed
        assert (await host.next_signal()).kind == "ice"
        await host.host_mute(pb, False)
        await b.signal("offer", host.player_id, b"sdp")
        assert (await host.next_signal()).kind == "offer"
        # an oversized payload gets a clear error; the connection stays
        await b.signal("offer", host.player_id, b"x" * 2000)
        await b.wait_for(lambda b: len(b.errors) == 2)
        assert b.errors[1].code == "payload_too_large"
        assert await b.ping() < 1.0
        await host.wait_for(lambda h: h.state == r.public_state(h.code))
