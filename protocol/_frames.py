"""Frame types of protocol version 1: frozen, slotted dataclasses that validate themselves.

On the wire a frame is an array ``[type_id, field0, field1, ...]`` with the
fields in the order declared here. Trailing fields that equal their defaults
may be left out (encoders here always do), and decoders ignore fields past
the ones they know, so a minor revision can append optional fields without
breaking older peers. ``FRAME_TYPES`` is the registry, by type id.

Field kinds (``_KINDS``) and what they accept:

=========  ==================================================================
uint       integer 0 .. 2**63-1 (never a bool)
uint?      uint or null
str        text string
str?       text string or null
bytes      byte string
bool       boolean
map        map with text keys (free-form values)
any        any value of the data model (null, bool, int, float, str, bytes,
           list, map with text keys)
delta      a state delta or keyframe (``protocol.diff`` format)
target     a text string or a list of text strings
frames     a list of frames (only inside ``State``)
=========  ==================================================================
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ._errors import LocalProtocolError

__all__ = [
    "FRAME_TYPES",
    "PROTOCOL_VERSION",
    "Create",
    "Error",
    "Event",
    "Frame",
    "Hello",
    "Input",
    "Join",
    "Joined",
    "Leave",
    "Ping",
    "Pong",
    "QuickJoin",
    "Rpc",
    "RpcResult",
    "Signal",
    "State",
    "Welcome",
]

PROTOCOL_VERSION = 1
_UINT_MAX = (1 << 63) - 1

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxdict = 4
_repr.maxlist = 4
_repr.maxlevel = 2


def _is_uint(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _UINT_MAX


def _is_target(value: Any) -> bool:
    return type(value) is str or (
        type(value) in (list, tuple) and all(type(v) is str for v in value)
    )


def _is_frames(value: Any) -> bool:
    return type(value) in (list, tuple) and all(isinstance(v, Frame) for v in value)


def _anything(value: Any) -> bool:
    return True  # any, delta: checked by the codec's walk of the decoded value


#: one predicate per field kind; a frame class keeps the tuple for its fields
_CHECKS: dict[str, Any] = {
    "uint": _is_uint,
    "uint?": lambda v: v is None or _is_uint(v),
    "str": lambda v: type(v) is str,
    "str?": lambda v: v is None or type(v) is str,
    "bool": lambda v: type(v) is bool,
    "bytes": lambda v: type(v) is bytes,
    "map": lambda v: isinstance(v, Mapping),
    "target": _is_target,
    "frames": _is_frames,
    "any": _anything,
    "delta": _anything,
}


def _check(kind: str, value: Any) -> bool:
    return _CHECKS[kind](value)


@dataclass(frozen=True, slots=True, repr=False)
class Frame:
    """Base of every frame. ``TYPE`` is the wire type id; ``_KINDS`` the field kinds."""

    TYPE: ClassVar[int] = -1
    _KINDS: ClassVar[tuple[str, ...]] = ()
    _NAMES: ClassVar[tuple[str, ...]] = ()
    _DEFAULTS: ClassVar[tuple[Any, ...]] = ()
    _REQUIRED: ClassVar[int] = 0
    _CHECKERS: ClassVar[tuple[Any, ...]] = ()
    _DECODE_CHECKERS: ClassVar[tuple[Any, ...]] = ()  # frames fields: checked by the codec
    _SLOTS: ClassVar[tuple[Any, ...]] = ()  # the slot descriptors, in field order
    _ID_INDEX: ClassVar[int] = -1  # where the frame's id (or seq) is, or -1
    #: (index, kind) of the fields a codec must walk: free-form values and frames
    _FREE: ClassVar[tuple[tuple[int, str], ...]] = ()

    def __post_init__(self) -> None:
        for name, check in zip(self._NAMES, self._CHECKERS, strict=True):
            if not check(getattr(self, name)):
                self._invalid(name, getattr(self, name), self.frame_id())

    @classmethod
    def _invalid(cls, name: str, value: Any, frame_id: int | None) -> None:
        kind = cls._KINDS[cls._NAMES.index(name)]
        raise LocalProtocolError(
            f"{cls.__name__}.{name} must be {kind}, got {_repr.repr(value)}",
            frame_id=frame_id,
        )

    @classmethod
    def _from_checked(cls, values: list[Any]) -> Frame:
        """Build a frame from values the caller has just validated field by field.

        The decoder's fast path: it skips ``__init__``/``__post_init__`` (which
        would check every field a second time) and sets the slots directly.
        """
        frame = object.__new__(cls)
        for slot, value in zip(cls._SLOTS, values, strict=True):
            slot.__set__(frame, value)
        return frame

    def frame_id(self) -> int | None:
        """The client-chosen id that error frames refer back to, where the frame has one."""
        for name in ("id", "seq"):
            if name in self._NAMES:
                value = getattr(self, name)
                return value if type(value) is int else None
        return None

    def to_list(self) -> list[Any]:
        """The wire array: type id, then the fields, trailing defaults left out."""
        values = [getattr(self, name) for name in self._NAMES]
        n = len(values)
        while n > self._REQUIRED and _is_default(values[n - 1], self._DEFAULTS[n - 1]):
            n -= 1
        out = [self.TYPE]
        out.extend(values[:n])
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={_repr.repr(getattr(self, n))}" for n in self._NAMES)
        return f"{type(self).__name__}({parts})"


_NO_DEFAULT = object()


def _is_default(value: Any, default: Any) -> bool:
    if default is _NO_DEFAULT:
        return False
    if type(default) in (tuple, dict) and not default:
        return type(value) in (tuple, list, dict) and not value
    return value is default or (type(value) is type(default) and value == default)


FRAME_TYPES: dict[int, type[Frame]] = {}


def _register(type_id: int, *kinds: str):
    def deco(cls: type[Frame]) -> type[Frame]:
        fs = fields(cls)
        if len(fs) != len(kinds):
            raise AssertionError(f"{cls.__name__}: {len(fs)} fields, {len(kinds)} kinds")
        cls.TYPE = type_id
        cls._KINDS = kinds
        cls._CHECKERS = tuple(_CHECKS[k] for k in kinds)
        cls._DECODE_CHECKERS = tuple(_anything if k == "frames" else _CHECKS[k] for k in kinds)
        cls._FREE = tuple((i, k) for i, k in enumerate(kinds) if k not in ("uint", "uint?", "bool"))
        cls._NAMES = tuple(f.name for f in fs)
        cls._SLOTS = tuple(cls.__dict__[f.name] for f in fs)
        for id_name in ("id", "seq"):
            if id_name in cls._NAMES:
                cls._ID_INDEX = cls._NAMES.index(id_name)
                break
        defaults = []
        for f in fs:
            if f.default is not _MISSING:
                defaults.append(f.default)
            elif f.default_factory is not _MISSING:
                defaults.append(f.default_factory())
            else:
                defaults.append(_NO_DEFAULT)
        cls._DEFAULTS = tuple(defaults)
        cls._REQUIRED = sum(1 for d in defaults if d is _NO_DEFAULT)
        if type_id in FRAME_TYPES:
            raise AssertionError(f"type id {type_id} registered twice")
        FRAME_TYPES[type_id] = cls
        return cls

    return deco


from dataclasses import MISSING as _MISSING  # noqa: E402


@_register(1, "uint", "str?", "str?", "str")
@dataclass(frozen=True, slots=True, repr=False)
class Hello(Frame):
    """Client -> server, first frame: protocol version and credentials."""

    version: int
    ticket: str | None = None  # a join ticket; None for anonymous play where enabled
    resume: str | None = None  # a resume token from an earlier Joined, to take a seat back
    client: str = ""  # free text: SDK name and version, for logs


@_register(2, "uint", "str", "str", "map")
@dataclass(frozen=True, slots=True, repr=False)
class Welcome(Frame):
    """Server -> client: the hello was accepted."""

    version: int
    codec: str
    player_id: str
    server: Mapping[str, Any] = field(default_factory=dict)  # name, version, tick_rate, limits


@_register(3, "uint", "str", "map")
@dataclass(frozen=True, slots=True, repr=False)
class Create(Frame):
    """Client -> server: create a room of ``mode`` and join it."""

    id: int
    mode: str
    options: Mapping[str, Any] = field(default_factory=dict)


@_register(4, "uint", "str")
@dataclass(frozen=True, slots=True, repr=False)
class Join(Frame):
    """Client -> server: join the room with this code."""

    id: int
    code: str


@_register(5, "uint", "str")
@dataclass(frozen=True, slots=True, repr=False)
class QuickJoin(Frame):
    """Client -> server: join an open room of ``mode`` with a free seat, or a new one."""

    id: int
    mode: str


@_register(6, "uint")
@dataclass(frozen=True, slots=True, repr=False)
class Leave(Frame):
    """Client -> server: leave the room (the seat is released at once)."""

    id: int = 0


@_register(7, "uint", "str", "str", "uint", "uint", "delta", "str?")
@dataclass(frozen=True, slots=True, repr=False)
class Joined(Frame):
    """Server -> client: you are in room ``code``; ``state`` is the keyframe at ``tick``."""

    id: int
    code: str
    player_id: str
    seat: int
    tick: int
    state: Mapping[str, Any]
    resume: str | None = None


@_register(8, "uint", "delta")
@dataclass(frozen=True, slots=True, repr=False)
class Input(Frame):
    """Client -> server: a delta of the client's own player entity, numbered ``seq``."""

    seq: int
    delta: Any


