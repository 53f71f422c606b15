"""Delta encoding of room state: ``diff(old, new)`` and ``apply(base, delta)``.

Theory of operation
-------------------
A room's state is a tree of maps (string keys), lists and scalars. A *delta*
turns one such map into another. It is itself made of plain values plus two
markers, so it travels through msgpack and CBOR unchanged:

* A **sparse patch** is a map ``{key: op}``. Each op is, depending on the
  base value at ``key``:

  - ``DELETE``: remove the key;
  - ``Replace(value)``: set the key to ``value`` whatever the base holds
    (used when a map becomes a list, which would otherwise read as a dense
    patch);
  - a map, where the base value is a map: a nested sparse patch;
  - a list, where the base value is a map: a nested dense patch (below);
  - anything else: the new value (a map given for a missing or non-map base
    is read as a patch of the empty map, which is the map itself).

* A **dense patch** is a list ``[mask, v0, v1, ...]`` that applies to a map
  whose key *set* does not change. Bit ``i`` of the integer ``mask`` says that
  the ``i``-th key of the base map, in sorted order (by code point), changes;
  the values follow in that order and are read with the rules above. A dense
  patch carries no keys at all, which is what keeps a tick of moving players
  small: eight players each changing x, y, angle and seq cost 20 bytes each.

Lists are replaced whole, never patched: game state lists are short, and a
patch format for them costs more code than it saves bytes.

``diff`` emits sparse patches with sorted keys, or dense ones where allowed
and asked for, so equal inputs give equal bytes. Identical subtrees (``is``)
are skipped without a walk, so states built by ``apply`` (which shares every
subtree it does not change) diff in time proportional to what changed.

States are treated as immutable: ``apply`` never mutates its base.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from ._errors import InvalidDelta

__all__ = ["DELETE", "Replace", "apply", "diff", "f32", "quantize"]

_MAX_DENSE_KEYS = 63  # the mask must fit a msgpack uint64


class _Delete:
    """The marker that removes a key. A singleton: compare with ``is``."""

    __slots__ = ()
    _instance: _Delete | None = None

    def __new__(cls) -> _Delete:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DELETE"

    def __reduce__(self) -> str:
        return "DELETE"


DELETE = _Delete()


class Replace:
    """Set a key to ``value`` whatever the base holds (a map becoming a list)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Replace and _same(self.value, other.value)

    def __hash__(self) -> int:
        return hash(("Replace", repr(self.value)))

    def __repr__(self) -> str:
        return f"Replace({self.value!r})"


_SAME = object()  # internal: "no change" from _diff_value


