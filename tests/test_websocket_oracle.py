"""Oracle test: the server frame parser against wsproto on generated client streams.

Hypothesis builds valid client streams (fragmented binary messages with pings
and pongs between fragments, closes, random masks), breaks zero to two frames in
place (unmasked, RSV bits, unknown opcodes, text, misplaced continuation, FIN
flipped, oversized, long control frames, non-minimal or high-bit lengths, bad
close codes and reasons), cuts the byte stream at random points and feeds it to
our parser and to a wsproto server connection taken through a real opening
handshake. Both must report the same messages, the same control events and the
same error code. A fixed stream broken at every position in every one of those
ways checks the same rule table deterministically, whatever the profile.

Where the two legitimately differ, the difference is mapped here, explicitly:

* Text frames: wsproto accepts them; this server is binary-only and refuses the
  first text frame with 1003. A ``TextMessage`` from wsproto therefore maps to a
  1003 error. Generated text payloads are ASCII so that wsproto cannot fail the
  frame with 1007 first (it decodes text before it reports it).
* Message size: wsproto has no limit of its own. The oracle applies one on top
  of it exactly as trio-websocket does (sum the data of the message's chunks;
  more than ``max_message_size`` is 1009). Our parser refuses from the header;
  the codes agree because generated oversized frames carry their whole payload,
  so wsproto sees the bytes cross the limit. (A huge declared length with no
  payload behind it is covered by the unit tests; wsproto would just wait.)
* An empty close frame: wsproto reports code 1005 (NO_STATUS_RCVD); we report
  ``code=None``.
* A protocol error: wsproto yields ``CloseConnection`` while its state stays
  OPEN; a real close from the peer moves it to REMOTE_CLOSING.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Request,
    TextMessage,
)
from wsproto.events import Ping as WsPing
from wsproto.events import Pong as WsPong

from protocol._websocket import (
    CloseReceived,
    Message,
    Ping,
    Pong,
    WebSocketParser,
    WebSocketProtocolError,
)

UPGRADE_REQUEST = (
    b"GET /play HTTP/1.1\r\n"
    b"Host: relay.example\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass(frozen=True)
class RawFrame:
    """One client frame, possibly broken on purpose."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    mask: bytes = b"\x00\x00\x00\x00"
    length_form: str = "min"  # "min", "16", "64" (non-minimal) or "msb" (64-bit high bit)

    def serialize(self) -> bytes:
        b0 = (0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode
        mask_bit = 0x80 if self.masked else 0
        size = len(self.payload)
        form = self.length_form
        if form == "min":
            form = "7" if size < 126 else "16" if size < 65536 else "64"
        if form == "msb":
            # A length no one can send: only its header goes out.
            return bytes([b0, mask_bit | 127]) + struct.pack("!Q", (1 << 63) | size)
        if form == "7":
            head = bytes([b0, mask_bit | size])
        elif form == "16":
            head = bytes([b0, mask_bit | 126]) + struct.pack("!H", size)
        else:
            head = bytes([b0, mask_bit | 127]) + struct.pack("!Q", size)
        if not self.masked:
            return head + self.payload
        masked = bytes(b ^ self.mask[i % 4] for i, b in enumerate(self.payload))
        return head + self.mask + masked


# --- strategies ----------------------------------------------------------------------

masks = st.binary(min_size=4, max_size=4)
control_payloads = st.binary(max_size=125)


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999]
# Reserved, local-only, unassigned or out of range: a client must not send these.
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535]


@st.composite
def control_frames(draw, *, close: bool = True) -> RawFrame:
    """A valid ping, pong or (if ``close``) close frame."""
    kind = draw(st.sampled_from(["ping", "pong", "close"] if close else ["ping", "pong"]))
    if kind != "close":
        return RawFrame(PING if kind == "ping" else PONG, draw(control_payloads), mask=draw(masks))
    code = draw(st.one_of(st.none(), st.sampled_from(VALID_CLOSE_CODES), st.integers(3000, 4999)))
    payload = b""
    if code is not None:
        reason = draw(st.text(max_size=20)).encode("utf-8")[:123]
        payload = struct.pack("!H", code) + reason
    return RawFrame(CLOSE, payload, mask=draw(masks))


@st.composite
def binary_messages(draw, max_size: int) -> list[RawFrame]:
    """A binary message cut into fragments, pings and pongs between the fragments."""
    payload = draw(st.binary(max_size=max_size + 8))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    frames: list[RawFrame] = []
    for i, piece in enumerate(pieces):
        if i and draw(st.integers(0, 3)) == 0:
            frames.append(draw(control_frames(close=False)))
        opcode = BINARY if i == 0 else CONT
        frames.append(RawFrame(opcode, piece, fin=i == len(pieces) - 1, mask=draw(masks)))
    return frames


