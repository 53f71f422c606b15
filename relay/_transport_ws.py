"""The trio-websocket server transport: a reader task and a writer task per connection.

The reader decodes each message and hands it to the connection's ``Session``;
once the client is in a room, frames collect in the link's inbox until the
room's tick takes them (``receive_nowait``). The room hands each outgoing
message to ``send_nowait``, which queues it for the writer task and never
waits; ``ready()`` stays False while a message is being written, which is how
the room sees a slow reader and coalesces its state instead of queueing it.

trio-websocket answers WebSocket pings itself but sends none: the heartbeat
task pings every ``heartbeat_interval`` and closes a peer that does not answer
within ``heartbeat_timeout`` (close code 4006).
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from protocol import CloseCode, Codec, Error, Frame, ProtocolError

from ._session import LinkBase, Refusal, Session, admit

if TYPE_CHECKING:
    from ._server import Relay

__all__ = ["WebSocketLink", "serve_websocket_transport"]

log = logging.getLogger("relay.server")

_OUTBOX_SIZE = 32  # messages queued behind the one being written, before a client is cut off
_CLOSE_FLUSH_TIMEOUT = 2.0


class WebSocketLink(LinkBase):
    """A connection as both the session and the room's tick see it (``actors.Link``)."""

    def __init__(self, ws: WebSocketConnection, codec: Codec, relay: Relay) -> None:
        self.ws = ws
        self.codec = codec
        self.relay = relay
        self.player_id = ""
        self.session: Session | None = None
        self._inbox: list[Frame] = []
        self._out_send, self._out_recv = trio.open_memory_channel[bytes](_OUTBOX_SIZE)
        self._pending = 0
        self._closed = False
        self._close_request: tuple[int, str] | None = None
        self._scope: trio.CancelScope | None = None
        self._errors = 0
        self._limiter = relay.limits.connection()  # messages and bytes per second

    # -- actors.Link ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def receive_nowait(self) -> list[Frame]:
        frames = self._inbox
        if frames:
            self._inbox = []
        return frames

    def ready(self) -> bool:
        return self._pending == 0 and self._close_request is None and not self._closed

    def send_nowait(self, data: bytes) -> None:
        if self._close_request is not None or self._closed:
            return
        try:
            self._out_send.send_nowait(data)
        except trio.WouldBlock:
            self.close_nowait(CloseCode.SLOW_CLIENT, "outbox full: the client does not read")
            return
        self._pending += 1

    def close_nowait(self, code: int, reason: str) -> None:
        """Flush what is queued (within a bound), then close with ``code``."""
        if self._close_request is not None or self._closed:
            return
        self._close_request = (int(code), reason)
        self._out_send.close()  # the writer drains the queue, then ends the connection
        if self._scope is not None:
            self._scope.deadline = min(
                self._scope.deadline, trio.current_time() + _CLOSE_FLUSH_TIMEOUT
            )

    def detach(self, reason: str) -> None:
        self._inbox = []
        if self.session is not None:
            self.session.on_detached(reason)

    # -- tasks ------------------------------------------------------------------

    async def run(self, session: Session) -> None:
        """Serve the connection until it closes; never raises for the peer's faults."""
        self.session = session
        stats = self.relay.stats
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)
                await self._reader(session, stats)
                if self._close_request is None:
                    nursery.cancel_scope.cancel()  # the peer went away
        finally:
            self._closed = True
            code, reason = self._close_request or (CloseCode.NORMAL, "")
            with trio.move_on_after(_CLOSE_FLUSH_TIMEOUT) as scope:
                scope.shield = True
                try:
                    await self.ws.aclose(code, reason)
                except Exception:  # the socket may already be broken
                    pass

    async def _reader(self, session: Session, stats: object) -> None:
        ws = self.ws
        codec = self.codec
        relay_stats = self.relay.stats
        while self._close_request is None:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return
            relay_stats.frames_received += 1
            relay_stats.bytes_received += len(message)
            if not self._limiter.admit(len(message), self):
                continue  # over the rate limits: dropped, and the client was told
            if isinstance(message, str):
                relay_stats.protocol_errors += 1
                self.send_frame_nowait(
                    Error("text_frame", "roomwire speaks binary frames only; text is refused")
                )
                self.close_nowait(CloseCode.UNSUPPORTED_DATA, "text frames are refused")
                return
            try:
                frame = codec.decode(message)
            except ProtocolError as exc:
                self._protocol_error(exc)
                continue
            await session.on_frame(frame)

    async def _writer(self) -> None:
        ws = self.ws
        stats = self.relay.stats
        async with self._out_recv:
            async for data in self._out_recv:
                try:
                    await ws.send_message(data)
                except ConnectionClosed:
                    self._closed = True
                    break
                self._pending -= 1
                stats.frames_sent += 1
                stats.bytes_sent += len(data)
        if self._scope is not None:
            self._scope.cancel()

    async def _heartbeat(self) -> None:
        config = self.relay.config
        await trio.sleep(config.hello_timeout)
        if self.session is not None and self.session.phase == "hello":
            self.send_frame_nowait(Error("hello_timeout", "no Hello within the hello timeout"))
            self.close_nowait(CloseCode.UNAUTHORIZED, "hello timeout")
            return
        while True:
            await trio.sleep(config.heartbeat_interval)
            with trio.move_on_after(config.heartbeat_timeout) as scope:
                try:
                    await self.ws.ping()
                except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            if scope.cancelled_caught:
                self.relay.stats.heartbeat_timeouts += 1
                self.close_nowait(CloseCode.HEARTBEAT_TIMEOUT, "no pong within the timeout")
                return


async def _handle(relay: Relay, request: WebSocketRequest) -> None:
    # Everything a client can do wrong ends here, never in serve_websocket:
    # an exception escaping a handler would take down every connection.
    try:
        remote = request.remote
        codec = admit(relay, request.proposed_subprotocols, str(getattr(remote, "address", remote)))
        if isinstance(codec, Refusal):
            await request.reject(
                codec.status,
                extra_headers=[(b"content-type", b"text/plain")],
                body=codec.body.encode(),
            )
            return
        ws = await request.accept(subprotocol=codec.subprotocol)
        link = WebSocketLink(ws, codec, relay)
        session = Session(relay, link)
        relay.connections.add(link)
        relay.stats.connections_total += 1
        try:
            await link.run(session)
        finally:
            relay.connections.discard(link)
    except ConnectionClosed:
        pass
    except Exception:
        relay.stats.handler_crashes += 1
        log.exception("connection handler failed")


async def serve_websocket_transport(
    relay: Relay, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen for WebSocket clients; reports the bound port through ``task_status``."""
    config = relay.config
    ssl_context = None
    if config.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)

    async def handler(request: WebSocketRequest) -> None:
        await _handle(relay, request)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler,
                config.host,
                config.port,
                ssl_context,
                handler_nursery=relay.handler_nursery,
                message_queue_size=64,
                max_message_size=config.max_frame_bytes,
                receive_buffer_size=None,
                task_status=task_status,
            )
        )
        task_status.started(server.port)
