"""The Checkpointer: one batch per flush, a bounded backlog that coalesces and refuses with
BacklogFull, backoff through outages, and an in-order drain that leaves the store equal to
what the rooms submitted. Virtual-time tests run on MemoryStore (a fake without threads);
the real-clock tests use a real redis-server and a real SQLite file."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from redisproc import redis_server  # noqa: F401  (fixture)

from relay._checkpointer import Checkpointer
from relay._store import (
    BacklogFull,
    CheckpointOrderError,
    JournalEntry,
    MemoryStore,
    RoomRecord,
    Snapshot,
    StoreInputError,
    WriteBatch,
)
from relay._store_redis import RedisStore
from relay._store_sqlite import SQLiteStore

TTL = 600.0


class RecordingStore(MemoryStore):
    """MemoryStore that records each write_batch call and can hold it at a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, WriteBatch]] = []
        self.gate: trio.Event | None = None

    async def write_batch(self, batch: WriteBatch) -> None:
        self.calls.append((trio.current_time(), batch))
        if self.gate is not None:
            await self.gate.wait()
        await super().write_batch(batch)


class Model:
    """What the store must hold for each room once everything submitted is written."""

    def __init__(self, cp: Checkpointer) -> None:
        self.cp = cp
        self.rooms: dict[str, tuple[Snapshot | None, list[tuple[int, bytes]]]] = {}

    def snapshot(self, code: str, tick: int) -> None:
        data = f"{code} state@{tick}".encode()
        self.cp.submit_snapshot_nowait(code, tick, data, TTL)
        self.rooms[code] = (Snapshot(tick, data), [])

    def journal(self, code: str, tick: int, n: int = 0) -> None:
        data = f"{code} input@{tick}.{n}".encode() * 5
        self.cp.submit_journal_nowait(code, tick, data, TTL)
        self.rooms.setdefault(code, (None, []))[1].append((tick, data))

    def delete(self, code: str) -> None:
        self.cp.submit_delete_nowait(code)
        self.rooms.pop(code, None)

    async def check(self, store) -> None:
        for code, (snapshot, journal) in self.rooms.items():
            record = await store.load_room(code)
            assert record is not None, code
            assert record.snapshot == snapshot, code
            assert [(e.tick, e.data) for e in record.journal] == journal, code
            # seq numbers entries within a tick: 0, 1, 2, ...
            for before, after in itertools.pairwise(record.journal):
                assert after.seq == (before.seq + 1 if after.tick == before.tick else 0)


def code(i: int) -> str:
    return f"R{i:03d}"


# --------------------------------------------------------------------------- batching


async def test_one_write_batch_per_flush_for_many_rooms(autojump_clock):
    store = RecordingStore()
    cp = Checkpointer(store, flush_interval=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        for i in range(200):
            cp.submit_journal_nowait(code(i), 1, b"x" * 200, TTL)
        await cp.wait_flushed()
        assert len(store.calls) == 1
        assert len(store.calls[0][1].rooms) == 200
        for i in range(200):
            cp.submit_journal_nowait(code(i), 2, b"y" * 200, TTL)
        cp.submit_snapshot_nowait(code(0), 2, b"s", TTL)
        await cp.wait_flushed()
        assert len(store.calls) == 2
        assert store.calls[1][0] - store.calls[0][0] >= 0.05
        stats = cp.statistics()
        assert stats.flushes == 2 and stats.backlog_entries == 0 and stats.backlog_rooms == 0
        assert stats.submitted == 401 and stats.coalesced == 1  # R000's tick-2 entry
        await cp.aclose()
    assert (await store.load_room(code(0))).journal == ()
    assert (await store.load_room(code(1))).journal == (
        JournalEntry(1, b"x" * 200),
        JournalEntry(2, b"y" * 200),
    )


async def test_flushes_once_per_interval_while_rooms_tick(autojump_clock):
    store = RecordingStore()
    cp = Checkpointer(store, flush_interval=0.05)
    model = Model(cp)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        for tick in range(100):  # 20 Hz for 5 s, several rooms, a few inputs per tick
            for i in range(8):
                if tick % 25 == 0:
                    model.snapshot(code(i), tick)
                else:
                    for n in range(i % 3):
                        model.journal(code(i), tick, n)
            await trio.sleep(0.05)
        await cp.wait_flushed()
        await cp.aclose()
    times = [t for t, _ in store.calls]
    assert 95 <= len(times) <= 101
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(times))
    await model.check(store)


