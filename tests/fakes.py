"""In-memory stand-ins for the room runtime's seams: a Link, a client's state mirror, sinks.

``FakeLink`` implements ``actors._link.Link`` with plain lists: frames pushed
by the test are delivered at the room's next ``receive_nowait`` (after a
round trip through the link's real codec, so they are wire-valid), and every
message the room hands to ``send_nowait`` is kept, with the trio time it was
sent at. ``ClientMirror`` decodes them the way a client SDK does and keeps the
mirrored public state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import trio

from actors._errors import InvalidTransition, RuleViolation
from actors._logic import (
    Action,
    Broadcast,
    CancelTimer,
    Checkpoint,
    Event,
    GameOver,
    PlayerDisconnected,
    PlayerJoined,
    PlayerLeft,
    PlayerReconnected,
    SendTo,
    StartTimer,
    StopRoom,
    TimerExpired,
)
from protocol import Codec, Frame, Joined, MsgpackCodec, State, apply


class FakeLink:
    """A member connection held in memory. ``is_ready = False`` simulates a slow reader."""

    def __init__(self, player_id: str, codec: Codec | None = None) -> None:
        self.codec = codec or MsgpackCodec()
        self.player_id = player_id
        self.inbox: list[Frame] = []
        self.sent: list[bytes] = []
        self.sent_at: list[float] = []
        self.is_ready = True
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.detached: str | None = None
        self.receive_calls = 0
        self._closed = False

    # -- the Link protocol --------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def receive_nowait(self) -> list[Frame]:
        self.receive_calls += 1
        frames, self.inbox = self.inbox, []
        return frames

    def ready(self) -> bool:
        return self.is_ready and not self._closed

    def send_nowait(self, data: bytes) -> None:
        if self._closed:
            raise AssertionError("send_nowait on a closed link")
        self.sent.append(bytes(data))
        self.sent_at.append(trio.current_time())

    def close_nowait(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self.close_code = int(code)
            self.close_reason = reason

    def detach(self, reason: str) -> None:
        self.detached = reason

    # -- test helpers -------------------------------------------------------

    def push(self, *frames: Frame) -> None:
        """Queue frames as if the client had sent them (through the codec, like the wire)."""
        for frame in frames:
            self.inbox.append(self.codec.decode(self.codec.encode(frame)))

    def drop(self) -> None:
        """The peer went away."""
        self._closed = True

    def frames(self) -> list[Frame]:
        return [self.codec.decode(data) for data in self.sent]

    def messages(self) -> list[Frame]:
        """Every message frame the room sent, unwrapped from state frames, in order."""
        out: list[Frame] = []
        for frame in self.frames():
            if type(frame) is State:
                out.extend(frame.msgs)
            elif type(frame) is not Joined:
                out.append(frame)
        return out


class ClientMirror:
    """A client's copy of the public state, built only from what a link received.

    Checks what a client SDK relies on: a delta's base tick (``tick - back``)
    is exactly the tick of the last state the client was sent.
    """

    def __init__(self, link: FakeLink) -> None:
        self.link = link
        self.state: dict[str, Any] | None = None
        self.tick = -1
        self.read = 0
        self.keyframes = 0
        self.deltas = 0
        self.msgs: list[Frame] = []

    def update(self) -> dict[str, Any] | None:
        for data in self.link.sent[self.read :]:
            frame = self.link.codec.decode(data)
            if type(frame) is Joined:
                self.state, self.tick = dict(frame.state), frame.tick
                self.keyframes += 1
            elif type(frame) is State:
                assert frame.tick > self.tick, (frame.tick, self.tick)
                if frame.back == 0:
                    self.state = frame.delta
                    self.keyframes += 1
                else:
                    assert self.state is not None, "a delta before any keyframe"
                    assert frame.tick - frame.back == self.tick, (frame.tick, frame.back, self.tick)
                    self.state = apply(self.state, frame.delta)
                    self.deltas += 1
                self.tick = frame.tick
                self.msgs.extend(frame.msgs)
            else:
                self.msgs.append(frame)
        self.read = len(self.link.sent)
        return self.state


class MemorySink:
    """A checkpoint and game-record sink that keeps everything in lists."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[str, int, bytes, float]] = []
        self.journal: list[tuple[str, int, bytes, float]] = []
        self.games: list[tuple[str, Any]] = []

    def submit_snapshot_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None:
        self.snapshots.append((code, tick, data, ttl))

    def submit_journal_nowait(self, code: str, tick: int, data: bytes, ttl: float) -> None:
        self.journal.append((code, tick, data, ttl))

    def submit_game_nowait(self, code: str, record: Any) -> None:
        self.games.append((code, record))


# -- a tiny rule set exercising every action --------------------------------


