"""Abuse limits: token buckets, the per-connection and per-IP limits, room and seat caps,
and player text.

The buckets and the limiter run on explicit clocks; the rest end to end on
loopback: a flooding client is warned, then closed with 1008, while the
other clients of its room see no extra delay.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from fakes import FakeLink, ToyRules
from relay_fixtures import TRANSPORTS, TicketKeys, fast_config, open_raw
from relay_fixtures import start_relay as start
from trio_websocket import ConnectionClosed, ConnectionRejected

from actors._errors import RoomError
from actors._registry import RoomHandle
from actors._room import Room, RoomConfig
from actors._text import clean_text
from protocol import CloseCode, Error, Frame, Input, Join, Joined
from relay._config import Config, ConfigError
from relay._limits import ConnectionLimiter, RelayLimits, TokenBucket
from relay.client import ClientError, connect


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


# -- token buckets and the limiter --------------------------------------------------------


def test_a_token_bucket_refills_at_its_rate_up_to_its_capacity():
    bucket = TokenBucket(10.0, 5.0, now=100.0)
    assert [bucket.take(1, 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.take(1, 100.05)  # half a token
    assert bucket.take(1, 100.1)
    assert bucket.full(200.0) and bucket.tokens == 5.0  # never more than the capacity
    assert not bucket.take(6, 200.0) and bucket.tokens == 5.0  # all or nothing
    with pytest.raises(ValueError):
        TokenBucket(-1.0, 1.0, now=0.0)


class _Sink:
    """What the limiter needs of a connection: it records what the limiter does to it."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed: tuple[int, str] | None = None

    def send_frame_nowait(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close_nowait(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def _limits(**changes: Any) -> RelayLimits:
    values: dict[str, Any] = {
        "rate_limit_frames": 10.0,
        "rate_limit_bytes": 100_000.0,
        "rate_limit_burst": 1.0,
        "rate_limit_sustain": 1.0,
    }
    values.update(changes)
    return RelayLimits(Config(**values))


def test_the_first_excess_is_warned_and_sustained_excess_is_closed():
    limits = _limits()
    limiter = ConnectionLimiter(limits, now=0.0)
    link = _Sink()
    # a burst of 10 passes, the 11th is dropped with one error frame
    assert all(limiter.admit(10, link, now=0.0) for _ in range(10))
    assert not limiter.admit(10, link, now=0.0)
    assert [(type(f), f.code) for f in link.frames] == [(Error, "rate_limited")]
    assert "10 messages/s" in link.frames[0].message
    # still flooding, within the sustain window: dropped quietly
    t = 0.0
    while t < 0.9:
        t += 0.01
        limiter.admit(10, link, now=t)
    assert len(link.frames) == 1 and link.closed is None
    # still flooding past it: closed with policy violation
    while link.closed is None and t < 1.5:
        t += 0.01
        limiter.admit(10, link, now=t)
    assert link.closed is not None and link.closed[0] == CloseCode.POLICY_VIOLATION
    assert 1.0 <= t < 1.1
    stats = limits.stats
    assert stats.warnings == 1 and stats.closes == 1 and stats.frames_dropped > 50


def test_a_client_that_calms_down_is_warned_afresh_next_time():
    limits = _limits()
    limiter = ConnectionLimiter(limits, now=0.0)
    link = _Sink()
    for _ in range(11):
        limiter.admit(1, link, now=0.0)
    assert len(link.frames) == 1
    # within its rate for a while: a new excess later is a new episode
    for i in range(1, 30):
        assert limiter.admit(1, link, now=0.1 * i)
    for _ in range(20):
        limiter.admit(1, link, now=3.0)
    assert len(link.frames) == 2 and link.closed is None


def test_bytes_are_limited_too_and_a_dropped_message_costs_no_frame_token():
    limits = _limits(rate_limit_frames=100.0, rate_limit_bytes=70_000.0)
    limiter = ConnectionLimiter(limits, now=0.0)
    link = _Sink()
    assert limiter.admit(65_536, link, now=0.0)
    assert not limiter.admit(10_000, link, now=0.0)  # 70 000 bytes per second, burst 1 s
    assert limiter.admit(4_000, link, now=0.0)
    assert limiter._frames.tokens == 98.0
    assert [f.code for f in link.frames] == ["rate_limited"]


async def test_limits_of_zero_turn_the_limiter_off():
    limits = _limits(rate_limit_frames=0.0, rate_limit_bytes=0.0)
    limiter = limits.connection()
    assert all(limiter.admit(1 << 16, _Sink()) for _ in range(1000))
    assert type(_limits().connection()) is ConnectionLimiter


def test_new_connections_per_ip():
    limits = RelayLimits(Config(ip_connect_rate=2.0, ip_connect_burst=3))
    assert [limits.allow_connection("10.0.0.1", now=0.0) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert limits.allow_connection("10.0.0.2", now=0.0)  # another address has its own
    assert limits.allow_connection("10.0.0.1", now=0.5)  # one more after half a second
    assert not limits.allow_connection("10.0.0.1", now=0.5)
    assert limits.stats.ip_refused == 2
    assert RelayLimits(Config(ip_connect_rate=0.0)).allow_connection("10.0.0.1", now=0.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"rate_limit_frames": -1.0},
        {"rate_limit_burst": 0.0},
        {"rate_limit_sustain": float("nan")},
        {"rate_limit_bytes": 1000.0},  # a burst that cannot hold one frame
        {"ip_connect_burst": 0},
        {"rpc_timeout": 0.0},
        {"rpc_timeout": 20.0, "rpc_timeout_max": 10.0},
        {"max_signal_bytes": 20000},
        {"reconnect_grace": -1.0},
    ],
)
def test_bad_limit_settings_are_refused(changes: dict[str, Any]):
    with pytest.raises(ConfigError):
        Config(**changes)


def test_limit_settings_come_from_the_environment():
    config = Config.from_sources(
        {}, {"RELAY_RATE_LIMIT_FRAMES": "50", "RELAY_RECONNECT_GRACE": "12.5"}
    )
    assert config.rate_limit_frames == 50.0 and config.reconnect_grace == 12.5


# -- end to end: flooding ------------------------------------------------------------------


async def test_a_flooding_client_is_limited_then_closed_and_delays_nobody(
    tmp_path: Path, transport: str
) -> None:
    rate = 50
    config = fast_config(
        tmp_path,
        transport,
        tick_rate=rate,
        http_port=0,
        rate_limit_frames=100.0,
        rate_limit_burst=1.0,
        rate_limit_sustain=0.5,
    )
    async with start(config) as r:
        gaps: dict[str, float] = {}
        stop = trio.Event()
        moving = trio.Event()
        code = ""

        async def mover(i: int, *, task_status: trio.TaskStatus[None]) -> None:
            nonlocal code
            async with connect(r.url) as c:
                if i == 0:
                    code = await c.create("arena")
                else:
                    await c.join(code)
                task_status.started()
                await moving.wait()
                last_tick, last_at, worst, k = c.tick, time.monotonic(), 0.0, 0
                while not stop.is_set():
                    k += 1
                    await c.send_input({"x": float(k % 50)})  # 50 inputs per second
                    with trio.move_on_after(1 / rate):
                        await c.wait_for(lambda c, t=last_tick: c.tick != t, timeout=5)
                    now = time.monotonic()
                    if c.tick != last_tick:
                        worst = max(worst, now - last_at)
                        last_tick, last_at = c.tick, now
                    await trio.sleep(1 / rate)
                gaps[c.player_id] = max(worst, time.monotonic() - last_at)
                assert c.closed is None and not [e for e in c.errors if e.code == "rate_limited"]

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    await nursery.start(mover, i)
                room = r.relay.registry.get(code).room
                async with open_raw(r.port) as flood:
                    await flood.hello()
                    await flood.send(Join(1, code))
                    assert type(await flood.recv()) is Joined
                    moving.set()
                    warned: list[Error] = []
                    started = time.monotonic()

                    async def reader() -> None:
                        while True:
                            try:
                                frame = await flood.recv_match(
                                    lambda f: type(f) is Error and f.code == "rate_limited",
                                    timeout=10,
                                )
                            except ConnectionClosed:
                                return  # the close that ends the flood: checked below
                            warned.append(frame)

                    closed_with = None
                    async with trio.open_nursery() as inner:
                        inner.start_soon(reader)
                        seq = 0
                        try:
                            while True:
                                seq += 1
                                await flood.send(Input(seq, {"y": float(seq % 100)}))
                                if seq % 20 == 0:
                                    await trio.sleep(0.002)
                        except Exception as exc:  # the relay closed the flood
                            reason = getattr(exc, "reason", None)
                            closed_with = reason.code if reason is not None else None
                        inner.cancel_scope.cancel()
                    if closed_with is None:
                        closed_with, _ = await flood.wait_closed()
                    took = time.monotonic() - started
                    assert closed_with == CloseCode.POLICY_VIOLATION
                    assert len(warned) == 1
                    assert 0.4 < took < 5.0, took
                    # its inputs were cut off: far fewer applied than sent
                    flood_id = next(p for p in room.public_state["players"] if p not in gaps)
                    applied = room.public_state["players"][flood_id]["seq"]
                    assert applied < seq / 2, (applied, seq)
                await trio.sleep(0.3)  # the others carry on after the close
                stop.set()
        assert len(gaps) == 3
        for pid, gap in gaps.items():
            assert gap < 0.25, f"{pid} went {gap:.2f} s without a state frame"
        stats = r.relay.limits.stats
        assert stats.warnings == 1 and stats.closes == 1 and stats.frames_dropped > 0
        metrics = await _scrape(r.http_port)
        assert _metric(metrics, "relay_limit_messages_per_second") == 100.0
        assert _metric(metrics, "relay_rate_limit_closes_total") == 1.0
        assert _metric(metrics, "relay_rate_limited_messages_total") == stats.frames_dropped


async def _scrape(port: int | None) -> str:
    assert port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data.decode()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


async def test_new_connections_from_one_address_are_limited(tmp_path: Path, transport: str) -> None:
    config = fast_config(tmp_path, transport, ip_connect_rate=0.5, ip_connect_burst=2)
    async with start(config) as r:
        async with connect(r.url), connect(r.url):
            with pytest.raises(ConnectionRejected) as refused:
                async with open_raw(r.port):
                    pass  # pragma: no cover - refused at the handshake
            assert refused.value.status_code == 429
            assert b"too many" in (refused.value.body or b"")
        assert r.relay.limits.stats.ip_refused == 1


# -- rooms and seats -------------------------------------------------------------------------


async def test_rooms_per_process_and_players_per_room_are_capped(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, max_rooms=1)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
        connect(r.url) as c,
    ):
        code = await a.create("arena", max_players=2)
        with pytest.raises(ClientError) as full:
            await b.create("arena")
        assert full.value.code == "server_full"
        await b.join(code)
        with pytest.raises(ClientError) as no_seat:
            await c.join(code)
        assert no_seat.value.code == "room_full"
        with pytest.raises(ClientError) as no_room:
            await c.quick_join("arena")  # the one room is full, no room for another
        assert no_room.value.code in ("server_full", "room_full")
        assert len(r.relay.registry.rooms()) == 1


