"""The built-in party quiz: its transition table, its handlers and its ``Rules`` interface.

docs/game.md describes the game for players and integrators; this module is
the one place the rules live. The table (``QUIZ_TABLE``) is the single source
of the phase diagram in the docs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

from .._errors import RuleViolation
from .._logic import (
    Action,
    Broadcast,
    Event,
    GameOver,
    PlayerDisconnected,
    PlayerJoined,
    PlayerLeft,
    PlayerReconnected,
)
from .._phase import Phase, PhaseMachine, Transition, TransitionTable
from ._events import (
    ForceAdvance,
    NextRound,
    QuizEvent,
    StartGame,
    SubmitAnswer,
    VoteEliminate,
    VoteFinal,
)
from ._questions import builtin_questions
from ._scoring import eliminated_entry, rank, score_round
from ._state import MODES, Entry, Player, Question, QuizState, Timing, dump_state, load_state
from ._text import clean_answer, normalise

__all__ = [
    "MAX_PLAYERS",
    "MIN_PLAYERS",
    "QUIZ_MACHINE",
    "QUIZ_TABLE",
    "QuizRules",
    "TIMING_BOUNDS",
]

LOBBY, QUESTION, ELIMINATION, VOTING, RESULTS, FINAL = (
    "lobby",
    "question",
    "elimination",
    "voting",
    "results",
    "final",
)
PLAYING = (QUESTION, ELIMINATION, VOTING, RESULTS)

MAX_PLAYERS = 8
MIN_PLAYERS = 2

#: allowed range, in seconds, of each phase's time limit (``<phase>_seconds`` options)
TIMING_BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        QUESTION: (10.0, 300.0),
        ELIMINATION: (5.0, 120.0),
        VOTING: (5.0, 120.0),
        RESULTS: (3.0, 60.0),
    }
)


def _shuffle_key(*parts: object) -> bytes:
    """A sort key that is the same on every machine and Python version."""
    text = ":".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


# -- guards -------------------------------------------------------------------


def _actor(state: QuizState, event: Event) -> Player:
    player_id = getattr(event, "player_id", None)
    player = state.player(player_id)
    if player is None:
        raise RuleViolation(f"player {player_id!r} has no seat in this room", code="unknown_player")
    return player


def _is_seated(state: QuizState, event: Event) -> None:
    _actor(state, event)


def _can_join(state: QuizState, event: Event) -> None:
    assert isinstance(event, PlayerJoined)
    if not isinstance(event.player_id, str) or not event.player_id:
        raise RuleViolation("player_id must be a non-empty string", code="bad_args")
    if not isinstance(event.name, str):
        raise RuleViolation("a player's name must be a string", code="bad_args")
    if state.player(event.player_id) is not None:
        raise RuleViolation(f"player {event.player_id!r} already has a seat", code="already_seated")
    if len(state.players) >= MAX_PLAYERS:
        raise RuleViolation(f"the quiz seats at most {MAX_PLAYERS} players", code="room_full")


def _is_connected(state: QuizState, event: Event) -> None:
    if not _actor(state, event).connected:
        raise RuleViolation("the player is already disconnected", code="already_disconnected")


def _is_disconnected(state: QuizState, event: Event) -> None:
    if _actor(state, event).connected:
        raise RuleViolation("the player is not disconnected", code="not_disconnected")


def _is_host(state: QuizState, event: Event) -> None:
    player = _actor(state, event)
    if state.host != player.id:
        raise RuleViolation("only the host can do this", code="not_host")


def _enough_players(state: QuizState, event: Event) -> None:
    if len(state.players) < MIN_PLAYERS:
        raise RuleViolation(
            f"the quiz needs at least {MIN_PLAYERS} players to start", code="not_enough_players"
        )


def _mode_is_playable(state: QuizState, event: Event) -> None:
    assert isinstance(event, StartGame)
    mode = event.mode
    if mode is not None and (mode not in MODES or MODES[mode] > len(state.questions)):
        playable = sorted(m for m, rounds in MODES.items() if rounds <= len(state.questions))
        raise RuleViolation(
            f"unknown mode {mode!r}; this room plays {', '.join(playable)}", code="unknown_mode"
        )


def _has_not_answered(state: QuizState, event: Event) -> None:
    player = _actor(state, event)
    if any(pid == player.id for pid, _ in state.answers):
        raise RuleViolation("you already answered this round", code="already_answered")


def _answer_is_a_bluff(state: QuizState, event: Event) -> None:
    assert isinstance(event, SubmitAnswer) and state.question is not None
    key = normalise(event.text)
    if key == normalise(state.question.answer):
        raise RuleViolation(
            "that is the true answer: write a believable wrong one", code="answer_is_correct"
        )
    if key == normalise(state.question.decoy):
        raise RuleViolation(
            "that answer is already in the pool: write another", code="answer_taken"
        )


def _votes_of(state: QuizState, event: Event) -> tuple[tuple[str, str], ...]:
    return state.eliminate_votes if isinstance(event, VoteEliminate) else state.final_votes


def _has_not_voted(state: QuizState, event: Event) -> None:
    player = _actor(state, event)
    if any(pid == player.id for pid, _ in _votes_of(state, event)):
        raise RuleViolation("you already voted in this phase", code="already_voted")


def _votable(state: QuizState, event: Event) -> None:
    assert isinstance(event, VoteEliminate | VoteFinal)
    player = _actor(state, event)
    entry = state.entry(event.answer)
    if entry is None:
        raise RuleViolation(f"no answer {event.answer!r} in this round", code="unknown_answer")
    if player.id in entry.authors:
        raise RuleViolation("you cannot vote for your own answer", code="own_answer")
    if isinstance(event, VoteFinal) and entry.id == state.eliminated:
        raise RuleViolation("that answer was eliminated", code="answer_eliminated")


# -- handlers -----------------------------------------------------------------

Step = tuple[QuizState, list[Action]]


def _next_host(players: Sequence[Player]) -> str | None:
    return min(players, key=lambda p: p.seat).id if players else None


def _set_connected(state: QuizState, player_id: str, connected: bool) -> QuizState:
    players = tuple(
        dataclasses.replace(p, connected=connected) if p.id == player_id else p
        for p in state.players
    )
    return dataclasses.replace(state, players=players)


def _join(state: QuizState, event: Event, now: float) -> Step:
    assert isinstance(event, PlayerJoined)
    player = Player(id=event.player_id, name=event.name, seat=state.next_seat)
    return (
        dataclasses.replace(
            state,
            players=(*state.players, player),
            host=state.host if state.host is not None else player.id,
            next_seat=state.next_seat + 1,
        ),
        [],
    )


def _leave(state: QuizState, event: Event, now: float) -> Step:
    """Release a seat; mid-game, drop the player's unrevealed answer and votes.

    Once the pool is shown, an answer stays in it (its text is already
    public); points for it go to the authors still seated. Fewer than
    ``MIN_PLAYERS`` left mid-game ends the game.
    """
    assert isinstance(event, PlayerLeft)
    gone = event.player_id
    players = tuple(p for p in state.players if p.id != gone)
    host = state.host if state.host != gone else _next_host(players)
    new = dataclasses.replace(
        state,
        players=players,
        host=host,
        answers=tuple(a for a in state.answers if a[0] != gone),
        eliminate_votes=tuple(v for v in state.eliminate_votes if v[0] != gone),
        final_votes=tuple(v for v in state.final_votes if v[0] != gone),
        scores=tuple(s for s in state.scores if s.player_id != gone),
    )
    if state.phase in PLAYING and len(players) < MIN_PLAYERS:
        new = dataclasses.replace(new, phase=FINAL, end_reason="not_enough_players")
    return new, []


def _disconnect(state: QuizState, event: Event, now: float) -> Step:
    assert isinstance(event, PlayerDisconnected)
    return _set_connected(state, event.player_id, False), []


def _reconnect(state: QuizState, event: Event, now: float) -> Step:
    assert isinstance(event, PlayerReconnected)
    return _set_connected(state, event.player_id, True), []


def _start(state: QuizState, event: Event, now: float) -> Step:
    assert isinstance(event, StartGame)
    return (
        dataclasses.replace(
            state, phase=QUESTION, mode=event.mode or state.mode, round=1, started_at=now
        ),
        [],
    )


def _submit(state: QuizState, event: Event, now: float) -> Step:
    assert isinstance(event, SubmitAnswer)
    return dataclasses.replace(state, answers=(*state.answers, (event.player_id, event.text))), []


def _vote_eliminate(state: QuizState, event: Event, now: float) -> Step:
    assert isinstance(event, VoteEliminate)
    votes = (*state.eliminate_votes, (event.player_id, event.answer))
    return dataclasses.replace(state, eliminate_votes=votes), []


def _vote_final(state: QuizState, event: Event, now: float) -> Step:
    assert isinstance(event, VoteFinal)
    votes = (*state.final_votes, (event.player_id, event.answer))
    return dataclasses.replace(state, final_votes=votes), []


def build_pool(state: QuizState) -> tuple[Entry, ...]:
    """The round's answers: players' (equal ones merged), the true one and the decoy.

    The order is a shuffle that depends only on the room seed, the round and
    the texts; entry ids are ``a1``, ``a2``, ... in that order, so an id says
    nothing about who wrote the answer.
    """
    question = state.question
    assert question is not None
    seats = {p.id: p.seat for p in state.players}
    merged: dict[str, tuple[str, str, list[str]]] = {
        normalise(question.answer): (question.answer, "correct", []),
        normalise(question.decoy): (question.decoy, "decoy", []),
    }
    by_seat = sorted(state.answers, key=lambda answer: seats.get(answer[0], math.inf))
    for player_id, text in by_seat:
        key = normalise(text)
        if key not in merged:
            merged[key] = (text, "player", [])
        if merged[key][1] == "player":
            merged[key][2].append(player_id)
    order = sorted(merged, key=lambda key: _shuffle_key(state.seed, state.round, key))
    return tuple(
        Entry(
            id=f"a{index}", text=merged[key][0], kind=merged[key][1], authors=tuple(merged[key][2])
        )
        for index, key in enumerate(order, start=1)
    )


def _close_question(state: QuizState, event: Event, now: float) -> Step:
    return dataclasses.replace(state, phase=ELIMINATION, pool=build_pool(state)), []


def _close_elimination(state: QuizState, event: Event, now: float) -> Step:
    eliminated = eliminated_entry(state.eliminate_votes)
    return dataclasses.replace(state, phase=VOTING, eliminated=eliminated), []


def _close_voting(state: QuizState, event: Event, now: float) -> Step:
    return dataclasses.replace(state, phase=RESULTS), []


def _close_results(state: QuizState, event: Event, now: float) -> Step:
    if state.round < state.rounds:
        return dataclasses.replace(state, phase=QUESTION, round=state.round + 1), []
    return dataclasses.replace(state, phase=FINAL, end_reason="completed"), []


def _enter_question(state: QuizState, now: float) -> Step:
    state = dataclasses.replace(
        state,
        answers=(),
        pool=(),
        eliminate_votes=(),
        eliminated=None,
        final_votes=(),
        scores=(),
    )
    question = state.question
    assert question is not None
    data = {"round": state.round, "rounds": state.rounds, "prompt": question.prompt}
    return state, [Broadcast("round_started", data)]


def _enter_results(state: QuizState, now: float) -> Step:
    """Score the round: the only place scores change."""
    scores = score_round(
        state.pool, state.eliminate_votes, state.final_votes, [p.id for p in state.players]
    )
    by_id = {score.player_id: score for score in scores}
    players = tuple(
        dataclasses.replace(
            p,
            score=p.score + by_id[p.id].total,
            correct_votes=p.correct_votes + (1 if by_id[p.id].correct_vote > 0 else 0),
        )
        for p in state.players
    )
    state = dataclasses.replace(state, players=players, scores=scores)
    return state, [Broadcast("round_results", _results_view(state))]


def _enter_final(state: QuizState, now: float) -> Step:
    standings = rank(state.players)
    state = dataclasses.replace(state, standings=standings, ended_at=now)
    started = state.started_at if state.started_at is not None else state.created_at
    winner = standings[0].player_id if standings else None
    over = GameOver(
        mode=state.mode,
        standings=tuple((s.player_id, s.name, s.score) for s in standings),
        winner=winner,
        started_at=started,
        ended_at=now,
    )
    data = {"winner": winner, "reason": state.end_reason, "standings": _standings_view(state)}
    return state, [over, Broadcast("game_over", data)]


# -- the table ----------------------------------------------------------------


def _connected(state: QuizState) -> frozenset[str]:
    return frozenset(p.id for p in state.players if p.connected)


def _voters(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    return frozenset(pid for pid, _ in pairs)


_AFTER_RESULTS = ((QUESTION, "more rounds"), (FINAL, "last round"))

_PHASES = (
    Phase(LOBBY),
    Phase(
        QUESTION,
        duration=lambda s: s.timing.question,
        awaited=_connected,
        acted=lambda s: _voters(s.answers),
        on_enter=_enter_question,
        complete=Transition(_close_question, targets=(ELIMINATION,)),
    ),
    Phase(
        ELIMINATION,
        duration=lambda s: s.timing.elimination,
        awaited=_connected,
        acted=lambda s: _voters(s.eliminate_votes),
        complete=Transition(_close_elimination, targets=(VOTING,)),
    ),
    Phase(
        VOTING,
        duration=lambda s: s.timing.voting,
        awaited=_connected,
        acted=lambda s: _voters(s.final_votes),
        complete=Transition(_close_voting, targets=(RESULTS,)),
    ),
    Phase(
        RESULTS,
        duration=lambda s: s.timing.results,
        on_enter=_enter_results,
        complete=Transition(_close_results, targets=(QUESTION, FINAL), when=_AFTER_RESULTS),
    ),
    Phase(FINAL, on_enter=_enter_final),
)


def _seat_rows(phase: str, leave_targets: tuple[str, ...]) -> dict:
    when = ((FINAL, f"fewer than {MIN_PLAYERS} players"),) if FINAL in leave_targets else ()
    return {
        (phase, PlayerLeft): Transition(
            _leave, targets=leave_targets, guards=(_is_seated,), when=when
        ),
        (phase, PlayerDisconnected): Transition(_disconnect, guards=(_is_connected,)),
        (phase, PlayerReconnected): Transition(_reconnect, guards=(_is_disconnected,)),
    }


_ROWS: dict[tuple[str, type[Event]], Transition] = {
    (LOBBY, PlayerJoined): Transition(_join, guards=(_can_join,)),
    **_seat_rows(LOBBY, ()),
    (LOBBY, StartGame): Transition(
        _start, targets=(QUESTION,), guards=(_is_host, _enough_players, _mode_is_playable)
    ),
}
for _playing in PLAYING:
    _ROWS.update(_seat_rows(_playing, (_playing, FINAL)))
    _ROWS[(_playing, ForceAdvance)] = Transition(None, guards=(_is_host,))
_ROWS[(QUESTION, SubmitAnswer)] = Transition(
    _submit, guards=(_has_not_answered, _answer_is_a_bluff)
)
_ROWS[(ELIMINATION, VoteEliminate)] = Transition(_vote_eliminate, guards=(_has_not_voted, _votable))
_ROWS[(VOTING, VoteFinal)] = Transition(_vote_final, guards=(_has_not_voted, _votable))
_ROWS[(RESULTS, NextRound)] = Transition(
    _close_results, targets=(QUESTION, FINAL), guards=(_is_host,), when=_AFTER_RESULTS
)
_ROWS.update(_seat_rows(FINAL, ()))

#: the quiz's transition table (docs/game.md draws it with ``actors._diagram.mermaid``)
QUIZ_TABLE = TransitionTable(initial=LOBBY, phases=_PHASES, transitions=_ROWS)
QUIZ_MACHINE = PhaseMachine(QUIZ_TABLE)
del _playing


# -- views --------------------------------------------------------------------


def _deadline_ms(deadline: float | None) -> int | None:
    return None if deadline is None else round(deadline * 1000)


def _standings_view(state: QuizState) -> list[dict[str, Any]]:
    return [
        {
            "player_id": s.player_id,
            "name": s.name,
            "score": s.score,
            "correct_votes": s.correct_votes,
        }
        for s in state.standings
    ]


def _results_view(state: QuizState) -> dict[str, Any]:
    """The round's outcome, authorship and votes included (public from results on)."""
    answers = []
    for entry in state.pool:
        answers.append(
            {
                "id": entry.id,
                "text": entry.text,
                "kind": entry.kind,
                "authors": list(entry.authors),
                "eliminate_votes": [pid for pid, aid in state.eliminate_votes if aid == entry.id],
                "final_votes": [pid for pid, aid in state.final_votes if aid == entry.id],
            }
        )
    return {
        "round": state.round,
        "answers": answers,
        "eliminated": state.eliminated,
        "scores": [
            {
                "player_id": s.player_id,
                "correct_vote": s.correct_vote,
                "spotted_robot": s.spotted_robot,
                "votes_received": s.votes_received,
                "fooled": s.fooled,
                "total": s.total,
            }
            for s in state.scores
        ],
    }


