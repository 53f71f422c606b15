"""Delta tests: diff/apply round trips (sparse and dense, and through both codecs),
immutability, determinism, invalid deltas, binary32 floats and the byte budget
of a tick of moving players."""

from __future__ import annotations

import copy
import math
import pickle
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    DELETE,
    CborCodec,
    Input,
    InvalidDelta,
    MsgpackCodec,
    Replace,
    State,
    apply,
    diff,
    f32,
    quantize,
)

MSGPACK = MsgpackCodec()
CBOR = CborCodec()
BOTH = [MSGPACK, CBOR]
# The base of the invalid-delta cases.
BASE = {"a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2]}


def ident(value) -> str:
    """A short test id; the shared base is named."""
    if value is BASE:
        return "BASE"
    text = re.sub(r" at 0x[0-9a-f]+", "", repr(value))
    return text if len(text) <= 48 else text[:45] + "..."


# -- strategies ----------------------------------------------------------------

# A small key alphabet, so that old and new states share and collide on keys.
KEYS = st.text(alphabet="abcdefg", min_size=1, max_size=2)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, width=32),  # state floats are binary32 already
    st.sampled_from([0, 1, 0.0, 1.0, -0.0, True, False]),  # the 1 / 1.0 / True family
    st.text(max_size=4),
    st.binary(max_size=4),
)
VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(KEYS, kids, max_size=4),
    max_leaves=15,
)
STATES = st.dictionaries(KEYS, VALUES, max_size=5)


@st.composite
def evolved(draw, value):
    """A new version of ``value``: kept subtrees are shared (``is``), as they are
    between states built by ``apply``; others change, go away or appear."""
    if type(value) is not dict:
        return draw(VALUES)
    out = {}
    for key, item in value.items():
        what = draw(st.sampled_from(["keep", "keep", "change", "delete", "evolve"]))
        if what == "keep":
            out[key] = item
        elif what == "change":
            out[key] = draw(VALUES)
        elif what == "evolve":
            out[key] = draw(evolved(item))
    for key in draw(st.lists(KEYS, max_size=2)):
        out.setdefault(key, draw(VALUES))
    if draw(st.booleans()):  # shuffle the insertion order too
        out = dict(reversed(out.items()))
    return out


@st.composite
def state_pairs(draw):
    old = draw(STATES)
    if draw(st.integers(0, 3)) == 0:
        return old, draw(STATES)
    return old, draw(evolved(old))


def state_eq(a, b) -> bool:
    """Equal as states: maps key by key, scalars by type and value.

    Lists compare with ``==`` as a whole: a list is replaced when it is not
    equal, so [1] and [True] are the same list to ``diff``; and 0.0 and -0.0
    are the same number.
    """
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(state_eq(a[k], b[k]) for k in a)
    return a == b


def reordered(value):
    """An equal copy with every map's insertion order reversed."""
    if type(value) is dict:
        return {k: reordered(v) for k, v in reversed(value.items())}
    if type(value) is list:
        return [reordered(v) for v in value]
    return value


def over_the_wire(codec, delta, *, state_frame: bool):
    if state_frame:
        return codec.decode(codec.state_frame(codec.state_body(60000, 1, delta))).delta
    return codec.decode(codec.encode(Input(7, delta))).delta


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@given(pair=state_pairs())
def test_apply_diff_round_trip(dense, pair):
    old, new = pair
    delta = diff(old, new, dense=dense)
    result = apply(old, delta)
    assert result == new
    assert state_eq(result, new)
    for codec in BOTH:
        for state_frame in (False, True):
            wired = over_the_wire(codec, delta, state_frame=state_frame)
            assert state_eq(apply(old, wired), new)


@given(pair=state_pairs())
def test_dense_is_no_larger_than_sparse_for_small_maps(pair):
    # Per changed map, a dense patch costs an array header and a one-byte mask
    # (up to 7 keys); the sparse one a map header and at least one key.
    old, new = pair
    sparse = MSGPACK.state_body(1, 1, diff(old, new))
    dense = MSGPACK.state_body(1, 1, diff(old, new, dense=True))
    assert len(dense) <= len(sparse)


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@given(pair=state_pairs())
def test_apply_never_mutates(dense, pair):
    old, new = pair
    delta = diff(old, new, dense=dense)
    old_copy, delta_copy = copy.deepcopy(old), copy.deepcopy(delta)
    old_repr, delta_repr = repr(old), repr(delta)
    apply(old, delta)
    apply(old, delta)
    assert state_eq(old, old_copy)
    assert delta == delta_copy
    # repr also catches a changed key order
    assert (repr(old), repr(delta)) == (old_repr, delta_repr)


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@given(state=STATES)
def test_diff_of_equal_states_is_empty(dense, state):
    assert diff(state, state, dense=dense) == {}
    assert diff(state, copy.deepcopy(state), dense=dense) == {}
    assert diff(state, reordered(state), dense=dense) == {}
    assert apply(state, {}) == state


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@given(pair=state_pairs())
def test_equal_inputs_give_equal_bytes(dense, pair):
    old, new = pair
    delta = diff(old, new, dense=dense)
    other = diff(reordered(old), reordered(new), dense=dense)
    for codec in BOTH:
        assert codec.state_body(5, 1, delta) == codec.state_body(5, 1, other)
        assert codec.encode(Input(1, delta)) == codec.encode(Input(1, other))


