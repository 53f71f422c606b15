"""Codec tests: round trips of every frame type in both codecs, decoders fed whole,
byte by byte and with trailing garbage, limits, and every kind of bad input."""

from __future__ import annotations

import math
import re

import cbor2
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    CODECS,
    DELETE,
    FRAME_TYPES,
    SUBPROTOCOLS,
    CborCodec,
    Codec,
    Error,
    Event,
    Frame,
    Hello,
    Input,
    InvalidField,
    Leave,
    LimitExceeded,
    Limits,
    LocalProtocolError,
    MalformedFrame,
    MsgpackCodec,
    Ping,
    Pong,
    RemoteProtocolError,
    Replace,
    Rpc,
    RpcResult,
    Signal,
    State,
    UnknownFrameType,
    Welcome,
    codec_for_subprotocol,
    f32,
)

MSGPACK = MsgpackCodec()
CBOR = CborCodec()
BOTH = [MSGPACK, CBOR]
CODEC_CLASSES = [MsgpackCodec, CborCodec]

# -- strategies ----------------------------------------------------------------

TEXT = st.text(max_size=12)
UINT = st.one_of(st.integers(0, 300), st.integers(0, 2**63 - 1))
INT64 = st.one_of(st.integers(-300, 300), st.integers(-(2**63), 2**64 - 1))
# NaN is left out here (a frame holding NaN never equals itself); it has its own test.
FLOAT64 = st.floats(allow_nan=False)
# State floats travel as binary32: generate values that binary32 holds exactly.
FLOAT32 = st.floats(allow_nan=False, width=32)


def scalars(floats: st.SearchStrategy[float]) -> st.SearchStrategy:
    return st.one_of(st.none(), st.booleans(), INT64, floats, TEXT, st.binary(max_size=12))


def values(floats: st.SearchStrategy[float] = FLOAT64) -> st.SearchStrategy:
    """Any value of the data model: scalars, lists and maps with text keys."""
    return st.recursive(
        scalars(floats),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
        max_leaves=12,
    )


def deltas(floats: st.SearchStrategy[float]) -> st.SearchStrategy:
    """Delta-shaped values: the data model plus the DELETE and Replace markers."""
    leaves = st.one_of(scalars(floats), st.just(DELETE), values(floats).map(Replace))
    return st.recursive(
        leaves,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
        max_leaves=12,
    )


def kind_strategy(kind: str, *, in_state: bool) -> st.SearchStrategy:
    floats = FLOAT32 if in_state else FLOAT64
    if kind == "uint":
        return UINT
    if kind == "uint?":
        return st.none() | UINT
    if kind == "str":
        return TEXT
    if kind == "str?":
        return st.none() | TEXT
    if kind == "bytes":
        return st.binary(max_size=32)
    if kind == "bool":
        return st.booleans()
    if kind == "map":
        return st.dictionaries(TEXT, values(), max_size=4)
    if kind == "any":
        return values()
    if kind == "delta":
        return deltas(floats)
    if kind == "target":
        return TEXT | st.lists(TEXT, max_size=4)
    if kind == "frames":
        return st.lists(MESSAGE_FRAMES, max_size=3).map(tuple)
    raise AssertionError(f"no strategy for field kind {kind!r}")


def frames_of(cls: type[Frame], *, nested: bool = False) -> st.SearchStrategy[Frame]:
    """Frames of ``cls`` built from its field kinds; defaults drawn often, so the
    encoder's leaving-out of trailing defaults is exercised."""
    parts = []
    for i, (name, kind) in enumerate(zip(cls._NAMES, cls._KINDS, strict=True)):
        if nested and kind == "frames":
            parts.append(st.just((name, ())))
            continue
        strategy = kind_strategy(kind, in_state=kind == "delta")
        if i >= cls._REQUIRED:
            strategy = st.just(cls._DEFAULTS[i]) | strategy
        parts.append(strategy.map(lambda v, name=name: (name, v)))
    return st.tuples(*parts).map(lambda kv: cls(**dict(kv)))


