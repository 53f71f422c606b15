"""One client's conversation with the relay, independent of the transport.

A session goes ``hello -> lobby -> room -> lobby ... -> closed``. In ``hello``
it waits for the client's ``Hello`` and checks its ticket; in ``lobby`` it
answers create / join / quick-join / ping itself; once the client is in a
room, its frames belong to the room's tick and the session only hands them
over (``Link.deliver``), answering pings on the spot. The transport (see
``_transport_ws``) owns the socket, the decoding and the writer; the session
owns the decisions, so every transport behaves the same.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from actors import RoomError
from protocol import (
    PROTOCOL_VERSION,
    SUBPROTOCOLS,
    CloseCode,
    Codec,
    Create,
    Error,
    Event,
    Frame,
    Hello,
    Input,
    Join,
    Leave,
    LimitExceeded,
    Ping,
    Pong,
    ProtocolError,
    QuickJoin,
    Rpc,
    RpcResult,
    Signal,
    Welcome,
)

from ._reconnect import resume_seat
from ._tickets import TicketError

if TYPE_CHECKING:
    from ._server import Relay

__all__ = ["ERROR_BUDGET", "INBOX_LIMIT", "LinkBase", "Refusal", "Session", "SessionLink", "admit"]

log = logging.getLogger("relay.session")

_ROOM_FRAMES = (Input, Rpc, RpcResult, Signal, Leave)


class SessionLink(Protocol):
    """What a session needs of its transport on top of ``actors.Link``."""

    player_id: str

    def send_frame_nowait(self, frame: Frame) -> None: ...

    def deliver(self, frame: Frame) -> None: ...

    def close_nowait(self, code: int, reason: str) -> None: ...


@dataclass(slots=True)
class _Identity:
    player_id: str
    name: str
    role: str
    room: str | None  # the room the ticket is bound to, if any


class Session:
    """The protocol state of one connection. Not thread-safe; one task drives it."""

    def __init__(self, relay: Relay, link: Any) -> None:
        self.relay = relay
        self.link = link
        self.phase = "hello"  # hello, lobby, room, closed
        self.identity: _Identity | None = None
        self.room_code: str | None = None

    # The transport calls this for every decoded frame, in order.
    async def on_frame(self, frame: Frame) -> None:
        if self.phase == "room":
            self.on_room_frame(frame)
            return
        if self.phase == "hello":
            await self._on_hello(frame)
            return
        if self.phase == "lobby":
            await self._on_lobby(frame)

    def on_room_frame(self, frame: Frame) -> None:
        """A frame of a client that is in a room. Never blocks, so a room's tick may call
        it (the tick-polled transport does): room frames go to ``Link.deliver``, pings are
        answered, anything else gets an ``in_room`` error frame."""
        if type(frame) is Ping:
            self.link.send_frame_nowait(Pong(frame.nonce))
        elif isinstance(frame, _ROOM_FRAMES):
            self.link.deliver(frame)
        else:
            self._error("in_room", f"{type(frame).__name__} is not allowed inside a room", frame)

    def on_detached(self, reason: str) -> None:
        """The room let go of this member; the connection stays open in the lobby.

        The client is told with ``Event("left", {"code", "reason"})``: until then it
        cannot know when a Create or Join of its own would be taken (protocol.md).
        """
        if self.phase == "room":
            code = self.room_code
            self.phase = "lobby"
            self.room_code = None
            self.link.send_frame_nowait(Event("left", {"code": code, "reason": reason}))

    # -- hello ----------------------------------------------------------------

    async def _on_hello(self, frame: Frame) -> None:
        if type(frame) is not Hello:
            self._error("hello_required", "the first frame must be Hello", frame)
            self.link.close_nowait(CloseCode.PROTOCOL_ERROR, "hello required")
            self.phase = "closed"
            return
        if frame.version != PROTOCOL_VERSION:
            self._error(
                "unsupported_version",
                f"protocol version {frame.version} is not supported (this relay speaks "
                f"{PROTOCOL_VERSION})",
                frame,
            )
            self.link.close_nowait(CloseCode.UNSUPPORTED_VERSION, "unsupported version")
            self.phase = "closed"
            return
        try:
            self.identity = self._authenticate(frame)
        except TicketError as exc:
            self.relay.stats.auth_failures += 1
            self._error(exc.code, exc.message, frame)
            self.link.close_nowait(CloseCode.UNAUTHORIZED, exc.code)
            self.phase = "closed"
            return
        resume = None
        if frame.resume is not None:  # a dropped client taking its seat back (_reconnect)
            ticket_player = self.identity.player_id if frame.ticket else None
            resume = self.relay.resume.check(frame.resume, ticket_player=ticket_player)
            if resume.claims is not None:
                self.identity.player_id = resume.claims.player_id
        self.link.player_id = self.identity.player_id
        self.phase = "lobby"
        self.link.send_frame_nowait(
            Welcome(
                PROTOCOL_VERSION,
                self.link.codec.name,
                self.identity.player_id,
                self.relay.server_info(),
            )
        )
        if resume is not None:
            await resume_seat(self, resume)

    def _authenticate(self, hello: Hello) -> _Identity:
        relay = self.relay
        if hello.ticket:
            ticket = relay.verifier.verify(hello.ticket)
            return _Identity(ticket.player_id, ticket.name, ticket.role, ticket.room)
        if not relay.config.allow_anonymous:
            raise TicketError("this relay requires a join ticket", code="ticket_required")
        suffix = secrets.token_hex(4)
        return _Identity(f"anon-{suffix}", f"Player-{suffix[:4].upper()}", "player", None)

    # -- lobby ----------------------------------------------------------------

    async def _on_lobby(self, frame: Frame) -> None:
        t = type(frame)
        if t is Ping:
            self.link.send_frame_nowait(Pong(frame.nonce))
            return
        if t not in (Create, Join, QuickJoin):
            self._error("not_in_room", f"{t.__name__} needs a room: create or join one", frame)
            return
        identity = self.identity
        assert identity is not None
        registry = self.relay.registry
        try:
            if t is Create:
                if identity.room is not None:
                    raise TicketError(
                        "this ticket is bound to a room and cannot create another",
                        code="ticket_wrong_room",
                    )
                handle = registry.create(frame.mode, dict(frame.options))
                result = await self._join(handle, frame)
            elif t is Join:
                code = frame.code.strip().upper()
                if identity.room is not None and identity.room.upper() != code:
                    raise TicketError(
                        f"this ticket is for room {identity.room}, not {code}",
                        code="ticket_wrong_room",
                    )
                result = await self._join(registry.get(code), frame)
            else:
                result = await self._quick_join(frame)
        except (RoomError, TicketError) as exc:
            self._error(exc.code, exc.message, frame)
            return
        self.room_code = result.code
        self.phase = "room"

    async def _join(self, handle: Any, frame: Frame) -> Any:
        identity = self.identity
        assert identity is not None
        return await handle.join(
            identity.player_id, identity.name, self.link, frame.frame_id(), identity.role
        )

    async def _quick_join(self, frame: QuickJoin) -> Any:
        identity = self.identity
        assert identity is not None
        if identity.room is not None:
            return await self._join(self.relay.registry.get(identity.room.upper()), frame)
        _handle, result = await self.relay.registry.quick_join(
            frame.mode,
            identity.player_id,
            identity.name,
            self.link,
            frame.id,
            role=identity.role,
        )
        return result

    def _error(self, code: str, message: str, frame: Frame | None) -> None:
        ref = frame.frame_id() if frame is not None else None
        self.relay.stats.errors_sent += 1
        self.link.send_frame_nowait(Error(code, message, ref))


# -- what both transports share ------------------------------------------------

#: frames waiting for the room's tick before a client is cut off for flooding
INBOX_LIMIT = 512
#: protocol errors a connection may cause before it is closed
ERROR_BUDGET = 20


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection is refused at the handshake: an HTTP status and a body."""

    status: int
    body: str