@_register(9, "uint", "uint", "delta", "frames")
@dataclass(frozen=True, slots=True, repr=False)
class State(Frame):
    """Server -> client: the room state at ``tick``, and this client's messages.

    ``back`` is how many ticks before ``tick`` the base of ``delta`` is; 0
    means ``delta`` is a keyframe (the whole state). ``msgs`` are the frames
    for this client in this tick (RPCs, results, signals, events, errors), in
    order: at most one WebSocket message per client per tick carries all.
    """

    tick: int
    back: int
    delta: Any
    msgs: tuple[Frame, ...] = ()


@_register(10, "uint", "target", "str", "any", "bool", "str?", "uint?")
@dataclass(frozen=True, slots=True, repr=False)
class Rpc(Frame):
    """A call. Client -> server: ``target`` is a player id, a list of them, or one of
    "host", "others", "all", "room". Server -> callee: ``caller`` is set by the server.
    ``timeout_ms``: how long the caller waits (the relay caps it; null: its default)."""

    id: int
    target: str | list[str]
    method: str
    args: Any = None
    buffered: bool = False
    caller: str | None = None
    timeout_ms: int | None = None


@_register(11, "uint", "bool", "any")
@dataclass(frozen=True, slots=True, repr=False)
class RpcResult(Frame):
    """The answer to ``Rpc`` ``id``: ``value`` on success, ``{"code", "message"}`` if not."""

    id: int
    ok: bool
    value: Any = None


@_register(12, "str", "str", "bytes", "str")
@dataclass(frozen=True, slots=True, repr=False)
class Signal(Frame):
    """Voice signalling (offer, answer, ice, bye). ``peer`` is the recipient when a
    client sends it and the sender when the server delivers it; ``payload`` is opaque."""

    kind: str
    peer: str
    payload: bytes
    channel: str = ""


@_register(13, "str", "str", "uint?")
@dataclass(frozen=True, slots=True, repr=False)
class Error(Frame):
    """Server -> client: ``code`` (stable, see docs) and a human ``message``.
    ``ref`` is the id (or input seq) of the frame that caused it, where known."""

    code: str
    message: str
    ref: int | None = None


@_register(14, "uint")
@dataclass(frozen=True, slots=True, repr=False)
class Ping(Frame):
    """Either way: answered by a Pong with the same nonce."""

    nonce: int


@_register(15, "uint")
@dataclass(frozen=True, slots=True, repr=False)
class Pong(Frame):
    nonce: int


@_register(16, "str", "any")
@dataclass(frozen=True, slots=True, repr=False)
class Event(Frame):
    """Server -> client: something happened (``room_closed``, ``host_changed``, game events)."""

    name: str
    data: Any = None
