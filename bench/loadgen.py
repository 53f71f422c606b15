"""The load-generator worker: many cheap raw-WebSocket game clients on one epoll loop.

The bench suites start it as ``python -m bench.loadgen`` (pinned to the client
CPUs), write one JSON spec line to its stdin, then commands (``go``), and read
JSON lines from its stdout (``progress``, ``ready``, ``result``, ``error``).

It benchmarks the server, not a client SDK, so each client is as cheap as we
can make it in Python: a non-blocking socket with a hand-written client side
of RFC 6455 (masked frames out, unmasked frames in, ping/close answered),
inputs encoded by hand into msgpack bytes, and one ``select.epoll`` loop for
every client of the worker (no task per client, no wake-up per message).
Sends run on absolute schedules (open loop: never waiting for a reply).

Decoding takes a shortcut: a state frame is unpacked with msgpack but never
turned into frames or applied to a state; ``SeqModel`` walks the delta for
what the client needs (every player's ``seq``). The shortcut is checked in
the run: every ``verify_every``-th client also decodes each frame in full
(``Codec.decode``) and applies it to a mirror with ``protocol.apply``, and any
difference between the two is counted (``verify.mismatches``, must be 0).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import random
import select
import socket
import struct
import sys
import time
from collections import deque
from typing import Any

import msgpack

from protocol import (
    DELETE,
    PROTOCOL_VERSION,
    Create,
    Error,
    Event,
    Hello,
    Join,
    Joined,
    MsgpackCodec,
    Ping,
    Pong,
    ProtocolError,
    Replace,
    Rpc,
    RpcResult,
    Signal,
    State,
    Welcome,
    apply,
)

__all__ = ["SeqModel", "Worker", "encode_input", "main", "mask_frame"]

# client states
CONNECTING, UPGRADING, HELLO, WAIT_CODE, JOINING, RUNNING, DONE = range(7)
_SETUP_STATES = (CONNECTING, UPGRADING, HELLO, WAIT_CODE, JOINING)

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLERR = select.EPOLLERR | select.EPOLLHUP
_MASK_BYTES = 1024  # payloads up to this length are masked with one int XOR
_F32 = struct.Struct(">f")
_INPUT_TAIL = struct.Struct(">8sf3sf3sf")  # {"angle": f32, "x": f32, "y": f32}
_K_ANGLE = b"\x83\xa5angle\xca"
_K_X = b"\xa1x\xca"
_K_Y = b"\xa1y\xca"
_SIGNAL_PAYLOAD = struct.Struct(">dI")
_TWO_PI = 6.2831853


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 1 and not data:
        return DELETE
    if code == 2:
        return Replace(msgpack.unpackb(data, raw=False, ext_hook=_ext_hook))
    raise ValueError(f"unknown msgpack extension {code}")


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook)


def encode_uint(n: int) -> bytes:
    """The shortest msgpack encoding of a non-negative integer."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return b"\xcc" + bytes((n,))
    if n < 0x10000:
        return b"\xcd" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\xce" + n.to_bytes(4, "big")
    return b"\xcf" + n.to_bytes(8, "big")


def encode_input(seq: int, angle: float, x: float, y: float) -> bytes:
    """An ``Input(seq, {"angle", "x", "y"})`` frame in msgpack, floats as binary32.

    Byte for byte what ``MsgpackCodec`` makes of the same frame with the floats
    written as float 32 (the relay keeps state floats in binary32 anyway)."""
    return b"\x93\x08" + encode_uint(seq) + _INPUT_TAIL.pack(_K_ANGLE, angle, _K_X, x, _K_Y, y)


