"""The generic phase machine, and property tests of the quiz that runs on it.

Three parts: unit tests of ``actors._phase`` on a toy table; a totality test
(every phase x every event type, h2 style); and a model-based
``RuleBasedStateMachine`` that plays the quiz with arbitrary joins, leaves,
disconnects, answers, votes, timers and host overrides. ``make fuzz`` runs this
file with the ``fuzz`` hypothesis profile and prints how many examples ran.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from actors._errors import InvalidTransition, RoomError, RuleViolation
from actors._logic import (
    Broadcast,
    CancelTimer,
    Checkpoint,
    Event,
    GameOver,
    PlayerDisconnected,
    PlayerJoined,
    PlayerLeft,
    PlayerReconnected,
    StartTimer,
    TimerExpired,
)
from actors._phase import (
    Phase,
    PhaseComplete,
    PhaseMachine,
    TableError,
    Transition,
    TransitionTable,
    timer_name,
)
from actors.quiz import (
    MAX_PLAYERS,
    QUIZ_MACHINE,
    QUIZ_TABLE,
    ForceAdvance,
    NextRound,
    QuizRules,
    QuizState,
    StartGame,
    SubmitAnswer,
    VoteEliminate,
    VoteFinal,
    normalise,
)

# -- a toy game for the generic machine ---------------------------------------


@dataclass(frozen=True, slots=True)
class Toy:
    phase: str = "idle"
    phase_seq: int = 0
    deadline: float | None = None
    players: frozenset[str] = frozenset({"a", "b"})
    done: frozenset[str] = frozenset()
    entered: int = 0


@dataclass(frozen=True, slots=True)
class Go(Event):
    pass


@dataclass(frozen=True, slots=True)
class Act(Event):
    who: str


@dataclass(frozen=True, slots=True)
class Stop(Event):
    pass


def _no_double_act(state: Toy, event: Event) -> None:
    assert isinstance(event, Act)
    if event.who in state.done:
        raise RuleViolation("acted already", code="already_acted")


def _toy_table(overrides=None) -> TransitionTable:
    phases = (
        Phase("idle"),
        Phase(
            "play",
            duration=lambda s: 30.0,
            awaited=lambda s: s.players,
            acted=lambda s: s.done,
            on_enter=lambda s, now: (dataclasses.replace(s, entered=s.entered + 1), []),
            complete=Transition(
                lambda s, e, now: (dataclasses.replace(s, phase="over"), []), targets=("over",)
            ),
        ),
        Phase("over"),
    )
    rows = {
        ("idle", Go): Transition(
            lambda s, e, now: (dataclasses.replace(s, phase="play"), []), targets=("play",)
        ),
        ("play", Act): Transition(
            lambda s, e, now: (dataclasses.replace(s, done=s.done | {e.who}), []),
            guards=(_no_double_act,),
        ),
        ("play", Stop): Transition(None),
    }
    rows.update(overrides or {})
    return TransitionTable(initial="idle", phases=phases, transitions=rows)


TOY = PhaseMachine(_toy_table())


def test_unknown_pair_raises_invalid_transition_and_keeps_state():
    state = Toy()
    with pytest.raises(InvalidTransition) as info:
        TOY.step(state, Act("a"), 0.0)
    assert info.value.code == "invalid_event"
    assert info.value.phase == "idle" and info.value.event == "Act"
    assert state == Toy()


def test_entering_a_timed_phase_arms_its_timer_and_checkpoints():
    state, actions = TOY.step(Toy(), Go(), 100.0)
    assert state.phase == "play" and state.phase_seq == 1 and state.deadline == 130.0
    assert state.entered == 1
    assert actions == [StartTimer("phase:play:1", 130.0), Checkpoint("phase")]


def test_leaving_a_timed_phase_cancels_its_timer():
    state, _ = TOY.step(Toy(), Go(), 0.0)
    state2, actions = TOY.step(state, TimerExpired(timer_name(state)), 31.0)
    assert state2.phase == "over" and state2.deadline is None and state2.phase_seq == 2
    assert actions == [CancelTimer("phase:play:1"), Checkpoint("phase")]
    assert state.phase == "play"  # the old state is untouched


def test_a_stale_timer_is_refused_not_ignored():
    state, _ = TOY.step(Toy(), Go(), 0.0)
    with pytest.raises(RuleViolation) as info:
        TOY.step(state, TimerExpired("phase:play:0"), 31.0)
    assert info.value.code == "stale_timer"


def test_everyone_acting_ends_the_phase_early():
    state, _ = TOY.step(Toy(), Go(), 0.0)
    state, actions = TOY.step(state, Act("a"), 1.0)
    assert state.phase == "play" and actions == []
    assert TOY.awaiting(state) == {"b"}
    state, actions = TOY.step(state, Act("b"), 2.0)
    assert state.phase == "over"
    assert actions == [CancelTimer("phase:play:1"), Checkpoint("phase")]


def test_nobody_awaited_never_ends_a_phase_early():
    state, _ = TOY.step(Toy(players=frozenset()), Go(), 0.0)
    assert state.phase == "play"
    assert not TOY.everyone_acted(state)


def test_a_guard_refusal_keeps_the_state():
    state, _ = TOY.step(Toy(players=frozenset({"a", "b", "c"})), Go(), 0.0)
    state, _ = TOY.step(state, Act("a"), 1.0)
    with pytest.raises(RuleViolation) as info:
        TOY.step(state, Act("a"), 2.0)
    assert info.value.code == "already_acted"
    assert state.done == {"a"}


def test_an_ending_row_runs_the_completion():
    state, _ = TOY.step(Toy(), Go(), 0.0)
    state, actions = TOY.step(state, Stop(), 5.0)
    assert state.phase == "over"
    assert CancelTimer("phase:play:1") in actions


def test_phase_complete_cannot_be_fed_from_outside():
    state, _ = TOY.step(Toy(), Go(), 0.0)
    with pytest.raises(InvalidTransition):
        TOY.step(state, PhaseComplete("forced"), 1.0)


@pytest.mark.parametrize("now", [float("nan"), float("inf"), "1", None, True])
def test_now_must_be_a_finite_number(now):
    with pytest.raises(ValueError, match="finite"):
        TOY.step(Toy(), Go(), now)


def test_a_handler_that_leaves_its_targets_is_a_table_bug():
    machine = PhaseMachine(
        _toy_table(
            {("idle", Go): Transition(lambda s, e, now: (dataclasses.replace(s, phase="over"), []))}
        )
    )
    with pytest.raises(TableError, match="moved to 'over'"):
        machine.step(Toy(), Go(), 0.0)


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: TransitionTable(initial="nowhere", phases=[Phase("a")], transitions={}),
            "initial",
        ),
        (
            lambda: TransitionTable(initial="a", phases=[Phase("a"), Phase("a")], transitions={}),
            "twice",
        ),
        (
            lambda: TransitionTable(
                initial="a", phases=[Phase("a", duration=lambda s: 1.0)], transitions={}
            ),
            "no complete",
        ),
        (
            lambda: TransitionTable(
                initial="a",
                phases=[Phase("a")],
                transitions={("a", Go): Transition(lambda s, e, n: (s, []), targets=("b",))},
            ),
            "unknown phase 'b'",
        ),
        (
            lambda: TransitionTable(
                initial="a",
                phases=[Phase("a")],
                transitions={("a", TimerExpired): Transition(None)},
            ),
            "owns",
        ),
        (
            lambda: TransitionTable(
                initial="a", phases=[Phase("a")], transitions={("a", Go): Transition(None)}
            ),
            "no complete",
        ),
    ],
)
def test_inconsistent_tables_are_refused(build, message):
    with pytest.raises(TableError, match=message):
        build()


# -- shared checks on quiz states ---------------------------------------------

RULES = QuizRules()
TIMED = {name for name, phase in QUIZ_TABLE.phases.items() if phase.duration is not None}


def strings_in(value) -> list[str]:
    """Every string (keys included) anywhere inside a plain data structure."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings_in(k), *strings_in(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in strings_in(item)]
    return []


