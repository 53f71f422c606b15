"""The room actor: one trio task per room that owns its state and ticks at a fixed rate.

Theory of operation
-------------------
A ``Room`` is fed by two sources and reads both only at its tick:

* its bounded ``Mailbox`` (control: joins, leaves, reconnects, stop), posted
  to by connection tasks that then wait on a ``Reply``;
* each member's ``Link`` (data: inputs, RPCs), read with one non-blocking
  ``receive_nowait`` per member per tick.

Ticks run on absolute deadlines ``t0 + n / tick_rate`` (n = 0, 1, ...; the
first one at once). A tick that overruns
is counted and the schedule skips to the next deadline still ahead: it never
stretches, drifts or bursts to catch up.

Each tick has three stages, in this order:

1. **compute** (pure with respect to the committed room): drain the mailbox;
   for each member in seat order read its frames and apply them in arrival
   order (inputs, room RPCs, leave); drop members whose link closed; fire due
   timers; feed every resulting event to ``rules.step`` and carry out the
   actions; build the new public state (sharing every unchanged subtree) and
   its dense delta; collect private views that changed. Everything is built
   in a working set (``_Work``) with copy-on-write of the member, player and
   timer tables, so the committed room is untouched until stage 2.
2. **commit**: swap the working set in (a handful of assignments).
3. **deliver**: link side effects (detach, close), ``Joined`` frames and
   replies, then at most one state frame per member: the tick's delta body is
   encoded once per codec (and base tick) and shared by every member that
   holds the previous state; a member that missed states gets one delta
   coalescing them, diffed from the state it holds (each member keeps a
   reference to the last public state it was sent: states are immutable and
   share their unchanged subtrees, so this costs next to nothing), or a
   keyframe; then checkpoints and the journal.

If a tick raises (a rule set's bug), nothing of it was committed: the
supervisor calls ``recover``, which fails the requests that tick had taken
and marks every member for a keyframe, and runs the room again from its last
committed state. Members stay attached; the frames read in the failed tick
are lost (at most one tick of input).

Public state layout (what clients mirror)::

    {"room":    {"code", "mode", "host", "members": {pid: {"name", "seat", "connected"}}},
     "players": {pid: {**rules.player_entity(pid, seed), "seq": last input seq}},
     "game":    rules.public_view(state),
     "voice":   {pid: {"channel", "muted", "muted_by_host", "key"}}}  (actors._voice)

Relayed RPCs (targets other than "room"), their answers, and voice signals
are routed in the compute stage too (``actors._rpc``, ``actors._voice``):
they ride in the members' frames of the same tick.

Floats in it are kept rounded to binary32 and tuples turned into lists, which
is how they travel. Private data never enters it: ``rules.private_view`` goes to
its owner as an ``Event("private", view)`` when it changes.
"""

from __future__ import annotations

import bisect
import logging
import math
import struct
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack
import trio

from protocol import (
    CloseCode,
    Error,
    Input,
    Joined,
    Leave,
    Ping,
    Pong,
    Rpc,
    RpcResult,
    Signal,
    diff,
    f32,
)
from protocol import Event as EventFrame
from protocol import Frame as WireFrame

from ._clock import Clock
from ._errors import RoomClosed, RoomError, RoomFull
from ._link import Link
from ._logic import (
    Broadcast,
    CancelTimer,
    Checkpoint,
    Event,
    GameOver,
    PlayerDisconnected,
    PlayerJoined,
    PlayerLeft,
    PlayerReconnected,
    Rules,
    SendTo,
    StartTimer,
    StopRoom,
    TimerExpired,
)
from ._mailbox import (
    JoinRequest,
    LeaveRequest,
    Mailbox,
    Message,
    ReconnectRequest,
    Reply,
    Stop,
)
from ._rpc import RpcSettings, RpcTable
from ._rpc import answer as _rpc_answer
from ._rpc import expire as _rpc_expire
from ._rpc import member_gone as _rpc_member_gone
from ._rpc import replay_buffered as _rpc_replay
from ._rpc import route as _rpc_route
from ._rpc import runtime_call as _runtime_call
from ._text import clean_text
from ._ticker import Ticker
from ._timers import Timers
from ._voice import DEFAULT_MAX_SIGNAL_BYTES, VoiceState, relay_signal

__all__ = [
    "TICK_HISTOGRAM_BOUNDS",
    "CheckpointSink",
    "GameRecordSink",
    "InvalidSnapshot",
    "JoinResult",
    "MAX_NAME",
    "MemberInfo",
    "Room",
    "RoomConfig",
    "RoomStatistics",
    "SNAPSHOT_VERSION",
]

log = logging.getLogger("relay.room")

SNAPSHOT_VERSION = 1
#: upper bounds (seconds) of the tick duration histogram buckets; one more bucket holds the rest
TICK_HISTOGRAM_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05)
_INPUT_KINDS = frozenset({"f32", "int", "bool", "str"})
_ROLES = frozenset({"player", "host"})
#: longest display name a room accepts
MAX_NAME = 64


# -- configuration and plug-in points ----------------------------------------


