"""Fuzz of both decoders: arbitrary bytes, mutated valid encodings and random wire
arrays must give a frame or a RemoteProtocolError, quickly and in little memory.

Run longer with ``HYPOTHESIS_PROFILE=fuzz``.
"""

from __future__ import annotations

import time
import tracemalloc

import cbor2
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    DELETE,
    FRAME_TYPES,
    CborCodec,
    CloseCode,
    Codec,
    Create,
    Error,
    Event,
    Frame,
    Hello,
    Input,
    InvalidDelta,
    Join,
    Joined,
    Leave,
    MsgpackCodec,
    Ping,
    Pong,
    QuickJoin,
    RemoteProtocolError,
    Replace,
    Rpc,
    RpcResult,
    Signal,
    State,
    Welcome,
    apply,
    diff,
    f32,
    quantize,
)

MSGPACK = MsgpackCodec()
CBOR = CborCodec()
BOTH = [MSGPACK, CBOR]

MAX_SECONDS = 1.0  # per decode; generous for a shared machine, a hang takes far longer
MAX_PEAK_SMALL = 1 << 20  # bytes allocated while decoding an input under 4 KiB

BASE = {
    "game": {"phase": "play", "round": 3},
    "players": {"p1": {"x": f32(1.5), "y": 2.0, "hp": 100}, "p2": {"x": 0.0, "y": 0.0, "hp": 90}},
    "room": {"code": "ABCD", "host": "p1"},
}
MOVED = {
    **BASE,
    "players": {"p1": {"x": f32(2.5), "y": 2.0, "hp": 99}, "p2": BASE["players"]["p2"]},
}

# Valid frames of every type, the seeds that the mutations start from.
CORPUS_FRAMES = [
    Hello(1, "v4.public.ticket", None, "roomwire-py/0.1"),
    Hello(1),
    Welcome(1, "msgpack", "p1", {"name": "relay", "tick_rate": 20, "limits": {"depth": 16}}),
    Create(1, "quiz8", {"public": True, "rounds": 8}),
    Join(2, "ABCD"),
    QuickJoin(3, "quiz12"),
    Leave(4),
    Leave(),
    Joined(5, "ABCD", "p1", 3, 1200, BASE, "resume-token"),
    Input(6, {"x": f32(1.5), "y": Replace([1, 2]), "z": DELETE}),
    Input(7, [0b101, 1.0, {"k": "v"}]),
    State(1200, 0, BASE),
    State(1201, 1, diff(BASE, MOVED, dense=True), (Ping(1), RpcResult(9, True, [1, "x"]))),
    State(1202, 1, diff(BASE, MOVED), (Event("host_changed", {"host": "p2"}),)),
    Rpc(8, ["p1", "p2"], "chat", {"text": "hi", "at": 1.25}, True, "p3"),
    Rpc(9, "host", "kick"),
    RpcResult(9, False, {"code": "no_such_player", "message": "gone"}),
    Signal("offer", "p2", b"v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\n", "voice"),
    Error("invalid_field", "Create.mode must be str", 10),
    Ping(2**40),
    Pong(0),
    Event("room_closed", None),
    Event("scores", [{"p": "p1", "s": -3, "f": 2.5e-3, "b": b"\x00\xff"}]),
]
SEEDS = {codec.name: [codec.encode(f) for f in CORPUS_FRAMES] for codec in BOTH}


