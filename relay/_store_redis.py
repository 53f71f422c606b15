"""The production store: Redis through redis-py's sync client, in trio worker threads.

redis.asyncio runs on asyncio only, so each call runs the blocking client in a worker
thread (``trio.to_thread.run_sync``) under a ``CapacityLimiter`` as large as the connection
pool: a thread always finds a free connection. A ``WriteBatch`` for many rooms is one
pipeline, one round trip.

Key layout (``P`` is the prefix, default ``roomwire:``; ``{...}`` are Redis Cluster hash
tags, so all keys of one room, or of one game mode, live in one slot)::

    P{room:CODE}:snap          hash   tick, data       latest snapshot      TTL = room's
    P{room:CODE}:journal       stream tick, data       entries after it     TTL = room's
                                      (stream id = "<tick>-<seq+1>")
    Prooms                     zset   CODE -> expiry (Unix ms)   live rooms; expires
                                      with its longest-lived member
    Pleaderboard:{MODE}        zset   player_id -> total score   permanent
    Pleaderboard:{MODE}:names  hash   player_id -> name          permanent
    Pgames:{MODE}              stream record (JSON)              capped (MAXLEN ~)

A room's write is one Lua script on its two keys (same slot): it stores the snapshot only
if it is not older than the stored one, trims the journal with ``XTRIM MINID``, appends
the entries with explicit ids (an id at or below the stream's top is a retry and is
skipped), and renews both TTLs. So a batch that timed out can be sent again, and a stale
copy that reaches the server late cannot roll a room back. Requires Redis 7.0 or later.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
import redis.exceptions as rx
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._store import (
    GameRecord,
    JournalEntry,
    LeaderboardEntry,
    RoomRecord,
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
    redact_url,
)

__all__ = ["RedisStore"]

log = logging.getLogger("relay.store")

T = TypeVar("T")

MIN_SERVER_VERSION = (7, 0)

# KEYS: snapshot hash, journal stream.
# ARGV: ttl ms, snapshot tick ("" for none), snapshot data, XTRIM MINID for the snapshot,
#       then (stream id, tick, data) per journal entry, in order.
# Returns the number of entries skipped (already stored, or not after the snapshot).
_WRITE_ROOM_LUA = """
local floor = tonumber(redis.call('HGET', KEYS[1], 'tick') or '-1')
if ARGV[2] ~= '' then
  local tick = tonumber(ARGV[2])
  if tick >= floor then
    redis.call('HSET', KEYS[1], 'tick', ARGV[2], 'data', ARGV[3])
    redis.call('XTRIM', KEYS[2], 'MINID', ARGV[4])
    floor = tick
  end
end
local skipped = 0
for i = 5, #ARGV, 3 do
  if tonumber(ARGV[i + 1]) > floor then
    local r = redis.pcall('XADD', KEYS[2], ARGV[i], 'tick', ARGV[i + 1], 'data', ARGV[i + 2])
    if type(r) == 'table' and r.err then
      if string.find(r.err, 'equal or smaller', 1, true) then
        skipped = skipped + 1
      else
        return r
      end
    end
  else
    skipped = skipped + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return skipped
"""
_WRITE_ROOM_SHA = hashlib.sha1(_WRITE_ROOM_LUA.encode()).hexdigest()

# Error replies that mean "not now" rather than "never".
_TRANSIENT_REPLIES = ("LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY", "OOM")


def _ttl_ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


def _stream_id(entry: JournalEntry) -> str:
    # seq + 1: a stream id of 0-0 is invalid, and tick 0 seq 0 is a valid entry.
    return f"{entry.tick}-{entry.seq + 1}"


def _pack(commands: list[list[Any]]) -> bytes:
    """Encode commands as RESP arrays of bulk strings (args: bytes, str or int)."""
    parts: list[bytes] = []
    append = parts.append
    for args in commands:
        append(b"*%d\r\n" % len(args))
        for arg in args:
            if isinstance(arg, int):
                arg = b"%d" % arg
            elif isinstance(arg, str):
                arg = arg.encode()
            append(b"$%d\r\n" % len(arg))
            append(arg)
            append(b"\r\n")
    return b"".join(parts)


def _map_error(exc: rx.RedisError, where: str) -> StoreError:
    """Translate a redis-py error into the store's error tree (whose fault it is)."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return StoreConfigError(f"redis store {where} refused our credentials: {exc}")
    if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
        return StoreUnavailable(f"redis store {where} unreachable: {exc}")
    if isinstance(exc, rx.ResponseError):
        text = str(exc)
        head = text.split(" ", 1)[0]
        if head in _TRANSIENT_REPLIES:
            return StoreUnavailable(f"redis store {where} is not accepting writes: {text}")
        if head in ("MOVED", "ASK"):
            return StoreConfigError(
                f"redis store {where} is a Redis Cluster node ({text}); point the relay at a "
                "single Redis (or a cluster proxy)"
            )
        if head in ("NOAUTH", "NOPERM", "WRONGPASS"):
            return StoreConfigError(f"redis store {where} denied access: {text}")
        if head == "WRONGTYPE":
            return StoreDataError(f"redis store {where}: a key has an unexpected type: {text}")
    return StoreError(f"redis store {where}: {type(exc).__name__}: {exc}")


