"""Journal replay: a room rebuilt from its snapshot plus the journal of the ticks after it.

Theory of operation. A room's journal has one record ``(tick, now, entries)`` per tick in
which the room accepted something (see ``Room.journal``). Each entry is what that tick
applied, in the order it applied it: inputs with their fields already validated and
rounded, room RPCs, joins with their seat, leaves, drops with their grace deadline,
reconnects, timer expiries. Replaying feeds the same events to the same rule set with the
same ``now`` through the room's own compute and commit stages, without links, so the
result is the committed room of the journal's last tick: deterministic, and the same
however often it is replayed. Nothing is sent and no sink is called while replaying.

Whose fault: a record that is not one this runtime wrote, or that does not apply to the
room (an unknown player, an action the rule set now refuses) raises ``InvalidJournal``:
the store holds damaged or mismatched data. It never passes silently.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from ._clock import Clock
from ._errors import RoomError
from ._logic import (
    GameOver,
    PlayerDisconnected,
    PlayerJoined,
    PlayerReconnected,
    Rules,
    TimerExpired,
)
from ._room import InvalidSnapshot, Room, RoomConfig, _Member, _phase_of, _plain, _Work

__all__ = [
    "InvalidJournal",
    "JournalRecord",
    "ReplayEvent",
    "ReplayResult",
    "decode_journal_record",
    "decode_snapshot",
    "replay",
]

#: the entry kinds of a journal record and the number of fields each carries
_ARITY = {"i": 4, "r": 4, "j": 5, "l": 3, "d": (2, 3), "c": 2, "t": 2}


class InvalidJournal(InvalidSnapshot):
    """A journal record this runtime did not write, or one that does not apply to the
    room it belongs to (a server-side problem: damaged or mismatched store data)."""


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """What a room accepted in one tick (``Room.journal`` documents the entries)."""

    tick: int
    now: float
    entries: tuple[tuple[Any, ...], ...]

    def __repr__(self) -> str:
        return f"JournalRecord(tick={self.tick}, {len(self.entries)} entries)"


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One thing that happened during a replay, for people reading a room's history.

    ``kind``: ``input``, ``action`` (a room RPC), ``join``, ``leave``, ``drop``,
    ``reconnect``, ``timer``, ``phase`` (``detail``: from, to), ``game_over`` or
    ``closed``. ``time`` is the room's wall clock (Unix seconds).
    """

    tick: int
    time: float
    kind: str
    player_id: str | None
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The rebuilt room (at the last replayed tick, with no links) and what happened.

    ``closed`` is the reason when the journal ends with the room closing (its rule set
    stopped it): such a room is over and must not run again.
    """

    room: Room
    records: int
    events: tuple[ReplayEvent, ...]
    closed: str | None


def _unpack(data: bytes, what: str, error: type[InvalidSnapshot]) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise error(f"{what} is not msgpack: {exc}") from None
    except Exception as exc:  # msgpack raises a few odd types on truncated input
        raise error(f"{what} is not msgpack: {type(exc).__name__}: {exc}") from None


def decode_snapshot(data: bytes) -> dict[str, Any]:
    """The snapshot dict in ``data`` (msgpack of ``Room.snapshot()``).

    Raises ``InvalidSnapshot`` when it is not msgpack of a map; ``Room.restore`` checks
    the rest.
    """
    snapshot = _unpack(data, "snapshot", InvalidSnapshot)
    if not isinstance(snapshot, dict):
        raise InvalidSnapshot(f"a snapshot is a map, got {type(snapshot).__name__}")
    return snapshot


def decode_journal_record(data: bytes) -> JournalRecord:
    """The record in ``data`` (msgpack of ``[tick, now, entries]``, as rooms write it).

    Raises ``InvalidJournal`` for anything else: wrong shape, unknown entry kinds, entries
    with the wrong number of fields, a tick or time that is not a number.
    """
    record = _unpack(data, "journal record", InvalidJournal)
    if not isinstance(record, list) or len(record) != 3:
        raise InvalidJournal(f"a journal record is [tick, now, entries], got {record!r:.80}")
    tick, now, entries = record
    if type(tick) is not int or tick < 0:
        raise InvalidJournal(f"journal tick must be a non-negative int, got {tick!r}")
    if type(now) not in (int, float) or not math.isfinite(now):
        raise InvalidJournal(f"journal time must be a finite number, got {now!r}")
    if not isinstance(entries, list):
        raise InvalidJournal(f"journal entries must be a list, got {type(entries).__name__}")
    out = []
    for entry in entries:
        if not isinstance(entry, list) or not entry or entry[0] not in _ARITY:
            raise InvalidJournal(f"tick {tick}: unknown journal entry {entry!r:.80}")
        arity = _ARITY[entry[0]]
        if len(entry) not in (arity if isinstance(arity, tuple) else (arity,)):
            raise InvalidJournal(f"tick {tick}: malformed journal entry {entry!r:.80}")
        out.append(tuple(entry))
    return JournalRecord(tick, float(now), tuple(out))


class _ReplayClock(Clock):
    """The room's clock during a replay: it reads the time of the record being applied."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        super().__init__(offset=0.0)
        self.at = at

    def now(self) -> float:
        return self.at


