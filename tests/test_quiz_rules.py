"""The built-in party quiz: scoring by hand, each rule and guard, views, checkpoints, questions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgpack
import pytest

from actors._diagram import mermaid
from actors._errors import InvalidTransition, RoomError, RuleViolation
from actors._logic import (
    Broadcast,
    GameOver,
    PlayerDisconnected,
    PlayerJoined,
    PlayerLeft,
    PlayerReconnected,
    StartTimer,
    TimerExpired,
)
from actors._phase import timer_name
from actors.quiz import (
    FOOLED_BY_ROBOT,
    MODES,
    PER_VOTE_RECEIVED,
    POINTS_CORRECT_VOTE,
    QUIZ_TABLE,
    SPOTTED_ROBOT,
    Entry,
    Player,
    Question,
    QuestionFileError,
    QuizRules,
    RoundScore,
    StartGame,
    SubmitAnswer,
    VoteEliminate,
    VoteFinal,
    builtin_questions,
    eliminated_entry,
    load_questions,
    parse_questions,
    rank,
    score_round,
)

RULES = QuizRules()
DOCS = Path(__file__).resolve().parent.parent / "docs" / "game.md"


class Game:
    """Drives one quiz room through the rules, one second per event by default."""

    def __init__(self, players=("p1", "p2", "p3"), *, mode="quiz8", seed=7, options=None):
        self.now = 0.0
        self.state = RULES.new_state(mode=mode, options=options or {}, now=0.0, seed=seed)
        self.actions: list = []
        for pid in players:
            self.do(PlayerJoined(pid, pid.upper()))

    def do(self, event, dt=1.0):
        self.now += dt
        self.state, self.actions = RULES.step(self.state, event, self.now)
        return self.actions

    def rpc(self, pid, method, **args):
        return self.do(RULES.parse_action(pid, method, args))

    def refused(self, event, code, error=RuleViolation):
        before = RULES.dump(self.state)
        with pytest.raises(error) as info:
            RULES.step(self.state, event, self.now)
        assert info.value.code == code, info.value
        assert RULES.dump(self.state) == before
        return info.value

    def expire(self):
        return self.do(TimerExpired(timer_name(self.state)))

    def entry(self, *, kind=None, author=None):
        return next(
            e
            for e in self.state.pool
            if (kind is None or e.kind == kind) and (author is None or author in e.authors)
        )

    def start(self):
        self.rpc(self.state.host, "start_game")
        return self


# -- scoring, computed by hand ------------------------------------------------

POOL = (
    Entry("a1", "truth", "correct"),
    Entry("a2", "robot", "decoy"),
    Entry("a3", "bluff one", "player", ("p1",)),
    Entry("a4", "bluff two", "player", ("p2", "p3")),
)


def test_point_values_are_the_documented_ones():
    assert (POINTS_CORRECT_VOTE, SPOTTED_ROBOT, PER_VOTE_RECEIVED, FOOLED_BY_ROBOT) == (
        100,
        50,
        50,
        -50,
    )
    text = DOCS.read_text("utf-8")
    for line in (
        "| correct vote | +100 |",
        "| spotted the robot | +50 |",
        "| each final vote on your answer | +50 |",
        "| fooled by the robot | -50 |",
    ):
        assert line in text


def test_score_round_by_hand():
    eliminate = [("p1", "a2"), ("p2", "a3"), ("p3", "a2"), ("p4", "a4")]
    final = [("p1", "a1"), ("p2", "a2"), ("p3", "a3"), ("p4", "a4")]
    scores = {s.player_id: s for s in score_round(POOL, eliminate, final, ["p1", "p2", "p3", "p4"])}
    # p1: correct vote 100 + spotted robot 50 + one vote on a3 (from p3) 50 = 200
    assert scores["p1"] == RoundScore("p1", 100, 50, 50, 0) and scores["p1"].total == 200
    # p2: fooled by the robot -50 + co-author of a4 voted by p4 50 = 0
    assert scores["p2"] == RoundScore("p2", 0, 0, 50, -50) and scores["p2"].total == 0
    # p3: spotted robot 50 + co-author of a4 voted by p4 50 = 100
    assert scores["p3"] == RoundScore("p3", 0, 50, 50, 0) and scores["p3"].total == 100
    # p4: voted for a player's bluff: nothing
    assert scores["p4"].total == 0


def test_score_round_ignores_players_who_left():
    final = [("p1", "a4"), ("gone", "a3"), ("p2", "a1")]
    scores = {s.player_id: s.total for s in score_round(POOL, [], final, ["p1", "p2"])}
    # p1 gets nothing for a3 (voter left); p2 gets 100 + 50 for p1's vote on a4;
    # p3 (co-author of a4) left, so no points for p3
    assert scores == {"p1": 0, "p2": 150}


def test_many_votes_on_one_answer_add_up():
    final = [("p2", "a3"), ("p3", "a3"), ("p4", "a3"), ("p5", "a3")]
    players = ["p1", "p2", "p3", "p4", "p5"]
    scores = {s.player_id: s.total for s in score_round(POOL, [], final, players)}
    assert scores == {"p1": 4 * PER_VOTE_RECEIVED, "p2": 0, "p3": 0, "p4": 0, "p5": 0}


@pytest.mark.parametrize(
    "votes, expected",
    [
        ([], None),
        ([("p1", "a1")], "a1"),
        ([("p1", "a1"), ("p2", "a2")], None),
        ([("p1", "a1"), ("p2", "a2"), ("p3", "a2")], "a2"),
        ([("p1", "a1"), ("p2", "a1"), ("p3", "a2"), ("p4", "a2"), ("p5", "a3")], None),
    ],
)
def test_elimination_most_votes_and_ties(votes, expected):
    assert eliminated_entry(votes) == expected


def test_rank_breaks_ties_by_correct_votes_then_seat():
    players = [
        Player("late", "L", seat=5, score=300, correct_votes=2),
        Player("early", "E", seat=1, score=300, correct_votes=2),
        Player("sharp", "S", seat=9, score=300, correct_votes=3),
        Player("top", "T", seat=7, score=400, correct_votes=0),
        Player("low", "W", seat=0, score=-50, correct_votes=0),
    ]
    assert [s.player_id for s in rank(players)] == ["top", "sharp", "early", "late", "low"]


def test_a_played_round_scores_like_the_hand_count():
    g = Game(("p1", "p2", "p3")).start()
    g.rpc("p1", "submit_answer", text="bluff one")
    g.rpc("p2", "submit_answer", text="bluff two")
    g.rpc("p3", "submit_answer", text="  BLUFF   two ")  # merged with p2's
    assert g.state.phase == "elimination"
    merged = g.entry(author="p2")
    assert merged.authors == ("p2", "p3") and merged.text == "bluff two"
    robot, truth, one = g.entry(kind="decoy"), g.entry(kind="correct"), g.entry(author="p1")
    g.rpc("p1", "vote_eliminate", answer=robot.id)
    g.rpc("p2", "vote_eliminate", answer=one.id)
    g.rpc("p3", "vote_eliminate", answer=robot.id)
    assert g.state.phase == "voting" and g.state.eliminated == robot.id
    g.rpc("p1", "vote_final", answer=truth.id)
    g.rpc("p2", "vote_final", answer=one.id)
    assert all(p.score == 0 for p in g.state.players)  # nothing before results
    g.rpc("p3", "vote_final", answer=one.id)
    assert g.state.phase == "results"
    # p1: 100 correct + 50 robot + 2 x 50 received = 250; p2: 0; p3: 50 robot
    assert {p.id: p.score for p in g.state.players} == {"p1": 250, "p2": 0, "p3": 50}
    assert {p.id: p.correct_votes for p in g.state.players} == {"p1": 1, "p2": 0, "p3": 0}
    results = RULES.public_view(g.state)["results"]
    assert {a["id"]: a["authors"] for a in results["answers"]}[merged.id] == ["p2", "p3"]
    assert any(isinstance(a, Broadcast) and a.event == "round_results" for a in g.actions)


# -- answers ------------------------------------------------------------------


def test_answer_equal_to_the_truth_is_refused_case_and_space_insensitively():
    g = Game().start()
    truth = g.state.question.answer
    messy = "  " + "  ".join(truth.upper().split()) + "\t"
    event = RULES.parse_action("p1", "submit_answer", {"text": messy})
    g.refused(event, "answer_is_correct")


def test_answer_equal_to_the_decoy_is_refused_without_saying_so():
    g = Game().start()
    err = g.refused(SubmitAnswer("p1", g.state.question.decoy.lower()), "answer_taken")
    assert "decoy" not in str(err) and "robot" not in str(err)


def test_one_answer_per_player_per_round():
    g = Game().start()
    g.rpc("p1", "submit_answer", text="mine")
    g.refused(SubmitAnswer("p1", "mine again"), "already_answered")
    assert RULES.private_view(g.state, "p1")["answer"] == "mine"


def test_answer_text_is_cleaned_and_bounded():
    event = RULES.parse_action("p1", "submit_answer", {"text": " a\x00b\x07 \n\t c  "})
    assert event.text == "ab c"
    for bad in ("", "   \x00\n", "x" * 81, 12, None):
        with pytest.raises(RuleViolation) as info:
            RULES.parse_action("p1", "submit_answer", {"text": bad})
        assert info.value.code == "bad_args"
    assert RULES.parse_action("p1", "submit_answer", {"text": "é" * 80}).text == "é" * 80


def test_events_validate_when_built():
    with pytest.raises(RuleViolation, match="cleaned"):
        SubmitAnswer("p1", "  untrimmed ")
    with pytest.raises(RuleViolation):
        VoteFinal("p1", 3)
    with pytest.raises(RuleViolation):
        StartGame("", None)


# -- votes ----------------------------------------------------------------------


def _at_elimination():
    g = Game().start()
    for pid in ("p1", "p2", "p3"):
        g.rpc(pid, "submit_answer", text=f"bluff of {pid}")
    assert g.state.phase == "elimination"
    return g


def test_vote_guards():
    g = _at_elimination()
    own = g.entry(author="p1").id
    g.refused(VoteEliminate("p1", own), "own_answer")
    g.refused(VoteEliminate("p1", "a99"), "unknown_answer")
    g.refused(VoteFinal("p1", g.entry(kind="correct").id), "invalid_event", InvalidTransition)
    g.rpc("p1", "vote_eliminate", answer=g.entry(kind="correct").id)
    g.refused(VoteEliminate("p1", g.entry(kind="decoy").id), "already_voted")


def test_a_final_vote_for_the_eliminated_answer_is_refused():
    g = _at_elimination()
    target = g.entry(author="p3").id
    g.rpc("p1", "vote_eliminate", answer=target)
    g.rpc("p2", "vote_eliminate", answer=target)
    g.rpc("p3", "vote_eliminate", answer=g.entry(author="p1").id)
    assert g.state.phase == "voting" and g.state.eliminated == target
    g.refused(VoteFinal("p1", target), "answer_eliminated")
    assert RULES.public_view(g.state)["eliminated"] == target


def test_tied_elimination_eliminates_nothing():
    g = _at_elimination()
    g.rpc("p1", "vote_eliminate", answer=g.entry(author="p2").id)
    g.rpc("p2", "vote_eliminate", answer=g.entry(author="p3").id)
    g.rpc("p3", "vote_eliminate", answer=g.entry(author="p1").id)
    assert g.state.phase == "voting" and g.state.eliminated is None


# -- host, seats, connections ---------------------------------------------------


def test_first_to_join_hosts_and_only_the_host_starts():
    g = Game(("p1",))
    assert g.state.host == "p1"
    g.refused(StartGame("p1"), "not_enough_players")
    g.do(PlayerJoined("p2", "Bo"))
    g.refused(StartGame("p2"), "not_host")
    g.refused(StartGame("ghost"), "unknown_player")
    g.rpc("p1", "start_game", mode="quiz12")
    assert g.state.phase == "question" and g.state.rounds == 12 and g.state.round == 1


def test_host_only_events_in_game():
    g = Game().start()
    for event in (RULES.parse_action("p2", "force_advance", {}),):
        g.refused(event, "not_host")
    g.rpc("p1", "force_advance")
    g.rpc("p1", "force_advance")
    g.rpc("p1", "force_advance")
    assert g.state.phase == "results"
    g.refused(RULES.parse_action("p2", "next_round", {}), "not_host")
    g.rpc("p1", "next_round")
    assert g.state.phase == "question" and g.state.round == 2


def test_host_leaving_passes_to_the_earliest_seat():
    g = Game(("p1", "p2", "p3", "p4"))
    g.do(PlayerLeft("p1"))
    assert g.state.host == "p2"
    g.do(PlayerLeft("p3"))
    assert g.state.host == "p2"
    g.do(PlayerJoined("p1", "back"))  # a new seat, at the end
    g.do(PlayerLeft("p2"))
    assert g.state.host == "p4"


def test_seats_only_in_the_lobby_and_at_most_eight():
    g = Game([f"p{i}" for i in range(1, 9)])
    assert not RULES.accepts_players(g.state)
    g.refused(PlayerJoined("p9", "Nine"), "room_full")
    g.refused(PlayerJoined("p1", "Again"), "already_seated")
    g.do(PlayerLeft("p8"))
    assert RULES.accepts_players(g.state)
    g.start()
    assert not RULES.accepts_players(g.state)
    g.refused(PlayerJoined("p9", "Nine"), "invalid_event", InvalidTransition)


def test_disconnected_players_are_not_waited_for():
    g = Game().start()
    g.do(PlayerDisconnected("p3"))
    g.refused(PlayerDisconnected("p3"), "already_disconnected")
    g.rpc("p1", "submit_answer", text="one")
    g.rpc("p2", "submit_answer", text="two")
    assert g.state.phase == "elimination"
    g.do(PlayerReconnected("p3"))
    g.refused(PlayerReconnected("p3"), "not_disconnected")
    g.rpc("p1", "vote_eliminate", answer=g.entry(kind="decoy").id)
    g.rpc("p2", "vote_eliminate", answer=g.entry(kind="decoy").id)
    assert g.state.phase == "elimination"  # p3 is back and awaited
    assert RULES.public_view(g.state)["players"][2]["acted"] is False


def test_a_disconnect_that_leaves_only_players_who_acted_ends_the_phase():
    g = Game().start()
    g.rpc("p1", "submit_answer", text="one")
    g.rpc("p2", "submit_answer", text="two")
    g.do(PlayerDisconnected("p3"))
    assert g.state.phase == "elimination"


def test_too_few_players_mid_game_ends_it():
    g = Game(("p1", "p2")).start()
    g.rpc("p2", "submit_answer", text="mine")
    actions = g.do(PlayerLeft("p1"))
    assert g.state.phase == "final" and g.state.end_reason == "not_enough_players"
    (over,) = [a for a in actions if isinstance(a, GameOver)]
    assert over.standings == (("p2", "P2", 0),) and over.winner == "p2"
    assert g.state.host == "p2"
    g.refused(StartGame("p2"), "invalid_event", InvalidTransition)


# -- timers and a whole game ----------------------------------------------------


def test_phase_time_limits_and_options():
    g = Game(options={"question_seconds": 60, "results_seconds": 3.5})
    actions = g.start().actions
    assert StartTimer(timer_name(g.state), g.now + 60) in actions
    assert RULES.public_view(g.state)["deadline_ms"] == round((g.now + 60) * 1000)
    durations = {}
    while g.state.phase != "final":
        durations.setdefault(g.state.phase, g.state.deadline - g.now)
        g.expire()
    assert durations == {"question": 60, "elimination": 20, "voting": 20, "results": 3.5}
    assert g.state.round == 8


@pytest.mark.parametrize(
    "options",
    [
        {"question_seconds": 9},
        {"voting_seconds": 121},
        {"results_seconds": True},
        {"elimination_seconds": "20"},
        {"elimination_seconds": float("nan")},
        {"lobby_seconds": 10},
        [],
    ],
)
def test_bad_options_are_refused(options):
    with pytest.raises(RuleViolation) as info:
        RULES.new_state(mode="quiz8", options=options, now=0.0, seed=1)
    assert info.value.code == "bad_options"


def test_unknown_modes_are_refused():
    assert RULES.modes() == frozenset(MODES)
    assert RULES.max_players("quiz12") == 8
    for call in (
        lambda: RULES.max_players("chess"),
        lambda: RULES.new_state(mode="chess", options={}, now=0.0, seed=1),
    ):
        with pytest.raises(RuleViolation) as info:
            call()
        assert info.value.code == "unknown_mode"
    with pytest.raises(ValueError, match="2\\*\\*64"):
        RULES.new_state(mode="quiz8", options={}, now=0.0, seed=-1)


def test_a_whole_twelve_round_game():
    g = Game(("p1", "p2", "p3", "p4"), mode="quiz12", seed=99).start()
    prompts = []
    while g.state.phase != "final":
        if g.state.phase == "question":
            prompts.append(g.state.question.prompt)
            for pid in ("p1", "p2", "p3", "p4"):
                g.rpc(pid, "submit_answer", text=f"{pid} guess {g.state.round}")
        elif g.state.phase == "elimination":
            for pid in ("p1", "p2", "p3", "p4"):
                g.rpc(pid, "vote_eliminate", answer=g.entry(kind="decoy").id)
        elif g.state.phase == "voting":
            for pid in ("p1", "p2", "p3"):
                g.rpc(pid, "vote_final", answer=g.entry(kind="correct").id)
            g.rpc("p4", "vote_final", answer=g.entry(author="p1").id)
        else:
            g.rpc("p1", "next_round")
    assert len(prompts) == 12 and len(set(prompts)) == 12
    (over,) = [a for a in g.actions if isinstance(a, GameOver)]
    assert over.mode == "quiz12" and over.started_at == 1 + 4 and over.ended_at == g.now
    assert [row[0] for row in over.standings] == [s.player_id for s in g.state.standings]
    assert over.winner == over.standings[0][0]
    # per round: p1 100 + 50 + 50 (p4's vote), p2 and p3 100 + 50, p4 50
    assert over.standings == (
        ("p1", "P1", 2400),
        ("p2", "P2", 1800),
        ("p3", "P3", 1800),
        ("p4", "P4", 600),
    )
    view = RULES.public_view(g.state)
    assert view["winner"] == "p1" and view["end_reason"] == "completed"


def test_the_pool_order_depends_on_seed_and_round_only():
    def pool(seed, order):
        g = Game(("p1", "p2", "p3"), seed=seed).start()
        texts = {"p1": "alpha", "p2": "beta", "p3": "gamma"}
        for pid in order:
            g.rpc(pid, "submit_answer", text=texts[pid])
        return [(e.id, e.text) for e in g.state.pool]

    assert pool(5, ["p1", "p2", "p3"]) == pool(5, ["p3", "p1", "p2"])
    orders = {tuple(text for _, text in pool(seed, ["p1", "p2", "p3"])) for seed in range(8)}
    assert len(orders) > 1


# -- views, checkpoints, parsing --------------------------------------------------


def test_public_and_private_views():
    g = Game().start()
    g.rpc("p1", "submit_answer", text="secret sauce")
    view = RULES.public_view(g.state)
    assert "secret sauce" not in json.dumps(view)
    assert [p["acted"] for p in view["players"]] == [True, False, False]
    assert view["prompt"] == g.state.question.prompt and isinstance(view["deadline_ms"], int)
    assert RULES.private_view(g.state, "p1")["answer"] == "secret sauce"
    assert RULES.private_view(g.state, "p2")["answer"] is None
    assert RULES.private_view(g.state, "ghost") is None
    msgpack.packb(view)


def test_dump_load_round_trip_and_errors():
    g = _at_elimination()
    data = RULES.dump(g.state)
    assert RULES.load(msgpack.unpackb(msgpack.packb(data))) == g.state
    assert RULES.load(json.loads(json.dumps(data))) == g.state
    broken = dict(data)
    del broken["pool"]
    with pytest.raises(ValueError, match="missing"):
        RULES.load(broken)
    with pytest.raises(ValueError, match=r"players\[0\].score"):
        RULES.load({**data, "players": [{**data["players"][0], "score": "9"}]})
    with pytest.raises(ValueError, match="format"):
        RULES.load({**data, "format": 99})
    with pytest.raises(ValueError, match="mapping"):
        RULES.load([])
    with pytest.raises(ValueError, match="unknown phase"):
        RULES.load({**data, "phase": "intermission"})
    with pytest.raises(ValueError, match="round 13 of 8"):
        RULES.load({**data, "round": 13})


@pytest.mark.parametrize(
    "method, args, code",
    [
        ("dance", {}, "unknown_action"),
        (None, {}, "unknown_action"),
        ("submit_answer", {}, "bad_args"),
        ("submit_answer", ["text"], "bad_args"),
        ("submit_answer", {"text": "ok", "extra": 1}, "bad_args"),
        ("vote_final", {"answer": 3}, "bad_args"),
        ("vote_eliminate", {"answer": ""}, "bad_args"),
        ("start_game", {"mode": "chess"}, "bad_args"),
        ("next_round", {"now": True}, "bad_args"),
    ],
)
def test_parse_action_errors(method, args, code):
    with pytest.raises(RuleViolation) as info:
        RULES.parse_action("p1", method, args)
    assert info.value.code == code
    assert str(info.value)


def test_parse_action_events():
    assert RULES.parse_action("p1", "start_game", None) == StartGame("p1")
    assert RULES.parse_action("p1", "start_game", {"mode": "quiz12"}) == StartGame("p1", "quiz12")
    assert RULES.parse_action("p2", "vote_eliminate", {"answer": "a3"}) == VoteEliminate("p2", "a3")
    assert RULES.parse_action("p2", "vote_final", {"answer": "a1"}) == VoteFinal("p2", "a1")


def test_rules_interface_constants():
    assert RULES.name == "quiz" and dict(RULES.input_fields) == {}
    assert RULES.player_entity("p1", 123) == {}


# -- question sets ----------------------------------------------------------------


def test_the_builtin_set_is_big_and_valid():
    questions = builtin_questions()
    assert len(questions) >= 40
    assert all(isinstance(q, Question) for q in questions)
    # the lobby draws 12 different questions from it
    state = RULES.new_state(mode="quiz8", options={}, now=0.0, seed=3)
    assert len(state.questions) == 12 and len(set(state.questions)) == 12


def _file(tmp_path, text, name="q.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _questions_json(n, **extra):
    items = [{"prompt": f"Prompt {i}?", "answer": f"yes {i}", "decoy": f"no {i}"} for i in range(n)]
    return json.dumps({"questions": items, **extra}, indent=2)


def test_load_questions_reads_a_valid_file(tmp_path):
    questions = load_questions(_file(tmp_path, _questions_json(12, title="mine")))
    assert len(questions) == 12 and questions[0] == Question("Prompt 0?", "yes 0", "no 0")
    rules = QuizRules(questions)
    assert rules.modes() == {"quiz8", "quiz12"}
    assert QuizRules(questions[:9]).modes() == {"quiz8"}
    with pytest.raises(ValueError, match="at least 8"):
        QuizRules(questions[:7])


@pytest.mark.parametrize(
    "text, line, field, reason",
    [
        ('{"questions": [\n  {"prompt": "p", "answer": "a",}\n]}', 2, "", "not valid JSON"),
        (
            '{"questions": [\n  {"prompt": "p",\n   "answer": "a"}\n]}',
            2,
            "questions[0].decoy",
            "is missing",
        ),
        (
            '{"questions": [{"prompt": "p", "answer": "a", "decoy": "b"},\n'
            '  {"prompt": "q", "answer": "a", "decoy": "A ", "hint": 1}]}',
            2,
            "questions[1].hint",
            "unknown field",
        ),
        (
            '{"questions": [\n\n {"prompt": "p", "answer": "Same", "decoy": "same"}]}',
            3,
            "questions[0].decoy",
            "same as the answer",
        ),
        (
            '{"questions": [{"prompt": "p", "answer": "a", "decoy": "b"},\n'
            ' {"prompt": " P ", "answer": "c", "decoy": "d"}]}',
            2,
            "questions[1].prompt",
            "same prompt as line 1",
        ),
        ('{"questions": []}', 1, "questions", "non-empty"),
        ('[{"prompt": "p"}]', 1, "", "must hold an object"),
        (
            '{"questions": [{"prompt": "p", "answer": "' + "x" * 81 + '", "decoy": "b"}]}',
            1,
            "questions[0].answer",
            "limit is 80",
        ),
        (
            '{"questions": [{"prompt": "", "answer": "a", "decoy": "b"}]}',
            1,
            "questions[0].prompt",
            "1 to 300",
        ),
        (
            '{"questions": [{"prompt": 3, "answer": "a", "decoy": "b"}]}',
            1,
            "questions[0].prompt",
            "string",
        ),
        (
            '{"questions": [{"prompt": "p", "answer": "a", "answer": "b", "decoy": "c"}]}',
            1,
            "",
            "duplicate key",
        ),
        (
            '{"questions": [{"prompt": "p", "answer": NaN, "decoy": "c"}]}',
            None,
            "",
            "not valid JSON",
        ),
        ('{"questions": [1]}', None, "questions[0]", "must be an object"),
        ('{"title": 5, "questions": [1]}', 1, "title", "must be a string"),
        (
            '{"questions": [{"prompt": "p", "answer": "a", "decoy": "b"}], "extra": 1}',
            1,
            "extra",
            "unknown field",
        ),
    ],
)
def test_question_file_errors_say_where(tmp_path, text, line, field, reason):
    path = _file(tmp_path, text)
    with pytest.raises(QuestionFileError) as info:
        load_questions(path)
    err = info.value
    assert (err.line, err.field) == (line, field), str(err)
    assert reason in err.reason
    assert str(path) in str(err)
    if line is not None:
        assert f"line {line}" in str(err)


def test_question_file_errors_for_unreadable_files(tmp_path):
    with pytest.raises(QuestionFileError, match="cannot read"):
        load_questions(tmp_path / "missing.json")
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"questions": [\n{"prompt": "caf\xe9"}]}')
    with pytest.raises(QuestionFileError, match="line 2: not UTF-8"):
        load_questions(bad)
    with pytest.raises(QuestionFileError, match="not valid JSON"):
        parse_questions("[" * 100_000)


# -- the diagram in the docs ------------------------------------------------------


def test_docs_embed_the_current_diagram():
    text = DOCS.read_text("utf-8")
    blocks = re.findall(r"```mermaid\n(.*?)```", text, flags=re.S)
    assert mermaid(QUIZ_TABLE) in blocks, (
        "docs/game.md is out of date: paste the output of `python -m actors._diagram`"
    )


def test_every_phase_and_event_is_in_the_diagram():
    diagram = mermaid(QUIZ_TABLE)
    for phase in QUIZ_TABLE.phases:
        assert f" {phase} -->" in diagram
    for _, event in QUIZ_TABLE.transitions:
        assert event.__name__ in diagram or event is TimerExpired


def test_room_errors_have_specific_codes():
    g = Game()
    err = g.refused(StartGame("p2"), "not_host")
    assert isinstance(err, RoomError) and "host" in str(err)