def public_view(state: QuizState) -> dict[str, Any]:
    """What every client may see. Before results, no author, vote or answer kind.

    During the question phase no submitted answer appears at all (only who
    has answered); elimination and voting show the pool's texts in shuffled
    order without authors.
    """
    phase = QUIZ_TABLE.phases[state.phase]
    acted = phase.acted(state) if phase.acted is not None else frozenset()
    view: dict[str, Any] = {
        "rules": "quiz",
        "mode": state.mode,
        "phase": state.phase,
        "round": state.round,
        "rounds": state.rounds,
        "deadline_ms": _deadline_ms(state.deadline),
        "host": state.host,
        "players": [
            {
                "id": p.id,
                "name": p.name,
                "seat": p.seat,
                "connected": p.connected,
                "score": p.score,
                "acted": p.id in acted,
            }
            for p in state.players
        ],
    }
    question = state.question
    if state.phase in PLAYING and question is not None:
        view["prompt"] = question.prompt
    if state.phase in (ELIMINATION, VOTING):
        view["answers"] = [{"id": entry.id, "text": entry.text} for entry in state.pool]
    if state.phase == VOTING:
        view["eliminated"] = state.eliminated
    if state.phase == RESULTS:
        view["results"] = _results_view(state)
    if state.phase == FINAL:
        view["standings"] = _standings_view(state)
        view["winner"] = state.standings[0].player_id if state.standings else None
        view["end_reason"] = state.end_reason
    return view


