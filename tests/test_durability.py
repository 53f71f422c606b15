"""Durable rooms: snapshot + journal round trips on every store, replay, a crash mid-game,
a full backlog, TTLs and cleanup in Redis, game records and the operator's tools, and a
Redis outage under a running relay."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from fakes import ClientMirror, FakeLink
from redisproc import RedisProcess, redis_server  # noqa: F401  (redis_server: fixture)
from relay_fixtures import fast_config, start_relay

from actors import ArenaRules, InvalidSnapshot, RoomConfig, RoomRegistry
from actors._replay import InvalidJournal, decode_journal_record, replay
from actors.quiz import QuizRules
from protocol import Input, Rpc
from relay._config import Config
from relay._durability import Durability, rebuild_room
from relay._store import GameRecord, MemoryStore, Store
from relay._store_redis import RedisStore
from relay._store_sqlite import SQLiteStore
from relay.client import connect

ROOT = Path(__file__).resolve().parent.parent
PERIOD = 1 / 20
QUIZ = {"quiz8": QuizRules()}


class CrashingArena(ArenaRules):
    """The arena with a bug: the room action ``crash`` raises (not a RoomError)."""

    def parse_action(self, player_id: str, method: str, args: Any) -> Any:
        if method == "crash":
            raise RuntimeError("a bug in the rule set")
        return super().parse_action(player_id, method, args)


async def start_durable(
    nursery: trio.Nursery,
    store: Store,
    rules: list[Any],
    *,
    room: RoomConfig | None = None,
    **options: Any,
) -> tuple[RoomRegistry, Durability]:
    """A registry whose rooms checkpoint into ``store`` (restoring what it holds)."""
    durability = Durability(Config(store_flush_interval=PERIOD), store=store, **options)
    registry = RoomRegistry(
        rules,
        config=room or RoomConfig(empty_grace=60.0, reconnect_grace=30.0),
        checkpoint_sink=durability.room_sink,
        game_record_sink=durability.recorder,
    )
    await nursery.start(registry.run)
    await nursery.start(durability.run, registry)
    return registry, durability


async def eventually(predicate: Any, *, timeout: float = 5.0) -> None:
    """Poll ``predicate`` (real-clock tests of real stores and sockets)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without what only says when it was taken."""
    return {k: v for k, v in snapshot.items() if k not in ("tick", "saved_at", "history")}


def game(handle: Any) -> dict[str, Any]:
    return handle.room.public_state["game"]


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_factory(request, tmp_path):
    """A factory of store objects that all open the same storage (a restart reopens it)."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: shared
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "rooms.sqlite3")
    server: RedisProcess = request.getfixturevalue("redis_server")
    return lambda: RedisStore(server.url)


async def play_a_round(registry: RoomRegistry) -> tuple[Any, dict[str, FakeLink]]:
    """A quiz room of four in its question phase: two answers in, one player dropped."""
    handle = registry.create("quiz8", {"question_seconds": 120})
    links = {}
    for pid in ("ann", "bob", "cy", "dee"):
        links[pid] = FakeLink(pid)
        await handle.join(pid, pid.title(), links[pid], 1)
    links["ann"].push(Rpc(2, "room", "start_game"))
    await eventually(lambda: game(handle)["phase"] == "question")
    links["bob"].push(Rpc(3, "room", "submit_answer", {"text": "purple elephants"}))
    links["cy"].push(Rpc(3, "room", "submit_answer", {"text": "seven bridges"}))
    links["dee"].drop()
    acted = lambda: sum(p["acted"] for p in game(handle)["players"])  # noqa: E731
    await eventually(lambda: acted() == 2 and not handle.room.members()[3].connected)
    return handle, links


# -- round trips ---------------------------------------------------------------


