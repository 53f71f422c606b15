"""The tick-polled server transport (``--transport fast``): the room's tick reads and writes.

Theory of operation
-------------------
A connection task owns a client's lifecycle: it accepts the socket, runs the
RFC 6455 opening handshake (h11 parses the HTTP upgrade), reads and decodes
the client's frames itself while the client is in ``hello`` or the lobby, and
drives the transport-independent ``Session``. Once the session is in a room,
the connection task stops reading and only waits (for a detach, a close, the
heartbeat), and the room's tick owns the data:

* ``receive_nowait`` does one non-blocking ``recv`` of everything the socket
  holds (again only while the buffer comes back full), feeds the sans-IO
  ``WebSocketParser`` and returns the decoded frames. WebSocket pings are
  answered, a close frame is answered and ends the connection, protocol
  errors close it with the parser's code, undecodable messages get an error
  frame, messages over the rate limits (``relay._limits``) are dropped: the
  same policy and counters as the trio-websocket transport.
* ``send_nowait`` writes header and payload with one non-blocking ``send``.
  What the kernel does not take goes to the connection's writer task, which
  waits for writability through trio and finishes it; until then ``ready()``
  is False and the room coalesces later state into one delta.

So a client in a room costs no task wake-up per message: its room wakes 20
times a second whatever the client does. The writer task and the heartbeat
task sleep until they have something to do (a backlog, a ping every
``heartbeat_interval``).

Backpressure: the unsent backlog of a connection is bounded; a client whose
backlog passes the bound is closed with SLOW_CLIENT (4003), and its queued
frames are dropped (only a frame already partly on the wire is finished, so
the close frame that follows is well framed). Other closes flush what is
queued first, within ``_CLOSE_FLUSH_TIMEOUT``. The close handshake: we send
our close frame and wait (bounded) for the peer's, or answer the peer's at
once; then the server closes the TCP connection.

Nothing on the hot path logs, spawns a task or takes a lock. TLS is not
offered here (the configuration refuses it): it runs on the websocket
transport.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import socket
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
import trio

from protocol import CloseCode, Codec, Error, Frame, Input, Leave
from protocol import ProtocolError as CodecError
from protocol._websocket import (
    CloseReceived,
    CloseState,
    Message,
    Ping,
    Pong,
    WebSocketParser,
    WebSocketProtocolError,
    encode_binary,
    encode_close,
    encode_ping,
    encode_pong,
)

from ._session import INBOX_LIMIT, LinkBase, Refusal, Session, admit

if TYPE_CHECKING:
    from ._server import Relay

__all__ = ["FastLink", "FastLinkStatistics", "serve_fast_transport"]

log = logging.getLogger("relay.server")

#: a one-entry cache of the last message framed for sending (see send_nowait)
_last_payload: bytes = b""
_last_framed: bytes = encode_binary(b"")
_RECV_SIZE = 65536  # one recv per tick takes everything a client sends in a tick
_MAX_READS_PER_TICK = 4  # a flooding client cannot make one tick read without end
_CLOSE_FLUSH_TIMEOUT = 2.0
_MIN_BACKLOG = 1 << 20  # unsent bytes a connection may hold (at least 4 frames of the limit)
_WRITE_CHUNK = 1 << 18  # the writer joins queued frames up to this many bytes per send
_HANDSHAKE_LIMIT = 16384  # bytes of HTTP upgrade request we read, at most
_NOTSENT_LOWAT = 16384
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


@dataclass(frozen=True, slots=True)
class FastLinkStatistics:
    """One connection's transport state, for metrics, debugging and tests."""

    pending_bytes: int  # unsent bytes waiting for the writer task
    buffered_bytes: int  # received bytes of incomplete frames held by the parser
    tick_reads: bool  # True while the room's tick owns reading this socket
    close_code: int | None  # the code we are closing (or answered a close) with
    closed: bool


class _Eof:
    """Marks the end of the client's stream in an event list."""


_EOF = _Eof()


