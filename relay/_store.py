"""Checkpoint storage: the ``Store`` interface, its records, its errors and store URLs.

A durable room writes snapshots and journal entries through a ``Checkpointer`` into a
``Store``; ``open_store`` picks the backend (embedded SQLite, Redis, or volatile memory).

Whose fault: the tree of errors every store raises::

    StoreError
    ├── StoreConfigError        the operator's: bad store URL or option, unsupported server
    ├── StoreUnavailable        nobody's yet: refused, timed out, busy; retry later
    ├── StoreDataError          the store's: a stored record is malformed (foreign writer?)
    ├── StoreInputError         the caller's (also a ValueError): a malformed record
    │   └── CheckpointOrderError    ticks submitted out of order for a room
    └── BacklogFull             the store's outage: the checkpointer's backlog is full

Semantics shared by every backend (the contract tests run against each):

- A room is a snapshot ``(tick, bytes)`` plus journal entries ``(tick, seq, bytes)`` in
  ``(tick, seq)`` order. Restoring = the snapshot + the entries with ``tick > snapshot.tick``.
- Writing a snapshot at tick T trims the journal entries with ``tick <= T``. A snapshot
  older than the stored one is ignored (a late retry never rolls a room back).
- A journal entry whose ``(tick, seq)`` is already stored is ignored, so a batch that
  failed half-way can be written again as a whole.
- Every write renews the room's time to live; a room not written for its TTL disappears.
- In a ``WriteBatch``, the deletions are applied before the writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

import trio

T = TypeVar("T")
__all__ = [
    "BacklogFull",
    "CheckpointOrderError",
    "GameRecord",
    "JournalEntry",
    "LeaderboardEntry",
    "MemoryStore",
    "PlayerScore",
    "RoomRecord",
    "RoomWrite",
    "Snapshot",
    "Store",
    "StoreCalls",
    "StoreConfigError",
    "StoreDataError",
    "StoreError",
    "StoreInputError",
    "StoreStatistics",
    "StoreUnavailable",
    "WriteBatch",
    "open_store",
]

#: Ticks and sequence numbers stay below 2**53 so that every backend (and Lua in Redis)
#: holds them exactly; at 20 Hz that is millions of years.
MAX_TICK = 2**53 - 1
#: Longest time to live a room may ask for (ten years): a bigger one is a unit mistake.
MAX_TTL = 10 * 365 * 86400.0

_CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_PLAYER_ID = 128
_MAX_NAME = 128


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Base of every error raised by a store or the checkpointer."""


class StoreConfigError(StoreError):
    """The operator's fault: a store URL or option is wrong, or the server is unsupported.

    Retrying does not help; the message says what to change.
    """


class StoreUnavailable(StoreError):
    """The store cannot be reached right now (refused, timed out, locked, loading).

    Retryable: the checkpointer keeps the writes queued and tries again with backoff.
    """


class StoreDataError(StoreError):
    """A record read back from the store is malformed (written by something else?)."""


class StoreInputError(StoreError, ValueError):
    """The caller's fault: a record handed to the store is malformed (a bug upstream)."""


class CheckpointOrderError(StoreInputError):
    """A room submitted a journal entry older than what it already submitted.

    Journal ticks must not go down, and must be above the room's latest snapshot tick.
    """


class BacklogFull(StoreError):
    """The checkpointer's bounded backlog is full (the store has been down for a while).

    Nothing already accepted is lost; this one submission was refused. When
    ``needs_snapshot`` is true the room's journal now has a gap, so the checkpointer
    refuses further journal entries of that room until it submits a snapshot.
    """

    def __init__(self, message: str, *, code: str, needs_snapshot: bool) -> None:
        super().__init__(message)
        self.code = code
        self.needs_snapshot = needs_snapshot


# --------------------------------------------------------------------------- validation


def check_code(code: object, what: str = "room code") -> str:
    """Return ``code`` if it is 1-64 characters of ``[A-Za-z0-9_-]``, else raise.

    The character set keeps codes safe inside Redis hash tags and SQL, and in logs.

    Raises:
        StoreInputError: the code is not a string of that shape.
    """
    if not isinstance(code, str) or _CODE_RE.fullmatch(code) is None:
        raise StoreInputError(f"{what} must be 1-64 characters of [A-Za-z0-9_-], got {code!r}")
    return code