# --------------------------------------------------------------------------- outages


async def test_outage_backlog_is_kept_and_drains_in_order(autojump_clock):
    store = RecordingStore()
    cp = Checkpointer(store, flush_interval=0.05, backoff_initial=0.1, backoff_max=1.0)
    model = Model(cp)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        for i in range(4):
            model.snapshot(code(i), 0)
        await cp.wait_flushed()
        store.set_available(False)
        for tick in range(1, 101):  # 5 s of outage
            for i in range(4):
                model.journal(code(i), tick, 0)
                model.journal(code(i), tick, 1)
                if i < 2 and tick % 30 == 0:  # two rooms snapshot during the outage
                    model.snapshot(code(i), tick)
            await trio.sleep(0.05)
        stats = cp.statistics()
        assert stats.degraded and stats.failures >= 5
        assert "unavailable" in stats.last_error
        # Rooms 0 and 1 coalesced behind their tick-90 snapshot; 2 and 3 keep everything.
        assert stats.backlog_entries == 2 * (1 + 20) + 2 * 200
        attempts = [t for t, _ in store.calls[1:]]
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8], abs=1e-6)
        assert max(gaps) == pytest.approx(1.0, abs=1e-6)  # capped
        store.set_available(True)
        with trio.fail_after(1.5):
            await cp.wait_flushed()
        stats = cp.statistics()
        assert not stats.degraded and stats.backlog_entries == 0 and stats.backlog_bytes == 0
        await cp.aclose()
    await model.check(store)


async def test_write_timeout_counts_as_a_failure_and_is_retried(autojump_clock):
    store = RecordingStore()
    store.gate = trio.Event()  # the store hangs
    cp = Checkpointer(store, write_timeout=1.0, backoff_initial=0.5, backoff_max=0.5)
    model = Model(cp)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        model.snapshot("SLOW", 1)
        await trio.sleep(1.2)
        stats = cp.statistics()
        assert stats.failures == 1 and "TooSlowError" in stats.last_error
        assert stats.backlog_entries == 1
        model.journal("SLOW", 2)
        store.gate.set()
        store.gate = None
        await cp.wait_flushed()
        await cp.aclose()
    await model.check(store)


async def test_delete_and_new_writes_during_a_flush_in_flight(autojump_clock):
    store = RecordingStore()
    cp = Checkpointer(store)
    model = Model(cp)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        model.snapshot("FLY0", 100)
        model.journal("FLY0", 101)
        model.snapshot("FLY1", 5)
        store.gate = trio.Event()
        await trio.testing.wait_all_tasks_blocked()
        assert len(store.calls) == 1  # the flush is held in flight
        model.delete("FLY0")  # ... the room closes, and a new room takes its code
        model.snapshot("FLY0", 1)
        model.journal("FLY0", 2)
        model.journal("FLY1", 6)
        store.gate.set()
        store.gate = None
        await cp.wait_flushed()
        await cp.aclose()
    batch = store.calls[-1][1]
    assert batch.deletes == ("FLY0",)
    await model.check(store)


# --------------------------------------------------------------------------- backlog bound