# Built once: hypothesis caches its work per strategy object.
# Frames that can ride in ``State.msgs`` (a nested State carries no msgs).
MESSAGE_FRAMES = st.one_of([frames_of(c, nested=True) for c in FRAME_TYPES.values()])
FRAMES_OF = {cls: frames_of(cls) for cls in FRAME_TYPES.values()}
ANY_FRAME = st.one_of(list(FRAMES_OF.values()))


def same(a, b) -> bool:
    """Equality that also checks types (1, 1.0 and True differ), float signs and NaN."""
    if isinstance(a, Frame):
        return type(a) is type(b) and all(same(getattr(a, n), getattr(b, n)) for n in a._NAMES)
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is Replace:
        return same(a.value, b.value)
    if type(a) is float:
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def plain_loads(codec: Codec, data: bytes):
    """The wire array as the format library reads it, without the codec's rules."""
    if isinstance(codec, MsgpackCodec):
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    return cbor2.loads(data)


def wire(codec: Codec, obj) -> bytes:
    """Encode a raw wire value (not a frame) with the plain format library."""
    if isinstance(codec, MsgpackCodec):
        return msgpack.packb(obj, use_bin_type=True)
    return cbor2.dumps(obj)


def by_name(codec) -> str:
    return codec.name if isinstance(codec, Codec) else codec.__name__


