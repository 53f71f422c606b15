"""Frame model tests: the pinned wire layout, validation at construction, trailing
defaults, short reprs, the error tree and the limits."""

from __future__ import annotations

import dataclasses
import re

import pytest

import protocol
from protocol import (
    DEFAULT_LIMITS,
    FRAME_TYPES,
    PROTOCOL_VERSION,
    CloseCode,
    Create,
    Error,
    Event,
    Frame,
    Hello,
    Input,
    InvalidDelta,
    InvalidField,
    Join,
    Joined,
    Leave,
    LimitExceeded,
    Limits,
    LocalProtocolError,
    MalformedFrame,
    Ping,
    Pong,
    ProtocolError,
    QuickJoin,
    RemoteProtocolError,
    Rpc,
    RpcResult,
    Signal,
    State,
    UnknownFrameType,
    UnsupportedVersion,
    Welcome,
)

# The wire layout of protocol version 1: type id, class, and the fields in wire
# order with their kinds. Changing any of this breaks deployed clients, so it
# is written out here rather than derived from the code under test.
WIRE_LAYOUT = {
    1: (Hello, (("version", "uint"), ("ticket", "str?"), ("resume", "str?"), ("client", "str"))),
    2: (Welcome, (("version", "uint"), ("codec", "str"), ("player_id", "str"), ("server", "map"))),
    3: (Create, (("id", "uint"), ("mode", "str"), ("options", "map"))),
    4: (Join, (("id", "uint"), ("code", "str"))),
    5: (QuickJoin, (("id", "uint"), ("mode", "str"))),
    6: (Leave, (("id", "uint"),)),
    7: (
        Joined,
        (
            ("id", "uint"),
            ("code", "str"),
            ("player_id", "str"),
            ("seat", "uint"),
            ("tick", "uint"),
            ("state", "delta"),
            ("resume", "str?"),
        ),
    ),
    8: (Input, (("seq", "uint"), ("delta", "delta"))),
    9: (State, (("tick", "uint"), ("back", "uint"), ("delta", "delta"), ("msgs", "frames"))),
    10: (
        Rpc,
        (
            ("id", "uint"),
            ("target", "target"),
            ("method", "str"),
            ("args", "any"),
            ("buffered", "bool"),
            ("caller", "str?"),
            ("timeout_ms", "uint?"),
        ),
    ),
    11: (RpcResult, (("id", "uint"), ("ok", "bool"), ("value", "any"))),
    12: (Signal, (("kind", "str"), ("peer", "str"), ("payload", "bytes"), ("channel", "str"))),
    13: (Error, (("code", "str"), ("message", "str"), ("ref", "uint?"))),
    14: (Ping, (("nonce", "uint"),)),
    15: (Pong, (("nonce", "uint"),)),
    16: (Event, (("name", "str"), ("data", "any"))),
}


def ident(value) -> str:
    """A short, stable test id (no object addresses)."""
    if isinstance(value, type):
        return value.__name__
    text = re.sub(r" at 0x[0-9a-f]+", "", repr(value))
    return text if len(text) <= 48 else text[:45] + "..."


# One valid instance of every frame type, with every field set.
FULL = [
    Hello(1, "ticket", "resume", "sdk/1.0"),
    Welcome(1, "msgpack", "p1", {"name": "relay", "tick_rate": 20}),
    Create(1, "quiz8", {"public": True}),
    Join(2, "ABCD"),
    QuickJoin(3, "quiz12"),
    Leave(4),
    Joined(5, "ABCD", "p1", 3, 1200, {"players": {}}, "resume-token"),
    Input(6, {"x": 1.5}),
    State(7, 1, {"x": 1.5}, (Ping(1),)),
    Rpc(8, ["p1", "p2"], "chat", {"text": "hi"}, True, "p3", 2500),
    RpcResult(9, True, [1, 2]),
    Signal("offer", "p2", b"\x00sdp", "voice"),
    Error("bad_input", "no such seat", 10),
    Ping(11),
    Pong(12),
    Event("host_changed", {"host": "p2"}),
]


def test_every_frame_type_is_pinned():
    assert set(FRAME_TYPES) == set(WIRE_LAYOUT)
    assert {type(f) for f in FULL} == set(FRAME_TYPES.values())


