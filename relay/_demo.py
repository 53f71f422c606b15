"""``relay demo``: a relay in this process and bots playing party quizzes against it.

The bots are ordinary SDK clients (``relay.client``) over real WebSockets, so
the demo exercises the whole path: handshake, codecs, rooms, ticks, deltas.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import signal
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError

from actors.quiz import MAX_PLAYERS, MIN_PLAYERS, MODES, TIMING_BOUNDS, normalise
from protocol import Codec, Frame, ProtocolError, State

from ._config import Config, ConfigError
from ._server import Relay, RelayStartupError
from .client import ClientError, RelayClient, RpcError, connect

__all__ = ["DemoError", "FrameMeter", "run_demo"]

#: one codec per room, alternately, so that both are exercised
CODEC_CYCLE = ("msgpack", "cbor")
#: think time ranges (seconds, before ``--speed``) per phase; the phase ends
#: early once every bot acted, so these set the pace of the demo
THINK = {"question": (0.8, 3.0), "elimination": (0.4, 1.8), "voting": (0.4, 1.8)}
#: the host lets everyone read the results this long, then calls ``next_round``
RESULTS_PAUSE = 1.5
#: the host waits this long once everyone is seated before starting
START_PAUSE = 0.5
#: how long the host waits for the other bots to be seated
SEATING_TIMEOUT = 15.0
#: the view refreshes this often (seconds)
REFRESH = 0.25
#: rates are averaged over this many seconds
RATE_WINDOW = 2.0
#: plain mode prints the relay's totals this often (seconds)
TOTALS_EVERY = 5.0
#: bots get this long to close their connections when the demo ends
CLOSE_TIMEOUT = 3.0

#: refusals that only mean the phase moved on while the bot was thinking
_LATE = frozenset({"invalid_event", "already_answered", "already_voted"})
#: refusals of a bluff that happens to be the true or the robot answer: try another word
_RETRY_BLUFF = frozenset({"answer_is_correct", "answer_taken"})

BLUFFS = (
    "a committee",
    "moonbeam",
    "Belgium",
    "a lighthouse",
    "jellybean",
    "the walrus",
    "copper",
    "elbows",
    "penguins",
    "1776",
    "Mars",
    "Atlantis",
    "banjo",
    "quokka",
    "thimble",
    "Venice",
    "seven",
    "marmalade",
    "a conspiracy",
    "wobble",
    "Norway",
    "pickles",
    "Galileo",
    "zinc",
    "a bouquet",
    "tuesday",
    "the Alps",
    "lemonade",
    "a quorum",
    "Beethoven",
    "squid",
    "eleven",
)


class DemoError(Exception):
    """The demo cannot run as asked (a bad flag, a port in use...); the message says why."""


# -- measuring frames ----------------------------------------------------------


@dataclass(slots=True)
class FrameMeter:
    """Sizes of the state frames one client received: deltas and keyframes apart.

    The SDK's ``ClientStatistics`` counts only totals; the delta-vs-keyframe
    ratio needs each state frame's size, which ``_MeteredCodec`` records here.
    A state frame that carries messages (RPC results, events) is counted as
    the size it would have without them, so the ratio compares state alone.
    """

    delta_frames: int = 0
    delta_bytes: int = 0
    keyframes: int = 0
    keyframe_bytes: int = 0

    def record(self, nbytes: int, *, keyframe: bool) -> None:
        if keyframe:
            self.keyframes += 1
            self.keyframe_bytes += nbytes
        else:
            self.delta_frames += 1
            self.delta_bytes += nbytes


class _MeteredCodec:
    """A client's codec that measures every state frame it decodes, then hands it on."""

    def __init__(self, codec: Codec, meter: FrameMeter) -> None:
        self._codec = codec
        self.meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._codec, name)

    def encode(self, frame: Frame) -> bytes:
        return self._codec.encode(frame)

    def decode(self, data: bytes | bytearray | memoryview) -> Frame:
        frame = self._codec.decode(data)
        if type(frame) is State:
            size = len(data)
            if frame.msgs:
                try:
                    size = len(self._codec.encode(State(frame.tick, frame.back, frame.delta)))
                except ProtocolError:
                    return frame  # not measurable; the frame itself is fine
            self.meter.record(size, keyframe=frame.back == 0)
        return frame


