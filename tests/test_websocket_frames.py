"""Unit tests for the server-side RFC 6455 frame layer: every parser rule, fed whole,
byte by byte and with a second frame glued on; writer output parsed back."""

from __future__ import annotations

import os
import struct
import tracemalloc

import pytest
from wsproto.frame_protocol import FrameProtocol
from wsproto.frame_protocol import Opcode as WsOpcode

from protocol._websocket import (
    CloseReceived,
    CloseState,
    CloseStatus,
    Message,
    Opcode,
    Ping,
    Pong,
    WebSocketCloseCode,
    WebSocketParser,
    WebSocketProtocolError,
    encode_binary,
    encode_close,
    encode_ping,
    encode_pong,
    frame_header,
)

MASK = b"\x37\xfa\x21\x3d"
GLUE_PAYLOAD = b"glue"


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    mask: bytes = MASK,
    length_form: str = "min",
    declared: int | None = None,
) -> bytes:
    """Serialize a client frame by hand, independently of the module under test.

    ``length_form`` is "min", "16" or "64" (forcing a non-minimal encoding);
    ``declared`` overrides the length written in the header.
    """
    length = len(payload) if declared is None else declared
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if length_form == "min":
        length_form = "7" if length < 126 else "16" if length < 65536 else "64"
    if length_form == "7":
        head = bytes([b0, mask_bit | length])
    elif length_form == "16":
        head = bytes([b0, mask_bit | 126]) + struct.pack("!H", length)
    else:
        head = bytes([b0, mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


GLUE = client_frame(Opcode.PING, GLUE_PAYLOAD, mask=b"\x01\x02\x03\x04")


def feed_chunks(parser: WebSocketParser, chunks) -> tuple[list, int | None]:
    """Feed chunks until done or an error; return (events, close code or None)."""
    events: list = []
    for chunk in chunks:
        try:
            events += parser.feed(chunk)
        except WebSocketProtocolError as exc:
            events += exc.events
            return events, exc.close_code
    return events, None


def outcome(raw: bytes, **parser_kw) -> tuple[list, int | None]:
    """Parse ``raw`` whole, byte by byte, and with a ping glued on; all must agree.

    The glued ping must show up after the other events unless the stream ended
    in an error or a close (after which input is ignored).
    """
    whole = feed_chunks(WebSocketParser(**parser_kw), [raw])
    bytewise = feed_chunks(WebSocketParser(**parser_kw), [raw[i : i + 1] for i in range(len(raw))])
    glued_events, glued_code = feed_chunks(WebSocketParser(**parser_kw), [raw + GLUE])
    assert bytewise == whole
    events, code = whole
    ended = code is not None or (events and isinstance(events[-1], CloseReceived))
    if ended:
        assert (glued_events, glued_code) == whole
    else:
        assert glued_code is None
        assert glued_events == [*events, Ping(GLUE_PAYLOAD)]
    return whole


def error_code(raw: bytes, **parser_kw) -> int | None:
    return outcome(raw, **parser_kw)[1]


# --- valid streams -----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 40, 125, 126, 1000, 65535, 65536])
def test_binary_message_of_each_length_form(size):
    payload = os.urandom(size)
    raw = client_frame(Opcode.BINARY, payload)
    if size > 2000:
        # Byte-by-byte feeding of 64 KiB is slow; whole and in 3 cuts suffices.
        events, code = feed_chunks(WebSocketParser(), [raw[:1], raw[1:9], raw[9:]])
        assert (events, code) == ([Message(payload)], None)
        assert feed_chunks(WebSocketParser(), [raw]) == ([Message(payload)], None)
    else:
        assert outcome(raw) == ([Message(payload)], None)


def test_fragmented_message_with_control_frames_between_fragments():
    raw = (
        client_frame(Opcode.BINARY, b"ab", fin=False)
        + client_frame(Opcode.PING, b"p1")
        + client_frame(Opcode.CONTINUATION, b"", fin=False)
        + client_frame(Opcode.PONG, b"p2")
        + client_frame(Opcode.CONTINUATION, b"cd", fin=False)
        + client_frame(Opcode.CONTINUATION, b"ef")
    )
    assert outcome(raw) == ([Ping(b"p1"), Pong(b"p2"), Message(b"abcdef")], None)
    parser = WebSocketParser()
    parser.feed(raw[:-8])
    assert parser.statistics().message_bytes == 4
    parser.feed(raw[-8:])
    assert parser.statistics().message_bytes == 0


def test_many_frames_in_one_chunk_keep_order():
    payloads = [os.urandom(n) for n in range(0, 60, 3)]
    raw = b"".join(client_frame(Opcode.BINARY, p, mask=os.urandom(4)) for p in payloads)
    assert outcome(raw) == ([Message(p) for p in payloads], None)


def test_partial_frame_is_kept_until_complete():
    parser = WebSocketParser()
    raw = client_frame(Opcode.BINARY, b"x" * 300)
    assert parser.feed(raw[:100]) == []
    assert parser.statistics().buffered_bytes == 100
    assert parser.feed(raw[100:] + raw[:3]) == [Message(b"x" * 300)]
    assert parser.statistics().buffered_bytes == 3


def test_feed_accepts_bytearray_and_memoryview():
    raw = client_frame(Opcode.BINARY, b"hello")
    assert WebSocketParser().feed(bytearray(raw)) == [Message(b"hello")]
    assert WebSocketParser().feed(memoryview(raw)) == [Message(b"hello")]
    parser = WebSocketParser()
    assert parser.feed(bytearray(raw[:4])) == []
    assert parser.feed(memoryview(raw)[4:]) == [Message(b"hello")]


def test_empty_feed_is_harmless():
    parser = WebSocketParser()
    assert parser.feed(b"") == []
    assert parser.feed(client_frame(Opcode.PING)) == [Ping(b"")]


# --- frame-level protocol errors ------------------------------------------------


def test_unmasked_client_frame_is_a_protocol_error():
    assert error_code(client_frame(Opcode.BINARY, b"hi", masked=False)) == 1002
    assert error_code(client_frame(Opcode.PING, b"", masked=False)) == 1002


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_are_a_protocol_error(rsv):
    assert error_code(client_frame(Opcode.BINARY, b"hi", rsv=rsv)) == 1002
    assert error_code(client_frame(Opcode.PING, b"", rsv=rsv)) == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_are_a_protocol_error(opcode):
    assert error_code(client_frame(opcode, b"hi")) == 1002


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frame_must_not_be_fragmented(opcode):
    assert error_code(client_frame(opcode, b"", fin=False)) == 1002


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frame_payload_over_125_is_a_protocol_error(opcode):
    assert error_code(client_frame(opcode, b"\x03\xe8" + b"x" * 124)) == 1002
    # Detected from the 2-byte header, before the extended length arrives.
    with pytest.raises(WebSocketProtocolError) as info:
        WebSocketParser().feed(client_frame(opcode, b"x" * 126)[:2])
    assert info.value.close_code == 1002


def test_control_frame_of_exactly_125_bytes_is_fine():
    assert outcome(client_frame(Opcode.PING, b"x" * 125)) == ([Ping(b"x" * 125)], None)


def test_continuation_without_a_message_is_a_protocol_error():
    assert error_code(client_frame(Opcode.CONTINUATION, b"x")) == 1002
    raw = client_frame(Opcode.BINARY, b"a") + client_frame(Opcode.CONTINUATION, b"b")
    assert outcome(raw) == ([Message(b"a")], 1002)


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.TEXT])
def test_new_data_frame_mid_message_is_a_protocol_error(opcode):
    raw = client_frame(Opcode.BINARY, b"a", fin=False) + client_frame(opcode, b"b")
    assert error_code(raw) == 1002