class RedisStore(StoreCalls):
    """The ``Store`` contract on Redis >= 7.0 (see ``relay._store`` for the semantics).

    Args:
        url: ``redis://`` or ``rediss://`` URL (query options go to redis-py).
        prefix: prepended to every key; must not contain ``{`` or ``}``.
        max_connections: pool size and number of worker threads (default 4).
        connect_timeout, command_timeout: socket timeouts in seconds, so a dead or stuck
            server raises ``StoreUnavailable`` instead of hanging: a refused connection at
            once, a frozen server after about three timeouts (a call reconnects once, for
            pooled connections that a server restart broke).
        max_games: game records kept per mode (approximately: ``XADD MAXLEN ~``).

    Raises:
        StoreConfigError: a malformed URL or option.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "roomwire:",
        max_connections: int = 4,
        connect_timeout: float = 2.0,
        command_timeout: float = 2.0,
        max_games: int = 10_000,
    ) -> None:
        self._where = redact_url(url)
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix or len(prefix) > 64:
            raise StoreConfigError(
                f"redis key prefix must be at most 64 characters without braces, got {prefix!r}"
            )
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise StoreConfigError(f"max_connections must be an int, got {max_connections!r}")
        if not 1 <= max_connections <= 256:
            raise StoreConfigError(f"max_connections must be in [1, 256], got {max_connections}")
        if not connect_timeout > 0 or not command_timeout > 0 or max_games < 1:
            raise StoreConfigError("connect_timeout, command_timeout, max_games must be > 0")
        try:
            self._pool = redis.ConnectionPool.from_url(
                url,
                max_connections=max_connections,
                socket_connect_timeout=connect_timeout,
                socket_timeout=command_timeout,
                retry=Retry(NoBackoff(), 1),
                client_name="roomwire",
            )
        except (ValueError, TypeError) as exc:
            raise StoreConfigError(f"bad redis URL {self._where!r}: {exc}") from exc
        self._client = redis.Redis(connection_pool=self._pool)
        self._prefix = prefix
        self._index = f"{prefix}rooms"
        self._max_games = max_games
        self._limiter = trio.CapacityLimiter(max_connections)
        self._server_checked = False
        self._check_lock = threading.Lock()
        self._closed = False
        self._counters = StoreCounters("redis")

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, prefix={self._prefix!r})"

    # ------------------------------------------------------------------ keys

    def room_keys(self, code: str) -> tuple[str, str]:
        """The snapshot and journal keys of room ``code``."""
        tag = f"{self._prefix}{{room:{code}}}"
        return f"{tag}:snap", f"{tag}:journal"

    @property
    def index_key(self) -> str:
        """The sorted set of live rooms (member: code, score: expiry in Unix ms)."""
        return self._index

    def leaderboard_keys(self, mode: str) -> tuple[str, str]:
        """The score sorted set and the names hash of ``mode``'s leaderboard."""
        key = f"{self._prefix}leaderboard:{{{mode}}}"
        return key, f"{key}:names"

    def games_key(self, mode: str) -> str:
        """The stream of ``mode``'s recorded games."""
        return f"{self._prefix}games:{{{mode}}}"

    # ------------------------------------------------------------------ thread side

    def _check_server(self) -> None:
        with self._check_lock:
            if self._server_checked:
                return
            info = self._client.info("server")
            raw = str(info.get("redis_version", "0"))
            try:
                version = tuple(int(part) for part in raw.split(".")[:2])
            except ValueError:
                version = (0, 0)
            if version < MIN_SERVER_VERSION:
                raise StoreConfigError(
                    f"redis store {self._where} runs Redis {raw}; roomwire needs Redis "
                    f"{MIN_SERVER_VERSION[0]}.{MIN_SERVER_VERSION[1]} or later"
                )
            # Loaded up front so the first batch does not bounce on NOSCRIPT.
            self._client.script_load(_WRITE_ROOM_LUA)
            self._server_checked = True

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            if not self._server_checked:
                self._check_server()
            return fn(*args)
        except rx.RedisError as exc:
            raise _map_error(exc, self._where) from exc

    def _send(self, commands: list[list[Any]]) -> list[Any]:
        """Send ``commands`` in one write on one pooled connection and read every reply.

        Error replies come back as exception values. A pooled connection that a server
        restart broke gets one reconnect; the batch is idempotent, so resending is safe.
        """
        payload = [_pack(commands)]
        for attempt in (1, 2):
            conn = self._pool.get_connection()
            try:
                conn.send_packed_command(payload)
                replies: list[Any] = []
                for _ in commands:
                    try:
                        replies.append(conn.read_response())
                    except rx.ResponseError as exc:
                        replies.append(exc)
                return replies
            except (rx.ConnectionError, rx.TimeoutError):
                conn.disconnect()
                if attempt == 2:
                    raise
            finally:
                self._pool.release(conn)
        raise AssertionError("unreachable")

    def _execute(self, commands: list[list[Any]]) -> list[Any]:
        """``_send``; loads the Lua script and sends again after a NOSCRIPT reply."""
        replies = self._send(commands)
        if any(isinstance(r, rx.NoScriptError) for r in replies):
            # A restarted (or flushed) server forgot the script. The batch is idempotent,
            # so loading the script and sending the whole batch again is safe.
            self._client.script_load(_WRITE_ROOM_LUA)
            replies = self._send(commands)
        for reply in replies:
            if isinstance(reply, rx.RedisError):
                raise reply
        return replies

    def _write_batch(self, batch: WriteBatch) -> int:
        # Packed by hand (see _pack): redis-py's generic packing cost more CPU than the
        # server spends running the batch, and this runs every flush interval.
        commands: list[list[Any]] = []
        if batch.deletes:
            for code in batch.deletes:
                commands.append([b"DEL", *self.room_keys(code)])
            commands.append([b"ZREM", self._index, *batch.deletes])
        now_ms = int(time.time() * 1000)
        index_args: list[Any] = [b"ZADD", self._index]
        longest = 0
        for write in batch.rooms:
            ttl_ms = _ttl_ms(write.ttl)
            longest = max(longest, ttl_ms)
            index_args += [now_ms + ttl_ms, write.code]
            snap = write.snapshot
            args: list[Any] = [b"EVALSHA", _WRITE_ROOM_SHA, 2, *self.room_keys(write.code), ttl_ms]
            if snap is None:
                args += [b"", b"", b""]
            else:
                args += [snap.tick, snap.data, f"{snap.tick + 1}-0"]
            for entry in write.live_journal():
                args += [_stream_id(entry), entry.tick, entry.data]
            commands.append(args)
        if batch.rooms:
            commands.append(index_args)
            commands.append([b"ZREMRANGEBYSCORE", self._index, b"-inf", now_ms])
            # The index lives as long as its longest-lived member: NX sets a first expiry,
            # GT only ever extends it (a shorter room must not cut the others short).
            commands.append([b"PEXPIRE", self._index, longest, b"NX"])
            commands.append([b"PEXPIRE", self._index, longest, b"GT"])
        replies = self._execute(commands)
        first = len(batch.deletes) + 1 if batch.deletes else 0
        return sum(replies[first : first + len(batch.rooms)])

    def _load_room(self, code: str) -> RoomRecord | None:
        snap_key, journal_key = self.room_keys(code)
        pipe = self._client.pipeline(transaction=True)  # one slot: MULTI is cluster-safe
        pipe.hgetall(snap_key)
        pipe.xrange(journal_key)
        fields, items = pipe.execute()
        snapshot = None
        try:
            if fields:
                snapshot = Snapshot(int(fields[b"tick"]), fields[b"data"])
            floor = -1 if snapshot is None else snapshot.tick
            journal = []
            for stream_id, entry in items:
                tick, _, seq = stream_id.partition(b"-")
                if int(tick) > floor:
                    journal.append(JournalEntry(int(tick), entry[b"data"], int(seq) - 1))
        except (KeyError, ValueError) as exc:
            raise StoreDataError(f"redis store: malformed checkpoint of room {code}: {exc!r}")
        if snapshot is None and not journal:
            return None
        return RoomRecord(code, snapshot, tuple(journal))

    def _list_rooms(self) -> list[str]:
        now_ms = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.zremrangebyscore(self._index, "-inf", now_ms)
        pipe.zrangebyscore(self._index, f"({now_ms}", "+inf")
        _, members = pipe.execute()
        return sorted(m.decode() for m in members)

    def _delete_room(self, code: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(*self.room_keys(code))
        pipe.zrem(self._index, code)
        pipe.execute()

    def _record_game(self, record: GameRecord) -> None:
        scores, names = self.leaderboard_keys(record.mode)
        # All keys carry the {MODE} tag: one slot, so MULTI makes the record atomic.
        pipe = self._client.pipeline(transaction=True)
        pipe.xadd(
            self.games_key(record.mode),
            {"record": record.to_json()},
            maxlen=self._max_games,
            approximate=True,
        )
        for player in record.players:
            pipe.zincrby(scores, player.score, player.player_id)
        pipe.hset(names, mapping={p.player_id: p.name for p in record.players})
        pipe.execute()

    def _recent_games(self, mode: str, limit: int) -> list[GameRecord]:
        items = self._client.xrevrange(self.games_key(mode), count=limit)
        try:
            return [GameRecord.from_json(fields[b"record"]) for _, fields in items]
        except KeyError as exc:
            raise StoreDataError(f"redis store: malformed game record of mode {mode}: {exc!r}")

    def _leaderboard(self, mode: str, limit: int) -> list[LeaderboardEntry]:
        scores, names = self.leaderboard_keys(mode)
        rows = self._client.zrevrange(scores, 0, limit - 1, withscores=True)
        if not rows:
            return []
        found = self._client.hmget(names, [pid for pid, _ in rows])
        return [
            LeaderboardEntry(pid.decode(), (name or pid).decode(), round(score))
            for (pid, score), name in zip(rows, found, strict=True)
        ]

    # ------------------------------------------------------------------ trio side

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise trio.ClosedResourceError("the redis store is closed")
        try:
            return await trio.to_thread.run_sync(
                self._call, fn, *args, limiter=self._limiter, abandon_on_cancel=True
            )
        except StoreError as exc:
            self._counters.failed(exc)
            raise

    async def write_batch(self, batch: WriteBatch) -> None:
        """Apply ``batch`` in one pipeline (one round trip; one Lua call per room)."""
        if not isinstance(batch, WriteBatch):
            raise StoreInputError(f"write_batch takes a WriteBatch, got {batch!r}")
        if not batch:
            return
        start = time.perf_counter()
        skipped = await self._run(self._write_batch, batch)
        self._counters.batch_done(batch, time.perf_counter() - start)
        if skipped and log.isEnabledFor(logging.DEBUG):
            log.debug("redis store: %d journal entries were already stored", skipped)

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(await self._run(self._client.ping))
        except StoreError:
            return False

    async def aclose(self) -> None:
        """Close the pool's connections, after every call still running in a thread."""
        if self._closed:
            return
        self._closed = True
        borrowers = [object() for _ in range(int(self._limiter.total_tokens))]
        with trio.CancelScope(shield=True):
            for borrower in borrowers:
                await self._limiter.acquire_on_behalf_of(borrower)
        try:
            self._pool.disconnect()
        finally:
            for borrower in borrowers:
                self._limiter.release_on_behalf_of(borrower)

    def statistics(self) -> StoreStatistics:
        return self._counters.snapshot()