async def test_snapshot_and_journal_round_trip_restores_the_room(store_factory):
    store = store_factory()
    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(
            nursery, store, [QuizRules()], room=RoomConfig(empty_grace=60.0, reconnect_grace=5.0)
        )
        handle, _ = await play_a_round(registry)
        room = handle.room
        live, public, timers = room.snapshot(), room.public_state, room.timers()
        assert timers and game(handle)["deadline_ms"] is not None  # the phase timer runs
        with trio.fail_after(5):
            await durability.checkpointer.wait_flushed()
        nursery.cancel_scope.cancel()  # the process "dies": the rooms are gone
    code = live["code"]
    if not isinstance(store, MemoryStore):  # the memory store is the storage itself
        await store.aclose()

    store = store_factory()  # the next process opens the same storage
    record = await store.load_room(code)
    assert record is not None and record.snapshot is not None and record.journal
    result, _ = rebuild_room(record, QUIZ.__getitem__)
    assert comparable(result.room.snapshot()) == comparable(live)
    assert result.room.public_state == public
    assert result.room.timers() == timers  # absolute deadlines: the remaining time is kept
    again, _ = rebuild_room(record, QUIZ.__getitem__)  # replaying is deterministic
    assert again.room.snapshot() == result.room.snapshot()

    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(nursery, store, [QuizRules()])
        assert durability.restored == 1
        restored = registry.get(code)
        assert restored.room.timers() == timers
        assert game(restored) == public["game"]
        # the seats wait for their players; a reconnect takes one back with a keyframe
        await eventually(lambda: not any(m.connected for m in restored.members()))
        link = FakeLink("bob")
        result = await restored.reconnect("bob", link, 7)
        assert result.reconnected and result.seat == 1
        await eventually(lambda: ClientMirror(link).update() == restored.room.public_state)
        # the store now holds the restored room: restoring it again gives the same state
        live = restored.room.snapshot()
        with trio.fail_after(5):
            await durability.checkpointer.wait_flushed()
        record = await store.load_room(code)
        assert comparable(rebuild_room(record, QUIZ.__getitem__)[0].room.snapshot()) == (
            comparable(live)
        )
        nursery.cancel_scope.cancel()
    await store.aclose()


async def test_the_restored_timer_fires_at_its_original_deadline(autojump_clock):
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        registry, _ = await start_durable(nursery, store, [QuizRules()])
        handle, _ = await play_a_round(registry)
        deadline = handle.room.timers()
        await trio.sleep(30)  # a quarter of the 120 s question phase goes by
        nursery.cancel_scope.cancel()
    (ends_at,) = deadline.values()
    async with trio.open_nursery() as nursery:
        registry, _ = await start_durable(nursery, store, [QuizRules()])
        (restored,) = registry.rooms()
        assert restored.room.timers() == deadline
        for i, pid in enumerate(("ann", "bob", "cy")):  # the players come back
            await restored.reconnect(pid, FakeLink(pid), i + 10)
        clock = restored.room.clock
        await trio.sleep(ends_at - clock.now() - 1.0)
        assert game(restored)["phase"] == "question"  # 1 s before its deadline
        await trio.sleep(1.0 + 2 * PERIOD)
        assert game(restored)["phase"] == "elimination"  # at its deadline, not 30 s later
        nursery.cancel_scope.cancel()


def test_replay_refuses_a_journal_that_does_not_apply():
    bad = [
        msgpack.packb([1, 0.0]),  # not [tick, now, entries]
        msgpack.packb([1, 0.0, [["z", "x"]]]),  # unknown entry kind
        msgpack.packb([1, "now", []]),
        b"\xc1",  # not msgpack
    ]
    for data in bad:
        with pytest.raises(InvalidJournal):
            decode_journal_record(data)


async def test_replay_of_an_unknown_player_is_an_invalid_journal(autojump_clock):
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(nursery, store, [ArenaRules()])
        handle = registry.create("arena")
        await trio.sleep(PERIOD * 2)
        await durability.checkpointer.wait_flushed()
        nursery.cancel_scope.cancel()
    record = await store.load_room(handle.code)
    snapshot = msgpack.unpackb(record.snapshot.data)
    ghost = decode_journal_record(
        msgpack.packb([snapshot["tick"] + 1, 0.0, [["i", "ghost", 1, {"x": 1.0}]]])
    )
    with pytest.raises(InvalidJournal, match="ghost"):
        replay(snapshot, [ghost], ArenaRules())
    with pytest.raises(InvalidSnapshot):
        replay(snapshot, [], QuizRules())  # another rule set's snapshot


# -- a crash mid-game ------------------------------------------------------------