@pytest.mark.parametrize("form", ["16", "64"])
def test_non_minimal_length_encoding_is_a_protocol_error(form):
    # wsproto refuses these too; RFC 6455 5.2 says the minimal encoding MUST be used.
    assert error_code(client_frame(Opcode.BINARY, b"x" * 10, length_form=form)) == 1002
    assert error_code(client_frame(Opcode.BINARY, b"x" * 200, length_form="64")) == 1002


def test_64_bit_length_with_high_bit_set_is_a_protocol_error():
    raw = client_frame(Opcode.BINARY, declared=(1 << 63) + 5, length_form="64")
    assert error_code(raw) == 1002


# --- binary-only policy and size limits -------------------------------------------


def test_text_frame_is_refused_with_1003_from_its_header():
    assert error_code(client_frame(Opcode.TEXT, b"hello")) == 1003
    assert error_code(client_frame(Opcode.TEXT, b"")) == 1003
    # The two header bytes are enough: the payload is never buffered.
    with pytest.raises(WebSocketProtocolError) as info:
        WebSocketParser().feed(client_frame(Opcode.TEXT, b"x" * 100)[:2])
    assert info.value.close_code == WebSocketCloseCode.UNSUPPORTED_DATA


def test_rule_order_when_a_frame_breaks_several_rules():
    # Protocol errors (1002) come before the text refusal (1003), which comes before
    # the size limit (1009): the same order wsproto plus a size limit yields.
    assert error_code(client_frame(Opcode.TEXT, b"x" * 80), max_message_size=10) == 1003
    assert error_code(client_frame(Opcode.TEXT, b"x", length_form="16")) == 1002
    assert error_code(client_frame(Opcode.TEXT, b"x", rsv=4)) == 1002
    assert error_code(
        client_frame(Opcode.BINARY, b"x" * 80, masked=False), max_message_size=10
    ) == (1002)
    mid_message = client_frame(Opcode.BINARY, b"a", fin=False)
    assert error_code(mid_message + client_frame(Opcode.TEXT, b"b" * 80), max_message_size=10) == (
        1002
    )


