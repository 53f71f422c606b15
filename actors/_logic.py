"""The contract between a room's runtime and the pure game logic it runs.

Game logic is plain data and pure functions: ``rules.step(state, event, now)``
returns ``(new_state, actions)``. The runtime (the room actor) feeds events in
and carries the actions out: it arms timers, sends messages, writes
checkpoints. Nothing in a rule set touches trio, sockets or the clock; time
comes in as ``now`` (seconds, on the clock the runtime chooses, always the same
clock for one room), and every deadline a rule set hands back is absolute on
that clock.

Events defined here are the ones every rule set sees, whatever the game:
players arriving, leaving, dropping and coming back, and timers expiring.
A rule set adds its own events (game actions) and turns a client's room RPC
into one of them with ``parse_action``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

__all__ = [
    "Action",
    "Broadcast",
    "CancelTimer",
    "Checkpoint",
    "Event",
    "GameOver",
    "PlayerDisconnected",
    "PlayerJoined",
    "PlayerLeft",
    "PlayerReconnected",
    "Rules",
    "SendTo",
    "StartTimer",
    "StopRoom",
    "TimerExpired",
]


# -- events every rule set receives ------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event fed to ``Rules.step``."""


@dataclass(frozen=True, slots=True)
class PlayerJoined(Event):
    """A player took a seat. The runtime has already checked the seat limit."""

    player_id: str
    name: str


@dataclass(frozen=True, slots=True)
class PlayerLeft(Event):
    """A player's seat was released (left on purpose, or the reconnect grace ran out)."""

    player_id: str
    reason: str = "left"


@dataclass(frozen=True, slots=True)
class PlayerDisconnected(Event):
    """A player's connection dropped; the seat is held for the reconnect grace period."""

    player_id: str


@dataclass(frozen=True, slots=True)
class PlayerReconnected(Event):
    """A disconnected player came back within the grace period and has its seat again."""

    player_id: str


@dataclass(frozen=True, slots=True)
class TimerExpired(Event):
    """A timer armed with ``StartTimer(name, ...)`` reached its deadline."""

    name: str


# -- actions a rule set returns ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """Base of every action returned by ``Rules.step``."""


@dataclass(frozen=True, slots=True)
class StartTimer(Action):
    """Arm (or re-arm) the timer ``name`` for the absolute time ``deadline``.

    Timers are state timeouts in the gen_statem sense: the runtime cancels
    every timer when the phase changes unless the same step re-arms it.
    """

    name: str
    deadline: float


@dataclass(frozen=True, slots=True)
class CancelTimer(Action):
    name: str


@dataclass(frozen=True, slots=True)
class SendTo(Action):
    """A private message to one player; it never enters the public state."""

    player_id: str
    event: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Broadcast(Action):
    """An event for everyone in the room (for example ``round_started``)."""

    event: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Checkpoint(Action):
    """Ask the runtime to snapshot the room now (phase changes do this)."""

    reason: str = "phase"


@dataclass(frozen=True, slots=True)
class GameOver(Action):
    """The game reached its end. ``standings`` is ordered best first."""

    mode: str
    standings: tuple[tuple[str, str, int], ...]  # (player_id, name, score)
    winner: str | None
    started_at: float
    ended_at: float


@dataclass(frozen=True, slots=True)
class StopRoom(Action):
    """Close the room; everyone in it is told ``reason``."""

    reason: str


# -- the interface a rule set implements -------------------------------------


class Rules(Protocol):
    """What the room runtime needs from a game's rule set.

    ``state`` is whatever the rule set likes, as long as it is plain, immutable
    data (frozen dataclasses, tuples): the runtime keeps the previous state to
    compute the public delta and never mutates it.

    Errors: ``step`` and ``parse_action`` raise ``actors.RoomError`` subclasses
    (``InvalidTransition`` for an event the current phase does not accept,
    ``RuleViolation`` for a guard that failed) and leave the state unchanged.
    """

    #: rule-set name, e.g. "quiz"
    name: ClassVar[str]
    #: client-writable fields of a player's own public entity, with their wire
    #: type: "f32", "int", "bool" or "str". Everything else is server-owned.
    input_fields: ClassVar[Mapping[str, str]]

    def modes(self) -> frozenset[str]: ...

    def max_players(self, mode: str) -> int: ...

    # Optional: ``seat_limit(state) -> int``, read with getattr by the room,
    # for rule sets whose seat count depends on the room's options (arena).

    def new_state(self, *, mode: str, options: Mapping[str, Any], now: float, seed: int) -> Any: ...

    def step(self, state: Any, event: Event, now: float) -> tuple[Any, list[Action]]: ...

    def parse_action(self, player_id: str, method: str, args: Any) -> Event: ...

    def accepts_players(self, state: Any) -> bool: ...

    def player_entity(self, player_id: str, seed: int) -> dict[str, Any]: ...

    def public_view(self, state: Any) -> dict[str, Any]: ...

    def private_view(self, state: Any, player_id: str) -> dict[str, Any] | None: ...

    def dump(self, state: Any) -> dict[str, Any]: ...

    def load(self, data: Mapping[str, Any]) -> Any: ...