def keyframe_size(client: RelayClient) -> int | None:
    """What a keyframe of ``client``'s mirrored state costs on its codec, in bytes.

    Keyframes are rare on a healthy relay (a join's ``Joined`` carries the
    state), so the demo samples what one would weigh instead of waiting.
    """
    if not client.state or client.tick < 0:
        return None
    codec = client.codec
    inner = codec._codec if isinstance(codec, _MeteredCodec) else codec
    try:
        return len(inner.encode(State(client.tick, 0, client.state)))
    except ProtocolError:
        return None


# -- bots ------------------------------------------------------------------------


class _BotFailure(Exception):
    """A bot cannot go on; the message says what it was waiting for or what was refused."""


def _game(client: RelayClient) -> dict[str, Any]:
    game = client.state.get("game")
    return game if isinstance(game, dict) else {}


def _phase_key(client: RelayClient) -> tuple[Any, Any]:
    game = _game(client)
    return game.get("round"), game.get("phase")


def _seated(client: RelayClient) -> int:
    players = _game(client).get("players")
    return len(players) if isinstance(players, list) else 0


def _describe(exc: BaseException) -> str:
    """One line for an error, whatever nursery wrapped it."""
    leaves = list(_leaves(exc))
    if len(leaves) == 1:
        leaf = leaves[0]
        if isinstance(leaf, ConnectionClosed):
            reason = leaf.reason
            if reason is None:
                return "the connection closed"
            return f"the relay closed the connection ({reason.code} {reason.reason or ''})".strip()
        if isinstance(leaf, HandshakeError):
            return f"the WebSocket handshake failed: {leaf}"
        if isinstance(leaf, _BotFailure | ClientError | DemoError | RelayStartupError):
            return str(leaf)
        text = str(leaf)
        return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__
    return "; ".join(_describe(leaf) for leaf in leaves)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