async def test_a_room_that_raises_mid_game_comes_back_within_a_tick(autojump_clock):
    store = MemoryStore()
    players = [f"p{i}" for i in range(8)]
    seen: dict[str, list[int]] = {pid: [] for pid in players}
    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(nursery, store, [CrashingArena()])
        handle = registry.create("arena")
        room = handle.room
        links = {}
        for pid in players:
            links[pid] = FakeLink(pid)
            await handle.join(pid, pid.upper(), links[pid], 1)
        mirrors = {pid: ClientMirror(link) for pid, link in links.items()}
        sent = dict.fromkeys(players, 0)

        async def play(ticks: int) -> None:
            for _ in range(ticks):
                for pid in players:
                    sent[pid] += 1
                    links[pid].push(Input(sent[pid], {"x": float(sent[pid] % 90)}))
                await trio.sleep(PERIOD)
                for pid, mirror in mirrors.items():
                    mirror.update()
                    seen[pid].append(mirror.state["players"][pid]["seq"])

        await play(20)
        acked = {pid: room.public_state["players"][pid]["seq"] for pid in players}
        tick = room.tick
        links["p3"].push(Rpc(9, "room", "crash"))
        await play(1)  # the tick that reads the crash raises: nothing of it commits
        assert registry.statistics().crashes == 1 and registry.statistics().restarts == 1
        assert room.tick == tick
        await trio.sleep(PERIOD)  # the restarted room runs at the very next deadline
        assert room.tick == tick + 1 and room.statistics().skipped_deadlines == 0
        await play(20)
        await trio.sleep(2 * PERIOD)
        for pid in players:
            assert not links[pid].closed
            # every acknowledged input is still there; seqs never went back
            assert room.public_state["players"][pid]["seq"] == sent[pid]
            assert seen[pid] == sorted(seen[pid]) and min(s for s in seen[pid][20:]) >= acked[pid]
            assert mirrors[pid].update() == room.public_state
            assert mirrors[pid].keyframes >= 2  # the restart sent each member a keyframe
        assert all(m.connected for m in room.members())
        # and the store agrees with the live room
        live = room.snapshot()
        await durability.checkpointer.wait_flushed()
        record = await store.load_room(handle.code)
        rebuilt, _ = rebuild_room(record, {"arena": CrashingArena()}.__getitem__)
        assert comparable(rebuilt.room.snapshot()) == comparable(live)
        nursery.cancel_scope.cancel()


# -- outages ---------------------------------------------------------------------


async def test_a_full_backlog_coalesces_into_snapshots_and_loses_nothing(autojump_clock):
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(nursery, store, [ArenaRules()], max_backlog=30)
        handle = registry.create("arena")
        links = [FakeLink(f"p{i}") for i in range(4)]
        for i, link in enumerate(links):
            await handle.join(link.player_id, f"P{i}", link, 1)
        store.set_available(False)
        for seq in range(1, 201):  # 10 s of play with the store away
            for link in links:
                link.push(Input(seq, {"x": float(seq % 50), "y": float(seq % 7)}))
            await trio.sleep(PERIOD)
        room = handle.room
        stats = durability.checkpointer.statistics()
        assert stats.degraded and stats.refused > 0 and stats.backlog_entries <= 30
        assert all(p["seq"] == 200 for p in room.public_state["players"].values())
        assert room.statistics().skipped_deadlines == 0  # the ticks never waited
        live = room.snapshot()
        store.set_available(True)
        with trio.fail_after(30):
            await durability.checkpointer.wait_flushed()
        assert durability.checkpointer.statistics().backlog_entries == 0
        record = await store.load_room(handle.code)
        rebuilt, _ = rebuild_room(record, {"arena": ArenaRules()}.__getitem__)
        assert comparable(rebuilt.room.snapshot()) == comparable(live)
        nursery.cancel_scope.cancel()


async def test_a_store_that_comes_back_empty_gets_fresh_snapshots(autojump_clock):
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(nursery, store, [ArenaRules()])
        handle = registry.create("arena", config=RoomConfig(snapshot_interval=0.0))
        link = FakeLink("p0")
        await handle.join("p0", "P0", link, 1)
        await durability.checkpointer.wait_flushed()
        store.set_available(False)
        await store_wiped(store, handle.code)
        for seq in range(1, 21):
            link.push(Input(seq, {"x": float(seq)}))
            await trio.sleep(PERIOD)
        store.set_available(True)
        await trio.sleep(1.0)
        assert durability.resnapshots == 1
        live = handle.room.snapshot()
        await durability.checkpointer.wait_flushed()
        record = await store.load_room(handle.code)
        assert record is not None and record.snapshot is not None
        rebuilt, _ = rebuild_room(record, {"arena": ArenaRules()}.__getitem__)
        assert comparable(rebuilt.room.snapshot()) == comparable(live)
        nursery.cancel_scope.cancel()


async def store_wiped(store: MemoryStore, code: str) -> None:
    """What a restarted store without persistence holds: nothing."""
    store.set_available(True)
    await store.delete_room(code)
    store.set_available(False)


# -- Redis: TTLs, cleanup, game records ----------------------------------------------


