"""The tick-polled transport (``--transport fast``) on real loopback sockets.

The SDK client (trio-websocket) is the independent peer for whole sessions; a
hand-framed raw client sends what no library would (unmasked frames, text,
oversized or fragmented messages, garbage) and reads every server frame,
control frames included. Raw tests run in the lobby, where the connection
task reads the socket, and in a room, where the room's tick reads it.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from protocol import (
    PROTOCOL_VERSION,
    Create,
    Error,
    Frame,
    Hello,
    Input,
    Join,
    Joined,
    Leave,
    MsgpackCodec,
    Ping,
    Pong,
    State,
    Welcome,
)
from relay._config import Config
from relay._server import Relay
from relay._transport_fast import FastLink
from relay.client import RelayClient, connect

MSGPACK = "roomwire.v1.msgpack"
CBOR = "roomwire.v1.cbor"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def make_config(**changes: Any) -> Config:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "transport": "fast",
        "allow_anonymous": True,
        "heartbeat_interval": 5.0,
        "heartbeat_timeout": 5.0,
        "hello_timeout": 5.0,
        "store": "memory:",  # nothing of these rooms may outlive the test
    }
    values.update(changes)
    return Config(**values)


@asynccontextmanager
async def running(config: Config, **room: Any) -> AsyncIterator[tuple[Relay, int]]:
    """A relay on a free loopback port for the body; ``room`` overrides RoomConfig."""
    relay = Relay(config)
    if room:
        relay.registry.config = dataclasses.replace(relay.registry.config, **room)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(relay.run)
        try:
            yield relay, addresses.port
        finally:
            nursery.cancel_scope.cancel()


def fast_links(relay: Relay) -> list[FastLink]:
    links = list(relay.connections)
    assert all(type(link) is FastLink for link in links)
    return links


async def wait_until(predicate: Any, *, timeout: float = 3.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


# -- a hand-framed client --------------------------------------------------------


class ServerClosed(Exception):
    """The server sent a close frame (code, reason)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    head = bytearray([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 0x10000:
        head += struct.pack("!BH", bit | 126, n)
    else:
        head += struct.pack("!BQ", bit | 127, n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return bytes(head) + key + masked


class RawWS:
    """A WebSocket client built by hand: exact bytes out, every server frame in."""

    def __init__(self, sock: trio.socket.SocketType, leftover: bytes) -> None:
        self.sock = sock
        self.buf = bytearray(leftover)
        self.codec = MsgpackCodec()
        self.pings: list[bytes] = []
        self.answer_pings = True
        self.player_id = ""

    async def send_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view) :]

    async def send_frame(self, opcode: int, payload: bytes, **kw: Any) -> None:
        await self.send_bytes(client_frame(opcode, payload, **kw))

    async def send(self, frame: Frame) -> None:
        await self.send_frame(OP_BINARY, self.codec.encode(frame))

    async def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            data = await self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the TCP connection")
            self.buf += data

    async def recv_frame(self, *, timeout: float = 3.0) -> tuple[int, bytes, bool]:
        """(opcode, payload, fin) of the next server frame; EOFError at end of stream."""
        with trio.fail_after(timeout):
            await self._fill(2)
            b0, b1 = self.buf[0], self.buf[1]
            assert not b1 & 0x80, "server frames are never masked"
            assert not b0 & 0x70, "no extension was agreed"
            n, pos = b1 & 0x7F, 2
            if n == 126:
                await self._fill(4)
                n, pos = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif n == 127:
                await self._fill(10)
                n, pos = struct.unpack_from("!Q", self.buf, 2)[0], 10
            await self._fill(pos + n)
            payload = bytes(self.buf[pos : pos + n])
            del self.buf[: pos + n]
            return b0 & 0x0F, payload, bool(b0 & 0x80)

    async def recv(self, *, timeout: float = 3.0) -> Frame:
        """The next binary message, decoded; answers pings; ServerClosed on a close frame."""
        while True:
            opcode, payload, fin = await self.recv_frame(timeout=timeout)
            assert fin, "the relay never fragments"
            if opcode == OP_BINARY:
                return self.codec.decode(payload)
            if opcode == OP_PING:
                self.pings.append(payload)
                if self.answer_pings:
                    await self.send_frame(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if payload else None
                raise ServerClosed(code, payload[2:].decode())
            else:
                raise AssertionError(f"unexpected opcode {opcode:#x}")

    async def recv_match(self, predicate: Any, *, timeout: float = 3.0) -> Frame:
        """The first frame, or message inside a State frame, that ``predicate`` accepts."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout=timeout)
                for candidate in (frame, *(frame.msgs if type(frame) is State else ())):
                    if predicate(candidate):
                        return candidate

    async def expect_close(self, *, timeout: float = 3.0) -> tuple[int | None, str]:
        """Read until the server's close frame, answer it, and see the TCP connection end."""
        with trio.fail_after(timeout):
            closed = None
            while closed is None:
                try:
                    await self.recv(timeout=timeout)
                except ServerClosed as exc:
                    closed = exc
            await self.send_frame(OP_CLOSE, struct.pack("!H", closed.code or 1000))
            assert await self.sock.recv(100) == b"", "nothing may follow the close frame"
        return closed.code, closed.reason

    async def expect_pong(self, payload: bytes, *, timeout: float = 3.0) -> None:
        with trio.fail_after(timeout):
            while True:
                opcode, data, _ = await self.recv_frame(timeout=timeout)
                if opcode == OP_PONG:
                    assert data == payload
                    return
                assert opcode == OP_BINARY, f"unexpected opcode {opcode:#x}"


def upgrade_request(subprotocols: tuple[str, ...] = (MSGPACK,)) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@asynccontextmanager
async def open_ws(
    port: int, *, trailing: bytes = b"", receive_buffer: int | None = None
) -> AsyncIterator[RawWS]:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    with sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(upgrade_request() + trailing)
        response = b""
        with trio.fail_after(3):
            while b"\r\n\r\n" not in response:
                data = await sock.recv(4096)
                assert data, f"connection closed during the handshake: {response!r}"
                response += data
        head, _, leftover = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"Sec-WebSocket-Protocol: roomwire.v1.msgpack" in head
        yield RawWS(sock, leftover)


async def enter(ws: RawWS, relay: Relay, phase: str) -> None:
    """Say Hello; for ``room``, create an arena room and wait until its tick owns the reads."""
    await ws.send(Hello(PROTOCOL_VERSION, None, None, "raw"))
    welcome = await ws.recv()
    assert type(welcome) is Welcome
    ws.player_id = welcome.player_id
    if phase == "room":
        await ws.send(Create(1, "arena", {}))
        assert type(await ws.recv_match(lambda f: type(f) is Joined)) is Joined
        await wait_until(lambda: link_of(relay, ws).statistics().tick_reads)


def link_of(relay: Relay, ws: RawWS) -> FastLink:
    return next(link for link in fast_links(relay) if link.player_id == ws.player_id)


async def enter_room(ws: RawWS, code: str) -> None:
    """Say Hello and join room ``code``."""
    await ws.send(Hello(PROTOCOL_VERSION, None, None, "slow"))
    welcome = await ws.recv()
    assert type(welcome) is Welcome
    ws.player_id = welcome.player_id
    await ws.send(Join(9, code))
    assert type(await ws.recv_match(lambda f: type(f) is Joined)) is Joined


PHASES = ["lobby", "room"]


# -- whole sessions with the SDK ---------------------------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "cbor"])
async def test_sdk_clients_play_in_a_room(codec: str) -> None:
    async with running(make_config()) as (relay, port):
        url = f"ws://127.0.0.1:{port}"
        async with connect(url, codec=codec) as a, connect(url, codec=codec) as b:
            code = await a.create("arena")
            await b.join(code)
            assert {a.player_id, b.player_id} <= set(a.state["room"]["members"])
            for i in range(1, 6):
                await a.send_input({"x": float(i), "angle": 0.5})
                await b.send_input({"y": float(2 * i)})
                await trio.sleep(0.02)
            room = relay.registry.get(code).room

            def settled(c: RelayClient) -> bool:
                return c.state["players"][a.player_id]["x"] == 5.0 and c.tick == room.tick

            await a.wait_for(settled, timeout=3)
            await b.wait_for(settled, timeout=3)
            assert a.state == b.state == room.public_state
            assert a.state["players"][b.player_id]["y"] == 10.0
            assert a.stats.desyncs == b.stats.desyncs == 0
            assert await a.ping() < 1.0  # a ping in a room is answered from the tick
        await wait_until(lambda: not relay.connections)
        stats = relay.stats
        assert stats.connections_total == 2
        assert stats.frames_received >= 14 and stats.frames_sent >= 10
        assert stats.protocol_errors == 0 and stats.handler_crashes == 0


async def test_leave_then_create_sent_in_one_write() -> None:
    # The frames after a Leave belong to the lobby, even when one read brings them all.
    async with running(make_config()) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, "room")
        codec = ws.codec
        first = relay.registry.rooms()[0].code
        await ws.send_bytes(
            client_frame(OP_BINARY, codec.encode(Input(1, {"x": 3.0})))
            + client_frame(OP_BINARY, codec.encode(Leave(2)))
            + client_frame(OP_BINARY, codec.encode(Create(3, "arena", {})))
        )
        joined = await ws.recv_match(lambda f: type(f) in (Joined, Error))
        assert type(joined) is Joined, joined
        assert joined.id == 3 and joined.code != first
        await wait_until(lambda: link_of(relay, ws).statistics().tick_reads)


async def test_shutdown_closes_with_going_away_after_the_handshake() -> None:
    async with running(make_config()) as (relay, port):
        async with open_ws(port) as lobby, open_ws(port) as member:
            await enter(lobby, relay, "lobby")
            await enter(member, relay, "room")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay.shutdown)
                assert await lobby.expect_close() == (1001, "server shutting down")
                assert await member.expect_close() == (1001, "server shutting down")
        assert not relay.connections