def test_regression_new_subtrees_encode_in_key_order():
    # A map that enters a delta whole used to keep its insertion order, so
    # two equal states gave different msgpack bytes.
    old = {"a": 1}
    one = {"a": 1, "p": {"x": 1, "y": {"b": 2, "a": 1}}, "l": [{"z": 1, "y": 2}]}
    two = {"l": [{"y": 2, "z": 1}], "p": {"y": {"a": 1, "b": 2}, "x": 1}, "a": 1}
    assert one == two
    for dense in (False, True):
        assert MSGPACK.state_body(1, 1, diff(old, one, dense=dense)) == MSGPACK.state_body(
            1, 1, diff(old, two, dense=dense)
        )


def test_apply_shares_untouched_subtrees():
    old = {"room": {"code": "ABCD"}, "players": {"p1": {"x": 1.0}, "p2": {"x": 2.0}}}
    new = apply(old, diff(old, {**old, "players": {**old["players"], "p2": {"x": 3.0}}}))
    assert new["room"] is old["room"]
    assert new["players"]["p1"] is old["players"]["p1"]
    assert new["players"]["p2"] == {"x": 3.0}
    assert old["players"]["p2"] == {"x": 2.0}


# -- the patch formats ---------------------------------------------------------


def test_sparse_patch_format():
    old = {"a": 1, "b": {"x": 1, "y": 2}, "c": 3}
    new = {"a": 1, "b": {"x": 1, "y": 5, "z": 0}, "d": 4}
    delta = diff(old, new)
    assert delta == {"b": {"y": 5, "z": 0}, "c": DELETE, "d": 4}
    assert list(delta) == sorted(delta)
    assert apply(old, delta) == new


def test_dense_patch_format():
    old = {"b": {"y": 2, "x": 1}, "a": 1}
    new = {"a": 2, "b": {"x": 1, "y": 5}}
    # Keys in sorted order: a is bit 0, b is bit 1; inside b, x is bit 0, y is bit 1.
    assert diff(old, new, dense=True) == [0b11, 2, [0b10, 5]]
    assert apply(old, [0b11, 2, [0b10, 5]]) == new
    assert apply(old, [0b10, [0b01, 7]]) == {"a": 1, "b": {"x": 7, "y": 2}}


def test_dense_falls_back_to_sparse_when_keys_change():
    old = {"a": {"x": 1}, "b": 1}
    new = {"a": {"x": 2, "y": 1}, "b": 1}
    delta = diff(old, new, dense=True)
    assert delta == [0b01, {"x": 2, "y": 1}]
    assert apply(old, delta) == new
    assert diff({"a": 1}, {"b": 1}, dense=True) == {"a": DELETE, "b": 1}


def test_dense_needs_a_mask_that_fits_64_bits():
    old = {f"k{i:02}": i for i in range(64)}
    new = {**old, "k63": -1}
    delta = diff(old, new, dense=True)
    assert delta == {"k63": -1}
    assert apply(old, delta) == new
    old63 = {f"k{i:02}": i for i in range(63)}
    delta63 = diff(old63, {**old63, "k62": -1}, dense=True)
    assert delta63 == [1 << 62, -1]
    for codec in BOTH:
        assert apply(old63, over_the_wire(codec, delta63, state_frame=True)) == {
            **old63,
            "k62": -1,
        }


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
def test_map_becoming_a_list_uses_replace(dense):
    old = {"p": {"x": 1, "y": 2}, "q": 0}
    new = {"p": [1, 2], "q": 0}
    delta = diff(old, new, dense=dense)
    op = delta["p"] if type(delta) is dict else delta[1]
    assert op == Replace([1, 2])
    assert apply(old, delta) == new
    for codec in BOTH:
        for state_frame in (False, True):
            wired = over_the_wire(codec, delta, state_frame=state_frame)
            assert state_eq(apply(old, wired), new)


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"x": 1}, []),
        ({"x": 1}, [{"x": 1}]),
        ({}, []),
        ([1], {"x": 1}),
        (5, {"x": 1}),
        ({"x": 1}, 5),
        ({"x": 1}, None),
        (None, {}),
        ("s", [1, 2]),
        ({"x": {"y": 1}}, {"x": [0b1, 2]}),  # a list that looks like a dense patch
    ],
    ids=ident,
)
def test_value_type_changes(dense, before, after):
    old = {"k": before, "other": 1}
    new = {"k": after, "other": 1}
    delta = diff(old, new, dense=dense)
    assert state_eq(apply(old, delta), new)
    for codec in BOTH:
        assert state_eq(apply(old, over_the_wire(codec, delta, state_frame=True)), new)


