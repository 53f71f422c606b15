"""A generic phase machine: a transition table with per-phase timers and early ends.

Pure logic only: no trio, no clock, no I/O. A rule set describes its game as a
``TransitionTable`` and steps it with ``PhaseMachine.step(state, event, now)``.

Theory of operation
-------------------

A game is in exactly one *phase* at a time (``state.phase``). What may happen
next is written down in one table, keyed by ``(phase, event type)``::

    (phase, type(event)) -> Transition(guards, handler, targets)

Stepping an event looks the pair up. A pair that is not in the table raises
``InvalidTransition``: an event the current phase does not expect is an error
that someone hears about, never something silently dropped. Each guard of the
entry may raise ``RuleViolation`` with a specific code (``not_host``, ...);
then the handler computes the new state and a list of actions (broadcasts,
private messages, timers, checkpoints) for the runtime to carry out. The
handler may move to one of the entry's ``targets`` and nowhere else; an entry
without targets stays in its phase.

States are immutable (frozen dataclasses, tuples). ``step`` builds a new state
and never touches the old one, so when anything raises, the caller still
holds the old state, unchanged: there is nothing to roll back.

A phase may be *timed*. Entering it arms a state timeout (gen_statem style):
``StartTimer(name, now + duration)`` with an absolute deadline that is also
kept in ``state.deadline``. Timer names carry a per-phase-entry serial number
(``state.phase_seq``), so an expiry that belongs to an earlier phase, or an
earlier visit of the same phase, is recognised as stale (``RuleViolation``
code ``stale_timer``) instead of ending the wrong phase. Leaving a timed phase
emits ``CancelTimer`` for its timer. Every phase change emits ``Checkpoint``.

A timed phase ends through its ``complete`` transition, which must move to
another phase. Three things end it:

* its timer expiring (``TimerExpired`` with the current timer's name; the
  table adds this row to every timed phase by itself);
* any table entry whose handler is ``None`` (for example a host's
  force-advance), after that entry's guards pass;
* everyone having acted: after every step, if the phase defines ``awaited``
  (the players it waits for, typically the connected, seated ones) and
  ``acted``, and ``awaited`` is non-empty and contained in ``acted``, the phase
  completes at once. An empty ``awaited`` (nobody connected) never ends a
  phase early: the timer does, so the game does not race through rounds
  while everyone is away.

The completion handler receives a ``PhaseComplete`` event whose ``reason`` is
``"timeout"``, ``"forced"`` or ``"all_acted"``. ``PhaseComplete`` is internal:
stepping one from outside raises ``InvalidTransition`` like any event that has
no row. Completions cascade (a new phase whose players have all already acted
ends too), bounded by the number of phases.

What a state must provide: the machine reads ``phase`` (str), ``phase_seq``
(int) and ``deadline`` (float or None) and sets them with
``dataclasses.replace``; everything else belongs to the rule set.

A table that contradicts itself (unknown target, timed phase without a
completion, ...) raises ``TableError`` when it is built; a handler that moves
somewhere its entry does not allow raises ``TableError`` when it runs. Both
are bugs in the rule set, never a client's fault.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from ._errors import InvalidTransition, RuleViolation
from ._logic import Action, CancelTimer, Checkpoint, Event, StartTimer, TimerExpired

__all__ = [
    "Edge",
    "Phase",
    "PhaseComplete",
    "PhaseMachine",
    "PhasedState",
    "TableError",
    "Transition",
    "TransitionTable",
    "timer_name",
]


class TableError(Exception):
    """A rule set's transition table is inconsistent, or a handler broke it.

    This is a bug in the rule set (the server's fault), never a client's.
    """


class PhasedState(Protocol):
    """The fields the machine reads and writes on a rule set's state."""

    @property
    def phase(self) -> str: ...

    @property
    def phase_seq(self) -> int: ...

    @property
    def deadline(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class PhaseComplete(Event):
    """Internal event handed to a phase's ``complete`` handler.

    ``reason`` is ``"timeout"``, ``"forced"`` or ``"all_acted"``.
    """

    reason: str


Handler = Callable[[Any, Event, float], tuple[Any, Sequence[Action]]]
Guard = Callable[[Any, Event], None]
EnterHook = Callable[[Any, float], tuple[Any, Sequence[Action]]]


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table: check ``guards``, run ``handler``, land in ``targets``.

    ``handler=None`` means "end the current phase now" through the phase's
    ``complete`` transition (its targets are then taken from it). An empty
    ``targets`` means the handler stays in its phase. ``label`` names the edge
    in the generated diagram (default: the event class name); ``when`` adds a
    condition per target, as ``(target, "in words")`` pairs, to the diagram.
    """

    handler: Handler | None = None
    targets: tuple[str, ...] = ()
    guards: tuple[Guard, ...] = ()
    label: str | None = None
    when: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Phase:
    """A phase of the game and its timing.

    ``duration(state)`` (seconds) makes the phase timed. ``awaited(state)`` and
    ``acted(state)`` (player ids) enable the early end when everyone awaited
    has acted. ``on_enter(state, now)`` runs after the phase is entered and
    must not change the phase. ``complete`` ends the phase (required when the
    phase is timed or can end early).
    """

    name: str
    duration: Callable[[Any], float] | None = None
    awaited: Callable[[Any], frozenset[str]] | None = None
    acted: Callable[[Any], frozenset[str]] | None = None
    on_enter: EnterHook | None = None
    complete: Transition | None = None


@dataclass(frozen=True, slots=True)
class Edge:
    """An arrow of the phase diagram: ``source`` to ``target`` on ``label``, if ``condition``."""

    source: str
    target: str
    label: str
    condition: str = ""


def timer_name(state: PhasedState) -> str:
    """The name of the state timeout armed when ``state`` entered its phase."""
    return f"phase:{state.phase}:{state.phase_seq}"


def _timer_is_current(state: Any, event: Event) -> None:
    assert isinstance(event, TimerExpired)
    expected = timer_name(state)
    if event.name != expected:
        raise RuleViolation(
            f"timer {event.name!r} is not armed in phase {state.phase!r} "
            f"(the current timer is {expected!r})",
            code="stale_timer",
        )


class TransitionTable:
    """The validated, immutable table of a rule set.

    ``phases`` in the order the diagram lists them; ``initial`` is where a new
    game starts; ``transitions`` maps ``(phase name, event class)`` to a
    ``Transition``. Building the table checks it and raises ``TableError``
    on any inconsistency.
    """

    def __init__(
        self,
        *,
        initial: str,
        phases: Sequence[Phase],
        transitions: Mapping[tuple[str, type[Event]], Transition],
    ) -> None:
        by_name: dict[str, Phase] = {}
        for phase in phases:
            if phase.name in by_name:
                raise TableError(f"phase {phase.name!r} is defined twice")
            by_name[phase.name] = phase
        if initial not in by_name:
            raise TableError(f"initial phase {initial!r} is not a phase of the table")
        for phase in phases:
            self._check_phase(phase, by_name)

        rows: dict[tuple[str, type[Event]], Transition] = {}
        for (name, event_type), row in transitions.items():
            if name not in by_name:
                raise TableError(f"row ({name!r}, {event_type.__name__}) names an unknown phase")
            if not (isinstance(event_type, type) and issubclass(event_type, Event)):
                raise TableError(f"row ({name!r}, {event_type!r}): the key is not an Event class")
            if event_type is PhaseComplete or event_type is TimerExpired:
                raise TableError(
                    f"row ({name!r}, {event_type.__name__}): the machine owns this event"
                )
            rows[(name, event_type)] = self._normalise(by_name[name], event_type, row, by_name)
        for phase in phases:
            if phase.duration is not None:
                assert phase.complete is not None
                rows[(phase.name, TimerExpired)] = Transition(
                    handler=None,
                    targets=phase.complete.targets,
                    guards=(_timer_is_current,),
                    label="timeout",
                    when=phase.complete.when,
                )
        self.initial = initial
        self.phases: Mapping[str, Phase] = MappingProxyType(by_name)
        self.transitions: Mapping[tuple[str, type[Event]], Transition] = MappingProxyType(rows)

    @staticmethod
    def _check_phase(phase: Phase, by_name: Mapping[str, Phase]) -> None:
        if (phase.awaited is None) != (phase.acted is None):
            raise TableError(f"phase {phase.name!r}: awaited and acted go together")
        needs_complete = phase.duration is not None or phase.awaited is not None
        if needs_complete and phase.complete is None:
            raise TableError(f"phase {phase.name!r} can end but has no complete transition")
        if phase.complete is None:
            return
        if phase.complete.handler is None:
            raise TableError(f"phase {phase.name!r}: the complete transition needs a handler")
        if not phase.complete.targets or phase.name in phase.complete.targets:
            raise TableError(f"phase {phase.name!r}: complete must move to another phase")
        for target in phase.complete.targets:
            if target not in by_name:
                raise TableError(f"phase {phase.name!r}: complete targets unknown {target!r}")

    @staticmethod
    def _normalise(
        phase: Phase, event_type: type[Event], row: Transition, by_name: Mapping[str, Phase]
    ) -> Transition:
        where = f"row ({phase.name!r}, {event_type.__name__})"
        if row.handler is None:
            if phase.complete is None:
                raise TableError(f"{where} ends the phase, but the phase has no complete")
            if row.targets and row.targets != phase.complete.targets:
                raise TableError(f"{where}: an ending row takes the targets of complete")
            return dataclasses.replace(
                row, targets=phase.complete.targets, when=row.when or phase.complete.when
            )
        for target in row.targets:
            if target not in by_name:
                raise TableError(f"{where} targets unknown phase {target!r}")
        if not row.targets:
            return dataclasses.replace(row, targets=(phase.name,))
        return row

    def lookup(self, phase: str, event: Event) -> Transition:
        """The row for ``(phase, type(event))``.

        Raises ``InvalidTransition`` when there is none: the current phase
        does not accept this event.
        """
        row = self.transitions.get((phase, type(event)))
        if row is None:
            raise InvalidTransition(phase, type(event).__name__)
        return row

    def edges(self) -> Iterator[Edge]:
        """Every arrow of the phase diagram, in table order.

        A row yields one edge per target; a phase that can end early yields
        its completion edges labelled ``all acted``.
        """
        for (source, event_type), row in self.transitions.items():
            when = dict(row.when)
            for target in row.targets:
                label = row.label or event_type.__name__
                yield Edge(source, target, label, when.get(target, ""))
        for phase in self.phases.values():
            if phase.awaited is not None and phase.complete is not None:
                when = dict(phase.complete.when)
                for target in phase.complete.targets:
                    yield Edge(phase.name, target, "all acted", when.get(target, ""))

    def successors(self, phase: str) -> frozenset[str]:
        """Phases reachable from ``phase`` in one step (itself included if a row stays)."""
        return frozenset(edge.target for edge in self.edges() if edge.source == phase)


class PhaseMachine:
    """Steps states through a ``TransitionTable``; pure, with time passed in."""

    def __init__(self, table: TransitionTable) -> None:
        self.table = table

    def step(self, state: Any, event: Event, now: float) -> tuple[Any, list[Action]]:
        """Apply ``event`` at time ``now``; return the new state and the actions.

        Errors: ``InvalidTransition`` when the phase has no row for the event,
        ``RuleViolation`` when a guard refuses it, ``ValueError`` when ``now``
        is not a finite number (the runtime's fault). On any error ``state``
        is untouched and stays the current state.
        """
        if not isinstance(event, Event):
            raise InvalidTransition(state.phase, type(event).__name__, "not an Event")
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        now = float(now)
        row = self.table.lookup(state.phase, event)
        for guard in row.guards:
            guard(state, event)
        if row.handler is None:
            reason = "timeout" if isinstance(event, TimerExpired) else "forced"
            new, actions = self._complete(state, reason, now)
        else:
            new, actions = self._apply(state, row, event, now, must_move=False)
        return self._settle(new, actions, now)

    def awaiting(self, state: Any) -> frozenset[str]:
        """The players the current phase still waits for (empty if it waits for no one)."""
        phase = self.table.phases[state.phase]
        if phase.awaited is None or phase.acted is None:
            return frozenset()
        return phase.awaited(state) - phase.acted(state)

    def everyone_acted(self, state: Any) -> bool:
        """True when the current phase may end early: all awaited players have acted."""
        phase = self.table.phases[state.phase]
        if phase.awaited is None or phase.acted is None:
            return False
        awaited = phase.awaited(state)
        return bool(awaited) and awaited <= phase.acted(state)

    # -- internals -----------------------------------------------------------

    def _complete(self, state: Any, reason: str, now: float) -> tuple[Any, list[Action]]:
        row = self.table.phases[state.phase].complete
        if row is None:
            raise TableError(f"phase {state.phase!r} has no complete transition")
        return self._apply(state, row, PhaseComplete(reason), now, must_move=True)

    def _apply(
        self, state: Any, row: Transition, event: Event, now: float, *, must_move: bool
    ) -> tuple[Any, list[Action]]:
        assert row.handler is not None
        new, handler_actions = row.handler(state, event, now)
        actions = list(handler_actions)
        if new.phase not in row.targets:
            raise TableError(
                f"handler for {type(event).__name__} in {state.phase!r} moved to "
                f"{new.phase!r}; the table allows {row.targets}"
            )
        if new.phase == state.phase:
            if must_move:
                raise TableError(f"complete of phase {state.phase!r} did not leave it")
            return new, actions
        return self._change_phase(state, new, actions, now), actions

    def _change_phase(self, old: Any, new: Any, actions: list[Action], now: float) -> Any:
        if self.table.phases[old.phase].duration is not None:
            actions.append(CancelTimer(timer_name(old)))
        new = dataclasses.replace(new, phase_seq=old.phase_seq + 1, deadline=None)
        phase = self.table.phases[new.phase]
        if phase.on_enter is not None:
            entered, enter_actions = phase.on_enter(new, now)
            if entered.phase != new.phase or entered.phase_seq != new.phase_seq:
                raise TableError(f"on_enter of {new.phase!r} changed the phase")
            new = entered
            actions.extend(enter_actions)
        if phase.duration is not None:
            seconds = float(phase.duration(new))
            if not (math.isfinite(seconds) and seconds > 0):
                raise TableError(f"phase {new.phase!r} has a bad duration {seconds!r}")
            new = dataclasses.replace(new, deadline=now + seconds)
            actions.append(StartTimer(timer_name(new), new.deadline))
        actions.append(Checkpoint(reason="phase"))
        return new

    def _settle(self, state: Any, actions: list[Action], now: float) -> tuple[Any, list[Action]]:
        # Each early end lands in a phase nobody has acted in yet, so this
        # normally runs once; the bound turns a looping table into a clear bug.
        for _ in range(len(self.table.phases) + 1):
            if not self.everyone_acted(state):
                return state, actions
            state, more = self._complete(state, "all_acted", now)
            actions.extend(more)
        raise TableError(f"early phase ends did not settle (stuck in {state.phase!r})")