def check_tick(tick: object, what: str = "tick") -> int:
    """Return ``tick`` if it is an int in ``[0, 2**53)``, else raise StoreInputError."""
    if isinstance(tick, bool) or not isinstance(tick, int) or not 0 <= tick <= MAX_TICK:
        raise StoreInputError(f"{what} must be an int in [0, 2**53), got {tick!r}")
    return tick


def check_ttl(ttl: object) -> float:
    """Return ``ttl`` (seconds) as a float if it is finite and in ``(0, 10 years]``."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise StoreInputError(f"ttl must be a number of seconds, got {ttl!r}")
    value = float(ttl)
    if not math.isfinite(value) or not 0 < value <= MAX_TTL:
        raise StoreInputError(f"ttl must be in (0, {MAX_TTL:.0f}] seconds, got {ttl!r}")
    return value


def check_data(data: object, what: str = "data") -> bytes:
    """Return ``data`` as bytes (copying a bytearray or memoryview), else raise."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise StoreInputError(f"{what} must be bytes, got {type(data).__name__}")


def _check_text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise StoreInputError(f"{what} must be a string of 1-{limit} characters, got {value!r}")
    return value


def _check_time(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreInputError(f"{what} must be a Unix time in seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise StoreInputError(f"{what} must be a finite, non-negative Unix time, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True, repr=False)
class Snapshot:
    """The whole state of a room as of the end of ``tick`` (opaque bytes to the store)."""

    tick: int
    data: bytes

    def __post_init__(self) -> None:
        check_tick(self.tick, "snapshot tick")
        object.__setattr__(self, "data", check_data(self.data, "snapshot data"))

    def __repr__(self) -> str:
        return f"Snapshot(tick={self.tick}, {len(self.data)} B)"


@dataclass(frozen=True, slots=True, repr=False)
class JournalEntry:
    """One accepted input of a room at ``tick``; ``seq`` orders several within one tick.

    ``(tick, seq)`` identifies the entry: writing it twice stores it once.
    """

    tick: int
    data: bytes
    seq: int = 0

    def __post_init__(self) -> None:
        check_tick(self.tick, "journal tick")
        check_tick(self.seq, "journal seq")
        object.__setattr__(self, "data", check_data(self.data, "journal data"))

    @property
    def key(self) -> tuple[int, int]:
        """``(tick, seq)``: the entry's place in the journal."""
        return (self.tick, self.seq)

    def __repr__(self) -> str:
        return f"JournalEntry(tick={self.tick}, seq={self.seq}, {len(self.data)} B)"


@dataclass(frozen=True, slots=True)
class RoomWrite:
    """What one batch writes for one room: an optional snapshot, then journal entries.

    Journal entries must be in strictly increasing ``(tick, seq)`` order; those at or below
    the snapshot's tick are obsolete and skipped. ``ttl`` (seconds) renews every key of
    the room. A write carries a snapshot or at least one journal entry.

    Raises:
        StoreInputError: any field is malformed or the journal is out of order.
    """

    code: str
    snapshot: Snapshot | None
    journal: tuple[JournalEntry, ...]
    ttl: float

    def __post_init__(self) -> None:
        check_code(self.code)
        if self.snapshot is not None and not isinstance(self.snapshot, Snapshot):
            raise StoreInputError(f"snapshot must be a Snapshot, got {self.snapshot!r}")
        journal = tuple(self.journal)
        for entry in journal:
            if not isinstance(entry, JournalEntry):
                raise StoreInputError(f"journal items must be JournalEntry, got {entry!r}")
        for before, after in itertools.pairwise(journal):
            if after.key <= before.key:
                raise CheckpointOrderError(
                    f"room {self.code}: journal entries must be in increasing (tick, seq) "
                    f"order, got {before.key} then {after.key}"
                )
        if self.snapshot is None and not journal:
            raise StoreInputError(f"room {self.code}: a write needs a snapshot or journal")
        object.__setattr__(self, "journal", journal)
        object.__setattr__(self, "ttl", check_ttl(self.ttl))

    def live_journal(self) -> tuple[JournalEntry, ...]:
        """The journal entries this write stores: those after its snapshot's tick."""
        if self.snapshot is None:
            return self.journal
        floor = self.snapshot.tick
        return tuple(e for e in self.journal if e.tick > floor)

    @property
    def nbytes(self) -> int:
        """Payload bytes carried (snapshot plus journal data)."""
        size = sum(len(e.data) for e in self.journal)
        return size + (len(self.snapshot.data) if self.snapshot is not None else 0)


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Writes for many rooms that a store applies in one round trip / one transaction.

    ``deletes`` are applied first, then ``rooms`` (at most one write per room code).

    Raises:
        StoreInputError: a malformed write or code, or two writes for one room.
    """

    rooms: tuple[RoomWrite, ...] = ()
    deletes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        rooms = tuple(self.rooms)
        seen: set[str] = set()
        for write in rooms:
            if not isinstance(write, RoomWrite):
                raise StoreInputError(f"rooms items must be RoomWrite, got {write!r}")
            if write.code in seen:
                raise StoreInputError(f"room {write.code} appears twice in one batch")
            seen.add(write.code)
        deletes = tuple(dict.fromkeys(check_code(c) for c in self.deletes))
        object.__setattr__(self, "rooms", rooms)
        object.__setattr__(self, "deletes", deletes)

    def __bool__(self) -> bool:
        return bool(self.rooms or self.deletes)


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """What ``load_room`` returns: the latest snapshot (if any) and the journal after it."""

    code: str
    snapshot: Snapshot | None
    journal: tuple[JournalEntry, ...]


class PlayerScore(NamedTuple):
    """One player's result in a finished game."""

    player_id: str
    name: str
    score: int


class LeaderboardEntry(NamedTuple):
    """One row of a leaderboard: the total of a player's scores in one mode."""

    player_id: str
    name: str
    total_score: int


@dataclass(frozen=True, slots=True)
class GameRecord:
    """A finished game: who played, their scores, the winner, and when (Unix seconds).

    ``players`` accepts ``(player_id, name, score)`` tuples. ``winner`` is a player id or
    None (a draw or an abandoned game).

    Raises:
        StoreInputError: a malformed field, duplicate player ids, an unknown winner, or
            ``ended_at`` before ``started_at``.
    """

    code: str
    mode: str
    players: tuple[PlayerScore, ...]
    winner: str | None
    started_at: float
    ended_at: float

    def __post_init__(self) -> None:
        check_code(self.code)
        check_code(self.mode, "game mode")
        players = []
        for item in self.players:
            try:
                player_id, name, score = item
            except (TypeError, ValueError):
                raise StoreInputError(f"players items are (player_id, name, score), got {item!r}")
            _check_text(player_id, "player_id", _MAX_PLAYER_ID)
            _check_text(name, "player name", _MAX_NAME)
            if isinstance(score, bool) or not isinstance(score, int) or abs(score) > MAX_TICK:
                raise StoreInputError(f"score must be an int below 2**53, got {score!r}")
            players.append(PlayerScore(player_id, name, score))
        if not players:
            raise StoreInputError("a game record needs at least one player")
        ids = [p.player_id for p in players]
        if len(set(ids)) != len(ids):
            raise StoreInputError(f"duplicate player ids in game record: {ids!r}")
        if self.winner is not None and self.winner not in ids:
            raise StoreInputError(f"winner {self.winner!r} is not one of the players")
        started = _check_time(self.started_at, "started_at")
        ended = _check_time(self.ended_at, "ended_at")
        if ended < started:
            raise StoreInputError("ended_at is before started_at")
        object.__setattr__(self, "players", tuple(players))
        object.__setattr__(self, "started_at", started)
        object.__setattr__(self, "ended_at", ended)

    def to_json(self) -> str:
        """The record as compact JSON (how the stores keep it)."""
        return json.dumps(
            {
                "code": self.code,
                "mode": self.mode,
                "players": [list(p) for p in self.players],
                "winner": self.winner,
                "started_at": self.started_at,
                "ended_at": self.ended_at,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> GameRecord:
        """Parse ``to_json`` output; raises StoreDataError if it is not one."""
        try:
            obj = json.loads(text)
            return cls(
                code=obj["code"],
                mode=obj["mode"],
                players=tuple(tuple(p) for p in obj["players"]),
                winner=obj["winner"],
                started_at=obj["started_at"],
                ended_at=obj["ended_at"],
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreDataError(f"malformed game record in store: {exc}") from exc


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counters of one store object since it was opened (``Store.statistics()``)."""

    backend: str
    batches: int
    rooms_written: int
    snapshots_written: int
    journal_entries_written: int
    bytes_written: int
    deletes: int
    loads: int
    errors: int
    last_error: str | None
    last_batch_seconds: float | None


class StoreCounters:
    """Mutable counters behind ``StoreStatistics``; updated on the trio thread only."""

    __slots__ = (
        "backend",
        "batches",
        "bytes_written",
        "deletes",
        "errors",
        "journal_entries_written",
        "last_batch_seconds",
        "last_error",
        "loads",
        "rooms_written",
        "snapshots_written",
    )

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.batches = self.rooms_written = self.snapshots_written = 0
        self.journal_entries_written = self.bytes_written = self.deletes = 0
        self.loads = self.errors = 0
        self.last_error: str | None = None
        self.last_batch_seconds: float | None = None

    def batch_done(self, batch: WriteBatch, seconds: float) -> None:
        self.batches += 1
        self.rooms_written += len(batch.rooms)
        self.deletes += len(batch.deletes)
        for write in batch.rooms:
            self.snapshots_written += write.snapshot is not None
            self.journal_entries_written += len(write.journal)
            self.bytes_written += write.nbytes
        self.last_batch_seconds = seconds

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def snapshot(self) -> StoreStatistics:
        return StoreStatistics(**{f.name: getattr(self, f.name) for f in _STAT_FIELDS})


_STAT_FIELDS = dataclasses.fields(StoreStatistics)


# --------------------------------------------------------------------------- interface


@runtime_checkable
class Store(Protocol):
    """Where rooms' checkpoints and finished games live. All I/O methods are trio-async.

    Every method may raise ``StoreUnavailable`` (retryable) or another ``StoreError``;
    ``ping`` never raises. Using a store after ``aclose`` raises trio.ClosedResourceError.
    """

    async def write_batch(self, batch: WriteBatch) -> None:
        """Apply ``batch`` (many rooms) in one round trip; see the module docstring."""
        ...

    async def load_room(self, code: str) -> RoomRecord | None:
        """The room's snapshot and journal after it, or None if it has none (or expired)."""
        ...

    async def list_rooms(self) -> list[str]:
        """Codes of the live rooms, sorted (a hint: ``load_room`` is authoritative)."""
        ...

    async def delete_room(self, code: str) -> None:
        """Remove the room's snapshot and journal now."""
        ...

    async def record_game(self, record: GameRecord) -> None:
        """Keep a finished game and add each player's score to the mode's leaderboard."""
        ...

    async def recent_games(self, mode: str, limit: int = 10) -> list[GameRecord]:
        """The latest recorded games of ``mode``, newest first."""
        ...

    async def leaderboard(self, mode: str, limit: int = 10) -> list[LeaderboardEntry]:
        """Top ``limit`` players of ``mode`` by total score (ties: higher player id first)."""
        ...

    async def ping(self) -> bool:
        """True if the store answers now; never raises."""
        ...

    async def aclose(self) -> None:
        """Release connections; waits for operations still running in worker threads."""
        ...

    def statistics(self) -> StoreStatistics:
        """Counters since the store was opened."""
        ...


def check_limit(limit: object) -> int:
    """Return ``limit`` if it is an int in [1, 1000], else raise StoreInputError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise StoreInputError(f"limit must be an int in [1, 1000], got {limit!r}")
    return limit


# --------------------------------------------------------------------------- memory store


class _MemoryRoom:
    __slots__ = ("expires_at", "journal", "snapshot")

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.journal: dict[tuple[int, int], JournalEntry] = {}
        self.expires_at = 0.0


class MemoryStore:
    """A volatile store in this process: the same contract as the durable ones.

    For tests (it does no I/O and no threads, so it runs under trio's autojump clock) and
    for demos that need no durability. ``set_available(False)`` makes every operation
    raise ``StoreUnavailable``, to rehearse an outage. Times come from ``clock``
    (default: trio's clock).
    """

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or trio.current_time
        self._rooms: dict[str, _MemoryRoom] = {}
        self._games: dict[str, list[GameRecord]] = {}
        self._scores: dict[str, dict[str, list]] = {}
        self._available = True
        self._closed = False
        self._counters = StoreCounters("memory")

    def set_available(self, available: bool) -> None:
        """Simulate an outage (False) or its end (True)."""
        self._available = available

    async def _enter(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("the store is closed")
        if not self._available:
            exc = StoreUnavailable("memory store is marked unavailable")
            self._counters.failed(exc)
            raise exc

    def _live(self, code: str) -> _MemoryRoom | None:
        room = self._rooms.get(code)
        if room is not None and room.expires_at <= self._clock():
            del self._rooms[code]
            return None
        return room

    async def write_batch(self, batch: WriteBatch) -> None:
        if not isinstance(batch, WriteBatch):
            raise StoreInputError(f"write_batch takes a WriteBatch, got {batch!r}")
        await self._enter()
        start = time.perf_counter()
        for code in batch.deletes:
            self._rooms.pop(code, None)
        now = self._clock()
        for write in batch.rooms:
            room = self._live(write.code) or self._rooms.setdefault(write.code, _MemoryRoom())
            floor = room.snapshot.tick if room.snapshot is not None else -1
            snap = write.snapshot
            if snap is not None and snap.tick >= floor:
                room.snapshot = snap
                floor = snap.tick
                room.journal = {k: e for k, e in room.journal.items() if e.tick > floor}
            for entry in write.journal:
                if entry.tick > floor:
                    room.journal.setdefault(entry.key, entry)
            room.expires_at = now + write.ttl
        self._counters.batch_done(batch, time.perf_counter() - start)

    async def load_room(self, code: str) -> RoomRecord | None:
        check_code(code)
        await self._enter()
        self._counters.loads += 1
        room = self._live(code)
        if room is None or (room.snapshot is None and not room.journal):
            return None
        journal = tuple(room.journal[k] for k in sorted(room.journal))
        return RoomRecord(code, room.snapshot, journal)

    async def list_rooms(self) -> list[str]:
        await self._enter()
        return sorted(code for code in list(self._rooms) if self._live(code) is not None)

    async def delete_room(self, code: str) -> None:
        check_code(code)
        await self._enter()
        self._rooms.pop(code, None)
        self._counters.deletes += 1

    async def record_game(self, record: GameRecord) -> None:
        if not isinstance(record, GameRecord):
            raise StoreInputError(f"record must be a GameRecord, got {record!r}")
        await self._enter()
        self._games.setdefault(record.mode, []).append(record)
        board = self._scores.setdefault(record.mode, {})
        for player in record.players:
            row = board.setdefault(player.player_id, [player.name, 0])
            row[0] = player.name
            row[1] += player.score

    async def recent_games(self, mode: str, limit: int = 10) -> list[GameRecord]:
        check_code(mode, "game mode")
        check_limit(limit)
        await self._enter()
        return list(reversed(self._games.get(mode, [])[-limit:]))

    async def leaderboard(self, mode: str, limit: int = 10) -> list[LeaderboardEntry]:
        check_code(mode, "game mode")
        check_limit(limit)
        await self._enter()
        board = self._scores.get(mode, {})
        rows = sorted(board.items(), key=lambda kv: (kv[1][1], kv[0]), reverse=True)
        return [LeaderboardEntry(pid, name, total) for pid, (name, total) in rows[:limit]]

    async def ping(self) -> bool:
        await trio.lowlevel.checkpoint()
        return self._available and not self._closed

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()

    def statistics(self) -> StoreStatistics:
        return self._counters.snapshot()


# --------------------------------------------------------------------------- URLs


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for logs and error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def sqlite_path_from_url(url: str) -> str:
    """The file path in ``sqlite:PATH`` / ``sqlite:///PATH`` (``:memory:`` allowed).

    ``sqlite:PATH`` takes PATH as written (relative or absolute); ``sqlite:///PATH`` is the
    file-URL form and always names the absolute path ``/PATH``.

    Raises:
        StoreConfigError: not a sqlite URL, a host part, or an empty path.
    """
    if not url.startswith("sqlite:"):
        raise StoreConfigError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host:
            raise StoreConfigError(
                f"sqlite URL {url!r} names a host ({host!r}); use sqlite:///ABSOLUTE/PATH "
                "or sqlite:RELATIVE/PATH"
            )
        path = "/" + path.lstrip("/") if slash else ""
    else:
        path = rest
    path = urllib.parse.unquote(path)
    if not path or path == "/":
        raise StoreConfigError(f"sqlite URL {url!r} has no file path")
    return path


def open_store(
    url: str | None,
    *,
    default_path: str | os.PathLike[str] = "roomwire.sqlite3",
    prefix: str = "roomwire:",
    max_connections: int = 4,
    connect_timeout: float = 2.0,
    command_timeout: float = 2.0,
) -> Store:
    """Build the store named by ``url``; does no I/O (connections open on first use).

    - None: the embedded SQLite store in ``default_path``.
    - ``sqlite:PATH`` or ``sqlite:///ABSOLUTE/PATH``: the embedded SQLite store there
      (``sqlite::memory:`` for a throwaway database).
    - ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS): Redis, with
      keys under ``prefix``, a pool of ``max_connections`` driven by as many worker threads,
      and socket timeouts; query options in the URL are passed to redis-py.
    - ``memory:``: the volatile in-process store (tests, demos).

    Raises:
        StoreConfigError: an unknown scheme, a malformed URL, a missing directory, or a
            bad option. The message never contains the URL's password.
    """
    if url is None:
        url = f"sqlite:{os.fspath(default_path)}"
    if not isinstance(url, str):
        raise StoreConfigError(f"store URL must be a string, got {type(url).__name__}")
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from ._store_sqlite import SQLiteStore

        path = sqlite_path_from_url(url)
        return SQLiteStore(path)
    if scheme in ("redis", "rediss"):
        from ._store_redis import RedisStore

        return RedisStore(
            url,
            prefix=prefix,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )
    if url in ("memory:", "memory://"):
        return MemoryStore()
    raise StoreConfigError(
        f"unsupported store URL {redact_url(url)!r}: use sqlite:PATH, sqlite:///PATH, "
        "redis://HOST:PORT/DB, rediss://HOST:PORT/DB or memory:"
    )


class StoreCalls:
    """The reading and bookkeeping calls both real stores share.

    A store that mixes this in runs its blocking work with ``self._run(fn,
    *args)`` (off the event loop, in its own worker threads) and implements the
    blocking ``_load_room``, ``_list_rooms``, ``_delete_room``, ``_record_game``,
    ``_recent_games`` and ``_leaderboard``; this class checks the arguments and
    keeps the counters.
    """

    _counters: StoreCounters

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def load_room(self, code: str) -> RoomRecord | None:
        check_code(code)
        record = await self._run(self._load_room, code)  # type: ignore[attr-defined]
        self._counters.loads += 1
        return record

    async def list_rooms(self) -> list[str]:
        return await self._run(self._list_rooms)  # type: ignore[attr-defined]

    async def delete_room(self, code: str) -> None:
        check_code(code)
        await self._run(self._delete_room, code)  # type: ignore[attr-defined]
        self._counters.deletes += 1

    async def record_game(self, record: GameRecord) -> None:
        if not isinstance(record, GameRecord):
            raise StoreInputError(f"record must be a GameRecord, got {record!r}")
        await self._run(self._record_game, record)  # type: ignore[attr-defined]

    async def recent_games(self, mode: str, limit: int = 10) -> list[GameRecord]:
        check_code(mode, "game mode")
        check_limit(limit)
        return await self._run(self._recent_games, mode, limit)  # type: ignore[attr-defined]

    async def leaderboard(self, mode: str, limit: int = 10) -> list[LeaderboardEntry]:
        check_code(mode, "game mode")
        check_limit(limit)
        return await self._run(self._leaderboard, mode, limit)  # type: ignore[attr-defined]