def admit(relay: Relay, offered: Sequence[str], ip: str) -> Codec | Refusal:
    """The codec of a new connection (the first roomwire subprotocol it offers), or
    why it is refused: no roomwire subprotocol (400), the relay is full (503), too
    many new connections from its address (429). Every transport asks this."""
    codec = None
    for name in offered:
        cls = SUBPROTOCOLS.get(name)
        if cls is not None:
            codec = relay.codec(cls)
            break
    if codec is None:
        relay.stats.handshake_rejects += 1
        return Refusal(
            400,
            "roomwire: offer the WebSocket subprotocol roomwire.v1.msgpack or "
            f"roomwire.v1.cbor (offered: {', '.join(offered) or 'none'})\n",
        )
    if len(relay.connections) >= relay.config.max_connections:
        return Refusal(503, "roomwire: server full\n")
    if not relay.limits.allow_connection(ip):
        return Refusal(429, "roomwire: too many new connections from here\n")
    return codec


class LinkBase:
    """The parts of ``SessionLink`` that do not depend on the transport.

    A transport's link subclasses this and provides ``codec``, ``relay``,
    ``_inbox`` (a list), ``_errors`` (an int), ``send_nowait`` and ``close_nowait``.
    """

    __slots__ = ()

    codec: Codec
    relay: Relay
    _inbox: list[Frame]
    _errors: int

    def send_nowait(self, data: bytes) -> None:
        raise NotImplementedError

    def close_nowait(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def send_frame_nowait(self, frame: Frame) -> None:
        self.send_nowait(self.codec.encode(frame))

    def deliver(self, frame: Frame) -> None:
        inbox = self._inbox
        inbox.append(frame)
        if len(inbox) > INBOX_LIMIT:
            self.close_nowait(CloseCode.POLICY_VIOLATION, "too many frames: flooding")

    def _protocol_error(self, exc: ProtocolError) -> None:
        """Answer a frame that did not decode: an error frame, and a close for an
        oversized frame or once the connection has used up its error budget."""
        self.relay.stats.protocol_errors += 1
        self._errors += 1
        self.send_frame_nowait(Error(exc.code, exc.message, exc.frame_id))
        if isinstance(exc, LimitExceeded):
            self.close_nowait(exc.close_code, exc.code)
        elif self._errors >= ERROR_BUDGET:
            self.close_nowait(CloseCode.POLICY_VIOLATION, "too many protocol errors")