async def test_full_backlog_coalesces_older_snapshots():
    store = MemoryStore()
    cp = Checkpointer(store, max_backlog=10)
    model = Model(cp)
    model.snapshot("FULL", 0)
    for tick in range(1, 9):
        model.journal("FULL", tick)
    model.journal("OTHR", 1)
    assert cp.statistics().backlog_entries == 10
    # Full, but a snapshot supersedes the room's 9 pending entries.
    model.snapshot("FULL", 9)
    stats = cp.statistics()
    assert stats.backlog_entries == 2 and stats.coalesced == 9 and stats.refused == 0
    assert stats.backlog_bytes == len(b"FULL state@9") + len(b"OTHR input@1.0") * 5
    await cp.aclose()  # never ran: aclose writes the backlog itself
    await model.check(store)
    assert (await store.load_room("FULL")).journal == ()


async def test_backlog_full_refuses_and_then_demands_a_snapshot(autojump_clock):
    store = MemoryStore()
    cp = Checkpointer(store, max_backlog=3)
    cp.submit_journal_nowait("HOLE", 1, b"a", TTL)
    cp.submit_journal_nowait("HOLE", 2, b"b", TTL)
    cp.submit_journal_nowait("KEEP", 1, b"c", TTL)
    with pytest.raises(BacklogFull, match="journal entry at tick 3") as info:
        cp.submit_journal_nowait("HOLE", 3, b"d", TTL)
    assert info.value.needs_snapshot and info.value.code == "HOLE"
    cp.submit_delete_nowait("GONE")  # a delete is never refused
    stats = cp.statistics()
    assert stats.backlog_entries == 4 and stats.refused == 1
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        await cp.wait_flushed()
        # There is room again, but tick 3 was refused: tick 4 would replay without it.
        with pytest.raises(BacklogFull, match="submit a snapshot") as info:
            cp.submit_journal_nowait("HOLE", 4, b"e", TTL)
        assert info.value.needs_snapshot
        cp.submit_snapshot_nowait("HOLE", 4, b"state@4", TTL)
        cp.submit_journal_nowait("HOLE", 5, b"f", TTL)
        await cp.wait_flushed()
        await cp.aclose()
    record = await store.load_room("HOLE")
    assert record.snapshot == Snapshot(4, b"state@4")
    assert record.journal == (JournalEntry(5, b"f"),)
    assert (await store.load_room("KEEP")).journal == (JournalEntry(1, b"c"),)
    assert cp.statistics().refused == 2


async def test_backlog_bytes_bound_and_refused_snapshot_changes_nothing():
    store = MemoryStore()
    cp = Checkpointer(store, max_backlog_bytes=100)
    cp.submit_snapshot_nowait("BYTE", 0, b"s" * 40, TTL)
    cp.submit_journal_nowait("BYTE", 1, b"j" * 50, TTL)
    with pytest.raises(BacklogFull) as info:
        cp.submit_snapshot_nowait("OTHR", 1, b"t" * 11, TTL)
    assert not info.value.needs_snapshot
    with pytest.raises(BacklogFull):  # too big even in place of the room's own 90 bytes
        cp.submit_snapshot_nowait("BYTE", 2, b"u" * 101, TTL)
    assert cp.statistics().backlog_bytes == 90  # the refusals changed nothing
    cp.submit_journal_nowait("BYTE", 2, b"k" * 10, TTL)  # no gap after a refused snapshot
    assert cp.statistics().backlog_bytes == 100
    await cp.aclose()
    assert await store.load_room("BYTE") == RoomRecord(
        "BYTE", Snapshot(0, b"s" * 40), (JournalEntry(1, b"j" * 50), JournalEntry(2, b"k" * 10))
    )
    assert await store.load_room("OTHR") is None
    cp = Checkpointer(store, max_backlog_bytes=100)
    cp.submit_journal_nowait("BYTE", 3, b"j" * 90, TTL)
    cp.submit_snapshot_nowait("BYTE", 3, b"v" * 95, TTL)  # fits in place of its own 90
    assert cp.statistics().backlog_bytes == 95
    await cp.aclose()
    assert await store.load_room("BYTE") == RoomRecord("BYTE", Snapshot(3, b"v" * 95), ())


# --------------------------------------------------------------------------- ordering


