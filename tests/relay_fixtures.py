"""Helpers of the end-to-end tests: an in-process relay on a free port, tickets, raw clients.

``start_relay`` runs a real ``Relay`` on loopback (port 0) for the length of an
``async with``; ``TicketKeys`` mints tickets with a fresh key pair the relay
trusts; ``open_raw`` opens a plain trio-websocket connection with any
subprotocols, for tests that must send what the SDK never would (garbage,
text, oversized messages) or stop reading on purpose.

The suite runs once per server transport in ``TRANSPORTS``; a test takes the
transport name from its ``transport`` fixture and passes it as
``Config(transport=...)``.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from protocol import CODECS, PROTOCOL_VERSION, Codec, Frame, Hello, State
from relay._config import Config
from relay._server import Relay
from relay._tickets import SigningKeyPair, TicketVerifier, mint_ticket

__all__ = [
    "TRANSPORTS",
    "RawClient",
    "RunningRelay",
    "TicketKeys",
    "fast_config",
    "open_raw",
    "start_relay",
]

#: the server transports the end-to-end suite runs against
TRANSPORTS = ["websocket", "fast"]

MSGPACK = "roomwire.v1.msgpack"
CBOR = "roomwire.v1.cbor"


def fast_config(tmp_path: Path, transport: str, **changes: Any) -> Config:
    """A loopback Config on a free port with timeouts short enough for tests."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "transport": transport,
        "data_dir": str(tmp_path / "relay-data"),
        "allow_anonymous": True,
        "heartbeat_interval": 0.2,
        "heartbeat_timeout": 0.5,
        "hello_timeout": 2.0,
        "empty_room_grace": 5.0,
    }
    values.update(changes)
    return Config(**values)


class TicketKeys:
    """A fresh Ed25519 key pair and the verifier of a relay that trusts it."""

    def __init__(self) -> None:
        self.pair = SigningKeyPair.generate()

    def verifier(self) -> TicketVerifier:
        return TicketVerifier({self.pair.kid: self.pair.verify_key})

    def mint(self, player_id: str, name: str | None = None, **claims: Any) -> str:
        """A ticket for ``player_id``; ``claims`` go to ``mint_ticket`` (room, ttl, now...)."""
        return mint_ticket(self.pair, player_id=player_id, name=name or player_id, **claims)


@dataclass(slots=True)
class RunningRelay:
    relay: Relay
    port: int
    http_port: int | None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def public_state(self, code: str) -> dict[str, Any]:
        """The committed public state of room ``code`` (what every mirror must equal)."""
        return self.relay.registry.get(code).room.public_state


@asynccontextmanager
async def start_relay(
    config: Config,
    *,
    keys: TicketKeys | None = None,
    room: dict[str, Any] | None = None,
) -> AsyncIterator[RunningRelay]:
    """Run a relay for the body of the ``async with``; cancelled (not shut down) at the end.

    ``keys``: trust tickets of this key pair. ``room``: overrides of the
    rooms' ``RoomConfig`` (``max_lag_ticks``...), applied before any room exists.
    """
    relay = Relay(config, verifier=keys.verifier() if keys is not None else None)
    if room:
        relay.registry.config = dataclasses.replace(relay.registry.config, **room)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(relay.run)
        try:
            yield RunningRelay(relay, addresses.port, addresses.http_port)
        finally:
            nursery.cancel_scope.cancel()


class RawClient:
    """A bare WebSocket to the relay: frames in and out by hand, nothing automatic."""

    def __init__(self, ws: WebSocketConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec

    async def send(self, frame: Frame) -> None:
        await self.ws.send_message(self.codec.encode(frame))

    async def send_raw(self, message: bytes | str) -> None:
        await self.ws.send_message(message)

    async def recv(self, *, timeout: float = 3.0) -> Frame:
        """The next frame; raises ``ConnectionClosed`` when the relay closed instead."""
        with trio.fail_after(timeout):
            return self.codec.decode(await self.ws.get_message())

    async def recv_match(
        self, predicate: Callable[[Frame], bool], *, timeout: float = 3.0
    ) -> Frame:
        """The first frame (or message inside a State frame) ``predicate`` accepts."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout=timeout)
                for candidate in (frame, *(frame.msgs if type(frame) is State else ())):
                    if predicate(candidate):
                        return candidate

    async def hello(self, ticket: str | None = None) -> Frame:
        """Say Hello and return the answer (Welcome, or the Error before a close)."""
        await self.send(Hello(PROTOCOL_VERSION, ticket, None, "raw-test"))
        return await self.recv()

    async def wait_closed(self, *, timeout: float = 5.0) -> tuple[int, str | None]:
        """Read (and drop) frames until the relay closes; the close code and reason."""
        with trio.fail_after(timeout):
            while True:
                try:
                    await self.ws.get_message()
                except ConnectionClosed as exc:
                    reason = exc.reason
                    return (reason.code, reason.reason) if reason else (1006, None)


@asynccontextmanager
async def open_raw(
    port: int,
    *,
    subprotocols: Sequence[str] = (MSGPACK,),
    codec: str | None = None,
    message_queue_size: int = 64,
    max_message_size: int = 1 << 22,
    receive_buffer: int | None = None,
) -> AsyncIterator[RawClient]:
    """A raw WebSocket to ``127.0.0.1:port`` offering ``subprotocols``.

    ``codec`` defaults to the one of the first offered subprotocol (msgpack
    if none is a roomwire one). ``message_queue_size``: messages the
    connection buffers before it stops reading the socket (0: it stops at the
    first message nobody asked for, and then answers no WebSocket pings
    either). ``receive_buffer`` sets SO_RCVBUF before connecting, so a
    client that stops reading fills the relay's socket quickly. Raises
    ``trio_websocket.HandshakeError`` (``ConnectionRejected``) when refused.
    """
    if codec is None:
        names = {cls.subprotocol: name for name, cls in CODECS.items()}
        codec = next((names[s] for s in subprotocols if s in names), "msgpack")
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(
                nursery,
                stream,
                "127.0.0.1",
                "/",
                subprotocols=list(subprotocols),
                message_queue_size=message_queue_size,
                max_message_size=max_message_size,
            )
            try:
                yield RawClient(ws, CODECS[codec]())
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _single(group) from None
    finally:
        await trio.aclose_forcefully(stream)


def _single(group: BaseExceptionGroup) -> BaseException:
    """The one real error of a nursery's group (cancellations dropped), else the group."""
    rest = group.subgroup(lambda exc: not isinstance(exc, trio.Cancelled))
    if rest is not None and len(rest.exceptions) == 1:
        only = rest.exceptions[0]
        return _single(only) if isinstance(only, BaseExceptionGroup) else only
    return group