@pytest.mark.redis
async def test_redis_keys_carry_ttls_and_a_finished_empty_room_leaves_none(redis_server):  # noqa: F811
    store = RedisStore(redis_server.url)
    client = redis_server.client()
    lifetime = 600.0
    room_config = RoomConfig(
        empty_grace=0.3, max_lifetime=lifetime, checkpoint_ttl=lifetime, snapshot_interval=0.5
    )
    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(nursery, store, [QuizRules()], room=room_config)
        handle = registry.create("quiz8")
        links = {pid: FakeLink(pid) for pid in ("ann", "bob", "cy")}
        for pid, link in links.items():
            await handle.join(pid, pid.title(), link, 1)
        await durability.checkpointer.wait_flushed()
        snap_key, journal_key = store.room_keys(handle.code)
        assert client.exists(snap_key, journal_key) == 2
        for key in (snap_key, journal_key, store.index_key):
            assert 0 < client.pttl(key) <= lifetime * 1000
        # the host forces every phase: 8 rounds of 4 phases, all in one tick
        links["ann"].push(
            Rpc(2, "room", "start_game"),
            *(Rpc(10 + i, "room", "force_advance") for i in range(32)),
        )
        await eventually(lambda: game(handle)["phase"] == "final")
        await eventually(lambda: durability.recorder.written == 1)
        (recorded,) = await store.recent_games("quiz8")
        assert recorded.code == handle.code and len(recorded.players) == 3
        board = await store.leaderboard("quiz8")
        assert sorted(e.player_id for e in board) == ["ann", "bob", "cy"]
        for link in links.values():
            link.drop()
        await eventually(lambda: handle.closed, timeout=10)
        await durability.checkpointer.wait_flushed()
        room_keys = [k for k in client.keys("roomwire:*") if b"{room:" in k or k.endswith(b"rooms")]
        assert room_keys == []  # the game's record and leaderboard stay; the room does not
        nursery.cancel_scope.cancel()
    await store.aclose()


# -- the operator's tools ------------------------------------------------------------