@dataclass(frozen=True, slots=True)
class RoomConfig:
    """Per-room runtime settings (the relay's ``Config`` maps onto these).

    ``tick_rate``: ticks per second. ``mailbox_size``: bounded control mailbox.
    ``history_ticks``: a member stalled (not ready while it had something to
    receive) for up to this many ticks catches up with one coalesced delta
    from the state it holds; stalled longer, it gets a keyframe.
    ``max_lag_ticks``: a member stalled for longer is closed with
    ``SLOW_CLIENT``; so is one with more than ``max_pending_msgs`` queued
    messages. ``max_input_str``: length cap of
    a "str" input field. ``reconnect_grace``: seconds a dropped member keeps
    its seat (0: it leaves at once). ``empty_grace``: an empty room closes
    after this long. ``max_lifetime``: a room closes this long after creation.
    ``join_timeout``: how long a joining task waits for the room's answer.
    ``checkpoint_ttl``: seconds a checkpoint store keeps a snapshot/journal.
    ``snapshot_interval``: with a checkpoint sink, a room that journalled
    something writes a snapshot at most this long after its previous one
    (0: only on ``Checkpoint`` actions, at start and when the sink asks).
    ``journal_ticks``: tick records of accepted inputs kept in memory since
    the last snapshot. ``tick_samples``: recent tick durations kept.

    Relayed RPCs (``actors._rpc``): ``rpc_timeout`` seconds a call waits for
    its answer, capped by ``rpc_timeout_max``; ``max_pending_rpcs`` calls one
    caller may have waiting; ``max_buffered_rpcs`` buffered calls a room keeps.
    ``max_signal_bytes``: payload cap of a voice signal. ``resume_issuer(code,
    player_id, seat)`` returns the resume token sent in each ``Joined`` (the
    relay seals one); None sends none.
    """

    tick_rate: float = 20.0
    mailbox_size: int = 256
    history_ticks: int = 64
    max_lag_ticks: int = 100
    max_pending_msgs: int = 256
    max_input_str: int = 64
    reconnect_grace: float = 0.0
    empty_grace: float = 30.0
    max_lifetime: float = 4 * 3600.0
    join_timeout: float = 5.0
    checkpoint_ttl: float = 24 * 3600.0
    snapshot_interval: float = 5.0
    journal_ticks: int = 1200
    tick_samples: int = 256
    rpc_timeout: float = 10.0
    rpc_timeout_max: float = 60.0
    max_pending_rpcs: int = 64
    max_buffered_rpcs: int = 128
    max_signal_bytes: int = DEFAULT_MAX_SIGNAL_BYTES
    resume_issuer: Callable[[str, str, int], str | None] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tick_rate) and 0 < self.tick_rate <= 1000):
            raise ValueError("tick_rate must be in (0, 1000] ticks per second")
        for name in ("mailbox_size", "history_ticks", "max_lag_ticks", "max_pending_msgs"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer")
        for name in ("max_input_str", "journal_ticks", "tick_samples"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer")
        for name in (
            "reconnect_grace",
            "empty_grace",
            "max_lifetime",
            "join_timeout",
            "snapshot_interval",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number of seconds")
        if not (math.isfinite(self.checkpoint_ttl) and self.checkpoint_ttl > 0):
            raise ValueError("checkpoint_ttl must be a positive number of seconds")
        if not (0 < self.rpc_timeout <= self.rpc_timeout_max < math.inf):
            raise ValueError("rpc_timeout must be positive and at most rpc_timeout_max")
        for name in ("max_pending_rpcs", "max_buffered_rpcs", "max_signal_bytes"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer")

    @property
    def rpc_settings(self) -> RpcSettings:
        return RpcSettings(
            self.rpc_timeout, self.rpc_timeout_max, self.max_pending_rpcs, self.max_buffered_rpcs
        )


class CheckpointSink(Protocol):
    """Where a room's snapshots and journal go (a store component implements it).

    Both calls hand over msgpack bytes and must never block or raise for a
    store outage: the sink queues (bounded) and catches up on its own.
    ``ttl`` is in seconds. A sink may also have ``room_closed(code, reason,
    members)``, called once when the room closes for good (``members``: the
    seats still taken), so it can drop the room's checkpoint. A sink that
    refuses a journal entry with an exception whose ``needs_snapshot`` is
    true gets a snapshot of that same tick at once.
    """

    def submit_snapshot_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None: ...

    def submit_journal_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None: ...


class GameRecordSink(Protocol):
    """Receives the record of every finished game (``GameOver`` action)."""

    def submit_game_nowait(self, code: str, record: GameOver) -> None: ...


class InvalidSnapshot(ValueError):
    """A snapshot given to ``Room.restore`` is not one this runtime wrote (a server-side
    problem: a corrupt store entry, or a snapshot of another rule set)."""


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What a joining connection task learns: its seat, and the tick of its keyframe."""

    code: str
    player_id: str
    seat: int
    tick: int
    reconnected: bool = False


@dataclass(frozen=True, slots=True)
class MemberInfo:
    player_id: str
    name: str
    seat: int
    role: str
    connected: bool


@dataclass(frozen=True, slots=True)
class RoomStatistics:
    """Counters of one room. Durations are seconds; ``tick_histogram`` counts tick
    durations per bucket of ``TICK_HISTOGRAM_BOUNDS`` (the last bucket: longer)."""

    code: str
    mode: str
    tick: int
    tick_rate: float
    members: int
    connected: int
    seats: int
    mailbox_depth: int
    ticks: int
    overruns: int
    skipped_deadlines: int
    late_ticks: int
    max_lateness: float
    tick_durations: tuple[float, ...]
    tick_histogram: tuple[int, ...]
    tick_seconds_total: float
    frames_received: int
    frames_sent: int
    bytes_sent: int
    bodies_encoded: int
    keyframes_sent: int
    catch_ups_sent: int
    inputs_accepted: int
    inputs_refused: int
    rpcs: int
    rpcs_refused: int
    slow_closed: int
    restarts: int
    sink_errors: int
    timers: int


# -- internals ---------------------------------------------------------------


class _Member:
    """A seat. Membership fields never change once made (the tick replaces the
    object instead, copy-on-write); the send state is the deliver stage's."""

    __slots__ = (
        "base",
        "closing",
        "codec",
        "connected",
        "grace_until",
        "keyframe",
        "last_tick",
        "link",
        "name",
        "outbox",
        "player_id",
        "private",
        "role",
        "seat",
        "stalled_since",
    )

    def __init__(
        self,
        player_id: str,
        name: str,
        seat: int,
        role: str,
        link: Link | None,
        *,
        connected: bool = True,
        grace_until: float | None = None,
        last_tick: int = -1,
    ) -> None:
        self.player_id = player_id
        self.name = name
        self.seat = seat
        self.role = role
        self.link = link
        self.codec = None if link is None else link.codec
        self.connected = connected
        self.grace_until = grace_until
        # send state
        self.last_tick = last_tick  # the tick of the last state sent to this member
        self.base: dict[str, Any] | None = None  # the public state it holds (sent at last_tick)
        self.keyframe = False  # next frame must be a keyframe (after a restart)
        self.stalled_since: int | None = None  # first tick it was not ready to receive
        self.outbox: list[WireFrame] = []  # reliable messages not yet sent, in order
        self.private: Any = _UNSET  # the last private view sent
        self.closing = False  # closed for lagging; leaves at the next tick

    def info(self) -> MemberInfo:
        return MemberInfo(self.player_id, self.name, self.seat, self.role, self.connected)

    def __repr__(self) -> str:
        return f"<member {self.player_id!r} seat={self.seat} connected={self.connected}>"


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


_UNSET = _Unset()


class _Refused(Exception):
    """An input refused; becomes an Error frame for its sender."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Work:
    """The working set of one tick: copy-on-write views of the committed room."""

    __slots__ = (
        "accepting",
        "checkpoint",
        "delta",
        "effects",
        "games",
        "host",
        "joins",
        "journal",
        "members",
        "members_own",
        "msgs",
        "now",
        "old_public",
        "players",
        "players_own",
        "privates",
        "public",
        "replies",
        "room_changed",
        "rpc",
        "rpc_own",
        "state",
        "stop",
        "tick",
        "timers",
        "timers_own",
        "voice",
    )

    def __init__(self, room: Room, now: float, tick: int) -> None:
        self.now = now
        self.tick = tick
        self.state = room._state
        self.members: dict[str, _Member] = room._members
        self.members_own = False
        self.players: dict[str, dict[str, Any]] = room._public["players"]
        self.players_own = False
        self.timers: Timers = room._timers
        self.timers_own = False
        self.rpc: RpcTable = room._rpc  # copy-on-write: actors._rpc.writable
        self.rpc_own = False
        self.voice: VoiceState = room._voice  # immutable: changes make a new one
        self.host: str | None = room._host
        self.room_changed = False
        self.msgs: dict[str, list[WireFrame]] = {}
        self.joins: list[tuple[_Member, JoinRequest | ReconnectRequest]] = []
        self.replies: list[tuple[Reply[Any], RoomError]] = []
        self.effects: list[tuple[str, Link, int, str]] = []
        self.privates: list[tuple[_Member, Any]] = []
        self.journal: list[tuple[Any, ...]] = []
        self.games: list[GameOver] = []
        self.checkpoint: str | None = None
        self.stop: str | None = None
        self.accepting: bool = room._accepting
        self.old_public: dict[str, Any] = room._public
        self.public: dict[str, Any] = room._public
        self.delta: Any = {}

    def members_w(self) -> dict[str, _Member]:
        if not self.members_own:
            self.members = dict(self.members)
            self.members_own = True
        return self.members

    def players_w(self) -> dict[str, dict[str, Any]]:
        if not self.players_own:
            self.players = dict(self.players)
            self.players_own = True
        return self.players

    def timers_w(self) -> Timers:
        if not self.timers_own:
            self.timers = self.timers.copy()
            self.timers_own = True
        return self.timers

    def queue(self, player_id: str, frame: WireFrame) -> None:
        box = self.msgs.get(player_id)
        if box is None:
            self.msgs[player_id] = [frame]
        else:
            box.append(frame)


def _phase_of(state: Any) -> Any:
    """The phase of a rule set's state: its ``phase`` attribute or key, or None."""
    phase = getattr(state, "phase", None)
    if phase is None and isinstance(state, Mapping):
        phase = state.get("phase")
    return phase


_F32 = struct.Struct("<f")
_f32_pack = _F32.pack
_f32_unpack = _F32.unpack


def _plain(value: Any) -> Any:
    """State data as it travels: floats rounded to binary32, tuples as lists.

    Applied to what a rule set hands over for the public state (entities, the
    public view), so the server's copy equals what clients decode and equal
    values never show up as changes.
    """
    t = type(value)
    if t is float:
        return f32(value)
    if t is dict:
        return {k: _plain(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_plain(v) for v in value]
    return value


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# -- the room ----------------------------------------------------------------


class Room:
    """One game room: an actor that owns a rule set's state, the members and the tick.

    Make it inside ``trio.run`` (it reads the clock), run it with ``run()``
    under a ``Supervisor`` (or any nursery), and talk to it through its
    mailbox: ``join_nowait``, ``reconnect_nowait``, ``leave_nowait``,
    ``stop_nowait``. Every method except ``run`` is synchronous and never
    blocks.

    Errors: the constructor raises ``RoomError`` code ``unknown_mode`` for a
    mode the rule set does not play and whatever ``RoomError`` the rule set's
    ``new_state`` raises for bad options; ``ValueError`` for a rule set whose
    ``input_fields`` name an unknown wire type (a server bug).

    ``tick_hook(room, tick)`` is an instrumentation hook, called at the start
    of every tick (inside the measured tick time).
    """

    def __init__(
        self,
        rules: Rules,
        *,
        code: str,
        mode: str,
        options: Mapping[str, Any] | None = None,
        seed: int = 0,
        config: RoomConfig | None = None,
        clock: Clock | None = None,
        checkpoint_sink: CheckpointSink | None = None,
        game_record_sink: GameRecordSink | None = None,
        tick_hook: Callable[[Room, int], None] | None = None,
    ) -> None:
        self._setup(rules, code, mode, options, seed, config, clock, tick_hook)
        self.checkpoint_sink = checkpoint_sink
        self.game_record_sink = game_record_sink
        now = self._clock.now()
        state = rules.new_state(mode=mode, options=self.options, now=now, seed=seed)
        self._install(state, tick=0, players={}, host=None, members={}, timers=Timers(), now=now)
        self._created_at = now
        self._expires_at = now + self.config.max_lifetime
        self._empty_since = now

    def _setup(
        self,
        rules: Rules,
        code: str,
        mode: str,
        options: Mapping[str, Any] | None,
        seed: int,
        config: RoomConfig | None,
        clock: Clock | None,
        tick_hook: Callable[[Room, int], None] | None,
    ) -> None:
        if mode not in rules.modes():
            raise RoomError(f"{rules.name} has no mode {mode!r}", code="unknown_mode")
        for fname, kind in rules.input_fields.items():
            if kind not in _INPUT_KINDS:
                raise ValueError(f"{rules.name}: input field {fname!r} has unknown type {kind!r}")
        self.rules = rules
        self.code = code
        self.mode = mode
        self.options: dict[str, Any] = dict(options or {})
        self.seed = seed
        self.config = config = config or RoomConfig()
        self._clock = clock or Clock()
        self._tick_hook = tick_hook
        self._input_fields: dict[str, str] = dict(rules.input_fields)
        self._mailbox = Mailbox(config.mailbox_size, name=code)
        self._rate = float(config.tick_rate)
        #: the shared timer the room waits on (set by the registry); None: trio's own
        self.ticker: Ticker | None = None
        self._t0: float | None = None  # trio time of the schedule's tick 0
        self._n = 0  # index of the last scheduled deadline
        self._closed = False
        self._close_reason: str | None = None
        self._inflight: list[Message] = []  # requests taken by the tick in progress
        self._joins_pending = 0  # join requests waiting in the mailbox
        self._absent: list[str] = []  # restored seats with no connection yet
        self._recheck_private = True  # compare private views at the next tick
        self._stop_request: str | None = None
        # Kept packed (msgpack, as the sink gets it): bytes are not tracked by the
        # garbage collector and free in one step, where a tick's tuples and dicts
        # would be scanned and freed one by one (docs/bench.md, "Profile").
        self._journal: deque[bytes] = deque(maxlen=config.journal_ticks)
        self._next_snapshot_at = -math.inf  # wall clock; see _snapshot_due
        self._rpc_settings = config.rpc_settings
        self._handlers: dict[type, Callable[[_Work, _Member, Any], bool]] = {
            Input: self._on_input,
            Rpc: self._on_rpc,
            RpcResult: self._on_rpc_result,
            Leave: self._on_leave,
            Signal: self._on_signal,
            Ping: self._on_ping,
        }
        # statistics
        self._ticks = 0
        self._overruns = 0
        self._skipped = 0
        self._late_ticks = 0
        self._max_lateness = 0.0
        self._durations: deque[float] = deque(maxlen=config.tick_samples)
        self._histogram = [0] * (len(TICK_HISTOGRAM_BOUNDS) + 1)
        self._tick_seconds = 0.0
        self._frames_received = 0
        self._frames_sent = 0
        self._bytes_sent = 0
        self._bodies = 0
        self._keyframes = 0
        self._catch_ups = 0
        self._inputs_ok = 0
        self._inputs_refused = 0
        self._rpcs = 0
        self._rpcs_refused = 0
        self._slow_closed = 0
        self._restarts = 0
        self._sink_errors = 0

    def _install(
        self,
        state: Any,
        *,
        tick: int,
        players: dict[str, dict[str, Any]],
        host: str | None,
        members: dict[str, _Member],
        timers: Timers,
        now: float,
    ) -> None:
        rules = self.rules
        self._state = state
        self._tick = tick
        self._members = members
        self._order = sorted(members.values(), key=lambda m: m.seat)
        self._disconnected = sum(1 for m in members.values() if not m.connected)
        self._host = host
        self._timers = timers
        limit = rules.max_players(self.mode)
        seat_limit = getattr(rules, "seat_limit", None)  # optional: a per-room limit
        if seat_limit is not None:
            limit = min(limit, seat_limit(state))
        self.seats = limit
        self._accepting = rules.accepts_players(state)
        # Relayed calls and voice are not checkpointed: a restored room starts
        # without them (callers time out, players join their voice channel again).
        self._rpc = RpcTable()
        self._voice = VoiceState()
        self._public: dict[str, Any] = {
            "room": self._build_room_view(members, host, {}),
            "players": players,
            "game": _plain(rules.public_view(state)),
            "voice": self._voice.view,
        }

    # -- introspection ------------------------------------------------------

    @property
    def name(self) -> str:
        return f"room {self.code}"

    @property
    def tick(self) -> int:
        """The number of the last committed tick."""
        return self._tick

    @property
    def public_state(self) -> dict[str, Any]:
        """The committed public state (treat as read-only: it is shared)."""
        return self._public

    @property
    def rules_state(self) -> Any:
        return self._state

    @property
    def host(self) -> str | None:
        return self._host

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    @property
    def accepting(self) -> bool:
        """Whether the rule set takes new players now (as of the last tick)."""
        return self._accepting and not self._closed and self._stop_request is None

    @property
    def free_seats(self) -> int:
        """Seats neither taken nor asked for by a join waiting in the mailbox."""
        return max(0, self.seats - len(self._members) - self._joins_pending)

    @property
    def member_count(self) -> int:
        return len(self._members)

    @property
    def created_at(self) -> float:
        return self._created_at

    @property
    def clock(self) -> Clock:
        return self._clock

    def members(self) -> list[MemberInfo]:
        """The seats, in seat order."""
        return [m.info() for m in self._order]

    def timers(self) -> dict[str, float]:
        """``{name: absolute deadline}`` of the armed timers, in firing order."""
        return self._timers.as_dict()

    def journal(self) -> list[tuple[int, float, list[tuple[Any, ...]]]]:
        """Per-tick records ``(tick, now, entries)`` of accepted inputs since the last
        snapshot: ``("i", pid, seq, fields)``, ``("r", pid, method, args)``,
        ``("j", pid, name, seat, role)``, ``("l", pid, reason)``,
        ``("d", pid, grace_until)``,
        ``("c", pid)``, ``("t", name)``. Replaying them over the snapshot
        reproduces the room."""
        return [
            (tick, now, [tuple(entry) for entry in entries])
            for tick, now, entries in map(_unpack, self._journal)
        ]

    def statistics(self) -> RoomStatistics:
        return RoomStatistics(
            code=self.code,
            mode=self.mode,
            tick=self._tick,
            tick_rate=self._rate,
            members=len(self._members),
            connected=len(self._members) - self._disconnected,
            seats=self.seats,
            mailbox_depth=len(self._mailbox),
            ticks=self._ticks,
            overruns=self._overruns,
            skipped_deadlines=self._skipped,
            late_ticks=self._late_ticks,
            max_lateness=self._max_lateness,
            tick_durations=tuple(self._durations),
            tick_histogram=tuple(self._histogram),
            tick_seconds_total=self._tick_seconds,
            frames_received=self._frames_received,
            frames_sent=self._frames_sent,
            bytes_sent=self._bytes_sent,
            bodies_encoded=self._bodies,
            keyframes_sent=self._keyframes,
            catch_ups_sent=self._catch_ups,
            inputs_accepted=self._inputs_ok,
            inputs_refused=self._inputs_refused,
            rpcs=self._rpcs,
            rpcs_refused=self._rpcs_refused,
            slow_closed=self._slow_closed,
            restarts=self._restarts,
            sink_errors=self._sink_errors,
            timers=len(self._timers),
        )

    def __repr__(self) -> str:
        return f"<Room {self.code} {self.mode} tick={self._tick} members={len(self._members)}>"

    # -- the mailbox side (called by connection tasks) ----------------------

    def send_nowait(self, message: Message) -> None:
        """Post a control message. Raises ``MailboxFull`` or ``RoomClosed``; never blocks."""
        self._mailbox.send_nowait(message)
        if type(message) is JoinRequest:
            self._joins_pending += 1

    def join_nowait(
        self,
        player_id: str,
        name: str,
        link: Link,
        frame_id: int,
        role: str = "player",
        *,
        resume: str | None = None,
    ) -> Reply[JoinResult]:
        """Ask for a seat; the room answers at its next tick through the returned reply.

        On success the room has sent ``Joined`` (with the keyframe) through
        ``link`` and owns the link's data from then on. Refusals:
        ``RoomFull``, ``RoomError`` ``game_in_progress`` / ``already_joined``,
        ``RoomClosed``, or the rule set's own ``RoomError``. Posting raises
        ``MailboxFull``/``RoomClosed`` or ``RoomError`` ``invalid_name`` at
        once, and ``RoomError`` ``not_supported`` for the ``spectator`` role
        (spectating plugs in later); ``ValueError`` for a bad ``player_id``,
        ``frame_id`` or ``role`` (the caller's bug). ``role`` is recorded with
        the seat; the room's host is its first member, then the next by seat.
        """
        if type(frame_id) is not int or frame_id < 0:
            raise ValueError("frame_id must be a non-negative integer")
        if type(player_id) is not str or not player_id:
            raise ValueError("player_id must be a non-empty string")
        if type(name) is str:
            name = clean_text(name)  # others see it: no control characters (actors._text)
        if type(name) is not str or len(name) > MAX_NAME:
            raise RoomError(f"a name is a string of at most {MAX_NAME}", code="invalid_name")
        if role not in _ROLES:
            if role == "spectator":
                raise RoomError("spectating is not supported yet", code="not_supported")
            raise ValueError(f"role must be one of {sorted(_ROLES)}")
        request = JoinRequest(player_id, name, link, frame_id, role, resume)
        self.send_nowait(request)
        return request.reply

    def reconnect_nowait(
        self, player_id: str, link: Link, frame_id: int, *, resume: str | None = None
    ) -> Reply[JoinResult]:
        """Take ``player_id``'s seat back on ``link`` (a newer connection replaces an
        older one, which is closed with ``REPLACED``). Refusal: ``RoomError``
        ``not_a_member`` when the seat is gone."""
        if type(frame_id) is not int or frame_id < 0:
            raise ValueError("frame_id must be a non-negative integer")
        request = ReconnectRequest(player_id, link, frame_id, resume)
        self.send_nowait(request)
        return request.reply

    def leave_nowait(self, player_id: str, reason: str = "left") -> None:
        self.send_nowait(LeaveRequest(player_id, reason))

    def stop_nowait(self, reason: str = "closed") -> None:
        """Close the room at its next tick, telling every member ``reason``.

        Never raises: a stop request bypasses the mailbox (it must get through
        when the mailbox is full), and stopping a closed room does nothing.
        """
        if self._stop_request is None:
            self._stop_request = reason

    # -- the actor ----------------------------------------------------------

    async def run(self) -> None:
        """Tick until the room closes; returns normally then.

        Raises whatever a tick raises (a rule set's bug): the supervisor then
        calls ``recover`` and runs it again, keeping the schedule.
        """
        if self._closed:
            return
        rate = self._rate
        if self._t0 is None:
            # The first tick runs at once, so whoever created the room (and is
            # waiting in its mailbox to join) is answered now, not a period later.
            self._t0 = trio.current_time()
            self._n = -1
            if self.checkpoint_sink is not None:
                # A restore starts from a snapshot: the store gets one before any journal.
                self._write_checkpoint()
        else:  # a restart: carry on with the next deadline still ahead
            self._n = max(self._n, math.floor((trio.current_time() - self._t0) * rate))
        t0 = self._t0
        ticker = self.ticker
        # the shared timer's grid is coarse: rooms ticking faster than four slots
        # per period keep their own exact timer
        shared = ticker is not None and 1 / rate >= 4 * ticker.slot
        sleep_until = ticker.sleep_until if shared else trio.sleep_until
        while not self._closed:
            self._n += 1
            deadline = t0 + self._n / rate
            await sleep_until(deadline)
            started = trio.current_time()
            self._tick_once()
            ended = trio.current_time()
            self._account(started, ended, started - deadline)
            if ended > t0 + (self._n + 1) / rate:
                # Overrun: skip to the next deadline still ahead. Never stretch
                # the period (drift) nor run the missed ticks back to back (burst).
                self._overruns += 1
                n = max(self._n, math.floor((ended - t0) * rate))
                while t0 + (n + 1) / rate < ended:
                    n += 1
                self._skipped += n - self._n
                self._n = n

    def _account(self, started: float, ended: float, lateness: float) -> None:
        self._ticks += 1
        duration = ended - started
        self._durations.append(duration)
        self._tick_seconds += duration
        self._histogram[bisect.bisect_left(TICK_HISTOGRAM_BOUNDS, duration)] += 1
        if lateness > self._max_lateness:
            self._max_lateness = lateness
        if lateness > 0.25 / self._rate:
            self._late_ticks += 1

    def recover(self, exc: BaseException | None) -> None:
        """Prepare to run again after ``run`` raised ``exc`` (the supervisor calls this).

        The committed state is intact (a tick commits only once its compute
        stage finished), so recovering means: fail the requests the failed tick
        had taken (``RoomError`` code ``room_crashed``; the client may retry),
        and mark every member for a keyframe.
        """
        self._restarts += 1
        for message in self._inflight:
            reply = getattr(message, "reply", None)
            if reply is not None and not reply.done:
                reply.fail(RoomError(f"room {self.code} restarted, try again", code="room_crashed"))
        self._inflight = []
        self._joins_pending = self._mailbox.count(JoinRequest)
        for member in self._members.values():
            member.keyframe = True

    def terminate(self, reason: str) -> None:
        """Close the room now without a tick (crashed past its restart intensity).

        Every connected member gets ``Event("room_closed", {"reason": reason})``
        and its connection is closed with ``ROOM_CLOSED``; waiting requests
        fail with ``RoomClosed``.
        """
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        farewell = EventFrame("room_closed", {"reason": reason})
        for member in self._order:
            link = member.link
            if link is None or link.closed:
                continue
            try:
                link.send_nowait(link.codec.encode(farewell))
                link.close_nowait(CloseCode.ROOM_CLOSED, f"room {self.code} closed: {reason}")
            except Exception:  # one broken link must not keep the others uninformed
                log.exception("room %s: could not tell %s it closed", self.code, member.player_id)
        self._fail_waiting(reason)
        self._sink_closed(reason)

    def _fail_waiting(self, reason: str) -> None:
        for message in self._mailbox.close() + self._inflight:
            reply = getattr(message, "reply", None)
            if reply is not None and not reply.done:
                reply.fail(RoomClosed(f"room {self.code} closed: {reason}"))
        self._inflight = []
        self._joins_pending = 0

    # -- one tick -------------------------------------------------------------

    def _tick_once(self) -> None:
        tick = self._tick + 1
        if self._tick_hook is not None:
            self._tick_hook(self, tick)
        work = self._compute(self._clock.now(), tick)
        self._commit(work)
        self._deliver(work)

    def _compute(self, now: float, tick: int) -> _Work:
        w = _Work(self, now, tick)
        messages = self._mailbox.drain()
        if messages:
            self._inflight = messages
            for message in messages:
                self._on_message(w, message)
        if self._absent:
            for pid in self._absent:
                m = w.members.get(pid)
                if m is not None and m.link is None and m.connected:
                    self._drop_link(w, m)
            self._absent = []
        handlers = self._handlers
        for m in self._order:
            link = m.link
            if link is None or w.members.get(m.player_id) is not m:
                continue
            if m.closing or link.closed:
                self._drop_link(w, m)
                continue
            frames = link.receive_nowait()
            if frames:
                self._frames_received += len(frames)
                for frame in frames:
                    handler = handlers.get(type(frame))
                    if handler is None:
                        self._on_unexpected(w, m, frame)
                    elif handler(w, m, frame):
                        break  # the member left: ignore what it sent after
        if self._disconnected:
            for m in list(w.members.values()):
                if not m.connected and m.grace_until is not None and m.grace_until <= now:
                    self._remove(w, m, "disconnected", detach=False)
        timers = w.timers
        if timers.next_deadline() is not None and timers.next_deadline() <= now:
            for name in w.timers_w().pop_due(now):
                w.journal.append(("t", name))
                self._step_quiet(w, TimerExpired(name))
        if w.rpc.next_deadline <= now:
            _rpc_expire(w)
        if w.stop is None:
            if self._stop_request is not None:
                w.stop = self._stop_request
            elif now >= self._expires_at:
                w.stop = "expired"
            elif not w.members and now - self._empty_since >= self.config.empty_grace:
                w.stop = "empty"
        self._build_public(w)
        return w

    def _build_public(self, w: _Work) -> None:
        old = self._public
        rules = self.rules
        state_changed = w.state is not self._state
        game = _plain(rules.public_view(w.state)) if state_changed else old["game"]
        if state_changed:
            w.accepting = rules.accepts_players(w.state)
        room_view = (
            self._build_room_view(w.members, w.host, old["room"]["members"])
            if w.room_changed
            else old["room"]
        )
        players = w.players
        voice = w.voice.view
        if (
            room_view is old["room"]
            and players is old["players"]
            and game is old["game"]
            and voice is old["voice"]
        ):
            w.public = old
            w.delta = {}
        else:
            w.public = new = {"room": room_view, "players": players, "game": game, "voice": voice}
            w.delta = diff(old, new, dense=True)
        if state_changed or w.joins or self._recheck_private:
            state = w.state
            for m in w.members.values():
                if m.link is None:
                    continue
                view = rules.private_view(state, m.player_id)
                if view is None and m.private is _UNSET:
                    w.privates.append((m, None))
                elif view != m.private:
                    w.privates.append((m, view))
                    w.queue(m.player_id, EventFrame("private", view))

    def _build_room_view(
        self, members: dict[str, _Member], host: str | None, old: dict[str, Any]
    ) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for pid in sorted(members, key=lambda p: members[p].seat):
            m = members[pid]
            entry = old.get(pid)
            if (
                entry is None
                or entry["seat"] != m.seat
                or entry["connected"] != m.connected
                or entry["name"] != m.name
            ):
                entry = {"name": m.name, "seat": m.seat, "connected": m.connected}
            view[pid] = entry
        return {"code": self.code, "mode": self.mode, "host": host, "members": view}

    def _commit(self, w: _Work) -> None:
        self._state = w.state
        self._accepting = w.accepting
        if w.members_own:
            self._members = members = w.members
            self._order = sorted(members.values(), key=lambda m: m.seat)
            self._disconnected = sum(1 for m in members.values() if not m.connected)
        self._timers = w.timers
        self._rpc = w.rpc
        self._voice = w.voice
        self._host = w.host
        self._public = w.public
        self._tick = w.tick
        if self._members:
            self._empty_since = math.inf
        elif self._empty_since == math.inf:
            self._empty_since = w.now
        members = self._members
        for pid, frames in w.msgs.items():
            m = members.get(pid)
            if m is not None and m.link is not None and not m.closing:
                m.outbox.extend(frames)
        for m, view in w.privates:
            m.private = view
        self._recheck_private = False

    def _deliver(self, w: _Work) -> None:
        # Durability first: a committed tick must reach the journal even if a send
        # below raises (the supervisor then restarts the room from this very tick).
        if w.journal:
            self._write_journal(w)
        if w.checkpoint is not None or self._snapshot_due(w):
            self._write_checkpoint()
        for kind, link, code, reason in w.effects:
            if kind == "detach":
                link.detach(reason)
            else:
                link.close_nowait(code, reason)
        for reply, error in w.replies:
            if not reply.done:
                reply.fail(error)
        tick = w.tick
        for m, request in w.joins:
            reply = request.reply
            if self._members.get(m.player_id) is not m:
                if not reply.done:
                    reply.fail(RoomError("left the room before the join completed", code="left"))
                continue
            resume = request.resume or self._resume_token(m)
            joined = Joined(
                request.frame_id, self.code, m.player_id, m.seat, tick, w.public, resume
            )
            data = m.codec.encode(joined)
            m.link.send_nowait(data)
            m.last_tick = tick
            m.base = w.public
            m.keyframe = False
            m.stalled_since = None
            self._frames_sent += 1
            self._bytes_sent += len(data)
            self._keyframes += 1
            if not reply.done:
                reply.set(
                    JoinResult(
                        self.code,
                        m.player_id,
                        m.seat,
                        tick,
                        reconnected=type(request) is ReconnectRequest,
                    )
                )
        if w.stop is not None:
            farewell = EventFrame("room_closed", {"reason": w.stop})
            for m in self._order:
                if m.link is not None and not m.closing:
                    m.outbox.append(farewell)
        self._send_states(w, force=w.stop is not None)
        self._inflight = []
        for record in w.games:
            self._write_game(record)
        if w.stop is not None:
            self._close(w.stop)

    def _resume_token(self, m: _Member) -> str | None:
        """The token ``m`` may take its seat back with (``RoomConfig.resume_issuer``)."""
        issuer = self.config.resume_issuer
        if issuer is None:
            return None
        try:
            return issuer(self.code, m.player_id, m.seat)
        except Exception:  # no token is better than a failed tick
            log.exception("room %s: no resume token for %s", self.code, m.player_id)
            return None

    def _send_states(self, w: _Work, *, force: bool) -> None:
        """At most one state frame per member; the shared delta encoded once per codec.

        ``back`` is always ``tick - last_tick``: the delta applies to the last
        state this member was sent. A member that holds the previous state gets
        the tick's shared delta; members that received the same frames share
        ``back`` too, so in steady state there is one body per codec. After a
        tick with no change, a member with no messages is sent nothing.
        """
        tick = w.tick
        delta = w.delta
        changed = bool(delta)
        previous = w.old_public
        public = w.public
        max_pending = self.config.max_pending_msgs
        bodies: dict[Any, bytes] = {}
        frames_by_body: dict[bytes, bytes] = {}  # body -> the frame of a member with no msgs
        frames = 0
        nbytes = 0
        for m in self._order:
            link = m.link
            if link is None or m.closing:
                continue
            out = m.outbox
            last = m.last_tick
            if last >= tick:
                continue  # joined this tick: Joined carried the state
            current = m.base is previous and not m.keyframe
            if current and not changed and not out:
                continue  # nothing to say: its state is the room's
            if not force and not link.ready():
                self._stalled(m, tick, max_pending)
                continue
            codec = m.codec
            if current:
                back = tick - last
                key: Any = (type(codec), back)
                body = bodies.get(key)
                if body is None:
                    body = bodies[key] = codec.state_body(tick, back, delta)
                    self._bodies += 1
            else:
                body = self._catch_up_body(m, tick, bodies)
                if body is None:
                    continue
            if out:
                data = codec.state_frame(body, out)
            else:  # the same bytes for every member with nothing of its own
                data = frames_by_body.get(body)
                if data is None:
                    data = frames_by_body[body] = codec.state_frame(body)
            link.send_nowait(data)
            if out:
                m.outbox = []
            m.last_tick = tick
            m.base = public
            m.stalled_since = None
            frames += 1
            nbytes += len(data)
        self._frames_sent += frames
        self._bytes_sent += nbytes

    def _stalled(self, m: _Member, tick: int, max_pending: int) -> None:
        """A member had something to receive but its link is not ready: wait, or give up."""
        if m.stalled_since is None:
            m.stalled_since = tick
        if tick - m.stalled_since > self.config.max_lag_ticks:
            self._close_slow(m, f"not reading for {tick - m.stalled_since} ticks")
        elif len(m.outbox) > max_pending:
            self._close_slow(m, f"{len(m.outbox)} messages pending")

    def _catch_up_body(self, m: _Member, tick: int, bodies: dict[Any, bytes]) -> bytes | None:
        """The body for a member that missed states: one delta coalescing them, from
        the state it holds, or a keyframe after a restart or a long stall."""
        codec = m.codec
        public = self._public
        base = m.base
        stalled = 0 if m.stalled_since is None else tick - m.stalled_since
        if base is None or m.keyframe or stalled > self.config.history_ticks:
            key: Any = (type(codec), 0)
            body = bodies.get(key)
            if body is None:
                body = bodies[key] = codec.state_body(tick, 0, public)
                self._bodies += 1
            m.keyframe = False
            self._keyframes += 1
            return body
        if base is public and not m.outbox:
            return None
        key = (type(codec), "since", m.last_tick)  # same last tick: same base state
        body = bodies.get(key)
        if body is None:
            body = bodies[key] = codec.state_body(
                tick, tick - m.last_tick, diff(base, public, dense=True)
            )
            self._bodies += 1
        self._catch_ups += 1
        return body

    def _close_slow(self, m: _Member, why: str) -> None:
        m.closing = True
        m.outbox = []
        self._slow_closed += 1
        log.info("room %s: closing slow client %s (%s)", self.code, m.player_id, why)
        m.link.close_nowait(CloseCode.SLOW_CLIENT, f"too slow: {why}")

    def _close(self, reason: str) -> None:
        self._closed = True
        self._close_reason = reason
        for m in self._order:
            link = m.link
            if link is not None and not m.closing and not link.closed:
                link.detach(reason)
        self._fail_waiting(reason)
        self._sink_closed(reason)

    # -- durability -----------------------------------------------------------

    def checkpoint_nowait(self) -> None:
        """Snapshot the last committed tick to the checkpoint sink now (between ticks).

        For a sink that needs a fresh copy of every room (its store came back
        empty after an outage). Does nothing for a closed room or without a sink.
        """
        if not self._closed and self.checkpoint_sink is not None:
            self._write_checkpoint()

    def _snapshot_due(self, w: _Work) -> bool:
        """A periodic snapshot (``snapshot_interval``) of a room that journalled this tick."""
        return (
            bool(w.journal) and w.now >= self._next_snapshot_at and self.checkpoint_sink is not None
        )

    def _sink_closed(self, reason: str) -> None:
        closed = getattr(self.checkpoint_sink, "room_closed", None)
        if closed is not None:
            try:
                closed(self.code, reason, len(self._members))
            except Exception:
                self._sink_failed("close")

    def _write_journal(self, w: _Work) -> None:
        data = _pack((w.tick, w.now, w.journal))
        self._journal.append(data)
        sink = self.checkpoint_sink
        if sink is not None:
            try:
                sink.submit_journal_nowait(self.code, w.tick, data, self.config.checkpoint_ttl)
            except Exception as exc:
                if getattr(exc, "needs_snapshot", False):
                    # The sink's journal of this room has a gap: snapshot this tick now.
                    self._next_snapshot_at = -math.inf
                self._sink_failed("journal")

    def _write_checkpoint(self) -> None:
        sink = self.checkpoint_sink
        if sink is not None:
            try:
                data = _pack(self.snapshot())
                sink.submit_snapshot_nowait(self.code, self._tick, data, self.config.checkpoint_ttl)
            except Exception:
                self._sink_failed("snapshot")
                return
            interval = self.config.snapshot_interval
            self._next_snapshot_at = self._clock.now() + interval if interval > 0 else math.inf
        self._journal.clear()  # the snapshot covers everything journalled so far

    def _write_game(self, record: GameOver) -> None:
        sink = self.game_record_sink
        if sink is not None:
            try:
                sink.submit_game_nowait(self.code, record)
            except Exception:
                self._sink_failed("game record")

    def _sink_failed(self, what: str) -> None:
        self._sink_errors += 1
        if self._sink_errors == 1 or self._sink_errors % 1000 == 0:
            log.exception(
                "room %s: the %s sink failed (%d so far)", self.code, what, self._sink_errors
            )

    def snapshot(self) -> dict[str, Any]:
        """The room as plain, msgpack-able data, at its last committed tick.

        Timers and grace periods are absolute wall-clock deadlines, so a
        restore (here or in another process) keeps their remaining time.
        """
        players = self._public["players"]
        return {
            "version": SNAPSHOT_VERSION,
            "rules": self.rules.name,
            "code": self.code,
            "mode": self.mode,
            "seed": self.seed,
            "options": dict(self.options),
            "tick": self._tick,
            "saved_at": self._clock.now(),
            "created_at": self._created_at,
            "expires_at": self._expires_at,
            "host": self._host,
            "state": self.rules.dump(self._state),
            "players": {pid: dict(entity) for pid, entity in players.items()},
            "members": {
                m.player_id: {
                    "name": m.name,
                    "seat": m.seat,
                    "role": m.role,
                    "connected": m.connected,
                    "grace_until": m.grace_until,
                }
                for m in self._order
            },
            "timers": self._timers.as_dict(),
        }

    @classmethod
    def restore(
        cls,
        snapshot: Mapping[str, Any],
        rules: Rules,
        *,
        config: RoomConfig | None = None,
        clock: Clock | None = None,
        links: Mapping[str, Link] | None = None,
        checkpoint_sink: CheckpointSink | None = None,
        game_record_sink: GameRecordSink | None = None,
        tick_hook: Callable[[Room, int], None] | None = None,
    ) -> Room:
        """A room rebuilt from ``snapshot()`` data, at the snapshot's tick.

        ``links`` re-attaches connections by player id (each gets a keyframe
        at the first tick). A connected seat without a link is treated as
        dropped at the first tick (its reconnect grace starts then). Timers
        keep their absolute deadlines. Raises ``InvalidSnapshot`` for data
        this runtime did not write, or for another rule set's snapshot.
        """
        try:
            if snapshot["version"] != SNAPSHOT_VERSION:
                raise InvalidSnapshot(f"snapshot version {snapshot['version']!r} is not supported")
            if snapshot["rules"] != rules.name:
                raise InvalidSnapshot(
                    f"snapshot of rule set {snapshot['rules']!r}, not {rules.name!r}"
                )
            room = cls.__new__(cls)
            room._setup(
                rules,
                str(snapshot["code"]),
                str(snapshot["mode"]),
                snapshot["options"],
                int(snapshot["seed"]),
                config,
                clock,
                tick_hook,
            )
            room.checkpoint_sink = checkpoint_sink
            room.game_record_sink = game_record_sink
            tick = int(snapshot["tick"])
            links = links or {}
            members: dict[str, _Member] = {}
            players: dict[str, dict[str, Any]] = {}
            for pid, entry in snapshot["members"].items():
                link = links.get(pid)
                connected = bool(entry["connected"])
                grace = entry.get("grace_until")
                if link is not None:
                    connected, grace = True, None
                m = _Member(
                    str(pid),
                    str(entry["name"]),
                    int(entry["seat"]),
                    str(entry.get("role", "player")),
                    link,
                    connected=connected,
                    grace_until=None if grace is None else float(grace),
                    last_tick=tick,
                )
                m.keyframe = True
                members[m.player_id] = m
                players[m.player_id] = _plain(dict(snapshot["players"][pid]))
                if link is None and connected:
                    room._absent.append(m.player_id)
            state = rules.load(snapshot["state"])
            now = room._clock.now()
            room._install(
                state,
                tick=tick,
                players=players,
                host=snapshot["host"],
                members=members,
                timers=Timers(snapshot["timers"]),
                now=now,
            )
            room._created_at = float(snapshot["created_at"])
            room._expires_at = float(snapshot["expires_at"])
            room._empty_since = math.inf if members else now
            return room
        except InvalidSnapshot:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidSnapshot(f"not a room snapshot: {type(exc).__name__}: {exc}") from None

    # -- mailbox messages -----------------------------------------------------

    def _on_message(self, w: _Work, message: Message) -> None:
        t = type(message)
        if t is JoinRequest:
            self._joins_pending -= 1
            self._join(w, message)
        elif t is LeaveRequest:
            m = w.members.get(message.player_id)
            if m is not None:
                self._remove(w, m, message.reason, detach=m.link is not None)
        elif t is ReconnectRequest:
            self._reconnect(w, message)
        elif t is Stop:
            if w.stop is None:
                w.stop = message.reason
        else:
            raise TypeError(f"unknown mailbox message {message!r}")

    def _join(self, w: _Work, req: JoinRequest) -> None:
        reply = req.reply
        if reply.abandoned:
            return
        pid = req.player_id
        error: RoomError | None = None
        if w.stop is not None or self._stop_request is not None:
            error = RoomClosed(f"room {self.code} is closing")
        elif pid in w.members:
            error = RoomError("already in this room", code="already_joined")
        elif len(w.members) >= self.seats:
            error = RoomFull(f"room {self.code} is full ({self.seats} seats)")
        elif not self.rules.accepts_players(w.state):
            error = RoomError("the game has started; try another room", code="game_in_progress")
        if error is not None:
            w.replies.append((reply, error))
            return
        taken = {m.seat for m in w.members.values()}
        seat = next(s for s in range(self.seats) if s not in taken)
        m = _Member(pid, req.name, seat, req.role, req.link)
        members = w.members_w()
        players = w.players_w()
        host = w.host
        members[pid] = m
        entity = _plain(dict(self.rules.player_entity(pid, self.seed)))
        entity["seq"] = 0
        players[pid] = entity
        if w.host is None:
            w.host = pid
        try:
            self._step(w, PlayerJoined(pid, req.name))
        except RoomError as exc:  # the rule set vetoed the join: undo the seat
            del members[pid]
            del players[pid]
            w.host = host
            w.msgs.pop(pid, None)
            w.replies.append((reply, exc))
            return
        w.room_changed = True
        w.joins.append((m, req))
        w.journal.append(("j", pid, req.name, seat, req.role))
        _rpc_replay(w, pid)

    def _reconnect(self, w: _Work, req: ReconnectRequest) -> None:
        reply = req.reply
        if reply.abandoned:
            return
        old = w.members.get(req.player_id)
        if w.stop is not None or self._stop_request is not None:
            w.replies.append((reply, RoomClosed(f"room {self.code} is closing")))
            return
        if old is None:
            w.replies.append((reply, RoomError("that seat is no longer held", code="not_a_member")))
            return
        m = _Member(old.player_id, old.name, old.seat, old.role, req.link)
        w.members_w()[m.player_id] = m
        w.room_changed = True
        if old.link is not None and old.link is not req.link and not old.link.closed:
            w.effects.append(
                ("close", old.link, CloseCode.REPLACED, "replaced by a newer connection")
            )
        if old.link is not None and old.link is not req.link:
            _rpc_member_gone(w, m.player_id, left=False)  # calls to the old link go unanswered
        if not old.connected:
            w.journal.append(("c", m.player_id))
            self._step_quiet(w, PlayerReconnected(m.player_id))
        w.joins.append((m, req))

    # -- membership changes -------------------------------------------------

    def _drop_link(self, w: _Work, m: _Member) -> None:
        """A member's connection is gone: hold the seat for the grace period, or leave."""
        grace = self.config.reconnect_grace
        if grace <= 0 or m.closing:  # a member closed for lagging does not keep its seat
            self._remove(w, m, "disconnected", detach=False)
            return
        held = _Member(
            m.player_id, m.name, m.seat, m.role, None, connected=False, grace_until=w.now + grace
        )
        w.members_w()[m.player_id] = held
        w.room_changed = True
        w.msgs.pop(m.player_id, None)
        _rpc_member_gone(w, m.player_id, left=False)
        w.journal.append(("d", m.player_id, held.grace_until))
        self._step_quiet(w, PlayerDisconnected(m.player_id))

    def _remove(self, w: _Work, m: _Member, reason: str, *, detach: bool) -> None:
        pid = m.player_id
        del w.members_w()[pid]
        w.players_w().pop(pid, None)
        w.msgs.pop(pid, None)
        _rpc_member_gone(w, pid, left=True)
        w.voice = w.voice.drop(pid)
        w.room_changed = True
        if detach and m.link is not None and not m.closing:
            w.effects.append(("detach", m.link, 0, reason))
        w.journal.append(("l", pid, reason))
        if w.host == pid:
            rest = sorted(w.members.values(), key=lambda x: (not x.connected, x.seat))
            w.host = rest[0].player_id if rest else None
            if w.host is not None:
                changed = EventFrame("host_changed", {"host": w.host})
                for other in w.members.values():
                    if other.link is not None:
                        w.queue(other.player_id, changed)
        self._step_quiet(w, PlayerLeft(pid, reason))

    # -- rules ----------------------------------------------------------------

    def _step(self, w: _Work, event: Event) -> None:
        """Feed ``event`` to the rule set and carry out its actions. A ``RoomError``
        from the rule set propagates with the working state unchanged."""
        old = w.state
        new, actions = self.rules.step(old, event, w.now)
        if new is not old:
            if _phase_of(new) != _phase_of(old) and len(w.timers):
                # State timeouts (gen_statem): a phase change disarms every timer
                # the same step does not arm again.
                keep = {a.name for a in actions if type(a) is StartTimer}
                w.timers_w().cancel_all(keep)
            w.state = new
        if actions:
            self._carry_out(w, actions)

    def _step_quiet(self, w: _Work, event: Event) -> None:
        """Step a runtime event (join, leave, timer); a rule set refusing it changes nothing."""
        try:
            self._step(w, event)
        except RoomError:
            pass  # e.g. a stale timer: the rule set says it does not apply

    def _carry_out(self, w: _Work, actions: list[Any]) -> None:
        for action in actions:
            t = type(action)
            if t is StartTimer:
                w.timers_w().start(action.name, action.deadline)
            elif t is CancelTimer:
                if action.name in w.timers:
                    w.timers_w().cancel(action.name)
            elif t is SendTo:
                m = w.members.get(action.player_id)
                if m is not None and m.link is not None:
                    w.queue(m.player_id, EventFrame(action.event, dict(action.data)))
            elif t is Broadcast:
                frame = EventFrame(action.event, dict(action.data))
                for m in w.members.values():
                    if m.link is not None:
                        w.queue(m.player_id, frame)
            elif t is Checkpoint:
                w.checkpoint = action.reason
            elif t is GameOver:
                w.games.append(action)
            elif t is StopRoom:
                if w.stop is None:
                    w.stop = action.reason
            else:
                raise TypeError(f"{self.rules.name} returned an unknown action {action!r}")

    # -- frames from members ------------------------------------------------
    # Each handler returns True when the member is gone and its remaining
    # frames of this tick must be ignored.

    def _on_input(self, w: _Work, m: _Member, frame: Input) -> bool:
        pid = m.player_id
        entity = w.players[pid]
        try:
            fields = self._check_input(entity, frame.delta)
        except _Refused as refused:
            self._inputs_refused += 1
            w.queue(pid, Error(refused.code, str(refused), frame.seq))
            return False
        new = dict(entity)
        if fields:
            new.update(fields)
        new["seq"] = frame.seq
        w.players_w()[pid] = new
        w.journal.append(("i", pid, frame.seq, fields))
        self._inputs_ok += 1
        return False

    def _check_input(self, entity: dict[str, Any], delta: Any) -> dict[str, Any]:
        """The fields an input sets, validated and rounded; raises ``_Refused``."""
        t = type(delta)
        if t is list:
            delta = self._dense_to_fields(entity, delta)
        elif t is not dict:
            raise _Refused("invalid_input", "an input is a map of fields or a dense patch")
        kinds = self._input_fields
        out: dict[str, Any] = {}
        for key, value in delta.items():
            kind = kinds.get(key)
            if kind is None:
                raise _Refused("forbidden_field", f"field {key!r} is not client-writable")
            tv = type(value)
            if kind == "f32":
                if tv is not float and tv is not int:
                    raise _Refused("invalid_input", f"field {key!r} must be a number")
                try:  # protocol.f32's rounding, inlined: this runs for every input field
                    value = _f32_unpack(_f32_pack(value))[0]
                except OverflowError:
                    value = math.inf
                if not math.isfinite(value):
                    raise _Refused("invalid_input", f"field {key!r} must be a finite number")
            elif kind == "int":
                if tv is not int:
                    raise _Refused("invalid_input", f"field {key!r} must be an integer")
            elif kind == "bool":
                if tv is not bool:
                    raise _Refused("invalid_input", f"field {key!r} must be a boolean")
            elif tv is not str or len(value) > self.config.max_input_str:
                raise _Refused(
                    "invalid_input",
                    f"field {key!r} must be a string of at most {self.config.max_input_str}",
                )
            out[key] = value
        return out

    def _dense_to_fields(self, entity: dict[str, Any], delta: list[Any]) -> dict[str, Any]:
        """Read a dense patch (``[mask, v...]`` over the entity's sorted keys) as fields."""
        if not delta or type(delta[0]) is not int or delta[0] < 0:
            raise _Refused("invalid_input", "a dense patch starts with a non-negative mask")
        mask = delta[0]
        keys = sorted(entity)
        if mask >> len(keys) or mask.bit_count() != len(delta) - 1:
            raise _Refused("invalid_input", "the dense patch does not match your entity")
        out: dict[str, Any] = {}
        values = iter(delta)
        next(values)
        for i, key in enumerate(keys):
            if mask >> i & 1:
                out[key] = next(values)
        return out

    def _on_rpc(self, w: _Work, m: _Member, frame: Rpc) -> bool:
        if frame.target != "room":
            return self._route_rpc(w, m, frame)
        pid = m.player_id
        self._rpcs += 1
        if _runtime_call(w, m, frame):  # voice.*, rpc.*: the runtime's own room methods
            return False
        try:
            event = self.rules.parse_action(pid, frame.method, frame.args)
            self._step(w, event)
        except RoomError as exc:
            self._rpcs_refused += 1
            w.queue(pid, RpcResult(frame.id, False, {"code": exc.code, "message": exc.message}))
            return False
        w.journal.append(("r", pid, frame.method, frame.args))
        w.queue(pid, RpcResult(frame.id, True, None))
        return pid not in w.members  # the rule set may have removed the player

    def _route_rpc(self, w: _Work, m: _Member, frame: Rpc) -> bool:
        """RPCs to players ("host", "others", "all", ids): relayed (``actors._rpc``)."""
        self._rpcs += 1
        _rpc_route(w, m, frame, self._rpc_settings)
        return False

    def _on_rpc_result(self, w: _Work, m: _Member, frame: RpcResult) -> bool:
        """A callee's answer to a relayed call, routed back to its caller."""
        _rpc_answer(w, m, frame)
        return False

    def _on_signal(self, w: _Work, m: _Member, frame: Signal) -> bool:
        """Voice signalling, relayed to a peer of the same channel (``actors._voice``)."""
        relay_signal(w, m, frame, self.config.max_signal_bytes)
        return False

    def _on_ping(self, w: _Work, m: _Member, frame: Ping) -> bool:
        w.queue(m.player_id, Pong(frame.nonce))
        return False

    def _on_leave(self, w: _Work, m: _Member, frame: Leave) -> bool:
        self._remove(w, m, "left", detach=True)
        return True

    def _on_unexpected(self, w: _Work, m: _Member, frame: WireFrame) -> None:
        w.queue(
            m.player_id,
            Error(
                "unexpected_frame",
                f"{type(frame).__name__} is not valid inside a room",
                frame.frame_id(),
            ),
        )