def mask_frame(payload: bytes, key: bytes, key_int: int, opcode: int = 2) -> bytes:
    """One FIN client frame (RFC 6455 5.3: masked) carrying ``payload``.

    ``key_int`` is ``key`` repeated to ``_MASK_BYTES`` bytes as a big-endian
    int, so masking a short payload is one XOR of two ints."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n)) + key
    elif n < 0x10000:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big") + key
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big") + key
    if n == 0:
        return head
    if n <= _MASK_BYTES:
        masked = (int.from_bytes(payload, "big") ^ (key_int >> (8 * (_MASK_BYTES - n)))).to_bytes(
            n, "big"
        )
    else:
        reps = key * (n // 4 + 1)
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(reps[:n], "big")).to_bytes(
            n, "big"
        )
    return head + masked


class ShortcutError(Exception):
    """A delta the seq shortcut could not follow (counted; the model is then unusable)."""


class SeqModel:
    """Just enough of a room's public state to know every player's ``seq``.

    It follows the delta format of docs/protocol.md without building state:
    the sorted top-level keys, the sorted player ids, and for each player its
    sorted entity keys and its seq. ``apply_delta`` walks a delta (dense and
    sparse patches, ``DELETE``, ``Replace``) and updates only that.
    """

    __slots__ = ("ekeys", "pids", "players_bit", "seq", "seqbit", "top")

    def __init__(self) -> None:
        self.top: list[str] = []
        self.players_bit = -1
        self.pids: list[str] = []
        self.ekeys: dict[str, list[str] | None] = {}
        self.seqbit: dict[str, int] = {}
        self.seq: dict[str, Any] = {}

    def reset(self, state: Any) -> None:
        """Take a keyframe (the whole state map)."""
        self.top = sorted(state) if type(state) is dict else []
        self.players_bit = self.top.index("players") if "players" in self.top else -1
        self._reset_players(state.get("players") if type(state) is dict else None)

    def _reset_players(self, players: Any) -> None:
        self.pids = []
        self.ekeys = {}
        self.seqbit = {}
        self.seq = {}
        if type(players) is dict:
            for pid, entity in players.items():
                self._set_entity(pid, entity)
            self.pids = sorted(players)

    def _set_entity(self, pid: str, entity: Any) -> None:
        if type(entity) is dict:
            keys = sorted(entity)
            self.ekeys[pid] = keys
            self.seqbit[pid] = keys.index("seq") if "seq" in entity else -1
            self.seq[pid] = entity.get("seq")
        else:  # not a map: no fields, no seq
            self.ekeys[pid] = None
            self.seqbit[pid] = -1
            self.seq[pid] = None

    def seqs(self) -> dict[str, Any]:
        return dict(self.seq)

    def apply_delta(self, delta: Any) -> None:
        """Follow one state delta. Raises ``ShortcutError`` for a malformed one."""
        try:
            if type(delta) is list:
                mask = delta[0]
                b = self.players_bit
                if b >= 0 and mask >> b & 1:
                    self._players(delta[(mask & ((1 << b) - 1)).bit_count() + 1])
            elif type(delta) is dict:
                for key, op in delta.items():
                    self._top_sparse(key, op)
            else:
                raise ShortcutError(f"a state delta is a map or a dense list, not {delta!r}")
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise ShortcutError(f"{type(exc).__name__}: {exc}") from None

    def _top_sparse(self, key: str, op: Any) -> None:
        top = self.top
        if op is DELETE:
            if key in top:
                top.remove(key)
        elif key not in top:
            top.append(key)
            top.sort()
        self.players_bit = top.index("players") if "players" in top else -1
        if key != "players":
            return
        if op is DELETE:
            self._reset_players(None)
        elif type(op) is Replace:
            self._reset_players(op.value)
        elif type(op) is dict or type(op) is list:
            self._players(op)
        else:
            self._reset_players(None)

    def _players(self, op: Any) -> None:
        t = type(op)
        if t is list:  # dense over the sorted player ids
            mask = op[0]
            if mask >> len(self.pids):
                raise ShortcutError("dense players mask names unknown players")
            pids = self.pids
            seqbit = self.seqbit
            seq = self.seq
            j = 1
            i = 0
            while mask:
                if mask & 1:
                    eop = op[j]
                    j += 1
                    pid = pids[i]
                    if type(eop) is list and seqbit[pid] >= 0:
                        emask = eop[0]
                        b = seqbit[pid]
                        if emask >> b & 1:
                            seq[pid] = eop[(emask & ((1 << b) - 1)).bit_count() + 1]
                            if type(seq[pid]) is not int:
                                seq[pid] = _scalar(seq[pid])
                    else:
                        self._entity(pid, eop)
                mask >>= 1
                i += 1
        elif t is dict:  # sparse: players may come and go
            changed = False
            for pid, eop in op.items():
                if eop is DELETE:
                    if pid in self.seq:
                        del self.seq[pid], self.ekeys[pid], self.seqbit[pid]
                        changed = True
                elif pid not in self.seq:
                    self._entity_new(pid, eop)
                    changed = True
                else:
                    self._entity(pid, eop)
            if changed:
                self.pids = sorted(self.seq)
        elif t is Replace:
            self._reset_players(op.value)
        else:
            self._reset_players(None)

    def _entity(self, pid: str, eop: Any) -> None:
        keys = self.ekeys[pid]
        t = type(eop)
        if keys is None:  # the base is not a map: any op makes the value anew
            self._entity_new(pid, eop)
        elif t is list:
            emask = eop[0]
            if emask >> len(keys):
                raise ShortcutError("dense entity mask names unknown fields")
            b = self.seqbit[pid]
            if b >= 0 and emask >> b & 1:
                self.seq[pid] = _scalar(eop[(emask & ((1 << b) - 1)).bit_count() + 1])
        elif t is dict:
            for key, v in eop.items():
                if v is DELETE:
                    if key in keys:
                        keys.remove(key)
                elif key not in keys:
                    keys.append(key)
                    keys.sort()
                if key == "seq":
                    self.seq[pid] = None if v is DELETE else _scalar(v)
            self.seqbit[pid] = keys.index("seq") if "seq" in keys else -1
        elif t is Replace:
            self._set_entity(pid, eop.value)
        else:
            self._set_entity(pid, eop)

    def _entity_new(self, pid: str, op: Any) -> None:
        """An entity made by ``op`` where there was none (or no map): a map op is a
        patch of the empty map, anything else is the value itself."""
        if type(op) is dict:
            keys = sorted(k for k, v in op.items() if v is not DELETE)
            self.ekeys[pid] = keys
            self.seqbit[pid] = keys.index("seq") if "seq" in keys else -1
            v = op.get("seq")
            self.seq[pid] = None if v is None or v is DELETE else _scalar(v)
        elif type(op) is Replace:
            self._set_entity(pid, op.value)
        else:
            self._set_entity(pid, op)


def _scalar(v: Any) -> Any:
    """A seq value as the state holds it; a nested patch there is beyond the shortcut."""
    if type(v) is Replace:
        return v.value
    if type(v) in (dict, list):
        raise ShortcutError("a patch where a seq value was expected")
    return v


class Conn:
    """One client connection and its counters."""

    __slots__ = (
        "active",
        "angle",
        "buf",
        "bytes_in",
        "bytes_out",
        "creator",
        "delta_bytes",
        "deltas",
        "error_codes",
        "fd",
        "frag",
        "frames",
        "index",
        "key",
        "key_int",
        "keyframe_bytes",
        "keyframes",
        "mirror",
        "mirror_tick",
        "model",
        "msgs_in",
        "next_id",
        "out",
        "pending",
        "pending_seq",
        "pid",
        "room",
        "rpc_pending",
        "rpc_seq",
        "rpc_target",
        "seq",
        "sock",
        "state",
        "t_arrive",
        "t_join_sent",
        "t_joined",
        "t_open",
        "t_stage",
        "t_welcome",
        "tick_rate",
        "ws_key",
        "x",
        "y",
    )

    def __init__(self, index: int, room: Room, creator: bool, rng: random.Random) -> None:
        self.index = index
        self.room = room
        self.creator = creator
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = CONNECTING
        self.active = False  # started and not yet joined or failed
        self.buf = b""
        self.frag: list[bytes] | None = None
        self.out = bytearray()
        self.key = rng.randbytes(4)
        self.key_int = int.from_bytes(self.key * (_MASK_BYTES // 4), "big")
        self.ws_key = base64.b64encode(rng.randbytes(16))
        self.pid = ""
        self.model = SeqModel()
        self.mirror: dict[str, Any] | None = None
        self.mirror_tick = -1
        self.frames = 0
        self.msgs_in = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.keyframes = 0
        self.keyframe_bytes = 0
        self.deltas = 0
        self.delta_bytes = 0
        self.seq = 0
        self.pending: deque[float] = deque()
        self.pending_seq = 1  # the seq of pending[0]
        self.rpc_pending: dict[int, float] = {}
        self.rpc_target: Any = "room"
        self.rpc_seq = 0
        self.next_id = 1
        self.x = rng.random() * 100.0
        self.y = rng.random() * 100.0
        self.angle = rng.random() * _TWO_PI
        self.error_codes: dict[str, int] = {}
        self.t_arrive = 0.0
        self.t_stage = 0.0
        self.t_open = 0.0
        self.t_welcome = 0.0
        self.t_join_sent = 0.0
        self.t_joined = 0.0
        self.tick_rate = 0.0


class Room:
    __slots__ = ("code", "conns", "failed", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self.code: str | None = None
        self.conns: list[Conn] = []
        self.failed = False


class Wheel:
    """An open-loop schedule: each client fires every ``period`` at its own phase.

    Clients are kept sorted by phase, so the next due one is always at the
    cursor: O(1) per fire and no heap."""

    __slots__ = ("base", "conns", "i", "n", "period", "phases")

    def __init__(self, items: list[tuple[float, Conn]], period: float, start: float) -> None:
        items.sort(key=lambda item: item[0])
        self.phases = [p for p, _ in items]
        self.conns = [c for _, c in items]
        self.n = len(items)
        self.period = period
        self.base = start
        self.i = 0

    def due(self) -> float:
        return self.base + self.phases[self.i] if self.n else float("inf")

    def advance(self) -> None:
        self.i += 1
        if self.i == self.n:
            self.i = 0
            self.base += self.period


class _Hist:
    """``bench._common.LatencyHistogram`` without the import cost on the hot path."""

    __slots__ = ("counts", "max", "n", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max = 0.0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        i = int(seconds * 10000.0)
        if i > 50000:
            i = 50000
        counts = self.counts
        counts[i] = counts.get(i, 0) + 1
        self.n += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": 5.0,
            "counts": {str(i): c for i, c in self.counts.items()},
            "n": self.n,
            "max": self.max,
            "total": self.total,
        }


class Worker:
    """One worker process's clients and its loop. ``spec`` keys (all JSON):

    ``host``, ``port``: the server. ``mode``: ``"rooms"`` (connect everyone,
    report ``ready``, then run the schedules after ``go``) or ``"storm"``
    (clients arrive at ``storm_rate`` per second after ``go``, for
    ``storm_duration`` seconds, and just join). ``clients``, ``room_size``,
    ``room_mode``: rooms of ``room_size``; the first client of each creates
    it, the others join by code. ``first_index``: this worker's first client
    number (seeds and phases are per client, so results do not depend on how
    clients are split across workers). ``seed``. ``input_hz``, ``rpc_hz``,
    ``signal_hz``: per-client rates (0: none). ``rpc_target``: ``"room"`` or
    ``"next"`` (the next player by id). ``verify_every``: every N-th client
    also decodes in full (0: none). ``connect_concurrency``: clients in setup
    at once (rooms mode). ``setup_timeout``: seconds a client may take from
    arrival to joined.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host = str(spec.get("host", "127.0.0.1"))
        self.port = int(spec["port"])
        self.mode = str(spec.get("mode", "rooms"))
        self.room_size = int(spec.get("room_size", 8))
        self.room_mode = str(spec.get("room_mode", "arena"))
        self.first_index = int(spec.get("first_index", 0))
        self.seed = int(spec.get("seed", 0))
        self.input_hz = float(spec.get("input_hz", 0.0))
        self.rpc_hz = float(spec.get("rpc_hz", 0.0))
        self.rpc_target = str(spec.get("rpc_target", "room"))
        self.rpc_method = str(spec.get("rpc_method", "bench_ping"))
        self.signal_hz = float(spec.get("signal_hz", 0.0))
        self.verify_every = int(spec.get("verify_every", 32))
        self.concurrency = int(spec.get("connect_concurrency", 64))
        self.setup_timeout = float(spec.get("setup_timeout", 15.0))
        self.storm_rate = float(spec.get("storm_rate", 0.0))
        self.storm_duration = float(spec.get("storm_duration", 0.0))
        self.codec = MsgpackCodec()
        n = int(spec["clients"])
        self.rooms: list[Room] = []
        self.conns: list[Conn] = []
        for i in range(n):
            g = self.first_index + i
            if i % self.room_size == 0:
                self.rooms.append(Room(len(self.rooms)))
            room = self.rooms[-1]
            c = Conn(g, room, creator=not room.conns, rng=random.Random(f"{self.seed}:conn:{g}"))
            room.conns.append(c)
            if self.verify_every > 0 and g % self.verify_every == 0:
                c.mirror = {}
            self.conns.append(c)
        if (
            self.verify_every > 0
            and self.conns
            and not any(c.mirror is not None for c in self.conns)
        ):
            self.conns[0].mirror = {}  # at least one verified client per worker
        self.by_fd: dict[int, Conn] = {}
        self.ep = select.epoll()
        self.eligible: deque[Conn] = deque(
            c for c in self.conns if c.creator and self.mode == "rooms"
        )
        self._walk = random.Random(f"{self.seed}:walk:{self.first_index}").random
        self.in_setup = 0
        self.joined = 0
        self.failed = 0
        self.fail_reasons: dict[str, int] = {}
        self.dropped = 0
        self.drop_reasons: dict[str, int] = {}
        self.dropped_in_window = 0
        self.wheels: list[tuple[Wheel, Any]] = []
        self.t_go: float | None = None
        self.t0 = float("inf")
        self.t1 = float("inf")
        self.in_window = False
        self.window_done = False
        self.snap0: dict[str, Any] | None = None
        self.lat = _Hist()
        self.lag = _Hist()
        self.rpc_lat = _Hist()
        self.signal_lat = _Hist()
        self.stage_hists: dict[str, _Hist] = {
            "connect": _Hist(),
            "hello": _Hist(),
            "create": _Hist(),
            "join": _Hist(),
            "room_ready_creator": _Hist(),
            "room_ready_joiner": _Hist(),
        }
        self.inputs_sent = 0
        self.rpcs_sent = 0
        self.rpcs_answered = 0
        self.rpcs_ok = 0
        self.rpc_errors: dict[str, int] = {}
        self.signals_sent = 0
        self.signals_received = 0
        self.verify_frames = 0
        self.mismatches = 0
        self.mismatch_examples: list[str] = []
        self.desyncs = 0
        self.shortcut_errors = 0
        self.other_frames: dict[str, int] = {}
        self.rpcs_received = 0
        self.stdin_buf = b""
        self.done = False
        self.ready_sent = False
        self.t_setup_start = time.monotonic()
        self.t_ready = 0.0
        self.next_progress = 0.0
        self.next_housekeeping = 0.0
        self.arrivals = 0  # storm mode: clients that have arrived
        self.storm_end = float("inf")
        self.tick_rate = 0.0

    # -- output ---------------------------------------------------------------

    def emit(self, message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    # -- setup ----------------------------------------------------------------

    def _start(self, c: Conn, now: float) -> None:
        c.t_arrive = now
        c.t_stage = now
        c.state = CONNECTING
        c.active = True
        self.in_setup += 1
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self._fail(c, f"socket: {exc.strerror or exc}")
            return
        c.sock = sock
        c.fd = sock.fileno()
        self.by_fd[c.fd] = c
        err = sock.connect_ex((self.host, self.port))
        if err not in (0, errno.EINPROGRESS):
            self._fail(c, f"connect: {os.strerror(err)}")
            return
        self.ep.register(c.fd, _EPOLLIN | _EPOLLOUT)

    def _connected(self, c: Conn) -> None:
        assert c.sock is not None
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(c, f"connect: {os.strerror(err)}")
            return
        self.ep.modify(c.fd, _EPOLLIN)
        request = (
            f"GET / HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {c.ws_key.decode()}\r\n"
            f"Sec-WebSocket-Protocol: {self.codec.subprotocol}\r\n\r\n"
        ).encode()
        c.state = UPGRADING
        self._write(c, request)

    def _on_upgrade(self, c: Conn, now: float) -> None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(c.buf) > 16384:
                self._fail(c, "handshake: response too long")
            return
        head = c.buf[:end].decode("latin-1")
        rest = c.buf[end + 4 :]
        c.buf = b""
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            self._fail(c, f"handshake: {lines[0][:60]}")
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(c.ws_key + _WS_GUID).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            self._fail(c, "handshake: bad Sec-WebSocket-Accept")
            return
        if headers.get("sec-websocket-protocol") != self.codec.subprotocol:
            self._fail(c, "handshake: subprotocol not accepted")
            return
        c.t_open = now
        self.stage_hists["connect"].add(now - c.t_arrive)
        c.state = HELLO
        c.t_stage = now
        self._send_payload(c, self.codec.encode(Hello(PROTOCOL_VERSION, None, None, "bench")))
        if rest:
            self._on_data(c, rest, now)

    def _on_welcome(self, c: Conn, frame: Welcome, now: float) -> None:
        c.pid = frame.player_id
        c.t_welcome = now
        self.stage_hists["hello"].add(now - c.t_stage)
        rate = frame.server.get("tick_rate") if isinstance(frame.server, dict) else None
        if isinstance(rate, (int, float)):
            c.tick_rate = float(rate)
            self.tick_rate = float(rate)
        if c.creator or c.room.code is not None:
            self._send_join(c, now)
        elif c.room.failed:
            self._fail(c, "room creation failed")
        else:
            c.state = WAIT_CODE

    def _send_join(self, c: Conn, now: float) -> None:
        c.state = JOINING
        c.t_join_sent = now
        c.t_stage = now
        fid = c.next_id
        c.next_id += 1
        if c.creator:
            frame: Any = Create(fid, self.room_mode, {})
        else:
            assert c.room.code is not None
            frame = Join(fid, c.room.code)
        self._send_payload(c, self.codec.encode(frame))

    def _on_joined(self, c: Conn, frame: Joined, now: float) -> None:
        c.pid = frame.player_id
        c.t_joined = now
        c.state = RUNNING
        c.active = False
        self.in_setup -= 1
        self.joined += 1
        c.model.reset(frame.state)
        if c.mirror is not None:
            c.mirror = dict(frame.state)
            c.mirror_tick = frame.tick
        if c.creator:
            self.stage_hists["create"].add(now - c.t_join_sent)
            self.stage_hists["room_ready_creator"].add(now - c.t_arrive)
            room = c.room
            room.code = frame.code
            for other in room.conns:
                if other is c:
                    continue
                if other.state == WAIT_CODE:
                    self._send_join(other, now)
                elif self.mode == "rooms" and other.state == CONNECTING and not other.active:
                    self.eligible.append(other)
        else:
            self.stage_hists["join"].add(now - c.t_join_sent)
            self.stage_hists["room_ready_joiner"].add(now - c.t_arrive)
        if self.signal_hz > 0:
            # signalling runs between members of one voice channel: join the room's
            fid = c.next_id
            c.next_id += 1
            c.rpc_pending[fid] = now
            self._send_payload(c, self.codec.encode(Rpc(fid, "room", "voice.join", {})))

    def _fail(self, c: Conn, reason: str) -> None:
        """A client that did not make it into its room (counted as a failed join)."""
        if c.state == DONE:
            return
        if c.active:
            c.active = False
            self.in_setup -= 1
        c.state = DONE
        self.failed += 1
        key = reason.split(":", 1)[0] if reason.startswith(("connect", "socket")) else reason
        self.fail_reasons[key] = self.fail_reasons.get(key, 0) + 1
        self._close(c)
        if c.creator and c.room.code is None:
            room = c.room
            room.failed = True
            for other in room.conns:
                if other is not c and other.state != DONE:
                    if not other.active:
                        other.state = DONE
                        self.failed += 1
                        why = "room creation failed"
                        self.fail_reasons[why] = self.fail_reasons.get(why, 0) + 1
                    elif other.state == WAIT_CODE:
                        self._fail(other, "room creation failed")

    def _drop(self, c: Conn, reason: str) -> None:
        """A joined client whose connection ended (counted as dropped)."""
        if c.state == DONE:
            return
        if c.state != RUNNING:
            self._fail(c, reason)
            return
        c.state = DONE
        self.dropped += 1
        if self.in_window:
            self.dropped_in_window += 1
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1
        self._close(c)

    def _close(self, c: Conn) -> None:
        sock = c.sock
        if sock is None:
            return
        self.by_fd.pop(c.fd, None)
        with contextlib.suppress(OSError, ValueError, FileNotFoundError):
            self.ep.unregister(c.fd)
        with contextlib.suppress(OSError):
            sock.close()
        c.sock = None

    # -- I/O ------------------------------------------------------------------

    def _write(self, c: Conn, data: bytes) -> None:
        sock = c.sock
        if sock is None:
            return
        if c.out:
            c.out += data
            return
        try:
            n = sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._drop(c, f"send: {exc.strerror or exc}")
            return
        if n < len(data):
            c.out += data[n:]
            self.ep.modify(c.fd, _EPOLLIN | _EPOLLOUT)

    def _flush(self, c: Conn) -> None:
        sock = c.sock
        if sock is None:
            return
        if c.state == CONNECTING:
            self._connected(c)
            return
        if not c.out:
            self.ep.modify(c.fd, _EPOLLIN)
            return
        try:
            n = sock.send(c.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(c, f"send: {exc.strerror or exc}")
            return
        del c.out[:n]
        if not c.out:
            self.ep.modify(c.fd, _EPOLLIN)

    def _send_payload(self, c: Conn, payload: bytes, opcode: int = 2) -> None:
        c.bytes_out += len(payload)
        self._write(c, mask_frame(payload, c.key, c.key_int, opcode))

    def _on_readable(self, c: Conn, now: float) -> None:
        sock = c.sock
        if sock is None:
            return
        if c.state == CONNECTING:
            self._connected(c)
            return
        try:
            # 64 KiB, not more: glibc serves allocations of 128 KiB and up with
            # mmap, and a recv(256 KiB) measured 14.6 µs against 2.1 µs here
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(c, f"recv: {exc.strerror or exc}")
            return
        if not data:
            self._drop(c, "eof")
            return
        if c.state == UPGRADING:
            c.buf += data
            self._on_upgrade(c, now)
            return
        self._on_data(c, data, now)

    def _on_data(self, c: Conn, data: bytes, now: float) -> None:
        if c.buf:
            data = c.buf + data
            c.buf = b""
        n = len(data)
        i = 0
        while n - i >= 2:
            b0 = data[i]
            ln = data[i + 1]
            if ln & 0x80:
                self._drop(c, "protocol: masked server frame")
                return
            if ln < 126:
                h = i + 2
            elif ln == 126:
                if n - i < 4:
                    break
                ln = int.from_bytes(data[i + 2 : i + 4], "big")
                h = i + 4
            else:
                if n - i < 10:
                    break
                ln = int.from_bytes(data[i + 2 : i + 10], "big")
                h = i + 10
            end = h + ln
            if end > n:
                break
            payload = data[h:end]
            i = end
            op = b0 & 0x0F
            if op == 2 and b0 & 0x80 and c.frag is None:
                self._on_message(c, payload, now)
            elif op == 9:
                self._send_payload(c, payload, 0xA)
            elif op == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                with contextlib.suppress(Exception):
                    self._send_payload(c, payload[:2], 0x8)
                self._drop(c, f"close {code}")
                return
            elif op == 0xA:
                pass
            elif op in (0, 2, 1):
                if op != 0:
                    c.frag = [payload]
                elif c.frag is None:
                    self._drop(c, "protocol: stray continuation frame")
                    return
                else:
                    c.frag.append(payload)
                if b0 & 0x80:
                    whole = b"".join(c.frag)
                    c.frag = None
                    self._on_message(c, whole, now)
            else:
                self._drop(c, f"protocol: opcode {op}")
                return
            if c.state == DONE:
                return
        if i < n:
            c.buf = data[i:]

    # -- messages -------------------------------------------------------------

    def _on_message(self, c: Conn, payload: bytes, now: float) -> None:
        c.msgs_in += 1
        c.bytes_in += len(payload)
        if len(payload) > 2 and payload[1] == 9 and payload[0] in (0x94, 0x95):
            self._on_state(c, payload, now)
            return
        try:
            frame = self.codec.decode(payload)
        except ProtocolError as exc:
            self._count_other(f"undecodable:{exc.code}")
            return
        self._on_frame(c, frame, now)

    def _on_frame(self, c: Conn, frame: Any, now: float) -> None:
        t = type(frame)
        if t is Welcome and c.state == HELLO:
            self._on_welcome(c, frame, now)
        elif t is Joined and c.state == JOINING:
            self._on_joined(c, frame, now)
        elif t is Error:
            if c.state in _SETUP_STATES:
                self._fail(c, f"error {frame.code}")
                return
            if frame.ref is not None and frame.ref in c.rpc_pending:
                c.rpc_pending.pop(frame.ref)
                self.rpc_errors[frame.code] = self.rpc_errors.get(frame.code, 0) + 1
                return
            c.error_codes[frame.code] = c.error_codes.get(frame.code, 0) + 1
            self._count_other(f"error:{frame.code}")
        elif t is RpcResult:
            sent = c.rpc_pending.pop(frame.id, None)
            if sent is None:
                self._count_other("rpc_result:unmatched")
                return
            self.rpcs_answered += 1
            if frame.ok:
                self.rpcs_ok += 1
            else:
                value = frame.value if isinstance(frame.value, dict) else {}
                code = str(value.get("code", "rpc_error"))
                self.rpc_errors["refused:" + code] = self.rpc_errors.get("refused:" + code, 0) + 1
            if self.in_window:
                self.rpc_lat.add(now - sent)
        elif t is Rpc:
            self.rpcs_received += 1
            self._send_payload(c, self.codec.encode(RpcResult(frame.id, True, frame.args)))
        elif t is Signal:
            self.signals_received += 1
            if len(frame.payload) == _SIGNAL_PAYLOAD.size and self.in_window:
                sent, _ = _SIGNAL_PAYLOAD.unpack(frame.payload)
                self.signal_lat.add(now - sent)
        elif t is Ping:
            self._send_payload(c, self.codec.encode(Pong(frame.nonce)))
        elif t is Event:
            self._count_other(f"event:{frame.name}")
        else:
            self._count_other(t.__name__)

    def _count_other(self, key: str) -> None:
        self.other_frames[key] = self.other_frames.get(key, 0) + 1

    def _on_state(self, c: Conn, payload: bytes, now: float) -> None:
        if c.state != RUNNING:
            return
        try:
            obj = _unpack(payload)
            back = obj[2]
            delta = obj[3]
        except (ValueError, IndexError, TypeError, msgpack.ExtraData) as exc:
            self._count_other(f"undecodable_state:{type(exc).__name__}")
            return
        c.frames += 1
        model = c.model
        if back == 0:
            c.keyframes += 1
            c.keyframe_bytes += len(payload)
            model.reset(delta)
        else:
            c.deltas += 1
            c.delta_bytes += len(payload)
            try:
                model.apply_delta(delta)
            except ShortcutError:
                self.shortcut_errors += 1
        seq = model.seq.get(c.pid)
        if seq is not None and c.pending and seq >= c.pending_seq:
            pending = c.pending
            record = self.in_window
            lat = self.lat
            while pending and c.pending_seq <= seq:
                sent = pending.popleft()
                c.pending_seq += 1
                if record:
                    lat.add(now - sent)
        if c.mirror is not None:
            self._verify(c, payload)
        if len(obj) > 4 and obj[4]:
            try:
                frame = self.codec.decode(payload)
            except ProtocolError as exc:
                self._count_other(f"undecodable:{exc.code}")
                return
            for msg in frame.msgs:
                self._on_frame(c, msg, now)
                if c.state == DONE:
                    return

    def _verify(self, c: Conn, payload: bytes) -> None:
        """The reference path: a full decode and ``protocol.apply`` to a mirror, then
        every player's seq compared with what the shortcut read."""
        self.verify_frames += 1
        try:
            frame = self.codec.decode(payload)
        except ProtocolError as exc:
            self._mismatch(f"full decode failed where the shortcut read the frame: {exc}")
            return
        assert type(frame) is State
        if frame.back == 0:
            c.mirror = dict(frame.delta)
        elif frame.tick - frame.back != c.mirror_tick:
            self.desyncs += 1
            c.mirror_tick = -1
            return
        else:
            try:
                c.mirror = apply(c.mirror or {}, frame.delta)
            except ProtocolError as exc:
                self._mismatch(f"apply failed: {exc}")
                return
        c.mirror_tick = frame.tick
        players = c.mirror.get("players") if type(c.mirror) is dict else None
        if type(players) is dict:
            expected = {
                pid: (e.get("seq") if type(e) is dict else None) for pid, e in players.items()
            }
        else:
            expected = {}
        got = c.model.seq
        if expected != got or sorted(expected) != c.model.pids:
            self._mismatch(f"tick {frame.tick}: full decode {expected} != shortcut {got}")

    def _mismatch(self, text: str) -> None:
        self.mismatches += 1
        if len(self.mismatch_examples) < 3:
            self.mismatch_examples.append(text[:400])

    # -- sending --------------------------------------------------------------

    def _send_input(self, c: Conn, scheduled: float) -> None:
        rng_walk = self._walk
        seq = c.seq + 1
        c.seq = seq
        # a small random walk, rounded to binary32 by the encoding itself
        x = c.x + rng_walk() - 0.5
        y = c.y + rng_walk() - 0.5
        if x < 0.0 or x >= 100.0:
            x = c.x
        if y < 0.0 or y >= 100.0:
            y = c.y
        angle = c.angle + (rng_walk() - 0.5) * 0.2
        if angle < 0.0 or angle >= _TWO_PI:
            angle = c.angle
        c.x, c.y, c.angle = x, y, angle
        payload = encode_input(seq, angle, x, y)
        now = time.monotonic()
        c.pending.append(now)
        c.bytes_out += len(payload)
        self._write(c, mask_frame(payload, c.key, c.key_int))
        if c.sock is None:
            return  # the send found the connection gone
        self.inputs_sent += 1
        if self.in_window:
            self.lag.add(now - scheduled)

    def _send_rpc(self, c: Conn, scheduled: float) -> None:
        fid = c.next_id
        c.next_id += 1
        now = time.monotonic()
        c.rpc_pending[fid] = now
        self.rpcs_sent += 1
        target = c.rpc_target
        self._send_payload(c, self.codec.encode(Rpc(fid, target, self.rpc_method, None)))
        if self.in_window:
            self.lag.add(now - scheduled)

    def _send_signal(self, c: Conn, scheduled: float) -> None:
        now = time.monotonic()
        c.rpc_seq += 1
        payload = _SIGNAL_PAYLOAD.pack(now, c.rpc_seq & 0xFFFFFFFF)
        target = c.rpc_target if c.rpc_target != "room" else c.pid
        self._send_payload(c, self.codec.encode(Signal("offer", target, payload, "")))
        self.signals_sent += 1
        if self.in_window:
            self.lag.add(now - scheduled)

    def _next_player(self, c: Conn) -> str:
        pids = c.model.pids
        if c.pid not in pids or len(pids) < 2:
            return c.pid
        return pids[(pids.index(c.pid) + 1) % len(pids)]

    def _go(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        self.t_go = float(message.get("t_go", now))
        self.t0 = float(message.get("t0", self.t_go))
        self.t1 = float(message.get("t1", float("inf")))
        if self.mode == "storm":
            self.storm_end = self.t_go + self.storm_duration
            return
        running = [c for c in self.conns if c.state == RUNNING]
        for c in running:
            c.rpc_target = self._next_player(c) if self.rpc_target == "next" else self.rpc_target
        for hz, fire, tag in (
            (self.input_hz, self._send_input, "input"),
            (self.rpc_hz, self._send_rpc, "rpc"),
            (self.signal_hz, self._send_signal, "signal"),
        ):
            if hz <= 0 or not running:
                continue
            period = 1.0 / hz
            items = [
                (random.Random(f"{self.seed}:{tag}:{c.index}").random() * period, c)
                for c in running
            ]
            self.wheels.append((Wheel(items, period, self.t_go), fire))

    # -- the loop -------------------------------------------------------------

    def _read_commands(self) -> None:
        try:
            chunk = os.read(sys.stdin.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.done = True  # the coordinator went away
            return
        self.stdin_buf += chunk
        self._process_lines()

    def _process_lines(self) -> None:
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if not line.strip():
                continue
            message = json.loads(line)
            cmd = message.get("cmd")
            if cmd == "go":
                self._go(message)
            elif cmd == "abort":
                self.done = True

    def _housekeeping(self, now: float) -> None:
        # setup timeouts
        limit = self.setup_timeout
        for c in self.conns:
            if c.active and now - c.t_arrive > limit:
                self._fail(c, "setup timeout")
        if self.mode == "rooms" and not self.ready_sent:
            if now >= self.next_progress:
                self.next_progress = now + 0.25
                self.emit(
                    {
                        "type": "progress",
                        "joined": self.joined,
                        "failed": self.failed,
                        "total": len(self.conns),
                    }
                )
            if self.joined + self.failed >= len(self.conns):
                self.ready_sent = True
                self.t_ready = now
                self.emit(
                    {
                        "type": "ready",
                        "joined": self.joined,
                        "failed": self.failed,
                        "fail_reasons": self.fail_reasons,
                        "setup_seconds": now - self.t_setup_start,
                        "tick_rate": self.tick_rate,
                    }
                )

    def _snapshot(self) -> dict[str, Any]:
        conns = self.conns
        return {
            "frames": [c.frames for c in conns],
            "running": [i for i, c in enumerate(conns) if c.state == RUNNING],
            "bytes_in": sum(c.bytes_in for c in conns),
            "bytes_out": sum(c.bytes_out for c in conns),
            "msgs_in": sum(c.msgs_in for c in conns),
            "keyframes": sum(c.keyframes for c in conns),
            "keyframe_bytes": sum(c.keyframe_bytes for c in conns),
            "deltas": sum(c.deltas for c in conns),
            "delta_bytes": sum(c.delta_bytes for c in conns),
            "inputs_sent": self.inputs_sent,
            "rpcs_sent": self.rpcs_sent,
            "signals_sent": self.signals_sent,
            "cpu": time.process_time(),
            "t": time.monotonic(),
        }

    def _result(self) -> dict[str, Any]:
        """Everything counted in the measuring window (from ``t0``; the whole run in
        storm mode), as one JSON-able message."""
        a = self.snap0 or self._snapshot()
        b = self._snapshot()
        if self.snap0 is None:  # storm mode: no window, count from the start
            a = {**a, "frames": [0] * len(self.conns), "cpu": 0.0}
            for key in ("bytes_in", "bytes_out", "msgs_in", "keyframes", "keyframe_bytes"):
                a[key] = 0
            for key in ("deltas", "delta_bytes", "inputs_sent", "rpcs_sent", "signals_sent"):
                a[key] = 0
        keyframe_equiv = []
        for c in self.conns:
            if c.mirror is not None and c.state == RUNNING and c.mirror_tick >= 0:
                body = self.codec.state_body(c.mirror_tick, 0, c.mirror)
                keyframe_equiv.append(len(self.codec.state_frame(body)))
        return {
            "type": "result",
            "clients": len(self.conns),
            "joined": self.joined,
            "failed": self.failed,
            "fail_reasons": self.fail_reasons,
            "dropped": self.dropped,
            "dropped_in_window": self.dropped_in_window,
            "drop_reasons": self.drop_reasons,
            "window_seconds": max(1e-9, b["t"] - a["t"]),
            # clients in their room when the window opened (one that dropped later
            # shows up with fewer frames, as it should)
            "frames_per_client": [b["frames"][i] - a["frames"][i] for i in a["running"]],
            "bytes_in": b["bytes_in"] - a["bytes_in"],
            "bytes_out": b["bytes_out"] - a["bytes_out"],
            "msgs_in": b["msgs_in"] - a["msgs_in"],
            "keyframes": b["keyframes"] - a["keyframes"],
            "keyframe_bytes": b["keyframe_bytes"] - a["keyframe_bytes"],
            "deltas": b["deltas"] - a["deltas"],
            "delta_bytes": b["delta_bytes"] - a["delta_bytes"],
            "keyframe_equivalent_bytes": keyframe_equiv,
            "inputs_sent": b["inputs_sent"] - a["inputs_sent"],
            "rpcs_sent": b["rpcs_sent"] - a["rpcs_sent"],
            "rpcs_answered": self.rpcs_answered,
            "rpcs_ok": self.rpcs_ok,
            "rpc_errors": self.rpc_errors,
            "rpcs_received": self.rpcs_received,
            "signals_sent": b["signals_sent"] - a["signals_sent"],
            "signals_received": self.signals_received,
            "latency": self.lat.to_json(),
            "rpc_latency": self.rpc_lat.to_json(),
            "signal_latency": self.signal_lat.to_json(),
            "send_lag": self.lag.to_json(),
            "stages": {k: h.to_json() for k, h in self.stage_hists.items()},
            "verify": {
                "clients": sum(1 for c in self.conns if c.mirror is not None),
                "frames": self.verify_frames,
                "mismatches": self.mismatches,
                "desyncs": self.desyncs,
                "shortcut_errors": self.shortcut_errors,
                "examples": self.mismatch_examples,
            },
            "other_frames": self.other_frames,
            "cpu_seconds": b["cpu"] - a["cpu"],
            "tick_rate": self.tick_rate,
            "arrivals": self.arrivals,
        }

    def run(self) -> None:
        ep = self.ep
        stdin_fd = sys.stdin.fileno()
        os.set_blocking(stdin_fd, False)
        ep.register(stdin_fd, _EPOLLIN)
        self._process_lines()  # commands that came with the spec
        by_fd = self.by_fd
        monotonic = time.monotonic
        eligible = self.eligible
        while not self.done:
            now = monotonic()
            # start setups: rooms mode, bounded concurrency
            if eligible and self.in_setup < self.concurrency:
                while eligible and self.in_setup < self.concurrency:
                    c = eligible.popleft()
                    if c.state == CONNECTING and not c.active:
                        self._start(c, now)
            # storm mode: open-loop arrivals
            if self.mode == "storm" and self.t_go is not None:
                rate = self.storm_rate
                while self.arrivals < len(self.conns):
                    due = self.t_go + self.arrivals / rate
                    if due > now or due >= self.storm_end:
                        break
                    c = self.conns[self.arrivals]
                    self.arrivals += 1
                    if c.state == CONNECTING and not c.active:
                        self._start(c, now)
                        c.t_arrive = due  # open loop: time from the scheduled arrival
                settled = all(c.state in (RUNNING, DONE) for c in self.conns[: self.arrivals])
                over = now >= self.storm_end
                if over and (settled or now >= self.storm_end + self.setup_timeout):
                    for c in self.conns[self.arrivals :]:
                        if c.state == CONNECTING and not c.active:
                            c.state = DONE  # never arrived
                    self.emit(self._result())
                    break
            # schedules
            for wheel, fire in self.wheels:
                if now >= self.t1:
                    break
                while wheel.n:
                    due = wheel.base + wheel.phases[wheel.i]
                    if due > now:
                        break
                    c = wheel.conns[wheel.i]
                    if c.state == RUNNING:
                        fire(c, due)
                    wheel.advance()
            # the measuring window
            if not self.in_window and not self.window_done and now >= self.t0:
                self.in_window = True
                self.snap0 = self._snapshot()
            if self.in_window and now >= self.t1:
                self.in_window = False
                self.window_done = True
                self.emit(self._result())
                self.wheels = []
                self.t1 = float("inf")
            if now >= self.next_housekeeping:
                self.next_housekeeping = now + 0.1
                self._housekeeping(now)
            # wait for I/O or the next due send
            wake = self.next_housekeeping
            for wheel, _ in self.wheels:
                if wheel.n:
                    due = wheel.base + wheel.phases[wheel.i]
                    if due < wake:
                        wake = due
            if self.t0 < wake and not self.in_window and not self.window_done:
                wake = self.t0
            if self.t1 < wake:
                wake = self.t1
            if self.mode == "storm" and self.t_go is not None and self.arrivals < len(self.conns):
                due = self.t_go + self.arrivals / self.storm_rate
                if due < wake:
                    wake = due
            timeout = wake - monotonic()
            events = ep.poll(timeout if timeout > 0 else 0)
            if not events:
                continue
            now = monotonic()
            for fd, ev in events:
                c = by_fd.get(fd)
                if c is None:
                    if fd == stdin_fd:
                        self._read_commands()
                    continue
                if ev & _EPOLLOUT:
                    self._flush(c)
                if ev & (_EPOLLIN | _EPOLLERR):
                    self._on_readable(c, now)
        for c in self.conns:
            self._close(c)


def _read_spec() -> tuple[bytes, bytes]:
    """The first line of stdin, read from the fd (no buffered reader that could
    swallow the commands that follow), and whatever came after it."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            break
        data += chunk
    line, _, rest = data.partition(b"\n")
    return line, rest


def main() -> int:
    line, rest = _read_spec()
    if not line.strip():
        return 2
    try:
        spec = json.loads(line)
        worker = Worker(spec)
        worker.stdin_buf = rest
    except (ValueError, KeyError, TypeError) as exc:
        sys.stdout.write(json.dumps({"type": "error", "message": f"bad spec: {exc}"}) + "\n")
        return 2
    try:
        worker.run()
    except Exception as exc:  # reported to the coordinator, which says which worker
        import traceback

        traceback.print_exc()
        sys.stdout.write(
            json.dumps({"type": "error", "message": f"{type(exc).__name__}: {exc}"}) + "\n"
        )
        sys.stdout.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