async def test_out_of_order_and_malformed_submissions_raise():
    cp = Checkpointer(MemoryStore())
    cp.submit_snapshot_nowait("ORDR", 10, b"s", TTL)
    with pytest.raises(CheckpointOrderError, match="not after its snapshot"):
        cp.submit_journal_nowait("ORDR", 10, b"j", TTL)
    cp.submit_journal_nowait("ORDR", 12, b"j", TTL)
    with pytest.raises(CheckpointOrderError, match="before its previous entry"):
        cp.submit_journal_nowait("ORDR", 11, b"j", TTL)
    with pytest.raises(StoreInputError):
        cp.submit_journal_nowait("bad code", 13, b"j", TTL)
    with pytest.raises(StoreInputError):
        cp.submit_journal_nowait("ORDR", 13, "text", TTL)
    with pytest.raises(StoreInputError):
        cp.submit_snapshot_nowait("ORDR", -1, b"s", TTL)
    with pytest.raises(StoreInputError):
        cp.submit_snapshot_nowait("ORDR", 20, b"s", -5)
    assert cp.statistics().backlog_entries == 2
    with pytest.raises(ValueError):
        Checkpointer(MemoryStore(), flush_interval=0)
    with pytest.raises(ValueError):
        Checkpointer(MemoryStore(), backoff_initial=2, backoff_max=1)
    await cp.aclose()


async def test_a_room_that_goes_back_in_time_replaces_its_checkpoint(autojump_clock):
    store = MemoryStore()
    cp = Checkpointer(store)
    model = Model(cp)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        model.snapshot("BACK", 100)
        for tick in range(101, 106):
            model.journal("BACK", tick)
        await cp.wait_flushed()
        # Restarted from an older checkpoint: entries 101..105 must not be replayed on it.
        model.snapshot("BACK", 50)
        model.journal("BACK", 51)
        await cp.wait_flushed()
        await cp.aclose()
    await model.check(store)


async def test_delete_drops_pending_writes():
    store = MemoryStore()
    cp = Checkpointer(store)
    model = Model(cp)
    model.snapshot("DEL0", 1)
    model.journal("DEL0", 2)
    model.delete("DEL0")
    assert cp.statistics().backlog_entries == 1  # only the delete marker
    model.snapshot("KEEP", 1)
    await cp.aclose()
    assert await store.load_room("DEL0") is None
    await model.check(store)


# --------------------------------------------------------------------------- lifecycle


async def test_aclose_writes_the_backlog_and_refuses_afterwards(autojump_clock):
    store = MemoryStore()
    cp = Checkpointer(store, flush_interval=10.0)
    model = Model(cp)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        model.snapshot("LAST", 1)
        await cp.wait_flushed()
        model.journal("LAST", 2)  # the next flush would be 10 s away
        await cp.aclose()
        assert trio.current_time() < 1.0
    await model.check(store)
    with pytest.raises(trio.ClosedResourceError):
        cp.submit_journal_nowait("LAST", 3, b"j", TTL)
    with pytest.raises(RuntimeError):
        await cp.run()
    await cp.aclose()  # idempotent


