"""Durable rooms for the relay: the store, the checkpointer, game records, restore at start.

``Durability(config)`` is built by ``Relay``: it hands the registry a checkpoint sink
(``RoomSink``) and a game-record sink (``GameRecorder``), and its ``run`` service opens
the store, starts the checkpointer, brings back every room the store holds (snapshot +
journal replay) and watches the store's health. It also serves the operator's tools:
``relay replay`` (a room's history rebuilt from the store) and ``relay leaderboard``.

What is written when, and what each failure loses, is in docs/durability.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import sys
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from actors import GameOver, InvalidSnapshot, RoomError, RoomRegistry, Rules
from actors._replay import (
    InvalidJournal,
    ReplayEvent,
    ReplayResult,
    decode_journal_record,
    decode_snapshot,
    replay,
)

from ._checkpointer import Checkpointer
from ._store import (
    GameRecord,
    RoomRecord,
    Store,
    StoreConfigError,
    StoreError,
    StoreInputError,
    check_code,
    open_store,
    redact_url,
)

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "DEFAULT_STORE_FILE",
    "Durability",
    "GameRecorder",
    "RoomSink",
    "game_record",
    "leaderboard_main",
    "rebuild_room",
    "replay_main",
]

log = logging.getLogger("relay.store")

#: the embedded store's file inside ``Config.data_dir``
DEFAULT_STORE_FILE = "roomwire.sqlite3"
#: phase and seat changes kept per room in its snapshots (the replay tool's history)
HISTORY_LIMIT = 256
#: a restored room holds its seats at least this long for their players to come back
RESTORE_GRACE = 30.0


# --------------------------------------------------------------------------- rooms -> store


class RoomSink:
    """The rooms' ``CheckpointSink``: forwards to the ``Checkpointer``, never blocks.

    On top of the checkpointer it keeps three promises:

    - a room code's first write in this process replaces whatever the store holds under
      that code (a stale room of a dead process must not mix with a new room), unless
      this process restored that very room from the store (``adopt``);
    - a room that closes for good has its checkpoint deleted, except the rooms in
      ``keep`` (set at shutdown) that still have seats taken: their players may come
      back after the restart;
    - snapshots carry the room's ``history`` (its phase and seat changes, bounded), so
      ``relay replay`` can tell what happened before the latest snapshot.

    Before ``attach`` (the store is not open yet) every submission raises
    ``StoreError``; the room counts it as a sink error and carries on.
    """

    def __init__(self, *, history_limit: int = HISTORY_LIMIT) -> None:
        self._checkpointer: Checkpointer | None = None
        self._history_limit = history_limit
        self._live: set[str] = set()  # codes written (or restored) by this process
        self._history: dict[str, list[list[Any]]] = {}
        self._last: dict[str, tuple[Any, frozenset[str]]] = {}  # code -> (phase, seats)
        self.keep: frozenset[str] = frozenset()  # codes to keep when they close (shutdown)
        self.snapshots = 0
        self.journal_entries = 0
        self.deletes = 0

    def attach(self, checkpointer: Checkpointer) -> None:
        self._checkpointer = checkpointer

    def _target(self, code: str) -> Checkpointer:
        cp = self._checkpointer
        if cp is None:
            raise StoreError("the checkpoint store is not open yet")
        if code not in self._live:
            # A new incarnation of this code here: the stored room (if any) is stale.
            cp.submit_delete_nowait(code)
            self._live.add(code)
        return cp

    def adopt(self, code: str, stored: Mapping[str, Any]) -> None:
        """``code`` was restored from the store by this process (``stored``: its stored
        snapshot): keep its stored room and carry its history on."""
        self._live.add(code)
        history = stored.get("history")
        if isinstance(history, list) and history:
            self._history[code] = [list(item) for item in history][-self._history_limit :]
        self._last[code] = _marks(stored)

    def history(self, code: str) -> list[list[Any]]:
        """The room's recorded phase and seat changes, ``[tick, time, kind, value]``."""
        return list(self._history.get(code, ()))

    def submit_snapshot_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None:
        cp = self._target(code)
        data = self._with_history(code, data)
        cp.submit_snapshot_nowait(code, tick, data, ttl)
        self.snapshots += 1

    def submit_journal_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None:
        self._target(code).submit_journal_nowait(code, tick, data, ttl)
        self.journal_entries += 1

    def room_closed(self, code: str, reason: str, members: int) -> None:
        """The room is gone for good: drop its checkpoint (see the class docstring)."""
        self._live.discard(code)
        self._history.pop(code, None)
        self._last.pop(code, None)
        cp = self._checkpointer
        if cp is None or (code in self.keep and members > 0):
            return
        try:
            cp.submit_delete_nowait(code)
        except trio.ClosedResourceError:
            return  # shutting down: the TTL removes it
        self.deletes += 1

    def _with_history(self, code: str, data: bytes) -> bytes:
        """``data`` with the room's history added; records phase and seat changes."""
        snap = msgpack.unpackb(data, raw=False, strict_map_key=False)
        phase, seats = _marks(snap)
        history = self._history.get(code)
        last = self._last.get(code)
        tick, at = snap.get("tick"), snap.get("saved_at")
        changes: list[list[Any]] = []
        if phase is not None and (last is None or last[0] != phase):
            changes.append([tick, at, "phase", phase])
        before = last[1] if last is not None else frozenset()
        changes.extend([tick, at, "seated", pid] for pid in sorted(seats - before))
        changes.extend([tick, at, "unseated", pid] for pid in sorted(before - seats))
        self._last[code] = (phase, seats)
        if changes:
            if history is None:
                history = self._history[code] = []
            history.extend(changes)
            del history[: -self._history_limit]
        if not history:
            return data
        snap["history"] = history
        return msgpack.packb(snap, use_bin_type=True)