def measure(codec: Codec, data: bytes) -> tuple[Frame | RemoteProtocolError, float, int]:
    """Decode once under a clock and a memory tracer: (result, seconds, peak bytes)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        try:
            result: Frame | RemoteProtocolError = codec.decode(data)
        except RemoteProtocolError as exc:
            result = exc
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, elapsed, peak


def within_bounds(data: bytes, elapsed: float, peak: int) -> bool:
    limit = MAX_PEAK_SMALL if len(data) < 4096 else 256 * len(data)
    return elapsed < MAX_SECONDS and peak < limit


def check_decode(codec: Codec, data: bytes) -> Frame | None:
    """Decode ``data``: only a frame or a remote error may come out, quickly and
    in little memory, and whatever comes out can be answered."""
    result, elapsed, peak = measure(codec, data)
    if not within_bounds(data, elapsed, peak):
        # Measure again before failing: a one-off cost of the process (the
        # interpreter growing its table of interned map keys, a scheduler
        # hiccup on a shared machine) must not count against this input.
        result, elapsed, peak = measure(codec, data)
    assert elapsed < MAX_SECONDS, f"decoding {len(data)} bytes took {elapsed:.3f} s"
    assert within_bounds(data, elapsed, peak), f"decoding {len(data)} bytes allocated {peak} bytes"
    frame = result if isinstance(result, Frame) else None
    if frame is None:
        error = result
        assert isinstance(error, RemoteProtocolError)
        # The relay answers with an error frame; it must always be possible.
        assert isinstance(error.close_code, CloseCode)
        reply = Error(error.code, error.message, error.frame_id)
        codec.encode(reply)
        return None
    assert isinstance(frame, Frame)
    assert type(frame) in FRAME_TYPES.values()
    check_accepted(codec, frame)
    return frame


def check_accepted(codec: Codec, frame: Frame) -> None:
    """What a decoder accepts, the relay can use: deltas apply or raise
    InvalidDelta, and the frame (state floats rounded) can be sent on."""
    for name, kind in zip(frame._NAMES, frame._KINDS, strict=True):
        if kind != "delta":
            continue
        try:
            state = apply(BASE, getattr(frame, name))
        except InvalidDelta:
            continue
        assert type(state) is dict
        for other in BOTH:
            other.state_body(1, 1, quantize(state))
            other.state_body(1, 1, diff(BASE, quantize(state), dense=True))
    values = [
        quantize(getattr(frame, n)) if k == "delta" else getattr(frame, n)
        for n, k in zip(frame._NAMES, frame._KINDS, strict=True)
    ]
    again = type(frame)(*values)
    for other in BOTH:
        assert type(other.decode(other.encode(again))) is type(frame)


# -- strategies ----------------------------------------------------------------


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid encoding with a few bit flips, truncations, insertions, deletions
    and splices (pieces of other valid encodings)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(data):
            data[pos] = draw(
                st.sampled_from([0x00, 0x7F, 0x80, 0xC1, 0xD9, 0xDD, 0xDF, 0xFF])
                | st.integers(0, 255)
            )
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            piece = other[start : start + draw(st.integers(1, 32))]
            end = pos + draw(st.integers(0, 16))
            data[pos:end] = piece
    return bytes(data)


MUTATED = {
    "msgpack": mutated(SEEDS["msgpack"]),
    "cbor": mutated(SEEDS["cbor"]),
    "either": mutated(SEEDS["msgpack"] + SEEDS["cbor"]),
}


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**65),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=8),
)


def raw_values(markers: bool) -> st.SearchStrategy:
    """Values a peer could put on the wire: out-of-range integers, NaN, byte
    strings, and (with ``markers``) DELETE and Replace anywhere."""
    leaves = SCALARS | st.just(DELETE) if markers else SCALARS

    def extend(kids: st.SearchStrategy) -> st.SearchStrategy:
        containers = st.lists(kids, max_size=4) | st.dictionaries(
            st.text(max_size=4), kids, max_size=4
        )
        return containers | kids.map(Replace) if markers else containers

    return st.recursive(leaves, extend, max_leaves=16)


TYPE_IDS = st.sampled_from(sorted(FRAME_TYPES)) | st.integers(-2, 20)
WIRE_ARRAYS = st.builds(
    lambda t, rest: [t, *rest], TYPE_IDS, st.lists(raw_values(True), max_size=8)
)


def _msgpack_default(obj):
    if obj is DELETE:
        return msgpack.ExtType(1, b"")
    if type(obj) is Replace:
        return msgpack.ExtType(2, msgpack.packb(obj.value, default=_msgpack_default))
    raise TypeError(type(obj).__name__)


def _cbor_default(encoder, obj):
    if obj is DELETE:
        encoder.encode(cbor2.CBORTag(29300, None))
    elif type(obj) is Replace:
        encoder.encode(cbor2.CBORTag(29301, obj.value))
    else:
        raise TypeError(type(obj).__name__)


def wire(codec: Codec, value) -> bytes | None:
    """Encode a raw wire array with the format library; None if it cannot hold it."""
    try:
        if codec is MSGPACK:
            return msgpack.packb(value, use_bin_type=True, default=_msgpack_default)
        return cbor2.dumps(value, default=_cbor_default)
    except (TypeError, ValueError, OverflowError):
        return None


# -- the fuzz ------------------------------------------------------------------


def test_the_corpus_is_valid():
    for codec in BOTH:
        for frame, data in zip(CORPUS_FRAMES, SEEDS[codec.name], strict=True):
            assert check_decode(codec, data) == frame


@pytest.mark.parametrize("codec", BOTH, ids=lambda c: c.name)
@given(data=st.binary(max_size=4095))
def test_arbitrary_bytes(codec, data):
    check_decode(codec, data)


@pytest.mark.parametrize("codec", BOTH, ids=lambda c: c.name)
@given(data=st.data())
def test_mutated_valid_frames(codec, data):
    # The other codec's encodings make good nonsense too.
    inputs = MUTATED[codec.name] if data.draw(st.integers(0, 3)) else MUTATED["either"]
    check_decode(codec, data.draw(inputs, label="input"))


@pytest.mark.parametrize("codec", BOTH, ids=lambda c: c.name)
@given(value=WIRE_ARRAYS)
def test_random_wire_arrays(codec, value):
    data = wire(codec, value)
    if data is not None:
        check_decode(codec, data)


@pytest.mark.parametrize("codec", BOTH, ids=lambda c: c.name)
@given(value=st.lists(raw_values(True), max_size=6), type_id=st.sampled_from([7, 8, 9]))
def test_random_deltas_in_state_frames(codec, value, type_id):
    # Frames whose delta is random: the decoder and apply() both get exercised.
    fields = {7: [1, "C", "p", 0, 5], 8: [3], 9: [5, 1]}[type_id]
    for delta in (value, dict(enumerate(value)), {str(i): v for i, v in enumerate(value)}):
        data = wire(codec, [type_id, *fields, delta])
        if data is not None:
            check_decode(codec, data)


def test_bounds_catch_a_slow_or_greedy_decoder():
    # The checks themselves can fail: a decoder that allocates too much trips them.
    class Greedy(MsgpackCodec):
        def _loads(self, data, depth=1):
            _ = bytearray(MAX_PEAK_SMALL * 2)
            return super()._loads(data, depth)

    with pytest.raises(AssertionError, match="allocated"):
        check_decode(Greedy(), MSGPACK.encode(Ping(1)))
