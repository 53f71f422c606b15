"""The Store contract on every backend (memory, a real SQLite file, a real redis-server),
plus each backend's own duties: TTLs and key layout in Redis, WAL and expiry in SQLite,
typed errors when the store is down, and store URL parsing."""

from __future__ import annotations

import sqlite3
import time

import pytest
import trio
from redisproc import RedisProcess, redis_server  # noqa: F401  (redis_server: fixture)

from relay._store import (
    GameRecord,
    JournalEntry,
    LeaderboardEntry,
    MemoryStore,
    RoomRecord,
    RoomWrite,
    Snapshot,
    Store,
    StoreConfigError,
    StoreDataError,
    StoreInputError,
    StoreUnavailable,
    WriteBatch,
    open_store,
    redact_url,
    sqlite_path_from_url,
)
from relay._store_redis import RedisStore
from relay._store_sqlite import SQLiteStore


class FakeClock:
    """Unix time that only moves when a test says so (SQLite expiry without sleeping)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BACKENDS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    """(name, factory, server): a factory building a fresh store of that backend."""
    name = request.param
    if name == "memory":
        return name, MemoryStore, None
    if name == "sqlite":
        return name, lambda: SQLiteStore(tmp_path / "rooms.sqlite3"), None
    server = request.getfixturevalue("redis_server")
    return name, lambda: RedisStore(server.url, command_timeout=2.0), server


@pytest.fixture
async def store(backend):
    store = backend[1]()
    try:
        yield store
    finally:
        await store.aclose()


def snap(tick: int, data: bytes = b"") -> Snapshot:
    return Snapshot(tick, data or f"state@{tick}".encode())


def entry(tick: int, seq: int = 0) -> JournalEntry:
    return JournalEntry(tick, f"input@{tick}.{seq}".encode(), seq)


def write(code, snapshot=None, journal=(), ttl=60.0) -> WriteBatch:
    return WriteBatch((RoomWrite(code, snapshot, tuple(journal), ttl),))


# --------------------------------------------------------------------------- contract


async def test_round_trip(store):
    assert isinstance(store, Store)
    batch = WriteBatch(
        (
            RoomWrite("ABCD", snap(10), (entry(11), entry(11, 1), entry(12)), 60),
            RoomWrite("WXYZ", None, (entry(0), entry(1)), 60),
        )
    )
    await store.write_batch(batch)
    assert await store.load_room("ABCD") == RoomRecord(
        "ABCD", snap(10), (entry(11), entry(11, 1), entry(12))
    )
    assert await store.load_room("WXYZ") == RoomRecord("WXYZ", None, (entry(0), entry(1)))
    assert await store.load_room("NONE") is None
    assert await store.list_rooms() == ["ABCD", "WXYZ"]
    # Journal entries appended by a later batch come after the earlier ones.
    await store.write_batch(write("ABCD", journal=[entry(13), entry(15)]))
    record = await store.load_room("ABCD")
    assert [e.key for e in record.journal] == [(11, 0), (11, 1), (12, 0), (13, 0), (15, 0)]
    stats = store.statistics()
    assert stats.batches == 2 and stats.rooms_written == 3 and stats.errors == 0


async def test_binary_data_round_trips_byte_for_byte(store):
    blob = bytes(range(256)) * 40
    await store.write_batch(write("BIN0", Snapshot(1, blob), [JournalEntry(2, b"\x00\xff\r\n")]))
    record = await store.load_room("BIN0")
    assert record.snapshot.data == blob
    assert record.journal[0].data == b"\x00\xff\r\n"


async def test_snapshot_trims_journal(store, backend):
    await store.write_batch(write("TRIM", snap(0), [entry(t) for t in range(1, 6)]))
    await store.write_batch(write("TRIM", snap(3)))
    assert await store.load_room("TRIM") == RoomRecord("TRIM", snap(3), (entry(4), entry(5)))
    # Trimmed in storage, not only filtered on load.
    name, _, server = backend
    if name == "redis":
        assert server.client().xlen("roomwire:{room:TRIM}:journal") == 2
    elif name == "sqlite":
        with sqlite3.connect(store.path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM journal WHERE code='TRIM'").fetchone()
        assert count == 2


async def test_journal_at_or_below_snapshot_is_skipped(store):
    await store.write_batch(write("SKIP", snap(5), [entry(4), entry(5), entry(6)]))
    assert (await store.load_room("SKIP")).journal == (entry(6),)
    await store.write_batch(write("SKIP", journal=[entry(3)]))  # late, already covered
    assert (await store.load_room("SKIP")).journal == (entry(6),)


async def test_older_snapshot_never_replaces_newer(store):
    await store.write_batch(write("MONO", snap(10), [entry(11)]))
    await store.write_batch(write("MONO", snap(7, b"stale"), [entry(8)]))
    assert await store.load_room("MONO") == RoomRecord("MONO", snap(10), (entry(11),))


async def test_rewriting_a_batch_stores_it_once(store):
    batch = WriteBatch(
        (
            RoomWrite("IDEM", snap(1), (entry(2), entry(2, 1), entry(3)), 60),
            RoomWrite("IDE2", None, (entry(0),), 60),
        )
    )
    await store.write_batch(batch)
    await store.write_batch(batch)  # a retry after an unknown outcome
    assert await store.load_room("IDEM") == RoomRecord(
        "IDEM", snap(1), (entry(2), entry(2, 1), entry(3))
    )
    assert (await store.load_room("IDE2")).journal == (entry(0),)


async def test_deletes_apply_before_writes(store):
    await store.write_batch(write("REUS", snap(50), [entry(51)]))
    # Same code, new room: a lower tick is fine after the delete in the same batch.
    batch = WriteBatch((RoomWrite("REUS", snap(1), (entry(2),), 60),), deletes=("REUS",))
    await store.write_batch(batch)
    assert await store.load_room("REUS") == RoomRecord("REUS", snap(1), (entry(2),))


async def test_delete_room_and_list_rooms(store):
    for code in ("CCCC", "AAAA", "BBBB"):
        await store.write_batch(write(code, snap(1)))
    assert await store.list_rooms() == ["AAAA", "BBBB", "CCCC"]
    await store.delete_room("BBBB")
    await store.write_batch(WriteBatch(deletes=("CCCC", "NOPE")))
    assert await store.list_rooms() == ["AAAA"]
    assert await store.load_room("BBBB") is None
    assert await store.load_room("CCCC") is None
    assert store.statistics().deletes == 3


async def test_leaderboard_and_game_records(store):
    def game(mode, players, winner, at):
        return GameRecord("GAME", mode, players, winner, at, at + 60)

    await store.record_game(game("quiz8", [("p1", "Ann", 10), ("p2", "Bob", 30)], "p2", 100))
    await store.record_game(game("quiz8", [("p1", "Annie", 25), ("p3", "Cy", 5)], "p1", 200))
    await store.record_game(game("quiz8", [("p4", "Dee", 35), ("p5", "Eve", -3)], "p4", 300))
    await store.record_game(game("quiz12", [("p1", "Ann", 99)], "p1", 400))

    assert await store.leaderboard("quiz8") == [
        LeaderboardEntry("p4", "Dee", 35),  # ties: the higher player id first
        LeaderboardEntry("p1", "Annie", 35),  # 10 + 25, latest name
        LeaderboardEntry("p2", "Bob", 30),
        LeaderboardEntry("p3", "Cy", 5),
        LeaderboardEntry("p5", "Eve", -3),
    ]
    assert await store.leaderboard("quiz8", limit=2) == [
        LeaderboardEntry("p4", "Dee", 35),
        LeaderboardEntry("p1", "Annie", 35),
    ]
    assert await store.leaderboard("quiz12") == [LeaderboardEntry("p1", "Ann", 99)]
    assert await store.leaderboard("nobody") == []
    recent = await store.recent_games("quiz8", limit=2)
    assert [g.started_at for g in recent] == [300, 200]
    assert recent[1].players[0] == ("p1", "Annie", 25)
    assert recent[1].winner == "p1"


async def test_bad_input_raises_typed_errors(store):
    with pytest.raises(StoreInputError):
        await store.load_room("no spaces")
    with pytest.raises(StoreInputError):
        await store.leaderboard("quiz8", limit=0)
    with pytest.raises(StoreInputError):
        await store.write_batch({"rooms": []})
    with pytest.raises(StoreInputError):
        await store.record_game(("GAME", "quiz8"))
    assert await store.ping()


async def test_closed_store_refuses(backend):
    store = backend[1]()
    await store.aclose()
    await store.aclose()  # idempotent
    assert not await store.ping()
    with pytest.raises(trio.ClosedResourceError):
        await store.load_room("ABCD")


# --------------------------------------------------------------------------- records


def test_records_validate_at_construction():
    with pytest.raises(StoreInputError, match="room code"):
        RoomWrite("{tag}", snap(1), (), 60)
    with pytest.raises(StoreInputError, match="tick"):
        Snapshot(-1, b"")
    with pytest.raises(StoreInputError, match="tick"):
        JournalEntry(2**53, b"")
    with pytest.raises(StoreInputError, match="bytes"):
        Snapshot(1, "text")
    with pytest.raises(StoreInputError, match="ttl"):
        RoomWrite("ABCD", snap(1), (), 0)
    with pytest.raises(StoreInputError, match="ttl"):
        RoomWrite("ABCD", snap(1), (), float("nan"))
    with pytest.raises(StoreInputError, match="increasing"):
        RoomWrite("ABCD", None, (entry(3), entry(2)), 60)
    with pytest.raises(StoreInputError, match="increasing"):
        RoomWrite("ABCD", None, (entry(3), entry(3)), 60)
    with pytest.raises(StoreInputError, match="needs a snapshot"):
        RoomWrite("ABCD", None, (), 60)
    with pytest.raises(StoreInputError, match="twice"):
        WriteBatch((RoomWrite("ABCD", snap(1), (), 60), RoomWrite("ABCD", snap(2), (), 60)))
    with pytest.raises(StoreInputError, match="winner"):
        GameRecord("ABCD", "quiz8", [("p1", "Ann", 1)], "p9", 0, 1)
    with pytest.raises(StoreInputError, match="duplicate"):
        GameRecord("ABCD", "quiz8", [("p1", "Ann", 1), ("p1", "Bob", 2)], None, 0, 1)
    with pytest.raises(StoreInputError, match="before"):
        GameRecord("ABCD", "quiz8", [("p1", "Ann", 1)], None, 10, 5)
    with pytest.raises(StoreInputError, match="score"):
        GameRecord("ABCD", "quiz8", [("p1", "Ann", 1.5)], None, 0, 1)
    # Short reprs: payloads never flood a log line.
    assert repr(Snapshot(3, b"x" * 10_000)) == "Snapshot(tick=3, 10000 B)"
    assert bytearray(b"ab") == Snapshot(1, bytearray(b"ab")).data


def test_game_record_json_round_trip_and_damage():
    record = GameRecord("ABCD", "quiz8", [("p1", "Ånn ✓", 3)], "p1", 1.5, 2.5)
    assert GameRecord.from_json(record.to_json()) == record
    with pytest.raises(StoreDataError):
        GameRecord.from_json(b'{"code": "ABCD"}')
    with pytest.raises(StoreDataError):
        GameRecord.from_json(b"not json")


# --------------------------------------------------------------------------- URLs


def test_open_store_urls(tmp_path):
    default = open_store(None, default_path=tmp_path / "d.sqlite3")
    assert isinstance(default, SQLiteStore) and default.path == str(tmp_path / "d.sqlite3")
    assert open_store(f"sqlite:{tmp_path}/a.db").path == f"{tmp_path}/a.db"
    assert open_store(f"sqlite://{tmp_path}/b.db").path == f"{tmp_path}/b.db"
    assert isinstance(open_store("redis://127.0.0.1:1/0"), RedisStore)
    assert isinstance(open_store("rediss://user:pw@127.0.0.1:1/2"), RedisStore)
    assert isinstance(open_store("memory:"), MemoryStore)
    assert sqlite_path_from_url("sqlite:rel/x.db") == "rel/x.db"
    assert sqlite_path_from_url("sqlite:///srv/x.db") == "/srv/x.db"
    assert sqlite_path_from_url("sqlite:////srv/x.db") == "/srv/x.db"
    assert sqlite_path_from_url("sqlite::memory:") == ":memory:"
    assert sqlite_path_from_url("sqlite:///a%20b.db") == "/a b.db"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgres://db/x", "unsupported store URL"),
        ("redis-cluster://h", "unsupported store URL"),
        ("", "unsupported store URL"),
        ("sqlite:", "no file path"),
        ("sqlite://host/x.db", "names a host"),
        ("sqlite:/no/such/dir/x.db", "does not exist"),
        ("redis://127.0.0.1:notaport/0", "bad redis URL"),
        ("redis://:hunter2@127.0.0.1:notaport/0", "bad redis URL"),
    ],
)
def test_open_store_rejects_bad_urls(url, match):
    with pytest.raises(StoreConfigError, match=match) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)


def test_open_store_rejects_bad_options():
    with pytest.raises(StoreConfigError, match="prefix"):
        open_store("redis://localhost", prefix="{x}")
    with pytest.raises(StoreConfigError, match="max_connections"):
        open_store("redis://localhost", max_connections=0)
    with pytest.raises(StoreConfigError):
        open_store(42)


def test_redact_url():
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://u:s3cret@h/0") == "rediss://u:***@h/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


# --------------------------------------------------------------------------- SQLite


async def test_sqlite_is_wal_and_durable_across_reopen(tmp_path):
    path = tmp_path / "durable.sqlite3"
    store = SQLiteStore(path)
    await store.write_batch(write("KEEP", snap(7), [entry(8)], ttl=3600))
    await store.record_game(GameRecord("KEEP", "quiz8", [("p1", "Ann", 4)], "p1", 0, 1))
    await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SQLiteStore(path)
    try:
        assert await again.load_room("KEEP") == RoomRecord("KEEP", snap(7), (entry(8),))
        assert await again.leaderboard("quiz8") == [("p1", "Ann", 4)]
    finally:
        await again.aclose()


async def test_sqlite_expiry_is_honoured_and_purged(tmp_path):
    clock = FakeClock()
    store = SQLiteStore(tmp_path / "ttl.sqlite3", clock=clock, purge_interval=5)
    try:
        await store.write_batch(write("OLD1", snap(10), [entry(11)], ttl=10))
        await store.write_batch(write("LIVE", snap(1), ttl=100))
        clock.now += 10.5
        assert await store.load_room("OLD1") is None
        assert await store.list_rooms() == ["LIVE"]
        # A new room with the same code starts empty: no stale snapshot resurfaces.
        await store.write_batch(write("OLD1", journal=[entry(0)], ttl=10))
        assert await store.load_room("OLD1") == RoomRecord("OLD1", None, (entry(0),))
        clock.now += 200
        await store.write_batch(write("NEW1", snap(1)))  # a write purges what expired
        with sqlite3.connect(store.path) as conn:
            rooms = conn.execute("SELECT code FROM rooms ORDER BY code").fetchall()
            (journal,) = conn.execute("SELECT count(*) FROM journal").fetchone()
        assert rooms == [("NEW1",)] and journal == 0
    finally:
        await store.aclose()


async def test_sqlite_locked_database_raises_unavailable_quickly(tmp_path):
    path = tmp_path / "locked.sqlite3"
    store = SQLiteStore(path, busy_timeout=0.2)
    try:
        await store.write_batch(write("LOCK", snap(1)))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        start = time.monotonic()
        with pytest.raises(StoreUnavailable, match="busy"):
            await store.write_batch(write("LOCK", snap(2)))
        assert time.monotonic() - start < 2
        other.execute("ROLLBACK")
        other.close()
        await store.write_batch(write("LOCK", snap(2)))  # recovers once the lock is gone
        assert (await store.load_room("LOCK")).snapshot == snap(2)
        stats = store.statistics()
        assert stats.errors == 1 and "busy" in stats.last_error
    finally:
        await store.aclose()


async def test_sqlite_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreConfigError, match="newer"):
            await store.list_rooms()
        assert not await store.ping()
    finally:
        await store.aclose()


async def test_sqlite_damaged_file_raises_data_error(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreDataError):
            await store.list_rooms()
    finally:
        await store.aclose()


# --------------------------------------------------------------------------- Redis


@pytest.mark.redis
async def test_redis_key_layout_and_ttl_on_every_room_key(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url, prefix="rw:")
    client = redis_server.client()
    try:
        await store.write_batch(write("ABCD", snap(1), [entry(2)], ttl=100))
        await store.write_batch(write("EFGH", None, [entry(0)], ttl=30))
        keys = sorted(k.decode() for k in client.keys("*"))
        assert keys == ["rw:rooms", "rw:{room:ABCD}:journal", "rw:{room:ABCD}:snap",
                        "rw:{room:EFGH}:journal"]  # fmt: skip
        for key in ("rw:{room:ABCD}:snap", "rw:{room:ABCD}:journal"):
            assert 99_000 < client.pttl(key) <= 100_000
        assert 29_000 < client.pttl("rw:{room:EFGH}:journal") <= 30_000
        # The index lives as long as its longest-lived room, not its latest.
        assert 99_000 < client.pttl("rw:rooms") <= 100_000
        # A journal-only write renews the snapshot's TTL too.
        await store.write_batch(write("ABCD", journal=[entry(3)], ttl=500))
        assert 499_000 < client.pttl("rw:{room:ABCD}:snap") <= 500_000
        assert 499_000 < client.pttl("rw:{room:ABCD}:journal") <= 500_000
        assert client.xrange("rw:{room:ABCD}:journal") == [
            (b"2-1", {b"tick": b"2", b"data": b"input@2.0"}),
            (b"3-1", {b"tick": b"3", b"data": b"input@3.0"}),
        ]
        assert client.hgetall("rw:{room:ABCD}:snap") == {b"tick": b"1", b"data": b"state@1"}
        await store.record_game(GameRecord("ABCD", "quiz8", [("p1", "Ann", 4)], "p1", 0, 1))
        assert client.zscore("rw:leaderboard:{quiz8}", "p1") == 4
        assert client.hget("rw:leaderboard:{quiz8}:names", "p1") == b"Ann"
        assert client.xlen("rw:games:{quiz8}") == 1
    finally:
        client.close()
        await store.aclose()


@pytest.mark.redis
async def test_redis_expiry_leaves_nothing_behind(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url)
    client = redis_server.client()
    try:
        batch = WriteBatch(
            (
                RoomWrite("GONE", snap(1), (entry(2),), 0.3),
                RoomWrite("BYE0", None, (entry(0),), 0.4),
            )
        )
        await store.write_batch(batch)
        assert len(client.keys("roomwire:*")) == 4
        await trio.sleep(0.6)  # real clock: Redis expires the keys itself
        assert client.keys("*") == []
        assert await store.list_rooms() == []
        assert await store.load_room("GONE") is None
    finally:
        client.close()
        await store.aclose()


@pytest.mark.redis
async def test_redis_down_raises_unavailable_quickly_and_recovers(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url, connect_timeout=0.5, command_timeout=0.5)
    try:
        await store.write_batch(write("DOWN", snap(1)))
        redis_server.stop()
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.write_batch(write("DOWN", snap(2)))
        with pytest.raises(StoreUnavailable):
            await store.load_room("DOWN")
        assert not await store.ping()
        assert time.monotonic() - start < 2
        redis_server.start()  # same port, empty (no persistence), script cache flushed
        assert await store.ping()
        await store.write_batch(write("DOWN", snap(3), [entry(4)]))
        assert await store.load_room("DOWN") == RoomRecord("DOWN", snap(3), (entry(4),))
        assert store.statistics().errors == 3  # write, load, ping
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis_frozen_server_times_out_as_unavailable(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url, connect_timeout=0.3, command_timeout=0.3)
    try:
        await store.write_batch(write("STOP", snap(1)))
        redis_server.pause()
        start = time.monotonic()
        try:
            with pytest.raises(StoreUnavailable):
                await store.write_batch(write("STOP", snap(2)))
            # A few command timeouts (a read, a reconnect's handshake and its retry).
            assert time.monotonic() - start < 2.0
        finally:
            redis_server.resume()
        await store.write_batch(write("STOP", snap(3)))
        assert (await store.load_room("STOP")).snapshot == snap(3)
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis_nothing_listening_is_unavailable():
    port = RedisProcess().port  # a free port nobody listens on
    store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await store.list_rooms()
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis_foreign_key_type_is_a_data_error(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url)
    client = redis_server.client()
    try:
        client.set("roomwire:{room:ABCD}:snap", "not a hash")
        with pytest.raises(StoreDataError, match="unexpected type"):
            await store.write_batch(write("ABCD", snap(1)))
        client.hset("roomwire:{room:EFGH}:snap", "data", "no tick field")
        with pytest.raises(StoreDataError, match="malformed"):
            await store.load_room("EFGH")
    finally:
        client.close()
        await store.aclose()


def test_redis_helper_fails_loudly_when_the_server_cannot_start():
    from redisproc import running_redis

    with (
        pytest.raises(pytest.fail.Exception, match="cannot start redis-server"),
        running_redis(binary="no-such-redis-server"),
    ):
        pass  # pragma: no cover