@pytest.mark.parametrize("type_id", sorted(WIRE_LAYOUT))
def test_wire_layout(type_id):
    cls, layout = WIRE_LAYOUT[type_id]
    assert FRAME_TYPES[type_id] is cls
    assert type_id == cls.TYPE
    assert tuple(name for name, _ in layout) == cls._NAMES
    assert tuple(kind for _, kind in layout) == cls._KINDS
    assert tuple(f.name for f in dataclasses.fields(cls)) == cls._NAMES
    # Required fields come first: only trailing fields may be left out.
    required = [
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        for f in dataclasses.fields(cls)
    ]
    assert required == [True] * cls._REQUIRED + [False] * (len(required) - cls._REQUIRED)
    assert len(cls._DEFAULTS) == len(cls._NAMES)


def test_protocol_version():
    assert PROTOCOL_VERSION == 1


@pytest.mark.parametrize("frame", FULL, ids=lambda f: type(f).__name__)
def test_frames_are_frozen_and_slotted(frame):
    assert not hasattr(frame, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(frame, frame._NAMES[0], getattr(frame, frame._NAMES[0]))
    assert isinstance(frame, Frame)


@pytest.mark.parametrize("frame", FULL, ids=lambda f: type(f).__name__)
def test_to_list_with_every_field_set(frame):
    assert frame.to_list() == [frame.TYPE, *(getattr(frame, n) for n in frame._NAMES)]


@pytest.mark.parametrize(
    ("frame", "wire"),
    [
        (Hello(1), [1, 1]),
        (Hello(1, client="x"), [1, 1, None, None, "x"]),
        (Hello(1, "t"), [1, 1, "t"]),
        (Welcome(1, "cbor", "p1"), [2, 1, "cbor", "p1"]),
        (Welcome(1, "cbor", "p1", {}), [2, 1, "cbor", "p1"]),
        (Create(1, "m"), [3, 1, "m"]),
        (Leave(), [6]),
        (Leave(0), [6]),
        (Leave(3), [6, 3]),
        (Joined(1, "C", "p", 0, 5, {}), [7, 1, "C", "p", 0, 5, {}]),
        (State(1, 0, {}), [9, 1, 0, {}]),
        (State(1, 0, {}, ()), [9, 1, 0, {}]),
        (Rpc(1, "all", "m"), [10, 1, "all", "m"]),
        (Rpc(1, "all", "m", None, True), [10, 1, "all", "m", None, True]),
        (Rpc(1, "all", "m", caller="p"), [10, 1, "all", "m", None, False, "p"]),
        # A non-default value equal to the default (0 vs False, 0 vs None) stays.
        (Rpc(1, "all", "m", 0), [10, 1, "all", "m", 0]),
        (Rpc(1, "all", "m", False), [10, 1, "all", "m", False]),
        (RpcResult(1, False), [11, 1, False]),
        (Signal("bye", "p", b""), [12, "bye", "p", b""]),
        (Error("c", "m"), [13, "c", "m"]),
        (Error("c", "m", 0), [13, "c", "m", 0]),
        (Event("e"), [16, "e"]),
        (Event("e", {}), [16, "e", {}]),
    ],
    ids=ident,
)
def test_trailing_defaults_are_left_out(frame, wire):
    assert frame.to_list() == wire
    assert [type(v) for v in frame.to_list()] == [type(v) for v in wire]


@pytest.mark.parametrize(
    ("make", "frame_id"),
    [
        (lambda: Hello("1"), None),
        (lambda: Hello(-1), None),
        (lambda: Hello(True), None),
        (lambda: Hello(1, ticket=5), None),
        (lambda: Welcome(1, "c", "p", [1]), None),
        (lambda: Create(5, 3), 5),
        (lambda: Create(5, "m", None), 5),
        (lambda: Join(2**63, "C"), 2**63),
        (lambda: Join(7, b"C"), 7),
        (lambda: Leave(1.0), None),
        (lambda: Joined(9, "C", "p", -1, 0, {}), 9),
        (lambda: Input("3", {}), None),
        (lambda: State(1, 0, {}, [Ping(1), "x"]), None),
        (lambda: State(1, 0, {}, Ping(1)), None),
        (lambda: Rpc(4, ["p", 1], "m"), 4),
        (lambda: Rpc(4, 5, "m"), 4),
        (lambda: Rpc(4, "all", "m", None, 1), 4),
        (lambda: RpcResult(6, 1), 6),
        (lambda: Signal("offer", "p", "text"), None),
        (lambda: Signal("offer", "p", bytearray(b"x")), None),
        (lambda: Error("c", "m", -1), None),
        (lambda: Error("c", None), None),
        (lambda: Ping(None), None),
        (lambda: Pong(2**63), None),
        (lambda: Event(1), None),
    ],
)
def test_construction_validates(make, frame_id):
    with pytest.raises(LocalProtocolError) as info:
        make()
    assert info.value.frame_id == frame_id
    assert info.value.code == "local_error"


@pytest.mark.parametrize(
    "frame",
    [
        Ping(0),
        Ping(2**63 - 1),
        Rpc(1, ("a", "b"), "m"),
        Rpc(1, [], "m"),
        State(1, 0, None, [Ping(1)]),
        Welcome(1, "c", "p", {"a": object()}),  # map values are checked by the codec
        Error("c", "m", None),
    ],
    ids=ident,
)
def test_construction_accepts(frame):
    assert frame.TYPE in FRAME_TYPES


def test_frame_id():
    assert Create(5, "m").frame_id() == 5
    assert Input(8, {}).frame_id() == 8
    assert Rpc(3, "all", "m").frame_id() == 3
    assert Ping(4).frame_id() is None
    assert Error("c", "m", 9).frame_id() is None  # ref names another frame
    assert Event("e").frame_id() is None


def test_repr_is_short():
    frame = Event("e" * 1000, {"k": ["v" * 1000] * 1000})
    text = repr(frame)
    assert text.startswith("Event(name='eee")
    assert len(text) < 400  # bounded whatever the size of the frame
    state = State(1, 0, {f"p{i}": {"x": i} for i in range(100)}, tuple(Ping(i) for i in range(50)))
    assert len(repr(state)) < 300


def test_equality_is_by_value():
    assert Ping(1) == Ping(1)
    assert Ping(1) != Pong(1)
    assert State(1, 0, {"a": [1]}, (Ping(1),)) == State(1, 0, {"a": [1]}, (Ping(1),))


# -- errors --------------------------------------------------------------------

ERROR_CODES = {
    MalformedFrame: ("malformed_frame", CloseCode.INVALID_PAYLOAD, 1007),
    UnknownFrameType: ("unknown_frame", CloseCode.UNSUPPORTED_DATA, 1003),
    InvalidField: ("invalid_field", CloseCode.INVALID_PAYLOAD, 1007),
    InvalidDelta: ("invalid_delta", CloseCode.INVALID_PAYLOAD, 1007),
    LimitExceeded: ("limit_exceeded", CloseCode.MESSAGE_TOO_BIG, 1009),
    UnsupportedVersion: ("unsupported_version", CloseCode.UNSUPPORTED_VERSION, 4002),
    LocalProtocolError: ("local_error", CloseCode.INTERNAL_ERROR, 1011),
}


@pytest.mark.parametrize("cls", list(ERROR_CODES), ids=lambda c: c.__name__)
def test_error_tree(cls):
    code, close_code, number = ERROR_CODES[cls]
    assert issubclass(cls, ProtocolError)
    assert issubclass(cls, RemoteProtocolError) != (cls is LocalProtocolError)
    assert cls.code == code
    assert cls.close_code is close_code
    assert int(cls.close_code) == number
    err = cls("went wrong", frame_id=3)
    assert err.message == "went wrong" == str(err)
    assert err.frame_id == 3
    assert cls("x").frame_id is None


def test_error_codes_are_distinct():
    codes = [cls.code for cls in ERROR_CODES]
    assert len(set(codes)) == len(codes)


def test_close_codes_are_valid_websocket_codes():
    for code in CloseCode:
        assert 1000 <= code <= 1015 or 4000 <= code <= 4999
        assert code not in (1004, 1005, 1006, 1015)  # reserved: never sent in a close frame


# -- limits --------------------------------------------------------------------


def test_default_limits():
    assert Limits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.max_frame_bytes == 64 * 1024
    assert protocol.DEFAULT_LIMITS is DEFAULT_LIMITS


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_frame_bytes": 0},
        {"max_depth": 0},
        {"max_container_len": -1},
        {"max_str_len": 0},
        {"max_bin_len": -1},
    ],
    ids=ident,
)
def test_limits_reject_nonsense(kwargs):
    with pytest.raises(ValueError):
        Limits(**kwargs)


def test_limits_allow_no_binary():
    assert Limits(max_bin_len=0).max_bin_len == 0


def test_limits_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_depth = 3  # type: ignore[misc]