# -- the opening handshake -----------------------------------------------------------


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything the server answers before closing."""
    with trio.socket.socket() as sock:
        await sock.connect(("127.0.0.1", port))
        await sock.send(request)
        answer = b""
        with trio.fail_after(3):
            while data := await sock.recv(4096):
                answer += data
    return answer


async def test_handshake_without_a_roomwire_subprotocol_is_refused() -> None:
    # (a raw socket: trio-websocket's client leaks its socket when it is rejected)
    async with running(make_config()) as (relay, port):
        answer = await http_exchange(port, upgrade_request(subprotocols=("chat", "mqtt")))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ")
        assert body == (
            b"roomwire: offer the WebSocket subprotocol roomwire.v1.msgpack or "
            b"roomwire.v1.cbor (offered: chat, mqtt)\n"
        )
        assert relay.stats.handshake_rejects == 1
        assert not relay.connections


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"NONSENSE\r\n\r\n", b"400"),
        (upgrade_request().replace(b"Version: 13", b"Version: 8"), b"426"),
    ],
    ids=["plain-http", "not-http", "old-version"],
)
async def test_bad_upgrade_requests_get_an_http_error(request_bytes: bytes, status: bytes) -> None:
    async with running(make_config()) as (relay, port):
        answer = await http_exchange(port, request_bytes)
        assert answer.startswith(b"HTTP/1.1 " + status), answer
        assert b"roomwire:" in answer
        assert not relay.connections


async def test_frames_sent_with_the_upgrade_request_are_served() -> None:
    hello = MsgpackCodec().encode(Hello(PROTOCOL_VERSION, None, None, "eager"))
    async with (
        running(make_config()) as (_, port),
        open_ws(port, trailing=client_frame(OP_BINARY, hello)) as ws,
    ):
        assert type(await ws.recv()) is Welcome


async def test_hello_timeout_closes_with_4001() -> None:
    async with running(make_config(hello_timeout=0.3)) as (_, port), open_ws(port) as ws:
        error = await ws.recv()
        assert type(error) is Error and error.code == "hello_timeout"
        assert (await ws.expect_close())[0] == 4001


# -- framing errors and control frames, in the lobby and in a room ---------------------


@pytest.mark.parametrize("phase", PHASES)
async def test_unmasked_frame_closes_with_1002(phase: str) -> None:
    async with running(make_config()) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, phase)
        await ws.send_frame(OP_BINARY, ws.codec.encode(Ping(1)), mask=False)
        code, reason = await ws.expect_close()
        assert code == 1002 and "not masked" in reason
        assert relay.stats.protocol_errors == 1


@pytest.mark.parametrize("phase", PHASES)
async def test_text_frame_gets_an_error_then_1003(phase: str) -> None:
    async with running(make_config()) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, phase)
        await ws.send_frame(OP_TEXT, b'{"hello": 1}')
        error = await ws.recv_match(lambda f: type(f) is Error)
        assert error.code == "text_frame"
        assert (await ws.expect_close())[0] == 1003


@pytest.mark.parametrize("phase", PHASES)
async def test_oversized_message_closes_with_1009(phase: str) -> None:
    async with running(make_config(max_frame_bytes=1024)) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, phase)
        # Refused from the header: the server does not wait for the whole payload.
        await ws.send_bytes(client_frame(OP_BINARY, b"\x00" * 2000)[:100])
        assert (await ws.expect_close())[0] == 1009


@pytest.mark.parametrize("phase", PHASES)
async def test_fragmented_message_with_an_interleaved_ping(phase: str) -> None:
    async with running(make_config()) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, phase)
        data = ws.codec.encode(Ping(77))
        await ws.send_bytes(
            client_frame(OP_BINARY, data[:1], fin=False)
            + client_frame(OP_PING, b"are you there")
            + client_frame(OP_CONT, data[1:2], fin=False)
        )
        await ws.expect_pong(b"are you there")
        await ws.send_frame(OP_CONT, data[2:])
        pong = await ws.recv_match(lambda f: type(f) is Pong)
        assert pong.nonce == 77


@pytest.mark.parametrize("phase", PHASES)
async def test_garbage_payload_gets_malformed_frame_and_the_connection_lives(phase: str) -> None:
    async with running(make_config()) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, phase)
        await ws.send_frame(OP_BINARY, b"\xc1\xc1 not msgpack")
        error = await ws.recv_match(lambda f: type(f) is Error)
        assert error.code == "malformed_frame"
        await ws.send(Ping(5))
        assert (await ws.recv_match(lambda f: type(f) is Pong)).nonce == 5
        assert relay.stats.protocol_errors == 1


@pytest.mark.parametrize("phase", PHASES)
async def test_client_initiated_close_handshake(phase: str) -> None:
    async with running(make_config()) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, phase)
        await ws.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
        with pytest.raises(ServerClosed) as info:
            while True:
                await ws.recv()
        assert info.value.code == 1000  # the peer's code, echoed
        with trio.fail_after(3):
            assert await ws.sock.recv(100) == b""  # the server closes the TCP connection
        await wait_until(lambda: not relay.connections)
        if phase == "room":
            room = relay.registry.rooms()[0]  # the seat stays for the reconnect grace
            await wait_until(lambda: room.statistics().connected == 0)


async def test_more_frames_than_a_tick_may_take_close_with_1008() -> None:
    # (rate limits off: this is the transport's own bound on one tick's frames)
    config = make_config(rate_limit_frames=0, rate_limit_bytes=0)
    async with running(config) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, "room")
        frame = client_frame(OP_BINARY, ws.codec.encode(Input(1, {"x": 1.0})))
        await ws.send_bytes(frame * 600)
        assert (await ws.expect_close())[0] == 1008


@pytest.mark.parametrize("phase", PHASES)
async def test_rate_limits_apply_to_messages_read_by_the_tick(phase: str) -> None:
    config = make_config(rate_limit_frames=10, rate_limit_burst=1)
    async with running(config) as (relay, port), open_ws(port) as ws:
        await enter(ws, relay, phase)
        ping = client_frame(OP_BINARY, ws.codec.encode(Ping(3)))
        await ws.send_bytes(ping * 20)
        error = await ws.recv_match(lambda f: type(f) is Error)
        assert error.code == "rate_limited"
        assert relay.limits.stats.frames_dropped >= 1


# -- heartbeat -----------------------------------------------------------------------


async def test_heartbeat_closes_a_silent_peer_with_4006() -> None:
    config = make_config(heartbeat_interval=0.2, heartbeat_timeout=0.3, hello_timeout=0.5)
    async with (
        running(config) as (relay, port),
        open_ws(port) as silent,
        open_ws(port) as alive,
    ):
        silent.answer_pings = False
        await enter(silent, relay, "room")
        await enter(alive, relay, "room")

        async def keep_answering() -> None:
            with pytest.raises(trio.TooSlowError):
                await alive.recv_match(lambda f: False, timeout=1.5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_answering)
            assert (await silent.expect_close(timeout=3))[0] == 4006
        assert silent.pings and len(alive.pings) >= 3
        assert relay.stats.heartbeat_timeouts == 1
        assert len(relay.connections) == 1


# -- a slow reader ---------------------------------------------------------------------


@pytest.mark.slow
async def test_slow_reader_is_coalesced_then_closed_while_the_room_goes_on() -> None:
    # Both socket buffers are shrunk and the room ticks at 50 Hz with three players
    # moving at every tick, so a stalled client's socket fills in about a second.
    rate = 50
    async with running(make_config(tick_rate=rate), max_lag_ticks=25) as (relay, port):
        url = f"ws://127.0.0.1:{port}"
        async with (
            connect(url) as host,
            connect(url) as p2,
            connect(url) as p3,
            open_ws(port, receive_buffer=2048) as slow,
        ):
            code = await host.create("arena")
            await p2.join(code)
            await p3.join(code)
            await enter_room(slow, code)
            link = link_of(relay, slow)
            link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
            handle = relay.registry.get(code)
            movers = [host, p2, p3]

            async def move(client: RelayClient) -> None:
                x = 0.0
                while True:
                    x = (x + 1.5) % 100.0
                    await client.send_input({"x": x, "y": 100.0 - x - 0.5, "angle": x / 10})
                    await trio.sleep(1 / rate)

            async with trio.open_nursery() as nursery:
                for client in movers:
                    nursery.start_soon(move, client)
                # The slow client stops reading: soon its socket takes no more, and the
                # room skips it while it is not ready.
                await wait_until(lambda: not link.ready(), timeout=5)
                stalled_at = handle.statistics().tick
                await wait_until(lambda: handle.statistics().tick >= stalled_at + 4)
                # It reads again: once drained, it gets one delta over the ticks it missed.
                catch_up = await slow.recv_match(
                    lambda f: type(f) is State and f.tick >= stalled_at + 4, timeout=5
                )
                assert catch_up.tick - catch_up.back <= stalled_at  # the base: before the stall
                assert handle.statistics().catch_ups_sent >= 1
                # It stops reading for good: the room keeps its pace for the others
                # and closes the slow one once it is max_lag_ticks behind.
                await wait_until(lambda: not link.ready(), timeout=5)
                before = [c.stats.state_frames for c in movers]
                start = trio.current_time()
                await wait_until(lambda: link.statistics().close_code is not None, timeout=5)
                elapsed = trio.current_time() - start
                rates = [
                    (c.stats.state_frames - n) / elapsed
                    for c, n in zip(movers, before, strict=True)
                ]
                assert elapsed > 0.5
                assert min(rates) >= 0.75 * rate, rates
                assert link.statistics().close_code == 4003
                assert handle.statistics().slow_closed == 1
                # When it reads once more: whole frames, then the close frame with 4003.
                code_, reason = await slow.expect_close(timeout=5)
                assert code_ == 4003 and "too slow" in reason
                nursery.cancel_scope.cancel()
            await host.wait_for(
                lambda c: slow.player_id not in c.state["room"]["members"], timeout=3
            )
            assert host.stats.desyncs == 0