async def test_aclose_gives_up_after_shutdown_timeout(autojump_clock):
    store = MemoryStore()
    store.set_available(False)
    cp = Checkpointer(store, shutdown_timeout=3.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        cp.submit_snapshot_nowait("LOST", 1, b"s", TTL)
        await trio.sleep(1)
        waited = trio.current_time()
        await cp.aclose()
        assert trio.current_time() - waited == pytest.approx(3.0, abs=0.01)
    stats = cp.statistics()
    assert stats.backlog_entries == 1 and stats.degraded
    with pytest.raises(trio.ClosedResourceError):
        await cp.wait_flushed()


async def test_cancelling_run_still_writes_the_backlog(autojump_clock):
    store = MemoryStore()
    cp = Checkpointer(store, flush_interval=10.0)
    model = Model(cp)
    async with trio.open_nursery() as nursery:
        await nursery.start(cp.run)
        model.snapshot("CNCL", 1)
        await cp.wait_flushed()
        model.journal("CNCL", 2)
        nursery.cancel_scope.cancel()
    await model.check(store)
    assert cp.statistics().backlog_entries == 0


# --------------------------------------------------------------------------- real stores


async def test_checkpointer_on_sqlite_file(tmp_path):
    store = SQLiteStore(tmp_path / "cp.sqlite3")
    cp = Checkpointer(store, flush_interval=0.01)
    model = Model(cp)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cp.run)
            for i in range(50):
                model.snapshot(code(i), 0)
                model.journal(code(i), 1)
            with trio.fail_after(5):
                await cp.wait_flushed()
            assert store.statistics().batches == 1
            await cp.aclose()
        await model.check(store)
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_one_pipeline_for_many_rooms_on_redis(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url)
    client = redis_server.client()
    cp = Checkpointer(store, flush_interval=0.01)
    model = Model(cp)
    try:
        client.config_resetstat()
        async with trio.open_nursery() as nursery:
            await nursery.start(cp.run)
            for i in range(300):
                model.journal(code(i), 1)
            with trio.fail_after(5):
                await cp.wait_flushed()
            await cp.aclose()
        stats = client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 300  # one script call per room...
        assert store.statistics().batches == 1  # ... all in one pipeline
        await model.check(store)
    finally:
        client.close()
        await store.aclose()


async def _tick_rooms(model: Model, ticks: range, rooms: int, *, snapshot_every: int) -> None:
    for tick in ticks:
        for i in range(rooms):
            if tick % snapshot_every == 0 and i != rooms - 1:
                model.snapshot(code(i), tick)
            else:
                model.journal(code(i), tick, 0)
                model.journal(code(i), tick, 1)
        await trio.sleep(0.01)


@pytest.mark.redis
async def test_redis_restart_outage_drains_in_order(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url, connect_timeout=0.3, command_timeout=0.3)
    cp = Checkpointer(store, flush_interval=0.02, backoff_initial=0.05, backoff_max=0.2)
    model = Model(cp)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cp.run)
            # Every room takes a snapshot during the outage: the restarted Redis has no
            # persistence, so the drained backlog alone must rebuild each room.
            for i in range(5):
                model.snapshot(code(i), 0)
            await _tick_rooms(model, range(1, 20), 5, snapshot_every=10)
            with trio.fail_after(5):
                await cp.wait_flushed()
            redis_server.stop()
            for i in range(5):
                model.snapshot(code(i), 20)
            await _tick_rooms(model, range(21, 80), 5, snapshot_every=25)
            stats = cp.statistics()
            assert stats.degraded and stats.failures >= 2 and stats.backlog_entries > 100
            redis_server.start()
            with trio.fail_after(5):
                await cp.wait_flushed()
            stats = cp.statistics()
            assert not stats.degraded and stats.backlog_entries == 0
            await cp.aclose()
        await model.check(store)
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis_frozen_outage_drains_in_order(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url, connect_timeout=0.2, command_timeout=0.2)
    cp = Checkpointer(store, flush_interval=0.02, backoff_initial=0.05, backoff_max=0.2)
    model = Model(cp)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cp.run)
            for i in range(5):
                model.snapshot(code(i), 0)
            await _tick_rooms(model, range(1, 30), 5, snapshot_every=10)
            with trio.fail_after(5):
                await cp.wait_flushed()
            redis_server.pause()  # writes time out; stale copies reach Redis on resume
            try:
                await _tick_rooms(model, range(30, 100), 5, snapshot_every=20)
                stats = cp.statistics()
                assert stats.degraded and "unreachable" in stats.last_error
            finally:
                redis_server.resume()
            await _tick_rooms(model, range(100, 110), 5, snapshot_every=20)
            with trio.fail_after(5):
                await cp.wait_flushed()
            await cp.aclose()
        await model.check(store)
    finally:
        await store.aclose()
