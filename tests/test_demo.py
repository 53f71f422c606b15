"""``relay demo``: bots play whole games over real sockets; the report and exit status."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from actors.quiz import TIMING_BOUNDS, normalise
from protocol import CborCodec, Event, MsgpackCodec, RpcResult, State
from relay._cli import build_parser
from relay._demo import FrameMeter, _Bot, _game, _MeteredCodec, phase_options, run_demo

ROOT = Path(__file__).resolve().parent.parent

STANDINGS = re.compile(r"^Room (\w{4}) \(quiz8, (msgpack|cbor)\): final standings$")
RANK = re.compile(r"^  (\d+)\. (\S+) +(-?\d+)$")


def _demo(*flags: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", "demo", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_plays_every_game_to_the_end():
    proc = _demo("--rooms", "2", "--players", "3", "--speed", "20", "--no-live", "--seed", "7")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    rooms = {}
    for i, line in enumerate(lines):
        match = STANDINGS.match(line)
        if match:
            ranks = [RANK.match(row) for row in lines[i + 1 : i + 4]]
            assert all(ranks), lines[i : i + 4]
            assert [int(m.group(1)) for m in ranks] == [1, 2, 3]
            scores = [int(m.group(3)) for m in ranks]
            assert scores == sorted(scores, reverse=True)
            rooms[match.group(1)] = match.group(2)
    # one room per codec, both with their standings
    assert sorted(rooms.values()) == ["cbor", "msgpack"], proc.stdout
    assert "2/2 games finished, 6 bots" in proc.stdout
    assert "0 bot errors" in proc.stdout


def test_unknown_mode_is_a_clear_error():
    proc = _demo("--mode", "quiz99", "--no-live", timeout=30.0)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "relay demo: unknown mode 'quiz99' (known: quiz12, quiz8)" in proc.stderr
    assert "final standings" not in proc.stdout


def test_bad_player_count_is_a_clear_error():
    proc = _demo("--players", "9", "--no-live", timeout=30.0)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "--players must be 2..8" in proc.stderr


def test_duration_stops_early_and_names_the_unfinished_room():
    proc = _demo("--rooms", "1", "--players", "2", "--duration", "1.5", "--no-live", "--seed", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    match = re.search(
        r"^Room (\w{4}) \(quiz8, msgpack\): did not finish \(it was in round", proc.stdout, re.M
    )
    assert match, proc.stdout
    assert f"rooms not finished: {match.group(1)} (stopped by --duration" in proc.stderr
    assert "0/1 games finished" in proc.stdout


def test_ctrl_c_stops_the_demo_with_a_report():
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "demo", "--rooms", "1", "--players", "2", "--no-live"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once the relay listens and the bots start
        assert first.startswith("relay demo: relay on ws://127.0.0.1:"), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err
    assert "did not finish" in out
    assert "(interrupted after" in err


def test_phase_options_are_short_and_legal():
    fast = phase_options(1.0)
    assert fast == {f"{p}_seconds": low for p, (low, _) in TIMING_BOUNDS.items()}
    slow = phase_options(0.25)
    for phase, (low, high) in TIMING_BOUNDS.items():
        assert slow[f"{phase}_seconds"] == min(high, 4 * low)


def test_meter_tells_deltas_from_keyframes_and_ignores_messages():
    for codec in (MsgpackCodec(), CborCodec()):
        meter = FrameMeter()
        metered = _MeteredCodec(codec, meter)
        state = {"game": {"phase": "question", "round": 3, "players": [{"id": "p1"}]}}
        keyframe = codec.encode(State(10, 0, state))
        delta = codec.encode(State(11, 1, {"game": {"round": 4}}))
        with_msgs = codec.encode(
            State(12, 1, {"game": {"round": 4}}, (RpcResult(1, True), Event("private", {})))
        )
        for data in (keyframe, delta, with_msgs):
            assert metered.decode(data) == codec.decode(data)
        assert (meter.keyframes, meter.keyframe_bytes) == (1, len(keyframe))
        # the messages riding along are not counted as state bytes
        assert (meter.delta_frames, meter.delta_bytes) == (2, 2 * len(delta))
        assert metered.encode(State(1, 0, state)) == codec.encode(State(1, 0, state))


def test_a_bot_that_breaks_a_rule_is_reported_and_fails_the_run(monkeypatch, capsys):
    play_fair = _Bot._choices

    def vote_for_own_answer(self, client, *, exclude):
        # the second bot votes for its own answer, which the room refuses (own_answer)
        if self.index == 1 and self._answer is not None:
            mine = normalise(self._answer)
            return [e["id"] for e in _game(client)["answers"] if normalise(e["text"]) == mine]
        return play_fair(self, client, exclude=exclude)

    monkeypatch.setattr(_Bot, "_choices", vote_for_own_answer)
    args = build_parser().parse_args(
        ["demo", "--rooms", "1", "--players", "3", "--speed", "20", "--no-live", "--seed", "5"]
    )
    assert run_demo(args) == 1
    out, err = capsys.readouterr()
    assert "bot 2 failed: vote_eliminate was refused: own_answer" in out
    assert "  bot 2: vote_eliminate was refused: own_answer" in out
    # the other two play on to the end
    assert re.search(
        r"^Room \w{4} \(quiz8, msgpack\): final standings\n  1\. .*\n  2\. ", out, re.M
    )
    assert "1/1 games finished, 3 bots" in out
    assert "relay demo: 1 bot error(s); see above" in err