def assert_plain(value, where="view") -> None:
    """Plain msgpack-able data: str-keyed dicts, lists, str/int/bool/None (no floats)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: non-str key {key!r}"
            assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_plain(item, f"{where}[{index}]")
    else:
        assert value is None or isinstance(value, str | int | bool), f"{where}: {value!r}"


def check_state(state: QuizState) -> None:
    """Invariants every quiz state must satisfy, whatever happened before."""
    ids = [p.id for p in state.players]
    assert len(ids) == len(set(ids)) and len(ids) <= MAX_PLAYERS
    seated = set(ids)
    for pairs in (state.answers, state.eliminate_votes, state.final_votes):
        voters = [pid for pid, _ in pairs]
        assert len(voters) == len(set(voters)), f"two entries for one player: {pairs}"
        assert set(voters) <= seated, "a left player still counts"
    connected = {p.id for p in state.players if p.connected}
    assert QUIZ_MACHINE.awaiting(state) <= connected
    assert not QUIZ_MACHINE.everyone_acted(state), "a finished phase did not end"
    assert (state.deadline is not None) == (state.phase in TIMED)
    assert state.host in seated if seated else state.host is None
    if state.players:
        # the first to join hosts; when the host leaves, the earliest seat takes over
        assert state.host == min(state.players, key=lambda p: p.seat).id
    pool_ids = [entry.id for entry in state.pool]
    assert len(pool_ids) == len(set(pool_ids))
    assert len({normalise(entry.text) for entry in state.pool}) == len(pool_ids)
    for _, entry_id in (*state.eliminate_votes, *state.final_votes):
        assert entry_id in pool_ids
    # checkpoints round-trip and are plain data
    dumped = RULES.dump(state)
    assert RULES.load(msgpack.unpackb(msgpack.packb(dumped))) == state
    # the public view is plain, has no floats and hides what is not revealed yet
    view = RULES.public_view(state)
    assert_plain(view)
    texts = strings_in(view)
    if state.phase == "question":
        for _, answer in state.answers:
            assert not any(answer in text for text in texts), f"answer {answer!r} leaked"
    if state.phase in ("question", "elimination", "voting"):
        assert "results" not in view
        for entry in view.get("answers", []):
            assert set(entry) == {"id", "text"}, "authorship or kind shown before results"
    for pid in ids:
        private = RULES.private_view(state, pid)
        assert_plain(private)
        assert private["answer"] == dict(state.answers).get(pid)


# -- totality: every phase x every event type ---------------------------------


class Foreign(Event):
    """An event no rule set knows."""


def _drive(events, *, seed=7, mode="quiz8"):
    state = RULES.new_state(mode=mode, options={}, now=0.0, seed=seed)
    for event in events:
        state, _ = RULES.step(state, event, 1.0)
    return state


def _own(state: QuizState, pid: str) -> str | None:
    return next((e.id for e in state.pool if pid in e.authors), None)


def _other(state: QuizState, pid: str) -> str:
    return next(e.id for e in state.pool if pid not in e.authors and e.id != state.eliminated)


def phase_samples() -> dict[str, QuizState]:
    """One or more representative states per phase, with a disconnected player."""
    seat = [PlayerJoined(p, p.upper()) for p in ("p1", "p2", "p3", "p4")]
    lobby = _drive([*seat, PlayerDisconnected("p4")])
    question, _ = RULES.step(lobby, StartGame("p1"), 2.0)
    question, _ = RULES.step(question, SubmitAnswer("p2", "made up"), 3.0)
    elimination, _ = RULES.step(question, ForceAdvance("p1"), 4.0)
    elimination, _ = RULES.step(elimination, VoteEliminate("p2", _other(elimination, "p2")), 5.0)
    voting, _ = RULES.step(elimination, ForceAdvance("p1"), 6.0)
    voting, _ = RULES.step(voting, VoteFinal("p3", _other(voting, "p3")), 7.0)
    results, _ = RULES.step(voting, ForceAdvance("p1"), 8.0)
    final = results
    while final.phase != "final":
        final, _ = RULES.step(final, TimerExpired(timer_name(final)), 9.0)
    abandoned = _drive(
        [PlayerJoined("p1", "A"), PlayerJoined("p2", "B"), StartGame("p1"), PlayerLeft("p2")]
    )
    return {
        "lobby-empty": RULES.new_state(mode="quiz8", options={}, now=0.0, seed=1),
        "lobby": lobby,
        "question": question,
        "elimination": elimination,
        "voting": voting,
        "results": results,
        "final": final,
        "final-abandoned": abandoned,
    }


def event_samples(state: QuizState) -> list[Event]:
    """Valid and invalid payloads of every event type, from hosts and others."""
    question = state.question
    pool = [entry.id for entry in state.pool] or ["a1"]
    events: list[Event] = [
        PlayerJoined("p9", "Nia"),
        PlayerJoined("p1", "again"),
        PlayerJoined("", "empty id"),
        PlayerLeft("p1"),
        PlayerLeft("p2"),
        PlayerLeft("ghost"),
        PlayerDisconnected("p2"),
        PlayerDisconnected("p4"),
        PlayerReconnected("p4"),
        PlayerReconnected("p2"),
        TimerExpired(timer_name(state)),
        TimerExpired("phase:question:999"),
        StartGame("p1"),
        StartGame("p2"),
        StartGame("p1", "quiz12"),
        StartGame("p1", "chess"),
        StartGame("ghost"),
        SubmitAnswer("p1", "a brand new bluff"),
        SubmitAnswer("p2", "another bluff"),
        SubmitAnswer("ghost", "who am i"),
        NextRound("p1"),
        NextRound("p2"),
        ForceAdvance("p1"),
        ForceAdvance("p3"),
        ForceAdvance("ghost"),
        PhaseComplete("forced"),
        Foreign(),
    ]
    if question is not None:
        events.append(SubmitAnswer("p3", question.answer.upper()))
        events.append(SubmitAnswer("p3", question.decoy))
    for pid, entry_id in itertools.product(("p1", "p2", "p4", "ghost"), [*pool, "zz"]):
        events.append(VoteEliminate(pid, entry_id))
        events.append(VoteFinal(pid, entry_id))
    return events


SAMPLES = phase_samples()


def test_samples_cover_every_phase():
    assert {s.phase for s in SAMPLES.values()} == set(QUIZ_TABLE.phases)
    assert {type(e) for e in event_samples(SAMPLES["voting"])} >= {
        event for _, event in QUIZ_TABLE.transitions
    }


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_totality_every_event_in_every_phase(name):
    state = SAMPLES[name]
    for event in event_samples(state):
        before = RULES.dump(state)
        known = (state.phase, type(event)) in QUIZ_TABLE.transitions
        try:
            new, actions = RULES.step(state, event, 50.0)
        except InvalidTransition:
            assert not known, f"{event} has a row in {state.phase} but was refused as unknown"
            assert RULES.dump(state) == before
            continue
        except RoomError as exc:
            assert known, f"{event} in {state.phase} should be InvalidTransition"
            assert isinstance(exc, RuleViolation) and exc.code != "rule_violation"
            assert RULES.dump(state) == before
            continue
        assert known
        assert RULES.dump(state) == before, "step mutated the old state"
        assert new.phase in QUIZ_TABLE.successors(state.phase) or any(
            new.phase in QUIZ_TABLE.successors(mid) for mid in QUIZ_TABLE.successors(state.phase)
        )
        check_state(new)
        msgpack.packb([dataclasses.asdict(a) for a in actions if isinstance(a, Broadcast)])


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=90)


@settings(deadline=None)
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    pid=st.sampled_from(["p1", "p2", "p3", "p4", "ghost", ""]),
    method=st.sampled_from(
        [
            "start_game",
            "submit_answer",
            "vote_eliminate",
            "vote_final",
            "next_round",
            "force_advance",
        ]
    )
    | st.text(max_size=12),
    args=st.none()
    | _SCALARS
    | st.dictionaries(
        st.sampled_from(["text", "answer", "mode", "other"]) | st.text(max_size=5),
        _SCALARS | st.sampled_from(["a1", "a2", "a3", "quiz12"]) | st.lists(_SCALARS, max_size=3),
        max_size=3,
    ),
    now=st.floats(0, 1e6),
)
def test_totality_arbitrary_rpcs(name, pid, method, args, now):
    """Any RPC a client can send either parses and steps, or fails with a typed error."""
    state = SAMPLES[name]
    before = RULES.dump(state)
    try:
        event = RULES.parse_action(pid, method, args)
    except RuleViolation as exc:
        assert exc.code in ("bad_args", "unknown_action")
        return
    try:
        new, _ = RULES.step(state, event, now)
    except RoomError as exc:
        assert exc.code not in ("room_error", "rule_violation")
        assert RULES.dump(state) == before
        return
    check_state(new)


# -- model-based: the quiz under arbitrary play -------------------------------

COUNTS = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_fuzz_counts():
    """Print how much the state machine ran (``make fuzz`` shows it with -s)."""
    yield
    print(
        f"\nphase-machine fuzz: {COUNTS['examples']} examples, {COUNTS['steps']} steps, "
        f"{COUNTS['accepted']} accepted, {COUNTS['finals']} games over"
    )


PIDS = [f"p{i}" for i in range(1, 11)]
#: who acts: 0-9 the host, 10-29 a seated player, 30-39 anyone (seated or not)
ACTOR = st.integers(0, 39)
names = st.text(alphabet="ABCDEFGHIJKLMNOP", min_size=1, max_size=8)


class QuizGame(RuleBasedStateMachine):
    """Plays the quiz with arbitrary events and checks it against a small model."""

    def __init__(self) -> None:
        super().__init__()
        COUNTS["examples"] += 1
        self.state: QuizState | None = None
        self.now = 0.0
        self.path: list[str] = []
        self.fresh = itertools.count()

    @initialize(
        mode=st.sampled_from(["quiz8", "quiz12"]),
        seed=st.integers(0, 2**64 - 1),
        question_seconds=st.sampled_from([10, 45, 300]),
        seated=st.integers(0, 4),
    )
    def open_room(self, mode, seed, question_seconds, seated):
        self.state = RULES.new_state(
            mode=mode, options={"question_seconds": question_seconds}, now=0.0, seed=seed
        )
        self.path = [self.state.phase]
        for pid in PIDS[:seated]:
            self.step(PlayerJoined(pid, pid.upper()), expect=True)

    def who(self, ref: int) -> str:
        seated = [p.id for p in self.state.players]
        if ref < 10 and self.state.host is not None:
            return self.state.host
        if ref < 30 and seated:
            return seated[ref % len(seated)]
        return PIDS[ref % len(PIDS)]

    # -- the step every rule goes through --

    def step(self, event: Event, expect: bool | None = None) -> list | None:
        """Step ``event``; ``expect`` True/False says the model's prediction."""
        COUNTS["steps"] += 1
        before = self.state
        frozen = RULES.dump(before)
        try:
            new, actions = RULES.step(before, event, self.now)
        except RoomError as exc:
            assert RULES.dump(before) == frozen, "a refused event changed the state"
            assert expect is not True, f"{event} refused ({exc.code}: {exc}), model says legal"
            return None
        assert expect is not False, f"{event} accepted, model says it is not"
        assert RULES.dump(before) == frozen, "step mutated the old state"
        COUNTS["accepted"] += 1
        check_state(new)
        self.check_step(before, new, actions)
        self.state = new
        return actions

    def check_step(self, before: QuizState, new: QuizState, actions: list) -> None:
        hops = sum(isinstance(a, Checkpoint) for a in actions)
        phase = before.phase
        reachable = {phase}
        for _ in range(hops):
            reachable = {nxt for p in reachable for nxt in QUIZ_TABLE.successors(p) if nxt != p}
        assert new.phase in reachable, f"{before.phase} -> {new.phase} in {hops} hops"
        if hops:
            self.path.append(new.phase)
        assert (hops == 0) == (new.phase == before.phase)
        # scores change only when entering results
        old_scores = {p.id: p.score for p in before.players}
        changed = [p.id for p in new.players if p.id in old_scores and p.score != old_scores[p.id]]
        if changed:
            assert new.phase == "results" and before.phase != "results"
        # timers: a new timed phase is armed at now + its duration, the old one cancelled
        starts = [a for a in actions if isinstance(a, StartTimer)]
        cancels = [a for a in actions if isinstance(a, CancelTimer)]
        if hops:
            assert (timer_name(before) in [c.name for c in cancels]) == (before.phase in TIMED)
            if new.phase in TIMED:
                assert starts[-1] == StartTimer(timer_name(new), new.deadline)
                seconds = getattr(new.timing, new.phase)
                assert new.deadline == pytest.approx(self.now + seconds)
        else:
            assert not starts and not cancels
        # a game over exactly when entering final, with every player ranked once
        overs = [a for a in actions if isinstance(a, GameOver)]
        assert len(overs) == (1 if new.phase == "final" and before.phase != "final" else 0)
        for over in overs:
            COUNTS["finals"] += 1
            assert sorted(pid for pid, _, _ in over.standings) == sorted(p.id for p in new.players)
            assert [score for _, _, score in over.standings] == sorted(
                (score for _, _, score in over.standings), reverse=True
            )
        # no broadcast leaks an answer of the question phase
        if new.phase == "question":
            texts = strings_in([dict(a.data) for a in actions if isinstance(a, Broadcast)])
            for _, answer in new.answers:
                assert not any(answer in text for text in texts)

    # -- helpers for predictions --

    def seated(self, pid) -> bool:
        return self.state.player(pid) is not None

    def host_acts(self, pid) -> bool:
        return self.state.host == pid and self.seated(pid)

    # -- rules --

    @rule(pid=ACTOR, name=names)
    def join(self, pid, name):
        pid = PIDS[pid % len(PIDS)]
        legal = (
            self.state.phase == "lobby"
            and not self.seated(pid)
            and len(self.state.players) < MAX_PLAYERS
        )
        assert RULES.accepts_players(self.state) == (
            self.state.phase == "lobby" and len(self.state.players) < MAX_PLAYERS
        )
        first = not self.state.players
        if self.step(PlayerJoined(pid, name), expect=legal) and first:
            assert self.state.host == pid

    @rule(pid=ACTOR)
    def leave(self, pid):
        pid = self.who(pid)
        was_host = self.state.host == pid
        if self.step(PlayerLeft(pid), expect=self.seated(pid)) is not None and was_host:
            rest = self.state.players
            assert self.state.host == (min(rest, key=lambda p: p.seat).id if rest else None)

    @rule(pid=ACTOR)
    def disconnect(self, pid):
        pid = self.who(pid)
        player = self.state.player(pid)
        self.step(PlayerDisconnected(pid), expect=player is not None and player.connected)

    @rule(pid=ACTOR)
    def reconnect(self, pid):
        pid = self.who(pid)
        player = self.state.player(pid)
        self.step(PlayerReconnected(pid), expect=player is not None and not player.connected)

    @rule(pid=ACTOR, mode=st.sampled_from([None, "quiz8", "quiz12", "chess"]))
    def start_game(self, pid, mode):
        pid = self.who(pid)
        args = {} if mode is None else {"mode": mode}
        try:
            event = RULES.parse_action(pid, "start_game", args)
        except RuleViolation as exc:
            assert mode == "chess" and exc.code == "bad_args"
            return
        legal = self.state.phase == "lobby" and self.host_acts(pid) and len(self.state.players) >= 2
        self.step(event, expect=legal)

    @rule(
        pid=ACTOR,
        kind=st.sampled_from(["fresh", "fresh", "copy", "correct", "decoy"]),
        noise=st.text(alphabet=" \t\nxyz\x00\x07", max_size=6),
    )
    def answer(self, pid, kind, noise):
        pid = self.who(pid)
        question = self.state.question
        if kind == "fresh" or question is None:
            text = f"{noise}zq{next(self.fresh)}q{noise}"
        elif kind == "copy" and self.state.answers:
            text = self.state.answers[0][1].upper()
        elif kind == "correct":
            text = f" {question.answer.swapcase()} "
        else:
            text = question.decoy
        event = RULES.parse_action(pid, "submit_answer", {"text": text})
        key = normalise(event.text)
        legal = (
            self.state.phase == "question"
            and self.seated(pid)
            and pid not in dict(self.state.answers)
            and key not in (normalise(question.answer), normalise(question.decoy))
        )
        self.step(event, expect=legal)

    def vote(self, pid, pick, method):
        pool = self.state.pool
        answer = pool[pick % len(pool)].id if pool and pick >= 0 else "a99"
        event = RULES.parse_action(pid, method, {"answer": answer})
        phase = "elimination" if method == "vote_eliminate" else "voting"
        votes = self.state.eliminate_votes if phase == "elimination" else self.state.final_votes
        entry = self.state.entry(answer)
        legal = (
            self.state.phase == phase
            and self.seated(pid)
            and pid not in dict(votes)
            and entry is not None
            and pid not in entry.authors
            and not (phase == "voting" and answer == self.state.eliminated)
        )
        self.step(event, expect=legal)

    @rule(pid=ACTOR, pick=st.integers(-1, 20))
    def vote_eliminate(self, pid, pick):
        pid = self.who(pid)
        self.vote(pid, pick, "vote_eliminate")

    @rule(pid=ACTOR, pick=st.integers(-1, 20))
    def vote_final(self, pid, pick):
        pid = self.who(pid)
        self.vote(pid, pick, "vote_final")

    @rule(picks=st.lists(st.integers(0, 20), min_size=8, max_size=8))
    def everyone_acts(self, picks):
        """Each seated player makes a legal move of the phase, in seat order."""
        for player, pick in zip(self.state.players, picks, strict=False):
            phase = self.state.phase
            if phase == "question":
                text = f"zq{next(self.fresh)}q"
                self.step(
                    SubmitAnswer(player.id, text), expect=player.id not in dict(self.state.answers)
                )
            elif phase in ("elimination", "voting"):
                choices = [
                    e.id
                    for e in self.state.pool
                    if player.id not in e.authors
                    and not (phase == "voting" and e.id == self.state.eliminated)
                ]
                votes = (
                    self.state.eliminate_votes if phase == "elimination" else self.state.final_votes
                )
                kind = VoteEliminate if phase == "elimination" else VoteFinal
                self.step(
                    kind(player.id, choices[pick % len(choices)]),
                    expect=player.id not in dict(votes),
                )

    @rule(seconds=st.floats(0, 120, allow_nan=False))
    def time_passes(self, seconds):
        self.now += seconds

    @rule(late=st.booleans())
    def timer_fires(self, late):
        """The runtime fires the current timer (on time, or late: arbitrary timing)."""
        if self.state.deadline is None:
            self.step(TimerExpired("phase:lobby:0"), expect=False)
            return
        self.now = max(self.now, self.state.deadline + (7.5 if late else 0.0))
        self.step(TimerExpired(timer_name(self.state)), expect=True)

    @rule(steps=st.integers(1, 40))
    def fast_forward(self, steps):
        """Let many timers expire in a row, so games reach their final."""
        for _ in range(steps):
            if self.state.deadline is None:
                return
            self.now = max(self.now, self.state.deadline)
            self.step(TimerExpired(timer_name(self.state)), expect=True)

    @rule(seq=st.integers(0, 200))
    def stale_timer(self, seq):
        assume(seq != self.state.phase_seq)
        name = f"phase:{self.state.phase}:{seq}"
        self.step(TimerExpired(name), expect=False)

    @rule(pid=ACTOR)
    def next_round(self, pid):
        pid = self.who(pid)
        legal = self.state.phase == "results" and self.host_acts(pid)
        self.step(RULES.parse_action(pid, "next_round", {}), expect=legal)

    @rule(pid=ACTOR)
    def force_advance(self, pid):
        pid = self.who(pid)
        legal = self.state.phase in TIMED and self.host_acts(pid)
        self.step(RULES.parse_action(pid, "force_advance", None), expect=legal)

    @precondition(lambda self: self.state is not None and self.state.phase == "final")
    @rule()
    def final_is_settled(self):
        standings = self.state.standings
        assert [s.score for s in standings] == sorted((s.score for s in standings), reverse=True)

    # -- invariants --

    @invariant()
    def state_is_sound(self):
        if self.state is None:
            return
        check_state(self.state)
        assert self.path[0] == "lobby"
        for a, b in itertools.pairwise(self.path):
            assert b in QUIZ_TABLE.successors(a) or any(
                b in QUIZ_TABLE.successors(mid) for mid in QUIZ_TABLE.successors(a)
            ), f"illegal path {self.path}"


QuizGame.TestCase.settings = settings(deadline=None)
TestQuizGame = QuizGame.TestCase