@dataclass(eq=False)
class _Bot:
    """One bot: a client that plays the room's game to the end, then stays seated."""

    index: int
    rng: random.Random
    speed: float
    meter: FrameMeter = field(default_factory=FrameMeter)
    status: str = "starting"  # starting, lobby, playing, final, failed, stopped
    client: RelayClient | None = None
    error: str | None = None
    late: int = 0  # actions the room refused because the phase had already moved on
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _answer: str | None = None

    @property
    def is_host(self) -> bool:
        return self.index == 0

    @property
    def settled(self) -> bool:
        return self.status in ("final", "failed", "stopped")

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.closed is None

    async def run(self, room: _RoomRun, url: str) -> None:
        """Play until the game is over or the demo stops; never raises an Exception."""
        try:
            async with connect(url, codec=room.codec, client_name="roomwire-demo") as client:
                client.codec = _MeteredCodec(client.codec, self.meter)  # type: ignore[assignment]
                self.client = client
                # the demo ends by cancelling this scope: the connection then
                # closes with a proper close handshake
                with self.scope:
                    await self._seat(client, room)
                    if self.status == "stopped":
                        return
                    await self._play(client, room)
                    self.status = "final"
                    if room.final is None:
                        room.final = dict(_game(client))
                    await trio.sleep_forever()  # stay seated: the view shows the room
        except Exception as exc:
            if self.status in ("final", "stopped"):
                return  # a failure while closing after the game does not matter
            self.status = "failed"
            self.error = _describe(exc)
        finally:
            if self.is_host:
                room.code_ready.set()  # never leave the other bots waiting for a code

    async def _seat(self, client: RelayClient, room: _RoomRun) -> None:
        if self.is_host:
            room.code = await client.create(room.mode, **room.options)
            room.code_ready.set()
        else:
            await room.code_ready.wait()
            if room.code is None:
                self.status = "stopped"  # the host could not create the room
                return
            await client.join(room.code)
        self.status = "lobby"

    async def _play(self, client: RelayClient, room: _RoomRun) -> None:
        done: tuple[Any, Any] | None = None
        while True:
            key = _phase_key(client)
            phase = key[1]
            if phase == "final":
                return
            if key != done:
                done = key
                if phase != "lobby":
                    self.status = "playing"
                await self._act(client, room, phase, key)
                continue  # the state may have moved on while the bot thought
            try:
                await client.wait_for(
                    lambda c, key=key: _phase_key(c) != key, timeout=room.stall_timeout
                )
            except trio.TooSlowError:
                raise _BotFailure(
                    f"no progress for {room.stall_timeout:g} s in phase {phase} of round {key[0]}"
                ) from None

    async def _think(self, low: float, high: float) -> None:
        await trio.sleep(self.rng.uniform(low, high) / self.speed)

    async def _act(self, client: RelayClient, room: _RoomRun, phase: Any, key: Any) -> None:
        if phase == "lobby":
            if self.is_host:
                await self._start(client, room)
            return
        if phase == "results":
            if self.is_host:
                await trio.sleep(RESULTS_PAUSE / self.speed)
                if _phase_key(client) == key:
                    await self._call(client, "next_round", None)
            return
        if phase not in THINK:
            return
        if phase == "question":
            self._answer = None  # a new round: last round's answer is no longer in the pool
        await self._think(*THINK[phase])
        if _phase_key(client) != key or self._acted(client):
            return
        if phase == "question":
            await self._submit(client)
        elif phase == "elimination":
            choices = self._choices(client, exclude=None)
            await self._call(client, "vote_eliminate", {"answer": self.rng.choice(choices)})
        else:
            choices = self._choices(client, exclude=_game(client).get("eliminated"))
            await self._call(client, "vote_final", {"answer": self.rng.choice(choices)})

    async def _start(self, client: RelayClient, room: _RoomRun) -> None:
        try:
            await client.wait_for(lambda c: _seated(c) >= room.size, timeout=SEATING_TIMEOUT)
        except trio.TooSlowError:
            pass  # a bot that could not join says why itself; play with the others
        if _seated(client) < MIN_PLAYERS:
            raise _BotFailure(
                f"only {_seated(client)} of {room.size} bots were seated after "
                f"{SEATING_TIMEOUT:g} s; the quiz needs {MIN_PLAYERS}"
            )
        await trio.sleep(START_PAUSE / self.speed)
        await self._call(client, "start_game", None)

    def _acted(self, client: RelayClient) -> bool:
        for player in _game(client).get("players") or ():
            if player.get("id") == client.player_id:
                return bool(player.get("acted"))
        return False

    async def _submit(self, client: RelayClient) -> None:
        """Bluff: a word from the list; one that is the true or robot answer is refused."""
        words = list(BLUFFS)
        self.rng.shuffle(words)
        for word in words[:8]:
            refused = await self._call(client, "submit_answer", {"text": word}, _RETRY_BLUFF)
            if refused is None:
                self._answer = word
                return
            if refused not in _RETRY_BLUFF:
                return  # too late for this round
        raise _BotFailure("eight bluffs in a row were refused as the true or the robot answer")

    def _choices(self, client: RelayClient, *, exclude: Any) -> list[str]:
        """Pool ids this bot may vote for: never its own answer (nor ``exclude``)."""
        mine = normalise(self._answer) if self._answer is not None else None
        choices = [
            entry["id"]
            for entry in _game(client).get("answers") or ()
            if entry.get("id") != exclude and normalise(str(entry.get("text", ""))) != mine
        ]
        if not choices:
            raise _BotFailure("the answer pool has nothing this bot may vote for")
        return choices

    async def _call(
        self,
        client: RelayClient,
        method: str,
        args: Any,
        expected: frozenset[str] = frozenset(),
    ) -> str | None:
        """A room RPC. Returns None when accepted, the code of an expected or late refusal;
        raises ``_BotFailure`` for any other refusal (the bot broke a rule: a bug)."""
        try:
            await client.rpc("room", method, args)
        except RpcError as exc:
            if exc.code in expected:
                return exc.code
            if exc.code in _LATE:
                self.late += 1
                return exc.code
            raise _BotFailure(f"{method} was refused: {exc}") from None
        return None


