"""The arena rule set: free movement, no phases. Players write their own x, y and angle.

It is the rule set of the bench's "fanout" scenario and a base for action
games where the server relays positions: all the game state lives in the
players' public entities, which clients update with ``Input`` deltas; the rule
set itself only decides the room's size and where players appear.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from protocol import f32

from ._errors import InvalidTransition, RoomError
from ._logic import Action, Event

__all__ = ["ARENA_MAX_PLAYERS", "ArenaRules", "ArenaState"]

ARENA_MAX_PLAYERS = 64
_DEFAULT_PLAYERS = 8
_OPTIONS = frozenset({"max_players"})
_BELOW_100 = 99.99999237060547  # the largest binary32 value below 100


def _coordinate(rng: random.Random) -> float:
    """Uniform in [0, 100), rounded to binary32 without reaching 100."""
    return min(f32(rng.random() * 100.0), _BELOW_100)


@dataclass(frozen=True, slots=True)
class ArenaState:
    mode: str
    max_players: int
    seed: int


class ArenaRules:
    """Mode ``arena``; ``options["max_players"]`` seats (default 8, at most 64).

    Players spawn at a seeded random spot in [0, 100) x [0, 100) with
    ``angle`` 0 and ``hp`` 100; clients may write ``x``, ``y`` and ``angle``
    of their own entity. Joins and leaves change nothing; there are no room
    actions (every RPC is refused with ``invalid_event``).
    """

    name: ClassVar[str] = "arena"
    input_fields: ClassVar[Mapping[str, str]] = MappingProxyType(
        {"x": "f32", "y": "f32", "angle": "f32"}
    )

    def modes(self) -> frozenset[str]:
        return frozenset({"arena"})

    def max_players(self, mode: str) -> int:
        return ARENA_MAX_PLAYERS

    def seat_limit(self, state: ArenaState) -> int:
        """The room's own seat count (an optional hook the runtime honours)."""
        return state.max_players

    def new_state(
        self, *, mode: str, options: Mapping[str, Any], now: float, seed: int
    ) -> ArenaState:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise RoomError(f"unknown arena options: {sorted(unknown)}", code="invalid_options")
        n = options.get("max_players", _DEFAULT_PLAYERS)
        if type(n) is not int or not 1 <= n <= ARENA_MAX_PLAYERS:
            raise RoomError(
                f"max_players must be an integer from 1 to {ARENA_MAX_PLAYERS}",
                code="invalid_options",
            )
        return ArenaState(mode=mode, max_players=n, seed=seed)

    def step(self, state: ArenaState, event: Event, now: float) -> tuple[ArenaState, list[Action]]:
        return state, []

    def parse_action(self, player_id: str, method: str, args: Any) -> Event:
        raise InvalidTransition("arena", method, f"the arena has no action {method!r}")

    def accepts_players(self, state: ArenaState) -> bool:
        return True

    def player_entity(self, player_id: str, seed: int) -> dict[str, Any]:
        rng = random.Random(f"{seed}:{player_id}")
        return {
            "x": _coordinate(rng),
            "y": _coordinate(rng),
            "angle": 0.0,
            "hp": 100,
        }

    def public_view(self, state: ArenaState) -> dict[str, Any]:
        return {}

    def private_view(self, state: ArenaState, player_id: str) -> dict[str, Any] | None:
        return None

    def dump(self, state: ArenaState) -> dict[str, Any]:
        return {"mode": state.mode, "max_players": state.max_players, "seed": state.seed}

    def load(self, data: Mapping[str, Any]) -> ArenaState:
        return ArenaState(
            mode=str(data["mode"]), max_players=int(data["max_players"]), seed=int(data["seed"])
        )
