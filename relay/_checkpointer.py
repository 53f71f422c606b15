"""The checkpointer: rooms hand it snapshots and journal entries without waiting, and it
writes them for all rooms in one store batch per flush interval, riding out outages.

Theory of operation. Each room has a pending record: at most one snapshot (the latest)
and the journal entries submitted after it, in order. A new snapshot supersedes the pending
snapshot and every pending journal entry (all have ticks at or below it): it is what the
store would keep anyway, so coalescing at submission loses nothing and keeps the backlog
small. A flush builds one ``WriteBatch`` from every pending record, and only after the
store confirms it removes what it wrote; a failed flush leaves everything in place and is
retried with capped exponential backoff, with whatever arrived meanwhile. Stores apply
batches idempotently, so resending a half-applied batch is safe. The backlog is bounded
(entries and bytes); when a submission does not fit it raises ``BacklogFull`` instead of
dropping anything already accepted.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

import trio

from ._store import (
    BacklogFull,
    CheckpointOrderError,
    JournalEntry,
    RoomWrite,
    Snapshot,
    Store,
    StoreError,
    WriteBatch,
    check_code,
    check_data,
    check_tick,
    check_ttl,
)

__all__ = ["Checkpointer", "CheckpointerStatistics"]

log = logging.getLogger("relay.store")


@dataclass(frozen=True, slots=True)
class CheckpointerStatistics:
    """A checkpointer's state and counters (``Checkpointer.statistics()``).

    ``backlog_*`` count what is accepted but not yet confirmed by the store (an entry is a
    snapshot, a journal entry or a pending delete; bytes are payload bytes). ``degraded``
    is true from a failed flush until the next successful one. ``last_flush_at`` is
    ``trio.current_time()`` of the last successful flush (None before the first).
    """

    backlog_entries: int
    backlog_bytes: int
    backlog_rooms: int
    max_backlog: int
    max_backlog_bytes: int
    submitted: int
    coalesced: int
    refused: int
    flushes: int
    failures: int
    consecutive_failures: int
    degraded: bool
    last_error: str | None
    last_flush_at: float | None
    last_flush_seconds: float | None


class _Room:
    """Pending writes and ordering state of one room (see the module docstring)."""

    __slots__ = (
        "code",
        "delete_pending",
        "epoch",
        "journal",
        "last_journal",
        "last_snapshot_tick",
        "nbytes",
        "needs_snapshot",
        "snapshot",
        "ttl",
    )

    def __init__(self, code: str) -> None:
        self.code = code
        # Bumped by each delete: a flush that started before it must not clear what came
        # after it.
        self.epoch = 0
        self.delete_pending = False
        self.snapshot: Snapshot | None = None
        self.journal: deque[JournalEntry] = deque()
        self.ttl = 0.0
        self.nbytes = 0
        # Ordering state of the current incarnation; kept after flushes.
        self.last_snapshot_tick: int | None = None
        self.last_journal: tuple[int, int] | None = None
        self.needs_snapshot = False

    @property
    def entries(self) -> int:
        return self.delete_pending + (self.snapshot is not None) + len(self.journal)

    @property
    def last_tick(self) -> int | None:
        ticks = [t for t in (self.last_snapshot_tick,) if t is not None]
        if self.last_journal is not None:
            ticks.append(self.last_journal[0])
        return max(ticks) if ticks else None


@dataclass(frozen=True, slots=True)
class _Flight:
    """What one flush sent for one room, to clear exactly that on success."""

    room: _Room
    epoch: int
    delete: bool
    snapshot: Snapshot | None
    last_key: tuple[int, int] | None


class Checkpointer:
    """Batches the rooms' checkpoints into one ``store.write_batch`` per flush interval.

    Rooms call the ``submit_*_nowait`` methods from their tick; these never block and
    never do I/O. ``run`` is the service that flushes: start it with
    ``await nursery.start(checkpointer.run)``.

    Args:
        store: where to write.
        max_backlog: most entries (snapshots, journal entries, deletes) held unwritten.
        max_backlog_bytes: most payload bytes held unwritten.
        flush_interval: seconds between flushes while there is work.
        write_timeout: a flush taking longer counts as failed (and is retried).
        backoff_initial, backoff_max: retry delays after failures: doubling, capped.
        shutdown_timeout: how long ``aclose`` (or cancelling ``run``) keeps trying to
            write the backlog before giving up on it.

    Raises:
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_backlog: int = 100_000,
        max_backlog_bytes: int = 64 * 1024 * 1024,
        flush_interval: float = 0.05,
        write_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if max_backlog < 1 or max_backlog_bytes < 1:
            raise ValueError("max_backlog and max_backlog_bytes must be >= 1")
        for name, value in (
            ("flush_interval", flush_interval),
            ("write_timeout", write_timeout),
            ("backoff_initial", backoff_initial),
            ("backoff_max", backoff_max),
            ("shutdown_timeout", shutdown_timeout),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if backoff_max < backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial")
        self._store = store
        self._max_entries = max_backlog
        self._max_bytes = max_backlog_bytes
        self._flush_interval = flush_interval
        self._write_timeout = write_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._shutdown_timeout = shutdown_timeout

        self._rooms: dict[str, _Room] = {}  # every room with ordering state
        self._dirty: dict[str, _Room] = {}  # rooms with pending writes, in arrival order
        self._entries = 0
        self._bytes = 0

        # Submissions are numbered; a flush that succeeds covers every submission made
        # before it started, which is what ``wait_flushed`` waits for.
        self._submitted = 0
        self._flushed_upto = 0
        self._flushed = trio.Event()
        self._work = trio.Event()

        self._coalesced = self._refused = 0
        self._flushes = self._failures = self._consecutive_failures = 0
        self._last_error: str | None = None
        self._last_flush_at: float | None = None
        self._last_flush_seconds: float | None = None
        self._next_flush_at = -math.inf
        self._backoff = backoff_initial

        self._closing = False
        self._running = False
        self._stopped = trio.Event()
        self._wait_scope: trio.CancelScope | None = None

    # ------------------------------------------------------------------ submitting

    def _room(self, code: str) -> _Room:
        room = self._rooms.get(code)
        if room is None:
            room = self._rooms[code] = _Room(code)
        return room

    def _check_open(self) -> None:
        if self._closing:
            raise trio.ClosedResourceError("the checkpointer is closed")

    def _accepted(self, room: _Room) -> None:
        self._dirty[room.code] = room
        self._submitted += 1
        self._work.set()

    def _clear_pending(self, room: _Room) -> int:
        """Drop the room's pending snapshot and journal; return how many entries."""
        dropped = (room.snapshot is not None) + len(room.journal)
        self._entries -= dropped
        self._bytes -= room.nbytes
        room.snapshot = None
        room.journal.clear()
        room.nbytes = 0
        return dropped

    def _delete(self, room: _Room) -> int:
        """Mark the room for deletion, dropping its pending writes; return how many."""
        dropped = self._clear_pending(room)
        if not room.delete_pending:
            room.delete_pending = True
            self._entries += 1
        room.epoch += 1
        room.last_snapshot_tick = None
        room.last_journal = None
        room.needs_snapshot = False
        return dropped

    def _refuse(self, room: _Room, what: str, *, needs_snapshot: bool) -> BacklogFull:
        self._refused += 1
        if needs_snapshot:
            room.needs_snapshot = True
        elif room.entries == 0 and room.last_tick is None:
            self._rooms.pop(room.code, None)  # a new room's first submission: keep nothing
        return BacklogFull(
            f"checkpoint backlog full ({self._entries}/{self._max_entries} entries, "
            f"{self._bytes}/{self._max_bytes} bytes): {what} of room {room.code} refused"
            + ("; submit a snapshot before more journal entries" if needs_snapshot else ""),
            code=room.code,
            needs_snapshot=needs_snapshot,
        )

    def submit_snapshot_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None:
        """Queue the room's full state as of the end of ``tick``; never blocks.

        It supersedes the room's pending snapshot and journal entries. A tick lower than
        what the room already submitted means the room went back to an older state (a
        restart from an older checkpoint): the stored room is then replaced by this
        snapshot (a delete, then the write).

        Raises:
            StoreInputError: a malformed code, tick, data or ttl.
            BacklogFull: it does not fit even after coalescing; nothing changed.
            trio.ClosedResourceError: the checkpointer is closed.
        """
        self._check_open()
        check_code(code)
        check_tick(tick, "snapshot tick")
        data = check_data(data, "snapshot data")
        ttl = check_ttl(ttl)
        room = self._room(code)
        last = room.last_tick
        rewind = last is not None and tick < last
        freed_entries = (room.snapshot is not None) + len(room.journal)
        freed_bytes = room.nbytes
        extra = 1 + (rewind and not room.delete_pending)
        if (
            self._entries - freed_entries + extra > self._max_entries
            or self._bytes - freed_bytes + len(data) > self._max_bytes
        ):
            raise self._refuse(room, f"snapshot at tick {tick}", needs_snapshot=False)
        if rewind:
            log.info(
                "room %s went back from tick %d to %d: replacing its checkpoint", code, last, tick
            )
            self._coalesced += self._delete(room)
        else:
            self._coalesced += self._clear_pending(room)
        room.snapshot = Snapshot(tick, data)
        room.nbytes = len(data)
        room.ttl = ttl
        room.last_snapshot_tick = tick
        room.last_journal = None
        room.needs_snapshot = False
        self._entries += 1
        self._bytes += len(data)
        self._accepted(room)

    def submit_journal_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None:
        """Queue one accepted input of the room at ``tick``; never blocks.

        Entries of one tick keep their submission order. ``tick`` must be above the room's
        latest snapshot tick and not below its previous journal entry.

        Raises:
            StoreInputError: a malformed code, tick, data or ttl.
            CheckpointOrderError: ``tick`` is out of order (see above).
            BacklogFull: the backlog is full, or an earlier refusal left a gap in this
                room's journal (``needs_snapshot``): submit a snapshot first.
            trio.ClosedResourceError: the checkpointer is closed.
        """
        self._check_open()
        check_code(code)
        check_tick(tick, "journal tick")
        data = check_data(data, "journal data")
        ttl = check_ttl(ttl)
        room = self._room(code)
        if room.last_snapshot_tick is not None and tick <= room.last_snapshot_tick:
            raise CheckpointOrderError(
                f"room {code}: journal tick {tick} is not after its snapshot at tick "
                f"{room.last_snapshot_tick}"
            )
        if room.last_journal is not None and tick < room.last_journal[0]:
            raise CheckpointOrderError(
                f"room {code}: journal tick {tick} is before its previous entry at tick "
                f"{room.last_journal[0]}"
            )
        if room.needs_snapshot:
            raise self._refuse(room, f"journal entry at tick {tick}", needs_snapshot=True)
        if self._entries + 1 > self._max_entries or self._bytes + len(data) > self._max_bytes:
            raise self._refuse(room, f"journal entry at tick {tick}", needs_snapshot=True)
        last = room.last_journal
        seq = last[1] + 1 if last is not None and last[0] == tick else 0
        room.journal.append(JournalEntry(tick, data, seq))
        room.last_journal = (tick, seq)
        room.nbytes += len(data)
        room.ttl = ttl
        self._entries += 1
        self._bytes += len(data)
        self._accepted(room)

    def submit_delete_nowait(self, code: str) -> None:
        """Queue the removal of the room's checkpoint; drops its pending writes.

        Never refused (it frees more than it takes). Later submissions for the same code
        start a new room. Call it when a room closes for good.

        Raises:
            StoreInputError: a malformed code.
            trio.ClosedResourceError: the checkpointer is closed.
        """
        self._check_open()
        check_code(code)
        room = self._room(code)
        self._coalesced += self._delete(room)
        self._accepted(room)

    # ------------------------------------------------------------------ flushing

    def _build(self) -> tuple[WriteBatch, list[_Flight]]:
        writes: list[RoomWrite] = []
        deletes: list[str] = []
        flights: list[_Flight] = []
        for room in self._dirty.values():
            if room.delete_pending:
                deletes.append(room.code)
            last_key = room.journal[-1].key if room.journal else None
            if room.snapshot is not None or room.journal:
                writes.append(RoomWrite(room.code, room.snapshot, tuple(room.journal), room.ttl))
            flights.append(_Flight(room, room.epoch, room.delete_pending, room.snapshot, last_key))
        return WriteBatch(tuple(writes), tuple(deletes)), flights

    def _confirm(self, flights: list[_Flight]) -> None:
        """Remove from the backlog what a successful flush wrote."""
        for flight in flights:
            room = flight.room
            if room.epoch != flight.epoch:
                continue  # deleted since: everything pending is newer than this flush
            if flight.delete and room.delete_pending:
                room.delete_pending = False
                self._entries -= 1
            if flight.snapshot is not None and room.snapshot is flight.snapshot:
                room.snapshot = None
                self._entries -= 1
                room.nbytes -= len(flight.snapshot.data)
                self._bytes -= len(flight.snapshot.data)
            if flight.last_key is not None:
                journal = room.journal
                while journal and journal[0].key <= flight.last_key:
                    entry = journal.popleft()
                    self._entries -= 1
                    room.nbytes -= len(entry.data)
                    self._bytes -= len(entry.data)
            if room.entries == 0:
                self._dirty.pop(room.code, None)
                if room.last_tick is None:
                    # A flushed delete with nothing after it: forget the room.
                    self._rooms.pop(room.code, None)

    async def _flush_once(self) -> bool:
        """Try to write everything pending in one batch; True on success."""
        batch, flights = self._build()
        covers = self._submitted
        start = trio.current_time()
        try:
            with trio.fail_after(self._write_timeout):
                await self._store.write_batch(batch)
        except Exception as exc:
            # Any failure (store down, timeout, or a bug) leaves the backlog intact.
            if isinstance(exc, trio.TooSlowError):
                exc = trio.TooSlowError(f"write_batch took over {self._write_timeout} s")
            self._failed(exc)
            return False
        self._confirm(flights)
        now = trio.current_time()
        self._flushes += 1
        self._last_flush_at = now
        self._last_flush_seconds = now - start
        self._flushed_upto = max(self._flushed_upto, covers)
        if self._consecutive_failures:
            log.warning(
                "checkpoint store is back after %d failed flushes; backlog now %d entries",
                self._consecutive_failures,
                self._entries,
            )
        self._consecutive_failures = 0
        self._backoff = self._backoff_initial
        self._flushed.set()
        self._flushed = trio.Event()
        return True

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._consecutive_failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._consecutive_failures == 1:
            log.warning(
                "checkpoint store failed (%s); keeping %d entries queued and retrying",
                self._last_error,
                self._entries,
                # A traceback only for what is not an expected store failure (a bug).
                exc_info=not isinstance(exc, StoreError | trio.TooSlowError),
            )

    async def _sleep_until(self, deadline: float) -> None:
        """Sleep until ``deadline``; ``aclose`` cuts it short."""
        with trio.CancelScope(deadline=deadline) as scope:
            self._wait_scope = scope
            if self._closing:
                scope.cancel()
            await trio.sleep_forever()
        self._wait_scope = None

    async def _drain(self) -> None:
        """Final flushes (at shutdown) until the backlog is empty or time runs out."""
        if not self._dirty:
            return
        with trio.move_on_after(self._shutdown_timeout):
            delay = self._backoff_initial
            while self._dirty:
                if await self._flush_once():
                    continue
                await trio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
        if self._dirty:
            log.error(
                "checkpointer closing with %d entries (%d bytes) of %d rooms not written: %s",
                self._entries,
                self._bytes,
                len(self._dirty),
                self._last_error,
            )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush pending writes every ``flush_interval`` until closed or cancelled.

        On ``aclose`` or cancellation it makes a last attempt to write the backlog, for
        at most ``shutdown_timeout`` seconds (shielded from the cancellation).

        Raises:
            RuntimeError: it is already running, or was closed.
        """
        if self._running or self._stopped.is_set():
            raise RuntimeError("Checkpointer.run is already running or has finished")
        self._running = True
        try:
            task_status.started()
            while not self._closing:
                if not self._dirty:
                    self._work = trio.Event()
                    await self._work.wait()
                    continue
                await self._sleep_until(self._next_flush_at)
                if self._closing:
                    break
                started = trio.current_time()
                if await self._flush_once():
                    self._next_flush_at = started + self._flush_interval
                else:
                    self._next_flush_at = trio.current_time() + self._backoff
                    self._backoff = min(self._backoff * 2, self._backoff_max)
        finally:
            self._closing = True
            with trio.CancelScope(shield=True):
                await self._drain()
            self._running = False
            self._stopped.set()
            self._flushed.set()  # wake wait_flushed callers: nothing more will flush

    async def wait_flushed(self) -> None:
        """Wait until every submission made before this call is written (or superseded).

        Waits through an outage; put a timeout around it.

        Raises:
            trio.ClosedResourceError: the checkpointer stopped with those writes unwritten.
        """
        target = self._submitted
        while self._flushed_upto < target:
            if self._stopped.is_set():
                raise trio.ClosedResourceError("checkpointer stopped before flushing")
            await self._flushed.wait()

    async def aclose(self) -> None:
        """Stop accepting submissions, write the backlog (for at most ``shutdown_timeout``)
        and stop ``run``. What still cannot be written is logged and counted in
        ``statistics()``; it is lost.
        """
        if self._closing and not self._running:
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        self._work.set()
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        if self._running:
            await self._stopped.wait()
        else:
            await self._drain()
            self._stopped.set()

    # ------------------------------------------------------------------ introspection

    @property
    def store(self) -> Store:
        """The store this checkpointer writes to."""
        return self._store

    def pending_rooms(self) -> list[str]:
        """Codes of the rooms with writes not yet confirmed, in arrival order."""
        return list(self._dirty)

    def statistics(self) -> CheckpointerStatistics:
        return CheckpointerStatistics(
            backlog_entries=self._entries,
            backlog_bytes=self._bytes,
            backlog_rooms=len(self._dirty),
            max_backlog=self._max_entries,
            max_backlog_bytes=self._max_bytes,
            submitted=self._submitted,
            coalesced=self._coalesced,
            refused=self._refused,
            flushes=self._flushes,
            failures=self._failures,
            consecutive_failures=self._consecutive_failures,
            degraded=self._consecutive_failures > 0,
            last_error=self._last_error,
            last_flush_at=self._last_flush_at,
            last_flush_seconds=self._last_flush_seconds,
        )