UNKNOWN_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]
BAD_UTF8_REASONS = [b"\xff", b"bad\xc3", b"\xed\xa0\x80", b"\xc0\x80"]


def defects(frame: RawFrame, max_size: int) -> list[tuple[str, RawFrame]]:
    """Every way this test breaks ``frame``, named (some are harmless in some contexts)."""
    variants = [
        ("unmasked", replace(frame, masked=False)),
        *((f"rsv={rsv}", replace(frame, rsv=rsv)) for rsv in range(1, 8)),
        *((f"opcode={op:#x}", replace(frame, opcode=op)) for op in UNKNOWN_OPCODES),
        # ASCII text, so that wsproto cannot fail it with 1007 before reporting it.
        ("text", replace(frame, opcode=TEXT, payload=b"t" * len(frame.payload))),
        ("text_oversized", replace(frame, opcode=TEXT, payload=b"t" * (max_size + 5))),
        ("to_continuation", replace(frame, opcode=CONT)),
        ("to_binary", replace(frame, opcode=BINARY)),
        ("flip_fin", replace(frame, fin=not frame.fin)),
        ("oversized", replace(frame, payload=b"o" * (max_size + 1))),
        ("oversized_more", replace(frame, payload=b"o" * (max_size + 33))),
        ("control_126", replace(frame, payload=frame.payload.ljust(126, b"c")[:126])),
        ("length_16", replace(frame, length_form="16")),
        ("length_64", replace(frame, length_form="64")),
        ("length_msb", replace(frame, length_form="msb")),
        ("close_one_byte", replace(frame, opcode=CLOSE, payload=b"\x03")),
        *(
            (f"close_code={code}", replace(frame, opcode=CLOSE, payload=struct.pack("!H", code)))
            for code in INVALID_CLOSE_CODES
        ),
        *(
            (f"close_reason={reason!r}", replace(frame, opcode=CLOSE, payload=b"\x03\xe8" + reason))
            for reason in BAD_UTF8_REASONS
        ),
    ]
    return variants


@st.composite
def client_streams(draw) -> tuple[int, list[RawFrame]]:
    """A valid client stream, then zero to two of its frames broken in place."""
    max_size = draw(st.sampled_from([0, 16, 64, 300]))
    items = draw(
        st.lists(
            st.one_of(binary_messages(max_size), control_frames().map(lambda f: [f])),
            min_size=1,
            max_size=6,
        )
    )
    frames = [frame for item in items for frame in item]
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        i = draw(st.integers(0, len(frames) - 1))
        _, frames[i] = draw(st.sampled_from(defects(frames[i], max_size)))
    return max_size, frames


# --- the two parsers -------------------------------------------------------------------


def run_ours(chunks: list[bytes], max_size: int) -> tuple[list, int | None]:
    parser = WebSocketParser(max_message_size=max_size)
    events: list = []
    for chunk in chunks:
        try:
            new = parser.feed(chunk)
        except WebSocketProtocolError as exc:
            events += [normalize(e) for e in exc.events]
            return events, int(exc.close_code)
        events += [normalize(e) for e in new]
    return events, None


def normalize(event) -> tuple:
    if isinstance(event, Message):
        return ("message", event.data)
    if isinstance(event, Ping):
        return ("ping", event.payload)
    if isinstance(event, Pong):
        return ("pong", event.payload)
    assert isinstance(event, CloseReceived)
    return ("close", event.code, event.reason)


def upgraded_wsproto_server() -> WSConnection:
    ws = WSConnection(ConnectionType.SERVER)
    ws.receive_data(UPGRADE_REQUEST)
    (request,) = ws.events()
    assert isinstance(request, Request)
    response = ws.send(AcceptConnection())
    assert response.startswith(b"HTTP/1.1 101 ")
    assert ws.state is ConnectionState.OPEN
    return ws


def run_wsproto(chunks: list[bytes], max_size: int) -> tuple[list, int | None]:
    ws = upgraded_wsproto_server()
    events: list = []
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        ws.receive_data(chunk)
        for event in ws.events():
            if isinstance(event, TextMessage):
                return events, 1003  # binary-only server: see the module docstring
            if isinstance(event, BytesMessage):
                # The size limit trio-websocket puts on top of wsproto.
                size += len(event.data)
                parts.append(bytes(event.data))
                if size > max_size:
                    return events, 1009
                if event.message_finished:
                    events.append(("message", b"".join(parts)))
                    parts, size = [], 0
            elif isinstance(event, WsPing):
                events.append(("ping", bytes(event.payload)))
            elif isinstance(event, WsPong):
                events.append(("pong", bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.OPEN:
                    return events, int(event.code)  # ParseFailed
                code = None if event.code == 1005 else int(event.code)
                events.append(("close", code, event.reason))
                return events, None
            else:
                raise AssertionError(f"unexpected wsproto event {event!r}")
    return events, None


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p for p in points if 0 < p < len(stream)})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


