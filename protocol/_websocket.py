"""Sans-IO RFC 6455 frame layer for the server side of the fast transport.

Bytes from a client go into :class:`WebSocketParser` and come out as events; the
writer functions turn server frames into bytes. Nothing here touches a socket.

Theory of operation
-------------------
The parser keeps at most one incomplete frame (plus the fragments of the data
message being reassembled) between calls to :meth:`WebSocketParser.feed`. Each
call walks the bytes with an offset, decodes every complete frame and compacts
the leftover once, so a chunk holding many small frames costs no copy per frame.
Every header is validated as soon as its length field is complete, before any
payload is buffered: a frame that declares more than the size limit is refused
from its header, and a text frame is refused from its header too (the protocol
is binary-only), so neither ever makes the parser hold its payload.

Checks run in this order, so that a frame breaking several rules gets the same
close code that wsproto (with a trio-websocket style size limit) gives it:
reserved bits, mask bit, opcode / control-frame rules / fragmentation state
(all 1002), then the length field (non-minimal encoding or the 64-bit high bit:
1002), then a text frame (1003), then the message size (1009). A close frame is
checked once complete: a 1-byte payload or an invalid code is 1002, a reason
that is not UTF-8 is 1007. After a close frame is received the rest of the
stream is ignored; after an error the parser stays failed.

Exceptions
----------
::

    Exception
     ├── WebSocketProtocolError   the remote client broke RFC 6455 or our policy;
     │                            close the connection with its close_code
     ├── ValueError / TypeError   the local caller passed a bad argument
     └── RuntimeError             the local caller misused CloseState
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "CloseReceived",
    "CloseState",
    "CloseStatus",
    "Message",
    "Opcode",
    "ParserStatistics",
    "Ping",
    "Pong",
    "WebSocketCloseCode",
    "WebSocketParser",
    "WebSocketProtocolError",
    "encode_binary",
    "encode_close",
    "encode_ping",
    "encode_pong",
    "frame_header",
]


class Opcode(enum.IntEnum):
    """RFC 6455 section 5.2 frame opcodes."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class WebSocketCloseCode(enum.IntEnum):
    """Close codes this server sends or expects (RFC 6455 section 7.4.1, plus 1012/1013)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013


# Codes a peer may put on the wire. 1004 is reserved, 1005/1006/1015 are
# local-only, 1014 and 1016-2999 are unassigned here; wsproto draws the same
# line, so we agree with it on which close frames are protocol errors.
_WIRE_CLOSE_CODES = frozenset(int(code) for code in WebSocketCloseCode)
_MIN_APP_CLOSE_CODE = 3000
_MAX_APP_CLOSE_CODE = 4999

_MAX_CONTROL_PAYLOAD = 125
_MAX_CLOSE_REASON = _MAX_CONTROL_PAYLOAD - 2
_MAX_FRAME_LENGTH = (1 << 63) - 1
# The longest header (2 + 8 length + 4 mask) and the longest control frame: the
# most a valid stream can leave unparsed between feeds beyond a message body.
_MAX_HEADER = 14
_MAX_CONTROL_FRAME = 6 + _MAX_CONTROL_PAYLOAD
_KNOWN_OPCODES = frozenset(int(op) for op in Opcode)

_PROTOCOL_ERROR = WebSocketCloseCode.PROTOCOL_ERROR
_UNSUPPORTED_DATA = WebSocketCloseCode.UNSUPPORTED_DATA
_INVALID_PAYLOAD = WebSocketCloseCode.INVALID_PAYLOAD
_MESSAGE_TOO_BIG = WebSocketCloseCode.MESSAGE_TOO_BIG


def _is_wire_close_code(code: int) -> bool:
    return code in _WIRE_CLOSE_CODES or _MIN_APP_CLOSE_CODE <= code <= _MAX_APP_CLOSE_CODE


class WebSocketProtocolError(Exception):
    """The remote client sent bytes that break RFC 6455 or this server's policy.

    It is the peer's fault: the caller should send a close frame with
    ``close_code`` (and ``reason``) and drop the connection. ``events`` holds the
    events decoded from the same :meth:`WebSocketParser.feed` call before the bad
    frame, so that nothing the peer sent correctly is lost.
    """

    def __init__(self, close_code: int, reason: str, *, events: tuple = ()) -> None:
        super().__init__(close_code, reason)
        self.close_code = close_code
        self.reason = reason
        self.events = tuple(events)

    def __str__(self) -> str:
        return f"client broke the WebSocket protocol (close {int(self.close_code)}): {self.reason}"


def _short(data: bytes) -> str:
    # Events print short in logs: payloads can be large and are rarely readable.
    if len(data) <= 16:
        return repr(bytes(data))
    return f"<{len(data)} bytes>"


@dataclass(frozen=True, slots=True, repr=False)
class Message:
    """A complete binary message from the client, reassembled from its fragments."""

    data: bytes

    def __post_init__(self) -> None:
        if type(self.data) is not bytes:
            raise TypeError(f"Message.data must be bytes, not {type(self.data).__name__}")

    def __repr__(self) -> str:
        return f"Message({_short(self.data)})"


_new_object = object.__new__
_set_message_data = Message.__dict__["data"].__set__


def _message(data: bytes) -> Message:
    """A ``Message`` of bytes the parser made itself: skips the constructor's check."""
    message = _new_object(Message)
    _set_message_data(message, data)
    return message