# -- rooms and rates ----------------------------------------------------------------


class _Rate:
    """The rate of a growing counter over the last ``RATE_WINDOW`` seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()

    def update(self, now: float, value: float) -> float | None:
        samples = self._samples
        samples.append((now, value))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        then, old = samples[0]
        if now - then <= 0:
            return None
        return (value - old) / (now - then)


@dataclass(eq=False)
class _RoomRun:
    """One room of the demo: its bots, its code once created, and what the view shows."""

    index: int
    mode: str
    codec: str
    options: dict[str, float]
    bots: list[_Bot]
    stall_timeout: float
    code: str | None = None
    code_ready: trio.Event = field(default_factory=trio.Event)
    final: dict[str, Any] | None = None
    frames_rate: _Rate = field(default_factory=_Rate)
    bytes_rate: _Rate = field(default_factory=_Rate)
    key_samples: int = 0
    key_bytes: int = 0

    @property
    def size(self) -> int:
        return len(self.bots)

    @property
    def name(self) -> str:
        return self.code or f"#{self.index + 1}"

    @property
    def over(self) -> bool:
        return all(bot.settled for bot in self.bots)

    @property
    def finished(self) -> bool:
        return self.final is not None and self.final.get("end_reason") == "completed"

    def errors(self) -> list[str]:
        return [f"bot {b.index + 1}: {b.error}" for b in self.bots if b.error is not None]

    def mirror(self) -> RelayClient | None:
        """The first connected bot's client (the host's, while it is there)."""
        for bot in self.bots:
            if bot.connected and bot.client is not None and bot.client.state:
                return bot.client
        return None


@dataclass(frozen=True, slots=True)
class RoomRow:
    """One line of the view: a room as its bots see it."""

    name: str
    codec: str
    mode: str
    phase: str
    round: int
    rounds: int
    connected: int
    seated: int
    frames_per_s: float | None
    bytes_per_s: float | None
    delta_ratio: float | None
    errors: int
    winner: str | None


def _row(room: _RoomRun, now: float) -> RoomRow:
    client = room.mirror()
    game = _game(client) if client is not None else (room.final or {})
    players = game.get("players") or []
    if client is not None:
        size = keyframe_size(client)
        if size is not None:
            room.key_samples += 1
            room.key_bytes += size
    clients = [b.client for b in room.bots if b.client is not None]
    live = sum(1 for b in room.bots if b.connected)
    frames = room.frames_rate.update(now, sum(c.stats.frames_received for c in clients))
    nbytes = room.bytes_rate.update(now, sum(c.stats.bytes_received for c in clients))
    delta_frames = sum(b.meter.delta_frames for b in room.bots)
    delta_bytes = sum(b.meter.delta_bytes for b in room.bots)
    key_count = room.key_samples + sum(b.meter.keyframes for b in room.bots)
    key_bytes = room.key_bytes + sum(b.meter.keyframe_bytes for b in room.bots)
    ratio = None
    if delta_frames and key_count and key_bytes:
        ratio = (delta_bytes / delta_frames) / (key_bytes / key_count)
    phase = str(game.get("phase") or ("failed" if room.over else "connecting"))
    winner = None
    if game.get("phase") == "final":
        standings = game.get("standings") or []
        winner = standings[0].get("name") if standings else None
    return RoomRow(
        name=room.name,
        codec=room.codec,
        mode=str(game.get("mode") or room.mode),
        phase=phase,
        round=int(game.get("round") or 0),
        rounds=int(game.get("rounds") or MODES.get(room.mode, 0)),
        connected=sum(1 for p in players if p.get("connected")) if players else live,
        seated=len(players),
        frames_per_s=None if frames is None or not live else frames / live,
        bytes_per_s=None if nbytes is None or not live else nbytes / live,
        delta_ratio=ratio,
        errors=sum(1 for b in room.bots if b.error is not None),
        winner=winner,
    )


@dataclass(frozen=True, slots=True)
class RelayRow:
    """The relay's totals: from ``Relay.health`` and ``Relay.stats``."""

    connections: int
    rooms: int
    frames_per_s: float | None
    bytes_per_s: float | None