class FastLink(LinkBase):
    """A connection as the session and the room's tick see it (``actors.Link``).

    Created by the transport after the opening handshake; ``run`` serves it
    until it closes. Every sync method may be called from a room's tick and
    never blocks or raises for a client's fault.
    """

    __slots__ = (
        "_broken",
        "_close",
        "_close_request",
        "_closed",
        "_errors",
        "_flushed",
        "_heard",
        "_inbox",
        "_limiter",
        "_max_backlog",
        "_out",
        "_out_bytes",
        "_out_started",
        "_parser",
        "_pong",
        "_read_scope",
        "_scope",
        "_stash",
        "_tick_reads",
        "_wake",
        "_want_write",
        "codec",
        "player_id",
        "relay",
        "session",
        "sock",
    )

    def __init__(
        self, sock: socket.socket, codec: Codec, relay: Relay, *, initial: bytes = b""
    ) -> None:
        config = relay.config
        self.sock = sock
        self.codec = codec
        self.relay = relay
        self.player_id = ""
        self.session: Session | None = None
        self._parser = WebSocketParser(max_message_size=config.max_frame_bytes)
        self._inbox: list[Frame] = []
        # Events read but not yet handled because the client left its room with a Leave
        # in the middle of them: whoever reads next (tick or lobby reader) handles them.
        self._stash: list[Any] = []
        self._tick_reads = False
        self._out: deque[bytes | memoryview] = deque()
        self._out_bytes = 0
        self._out_started = False  # the head of _out is a frame already partly sent
        self._max_backlog = max(_MIN_BACKLOG, 4 * config.max_frame_bytes)
        self._close = CloseState()
        self._close_request: tuple[int, str] | None = None
        self._closed = False
        self._broken = False
        self._errors = 0
        self._limiter = relay.limits.connection()  # messages and bytes per second
        self._heard = False
        self._pong: trio.Event | None = None
        self._wake = trio.Event()
        self._want_write = trio.Event()
        self._flushed: trio.Event | None = None
        self._read_scope: trio.CancelScope | None = None
        self._scope: trio.CancelScope | None = None
        if initial:
            self._stash = self._parse(initial)

    def __repr__(self) -> str:
        return f"<FastLink {self.player_id or 'anonymous'} fd={self.sock.fileno()}>"

    def statistics(self) -> FastLinkStatistics:
        return FastLinkStatistics(
            pending_bytes=self._out_bytes,
            buffered_bytes=self._parser.statistics().buffered_bytes,
            tick_reads=self._tick_reads,
            close_code=None if self._close_request is None else self._close_request[0],
            closed=self._closed,
        )

    # -- actors.Link ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def receive_nowait(self) -> list[Frame]:
        # A stash left by a Leave waits for the room to see that Leave (in the inbox) and
        # detach; only if the Leave got lost (a failed tick) does the tick go on with it.
        if (
            self._tick_reads
            and self._close_request is None
            and not self._closed
            and not (self._stash and self._inbox)
        ):
            events = self._read_nowait()
            if events:
                self._handle_room_events(events)
        frames = self._inbox
        if frames:
            self._inbox = []
        return frames

    def ready(self) -> bool:
        return not self._out and self._close_request is None and not self._closed

    def send_nowait(self, data: bytes) -> None:
        if self._close_request is not None or self._closed:
            return
        stats = self.relay.stats
        stats.frames_sent += 1
        stats.bytes_sent += len(data)
        # The room hands the same bytes object to every up-to-date member of a tick:
        # frame it once (header and payload joined once) and reuse that.
        global _last_payload, _last_framed
        if data is not _last_payload:
            _last_payload = data
            _last_framed = encode_binary(data)
        self._write_nowait(_last_framed)

    def close_nowait(self, code: int, reason: str) -> None:
        """Close with ``code``: flush what is queued (within a bound), send the close frame,
        wait for the peer's. A SLOW_CLIENT close drops the queued frames instead."""
        if self._close_request is not None or self._closed:
            return
        self._close_request = (int(code), reason)
        self._tick_reads = False
        self._interrupt()
        if self._scope is not None:
            self._scope.deadline = min(
                self._scope.deadline, trio.current_time() + 2 * _CLOSE_FLUSH_TIMEOUT
            )

    def detach(self, reason: str) -> None:
        self._inbox = []
        self._tick_reads = False
        if self.session is not None:
            self.session.on_detached(reason)
        self._interrupt()

    # -- reading (sync: the tick and the connection task share it) --------------

    def _read_nowait(self) -> list[Any]:
        """Whatever the socket holds, parsed; ends with ``_EOF`` or a protocol error."""
        events = self._stash
        if events:
            self._stash = []
        sock = self.sock
        for _ in range(_MAX_READS_PER_TICK):
            try:
                data = sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._lost()  # reset by the peer
                break
            if not data:
                events = [*events, _EOF]  # (events may be the empty stash list itself)
                break
            self._heard = True
            parsed = self._parse(data)
            if events:
                events.extend(parsed)
            else:
                events = parsed
            if (
                len(data) < _RECV_SIZE
                or self._parser.close_received
                or (events and type(events[-1]) is WebSocketProtocolError)
            ):
                break
        return events

    def _parse(self, data: bytes) -> list[Any]:
        try:
            return self._parser.feed(data)
        except WebSocketProtocolError as exc:
            return [*exc.events, exc]

    def _handle_room_events(self, events: list[Any]) -> None:
        """Decode and route one tick's events; Input frames go straight to the inbox
        (which is what ``Session.on_room_frame`` does with them)."""
        stats = self.relay.stats
        decode = self.codec.decode
        admit = self._limiter.admit
        now = trio.current_time()
        session = self.session
        assert session is not None
        inbox = self._inbox
        for i, event in enumerate(events):
            if type(event) is Message:
                data = event.data
                stats.frames_received += 1
                stats.bytes_received += len(data)
                if not admit(len(data), self, now=now):
                    continue  # over the rate limits: dropped, and the client was told
                try:
                    frame = decode(data)
                except CodecError as exc:
                    self._protocol_error(exc)
                    continue
                if type(frame) is Input:
                    inbox.append(frame)
                    continue
                session.on_room_frame(frame)
                if type(frame) is Leave:
                    # What follows a Leave belongs to the lobby: keep it for the next reader.
                    self._stash = events[i + 1 :]
                    break
            else:
                self._control(event)
            if self._close_request is not None or self._closed:
                break
        if len(inbox) > INBOX_LIMIT:
            self.close_nowait(CloseCode.POLICY_VIOLATION, "too many frames: flooding")

    def _control(self, event: Any) -> None:
        """A WebSocket-level event: ping, pong, close, end of stream or a protocol error."""
        t = type(event)
        if t is Ping:
            if self._close_request is None and not self._closed:
                self._write_nowait(encode_pong(event.payload))
        elif t is Pong:
            pong = self._pong
            if pong is not None:
                pong.set()
        elif t is CloseReceived:
            self._peer_closed(event)
        elif t is WebSocketProtocolError:
            self._ws_error(event)
        elif event is _EOF:
            # The peer shut its side without a close frame; ours may still get through.
            self._closed = True
            self._tick_reads = False
            self._interrupt()

    def _peer_closed(self, event: CloseReceived) -> None:
        close = self._close
        close.close_received(event.code)
        if close.reply_owed and not self._broken:
            # Echo the peer's code (RFC 6455 section 5.5.1), after anything queued.
            self._write_nowait(encode_close(close.reply_code))
            close.close_sent(close.reply_code)
        if self._close_request is None:
            self._close_request = (event.code or CloseCode.NORMAL, event.reason)
        self._closed = True
        self._tick_reads = False
        self._interrupt()

    def _ws_error(self, exc: WebSocketProtocolError) -> None:
        stats = self.relay.stats
        stats.protocol_errors += 1
        if exc.close_code == CloseCode.UNSUPPORTED_DATA:
            stats.frames_received += 1
            self.send_frame_nowait(
                Error("text_frame", "roomwire speaks binary frames only; text is refused")
            )
        self.close_nowait(exc.close_code, exc.reason)

    # -- writing ----------------------------------------------------------------

    def _write_nowait(self, buf: bytes) -> None:
        """Send one whole WebSocket frame now, or queue it behind the backlog."""
        if self._broken:
            return
        out = self._out
        if out:
            out.append(buf)
            self._out_bytes += len(buf)
            if self._out_bytes > self._max_backlog and self._close_request is None:
                self.close_nowait(
                    CloseCode.SLOW_CLIENT,
                    f"more than {self._max_backlog} bytes unsent: the client does not read",
                )
            return
        try:
            sent = self.sock.send(buf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lost()
            return
        if sent < len(buf):
            rest = memoryview(buf)[sent:] if sent else buf
            out.append(rest)
            self._out_bytes = len(rest)
            self._out_started = sent > 0
            self._want_write.set()

    def _consume(self, sent: int) -> None:
        """Drop ``sent`` bytes from the head of the backlog, keeping frame boundaries."""
        out = self._out
        self._out_bytes -= sent
        while sent:
            head = out[0]
            if sent >= len(head):
                sent -= len(head)
                out.popleft()
                self._out_started = False
            else:
                out[0] = memoryview(head)[sent:]
                self._out_started = True
                break

    def _drop_unstarted(self) -> None:
        """Forget queued frames no byte of which was sent (a slow client is being cut off)."""
        out = self._out
        keep = out[0] if out and self._out_started else None
        out.clear()
        self._out_bytes = 0
        if keep is not None:
            out.append(keep)
            self._out_bytes = len(keep)

    def _lost(self) -> None:
        """The socket is gone (reset, end of stream, broken pipe): stop all I/O on it."""
        self._broken = True
        self._closed = True
        self._tick_reads = False
        self._out.clear()
        self._out_bytes = 0
        self._interrupt()
        self._want_write.set()
        if self._flushed is not None:
            self._flushed.set()

    def _interrupt(self) -> None:
        # Wake the connection task: it is parked (room phase) or waiting to read (lobby).
        self._wake.set()
        if self._read_scope is not None:
            self._read_scope.cancel()

    # -- tasks ----------------------------------------------------------------

    async def run(self, session: Session) -> None:
        """Serve the connection until it closes; never raises for the peer's faults.

        The caller closes the socket afterwards.
        """
        self.session = session
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)
                await self._serve(session)
                await self._finish()
                nursery.cancel_scope.cancel()
        finally:
            self._closed = True
            self._tick_reads = False

    async def _serve(self, session: Session) -> None:
        while self._close_request is None and not self._closed:
            if self._tick_reads:
                # The room's tick reads this socket now: wait for detach or close.
                if self._wake.is_set():
                    self._wake = trio.Event()
                    continue
                await self._wake.wait()
                continue
            events = self._read_nowait()
            if not events:
                with trio.CancelScope() as scope:
                    self._read_scope = scope
                    if self._close_request is None and not self._closed:
                        await trio.lowlevel.wait_readable(self.sock)
                self._read_scope = None
                continue
            await self._handle_lobby_events(session, events)
            if session.phase == "room" and self._close_request is None and not self._closed:
                self._tick_reads = True

    async def _handle_lobby_events(self, session: Session, events: list[Any]) -> None:
        stats = self.relay.stats
        for i, event in enumerate(events):
            if type(event) is Message:
                data = event.data
                stats.frames_received += 1
                stats.bytes_received += len(data)
                if not self._limiter.admit(len(data), self):
                    continue  # over the rate limits: dropped, and the client was told
                try:
                    frame = self.codec.decode(data)
                except CodecError as exc:
                    self._protocol_error(exc)
                    continue
                await session.on_frame(frame)
                if type(frame) is Leave and session.phase == "room":
                    self._stash = events[i + 1 :]  # the room still has to see the Leave
                    return
            else:
                self._control(event)
            if self._close_request is not None or self._closed:
                return

    async def _finish(self) -> None:
        """The close handshake, bounded: our close frame, the flush, the peer's close."""
        if self._broken:
            return
        close = self._close
        with trio.move_on_after(_CLOSE_FLUSH_TIMEOUT):
            if close.may_send_close:
                code, reason = self._close_request or (CloseCode.NORMAL, "")
                if code == CloseCode.SLOW_CLIENT:
                    self._drop_unstarted()
                self._write_nowait(encode_close(code, reason))
                close.close_sent(code)
            while self._out and not self._broken:
                self._flushed = trio.Event()
                await self._flushed.wait()
            # Read (and drop) until the peer's close frame or the end of its stream.
            while not close.done and not self._broken:
                events = self._read_nowait()
                for event in events:
                    if type(event) is CloseReceived:
                        close.close_received(event.code)
                        return
                    if event is _EOF or type(event) is WebSocketProtocolError:
                        return
                if not events:
                    await trio.lowlevel.wait_readable(self.sock)

    async def _writer(self) -> None:
        sock = self.sock
        out = self._out
        while not self._broken:
            if not out:
                if self._flushed is not None:
                    self._flushed.set()
                self._want_write = trio.Event()
                await self._want_write.wait()
                continue
            await trio.lowlevel.wait_writable(sock)
            if len(out) == 1:
                data = out[0]
            else:
                chunks = []
                size = 0
                for chunk in out:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= _WRITE_CHUNK:
                        break
                data = b"".join(chunks)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                self._lost()
                return
            self._consume(sent)

    async def _heartbeat(self) -> None:
        config = self.relay.config
        stats = self.relay.stats
        await trio.sleep(config.hello_timeout)
        if self.session is not None and self.session.phase == "hello":
            self.send_frame_nowait(Error("hello_timeout", "no Hello within the hello timeout"))
            self.close_nowait(CloseCode.UNAUTHORIZED, "hello timeout")
            return
        nonce = 0
        while self._close_request is None and not self._closed:
            await trio.sleep(config.heartbeat_interval)
            if self._close_request is not None or self._closed:
                return
            nonce += 1
            self._heard = False
            pong = self._pong = trio.Event()
            self._write_nowait(encode_ping(nonce.to_bytes(4, "big")))
            with trio.move_on_after(config.heartbeat_timeout):
                await pong.wait()
            self._pong = None
            # Any bytes from the peer prove it alive too: a pong can sit behind its inputs.
            if not pong.is_set() and not self._heard:
                stats.heartbeat_timeouts += 1
                self.close_nowait(CloseCode.HEARTBEAT_TIMEOUT, "no pong within the timeout")
                return