@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
@pytest.mark.parametrize(
    ("before", "after"),
    [(1, 1.0), (1, True), (0, False), (1.0, True), (0, 0.0), (0, None), ("1", 1), (b"1", "1")],
    ids=ident,
)
def test_type_confusion_is_a_change(dense, before, after):
    for old, new in (({"k": before}, {"k": after}), ({"k": after}, {"k": before})):
        delta = diff(old, new, dense=dense)
        assert delta != {}
        result = apply(old, delta)
        assert type(result["k"]) is type(new["k"])
        assert state_eq(result, new)
        nested = diff({"m": old, "n": 0}, {"m": new, "n": 0}, dense=dense)
        assert state_eq(apply({"m": old, "n": 0}, nested), {"m": new, "n": 0})


def test_diff_needs_maps():
    with pytest.raises(TypeError):
        diff([], {})
    with pytest.raises(TypeError):
        diff({}, None)


# -- invalid deltas ------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "delta"),
    [
        (BASE, [0b001]),  # one bit set, no value
        (BASE, [0b001, 5, 6]),  # one bit set, two values
        (BASE, [0b000, 5]),
        (BASE, [0b1000, 5]),  # a fourth key the base lacks
        (BASE, [1 << 200, 5]),
        (BASE, [0b001, DELETE]),  # DELETE in a dense patch
        (BASE, [0b010, [0b01, DELETE]]),
        (BASE, []),  # no mask
        (BASE, ["1", 5]),
        (BASE, [-1]),
        (BASE, [True, 5]),
        (BASE, [1.0, 5]),
        (BASE, [None]),
        (BASE, {"b": [0b100, 1]}),  # a nested dense patch naming a key b lacks
        (BASE, {"b": [0b01]}),
        (BASE, 5),  # not a patch at all
        (BASE, None),
        (BASE, "patch"),
        (BASE, DELETE),
        (BASE, Replace({})),
        (BASE, {"a": {"z": DELETE, "w": [DELETE]}}),
        ([], {}),  # a dense or sparse patch against a non-map
        ([1], [0b1, 2]),
        (None, {}),
        (5, [0]),
        # Markers inside values taken whole would end up in the state.
        (BASE, {"a": Replace(DELETE)}),
        (BASE, {"a": Replace([1, DELETE])}),
        (BASE, {"a": Replace({"k": DELETE})}),
        (BASE, {"a": Replace(Replace(1))}),
        (BASE, {"c": [1, DELETE]}),
        (BASE, {"c": [Replace(1)]}),
        (BASE, {"new": [{"k": DELETE}]}),
        (BASE, [0b100, [DELETE]]),
    ],
    ids=ident,
)
def test_invalid_deltas(base, delta):
    before = copy.deepcopy(base)
    with pytest.raises(InvalidDelta):
        apply(base, delta)
    assert base == before


def test_delete_of_a_missing_key_is_harmless():
    assert apply(BASE, {"zz": DELETE}) == BASE


def test_a_map_for_a_non_map_is_the_map_itself():
    assert apply({"a": 1}, {"a": {"x": {"y": 2}}}) == {"a": {"x": {"y": 2}}}
    assert apply({"a": 1}, {"a": {"x": DELETE}}) == {"a": {}}


def test_empty_dense_patch_of_an_empty_map():
    assert apply({}, [0]) == {}


# -- markers -------------------------------------------------------------------


def test_delete_is_a_singleton():
    assert type(DELETE)() is DELETE
    assert copy.deepcopy({"k": DELETE})["k"] is DELETE
    assert copy.copy(DELETE) is DELETE
    assert pickle.loads(pickle.dumps(DELETE)) is DELETE
    assert repr(DELETE) == "DELETE"


def test_replace_compares_by_value_and_type():
    assert Replace([1]) == Replace([1])
    assert Replace(1) != Replace(1.0)
    assert Replace(1) != Replace(True)
    assert Replace(1) != 1
    assert hash(Replace([1, 2])) == hash(Replace([1, 2]))
    assert repr(Replace([1])) == "Replace([1])"


# -- binary32 floats -----------------------------------------------------------