def test_message_at_the_size_limit_passes_and_one_byte_more_is_1009():
    assert outcome(client_frame(Opcode.BINARY, b"x" * 50), max_message_size=50)[1] is None
    assert error_code(client_frame(Opcode.BINARY, b"x" * 51), max_message_size=50) == 1009


def test_fragmented_message_over_the_limit_is_1009_at_the_crossing_header():
    first = client_frame(Opcode.BINARY, b"x" * 30, fin=False)
    ping = client_frame(Opcode.PING, b"between")
    crossing = client_frame(Opcode.CONTINUATION, b"y" * 21)
    assert outcome(first + ping + crossing, max_message_size=50) == ([Ping(b"between")], 1009)
    parser = WebSocketParser(max_message_size=50)
    assert parser.feed(first) == []
    with pytest.raises(WebSocketProtocolError) as info:
        parser.feed(crossing[:2])
    assert info.value.close_code == WebSocketCloseCode.MESSAGE_TOO_BIG


@pytest.mark.parametrize("declared", [(1 << 20) + 1, 1 << 40, (1 << 63) - 1])
def test_huge_declared_length_is_refused_from_the_header_without_allocating(declared):
    header = client_frame(Opcode.BINARY, declared=declared, length_form="64")
    parser = WebSocketParser()
    tracemalloc.start()
    try:
        with pytest.raises(WebSocketProtocolError) as info:
            parser.feed(header + b"z" * 64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.close_code == 1009
    assert peak < 64 * 1024
    assert parser.statistics().buffered_bytes == 0


@pytest.mark.parametrize("piece", [b"", b"x"])
def test_a_flood_of_tiny_fragments_costs_its_size_not_an_object_each(piece):
    start = client_frame(Opcode.BINARY, piece, fin=False)
    flood = start + client_frame(Opcode.CONTINUATION, piece, fin=False) * 20000
    parser = WebSocketParser()
    tracemalloc.start()
    try:
        assert parser.feed(flood) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parser.statistics().message_bytes == 20001 * len(piece)
    assert peak < 64 * 1024  # an object per fragment would take ~160 KiB to ~1 MiB
    assert parser.feed(client_frame(Opcode.CONTINUATION, b"!")) == [Message(piece * 20001 + b"!")]


def test_max_buffer_below_message_size_refuses_a_pending_message_with_1009():
    parser = WebSocketParser(max_message_size=1000, max_buffer=200)
    raw = client_frame(Opcode.BINARY, b"x" * 500)
    assert parser.feed(raw[:150]) == []
    with pytest.raises(WebSocketProtocolError) as info:
        parser.feed(raw[150:300])
    assert info.value.close_code == 1009
    # The same message arriving in one feed is never held, so it passes.
    assert WebSocketParser(max_message_size=1000, max_buffer=200).feed(raw) == [Message(b"x" * 500)]


@pytest.mark.parametrize(
    "kw", [{"max_message_size": -1}, {"max_buffer": 10}, {"max_message_size": 1.5}]
)
def test_parser_arguments_are_validated(kw):
    with pytest.raises(ValueError):
        WebSocketParser(**kw)


# --- close frames ------------------------------------------------------------------


def test_empty_close_has_no_code():
    assert outcome(client_frame(Opcode.CLOSE)) == ([CloseReceived(None, "")], None)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1010, 1011, 1012, 1013, 3000, 4999])
def test_valid_close_codes_are_reported(code):
    raw = client_frame(Opcode.CLOSE, struct.pack("!H", code) + "bye ✓".encode())
    assert outcome(raw) == ([CloseReceived(code, "bye ✓")], None)


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2000, 2999, 5000, 65535]
)
def test_invalid_close_codes_are_a_protocol_error(code):
    assert error_code(client_frame(Opcode.CLOSE, struct.pack("!H", code))) == 1002