def _marks(snap: Mapping[str, Any]) -> tuple[str | None, frozenset[str]]:
    """What a room's history follows in a snapshot: its phase (with the round, if the
    rule set has rounds) and the players seated."""
    state = snap.get("state")
    phase = None
    if isinstance(state, dict) and state.get("phase") is not None:
        phase = str(state["phase"])
        if state.get("round"):
            phase += f" {state['round']}"
    members = snap.get("members")
    return phase, frozenset(members) if isinstance(members, dict) else frozenset()


# --------------------------------------------------------------------------- game records


def game_record(code: str, over: GameOver) -> GameRecord:
    """The store's record of a finished game. Raises ``StoreInputError`` for bad data."""
    players = [
        (str(pid)[:128], (str(name) or str(pid))[:128], int(score))
        for pid, name, score in over.standings
    ]
    return GameRecord(
        code=code,
        mode=over.mode,
        players=tuple(players),
        winner=over.winner,
        started_at=over.started_at,
        ended_at=max(over.ended_at, over.started_at),
    )


class GameRecorder:
    """The rooms' ``GameRecordSink``: writes finished games to the store in the background.

    ``submit_game_nowait`` queues (bounded) and never blocks; ``run`` writes them in order,
    retrying with backoff while the store is unavailable. A record is written at most once.
    """

    def __init__(self, *, max_pending: int = 10_000, backoff_max: float = 5.0) -> None:
        self._pending: deque[GameRecord] = deque()
        self._max_pending = max_pending
        self._backoff_max = backoff_max
        self._work = trio.Event()
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit_game_nowait(self, code: str, record: GameOver) -> None:
        """Queue ``record``. Raises ``StoreInputError`` (bad record) or ``StoreError``
        (the queue is full: the store has been down for long)."""
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            raise StoreError(f"game record queue full ({self._max_pending}): room {code} dropped")
        self._pending.append(game_record(code, record))
        self._work.set()

    async def run(
        self, store: Store, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued records until cancelled; then try the rest for up to 2 s."""
        task_status.started()
        try:
            while True:
                if not self._pending:
                    self._work = trio.Event()
                    await self._work.wait()
                await self._write_all(store, give_up_after=math.inf)
        finally:
            if self._pending:
                with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                    await self._write_all(store, give_up_after=2.0)
            if self._pending:
                log.error("%d game records not written at shutdown", len(self._pending))

    async def _write_all(self, store: Store, *, give_up_after: float) -> None:
        delay = 0.1
        deadline = trio.current_time() + give_up_after
        while self._pending and trio.current_time() < deadline:
            record = self._pending[0]
            try:
                await store.record_game(record)
            except StoreInputError as exc:
                log.error("game record of room %s refused by the store: %s", record.code, exc)
                self._pending.popleft()
                self.dropped += 1
                continue
            except StoreError as exc:
                log.warning("game record of room %s not written yet: %s", record.code, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            self._pending.popleft()
            self.written += 1
            delay = 0.1


# --------------------------------------------------------------------------- restoring


def rebuild_room(
    record: RoomRecord, rules_for: Callable[[str], Rules], *, events: bool = False
) -> tuple[ReplayResult, dict[str, Any]]:
    """Replay a stored room: its snapshot, then its journal. Returns the replay result
    and the stored snapshot (for its ``history``).

    Raises:
        InvalidSnapshot: no snapshot, or one this runtime cannot read.
        InvalidJournal: a journal record that is malformed or does not apply.
        RoomError: ``unknown_mode``, the snapshot's mode is not played here.
    """
    if record.snapshot is None:
        raise InvalidSnapshot(f"room {record.code} has a journal but no snapshot to start from")
    stored = decode_snapshot(record.snapshot.data)
    records = []
    for entry in record.journal:
        item = decode_journal_record(entry.data)
        if item.tick != entry.tick:
            raise InvalidJournal(
                f"room {record.code}: journal entry at tick {entry.tick} holds tick {item.tick}"
            )
        records.append(item)
    rules = rules_for(stored.get("mode"))  # type: ignore[arg-type]
    return replay(stored, records, rules, events=events), stored


class Durability:
    """The relay's durable side (see the module docstring).

    Args:
        config: the relay's ``Config`` (``store``, ``data_dir``, ``store_flush_interval``).
        store: a store to use instead of the one ``config`` names (tests).
        restore_grace: seconds a restored room holds its seats at least.
        ping_interval: seconds between health pings of the store.
        max_backlog: checkpoint entries held while the store is away (see Checkpointer).

    Raises:
        StoreConfigError: ``config.store`` is not a valid store URL.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: Store | None = None,
        restore_grace: float = RESTORE_GRACE,
        ping_interval: float = 2.0,
        max_backlog: int = 100_000,
    ) -> None:
        self.config = config
        # A URL is checked now (an operator's mistake stops the relay before it listens);
        # the default embedded file is opened in ``run``, which creates its directory.
        self._owns_store = store is None  # a store handed in stays its owner's to close
        if store is None and config.store is not None:
            store = open_store(config.store)
        self._store = store
        self._where = redact_url(config.store) if config.store else None
        self.restore_grace = restore_grace
        self._ping_interval = ping_interval
        self._max_backlog = max_backlog
        self.room_sink = RoomSink()
        self.recorder = GameRecorder()
        self.checkpointer: Checkpointer | None = None
        self._reachable: bool | None = None
        self._recovering = False  # flushes failed; the rooms are not snapshotted again yet
        self._registry: RoomRegistry | None = None
        self.restored = 0
        self.restore_failures = 0
        self.resnapshots = 0

    @property
    def store(self) -> Store | None:
        """The open store (None before ``run`` opened the default one)."""
        return self._store

    def _open_default(self) -> Store:
        directory = self.config.data_dir
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreConfigError(f"cannot create data directory {directory!r}: {exc}") from None
        path = os.path.join(directory, DEFAULT_STORE_FILE)
        self._where = f"sqlite:{path}"
        return open_store(None, default_path=path)

    async def run(
        self,
        registry: RoomRegistry,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Open the store, restore its rooms into ``registry``, then keep checkpointing.

        Reports started once the first restore attempt is over (a store that is down at
        start is retried in the background). On cancellation the checkpointer writes
        what it still holds (for a few seconds) and the store is closed (unless it was
        handed in).

        Raises:
            StoreConfigError: the store cannot be opened (bad path, unsupported server).
        """
        if self._store is None:
            self._store = self._open_default()
        store = self._store
        self._registry = registry
        cp = self.checkpointer = Checkpointer(
            store, flush_interval=self.config.store_flush_interval, max_backlog=self._max_backlog
        )
        self.room_sink.attach(cp)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(cp.run)
                await nursery.start(self.recorder.run, store)
                done = await self._restore_once(registry)
                if not done:
                    nursery.start_soon(self._restore_later, registry)
                nursery.start_soon(self._watch, registry)
                task_status.started()
        finally:
            if self._owns_store:
                with trio.CancelScope(shield=True):
                    await store.aclose()

    def begin_shutdown(self, connected: set[str] | frozenset[str] = frozenset()) -> None:
        """The relay is stopping: keep the checkpoints of the rooms where one of the
        ``connected`` players (those with a connection now) has a seat, so they come
        back with the next process; the other rooms are deleted as they close.

        A room nobody is connected to (its players left, or it was restored and
        nobody came back) is not worth bringing back.
        """
        registry = self._registry
        if registry is None:
            return
        self.room_sink.keep = frozenset(
            handle.code
            for handle in registry.rooms()
            if any(m.player_id in connected for m in handle.members())
        )

    async def _restore_once(self, registry: RoomRegistry) -> bool:
        """One attempt to restore every stored room; False if the store was unavailable."""
        try:
            with trio.fail_after(30.0):
                await self._restore_all(registry)
        except (StoreError, trio.TooSlowError) as exc:
            if isinstance(exc, StoreConfigError):
                raise
            log.warning("cannot read the store to restore rooms yet: %s", exc)
            return False
        return True

    async def _restore_later(self, registry: RoomRegistry) -> None:
        delay = 1.0
        while True:
            await trio.sleep(delay)
            if await self._restore_once(registry):
                return
            delay = min(delay * 2, 30.0)

    async def _restore_all(self, registry: RoomRegistry) -> None:
        store = self._store
        assert store is not None
        codes = await store.list_rooms()
        live = {handle.code for handle in registry.rooms()}
        for code in codes:
            if code in live:
                continue
            record = await store.load_room(code)
            if record is None:
                continue
            self.restore_room(registry, record)
        if self.restored:
            log.info("restored %d rooms from the store", self.restored)

    def restore_room(self, registry: RoomRegistry, record: RoomRecord) -> bool:
        """Rebuild one stored room and run it in ``registry``; False if it cannot be.

        Its seats wait for their players for at least ``restore_grace`` seconds. A room
        that cannot be rebuilt is logged and left in the store for ``relay replay``.
        """
        code = record.code
        if any(handle.code == code for handle in registry.rooms()):
            return False  # a room of this process has the code: the stored one is stale
        try:
            result, stored = rebuild_room(record, registry.rules_for)
        except (InvalidSnapshot, RoomError) as exc:
            self.restore_failures += 1
            log.error("room %s cannot be restored: %s", code, exc)
            return False
        if result.closed is not None:
            self.room_sink.room_closed(code, result.closed, 0)
            return False
        snapshot = result.room.snapshot()
        grace = max(registry.config.reconnect_grace, self.restore_grace)
        config = dataclasses.replace(registry.config, reconnect_grace=grace)
        try:
            registry.restore(snapshot, config=config)
        except (RoomError, InvalidSnapshot) as exc:
            self.restore_failures += 1
            log.error("room %s cannot be restored: %s", code, exc)
            return False
        # Before the room's first tick (its task has not run yet): its first snapshot
        # then supersedes the stored room instead of replacing it.
        self.room_sink.adopt(code, stored)
        self.restored += 1
        return True

    async def _watch(self, registry: RoomRegistry) -> None:
        """When flushes succeed again after failures, snapshot every room; ping the store.

        The fresh snapshots make the store whole again even if it lost data while it was
        away (a Redis restarted without persistence). The store counts as degraded until
        they are queued.
        """
        cp = self.checkpointer
        assert cp is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ping_forever)
            while True:
                if cp.statistics().consecutive_failures > 0:
                    self._recovering = True
                elif self._recovering:
                    rooms = registry.rooms()
                    for handle in rooms:
                        handle.room.checkpoint_nowait()
                    self.resnapshots += 1
                    self._recovering = False
                    log.warning("store is back: queued fresh snapshots of %d rooms", len(rooms))
                await trio.sleep(0.05)

    async def _ping_forever(self) -> None:
        store = self._store
        assert store is not None
        while True:
            self._reachable = await store.ping()
            await trio.sleep(self._ping_interval)

    # ------------------------------------------------------------------ observability

    def health(self) -> dict[str, Any]:
        """The ``store`` section of ``/healthz``."""
        store = self._store
        kind = store.statistics().backend if store is not None else "sqlite"
        if self.checkpointer is None:
            return {"kind": kind, "reachable": None, "degraded": False, "backlog": 0}
        cs = self.checkpointer.statistics()
        reachable = bool(self._reachable) if self._reachable is not None else not cs.degraded
        return {
            "kind": kind,
            "where": self._where,
            "reachable": reachable and not cs.degraded,
            "degraded": cs.degraded or not reachable or self._recovering,
            "backlog": cs.backlog_entries,
            "backlog_bytes": cs.backlog_bytes,
            "backlog_rooms": cs.backlog_rooms,
            "last_error": cs.last_error,
            "restored_rooms": self.restored,
            "games_pending": self.recorder.pending,
        }

    def add_metrics(self, metrics: dict[str, Any]) -> None:
        """Append the store's gauges and counters to ``Relay.metrics()`` output."""
        cs = self.checkpointer.statistics() if self.checkpointer is not None else None
        health = self.health()
        metrics["gauges"].extend(
            [
                (
                    "relay_store_backlog_entries",
                    "checkpoint entries accepted, not yet written",
                    cs.backlog_entries if cs else 0,
                ),
                (
                    "relay_store_backlog_bytes",
                    "checkpoint bytes accepted, not yet written",
                    cs.backlog_bytes if cs else 0,
                ),
                ("relay_store_degraded", "1 while the store fails", int(health["degraded"])),
            ]
        )
        metrics["counters"].extend(
            [
                ("relay_store_flushes_total", "store batches written", cs.flushes if cs else 0),
                ("relay_store_failures_total", "store batches failed", cs.failures if cs else 0),
                (
                    "relay_store_refused_total",
                    "checkpoint submissions refused (backlog full)",
                    cs.refused if cs else 0,
                ),
                ("relay_checkpoints_total", "room snapshots submitted", self.room_sink.snapshots),
                (
                    "relay_journal_entries_total",
                    "room journal records submitted",
                    self.room_sink.journal_entries,
                ),
                ("relay_rooms_restored_total", "rooms restored from the store", self.restored),
                ("relay_games_recorded_total", "game records written", self.recorder.written),
            ]
        )

    async def leaderboard_route(self, query: Mapping[str, list[str]]) -> dict[str, Any]:
        """``GET /leaderboard?mode=MODE[&limit=N]``. Raises ValueError for a bad query."""
        mode = (query.get("mode") or [""])[0]
        try:
            check_code(mode, "mode")
            limit = int((query.get("limit") or ["10"])[0])
        except (StoreInputError, ValueError) as exc:
            raise ValueError(f"leaderboard takes ?mode=MODE[&limit=1..1000]: {exc}") from None
        if self._store is None:
            raise StoreError("the store is not open yet")
        rows = await self._store.leaderboard(mode, limit=limit)
        return {"mode": mode, "entries": [_row(i, r) for i, r in enumerate(rows, 1)]}


def _row(rank: int, entry: Any) -> dict[str, Any]:
    return {
        "rank": rank,
        "player_id": entry.player_id,
        "name": entry.name,
        "total_score": entry.total_score,
    }


# --------------------------------------------------------------------------- CLI tools


def _store_for(args: Any) -> tuple[Store, str]:
    """The store a tool reads: ``--store``, else ``RELAY_STORE``, else the default file."""
    from ._config import Config

    config = Config.from_sources({"store": args.store, "data_dir": args.data_dir})
    if config.store is not None:
        return open_store(config.store), redact_url(config.store)
    path = os.path.join(config.data_dir, DEFAULT_STORE_FILE)
    if not os.path.exists(path):
        raise StoreConfigError(f"no embedded store at {path!r} (give --store or --data-dir)")
    return open_store(None, default_path=path), f"sqlite:{path}"


def _clock_text(t: Any) -> str:
    if not isinstance(t, int | float) or not math.isfinite(t):
        return "?"
    stamp = datetime.datetime.fromtimestamp(t, datetime.UTC)
    return stamp.strftime("%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}"


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _event_line(event: ReplayEvent) -> str:
    d = event.detail
    who = event.player_id or ""
    kind = event.kind
    if kind == "input":
        what = f"#{d['seq']} {_short(d['fields'])}"
    elif kind == "action":
        what = f"{d['method']} {_short(d['args'])}" if d["args"] is not None else d["method"]
    elif kind == "join":
        what = f"{d['name']!r} seat {d['seat']} ({d['role']})"
    elif kind == "leave":
        what = str(d["reason"])
    elif kind == "drop":
        what = f"seat held until {_clock_text(d['grace_until'])}"
    elif kind == "timer":
        what = str(d["name"])
    elif kind == "phase":
        what = f"{d['from']} -> {d['to']}"
    elif kind == "game_over":
        what = f"winner {d['winner']}: " + ", ".join(f"{s[0]} {s[2]}" for s in d["standings"])
    elif kind == "closed":
        what = str(d["reason"])
    else:
        what = ""
    return f"  {_clock_text(event.time)}  tick {event.tick:>7}  {kind:<9} {who:<12} {what}"


def _history_lines(history: list[Any]) -> list[str]:
    lines = []
    for item in history:
        try:
            tick, at, kind, value = item
        except (TypeError, ValueError):
            continue
        lines.append(f"  {_clock_text(at)}  tick {tick:>7}  {kind:<9} {value}")
    return lines


def _replay_text(
    code: str,
    where: str,
    record: RoomRecord,
    result: ReplayResult,
    stored: dict[str, Any],
    *,
    inputs: bool,
) -> list[str]:
    room = result.room
    assert record.snapshot is not None
    out = [
        f"room {code}  mode {room.mode}  rules {room.rules.name}  store {where}",
        f"snapshot at tick {record.snapshot.tick} ({_clock_text(stored.get('saved_at'))} UTC), "
        f"{len(record.journal)} journal records after it",
    ]
    history = stored.get("history")
    if isinstance(history, list) and history:
        out.append("history (phase and seat changes, from snapshots):")
        out.extend(_history_lines(history))
    out.append("events since the snapshot:")
    pending: list[ReplayEvent] = []

    def flush_inputs() -> None:
        if pending:
            first = pending[0]
            who = " ".join(f"{e.player_id}#{e.detail['seq']}" for e in pending)
            out.append(
                f"  {_clock_text(first.time)}  tick {first.tick:>7}  "
                f"{'inputs':<9} {len(pending):<12} {who}"
            )
            pending.clear()

    for event in result.events:
        if event.kind == "input" and not inputs:
            if pending and pending[0].tick != event.tick:
                flush_inputs()
            pending.append(event)
            continue
        flush_inputs()
        out.append(_event_line(event))
    flush_inputs()
    if not result.events:
        out.append("  (none)")
    state = room.public_state
    out.append(f"state at tick {room.tick} ({_clock_text(room.clock.now())} UTC):")
    game = state.get("game") or {}
    if "phase" in game:
        out.append(
            f"  phase {game['phase']}" + (f", round {game['round']}" if "round" in game else "")
        )
    out.append(f"  host {room.host}")
    last = room.clock.now()
    for name, deadline in room.timers().items():
        out.append(f"  timer {name} fires at {_clock_text(deadline)} ({deadline - last:+.1f} s)")
    out.append("  seats:")
    for m in room.members():
        status = "connected" if m.connected else "disconnected"
        entity = state["players"].get(m.player_id, {})
        out.append(f"    {m.seat} {m.player_id} {m.name!r} {m.role} {status} {_short(entity)}")
    if result.closed is not None:
        out.append(f"  the room closed: {result.closed}")
    out.append("public game state:")
    out.extend("  " + line for line in json.dumps(game, indent=2, sort_keys=True).splitlines())
    return out


def replay_main(args: Any) -> int:
    """``relay replay CODE [--store URL] [--inputs] [--json]``; returns the exit status."""
    from ._server import default_rules

    rules_by_mode = {mode: rules for rules in default_rules() for mode in rules.modes()}

    def rules_for(mode: str) -> Rules:
        rules = rules_by_mode.get(mode)
        if rules is None:
            raise RoomError(f"no game mode {mode!r} in this relay", code="unknown_mode")
        return rules

    code = str(args.code).strip().upper()

    async def main() -> int:
        store, where = _store_for(args)
        try:
            record = await store.load_room(code)
        finally:
            await store.aclose()
        if record is None:
            print(f"relay replay: no room {code} in {where}", file=sys.stderr)
            return 1
        result, stored = rebuild_room(record, rules_for, events=True)
        if args.json:
            print(json.dumps(_replay_json(code, record, result, stored), default=str))
        else:
            print("\n".join(_replay_text(code, where, record, result, stored, inputs=args.inputs)))
        return 0

    try:
        return trio.run(main)
    except (StoreError, InvalidSnapshot, RoomError) as exc:
        print(f"relay replay: {exc}", file=sys.stderr)
        return 1


def _replay_json(code: str, record: RoomRecord, result: ReplayResult, stored: dict) -> dict:
    room = result.room
    return {
        "code": code,
        "mode": room.mode,
        "snapshot_tick": record.snapshot.tick if record.snapshot else None,
        "journal_records": len(record.journal),
        "history": stored.get("history") or [],
        "events": [
            {
                "tick": e.tick,
                "time": e.time,
                "kind": e.kind,
                "player_id": e.player_id,
                "detail": dict(e.detail),
            }
            for e in result.events
        ],
        "tick": room.tick,
        "closed": result.closed,
        "timers": room.timers(),
        "members": [dataclasses.asdict(m) for m in room.members()],
        "state": room.public_state,
        "snapshot": room.snapshot(),
    }


def leaderboard_main(args: Any) -> int:
    """``relay leaderboard --mode MODE [--limit N] [--store URL] [--json]``."""

    async def main() -> int:
        store, where = _store_for(args)
        try:
            rows = await store.leaderboard(args.mode, limit=args.limit)
        finally:
            await store.aclose()
        if args.json:
            print(
                json.dumps(
                    {"mode": args.mode, "entries": [_row(i, r) for i, r in enumerate(rows, 1)]}
                )
            )
            return 0
        if not rows:
            print(f"no games of mode {args.mode} recorded in {where}")
            return 0
        print(f"leaderboard {args.mode} (top {args.limit}, {where})")
        width = max(len(r.name) for r in rows)
        for i, r in enumerate(rows, 1):
            print(f"  {i:>3}. {r.name:<{width}}  {r.total_score:>8}  ({r.player_id})")
        return 0

    try:
        return trio.run(main)
    except StoreError as exc:
        print(f"relay leaderboard: {exc}", file=sys.stderr)
        return 1