@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_f32_is_the_nearest_binary32(x):
    y = f32(x)
    if abs(x) <= 3.4028234663852886e38:
        assert y == struct.unpack("<f", struct.pack("<f", x))[0]
    assert f32(y) == y or math.isinf(y)


def test_f32_edges():
    assert f32(0.1) == 0.10000000149011612
    assert f32(1e300) == math.inf
    assert f32(-1e300) == -math.inf
    assert math.isnan(f32(math.nan))
    assert math.copysign(1, f32(-0.0)) == -1
    assert f32(1e-50) == 0.0
    assert type(f32(1.5)) is float


def test_quantize():
    value = {"a": 0.1, "b": [0.2, {"c": 0.3}], "d": 1, "e": True, "f": "0.1", "g": None}
    before = copy.deepcopy(value)
    q = quantize(value)
    assert q == {
        "a": f32(0.1),
        "b": [f32(0.2), {"c": f32(0.3)}],
        "d": 1,
        "e": True,
        "f": "0.1",
        "g": None,
    }
    assert type(q["d"]) is int and q["e"] is True
    assert value == before
    assert quantize(q) == q


def test_quantize_rounds_deltas_too():
    delta = {"a": Replace([0.1, {"b": 1e300}]), "c": DELETE, "d": [0b1, 0.2]}
    q = quantize(delta)
    assert q == {"a": Replace([f32(0.1), {"b": math.inf}]), "c": DELETE, "d": [0b1, f32(0.2)]}
    assert q["c"] is DELETE
    # A quantized delta fits a binary32 state frame, whatever the client sent.
    MSGPACK.state_body(1, 1, q)


@given(state=STATES)
def test_quantized_state_survives_a_state_frame(state):
    for codec in BOTH:
        keyframe = codec.decode(codec.encode(State(1, 0, quantize(state)))).delta
        assert state_eq(keyframe, quantize(state))


# -- the byte budget -----------------------------------------------------------

COORD = st.floats(-2000, 2000, width=32)
ANGLE = st.floats(-3.140625, 3.140625, width=32)  # bounds exact in binary32


def arena(positions, seqs):
    players = {
        f"p{i}": {"x": x, "y": y, "angle": a, "hp": 100, "seq": s}
        for i, ((x, y, a), s) in enumerate(zip(positions, seqs, strict=True))
    }
    return {
        "game": {"phase": "play", "round": 3, "ends_at": 61234},
        "players": players,
        "room": {"code": "ABCD", "host": "p0", "mode": "arena"},
    }


@given(
    before=st.lists(st.tuples(COORD, COORD, ANGLE), min_size=8, max_size=8),
    after=st.lists(st.tuples(COORD, COORD, ANGLE), min_size=8, max_size=8),
    seqs=st.lists(st.integers(1000, 60000), min_size=8, max_size=8),
    tick=st.integers(1000, 60000),
)
def test_byte_budget_of_a_tick_of_moving_players(before, after, seqs, tick):
    """Eight players each changing x, y, angle and seq fit 175 bytes in msgpack.

    Recorded sizes for one such state (msgpack / CBOR):
    all 8 moved: 171 / 179 bytes; 2 of 8 moved: 50 / 53 bytes;
    the keyframe: 406 / 414 bytes. The sparse format for all 8: 304 bytes.
    """
    old = arena(before, seqs)
    new = arena(after, [s + 1 for s in seqs])
    delta = diff(old, new, dense=True)
    frame = MSGPACK.state_frame(MSGPACK.state_body(tick, 1, delta))
    assert len(frame) <= 175
    assert state_eq(apply(old, MSGPACK.decode(frame).delta), new)


def test_delta_sizes_against_the_keyframe():
    positions = [(f32(10.5 * i), f32(-3.25 * i), f32(0.1 * i)) for i in range(8)]
    moved = [(f32(x + 1.5), f32(y - 0.5), f32(a + 0.01)) for x, y, a in positions]
    old = arena(positions, [40000] * 8)
    new_all = arena(moved, [40001] * 8)
    two = [moved[i] if i in (2, 5) else positions[i] for i in range(8)]
    new_two = arena(two, [40001 if i in (2, 5) else 40000 for i in range(8)])

    def size(codec, base, new, back=1):
        delta = new if back == 0 else diff(base, new, dense=True)
        return len(codec.state_frame(codec.state_body(59999, back, delta)))

    for codec in BOTH:
        all_moved = size(codec, old, new_all)
        two_moved = size(codec, old, new_two)
        keyframe = size(codec, None, new_all, back=0)
        assert two_moved < all_moved < keyframe
        assert two_moved * 3 < all_moved
        assert all_moved * 2 < keyframe