def test_one_byte_close_payload_is_a_protocol_error():
    assert error_code(client_frame(Opcode.CLOSE, b"\x03")) == 1002


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xc3", b"\xed\xa0\x80"])
def test_close_reason_that_is_not_utf8_is_1007(reason):
    assert error_code(client_frame(Opcode.CLOSE, b"\x03\xe8" + reason)) == 1007


def test_everything_after_a_close_is_ignored():
    parser = WebSocketParser()
    raw = client_frame(Opcode.BINARY, b"a") + client_frame(Opcode.CLOSE, b"\x03\xe8")
    events = parser.feed(raw + b"\x00garbage" + client_frame(Opcode.BINARY, b"b"))
    assert events == [Message(b"a"), CloseReceived(1000, "")]
    assert parser.close_received
    assert parser.feed(client_frame(Opcode.TEXT, b"still ignored")) == []
    assert parser.statistics().buffered_bytes == 0


def test_close_mid_fragmented_message_drops_the_partial_message():
    raw = client_frame(Opcode.BINARY, b"a", fin=False) + client_frame(Opcode.CLOSE, b"\x03\xe9")
    assert outcome(raw) == ([CloseReceived(1001, "")], None)


# --- error reporting ---------------------------------------------------------------


def test_events_before_an_error_in_the_same_feed_are_not_lost():
    good = client_frame(Opcode.BINARY, b"one") + client_frame(Opcode.PING, b"two")
    with pytest.raises(WebSocketProtocolError) as info:
        WebSocketParser().feed(good + client_frame(Opcode.BINARY, b"bad", masked=False))
    assert info.value.events == (Message(b"one"), Ping(b"two"))
    assert "not masked" in str(info.value)
    assert "1002" in str(info.value)


def test_parser_stays_failed_after_an_error():
    parser = WebSocketParser()
    with pytest.raises(WebSocketProtocolError):
        parser.feed(client_frame(Opcode.TEXT, b"x"))
    assert parser.statistics().failed
    with pytest.raises(WebSocketProtocolError) as info:
        parser.feed(client_frame(Opcode.BINARY, b"fine"))
    assert info.value.close_code == 1003
    assert info.value.events == ()


# --- events ------------------------------------------------------------------------


def test_events_validate_and_print_short():
    with pytest.raises(ValueError):
        Ping(b"x" * 126)
    with pytest.raises(TypeError):
        Pong("text")
    with pytest.raises(TypeError):
        Message(bytearray(b"x"))
    with pytest.raises(ValueError):
        CloseReceived(1005)
    with pytest.raises(ValueError):
        CloseReceived(None, "reason without code")
    assert repr(Message(b"x" * 1000)) == "Message(<1000 bytes>)"
    assert repr(Ping(b"hi")) == "Ping(b'hi')"
    with pytest.raises(AttributeError):
        Message(b"").data = b"x"  # frozen


# --- writer --------------------------------------------------------------------------


def as_client_frame(server_frame: bytes, mask: bytes = MASK) -> bytes:
    """Re-encode an unmasked server frame as the masked frame a client would send."""
    b0, b1 = server_frame[0], server_frame[1]
    size = b1 & 0x7F
    head_len = 2 + {126: 2, 127: 8}.get(size, 0)
    head = bytes([b0, b1 | 0x80]) + server_frame[2:head_len]
    payload = server_frame[head_len:]
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def wsproto_client_frames(data: bytes) -> list:
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    return list(proto.received_frames())


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_encode_binary_round_trips_through_both_parsers(size):
    payload = os.urandom(size)
    wire = encode_binary(payload)
    assert wire[1] & 0x80 == 0  # server frames are never masked
    (frame,) = wsproto_client_frames(wire)
    assert (frame.opcode, bytes(frame.payload), frame.message_finished) == (
        WsOpcode.BINARY,
        payload,
        True,
    )
    assert WebSocketParser(max_message_size=1 << 17).feed(as_client_frame(wire)) == [
        Message(payload)
    ]
    assert encode_binary(bytearray(payload)) == wire
    assert encode_binary(memoryview(payload)) == wire