def ident(value) -> str:
    """A short, stable test id (no object addresses)."""
    if isinstance(value, type):
        return value.__name__
    text = re.sub(r" at 0x[0-9a-f]+", "", repr(value))
    return text if len(text) <= 48 else text[:45] + "..."


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("cls", list(FRAME_TYPES.values()), ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip_every_frame_type(cls, data):
    frame = data.draw(FRAMES_OF[cls], label="frame")
    decoded = []
    for codec in BOTH:
        raw = codec.encode(frame)
        back = codec.decode(raw)
        assert back == frame
        assert same(back, frame)
        # Encoding is a function of the frame: the decoded copy encodes the same.
        assert codec.encode(back) == raw
        # Trailing fields equal to their defaults never reach the wire.
        assert len(plain_loads(codec, raw)) == len(frame.to_list())
        decoded.append(back)
    assert decoded[0] == decoded[1]
    assert same(decoded[0], decoded[1])


@given(frame=ANY_FRAME)
def test_every_proper_prefix_is_malformed(frame):
    for codec in BOTH:
        raw = codec.encode(frame)
        for end in range(len(raw)):
            with pytest.raises(MalformedFrame):
                codec.decode(raw[:end])


@given(frame=ANY_FRAME, garbage=st.binary(min_size=1, max_size=16))
def test_trailing_garbage_is_malformed(frame, garbage):
    for codec in BOTH:
        raw = codec.encode(frame)
        with pytest.raises(MalformedFrame):
            codec.decode(raw + garbage)


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_trailing_bytes_after_a_frame(codec):
    raw = codec.encode(Ping(7))
    assert codec.decode(raw) == Ping(7)
    for garbage in (b"\x00", b"\xff", raw, b"\x81\x01"):
        with pytest.raises(MalformedFrame, match="trailing"):
            codec.decode(raw + garbage)


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_decode_accepts_any_byte_buffer(codec, wrap):
    frame = Rpc(3, ["p1"], "m", {"a": [1, 2.5, b"x"]})
    assert codec.decode(wrap(codec.encode(frame))) == frame


@given(
    tick=UINT,
    back=UINT,
    delta=deltas(FLOAT32),
    msgs=st.lists(MESSAGE_FRAMES, max_size=3).map(tuple),
)
def test_state_frame_is_body_plus_messages(tick, back, delta, msgs):
    for codec in BOTH:
        body = codec.state_body(tick, back, delta)
        raw = codec.state_frame(body, msgs)
        assert raw == codec.encode(State(tick, back, delta, msgs))
        assert codec.decode(raw) == State(tick, back, delta, msgs)
        # One body serves every client: with and without messages.
        assert codec.decode(codec.state_frame(body)) == State(tick, back, delta)


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_state_floats_travel_as_binary32(codec):
    x = f32(0.1)
    assert x != 0.1
    small = codec.state_body(1, 0, {"x": 1})
    body = codec.state_body(1, 0, {"x": x})
    assert len(body) - len(small) <= 4  # a 5-byte float, where an int costs 1
    assert codec.decode(codec.state_frame(body)).delta == {"x": x}


def test_msgpack_rounds_state_floats():
    state = MSGPACK.decode(MSGPACK.encode(State(1, 0, {"x": 0.1, "l": [0.2, Replace(0.3)]})))
    assert state.delta == {"x": f32(0.1), "l": [f32(0.2), Replace(f32(0.3))]}


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_floats_outside_state_travel_as_binary64(codec):
    frame = Event("e", [0.1, 1e300, 2.0**-1074])
    assert same(codec.decode(codec.encode(frame)), frame)


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize("in_state", [False, True])
def test_special_floats_round_trip(codec, in_state):
    value = [math.nan, math.inf, -math.inf, -0.0, 0.0]
    frame = State(1, 0, {"v": value}) if in_state else Event("e", value)
    back = codec.decode(codec.encode(frame))
    assert same(back, frame)


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_integer_range(codec):
    frame = Event("e", [-(2**63), 2**64 - 1, 2**63 - 1, 0, -1])
    assert same(codec.decode(codec.encode(frame)), frame)


def test_cbor_integer_below_int64_is_refused():
    with pytest.raises(InvalidField, match="64-bit"):
        CBOR.decode(cbor2.dumps([16, "e", -(2**64)]))


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_markers_round_trip(codec):
    frame = Input(
        4, {"a": DELETE, "b": Replace([1, {"k": [2]}]), "c": {"d": Replace({})}, "e": [1, DELETE]}
    )
    back = codec.decode(codec.encode(frame))
    assert same(back, frame)
    assert back.delta["a"] is DELETE


# -- encoding errors -----------------------------------------------------------


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize(
    "frame",
    [
        Event("e", object()),
        RpcResult(1, True, [Ping(1)]),
        State(1, 0, {"x": object()}),
        State(1, 0, {}, (State(2, 0, {}, (Ping(1),)),)),  # a nested State carries no msgs
        Welcome(1, "c", "p", {"k": object()}),
    ],
    ids=ident,
)
def test_unencodable_frames_are_local_errors(codec, frame):
    with pytest.raises(LocalProtocolError):
        codec.encode(frame)


# -- codec selection -----------------------------------------------------------


def test_codec_registry():
    assert {"msgpack": MsgpackCodec, "cbor": CborCodec} == CODECS
    assert {"roomwire.v1.msgpack": MsgpackCodec, "roomwire.v1.cbor": CborCodec} == SUBPROTOCOLS
    limits = Limits(max_depth=3)
    codec = codec_for_subprotocol("roomwire.v1.cbor", limits)
    assert type(codec) is CborCodec
    assert codec.limits is limits
    assert type(codec_for_subprotocol("roomwire.v1.msgpack")) is MsgpackCodec
    with pytest.raises(KeyError):
        codec_for_subprotocol("roomwire.v2.msgpack")
    assert repr(MSGPACK) == "MsgpackCodec()"


# -- limits --------------------------------------------------------------------


@pytest.mark.parametrize("cls", CODEC_CLASSES, ids=by_name)
def test_frame_size_is_checked_before_decoding(cls):
    codec = cls(Limits(max_frame_bytes=64))
    ok = codec.encode(Event("e", "x" * 40))
    assert len(ok) <= 64
    assert codec.decode(ok) == Event("e", "x" * 40)
    exact = codec.encode(Event("e", "x" * (40 + 64 - len(ok))))
    assert len(exact) == 64
    codec.decode(exact)
    with pytest.raises(LimitExceeded):
        codec.decode(codec.encode(Event("e", "x" * 80)))
    # Bytes that are not even a frame: the size refuses them before any decoding.
    junk = b"\xc1" if cls is MsgpackCodec else b"\xff"  # never valid as a first byte
    with pytest.raises(MalformedFrame):
        codec.decode(junk * 64)
    with pytest.raises(LimitExceeded):
        codec.decode(junk * 65)


def nest(depth: int, kind: str, leaf=1):
    value = leaf
    for _ in range(depth):
        if kind == "list":
            value = [value]
        elif kind == "map":
            value = {"k": value}
        else:
            value = Replace(value)
    return value


@pytest.mark.parametrize("cls", CODEC_CLASSES, ids=by_name)
@pytest.mark.parametrize("kind", ["list", "map", "replace"])
def test_depth_limit(cls, kind):
    # A field's value is at depth 1; max_depth=4 allows three containers around a leaf.
    codec = cls(Limits(max_depth=4))
    ok = Input(1, nest(3, kind))
    assert codec.decode(codec.encode(ok)) == ok
    for depth in (4, 5, 20):
        with pytest.raises(LimitExceeded):
            codec.decode(codec.encode(Input(1, nest(depth, kind))))


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_default_depth_limit(codec):
    codec.decode(codec.encode(Event("e", nest(15, "list"))))
    with pytest.raises(LimitExceeded):
        codec.decode(codec.encode(Event("e", nest(16, "list"))))


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_very_deep_nesting_is_a_limit(codec):
    # Far past what the format libraries nest by themselves (msgpack stops near 1024).
    depth = 5000
    head = b"\x93\x10\xa1e" if codec is MSGPACK else b"\x83\x10\x61e"
    array1 = b"\x91" if codec is MSGPACK else b"\x81"
    with pytest.raises(LimitExceeded):
        codec.decode(head + array1 * depth + b"\x01")


def test_regression_nested_msgpack_replace_cannot_exhaust_the_stack():
    # Each Replace extension used to be unpacked by a recursive unpacker call with
    # no bound: a 4 KiB frame of nested Replaces crashed the process.
    inner = msgpack.packb(1)
    for _ in range(1000):
        inner = msgpack.packb(msgpack.ExtType(2, inner))
    data = b"\x93\x08\x01" + inner
    assert len(data) < 4096
    with pytest.raises(LimitExceeded):
        MSGPACK.decode(data)


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_cbor_and_msgpack_nested_replace_at_the_default_limit(codec):
    codec.decode(codec.encode(Input(1, nest(15, "replace"))))
    with pytest.raises(LimitExceeded):
        codec.decode(codec.encode(Input(1, nest(16, "replace"))))


SMALL = Limits(max_str_len=8, max_container_len=8, max_bin_len=4)


@pytest.mark.parametrize("cls", CODEC_CLASSES, ids=by_name)
@pytest.mark.parametrize(
    ("ok", "too_long"),
    [
        (Event("e", "x" * 8), Event("e", "x" * 9)),
        (Event("e", [0] * 8), Event("e", [0] * 9)),
        (Event("e", {str(i): i for i in range(8)}), Event("e", {str(i): i for i in range(9)})),
        (Event("e", {"k" * 8: 1}), Event("e", {"k" * 9: 1})),
        (Event("e", b"x" * 4), Event("e", b"x" * 5)),
        (Event("e", [[b"x" * 4]]), Event("e", [[b"x" * 5]])),
        (Input(3, {"a": Replace("x" * 8)}), Input(3, {"a": Replace("x" * 9)})),
        # Fields that are not free-form are bounded too, in both codecs.
        (Event("n" * 8), Event("n" * 9)),
        (Hello(1, client="c" * 8), Hello(1, client="c" * 9)),
        (Hello(1, ticket="t" * 8), Hello(1, ticket="t" * 9)),
        (Signal("o", "p", b"x" * 4), Signal("o", "p", b"x" * 5)),
        (Rpc(1, ["p"] * 8, "m"), Rpc(1, ["p"] * 9, "m")),
        (Rpc(1, "t" * 8, "m"), Rpc(1, "t" * 9, "m")),
        (State(1, 0, {}, (Ping(1),) * 8), State(1, 0, {}, (Ping(1),) * 9)),
        (State(1, 0, {}, (Event("e" * 8),)), State(1, 0, {}, (Event("e" * 9),))),
    ],
    ids=ident,
)
def test_length_limits(cls, ok, too_long):
    codec = cls(SMALL)
    assert codec.decode(codec.encode(ok)) == ok
    with pytest.raises(LimitExceeded):
        codec.decode(codec.encode(too_long))


def test_regression_cbor_long_text_in_a_text_field_is_a_limit():
    # CBOR has no length limits of its own: text fields used to escape the walk.
    data = cbor2.dumps([1, 1, None, None, "c" * 60_000])
    assert len(data) < 64 * 1024
    with pytest.raises(LimitExceeded):
        CBOR.decode(data)


def test_regression_cbor_message_count_is_a_limit():
    data = cbor2.dumps([9, 1, 0, {}, [[14, 0]] * 5000])
    with pytest.raises(LimitExceeded):
        CBOR.decode(data)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize(
    "value",
    [
        [16, "e", {1: 2}],
        [16, "e", {b"k": 2}],
        [16, "e", [{"ok": {2.5: 1}}]],
        [8, 1, {"a": {None: 1}}],
        [3, 1, "m", {True: 1}],
        [2, 1, "c", "p", {b"k": "v"}],
    ],
    ids=ident,
)
def test_non_text_map_keys_are_refused(codec, value):
    with pytest.raises((MalformedFrame, InvalidField)):
        codec.decode(wire(codec, value))


@pytest.mark.parametrize(
    "item",
    [
        cbor2.CBORTag(0, "2024-01-01T00:00:00Z"),  # datetime string
        cbor2.CBORTag(1, 1700000000),  # epoch datetime
        cbor2.CBORTag(1, 1.5),
        2**70,  # bignum (tag 2) out of the 64-bit range
        -(2**70),  # negative bignum (tag 3)
        cbor2.CBORTag(2, b"\x01"),  # a bignum even when small
        {1, 2},  # set (tag 258)
        frozenset(),
        cbor2.CBORTag(4, [-2, 27315]),  # decimal fraction
        cbor2.CBORTag(30, [1, 3]),  # rational
        cbor2.CBORTag(35, "a+"),  # regex
        cbor2.CBORTag(37, b"\x00" * 16),  # UUID
        cbor2.CBORTag(52, b"\x7f\x00\x00\x01"),  # IPv4 address
        cbor2.CBORTag(100, 19000),  # date
        cbor2.CBORTag(24, b"\x01"),  # embedded CBOR
        cbor2.CBORTag(28, [1]),  # shared value
        cbor2.CBORTag(99_999, 1),  # unknown tag
        cbor2.CBORSimpleValue(99),
        cbor2.undefined,
    ],
    ids=ident,
)
@pytest.mark.parametrize("where", ["any", "map", "delta", "text"])
def test_cbor_semantic_tags_are_refused(item, where):
    frame = {
        "any": [16, "e", [item]],
        "map": [3, 1, "m", {"k": item}],
        "delta": [8, 1, {"k": item}],
        "text": [1, 1, item],
    }[where]
    with pytest.raises(RemoteProtocolError):
        CBOR.decode(cbor2.dumps(frame))


@pytest.mark.parametrize(
    "item",
    [
        msgpack.ExtType(5, b""),
        msgpack.ExtType(1, b"\x00"),  # DELETE carries no data
        msgpack.ExtType(2, b""),  # Replace of nothing
        msgpack.ExtType(2, b"\x01\x02"),  # Replace with trailing bytes
        msgpack.Timestamp(1),  # the timestamp extension (-1)
    ],
    ids=ident,
)
def test_msgpack_foreign_extensions_are_refused(item):
    with pytest.raises(RemoteProtocolError):
        MSGPACK.decode(msgpack.packb([8, 1, {"k": item}]))


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize(
    "value", [[99], [0], [-1], [2**64 - 1], ["Hello"], [True], [1.0], [None], [[1]]], ids=ident
)
def test_unknown_frame_type(codec, value):
    with pytest.raises(UnknownFrameType):
        codec.decode(wire(codec, value))


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize("value", [[], 5, "Hello", {"type": 1}, None, b"\x01"], ids=ident)
def test_a_frame_is_a_non_empty_array(codec, value):
    with pytest.raises(MalformedFrame):
        codec.decode(wire(codec, value))


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_empty_input(codec):
    with pytest.raises(MalformedFrame):
        codec.decode(b"")


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize(
    ("value", "error", "frame_id"),
    [
        ([3, 7, 5], InvalidField, 7),
        ([3, 7, "m", [1]], InvalidField, 7),
        ([10, 5, 3, "m"], InvalidField, 5),
        ([10, 5, ["a", 1], "m"], InvalidField, 5),
        ([10, 5, "all", "m", None, 1], InvalidField, 5),
        ([11, 9, "yes"], InvalidField, 9),
        ([4, -1, "C"], InvalidField, None),
        ([4, True, "C"], InvalidField, None),
        ([4, 1.0, "C"], InvalidField, None),
        # Past the largest id: not an id an error frame could refer back to.
        ([4, 2**63, "C"], InvalidField, None),
        ([1, "1"], InvalidField, None),
        ([1, 1, 2], InvalidField, None),
        ([12, "offer", "p", "text"], InvalidField, None),
        ([13, "c", "m", -5], InvalidField, None),
        ([9, 1, 0, {}, "msgs"], InvalidField, None),
        ([9, 1, 0, {}, [[9, 2, 0, {}, []]]], InvalidField, None),  # msgs nest once only
        ([9, 1, 0, {}, [[99]]], UnknownFrameType, None),
        ([9, 1, 0, {}, [5]], MalformedFrame, None),
        ([9, 1, 0, {}, [[4, 6, 7]]], InvalidField, 6),
        ([9, -1, 0, {}], InvalidField, None),
    ],
    ids=ident,
)
def test_wrong_field_types(codec, value, error, frame_id):
    with pytest.raises(error) as info:
        codec.decode(wire(codec, value))
    assert info.value.frame_id == frame_id


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize(
    ("value", "frame_id"),
    [
        ([4, 1], 1),
        ([4], None),
        ([1], None),
        ([8, 42], 42),
        ([9, 1, 0], None),
        ([12, "a", "b"], None),
    ],
    ids=ident,
)
def test_missing_required_fields(codec, value, frame_id):
    with pytest.raises(InvalidField) as info:
        codec.decode(wire(codec, value))
    assert info.value.frame_id == frame_id


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize(
    ("value", "frame"),
    [
        ([14, 5, "extra", {"x": [1, 2]}], Ping(5)),
        ([15, 5, None], Pong(5)),
        ([6, 0, 1, 2], Leave(0)),
        ([1, 1, None, None, "c", "future", [1]], Hello(1, client="c")),
        ([9, 1, 0, {}, [], "future"], State(1, 0, {})),
        ([9, 1, 0, {}, [[14, 1, "future"]]], State(1, 0, {}, (Ping(1),))),
        ([16, "e", None, 1], Event("e")),
        ([13, "c", "m", 3, {}], Error("c", "m", 3)),
    ],
    ids=ident,
)
def test_extra_trailing_fields_are_ignored(codec, value, frame):
    # Forward compatibility: a later minor revision may append optional fields.
    assert codec.decode(wire(codec, value)) == frame


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_defaults_fill_left_out_fields(codec):
    assert codec.decode(wire(codec, [2, 1, "c", "p"])) == Welcome(1, "c", "p", {})
    assert codec.decode(wire(codec, [10, 1, "all", "m"])) == Rpc(1, "all", "m", None, False, None)
    assert codec.decode(wire(codec, [6])).id == 0


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
@pytest.mark.parametrize(
    "frame",
    [Hello(1), Welcome(1, "c", "p"), State(1, 0, {}), Rpc(1, "all", "m"), Signal("a", "b", b"")],
    ids=ident,
)
def test_encoder_leaves_out_trailing_defaults(codec, frame):
    assert len(plain_loads(codec, codec.encode(frame))) == 1 + type(frame)._REQUIRED


@pytest.mark.parametrize("codec", BOTH, ids=by_name)
def test_decoding_errors_fit_in_an_error_frame(codec):
    # The relay answers a bad frame with Error(code, message, ref=frame_id).
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(wire(codec, [4, 2**64 - 1, 5]))
    err = info.value
    reply = Error(err.code, err.message, err.frame_id)
    assert codec.decode(codec.encode(reply)) == reply