def _relay(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_replay_and_leaderboard_commands_read_the_store(tmp_path):
    path = tmp_path / "rooms.sqlite3"
    store = SQLiteStore(path)
    async with trio.open_nursery() as nursery:
        registry, durability = await start_durable(nursery, store, [QuizRules()])
        handle, _ = await play_a_round(registry)
        live = handle.room.snapshot()
        await store.record_game(
            GameRecord(handle.code, "quiz8", (("ann", "Ann", 30), ("bob", "Bob", 10)), "ann", 1, 2)
        )
        await durability.checkpointer.wait_flushed()
        nursery.cancel_scope.cancel()
    await store.aclose()
    url = f"sqlite:{path}"

    out = await trio.to_thread.run_sync(lambda: _relay("replay", handle.code, "--store", url))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"room {handle.code}  mode quiz8" in text
    assert "phase     lobby -> question" not in text  # that change is in a snapshot...
    assert "phase     question 1" in text  # ...and so in the history
    assert "action    bob" in text and "submit_answer" in text and "drop      dee" in text
    assert "phase question, round 1" in text

    out = await trio.to_thread.run_sync(
        lambda: _relay("replay", handle.code.lower(), "--store", url, "--json")
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert comparable(data["snapshot"]) == comparable(live)
    assert [e["kind"] for e in data["events"]].count("action") == 2

    out = await trio.to_thread.run_sync(
        lambda: _relay("leaderboard", "--mode", "quiz8", "--store", url, "--json")
    )
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)["entries"]
    assert [(e["player_id"], e["total_score"]) for e in entries] == [("ann", 30), ("bob", 10)]

    out = await trio.to_thread.run_sync(lambda: _relay("replay", "ZZZZ", "--store", url))
    assert out.returncode == 1 and "no room ZZZZ" in out.stderr and "Traceback" not in out.stderr
    out = await trio.to_thread.run_sync(
        lambda: _relay("leaderboard", "--mode", "quiz8", "--store", "bogus://x")
    )
    assert out.returncode == 1 and "unsupported store URL" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_store_it_cannot_open_with_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    for flags, message in (
        (["--store", "bogus://x"], "relay: cannot open the store: unsupported store URL"),
        (["--data-dir", str(tmp_path / "a-file" / "sub")], "cannot create data directory"),
    ):
        out = _relay("serve", "--port", "0", *flags, timeout=30)
        assert out.returncode == 1 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_health_metrics_and_leaderboard_on_the_http_port(tmp_path):
    config = fast_config(tmp_path, "websocket", http_port=0)  # the default embedded store
    async with start_relay(config) as r:
        durability = r.relay.durability
        assert durability is not None and durability.store is not None
        assert (tmp_path / "relay-data" / "roomwire.sqlite3").exists()
        await durability.store.record_game(
            GameRecord("ABCD", "quiz8", (("ann", "Ann", 30), ("bob", "Bob", 10)), "ann", 1, 2)
        )
        status, body = await http_get(r.http_port, "/leaderboard?mode=quiz8&limit=1")
        assert status == 200
        assert json.loads(body) == {
            "mode": "quiz8",
            "entries": [{"rank": 1, "player_id": "ann", "name": "Ann", "total_score": 30}],
        }
        status, _ = await http_get(r.http_port, "/leaderboard")
        assert status == 400
        status, body = await http_get(r.http_port, "/healthz")
        store = json.loads(body)["store"]
        assert store["kind"] == "sqlite" and store["reachable"] and not store["degraded"]
        assert store["backlog"] == 0
        _, body = await http_get(r.http_port, "/metrics")
        for name in (
            "relay_store_backlog_entries",
            "relay_store_backlog_bytes",
            "relay_store_flushes_total",
            "relay_store_failures_total",
            "relay_checkpoints_total",
            "relay_journal_entries_total",
        ):
            assert f"\n{name} ".encode() in body, name


async def test_a_graceful_stop_keeps_only_the_rooms_players_are_in(tmp_path):
    config = fast_config(tmp_path, "websocket", store="memory:", reconnect_grace=30.0)
    async with start_relay(config) as r:
        store = r.relay.durability.store
        async with connect(r.url, reconnect=False) as gone:
            left_behind = await gone.create("arena")  # its player leaves before the stop
        async with connect(r.url, reconnect=False) as c:
            kept = await c.create("arena")
            await c.send_input({"x": 3.0})
            await c.wait_for(lambda c: c.state["players"][c.player_id]["seq"] == 1)
            await r.relay.shutdown(timeout=2.0)
        await r.relay.durability.checkpointer.wait_flushed()
        assert await store.list_rooms() == [kept]
        assert left_behind != kept
        record = await store.load_room(kept)
        rebuilt, _ = rebuild_room(record, {"arena": ArenaRules()}.__getitem__)
        (entity,) = rebuilt.room.public_state["players"].values()
        assert entity["x"] == 3.0 and entity["seq"] == 1


@pytest.mark.slow
@pytest.mark.redis
async def test_redis_down_for_ten_seconds_mid_game(tmp_path, redis_server):  # noqa: F811
    # snapshot_interval 0: only the fresh snapshots taken when the store is back can
    # make the restarted (empty: no persistence) Redis whole again
    config = fast_config(
        tmp_path, "websocket", http_port=0, store=redis_server.url, snapshot_interval=0.0
    )
    async with start_relay(config) as r, connect(r.url) as a, connect(r.url) as b:
        code = await a.create("arena")
        await b.join(code)
        seqs: list[int] = []

        async def play(seconds: float) -> None:
            end = trio.current_time() + seconds
            while trio.current_time() < end:
                for c in (a, b):
                    await c.send_input({"x": float(len(seqs) % 90)})
                seqs.append(len(seqs))
                await trio.sleep(PERIOD)

        await play(1.0)
        redis_server.stop()
        acked_before = a.state["players"][a.player_id]["seq"]
        await play(10.0)
        # play went on: inputs were acknowledged all along, the store is degraded
        assert a.state["players"][a.player_id]["seq"] >= acked_before + 150
        _, body = await http_get(r.http_port, "/healthz")
        health = json.loads(body)["store"]
        assert health["degraded"] and not health["reachable"] and health["backlog"] > 0
        _, metrics = await http_get(r.http_port, "/metrics")
        assert b"\nrelay_store_backlog_entries 0.0" not in metrics
        redis_server.start()
        await play(1.0)
        durability = r.relay.durability
        await eventually(
            lambda: durability.checkpointer.statistics().backlog_entries == 0, timeout=15
        )
        await eventually(lambda: not durability.health()["degraded"], timeout=5)
        live = r.relay.registry.get(code).room.snapshot()
        await durability.checkpointer.wait_flushed()
        store = RedisStore(redis_server.url)
        record = await store.load_room(code)
        await store.aclose()
        rebuilt, _ = rebuild_room(record, {"arena": ArenaRules()}.__getitem__)
        assert comparable(rebuilt.room.snapshot()) == comparable(live)