def replay(
    snapshot: Mapping[str, Any],
    records: Iterable[JournalRecord],
    rules: Rules,
    *,
    config: RoomConfig | None = None,
    events: bool = False,
) -> ReplayResult:
    """Rebuild a room: ``Room.restore(snapshot)``, then apply ``records`` in order.

    Pure: no trio, no I/O; the same inputs always give the same room. ``records`` must
    have increasing ticks above the snapshot's (what a store's ``load_room`` returns).
    With ``events`` the result lists what happened, for the operator's replay tool.
    The room has no links and no sinks; ``result.room.snapshot()`` is its state, and
    replaying that snapshot with no records gives the same room again.

    Raises:
        InvalidSnapshot: the snapshot is not one this runtime wrote for ``rules``.
        InvalidJournal: a record is out of order or does not apply to the room.
    """
    clock = _ReplayClock(float(snapshot.get("saved_at", 0.0) or 0.0))
    room = Room.restore(snapshot, rules, config=config, clock=clock)
    log: list[ReplayEvent] | None = [] if events else None
    count = 0
    closed: str | None = None
    for record in records:
        if record.tick <= room.tick:
            raise InvalidJournal(
                f"room {room.code}: journal tick {record.tick} is not after tick {room.tick}"
            )
        clock.at = record.now
        try:
            closed = _apply(room, record, log)
        except InvalidJournal:
            raise
        except (RoomError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidJournal(
                f"room {room.code}: the journal of tick {record.tick} does not apply: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        count += 1
        if closed is not None:
            break
    return ReplayResult(room, count, tuple(log or ()), closed)


def _apply(room: Room, record: JournalRecord, log: list[ReplayEvent] | None) -> str | None:
    """Apply one tick record through the room's compute and commit stages."""
    tick, now = record.tick, record.now
    w = _Work(room, now, tick)
    entries = record.entries
    phase = _phase_of(w.state)

    def note(kind: str, pid: str | None, **detail: Any) -> None:
        if log is not None:
            log.append(ReplayEvent(tick, now, kind, pid, detail))

    def phase_check() -> None:
        nonlocal phase
        new = _phase_of(w.state)
        if new != phase:
            note("phase", None, **{"from": phase, "to": new})
            phase = new

    i, n = 0, len(entries)
    while i < n:
        entry = entries[i]
        kind = entry[0]
        if kind == "t":
            # The tick popped every due timer before stepping any of them: same here,
            # so a step that re-arms a timer of the same name keeps it.
            j = i
            while j < n and entries[j][0] == "t":
                j += 1
            names = [str(e[1]) for e in entries[i:j]]
            for name in names:
                if name in w.timers:
                    w.timers_w().cancel(name)
            for name in names:
                note("timer", None, name=name)
                room._step_quiet(w, TimerExpired(name))
                phase_check()
            i = j
            continue
        pid = str(entry[1])
        if kind == "i":
            _, _, seq, fields = entry
            new = dict(w.players[pid])
            if fields:
                new.update(fields)
            new["seq"] = seq
            w.players_w()[pid] = new
            note("input", pid, seq=seq, fields=fields)
        elif kind == "r":
            _, _, method, args = entry
            room._step(w, room.rules.parse_action(pid, method, args))
            note("action", pid, method=method, args=args)
        elif kind == "j":
            _, _, name, seat, role = entry
            if pid in w.members:
                raise InvalidJournal(f"tick {tick}: {pid!r} joins but already has a seat")
            w.members_w()[pid] = _Member(pid, str(name), int(seat), str(role), None)
            entity = _plain(dict(room.rules.player_entity(pid, room.seed)))
            entity["seq"] = 0
            w.players_w()[pid] = entity
            if w.host is None:
                w.host = pid
            w.room_changed = True
            room._step(w, PlayerJoined(pid, str(name)))
            note("join", pid, name=name, seat=seat, role=role)
        elif kind == "l":
            reason = str(entry[2])
            room._remove(w, w.members[pid], reason, detach=False)
            note("leave", pid, reason=reason)
        elif kind == "d":
            m = w.members[pid]
            grace = entry[2] if len(entry) > 2 else now + room.config.reconnect_grace
            w.members_w()[pid] = _Member(
                pid, m.name, m.seat, m.role, None, connected=False, grace_until=float(grace)
            )
            w.room_changed = True
            room._step_quiet(w, PlayerDisconnected(pid))
            note("drop", pid, grace_until=grace)
        else:  # "c"
            m = w.members[pid]
            w.members_w()[pid] = _Member(pid, m.name, m.seat, m.role, None)
            w.room_changed = True
            room._step_quiet(w, PlayerReconnected(pid))
            note("reconnect", pid)
        phase_check()
        i += 1
    room._build_public(w)
    room._commit(w)
    for over in w.games:
        if isinstance(over, GameOver):
            note("game_over", None, winner=over.winner, standings=[list(s) for s in over.standings])
    if w.stop is not None:
        note("closed", None, reason=w.stop)
    return w.stop
