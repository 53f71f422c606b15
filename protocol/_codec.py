"""Codecs: frames to bytes and back, in msgpack (default) or CBOR.

The codec is chosen per connection by WebSocket subprotocol
(``roomwire.v1.msgpack``, ``roomwire.v1.cbor``); both encode the same frame
model and decode it back equal. Decoding is total: any input gives a frame or
a ``RemoteProtocolError``, never another exception, and the size of the input
is checked before any decoding so a small frame cannot cost much.

Floats inside state (keyframes and deltas) travel as IEEE 754 binary32: the
server keeps state floats rounded to binary32 (``protocol.f32``), so nothing
is lost, and each one costs 5 bytes instead of 9. Floats elsewhere (RPC
arguments, event data) travel as binary64.

A state frame is built in two parts so the public delta of a tick is encoded
once per room, whatever the number of clients: ``state_body`` encodes the
shared fields once, and ``state_frame`` wraps that body with one client's
messages (a byte concatenation).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence
from typing import Any

import cbor2
import msgpack

from ._delta import DELETE, Replace
from ._errors import (
    InvalidField,
    LimitExceeded,
    LocalProtocolError,
    MalformedFrame,
    RemoteProtocolError,
    UnknownFrameType,
)
from ._frames import _UINT_MAX, FRAME_TYPES, Frame, Input, State
from ._limits import DEFAULT_LIMITS, Limits

__all__ = [
    "CODECS",
    "SUBPROTOCOLS",
    "CborCodec",
    "Codec",
    "MsgpackCodec",
    "codec_for_subprotocol",
]

_INPUT_TYPE = Input.TYPE
_EXT_DELETE = 1
_EXT_REPLACE = 2
_TAG_DELETE = 29300
_TAG_REPLACE = 29301
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
# Field kinds whose values the frame class checks fully by itself; every other
# field is walked, so the length limits hold for CBOR (which has none of its own).


class Codec:
    """One wire encoding. Subclasses implement ``_dumps``/``_loads`` and the array headers."""

    name = ""
    subprotocol = ""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    # -- encoding -----------------------------------------------------------

    def encode(self, frame: Frame) -> bytes:
        """Encode one frame. Raises ``LocalProtocolError`` for an unencodable value."""
        if type(frame) is State:
            body = self.state_body(frame.tick, frame.back, frame.delta)
            return self.state_frame(body, frame.msgs)
        try:
            return self._dumps(frame.to_list())
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode {frame!r}: {exc}") from None

    def state_body(self, tick: int, back: int, delta: Any) -> bytes:
        """The shared part of a state frame: type, tick, back and the delta.

        Floats in ``delta`` are written as binary32. Encode this once per room
        per tick and hand it to ``state_frame`` for every client.
        """
        try:
            return self._dumps_items_f32((State.TYPE, tick, back, delta))
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode state delta: {exc}") from None

    def state_frame(self, body: bytes, msgs: Sequence[Frame] = ()) -> bytes:
        """One client's state frame: the shared ``body`` plus its ``msgs`` (if any)."""
        if not msgs:
            return self._array_header(4) + body
        try:
            packed = self._dumps([m.to_list() for m in msgs])
        except (TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(f"cannot encode messages: {exc}") from None
        return b"".join((self._array_header(5), body, packed))

    # -- decoding -----------------------------------------------------------

    def decode(self, data: bytes | bytearray | memoryview) -> Frame:
        """Decode one whole frame; trailing bytes are an error.

        Raises ``RemoteProtocolError`` (``MalformedFrame``, ``UnknownFrameType``,
        ``InvalidField``, ``LimitExceeded``) and nothing else.
        """
        if len(data) > self.limits.max_frame_bytes:
            raise LimitExceeded(
                f"frame of {len(data)} bytes exceeds the limit of {self.limits.max_frame_bytes}"
            )
        obj = self._loads(data)
        if type(obj) is list and len(obj) == 3 and obj[0] == _INPUT_TYPE:
            # The frame every client sends every tick: a flat map of numbers (a
            # player's own fields) takes this short path; anything else, the full one.
            seq = obj[1]
            delta = obj[2]
            if type(seq) is int and 0 <= seq <= _UINT_MAX and type(delta) is dict:
                max_key = self.limits.max_str_len
                if len(delta) <= self.limits.max_container_len:
                    for key, value in delta.items():
                        t = type(value)
                        if (
                            type(key) is not str
                            or len(key) > max_key
                            or not (t is float or (t is int and _INT_MIN <= value <= _INT_MAX))
                        ):
                            break
                    else:
                        return Input._from_checked([seq, delta])
        return self._to_frame(obj, nested=False)

    def _to_frame(self, obj: Any, *, nested: bool) -> Frame:
        if type(obj) is not list or not obj:
            raise MalformedFrame("a frame is a non-empty array")
        type_id = obj[0]
        cls = FRAME_TYPES.get(type_id) if type(type_id) is int else None
        if cls is None:
            raise UnknownFrameType(f"unknown frame type {type_id!r}")
        names = cls._NAMES
        values = obj[1 : 1 + len(names)]
        n = len(values)
        if n < len(names):
            if n < cls._REQUIRED:
                raise InvalidField(
                    f"{cls.__name__} needs at least {cls._REQUIRED} fields, got {n}",
                    frame_id=_peek_id(cls, values),
                )
            values.extend(cls._DEFAULTS[n:])
        for i, check in enumerate(cls._DECODE_CHECKERS):
            if not check(values[i]):
                frame_id = _peek_id(cls, values)
                try:
                    cls._invalid(names[i], values[i], frame_id)
                except LocalProtocolError as exc:
                    raise InvalidField(str(exc), frame_id=frame_id) from None
        for i, kind in cls._FREE:
            if kind == "frames":
                v = values[i]
                if i >= n:
                    continue  # left out: the default, no messages
                frame_id = _peek_id(cls, values)
                if type(v) is not list or nested:
                    raise InvalidField("msgs must be a list of frames", frame_id=frame_id)
                if len(v) > self.limits.max_container_len:
                    raise LimitExceeded("too many messages", frame_id=frame_id)
                values[i] = tuple(self._to_frame(m, nested=True) for m in v)
            else:
                v = values[i]
                t = type(v)
                if self._lengths_enforced and (t is str or t is bytes or t is int):
                    continue  # the unpacker checked its length (or range) as it read
                self._check_value(v, 1, kind == "delta", _peek_id(cls, values))
        return cls._from_checked(values)

    #: True where the decoder itself enforces the string, binary and container
    #: lengths while it reads (msgpack's unpacker); the walk then skips them
    _lengths_enforced = False

    def _check_value(self, value: Any, depth: int, markers: bool, frame_id: int | None) -> None:
        """Walk a free-form value: data-model types only, depth and lengths bounded.

        Scalars are checked inline in their container's loop: a state delta is
        mostly maps of numbers, and a call per number would dominate.
        """
        t = type(value)
        if t is dict:
            limits = self.limits
            if depth > limits.max_depth or (value and depth >= limits.max_depth):
                raise LimitExceeded(f"nesting deeper than {limits.max_depth}", frame_id=frame_id)
            check_lengths = not self._lengths_enforced
            if check_lengths and len(value) > limits.max_container_len:
                raise LimitExceeded("map too long", frame_id=frame_id)
            for key, item in value.items():
                if type(key) is not str:
                    raise InvalidField("map keys must be text strings", frame_id=frame_id)
                if check_lengths and len(key) > limits.max_str_len:
                    raise LimitExceeded("map key too long", frame_id=frame_id)
                ti = type(item)
                if (
                    ti is float
                    or ti is bool
                    or item is None
                    or (ti is int and _INT_MIN <= item <= _INT_MAX and not check_lengths)
                ):
                    continue
                self._check_value(item, depth + 1, markers, frame_id)
        elif t is list:
            limits = self.limits
            if depth > limits.max_depth or (value and depth >= limits.max_depth):
                raise LimitExceeded(f"nesting deeper than {limits.max_depth}", frame_id=frame_id)
            if not self._lengths_enforced and len(value) > limits.max_container_len:
                raise LimitExceeded("array too long", frame_id=frame_id)
            for item in value:
                ti = type(item)
                if ti is float or ti is bool or item is None:
                    continue
                self._check_value(item, depth + 1, markers, frame_id)
        elif t is float or t is bool or value is None:
            pass
        elif t is int:
            if not _INT_MIN <= value <= _INT_MAX:
                raise InvalidField("integer out of 64-bit range", frame_id=frame_id)
        elif t is str:
            if len(value) > self.limits.max_str_len:
                raise LimitExceeded("string too long", frame_id=frame_id)
        elif t is bytes:
            if len(value) > self.limits.max_bin_len:
                raise LimitExceeded("byte string too long", frame_id=frame_id)
        elif markers and value is DELETE:
            pass
        elif markers and t is Replace:
            if depth + 1 > self.limits.max_depth:
                raise LimitExceeded(
                    f"nesting deeper than {self.limits.max_depth}", frame_id=frame_id
                )
            self._check_value(value.value, depth + 1, markers, frame_id)
        else:
            raise InvalidField(f"values of type {t.__name__} are not allowed", frame_id=frame_id)

    # -- per-format primitives ---------------------------------------------

    def _dumps(self, obj: Any) -> bytes:
        raise NotImplementedError

    def _dumps_items_f32(self, items: tuple[Any, ...]) -> bytes:
        raise NotImplementedError

    def _loads(self, data: bytes | bytearray | memoryview) -> Any:
        raise NotImplementedError

    def _array_header(self, n: int) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _peek_id(cls: type[Frame], values: list[Any]) -> int | None:
    i = cls._ID_INDEX
    if 0 <= i < len(values):
        v = values[i]
        if type(v) is int and 0 <= v <= _UINT_MAX:
            return v
    return None


# -- msgpack ------------------------------------------------------------------


def _msgpack_default(obj: Any) -> Any:
    if obj is DELETE:
        return msgpack.ExtType(_EXT_DELETE, b"")
    if type(obj) is Replace:
        return msgpack.ExtType(_EXT_REPLACE, _MSGPACK_PACKER_REPLACE(obj.value))
    if type(obj) is tuple:
        return list(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")


def _MSGPACK_PACKER_REPLACE(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, use_single_float=True, default=_msgpack_default)


class MsgpackCodec(Codec):
    """MessagePack (the default). Map keys must be strings (``strict_map_key``)."""

    name = "msgpack"
    subprotocol = "roomwire.v1.msgpack"
    _lengths_enforced = True

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self._packer = msgpack.Packer(use_bin_type=True, default=_msgpack_default)
        self._packer_f32 = msgpack.Packer(
            use_bin_type=True, use_single_float=True, default=_msgpack_default
        )
        self._unpack_opts = dict(
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=self._ext_hook,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_container_len,
            max_map_len=limits.max_container_len,
            max_ext_len=limits.max_frame_bytes,
            timestamp=0,
        )

    def _dumps(self, obj: Any) -> bytes:
        return self._packer.pack(obj)

    def _dumps_items_f32(self, items: tuple[Any, ...]) -> bytes:
        pack = self._packer_f32.pack
        return b"".join([pack(item) for item in items])

    def _array_header(self, n: int) -> bytes:
        return bytes((0x90 | n,))

    def _ext_hook(self, code: int, data: bytes, depth: int = 1) -> Any:
        if code == _EXT_DELETE and not data:
            return DELETE
        if code == _EXT_REPLACE:
            # Each Replace unpacks its payload in a nested unpacker call: bound
            # the nesting, or a few KiB of nested Replaces exhaust the C stack.
            if depth > self.limits.max_depth:
                raise LimitExceeded(f"nesting deeper than {self.limits.max_depth}")
            return Replace(self._loads(data, depth + 1))
        raise MalformedFrame(f"unknown extension type {code}")

    def _loads(self, data: bytes | bytearray | memoryview, depth: int = 1) -> Any:
        opts = self._unpack_opts
        if depth > 1:
            opts = {**opts, "ext_hook": functools.partial(self._ext_hook, depth=depth)}
        try:
            return msgpack.unpackb(data, **opts)
        except RemoteProtocolError:
            raise
        except msgpack.ExtraData:
            raise MalformedFrame("trailing bytes after the frame") from None
        except msgpack.StackError:
            # the C unpacker's own nesting bound, far past max_depth
            raise LimitExceeded(f"nesting deeper than {self.limits.max_depth}") from None
        except ValueError as exc:
            text = str(exc)
            if "exceeds max" in text or ("too" in text.lower() and "max" in text.lower()):
                raise LimitExceeded(f"msgpack limit: {text}") from None
            raise MalformedFrame(f"undecodable msgpack: {text}") from None
        except Exception as exc:  # the C unpacker raises assorted types
            raise MalformedFrame(f"undecodable msgpack: {type(exc).__name__}: {exc}") from None


# -- CBOR ---------------------------------------------------------------------


def _cbor_default(encoder: Any, obj: Any) -> None:
    if obj is DELETE:
        encoder.encode(cbor2.CBORTag(_TAG_DELETE, None))
    elif type(obj) is Replace:
        encoder.encode(cbor2.CBORTag(_TAG_REPLACE, obj.value))
    else:
        raise TypeError(f"cannot serialize {type(obj).__name__}")


def _cbor_tag_hook(*args: Any) -> Any:
    # cbor2 calls this with the tag and a flag (C decoder) or the decoder and
    # the tag (Python decoder); take whichever argument is the tag.
    tag = args[0] if isinstance(args[0], cbor2.CBORTag) else args[1]
    if tag.tag == _TAG_DELETE and tag.value is None:
        return DELETE
    if tag.tag == _TAG_REPLACE:
        return Replace(_thaw(tag.value))
    raise MalformedFrame(f"unknown CBOR tag {tag.tag}")


def _thaw(value: Any) -> Any:
    """cbor2 decodes tag contents as immutable (tuples, frozendicts); undo that."""
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _reject_semantic(*_args: Any) -> Any:
    raise MalformedFrame("CBOR semantic tags are not part of the protocol")


_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 260, 261, 1004)


class CborCodec(Codec):
    """CBOR (RFC 8949). Definite lengths only, text map keys only, no semantic tags."""

    name = "cbor"
    subprotocol = "roomwire.v1.cbor"

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self._semantic = {tag: _reject_semantic for tag in _SEMANTIC_TAGS}

    def _dumps(self, obj: Any) -> bytes:
        return cbor2.dumps(obj, default=_cbor_default)

    def _dumps_items_f32(self, items: tuple[Any, ...]) -> bytes:
        # canonical mode writes each float in the shortest exact width, so a
        # binary32 value takes 5 bytes (or 3 as binary16) instead of 9.
        return b"".join(cbor2.dumps(item, default=_cbor_default, canonical=True) for item in items)

    def _array_header(self, n: int) -> bytes:
        return bytes((0x80 | n,))

    def _loads(self, data: bytes | bytearray | memoryview) -> Any:
        raw = bytes(data)
        # cbor2.loads ignores bytes after the first item; a decoder over a
        # stream tells where the item ended, so trailing bytes can be refused.
        stream = io.BytesIO(raw)
        try:
            obj = cbor2.CBORDecoder(
                stream,
                tag_hook=_cbor_tag_hook,
                semantic_decoders=self._semantic,
                max_depth=self.limits.max_depth + 2,
                allow_indefinite=False,
                allow_duplicate_keys=False,
                strict_hashable_types=True,
            ).decode()
        except RemoteProtocolError:
            raise
        except cbor2.CBORDecodeError as exc:
            cause = exc.__cause__
            if isinstance(cause, RemoteProtocolError):
                raise cause from None
            text = str(exc)
            if "depth" in text:
                raise LimitExceeded(f"CBOR nesting: {text}") from None
            raise MalformedFrame(f"undecodable CBOR: {text}") from None
        except Exception as exc:
            raise MalformedFrame(f"undecodable CBOR: {type(exc).__name__}: {exc}") from None
        if stream.tell() != len(raw):
            raise MalformedFrame("trailing bytes after the frame")
        return obj


CODECS: dict[str, type[Codec]] = {"msgpack": MsgpackCodec, "cbor": CborCodec}
SUBPROTOCOLS: dict[str, type[Codec]] = {c.subprotocol: c for c in CODECS.values()}


def codec_for_subprotocol(name: str, limits: Limits = DEFAULT_LIMITS) -> Codec:
    """The codec for a WebSocket subprotocol name; ``KeyError`` for an unknown one."""
    return SUBPROTOCOLS[name](limits)