def private_view(state: QuizState, player_id: str) -> dict[str, Any] | None:
    """What only ``player_id`` sees: its own answer and votes this round (None if not seated)."""
    player = state.player(player_id)
    if player is None:
        return None
    answer = next((text for pid, text in state.answers if pid == player_id), None)
    own = next((entry.id for entry in state.pool if player_id in entry.authors), None)
    return {
        "player_id": player_id,
        "host": state.host == player_id,
        "answer": answer,
        "answer_id": own,
        "eliminate_vote": next((a for pid, a in state.eliminate_votes if pid == player_id), None),
        "final_vote": next((a for pid, a in state.final_votes if pid == player_id), None),
    }


# -- parsing room RPCs --------------------------------------------------------

_METHODS: Mapping[str, tuple[type[QuizEvent], tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        # method: (event, required args, optional args)
        "start_game": (StartGame, (), ("mode",)),
        "submit_answer": (SubmitAnswer, ("text",), ()),
        "vote_eliminate": (VoteEliminate, ("answer",), ()),
        "vote_final": (VoteFinal, ("answer",), ()),
        "next_round": (NextRound, (), ()),
        "force_advance": (ForceAdvance, (), ()),
    }
)


def parse_action(player_id: str, method: str, args: Any) -> Event:
    """Turn a client's room RPC into a quiz event.

    Raises ``RuleViolation`` code ``unknown_action`` for a method the quiz
    does not have, ``bad_args`` for missing, unexpected or ill-typed args.
    """
    spec = _METHODS.get(method) if isinstance(method, str) else None
    if spec is None:
        raise RuleViolation(
            f"unknown action {method!r}; the quiz has {', '.join(_METHODS)}",
            code="unknown_action",
        )
    event_type, required, optional = spec
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise RuleViolation(
            f"{method}: args must be a map, got {type(args).__name__}", code="bad_args"
        )
    unexpected = [key for key in args if key not in required and key not in optional]
    if unexpected:
        allowed = ", ".join((*required, *optional)) or "none"
        raise RuleViolation(
            f"{method}: unexpected argument {unexpected[0]!r} (allowed: {allowed})",
            code="bad_args",
        )
    missing = [key for key in required if key not in args]
    if missing:
        raise RuleViolation(f"{method}: missing argument {missing[0]!r}", code="bad_args")
    kwargs = dict(args)
    if event_type is SubmitAnswer:
        kwargs["text"] = clean_answer(args["text"])
    if event_type is StartGame and kwargs.get("mode") is not None and kwargs["mode"] not in MODES:
        raise RuleViolation(
            f"start_game: mode must be one of {', '.join(MODES)}, got {kwargs['mode']!r}",
            code="bad_args",
        )
    return event_type(player_id, **kwargs)