@dataclass(frozen=True, slots=True)
class ToyState:
    phase: str = "lobby"
    count: int = 0
    players: tuple[str, ...] = ()
    secrets: tuple[tuple[str, int], ...] = ()
    fired: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ToyAction(Event):
    player_id: str
    method: str
    args: Any = None


_TOY_METHODS = frozenset(
    {
        "bump",
        "start",
        "next",
        "boom",
        "stop",
        "whisper",
        "shout",
        "secret",
        "save",
        "finish",
        "refuse",
        "cancel",
    }
)


class ToyRules:
    """Mode "toy", 4 seats. Room RPCs named after what they make the runtime do:
    ``start`` arms "round" (+10 s) and "aux" (+20 s) and leaves the lobby;
    ``next`` moves to phase "play2" arming only "round2" (+5 s); ``boom``
    raises RuntimeError (a rule set bug); ``refuse`` raises a RuleViolation."""

    name = "toy"
    input_fields = MappingProxyType({"x": "f32", "label": "str", "ready": "bool", "score": "int"})

    def __init__(self, seats: int = 4) -> None:
        self.seats = seats
        self.steps = 0

    def modes(self) -> frozenset[str]:
        return frozenset({"toy"})

    def max_players(self, mode: str) -> int:
        return self.seats

    def new_state(self, *, mode: str, options: Any, now: float, seed: int) -> ToyState:
        if options.get("bad"):
            raise RuleViolation("bad options", code="invalid_options")
        return ToyState()

    def step(self, state: ToyState, event: Event, now: float) -> tuple[ToyState, list[Action]]:
        self.steps += 1
        if isinstance(event, PlayerJoined):
            return replace(state, players=(*state.players, event.player_id)), []
        if isinstance(event, PlayerLeft):
            players = tuple(p for p in state.players if p != event.player_id)
            return replace(state, players=players), []
        if isinstance(event, (PlayerDisconnected, PlayerReconnected)):
            return state, []
        if isinstance(event, TimerExpired):
            return replace(state, phase="done", fired=(*state.fired, event.name)), [
                Broadcast("timer", {"name": event.name})
            ]
        assert isinstance(event, ToyAction)
        method, pid = event.method, event.player_id
        if method == "bump":
            return replace(state, count=state.count + 1), []
        if method == "start":
            return replace(state, phase="play"), [
                StartTimer("round", now + 10),
                StartTimer("aux", now + 20),
                Checkpoint("phase"),
            ]
        if method == "next":
            return replace(state, phase="play2"), [StartTimer("round2", now + 5)]
        if method == "cancel":
            return state, [CancelTimer("round")]
        if method == "boom":
            raise RuntimeError("boom")
        if method == "stop":
            return state, [StopRoom(event.args or "game over")]
        if method == "whisper":
            return state, [SendTo(event.args, "whisper", {"from": pid})]
        if method == "shout":
            return state, [Broadcast("shout", {"from": pid})]
        if method == "secret":
            secrets = dict(state.secrets)
            secrets[pid] = secrets.get(pid, 0) + 1
            return replace(state, secrets=tuple(sorted(secrets.items()))), []
        if method == "save":
            return state, [Checkpoint("manual")]
        if method == "finish":
            standings = tuple((p, p, 1) for p in state.players)
            return state, [GameOver("toy", standings, None, 0.0, now)]
        assert method == "refuse"
        raise RuleViolation("refused", code="not_allowed")

    def parse_action(self, player_id: str, method: str, args: Any) -> Event:
        if method not in _TOY_METHODS:
            raise InvalidTransition("any", method)
        return ToyAction(player_id, method, args)

    def accepts_players(self, state: ToyState) -> bool:
        return state.phase == "lobby"

    def player_entity(self, player_id: str, seed: int) -> dict[str, Any]:
        return {"x": 0.0, "label": "", "ready": False, "score": 0}

    def public_view(self, state: ToyState) -> dict[str, Any]:
        return {"phase": state.phase, "count": state.count, "fired": list(state.fired)}

    def private_view(self, state: ToyState, player_id: str) -> dict[str, Any] | None:
        secret = dict(state.secrets).get(player_id)
        return None if secret is None else {"secret": secret}

    def dump(self, state: ToyState) -> dict[str, Any]:
        return {
            "phase": state.phase,
            "count": state.count,
            "players": list(state.players),
            "secrets": [list(s) for s in state.secrets],
            "fired": list(state.fired),
        }

    def load(self, data: Any) -> ToyState:
        return ToyState(
            phase=data["phase"],
            count=data["count"],
            players=tuple(data["players"]),
            secrets=tuple((p, n) for p, n in data["secrets"]),
            fired=tuple(data["fired"]),
        )
