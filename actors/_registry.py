"""The process's rooms: codes, lookup, quick-join, limits; every room runs under a Supervisor.

Rooms close themselves (empty past ``RoomConfig.empty_grace``, older than
``max_lifetime``, stopped by their rule set); the registry forgets a room
when its supervised task ends for good, so a code is free again afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from ._clock import Clock
from ._errors import MailboxFull, RoomClosed, RoomError, RoomFull, RoomNotFound
from ._link import Link
from ._logic import Rules
from ._room import (
    CheckpointSink,
    GameRecordSink,
    JoinResult,
    MemberInfo,
    Room,
    RoomConfig,
    RoomStatistics,
)
from ._supervisor import Restart, Supervised, Supervisor
from ._ticker import Ticker

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "RegistryStatistics",
    "RoomHandle",
    "RoomRegistry",
    "normalize_code",
]

#: room code characters: upper-case letters and digits that cannot be misread
#: for one another (no 0/O/Q... no 1/I/L, no 2/Z, 5/S, 8/B)
CODE_ALPHABET = "ACDEFGHJKMNPRTUVWXY34679"
CODE_LENGTH = 4
_CODE_CHARS = frozenset(CODE_ALPHABET)
_REFUSED_BY_ROOM = frozenset({"room_full", "room_closed", "room_busy", "game_in_progress"})


def normalize_code(code: Any) -> str:
    """A room code as typed by a person (any case, spaces around) in canonical form.

    Raises ``RoomNotFound`` for anything that cannot be a room code.
    """
    if type(code) is not str:
        raise RoomNotFound("a room code is a string")
    canonical = code.strip().upper()
    if len(canonical) != CODE_LENGTH or not _CODE_CHARS.issuperset(canonical):
        raise RoomNotFound(f"there is no room {code[:16]!r}")
    return canonical


class RoomHandle:
    """How the rest of the relay talks to one room: join, leave, stop, statistics.

    Every method but the ``async`` ones is synchronous and never blocks.
    """

    __slots__ = ("room",)

    def __init__(self, room: Room) -> None:
        self.room = room

    @property
    def code(self) -> str:
        return self.room.code

    @property
    def mode(self) -> str:
        return self.room.mode

    @property
    def closed(self) -> bool:
        return self.room.closed

    @property
    def free_seats(self) -> int:
        return self.room.free_seats

    @property
    def member_count(self) -> int:
        return self.room.member_count

    @property
    def accepting(self) -> bool:
        return self.room.accepting

    def members(self) -> list[MemberInfo]:
        return self.room.members()

    async def join(
        self,
        player_id: str,
        name: str,
        link: Link,
        frame_id: int,
        role: str = "player",
        *,
        resume: str | None = None,
        timeout: float | None = None,
    ) -> JoinResult:
        """Take a seat and wait (at most ``timeout``, default the room's
        ``join_timeout``) for the room's answer.

        On success the room has already sent ``Joined`` through ``link`` and
        owns its data from now on. Raises ``RoomFull``, ``RoomClosed``,
        ``MailboxFull``, ``RoomError`` (``game_in_progress``,
        ``already_joined``, ``room_timeout``, ``room_crashed``, or the rule
        set's own code). On any error the link is untouched and still the
        caller's.
        """
        reply = self.room.join_nowait(player_id, name, link, frame_id, role, resume=resume)
        return await reply.wait(self._timeout(timeout))

    async def reconnect(
        self,
        player_id: str,
        link: Link,
        frame_id: int,
        *,
        resume: str | None = None,
        timeout: float | None = None,
    ) -> JoinResult:
        """Take ``player_id``'s held seat back on a new link (see ``Room.reconnect_nowait``)."""
        reply = self.room.reconnect_nowait(player_id, link, frame_id, resume=resume)
        return await reply.wait(self._timeout(timeout))

    def leave_nowait(self, player_id: str, reason: str = "left") -> None:
        self.room.leave_nowait(player_id, reason)

    def stop_nowait(self, reason: str = "closed") -> None:
        self.room.stop_nowait(reason)

    def statistics(self) -> RoomStatistics:
        return self.room.statistics()

    def _timeout(self, timeout: float | None) -> float:
        return self.room.config.join_timeout if timeout is None else timeout

    def __repr__(self) -> str:
        return f"RoomHandle({self.room!r})"


@dataclass(frozen=True, slots=True)
class RegistryStatistics:
    rooms: int
    members: int
    max_rooms: int
    created: int
    closed: int
    crashes: int
    restarts: int
    given_up: int
    #: counters of rooms that have closed, so totals over all rooms only grow
    retired: RetiredTotals


@dataclass(slots=True)
class RetiredTotals:
    ticks: int = 0
    overruns: int = 0
    tick_seconds: float = 0.0
    tick_histogram: list[int] = field(default_factory=list)

    def add(self, stats: RoomStatistics) -> None:
        self.ticks += stats.ticks
        self.overruns += stats.overruns
        self.tick_seconds += stats.tick_seconds_total
        if not self.tick_histogram:
            self.tick_histogram = [0] * len(stats.tick_histogram)
        for i, n in enumerate(stats.tick_histogram):
            self.tick_histogram[i] += n


class RoomRegistry:
    """Creates, finds and quick-joins rooms; runs them under one ``Supervisor``.

    ``rules`` is a rule set or several (each serves the modes it lists).
    ``config`` is the default ``RoomConfig``; ``max_rooms`` caps the rooms of
    this process; ``intensity``/``period`` are the supervisor's restart
    intensity. ``rng`` draws codes and seeds (a seeded ``random.Random`` makes
    them reproducible; the default is the OS's). Start it with
    ``registry = await nursery.start(RoomRegistry(rules).run)``.
    """

    def __init__(
        self,
        rules: Rules | Iterable[Rules],
        *,
        config: RoomConfig | None = None,
        max_rooms: int = 1000,
        intensity: int = 3,
        period: float = 10.0,
        checkpoint_sink: CheckpointSink | None = None,
        game_record_sink: GameRecordSink | None = None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
    ) -> None:
        rule_sets = [rules] if hasattr(rules, "step") else list(rules)  # type: ignore[arg-type]
        self._rules: dict[str, Rules] = {}
        for rule_set in rule_sets:
            for mode in rule_set.modes():
                if mode in self._rules:
                    raise ValueError(f"two rule sets serve mode {mode!r}")
                self._rules[mode] = rule_set
        if type(max_rooms) is not int or max_rooms < 1:
            raise ValueError("max_rooms must be a positive integer")
        self.config = config or RoomConfig()
        self.max_rooms = max_rooms
        self._supervisor = Supervisor(intensity=intensity, period=period)
        self._checkpoint_sink = checkpoint_sink
        self._game_record_sink = game_record_sink
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self._rooms: dict[str, RoomHandle] = {}
        self._running = False
        self._created = 0
        self._closed = 0
        self._retired = RetiredTotals()
        # Rooms wait for their ticks on one shared timer whose grid is a fifth of
        # the default period: the rooms due in a slot wake in one batch.
        self._ticker = Ticker(slot=1 / (5 * self.config.tick_rate))

    def modes(self) -> frozenset[str]:
        return frozenset(self._rules)

    def rules_for(self, mode: str) -> Rules:
        """The rule set that plays ``mode``. Raises ``RoomError`` code ``unknown_mode``."""
        rules = self._rules.get(mode) if type(mode) is str else None
        if rules is None:
            raise RoomError(f"no game mode {mode!r}", code="unknown_mode")
        return rules

    async def run(
        self, *, task_status: trio.TaskStatus[RoomRegistry] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the rooms until cancelled (cancelling cancels every room)."""
        if self._clock is None:
            self._clock = Clock()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._ticker.run)
            await nursery.start(self._supervisor.run)
            self._running = True
            try:
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._running = False

    # -- rooms ----------------------------------------------------------------

    def create(
        self,
        mode: str,
        options: Mapping[str, Any] | None = None,
        *,
        config: RoomConfig | None = None,
    ) -> RoomHandle:
        """A new room of ``mode`` with a fresh code, running at once.

        Raises ``RoomError`` code ``unknown_mode``, ``server_full`` (``max_rooms``
        reached), or the rule set's own error for bad ``options``;
        ``RuntimeError`` when the registry is not running.
        """
        self._check_running()
        rules = self._rules.get(mode)
        if rules is None:
            raise RoomError(f"no game mode {mode!r}", code="unknown_mode")
        if len(self._rooms) >= self.max_rooms:
            raise RoomError("this server has no room for more rooms", code="server_full")
        room = Room(
            rules,
            code=self._fresh_code(),
            mode=mode,
            options=options,
            seed=self._rng.getrandbits(32),
            config=config or self.config,
            clock=self._clock,
            checkpoint_sink=self._checkpoint_sink,
            game_record_sink=self._game_record_sink,
        )
        return self._adopt(room)

    def restore(
        self,
        snapshot: Mapping[str, Any],
        *,
        links: Mapping[str, Link] | None = None,
        config: RoomConfig | None = None,
    ) -> RoomHandle:
        """Run a room again from ``Room.snapshot()`` data (same code).

        Raises ``RoomError`` code ``unknown_mode``, ``room_exists`` (the code is
        live here), ``server_full``; ``InvalidSnapshot`` for bad data.
        """
        self._check_running()
        mode = snapshot.get("mode") if isinstance(snapshot, Mapping) else None
        rules = self._rules.get(mode) if type(mode) is str else None
        if rules is None:
            raise RoomError(f"no game mode {mode!r}", code="unknown_mode")
        code = snapshot.get("code")
        if code in self._rooms:
            raise RoomError(f"room {code} is already running", code="room_exists")
        if len(self._rooms) >= self.max_rooms:
            raise RoomError("this server has no room for more rooms", code="server_full")
        room = Room.restore(
            snapshot,
            rules,
            config=config or self.config,
            clock=self._clock,
            links=links,
            checkpoint_sink=self._checkpoint_sink,
            game_record_sink=self._game_record_sink,
        )
        return self._adopt(room)

    def get(self, code: str) -> RoomHandle:
        """The room with this code (any case). Raises ``RoomNotFound``."""
        handle = self._rooms.get(normalize_code(code))
        if handle is None or handle.closed:
            raise RoomNotFound(f"there is no room {code.strip().upper()}")
        return handle

    def rooms(self) -> list[RoomHandle]:
        """The live rooms, oldest first."""
        return [h for h in self._rooms.values() if not h.closed]

    def close(self, code: str, reason: str = "closed") -> None:
        """Ask room ``code`` to close at its next tick, telling its members ``reason``."""
        self.get(code).stop_nowait(reason)

    def quick_join_target(self, mode: str, *, exclude: Iterable[str] = ()) -> RoomHandle:
        """The room a quick-join of ``mode`` should try: the fullest open room of
        that mode with a free seat (filling rooms before opening new ones),
        else a new room. Raises what ``create`` raises."""
        exclude = frozenset(exclude)
        best: RoomHandle | None = None
        for handle in self._rooms.values():
            room = handle.room
            if (
                room.mode != mode
                or room.closed
                or handle.code in exclude
                or not room.accepting
                or room.free_seats <= 0
            ):
                continue
            if best is None or room.member_count > best.room.member_count:
                best = handle
        return best if best is not None else self.create(mode)

    async def quick_join(
        self,
        mode: str,
        player_id: str,
        name: str,
        link: Link,
        frame_id: int,
        *,
        role: str = "player",
        timeout: float | None = None,
        attempts: int = 4,
    ) -> tuple[RoomHandle, JoinResult]:
        """Join an open room of ``mode`` or a new one. A room that refuses because it
        filled up (or started, or closed) in the meantime is skipped and the
        next is tried, up to ``attempts`` times. Raises the last refusal, or
        what ``create`` raises."""
        tried: set[str] = set()
        last: RoomError | None = None
        for _ in range(attempts):
            handle = self.quick_join_target(mode, exclude=tried)
            try:
                result = await handle.join(player_id, name, link, frame_id, role, timeout=timeout)
            except (RoomFull, RoomClosed, MailboxFull) as exc:
                last = exc
            except RoomError as exc:
                if exc.code not in _REFUSED_BY_ROOM:
                    raise
                last = exc
            else:
                return handle, result
            tried.add(handle.code)
        assert last is not None
        raise last

    def statistics(self) -> RegistryStatistics:
        sup = self._supervisor.statistics()
        return RegistryStatistics(
            rooms=len(self._rooms),
            members=sum(h.room.member_count for h in self._rooms.values()),
            max_rooms=self.max_rooms,
            created=self._created,
            closed=self._closed,
            crashes=sup.crashes,
            restarts=sup.restarts,
            given_up=sup.given_up,
            retired=self._retired,
        )

    # -- internals ------------------------------------------------------------

    def _check_running(self) -> None:
        if not self._running:
            raise RuntimeError("the room registry is not running")

    def _fresh_code(self) -> str:
        choice = self._rng.choice
        for _ in range(1000):
            code = "".join(choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if code not in self._rooms:
                return code
        raise RoomError("no free room code", code="server_full")

    def _adopt(self, room: Room) -> RoomHandle:
        room.ticker = self._ticker
        handle = RoomHandle(room)
        self._rooms[room.code] = handle
        self._created += 1
        self._supervisor.start_child(room, restart=Restart.TRANSIENT, on_exit=self._forget)
        return handle

    def _forget(self, child: Supervised, outcome: str) -> None:
        assert isinstance(child, Room)
        handle = self._rooms.get(child.code)
        if handle is not None and handle.room is child:
            del self._rooms[child.code]
            self._closed += 1
            self._retired.add(child.statistics())