def _check_control_payload(kind: str, payload: object) -> None:
    if type(payload) is not bytes:
        raise TypeError(f"{kind} payload must be bytes, not {type(payload).__name__}")
    if len(payload) > _MAX_CONTROL_PAYLOAD:
        raise ValueError(f"{kind} payload is {len(payload)} bytes; control frames carry <= 125")


@dataclass(frozen=True, slots=True, repr=False)
class Ping:
    """A ping from the client; the caller should answer with :func:`encode_pong`."""

    payload: bytes = b""

    def __post_init__(self) -> None:
        _check_control_payload("Ping", self.payload)

    def __repr__(self) -> str:
        return f"Ping({_short(self.payload)})"


@dataclass(frozen=True, slots=True, repr=False)
class Pong:
    """A pong from the client (an answer to our ping, or an unsolicited heartbeat)."""

    payload: bytes = b""

    def __post_init__(self) -> None:
        _check_control_payload("Pong", self.payload)

    def __repr__(self) -> str:
        return f"Pong({_short(self.payload)})"


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The client started (or answered) the close handshake.

    ``code`` is None when the close frame carried no payload (RFC 6455 reports
    that as 1005, which must never appear on the wire). The parser ignores
    everything after this event.
    """

    code: int | None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.code is None:
            if self.reason:
                raise ValueError("a close without a code cannot carry a reason")
        elif not _is_wire_close_code(self.code):
            raise ValueError(f"{self.code} is not a close code a peer may send")
        if type(self.reason) is not str:
            raise TypeError(f"close reason must be str, not {type(self.reason).__name__}")


@dataclass(frozen=True, slots=True)
class ParserStatistics:
    """What a :class:`WebSocketParser` holds between feeds, for metrics and debugging."""

    buffered_bytes: int
    message_bytes: int
    close_received: bool
    failed: bool


def _fail(code: int, reason: str) -> WebSocketProtocolError:
    return WebSocketProtocolError(code, reason)


def _parse_close(payload: bytes) -> CloseReceived:
    size = len(payload)
    if size == 0:
        return CloseReceived(None, "")
    if size == 1:
        raise _fail(_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = payload[0] << 8 | payload[1]
    if not _is_wire_close_code(code):
        raise _fail(_PROTOCOL_ERROR, f"close frame with invalid code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(_INVALID_PAYLOAD, f"close reason is not UTF-8: {exc.reason}")
    return CloseReceived(code, reason)


class WebSocketParser:
    """Decode the frames a WebSocket client sends to this server (RFC 6455).

    :meth:`feed` accepts the stream cut anywhere and returns the events that the
    new bytes complete: :class:`Message` (binary only, reassembled),
    :class:`Ping`, :class:`Pong` and :class:`CloseReceived`.

    ``max_message_size`` bounds a whole message (all fragments); a message that
    would exceed it is refused with 1009 from the frame header that crosses
    the bound. ``max_buffer`` bounds what the parser holds between feeds (the
    incomplete frame plus fragments reassembled so far); its default,
    ``max_message_size + 131``, is the most a valid stream can need, so only a
    lower value ever refuses anything (with 1009).

    Raises :class:`WebSocketProtocolError` for any violation; the parser then
    stays failed and every later feed raises the same error.
    """

    __slots__ = (
        "_buf",
        "_close_received",
        "_failure",
        "_fragments",
        "_max_buffer",
        "_max_message_size",
    )

    def __init__(self, *, max_message_size: int = 1 << 20, max_buffer: int | None = None) -> None:
        if type(max_message_size) is not int or max_message_size < 0:
            raise ValueError(f"max_message_size must be an int >= 0, not {max_message_size!r}")
        if max_buffer is None:
            max_buffer = max_message_size + _MAX_CONTROL_FRAME
        elif type(max_buffer) is not int or max_buffer < _MAX_CONTROL_FRAME:
            raise ValueError(
                f"max_buffer must be an int >= {_MAX_CONTROL_FRAME} (one control frame), "
                f"not {max_buffer!r}"
            )
        self._max_message_size = max_message_size
        self._max_buffer = max_buffer
        self._buf = bytearray()
        # The message being reassembled, None between messages. One bytearray, not
        # a list of pieces: a stream of 1-byte fragments then costs its size in
        # memory, not an object per fragment.
        self._fragments: bytearray | None = None
        self._close_received = False
        self._failure: tuple[int, str] | None = None

    @property
    def max_message_size(self) -> int:
        return self._max_message_size

    @property
    def close_received(self) -> bool:
        """True once a close frame arrived; later bytes are ignored."""
        return self._close_received

    def statistics(self) -> ParserStatistics:
        return ParserStatistics(
            buffered_bytes=len(self._buf),
            message_bytes=0 if self._fragments is None else len(self._fragments),
            close_received=self._close_received,
            failed=self._failure is not None,
        )

    def feed(
        self, data: bytes | bytearray | memoryview
    ) -> list[Message | Ping | Pong | CloseReceived]:
        """Consume ``data`` and return the events it completes, in stream order.

        Raises :class:`WebSocketProtocolError` (with the events decoded before the
        bad frame on its ``events``) when the client broke the protocol.
        """
        if self._failure is not None:
            raise WebSocketProtocolError(*self._failure)
        if self._close_received:
            return []
        if type(data) is not bytes and type(data) is not bytearray:
            data = bytes(data)
        buf = self._buf
        if buf:
            buf += data
            view = buf
        else:
            # Nothing pending (the common case): parse the caller's bytes in place.
            view = data
        events: list = []
        append = events.append
        fragments = self._fragments
        max_size = self._max_message_size
        end = len(view)
        pos = 0
        try:
            while True:
                avail = end - pos
                if avail < 2:
                    break
                b0 = view[pos]
                b1 = view[pos + 1]
                opcode = b0 & 0x0F
                length = b1 & 0x7F
                if b0 & 0x70:
                    raise _fail(_PROTOCOL_ERROR, "reserved bits set, but no extension was agreed")
                if not b1 & 0x80:
                    raise _fail(_PROTOCOL_ERROR, "client frame is not masked")
                if opcode & 0x08:
                    if opcode > 0x0A:
                        raise _fail(_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                    if not b0 & 0x80:
                        raise _fail(_PROTOCOL_ERROR, "fragmented control frame")
                    if length > _MAX_CONTROL_PAYLOAD:
                        raise _fail(_PROTOCOL_ERROR, "control frame payload over 125 bytes")
                elif opcode == 0:
                    if fragments is None:
                        raise _fail(_PROTOCOL_ERROR, "continuation frame without a message")
                elif opcode > 0x02:
                    raise _fail(_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
                elif fragments is not None:
                    raise _fail(_PROTOCOL_ERROR, "new data frame before the last message ended")
                if length < 126:
                    start = pos + 6
                elif length == 126:
                    if avail < 4:
                        break
                    length = view[pos + 2] << 8 | view[pos + 3]
                    if length < 126:
                        raise _fail(_PROTOCOL_ERROR, "16-bit length where 7 bits suffice")
                    start = pos + 8
                else:
                    if avail < 10:
                        break
                    length = int.from_bytes(view[pos + 2 : pos + 10], "big")
                    if length >> 63:
                        raise _fail(_PROTOCOL_ERROR, "64-bit length with the high bit set")
                    if length < 0x10000:
                        raise _fail(_PROTOCOL_ERROR, "64-bit length where 16 bits suffice")
                    start = pos + 14
                if opcode == 0x01:
                    raise _fail(_UNSUPPORTED_DATA, "text frames are not accepted (binary only)")
                if not opcode & 0x08:
                    size = length + len(fragments) if opcode == 0 else length
                    if size > max_size:
                        raise _fail(
                            _MESSAGE_TOO_BIG,
                            f"message of at least {size} bytes exceeds the {max_size}-byte limit",
                        )
                stop = start + length
                if stop > end:
                    break
                if length:
                    # One big-int XOR unmasks the whole payload, no per-byte loop.
                    mask = view[start - 4 : start] * ((length + 3) >> 2)
                    payload = (
                        int.from_bytes(view[start:stop], "big")
                        ^ int.from_bytes(mask[:length], "big")
                    ).to_bytes(length, "big")
                else:
                    payload = b""
                pos = stop
                if opcode == 0x02:
                    if b0 & 0x80:
                        append(_message(payload))
                    else:
                        fragments = bytearray(payload)
                elif opcode == 0x00:
                    fragments += payload
                    if b0 & 0x80:
                        append(_message(bytes(fragments)))
                        fragments = None
                elif opcode == 0x09:
                    append(Ping(payload))
                elif opcode == 0x0A:
                    append(Pong(payload))
                else:
                    append(_parse_close(payload))
                    self._close_received = True
                    break
            self._fragments = fragments
            if self._close_received:
                # Whatever follows a close frame is ignored (RFC 6455 section 5.5.1).
                self._buf = bytearray()
                self._fragments = None
                return events
            if view is buf:
                del buf[:pos]
            elif pos < end:
                buf += memoryview(view)[pos:]
            pending = len(buf) if fragments is None else len(buf) + len(fragments)
            if pending > self._max_buffer:
                raise _fail(
                    _MESSAGE_TOO_BIG,
                    f"{pending} bytes pending exceed the {self._max_buffer}-byte buffer limit",
                )
        except WebSocketProtocolError as exc:
            self._failure = (exc.close_code, exc.reason)
            self._buf = bytearray()
            self._fragments = None
            exc.events = tuple(events)
            raise
        return events


# Writer side: server frames are never masked (RFC 6455 section 5.1).

_HEAD7 = struct.Struct("!BB")
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """Return the header of an unmasked server frame of ``length`` payload bytes.

    Lets a caller write header and a large payload separately instead of
    concatenating them. Raises ValueError for an unknown opcode, a negative or
    too-large length, or a control frame that is fragmented or over 125 bytes.
    """
    if opcode not in _KNOWN_OPCODES:
        raise ValueError(f"unknown opcode {opcode!r}")
    if type(length) is not int or not 0 <= length <= _MAX_FRAME_LENGTH:
        raise ValueError(f"frame length must be an int in [0, 2**63), not {length!r}")
    if opcode & 0x08:
        if not fin:
            raise ValueError("control frames cannot be fragmented")
        if length > _MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload is {length} bytes; the limit is 125")
    b0 = opcode | 0x80 if fin else opcode
    if length < 126:
        return _HEAD7.pack(b0, length)
    if length < 0x10000:
        return _HEAD16.pack(b0, 126, length)
    return _HEAD64.pack(b0, 127, length)


def encode_binary(payload: bytes | bytearray | memoryview) -> bytes:
    """Return one unfragmented binary server frame carrying ``payload`` (bytes-like)."""
    length = len(payload)
    if length < 126:
        return _HEAD7.pack(0x82, length) + payload
    if length < 0x10000:
        return _HEAD16.pack(0x82, 126, length) + payload
    return _HEAD64.pack(0x82, 127, length) + payload


def encode_ping(payload: bytes = b"") -> bytes:
    """Return a ping frame; raises TypeError/ValueError unless payload is <= 125 bytes."""
    _check_control_payload("ping", payload)
    return _HEAD7.pack(0x89, len(payload)) + payload


def encode_pong(payload: bytes = b"") -> bytes:
    """Return a pong frame (echo the ping's payload); same limits as :func:`encode_ping`."""
    _check_control_payload("pong", payload)
    return _HEAD7.pack(0x8A, len(payload)) + payload


def encode_close(code: int | None, reason: str = "") -> bytes:
    """Return a close frame with ``code`` and a UTF-8 ``reason``.

    ``code=None`` sends an empty close frame (then ``reason`` must be empty).
    A reason longer than 123 UTF-8 bytes is cut at a character boundary, since
    a close reason is informative and the close must still go out. Raises
    ValueError for a code a peer would reject (see :class:`WebSocketCloseCode`, or
    3000-4999 for applications).
    """
    if code is None:
        if reason:
            raise ValueError("a close frame without a code cannot carry a reason")
        return b"\x88\x00"
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"close code must be an int, not {type(code).__name__}")
    if not _is_wire_close_code(code):
        raise ValueError(f"{code} is not a close code that may be sent")
    encoded = reason.encode("utf-8")
    if len(encoded) > _MAX_CLOSE_REASON:
        encoded = encoded[:_MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return _HEAD7.pack(0x88, 2 + len(encoded)) + code.to_bytes(2, "big") + encoded


# Close handshake (RFC 6455 section 7): a table keyed by (status, what happened).
# We send close -> LOCAL_CLOSING, and the connection is done when theirs arrives;
# they send close -> REMOTE_CLOSING, we owe a close reply, then done. Any pair not
# in the table is the caller's bug (sending close twice, ...) and raises.


class CloseStatus(enum.Enum):
    """Where a connection is in the close handshake."""

    OPEN = "open"
    LOCAL_CLOSING = "we sent close"
    REMOTE_CLOSING = "they sent close"
    CLOSED = "closed"


_SEND = "send close"
_RECEIVE = "receive close"
_CLOSE_TRANSITIONS: dict[tuple[CloseStatus, str], CloseStatus] = {
    (CloseStatus.OPEN, _SEND): CloseStatus.LOCAL_CLOSING,
    (CloseStatus.OPEN, _RECEIVE): CloseStatus.REMOTE_CLOSING,
    (CloseStatus.LOCAL_CLOSING, _RECEIVE): CloseStatus.CLOSED,
    (CloseStatus.REMOTE_CLOSING, _SEND): CloseStatus.CLOSED,
}


class CloseState:
    """Track one connection's close handshake without doing any I/O.

    Call :meth:`close_sent` when a close frame is written and
    :meth:`close_received` on :class:`CloseReceived`. Raises RuntimeError for a
    step the handshake does not allow (the caller's bug).
    """

    __slots__ = ("received_code", "sent_code", "status")

    def __init__(self) -> None:
        self.status = CloseStatus.OPEN
        self.sent_code: int | None = None
        self.received_code: int | None = None

    def __repr__(self) -> str:
        return f"CloseState({self.status.value})"

    def _step(self, event: str) -> CloseStatus:
        try:
            self.status = _CLOSE_TRANSITIONS[self.status, event]
        except KeyError:
            raise RuntimeError(f"cannot {event} when the close handshake is {self.status.value!r}")
        return self.status

    def close_sent(self, code: int | None) -> CloseStatus:
        """Record that we wrote a close frame with ``code``; return the new status."""
        status = self._step(_SEND)
        self.sent_code = code
        return status

    def close_received(self, code: int | None) -> CloseStatus:
        """Record the peer's close frame with ``code``; return the new status."""
        status = self._step(_RECEIVE)
        self.received_code = code
        return status

    @property
    def may_send_close(self) -> bool:
        """True while we have not sent our close frame (no frame of any kind may follow it)."""
        return self.status is CloseStatus.OPEN or self.status is CloseStatus.REMOTE_CLOSING

    @property
    def reply_owed(self) -> bool:
        """True when the peer closed first and we still owe the close reply."""
        return self.status is CloseStatus.REMOTE_CLOSING

    @property
    def reply_code(self) -> int | None:
        """The code to echo in our close reply (RFC 6455 section 5.5.1), None for an empty one."""
        return self.received_code

    @property
    def done(self) -> bool:
        """True when both close frames have passed: the TCP connection may be closed."""
        return self.status is CloseStatus.CLOSED
