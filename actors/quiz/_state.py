"""The quiz's immutable state and its checkpoint form (plain, msgpack-able data)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Entry",
    "MODES",
    "Player",
    "Question",
    "QuizState",
    "RoundScore",
    "Standing",
    "Timing",
    "dump_state",
    "load_state",
]

#: game modes and their number of rounds
MODES: Mapping[str, int] = types.MappingProxyType({"quiz8": 8, "quiz12": 12})

#: checkpoint format version written by ``dump_state``
FORMAT = 1


@dataclass(frozen=True, slots=True)
class Question:
    """A prompt, its true answer and the set's decoy ("robot") answer."""

    prompt: str
    answer: str
    decoy: str


@dataclass(frozen=True, slots=True)
class Player:
    """A seated player. ``seat`` is the join order (host succession, tie-breaks)."""

    id: str
    name: str
    seat: int
    connected: bool = True
    score: int = 0
    correct_votes: int = 0


@dataclass(frozen=True, slots=True)
class Entry:
    """One answer of the round's pool; ``kind`` is "correct", "decoy" or "player".

    Players whose answers are equal (case/whitespace-insensitively) share one
    entry; ``authors`` lists them by seat.
    """

    id: str
    text: str
    kind: str
    authors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoundScore:
    """One player's points for one round, by cause (see ``_scoring``)."""

    player_id: str
    correct_vote: int = 0
    spotted_robot: int = 0
    votes_received: int = 0
    fooled: int = 0

    @property
    def total(self) -> int:
        return self.correct_vote + self.spotted_robot + self.votes_received + self.fooled


@dataclass(frozen=True, slots=True)
class Standing:
    """A row of the final standings (best first)."""

    player_id: str
    name: str
    score: int
    correct_votes: int


@dataclass(frozen=True, slots=True)
class Timing:
    """Time limits of the timed phases, in seconds."""

    question: float = 45.0
    elimination: float = 20.0
    voting: float = 20.0
    results: float = 10.0


@dataclass(frozen=True, slots=True)
class QuizState:
    """Everything a quiz room knows. Immutable: every step builds a new one.

    ``answers`` and the votes are ``(player_id, value)`` pairs in arrival
    order; ``pool`` is the round's shuffled answers once the question phase
    is over; ``scores`` is the last scored round's breakdown (shown in
    results); ``standings`` is filled in the final phase.
    """

    phase: str
    phase_seq: int
    deadline: float | None
    mode: str
    seed: int
    timing: Timing
    questions: tuple[Question, ...]
    created_at: float
    players: tuple[Player, ...] = ()
    host: str | None = None
    next_seat: int = 0
    round: int = 0
    answers: tuple[tuple[str, str], ...] = ()
    pool: tuple[Entry, ...] = ()
    eliminate_votes: tuple[tuple[str, str], ...] = ()
    eliminated: str | None = None
    final_votes: tuple[tuple[str, str], ...] = ()
    scores: tuple[RoundScore, ...] = ()
    standings: tuple[Standing, ...] = ()
    started_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None

    @property
    def rounds(self) -> int:
        return MODES[self.mode]

    @property
    def question(self) -> Question | None:
        """The current round's question (None in the lobby)."""
        if 1 <= self.round <= len(self.questions):
            return self.questions[self.round - 1]
        return None

    def player(self, player_id: object) -> Player | None:
        for player in self.players:
            if player.id == player_id:
                return player
        return None

    def entry(self, entry_id: object) -> Entry | None:
        for entry in self.pool:
            if entry.id == entry_id:
                return entry
        return None


# -- checkpoint form ----------------------------------------------------------


def dump_state(state: QuizState) -> dict[str, Any]:
    """``state`` as plain data: dicts with str keys, lists, str, int, float, bool, None."""
    data = _to_plain(state)
    data["format"] = FORMAT
    return data


def load_state(data: Mapping[str, Any]) -> QuizState:
    """The state ``dump_state`` wrote. Raises ``ValueError`` naming the bad field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"quiz checkpoint must be a mapping, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ValueError(f"quiz checkpoint format {data.get('format')!r} is not {FORMAT}")
    fields = {key: value for key, value in data.items() if key != "format"}
    state = _from_plain(QuizState, fields, "state")
    if state.mode not in MODES:
        raise ValueError(f"quiz checkpoint: unknown mode {state.mode!r}")
    if not 0 <= state.seed < 2**64:
        raise ValueError(f"quiz checkpoint: seed {state.seed} is out of range")
    return state


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _from_plain(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _from_plain(inner, value, path)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"quiz checkpoint: {path} must be a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], item, f"{path}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"quiz checkpoint: {path} must have {len(args)} items")
        return tuple(
            _from_plain(arg, item, f"{path}[{i}]")
            for i, (arg, item) in enumerate(zip(args, value, strict=False))
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"quiz checkpoint: {path} must be a mapping")
        hints = _hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        missing = [name for name in names if name not in value]
        unknown = [str(key) for key in value if key not in hints]
        if missing or unknown:
            raise ValueError(
                f"quiz checkpoint: {path} is missing {missing} / has unknown {unknown}"
            )
        return tp(
            **{name: _from_plain(hints[name], value[name], f"{path}.{name}") for name in names}
        )
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"quiz checkpoint: {path} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"quiz checkpoint: {path} must be an int, got {value!r}")
        return value
    if tp is bool or tp is str:
        if not isinstance(value, tp):
            raise ValueError(f"quiz checkpoint: {path} must be a {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"quiz checkpoint: no conversion for {tp!r} at {path}")  # a bug here
