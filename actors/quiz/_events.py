"""The quiz's own events: what a player's room RPC turns into (see ``parse_action``)."""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import RuleViolation
from .._logic import Event
from ._text import clean_answer

__all__ = [
    "ForceAdvance",
    "NextRound",
    "QuizEvent",
    "StartGame",
    "SubmitAnswer",
    "VoteEliminate",
    "VoteFinal",
]

#: the longest pool entry id a vote may name (ids look like "a3")
_MAX_ID_CHARS = 16


def _check_player(player_id: object) -> None:
    if not isinstance(player_id, str) or not player_id:
        raise RuleViolation(
            f"player_id must be a non-empty string, got {player_id!r}", code="bad_args"
        )


@dataclass(frozen=True, slots=True)
class QuizEvent(Event):
    """A game action by ``player_id``; validated when built (``RuleViolation`` bad_args)."""

    player_id: str

    def __post_init__(self) -> None:
        _check_player(self.player_id)


@dataclass(frozen=True, slots=True)
class StartGame(QuizEvent):
    """Host only, in the lobby: start round 1, optionally switching ``mode``."""

    mode: str | None = None

    def __post_init__(self) -> None:
        _check_player(self.player_id)
        if self.mode is not None and not isinstance(self.mode, str):
            raise RuleViolation(f"mode must be a string, got {self.mode!r}", code="bad_args")


@dataclass(frozen=True, slots=True)
class SubmitAnswer(QuizEvent):
    """A player's invented answer to the round's question; ``text`` must be clean."""

    text: str

    def __post_init__(self) -> None:
        _check_player(self.player_id)
        if clean_answer(self.text) != self.text:
            raise RuleViolation(
                "answer text must be cleaned first (trimmed, no control characters)",
                code="bad_args",
            )


def _check_answer_id(answer: object) -> None:
    if not isinstance(answer, str) or not answer or len(answer) > _MAX_ID_CHARS:
        raise RuleViolation(
            f"answer must be the id of an answer in the pool (like 'a3'), got {answer!r}",
            code="bad_args",
        )


@dataclass(frozen=True, slots=True)
class VoteEliminate(QuizEvent):
    """Vote to eliminate the pool entry ``answer`` (its id); not one's own."""

    answer: str

    def __post_init__(self) -> None:
        _check_player(self.player_id)
        _check_answer_id(self.answer)


@dataclass(frozen=True, slots=True)
class VoteFinal(QuizEvent):
    """Vote for the pool entry ``answer`` (its id) as the true answer; not one's own."""

    answer: str

    def __post_init__(self) -> None:
        _check_player(self.player_id)
        _check_answer_id(self.answer)


@dataclass(frozen=True, slots=True)
class NextRound(QuizEvent):
    """Host only, in results: go on to the next round (or the final) now."""


@dataclass(frozen=True, slots=True)
class ForceAdvance(QuizEvent):
    """Host only, in a timed phase: end it now as if its time had run out."""