def _fmt_rate(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B/s":
        if value >= 10_000:
            return f"{value / 1000:.0f} kB/s"
        if value >= 1000:
            return f"{value / 1000:.1f} kB/s"
        return f"{value:.0f} B/s"
    return f"{value:.1f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


# -- views ---------------------------------------------------------------------------


class _PlainView:
    """Progress as plain lines: a room's new round or its end, bot failures, relay totals."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._seen: dict[str, tuple[Any, ...]] = {}
        self._failed: set[tuple[int, int]] = set()
        self._next_totals = TOTALS_EVERY

    def __enter__(self) -> _PlainView:
        print(f"relay demo: relay on {self._url}", flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(
        self, elapsed: float, rows: list[RoomRow], relay: RelayRow, rooms: list[_RoomRun]
    ) -> None:
        stamp = f"[{elapsed:6.1f}s]"
        for room in rooms:
            for bot in room.bots:
                if bot.error is not None and (room.index, bot.index) not in self._failed:
                    self._failed.add((room.index, bot.index))
                    print(f"{stamp} room {room.name}: bot {bot.index + 1} failed: {bot.error}")
        for row in rows:
            marker = (row.round, row.phase == "final", row.phase == "failed")
            if self._seen.get(row.name) == marker or row.phase in ("connecting", "lobby"):
                continue
            self._seen[row.name] = marker
            head = f"{stamp} room {row.name} ({row.mode}, {row.codec}):"
            if row.phase == "final":
                print(f"{head} final, winner {row.winner}", flush=True)
            elif row.phase == "failed":
                print(f"{head} stopped: every bot failed", flush=True)
            else:
                print(
                    f"{head} round {row.round}/{row.rounds} {row.phase}, "
                    f"{row.connected}/{row.seated} connected, "
                    f"{_fmt_rate(row.frames_per_s, 'f/s')} frames/s and "
                    f"{_fmt_rate(row.bytes_per_s, 'B/s')} per client, "
                    f"delta/keyframe {_fmt_ratio(row.delta_ratio)}",
                    flush=True,
                )
        if elapsed >= self._next_totals:
            self._next_totals = elapsed + TOTALS_EVERY
            print(
                f"{stamp} relay: {relay.connections} connections, {relay.rooms} rooms, "
                f"{_fmt_rate(relay.frames_per_s, 'f/s')} frames/s out",
                flush=True,
            )


class _LiveView:
    """A rich table, one row per room, redrawn every ``REFRESH`` seconds."""

    def __init__(self, url: str, console: Any) -> None:
        from rich.live import Live

        self._url = url
        self._console = console
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> _LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(
        self, elapsed: float, rows: list[RoomRow], relay: RelayRow, rooms: list[_RoomRun]
    ) -> None:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"roomwire demo on {self._url}  ({elapsed:.0f} s)")
        table.add_column("room", style="bold")
        table.add_column("codec")
        table.add_column("mode")
        table.add_column("phase")
        table.add_column("round", justify="right")
        table.add_column("players", justify="right")
        table.add_column("frames/s", justify="right")
        table.add_column("bytes/s", justify="right")
        table.add_column("delta/key", justify="right")
        table.add_column("")
        for row in rows:
            style = {"final": "green", "failed": "red"}.get(row.phase, "")
            # player names are the players' text: never read them as markup
            note = Text(f"winner {row.winner}" if row.winner else "")
            if row.errors:
                note = Text.assemble((f"{row.errors} bot error(s) ", "red"), note)
            table.add_row(
                row.name,
                row.codec,
                row.mode,
                f"[{style}]{row.phase}[/{style}]" if style else row.phase,
                f"{row.round}/{row.rounds}",
                f"{row.connected}/{row.seated}",
                _fmt_rate(row.frames_per_s, "f/s"),
                _fmt_rate(row.bytes_per_s, "B/s"),
                _fmt_ratio(row.delta_ratio),
                note,
            )
        totals = Text(
            f"relay: {relay.connections} connections, {relay.rooms} rooms, "
            f"{_fmt_rate(relay.frames_per_s, 'f/s')} frames/s and "
            f"{_fmt_rate(relay.bytes_per_s, 'B/s')} sent"
        )
        legend = Text(
            "frames/s, bytes/s: received per client; delta/key: mean delta frame size "
            "/ keyframe size. Ctrl-C stops.",
            style="dim",
        )
        self._live.update(Group(table, totals, legend), refresh=True)


# -- the run -------------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    rooms: list[_RoomRun]
    elapsed: float
    cut_short: str | None  # why the demo stopped before every game ended
    frames_sent: int
    bytes_sent: int
    url: str


def phase_options(speed: float) -> dict[str, float]:
    """Quiz room options: every phase at its shortest allowed limit, longer for slow bots.

    Bots act well within these, so phases end early when everyone acted; the
    limits only matter for a bot that fails.
    """
    stretch = max(1.0, 1.0 / speed)
    return {
        f"{phase}_seconds": min(high, low * stretch) for phase, (low, high) in TIMING_BOUNDS.items()
    }


def _check_args(args: argparse.Namespace) -> None:
    if args.mode not in MODES:
        raise DemoError(f"unknown mode {args.mode!r} (known: {', '.join(sorted(MODES))})")
    if not 1 <= args.rooms <= 200:
        raise DemoError(f"--rooms must be 1..200, got {args.rooms}")
    if not MIN_PLAYERS <= args.players <= MAX_PLAYERS:
        raise DemoError(
            f"--players must be {MIN_PLAYERS}..{MAX_PLAYERS} (the quiz seats that many), "
            f"got {args.players}"
        )
    if not (math.isfinite(args.speed) and args.speed > 0):
        raise DemoError(f"--speed must be a positive number, got {args.speed}")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
        raise DemoError(f"--duration must be a positive number of seconds, got {args.duration}")


def _plan(args: argparse.Namespace) -> list[_RoomRun]:
    master = random.Random(args.seed)
    options = phase_options(args.speed)
    stall = max(options.values()) + 20.0
    rooms = []
    for i in range(args.rooms):
        bots = [
            _Bot(index=j, rng=random.Random(master.getrandbits(64)), speed=args.speed)
            for j in range(args.players)
        ]
        rooms.append(
            _RoomRun(
                index=i,
                mode=args.mode,
                codec=CODEC_CYCLE[i % len(CODEC_CYCLE)],
                options=dict(options),
                bots=bots,
                stall_timeout=stall,
            )
        )
    return rooms


class _Stopper:
    """What ends the watch early: ``--duration`` or Ctrl-C (SIGINT in the main thread).

    The scope can be cancelled before the watch enters it: a Ctrl-C during
    startup still stops the demo cleanly, with its report.
    """

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()

    async def watch_interrupt(self, *, task_status: trio.TaskStatus[None]) -> None:
        if threading.current_thread() is not threading.main_thread():
            task_status.started()  # signals can only be caught in the main thread
            return
        # one Ctrl-C stops the demo; once this receiver is closed, a second one
        # interrupts the shutdown as usual
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self.stop("interrupted")
                return


async def _watch(
    relay: Relay,
    rooms: list[_RoomRun],
    view: _PlainView | _LiveView,
    stopper: _Stopper,
    started: float,
) -> None:
    """Refresh the view until every room is over or ``stopper`` stops it."""
    frames_out = _Rate()
    bytes_out = _Rate()

    def refresh() -> None:
        now = trio.current_time()
        health = relay.health()
        totals = RelayRow(
            connections=health["connections"],
            rooms=health["rooms"],
            frames_per_s=frames_out.update(now, relay.stats.frames_sent),
            bytes_per_s=bytes_out.update(now, relay.stats.bytes_sent),
        )
        view.update(now - started, [_row(room, now) for room in rooms], totals, rooms)

    with stopper.scope:
        while not all(room.over for room in rooms):
            refresh()
            await trio.sleep(REFRESH)
    if stopper.scope.cancelled_caught and stopper.reason is None:
        stopper.reason = "stopped by --duration"
    refresh()


async def _main(
    args: argparse.Namespace, make_view: Callable[[str], _PlainView | _LiveView]
) -> _Outcome:
    # The embedded store, in a directory of the demo's own: the demo's rooms must
    # not be restored into a relay that runs later on the default store.
    data_dir = tempfile.mkdtemp(prefix="roomwire-demo-")
    try:
        config = Config(
            host="127.0.0.1",
            port=0,
            allow_anonymous=True,
            data_dir=data_dir,
            **({"store": args.store} if args.store else {}),
        )
    except ConfigError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise DemoError(str(exc)) from None
    try:
        return await _play(args, make_view, config)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _play(
    args: argparse.Namespace,
    make_view: Callable[[str], _PlainView | _LiveView],
    config: Config,
) -> _Outcome:
    relay = Relay(config)
    rooms = _plan(args)
    stopper = _Stopper()
    async with trio.open_nursery() as nursery:
        await nursery.start(stopper.watch_interrupt)
        addresses = await nursery.start(relay.run)
        url = f"ws://{config.host}:{addresses.port}"
        started = trio.current_time()
        if args.duration is not None:
            stopper.scope.deadline = started + args.duration
        async with trio.open_nursery() as bots:
            for room in rooms:
                for bot in room.bots:
                    bots.start_soon(bot.run, room, url)
            with make_view(url) as view:
                await _watch(relay, rooms, view, stopper, started)
            elapsed = trio.current_time() - started
            for room in rooms:
                for bot in room.bots:
                    bot.scope.cancel()
            bots.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT
        outcome = _Outcome(
            rooms=rooms,
            elapsed=elapsed,
            cut_short=stopper.reason,
            frames_sent=relay.stats.frames_sent,
            bytes_sent=relay.stats.bytes_sent,
            url=url,
        )
        await relay.shutdown(timeout=CLOSE_TIMEOUT)
        nursery.cancel_scope.cancel()
    return outcome


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo as ``args`` asks (see ``relay demo --help``); returns the exit status.

    0 when every room's game reached its final phase with no bot error, 1
    otherwise (the report names the rooms and the errors). Raises
    ``DemoError`` for flags it cannot run with and for a relay that cannot
    start; never lets a bot's error escape as a traceback.
    """
    _check_args(args)
    live = not args.no_live and sys.stdout.isatty()
    console = None
    if live:
        from rich.console import Console

        console = Console()

    def make_view(url: str) -> _PlainView | _LiveView:
        return _LiveView(url, console) if console is not None else _PlainView(url)

    try:
        outcome = trio.run(_main, args, make_view)
    except BaseException as exc:
        leaves = list(_leaves(exc))
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            raise KeyboardInterrupt from None  # a second Ctrl-C: the CLI exits 130
        if not all(isinstance(leaf, Exception) for leaf in leaves):
            raise
        if all(isinstance(leaf, DemoError | RelayStartupError) for leaf in leaves):
            raise DemoError(_describe(exc)) from None
        raise DemoError(f"the demo stopped on an unexpected error: {_describe(exc)}") from None
    return _report(outcome, console)


# -- the report ----------------------------------------------------------------------


def _standings(room: _RoomRun) -> list[tuple[int, str, int]]:
    game = room.final or {}
    return [
        (rank, str(s.get("name")), int(s.get("score", 0)))
        for rank, s in enumerate(game.get("standings") or [], start=1)
    ]


def _report(outcome: _Outcome, console: Any) -> int:
    """Print the standings, the errors and a summary line; return the exit status."""
    rooms = outcome.rooms
    unfinished = [room for room in rooms if not room.finished]
    errors = [error for room in rooms for error in room.errors()]
    if console is not None:
        _print_standings_rich(console, [room for room in rooms if room.finished])
    for room in rooms:
        title = f"Room {room.name} ({room.mode}, {room.codec})"
        if room.finished:
            if console is None:
                print(f"{title}: final standings")
                for rank, name, score in _standings(room):
                    print(f"  {rank}. {name:<16} {score:>6}")
        elif room.final is not None:
            print(f"{title}: the game ended early ({room.final.get('end_reason')})")
        else:
            print(f"{title}: did not finish{_where(room)}")
        for error in room.errors():
            print(f"  {error}")
    print(_summary(outcome, len(errors)), flush=True)
    if not unfinished and not errors:
        return 0
    if unfinished:
        names = ", ".join(room.name for room in unfinished)
        if outcome.cut_short == "interrupted":
            cause = f"interrupted after {outcome.elapsed:.0f} s"
        elif outcome.cut_short is not None:
            cause = f"{outcome.cut_short} after {outcome.elapsed:.0f} s"
        else:
            cause = "see the errors above"
        print(f"relay demo: rooms not finished: {names} ({cause})", file=sys.stderr)
    if errors:
        print(f"relay demo: {len(errors)} bot error(s); see above", file=sys.stderr)
    return 1


def _where(room: _RoomRun) -> str:
    """Where an unfinished game stood, from the last state its bots saw."""
    for bot in room.bots:
        if bot.client is not None and bot.client.state:
            game = _game(bot.client)
            return (
                f" (it was in round {game.get('round')}/{game.get('rounds')}, {game.get('phase')})"
            )
    return ""


def _summary(outcome: _Outcome, errors: int) -> str:
    rooms = outcome.rooms
    finished = sum(1 for room in rooms if room.finished)
    bots = sum(room.size for room in rooms)
    late = sum(bot.late for room in rooms for bot in room.bots)
    desyncs = sum(
        bot.client.stats.desyncs for room in rooms for bot in room.bots if bot.client is not None
    )
    text = (
        f"relay demo: {finished}/{len(rooms)} games finished, {bots} bots, "
        f"{outcome.elapsed:.1f} s; the relay sent {outcome.frames_sent} frames "
        f"({outcome.bytes_sent / 1000:.0f} kB); {errors} bot errors"
    )
    if late:
        text += f", {late} late actions refused"
    if desyncs:
        text += f", {desyncs} state desyncs"
    return text


def _print_standings_rich(console: Any, rooms: list[_RoomRun]) -> None:
    if not rooms:
        return
    from rich.columns import Columns
    from rich.table import Table
    from rich.text import Text

    tables = []
    for room in rooms:
        table = Table(title=f"Room {room.name} ({room.codec})")
        table.add_column("rank", justify="right")
        table.add_column("name")
        table.add_column("score", justify="right")
        for rank, name, score in _standings(room):
            table.add_row(str(rank), Text(name), str(score), style="bold" if rank == 1 else "")
        tables.append(table)
    console.print("[bold]Final standings[/bold]")
    console.print(Columns(tables, padding=(0, 3)))