# -- the opening handshake ------------------------------------------------------


class _Rejected(Exception):
    """The client's upgrade request is refused; carries the HTTP answer."""

    def __init__(
        self, status: int, body: str, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body.encode()
        self.headers = headers


_REASONS = {
    400: b"Bad Request",
    426: b"Upgrade Required",
    429: b"Too Many Requests",
    503: b"Service Unavailable",
}


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await trio.lowlevel.wait_writable(sock)
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            continue
        view = view[sent:]


def _header_tokens(request: h11.Request, name: bytes) -> list[str]:
    tokens: list[str] = []
    for key, value in request.headers:
        if key == name:
            tokens.extend(t.strip() for t in value.decode("latin-1").split(",") if t.strip())
    return tokens


def _check_upgrade(request: h11.Request, relay: Relay, ip: str) -> tuple[Codec, bytes]:
    """The codec and the Sec-WebSocket-Accept value; raises ``_Rejected`` (client's fault)."""
    if request.method != b"GET":
        raise _Rejected(400, "roomwire: a WebSocket upgrade is a GET request\n")
    connection = [t.lower() for t in _header_tokens(request, b"connection")]
    upgrade = [t.lower() for t in _header_tokens(request, b"upgrade")]
    if "upgrade" not in connection or "websocket" not in upgrade:
        raise _Rejected(400, "roomwire: this port speaks WebSocket only (no upgrade requested)\n")
    versions = _header_tokens(request, b"sec-websocket-version")
    if versions != ["13"]:
        raise _Rejected(
            426,
            "roomwire: WebSocket version 13 is required\n",
            ((b"Sec-WebSocket-Version", b"13"),),
        )
    keys = _header_tokens(request, b"sec-websocket-key")
    try:
        valid_key = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
    except ValueError:
        valid_key = False
    if not valid_key:
        raise _Rejected(400, "roomwire: missing or malformed Sec-WebSocket-Key\n")
    codec = admit(relay, _header_tokens(request, b"sec-websocket-protocol"), ip)
    if isinstance(codec, Refusal):
        raise _Rejected(codec.status, codec.body)
    accept = base64.b64encode(hashlib.sha1(keys[0].encode() + _WS_GUID).digest())
    return codec, accept


async def _handshake(relay: Relay, sock: socket.socket) -> tuple[Codec, bytes] | None:
    """Run the opening handshake; the codec and any bytes the client sent after its
    request, or None when the client went away or was refused (the answer is sent)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_HANDSHAKE_LIMIT)
    request: h11.Request | None = None
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(_HANDSHAKE_LIMIT)
                except (BlockingIOError, InterruptedError):
                    continue
                conn.receive_data(data)
            elif type(event) is h11.Request:
                request = event
            elif type(event) is h11.EndOfMessage:
                break  # what follows the request (if anything) is WebSocket frames
            elif type(event) is not h11.Data:
                return None  # the client closed before a whole request
        assert request is not None
        try:
            ip = str(sock.getpeername()[0])
        except OSError:
            return None  # gone already
        codec, accept = _check_upgrade(request, relay, ip)
    except h11.RemoteProtocolError:
        relay.stats.handshake_rejects += 1
        rejected = _Rejected(400, "roomwire: malformed HTTP upgrade request\n")
    except _Rejected as exc:
        rejected = exc
    else:
        response = h11.InformationalResponse(
            status_code=101,
            headers=[
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", accept),
                (b"Sec-WebSocket-Protocol", codec.subprotocol.encode()),
            ],
            reason=b"Switching Protocols",
        )
        await _send_all(sock, conn.send(response))
        trailing, _ = conn.trailing_data
        return codec, bytes(trailing)
    headers = [
        (b"Content-Type", b"text/plain; charset=utf-8"),
        (b"Content-Length", str(len(rejected.body)).encode()),
        (b"Connection", b"close"),
        *rejected.headers,
    ]
    head = h11.Response(
        status_code=rejected.status,
        headers=headers,
        reason=_REASONS.get(rejected.status, b""),
    )
    await _send_all(sock, conn.send(head) + rejected.body)
    return None


async def _handle(relay: Relay, sock: socket.socket) -> None:
    # Everything a client can do wrong ends here: an exception escaping a handler
    # would take down the handler nursery, and every connection with it.
    accepted = None
    try:
        with trio.move_on_after(relay.config.hello_timeout):
            accepted = await _handshake(relay, sock)
        if not accepted:
            return
        codec, initial = accepted
        link = FastLink(sock, codec, relay, initial=initial)
        session = Session(relay, link)
        relay.connections.add(link)
        relay.stats.connections_total += 1
        try:
            await link.run(session)
        finally:
            relay.connections.discard(link)
    except OSError:
        pass  # the peer reset the connection during the handshake
    except Exception:
        relay.stats.handler_crashes += 1
        log.exception("connection handler failed")
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def _accept_loop(relay: Relay, listener: trio.SocketListener) -> None:
    handlers = relay.handler_nursery
    assert handlers is not None
    listen_sock = listener.socket
    while True:
        try:
            client, _ = await listen_sock.accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_RETRY_ERRNOS:
                log.error("accept failed (%s); retrying in 100 ms", exc)
                await trio.sleep(0.1)
                continue
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                continue
            raise
        # The connection leaves trio's socket wrapper: the room's tick calls send/recv on
        # the plain non-blocking socket, and trio only waits for readiness on it.
        sock = socket.socket(fileno=client.detach())
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            # As trio's SocketStream does: the kernel holds little unsent data, so a slow
            # reader shows up as a short write at once and the room coalesces its state
            # instead of queueing stale frames in the kernel.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
        handlers.start_soon(_handle, relay, sock)


async def serve_fast_transport(
    relay: Relay, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen for WebSocket clients; reports the bound port through ``task_status``.

    Connection tasks run in ``relay.handler_nursery``, so cancelling this
    listener stops accepting without dropping the clients.
    """
    config = relay.config
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, relay, listener)
            task_status.started(listeners[0].socket.getsockname()[1])
    finally:
        for listener in listeners:
            listener.socket.close()