# --- the oracle --------------------------------------------------------------------------


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_streams(), st.data())
def test_parser_agrees_with_wsproto(case, data):
    max_size, frames = case
    stream = b"".join(frame.serialize() for frame in frames)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    chunks = cut(stream, points)
    ours = run_ours(chunks, max_size)
    theirs = run_wsproto(chunks, max_size)
    assert ours == theirs
    # The cut points must not matter to our parser either.
    assert run_ours([stream], max_size) == ours


@settings(deadline=None)
@given(st.lists(binary_messages(300), min_size=1, max_size=5), st.data())
def test_valid_streams_lose_nothing(messages, data):
    """On valid input both sides must deliver every message, whatever the cuts."""
    frames = [frame for message in messages for frame in message]
    stream = b"".join(frame.serialize() for frame in frames)
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=20), label="cuts")
    ours = run_ours(cut(stream, points), 1 << 20)
    assert ours == run_wsproto(cut(stream, points), 1 << 20)
    assert ours[1] is None
    delivered = [event[1] for event in ours[0] if event[0] == "message"]
    expected = [
        b"".join(f.payload for f in message if f.opcode in (BINARY, CONT)) for message in messages
    ]
    assert delivered == expected


# A fixed valid stream (a fragmented message with control frames inside, a whole
# message, a close) broken at every position in every way: the rule table checked
# against wsproto deterministically, whatever the Hypothesis profile.
TABLE_MAX_SIZE = 24
TABLE_STREAM = [
    RawFrame(BINARY, b"abc", fin=False, mask=b"\x01\x02\x03\x04"),
    RawFrame(PING, b"ping", mask=b"\xff\x00\xff\x00"),
    RawFrame(CONT, b"", fin=False, mask=b"\x10\x20\x30\x40"),
    RawFrame(PONG, b"", mask=b"\x0a\x0b\x0c\x0d"),
    RawFrame(CONT, b"defgh", mask=b"\x99\x88\x77\x66"),
    RawFrame(BINARY, bytes(range(24)), mask=b"\x5a\xa5\x5a\xa5"),
    RawFrame(CLOSE, b"\x03\xe8bye", mask=b"\xde\xad\xbe\xef"),
]
TABLE_CASES = [
    (f"{position}:{name}", position, broken)
    for position, frame in enumerate(TABLE_STREAM)
    for name, broken in defects(frame, TABLE_MAX_SIZE)
]


def test_table_stream_is_valid():
    stream = b"".join(f.serialize() for f in TABLE_STREAM)
    expected = [
        ("ping", b"ping"),
        ("pong", b""),
        ("message", b"abcdefgh"),
        ("message", bytes(range(24))),
        ("close", 1000, "bye"),
    ]
    assert run_ours([stream], TABLE_MAX_SIZE) == run_wsproto([stream], TABLE_MAX_SIZE)
    assert run_ours([stream], TABLE_MAX_SIZE) == (expected, None)


@pytest.mark.parametrize(
    ("position", "broken"), [case[1:] for case in TABLE_CASES], ids=[c[0] for c in TABLE_CASES]
)
def test_every_defect_at_every_position_agrees_with_wsproto(position, broken):
    frames = [*TABLE_STREAM]
    frames[position] = broken
    stream = b"".join(f.serialize() for f in frames)
    whole = run_ours([stream], TABLE_MAX_SIZE)
    assert whole == run_wsproto([stream], TABLE_MAX_SIZE)
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    assert run_ours(bytewise, TABLE_MAX_SIZE) == whole
    assert run_wsproto(bytewise, TABLE_MAX_SIZE) == whole


# Falsifying examples found once become named regressions here.


def test_regression_text_frame_after_complete_message_maps_to_1003():
    frames = [RawFrame(BINARY, b"ok", mask=b"abcd"), RawFrame(TEXT, b"hi", mask=b"efgh")]
    stream = b"".join(f.serialize() for f in frames)
    assert run_ours([stream], 64) == run_wsproto([stream], 64) == ([("message", b"ok")], 1003)


def test_regression_oversized_continuation_after_ping():
    frames = [
        RawFrame(BINARY, b"a" * 10, fin=False, mask=b"abcd"),
        RawFrame(PING, b"p", mask=b"wxyz"),
        RawFrame(CONT, b"b" * 10, mask=b"abcd"),
    ]
    stream = b"".join(f.serialize() for f in frames)
    expected = ([("ping", b"p")], 1009)
    assert run_ours([stream], 16) == run_wsproto([stream], 16) == expected