def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse 1, 1.0 and True at the top level."""
    return a is b or (type(a) is type(b) and a == b)


def diff(old: dict[str, Any], new: dict[str, Any], *, dense: bool = False) -> Any:
    """Return the delta that turns map ``old`` into map ``new``.

    With ``dense=True`` every map whose key set is unchanged is encoded as a
    dense patch (the wire form); otherwise only sparse patches are used. The
    result of no change is ``{}``. ``apply(old, diff(old, new)) == new``.
    """
    if type(old) is not dict or type(new) is not dict:
        raise TypeError("diff works on maps (dicts) at the top level")
    result = _diff_map(old, new, dense)
    return {} if result is _SAME else result


def _diff_map(old: dict[str, Any], new: dict[str, Any], dense: bool) -> Any:
    if dense and len(old) == len(new) and len(old) <= _MAX_DENSE_KEYS and old.keys() == new.keys():
        mask = 0
        bit = 1
        values: list[Any] = [0]
        for key in sorted(old):
            ov = old[key]
            nv = new[key]
            if ov is not nv:
                d = _diff_value(ov, nv, dense)
                if d is not _SAME:
                    mask |= bit
                    values.append(d)
            bit <<= 1
        if not mask:
            return _SAME
        values[0] = mask
        return values
    patch: dict[str, Any] = {}
    for key in sorted(old.keys() | new.keys()):
        if key not in new:
            patch[key] = DELETE
        elif key not in old:
            patch[key] = _canon(new[key])
        else:
            ov = old[key]
            nv = new[key]
            if ov is not nv:
                d = _diff_value(ov, nv, dense)
                if d is not _SAME:
                    patch[key] = d
    return patch if patch else _SAME


def _diff_value(ov: Any, nv: Any, dense: bool) -> Any:
    tn = type(nv)
    if tn is dict:
        if type(ov) is dict:
            return _diff_map(ov, nv, dense)
        return _canon(nv)
    if type(ov) is dict:
        # A map becoming a list would read as a dense patch; wrap every
        # non-scalar replacement of a map to be explicit.
        return Replace(_canon(nv)) if tn is list else nv
    if _same(ov, nv):
        return _SAME
    return _canon(nv) if tn is list else nv


def _canon(value: Any) -> Any:
    """``value`` with the keys of every map in it sorted: a value that goes into a
    delta whole must not carry the insertion order of the state it came from."""
    t = type(value)
    if t is dict:
        return {k: _canon(value[k]) for k in sorted(value)}
    if t is list:
        return [_canon(v) for v in value]
    return value


def apply(base: dict[str, Any], delta: Any) -> dict[str, Any]:
    """Return the map that ``delta`` makes of ``base``; ``base`` is left as it was.

    Subtrees the delta does not touch are shared between base and result.
    Raises ``InvalidDelta`` when the delta cannot apply to this base (a dense
    mask that does not match the base's keys, a marker in the wrong place).
    """
    if type(base) is not dict:
        raise InvalidDelta("a delta applies to a map")
    return _apply_to_map(base, delta)


def _apply_to_map(base: dict[str, Any], delta: Any) -> dict[str, Any]:
    if type(delta) is dict:
        if not delta:
            return base
        out = dict(base)
        for key, op in delta.items():
            if op is DELETE:
                out.pop(key, None)
            else:
                out[key] = _apply_value(base.get(key), op)
        return out
    if type(delta) is list:
        return _apply_dense(base, delta)
    raise InvalidDelta(f"a map patch must be a map or a dense list, not {type(delta).__name__}")


def _apply_dense(base: dict[str, Any], delta: list[Any]) -> dict[str, Any]:
    if not delta:
        raise InvalidDelta("a dense patch needs its mask")
    mask = delta[0]
    if type(mask) is not int or mask < 0:
        raise InvalidDelta("a dense patch mask must be a non-negative integer")
    if mask >> len(base):
        raise InvalidDelta(f"dense mask {mask:#x} names keys the base (of {len(base)}) lacks")
    if mask.bit_count() != len(delta) - 1:
        raise InvalidDelta("a dense patch must carry one value per set mask bit")
    out = dict(base)
    it = iter(delta)
    next(it)
    bit = 1
    for key in sorted(base):
        if mask & bit:
            op = next(it)
            if op is DELETE:
                raise InvalidDelta("DELETE cannot appear in a dense patch")
            out[key] = _apply_value(base[key], op)
        bit <<= 1
    return out


def _apply_value(old: Any, op: Any) -> Any:
    t = type(op)
    if t is Replace:
        return _plain(op.value)
    if t is dict:
        return _apply_to_map(old if type(old) is dict else {}, op)
    if t is list:
        return _apply_dense(old, op) if type(old) is dict else _plain(op)
    if op is DELETE:
        raise InvalidDelta("DELETE can only remove a key of a map patch")
    return op


def _plain(value: Any) -> Any:
    """Check that a value taken whole (a list, a ``Replace`` value) holds no
    markers, which would otherwise end up inside the state."""
    t = type(value)
    if t is list:
        for v in value:
            _plain(v)
    elif t is dict:
        for v in value.values():
            _plain(v)
    elif value is DELETE or t is Replace:
        raise InvalidDelta(f"{value!r} inside a value taken whole")
    return value


_F32 = struct.Struct("<f")


def f32(x: float) -> float:
    """Round ``x`` to the nearest IEEE 754 binary32 value (how state floats travel).

    Values beyond binary32's range become infinities; NaN stays NaN.
    """
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def quantize(value: Any) -> Any:
    """Return ``value`` with every float rounded to binary32 (see ``f32``).

    Works on states and on deltas alike (the value inside a ``Replace`` too).
    """
    t = type(value)
    if t is float:
        return f32(value)
    if t is dict:
        return {k: quantize(v) for k, v in value.items()}
    if t is list:
        return [quantize(v) for v in value]
    if t is Replace:
        return Replace(quantize(value.value))
    return value