def test_control_encoders_round_trip():
    wire = encode_ping(b"p") + encode_pong(b"q" * 125) + encode_close(4000, "done") + encode_ping()
    events = WebSocketParser().feed(b"".join(as_client_frame(f) for f in split_frames(wire)))
    assert events == [Ping(b"p"), Pong(b"q" * 125), CloseReceived(4000, "done")]
    frames = wsproto_client_frames(wire)
    assert [f.opcode for f in frames] == [WsOpcode.PING, WsOpcode.PONG, WsOpcode.CLOSE]
    assert frames[2].payload == (4000, "done")


def split_frames(wire: bytes) -> list[bytes]:
    """Cut a stream of unmasked short server frames into frames."""
    frames = []
    while wire:
        n = 2 + (wire[1] & 0x7F)
        frames.append(wire[:n])
        wire = wire[n:]
    return frames


def test_frame_header_lets_a_caller_write_header_and_payload_apart():
    payload = os.urandom(70000)
    assert frame_header(Opcode.BINARY, len(payload)) + payload == encode_binary(payload)
    part1 = frame_header(Opcode.BINARY, 3, fin=False) + b"abc"
    part2 = frame_header(Opcode.CONTINUATION, 2) + b"de"
    frames = wsproto_client_frames(part1 + part2)
    assert b"".join(bytes(f.payload) for f in frames) == b"abcde"
    assert frames[-1].message_finished
    assert WebSocketParser().feed(as_client_frame(part1) + as_client_frame(part2)) == [
        Message(b"abcde")
    ]


@pytest.mark.parametrize(
    ("args", "kw"),
    [
        ((3, 1), {}),
        ((Opcode.BINARY, -1), {}),
        ((Opcode.BINARY, 1 << 63), {}),
        ((Opcode.PING, 126), {}),
        ((Opcode.CLOSE, 2), {"fin": False}),
    ],
)
def test_frame_header_rejects_bad_arguments(args, kw):
    with pytest.raises(ValueError):
        frame_header(*args, **kw)


def test_encode_close_validates_and_truncates():
    assert encode_close(None) == b"\x88\x00"
    assert encode_close(WebSocketCloseCode.NORMAL) == b"\x88\x02\x03\xe8"
    with pytest.raises(ValueError):
        encode_close(None, "reason")
    for bad in (1005, 1006, 999, 2000, 5000):
        with pytest.raises(ValueError):
            encode_close(bad)
    with pytest.raises(TypeError):
        encode_close("1000")
    wire = encode_close(1000, "é" * 100)  # 200 bytes of UTF-8, cut on a boundary
    (event,) = WebSocketParser().feed(as_client_frame(wire))
    assert event.reason == "é" * 61
    assert len(wire) - 4 == 122


def test_ping_and_pong_payloads_are_checked():
    with pytest.raises(ValueError):
        encode_ping(b"x" * 126)
    with pytest.raises(TypeError):
        encode_pong("text")


def test_close_codes_agree_with_the_protocol_error_family():
    from protocol._errors import CloseCode

    shared = set(CloseCode.__members__) & set(WebSocketCloseCode.__members__)
    assert shared >= {"NORMAL", "PROTOCOL_ERROR", "UNSUPPORTED_DATA", "MESSAGE_TOO_BIG"}
    for name in shared:
        assert CloseCode[name] == WebSocketCloseCode[name]


# --- close handshake -------------------------------------------------------------------


def test_close_state_when_we_close_first():
    state = CloseState()
    assert state.may_send_close and not state.reply_owed
    assert state.close_sent(WebSocketCloseCode.GOING_AWAY) is CloseStatus.LOCAL_CLOSING
    assert not state.may_send_close and not state.done
    assert state.close_received(1000) is CloseStatus.CLOSED
    assert state.done and (state.sent_code, state.received_code) == (1001, 1000)


def test_close_state_when_they_close_first():
    state = CloseState()
    assert state.close_received(4001) is CloseStatus.REMOTE_CLOSING
    assert state.reply_owed and state.reply_code == 4001 and state.may_send_close
    assert state.close_sent(state.reply_code) is CloseStatus.CLOSED
    assert state.done and not state.reply_owed


@pytest.mark.parametrize(
    ("steps", "bad"),
    [
        (["sent"], "sent"),
        (["received"], "received"),
        (["sent", "received"], "sent"),
        (["sent", "received"], "received"),
        (["received", "sent"], "received"),
        (["received", "sent"], "sent"),
    ],
)
def test_close_state_refuses_steps_the_handshake_does_not_allow(steps, bad):
    state = CloseState()
    for step in steps:
        getattr(state, f"close_{step}")(1000)
    before = state.status
    with pytest.raises(RuntimeError):
        getattr(state, f"close_{bad}")(1000)
    assert state.status is before