# -- the Rules implementation -------------------------------------------------


def _timing(options: Mapping[str, Any]) -> Timing:
    if not isinstance(options, Mapping):
        raise RuleViolation("options must be a map", code="bad_options")
    known = {f"{phase}_seconds": phase for phase in TIMING_BOUNDS}
    values: dict[str, float] = {}
    for key, value in options.items():
        if key not in known:
            raise RuleViolation(
                f"unknown quiz option {key!r} (known: {', '.join(known)})", code="bad_options"
            )
        low, high = TIMING_BOUNDS[known[key]]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise RuleViolation(
                f"option {key} must be a number of seconds from {low:g} to {high:g}, got {value!r}",
                code="bad_options",
            )
        values[known[key]] = float(value)
    return Timing(**values)


class QuizRules:
    """The built-in party quiz as a ``Rules`` implementation.

    ``questions`` replaces the built-in set (see ``load_questions``); a set
    needs at least 8 questions for ``quiz8`` and 12 for ``quiz12``, and only
    the modes it can fill are offered. Raises ``ValueError`` for a set too
    small for any mode.
    """

    name: ClassVar[str] = "quiz"
    input_fields: ClassVar[Mapping[str, str]] = MappingProxyType({})

    def __init__(self, questions: Sequence[Question] | None = None) -> None:
        bank = builtin_questions() if questions is None else tuple(questions)
        if not all(isinstance(q, Question) for q in bank):
            raise TypeError("questions must be Question objects (see load_questions)")
        self._questions = bank
        self._modes = frozenset(mode for mode, rounds in MODES.items() if rounds <= len(bank))
        if not self._modes:
            raise ValueError(
                f"a question set needs at least {min(MODES.values())} questions, got {len(bank)}"
            )

    @property
    def questions(self) -> tuple[Question, ...]:
        return self._questions

    def modes(self) -> frozenset[str]:
        return self._modes

    def max_players(self, mode: str) -> int:
        self._check_mode(mode)
        return MAX_PLAYERS

    def _check_mode(self, mode: object) -> None:
        if mode not in self._modes:
            raise RuleViolation(
                f"unknown quiz mode {mode!r} (known: {', '.join(sorted(self._modes))})",
                code="unknown_mode",
            )

    def new_state(
        self, *, mode: str, options: Mapping[str, Any], now: float, seed: int
    ) -> QuizState:
        """A lobby with this room's questions drawn from the set by ``seed``.

        Raises ``RuleViolation`` (unknown_mode, bad_options) for a client's
        choices, ``TypeError``/``ValueError`` for a seed that is not an int
        in 0 .. 2**64 - 1 (the runtime's fault).
        """
        self._check_mode(mode)
        timing = _timing(options)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not 0 <= seed < 2**64:
            # checkpoints are msgpack, whose integers stop at 64 bits
            raise ValueError(f"seed must be in 0 .. 2**64 - 1, got {seed}")
        count = max(rounds for m, rounds in MODES.items() if m in self._modes)
        picked = sorted(
            self._questions, key=lambda q: _shuffle_key(seed, "question", normalise(q.prompt))
        )[:count]
        return QuizState(
            phase=LOBBY,
            phase_seq=0,
            deadline=None,
            mode=mode,
            seed=seed,
            timing=timing,
            questions=tuple(picked),
            created_at=float(now),
        )

    def step(self, state: QuizState, event: Event, now: float) -> tuple[QuizState, list[Action]]:
        return QUIZ_MACHINE.step(state, event, now)

    def parse_action(self, player_id: str, method: str, args: Any) -> Event:
        return parse_action(player_id, method, args)

    def accepts_players(self, state: QuizState) -> bool:
        return state.phase == LOBBY and len(state.players) < MAX_PLAYERS

    def player_entity(self, player_id: str, seed: int) -> dict[str, Any]:
        return {}

    def public_view(self, state: QuizState) -> dict[str, Any]:
        return public_view(state)

    def private_view(self, state: QuizState, player_id: str) -> dict[str, Any] | None:
        return private_view(state, player_id)

    def dump(self, state: QuizState) -> dict[str, Any]:
        return dump_state(state)

    def load(self, data: Mapping[str, Any]) -> QuizState:
        """The state ``dump`` wrote; ``ValueError`` naming the field if it is damaged."""
        state = load_state(data)
        if state.phase not in QUIZ_TABLE.phases:
            raise ValueError(f"quiz checkpoint: unknown phase {state.phase!r}")
        if len(state.questions) < state.rounds or not 0 <= state.round <= state.rounds:
            raise ValueError(
                f"quiz checkpoint: round {state.round} of {state.rounds} "
                f"with {len(state.questions)} questions"
            )
        return state
