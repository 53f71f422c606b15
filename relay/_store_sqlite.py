"""The embedded store: SQLite in WAL mode on local disk, driven from one worker thread.

The default when no Redis URL is given, so a relay runs on a bare machine. Every call runs
in a trio worker thread under a ``CapacityLimiter(1)``: one statement at a time on one
connection, never on the event loop. A room's time to live is an ``expires_at`` column
that reads honour; expired rows are purged during writes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ._store import (
    GameRecord,
    JournalEntry,
    LeaderboardEntry,
    RoomRecord,
    RoomWrite,
    Snapshot,
    StoreCalls,
    StoreConfigError,
    StoreCounters,
    StoreDataError,
    StoreError,
    StoreInputError,
    StoreStatistics,
    StoreUnavailable,
    WriteBatch,
)

__all__ = ["SQLiteStore"]

log = logging.getLogger("relay.store")

#: a room's expiry is rewritten when it would move by more than this (or a tenth of
#: its TTL): a live room's row is then touched about once a minute, not every flush
_EXPIRY_SLACK = 60.0

T = TypeVar("T")

#: Bumped when the schema changes; a file from a newer version is refused, not altered.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    code TEXT PRIMARY KEY,
    snap_tick INTEGER,
    snap_data BLOB,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rooms_expires_at ON rooms (expires_at);
CREATE TABLE IF NOT EXISTS journal (
    code TEXT NOT NULL,
    tick INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (code, tick, seq)
);
CREATE TABLE IF NOT EXISTS games (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mode TEXT NOT NULL,
    code TEXT NOT NULL,
    ended_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS games_mode ON games (mode, id);
CREATE TABLE IF NOT EXISTS leaderboard (
    mode TEXT NOT NULL,
    player_id TEXT NOT NULL,
    name TEXT NOT NULL,
    total INTEGER NOT NULL,
    PRIMARY KEY (mode, player_id)
);
CREATE INDEX IF NOT EXISTS leaderboard_rank ON leaderboard (mode, total DESC, player_id DESC);
"""

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteStore(StoreCalls):
    """The ``Store`` contract on a SQLite file (see ``relay._store`` for the semantics).

    Args:
        path: the database file (created if missing; its directory must exist), or
            ``":memory:"``.
        synchronous: SQLite's ``PRAGMA synchronous``. ``"FULL"`` (default) makes each
            committed batch survive a power loss; ``"NORMAL"`` survives a crash of the
            process but may lose the last batches on power loss, for fewer fsyncs.
        busy_timeout: seconds to wait for another process's write lock before raising
            ``StoreUnavailable``.
        purge_interval: seconds between purges of expired rooms (run inside a write).
        max_games: game records kept per mode (oldest deleted first).
        clock: Unix time source for expiry (tests pass a controllable one).

    Raises:
        StoreConfigError: a bad option, or the file's directory does not exist.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 2.0,
        purge_interval: float = 30.0,
        max_games: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = os.fspath(path)
        if self._path != ":memory:":
            directory = os.path.dirname(os.path.abspath(self._path))
            if not os.path.isdir(directory):
                raise StoreConfigError(
                    f"sqlite store: directory {directory!r} for {self._path!r} does not exist"
                )
        if synchronous.upper() not in _SYNCHRONOUS:
            raise StoreConfigError(f"sqlite synchronous must be one of {_SYNCHRONOUS}")
        if not busy_timeout > 0 or not purge_interval > 0 or max_games < 1:
            raise StoreConfigError("busy_timeout, purge_interval and max_games must be > 0")
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._purge_interval = purge_interval
        self._max_games = max_games
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._next_purge = 0.0
        # What this process last wrote of each room: (snapshot tick floor, expires_at).
        # One process writes a store (docs/durability.md), so the rooms table need
        # not be read back on every flush: a flush is then one INSERT per journal
        # row, and a room's expiry is rewritten only when it would move a lot.
        self._meta: dict[str, tuple[int, float]] = {}
        self._closed = False
        # One token: every call runs on the single connection, one at a time. A cancelled
        # call's thread keeps the token until it finishes, so calls never overlap.
        self._limiter = trio.CapacityLimiter(1)
        self._counters = StoreCounters("sqlite")

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    # ------------------------------------------------------------------ thread side

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,  # explicit BEGIN/COMMIT below
                check_same_thread=False,  # trio's worker threads take turns (limiter)
            )
        except sqlite3.Error as exc:
            raise StoreConfigError(f"sqlite store: cannot open {self._path!r}: {exc}") from exc
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreConfigError(
                    f"sqlite store {self._path!r} has schema version {version}, newer than "
                    f"this relay's {SCHEMA_VERSION}: upgrade the relay or use another file"
                )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the worker thread, mapping sqlite errors to ours."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            try:
                return fn(conn, *args)
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise StoreUnavailable(f"sqlite store {self._path!r} is busy: {text}") from exc
            raise StoreError(f"sqlite store {self._path!r}: {text}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreDataError(f"sqlite store {self._path!r} is damaged: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self._path!r}: {exc}") from exc

    def _purge_if_due(self, conn: sqlite3.Connection, now: float) -> None:
        if now < self._next_purge:
            return
        self._next_purge = now + self._purge_interval
        conn.execute(
            "DELETE FROM journal WHERE code IN (SELECT code FROM rooms WHERE expires_at <= ?)",
            (now,),
        )
        cur = conn.execute("DELETE FROM rooms WHERE expires_at <= ?", (now,))
        self._meta = {code: m for code, m in self._meta.items() if m[1] > now}
        if cur.rowcount:
            log.debug("sqlite store purged %d expired rooms", cur.rowcount)

    def _drop_room(self, conn: sqlite3.Connection, code: str) -> None:
        conn.execute("DELETE FROM journal WHERE code = ?", (code,))
        conn.execute("DELETE FROM rooms WHERE code = ?", (code,))
        self._meta.pop(code, None)

    def _write_batch(self, conn: sqlite3.Connection, batch: WriteBatch) -> None:
        now = self._clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._purge_if_due(conn, now)
            for code in batch.deletes:
                self._drop_room(conn, code)
            journal: list[tuple[str, int, int, bytes]] = []
            for write in batch.rooms:
                self._write_room(conn, write, now, journal)
            if journal:
                conn.executemany(
                    "INSERT OR IGNORE INTO journal (code, tick, seq, data) VALUES (?, ?, ?, ?)",
                    journal,
                )
            conn.execute("COMMIT")
        except BaseException:
            self._meta.clear()  # the transaction rolls back: forget what it claimed
            raise

    def _write_room(
        self,
        conn: sqlite3.Connection,
        write: RoomWrite,
        now: float,
        journal: list[tuple[str, int, int, bytes]],
    ) -> None:
        code = write.code
        meta = self._meta.get(code)
        if meta is None:
            row = conn.execute(
                "SELECT snap_tick, expires_at FROM rooms WHERE code = ?", (code,)
            ).fetchone()
            if row is not None:
                meta = (-1 if row[0] is None else row[0], row[1])
        if meta is not None and meta[1] <= now:
            # Expired but not purged yet: it must not leak into the new incarnation.
            self._drop_room(conn, code)
            meta = None
        floor = meta[0] if meta is not None else -1
        expires_at = now + write.ttl
        snap = write.snapshot
        if snap is not None and snap.tick >= floor:
            conn.execute(
                "INSERT INTO rooms (code, snap_tick, snap_data, expires_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET "
                "snap_tick = excluded.snap_tick, snap_data = excluded.snap_data, "
                "expires_at = excluded.expires_at",
                (code, snap.tick, snap.data, expires_at),
            )
            conn.execute("DELETE FROM journal WHERE code = ? AND tick <= ?", (code, snap.tick))
            floor = snap.tick
            meta = (floor, expires_at)
        elif meta is None or expires_at - meta[1] > min(_EXPIRY_SLACK, write.ttl / 10):
            conn.execute(
                "INSERT INTO rooms (code, expires_at) VALUES (?, ?) "
                "ON CONFLICT (code) DO UPDATE SET expires_at = excluded.expires_at",
                (code, expires_at),
            )
            meta = (floor, expires_at)
        self._meta[code] = meta
        journal.extend((code, e.tick, e.seq, e.data) for e in write.journal if e.tick > floor)

    def _load_room(self, conn: sqlite3.Connection, code: str) -> RoomRecord | None:
        conn.execute("BEGIN")  # one read snapshot for both queries
        try:
            row = conn.execute(
                "SELECT snap_tick, snap_data FROM rooms WHERE code = ? AND expires_at > ?",
                (code, self._clock()),
            ).fetchone()
            if row is None:
                return None
            snapshot = None if row[0] is None else Snapshot(row[0], row[1])
            floor = -1 if snapshot is None else snapshot.tick
            rows = conn.execute(
                "SELECT tick, seq, data FROM journal WHERE code = ? AND tick > ? "
                "ORDER BY tick, seq",
                (code, floor),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        try:
            journal = tuple(JournalEntry(tick, bytes(data), seq) for tick, seq, data in rows)
        except StoreInputError as exc:
            raise StoreDataError(f"sqlite store: malformed journal of room {code}: {exc}")
        if snapshot is None and not journal:
            return None
        return RoomRecord(code, snapshot, journal)

    def _list_rooms(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute(
            "SELECT code FROM rooms WHERE expires_at > ? ORDER BY code", (self._clock(),)
        ).fetchall()
        return [code for (code,) in rows]

    def _delete_room(self, conn: sqlite3.Connection, code: str) -> None:
        conn.execute("BEGIN IMMEDIATE")
        self._drop_room(conn, code)
        conn.execute("COMMIT")

    def _record_game(self, conn: sqlite3.Connection, record: GameRecord) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO games (mode, code, ended_at, record) VALUES (?, ?, ?, ?)",
            (record.mode, record.code, record.ended_at, record.to_json()),
        )
        conn.executemany(
            "INSERT INTO leaderboard (mode, player_id, name, total) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (mode, player_id) DO UPDATE SET "
            "name = excluded.name, total = total + excluded.total",
            [(record.mode, p.player_id, p.name, p.score) for p in record.players],
        )
        conn.execute(
            "DELETE FROM games WHERE mode = ? AND id <= "
            "(SELECT id FROM games WHERE mode = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (record.mode, record.mode, self._max_games),
        )
        conn.execute("COMMIT")

    @staticmethod
    def _recent_games(conn: sqlite3.Connection, mode: str, limit: int) -> list[GameRecord]:
        rows = conn.execute(
            "SELECT record FROM games WHERE mode = ? ORDER BY id DESC LIMIT ?", (mode, limit)
        ).fetchall()
        return [GameRecord.from_json(text) for (text,) in rows]

    @staticmethod
    def _leaderboard(conn: sqlite3.Connection, mode: str, limit: int) -> list[LeaderboardEntry]:
        rows = conn.execute(
            "SELECT player_id, name, total FROM leaderboard WHERE mode = ? "
            "ORDER BY total DESC, player_id DESC LIMIT ?",
            (mode, limit),
        ).fetchall()
        return [LeaderboardEntry(*row) for row in rows]

    # ------------------------------------------------------------------ trio side

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise trio.ClosedResourceError("the sqlite store is closed")
        try:
            return await trio.to_thread.run_sync(
                self._call, fn, *args, limiter=self._limiter, abandon_on_cancel=True
            )
        except StoreError as exc:
            self._counters.failed(exc)
            raise

    async def write_batch(self, batch: WriteBatch) -> None:
        """Apply ``batch`` in one SQLite transaction (all of it or none of it)."""
        if not isinstance(batch, WriteBatch):
            raise StoreInputError(f"write_batch takes a WriteBatch, got {batch!r}")
        if not batch:
            return
        start = time.perf_counter()
        await self._run(self._write_batch, batch)
        self._counters.batch_done(batch, time.perf_counter() - start)

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            await self._run(lambda conn: conn.execute("SELECT 1").fetchone())
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        """Close the connection, after any call still running in the worker thread."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close, limiter=self._limiter)

    def statistics(self) -> StoreStatistics:
        return self._counters.snapshot()