# -- text from players -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Ann", "Ann"),
        ("  Ann   Lee \t", "Ann Lee"),
        ("Ann\x00\x07\x1b[31mRed", "Ann[31mRed"),
        ("A\u202eB\u2066C", "ABC"),
        ("line\nbreak\r\nhere", "line break here"),
        ("[bold red]x[/] <b>y</b> & z", "[bold red]x[/] <b>y</b> & z"),  # kept, never markup
        ("e\u0301", "\u00e9"),  # NFC
        ("\x00\x01", ""),
    ],
)
def test_player_text_is_cleaned_but_never_interpreted(raw: str, clean: str):
    assert clean_text(raw) == clean


async def test_names_are_cleaned_and_length_limited_by_the_room(autojump_clock):
    room = Room(ToyRules(), code="ABCD", mode="toy", config=RoomConfig(empty_grace=3600))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(room.run)
        await RoomHandle(room).join("a", "\x1b]0;evil\x07<i>Ann</i>\u202e", FakeLink("a"), 1)
        assert room.public_state["room"]["members"]["a"]["name"] == "]0;evil<i>Ann</i>"
        with pytest.raises(RoomError) as refused:
            await RoomHandle(room).join("b", "n" * 65, FakeLink("b"), 1)
        assert refused.value.code == "invalid_name"
        nursery.cancel_scope.cancel()


async def test_markup_in_a_name_reaches_other_players_verbatim(
    tmp_path: Path, transport: str
) -> None:
    keys = TicketKeys()
    config = fast_config(tmp_path, transport, allow_anonymous=False)
    name = "[b]Bo[/b] <script>"
    async with (
        start(config, keys=keys) as r,
        connect(r.url, ticket=keys.mint("p-1", name)) as a,
        connect(r.url, ticket=keys.mint("p-2", "Cy")) as b,
    ):
        code = await a.create("arena")
        await b.join(code)
        await b.wait_for(lambda b: "p-1" in b.state["room"]["members"])
        assert b.state["room"]["members"]["p-1"]["name"] == name
        assert r.public_state(code)["room"]["members"]["p-1"]["name"] == name
