"""Reconnection: resume tokens, the grace period, half-open and duplicate reconnects.

End to end on loopback. A small TCP proxy between an SDK client and the relay
lets a test drop a connection the way a network does (no close frame), hold
it half-open (no byte gets through, neither side notices), or refuse new
connections for a while.
"""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from relay_fixtures import TRANSPORTS, RawClient, TicketKeys, fast_config, open_raw
from relay_fixtures import start_relay as start

from protocol import PROTOCOL_VERSION, CloseCode, Error, Hello, Input, Join, Joined, Welcome
from relay._client_reconnect import Backoff, ReconnectPolicy
from relay._server import Relay, RelayStartupError
from relay.client import connect

POLICY = ReconnectPolicy(
    backoff=Backoff(base=0.05, cap=1.0), seed=7, heartbeat_interval=None, attempt_timeout=0.3
)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def eventually(predicate: Any, *, timeout: float = 3.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


class _Pair:
    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.thawed = trio.Event()
        self.thawed.set()


class Proxy:
    """A TCP forwarder to ``127.0.0.1:target`` that the test can cut, freeze or close."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.accepting = True
        self.accepted: list[float] = []  # trio times of every connection accepted
        self.pairs: list[_Pair] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.accepted.append(trio.current_time())
        upstream = None
        try:
            if not self.accepting:
                return
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target)
            pair = _Pair()
            self.pairs.append(pair)
            with pair.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, stream, upstream, pair)
                    nursery.start_soon(self._pump, upstream, stream, pair)
        finally:
            # a cut: both sockets close without a WebSocket close frame (1006)
            try:
                await trio.aclose_forcefully(stream)
            finally:
                if upstream is not None:
                    await trio.aclose_forcefully(upstream)

    async def _pump(self, src: trio.SocketStream, dst: trio.SocketStream, pair: _Pair) -> None:
        try:
            while True:
                data = await src.receive_some(65536)
                if not data:
                    break
                await pair.thawed.wait()
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        pair.scope.cancel()

    def cut(self) -> None:
        for pair in self.pairs:
            pair.scope.cancel()
        self.pairs = []

    def freeze(self) -> None:
        """Hold every open connection half-open: open on both ends, nothing passes."""
        for pair in self.pairs:
            pair.thawed = trio.Event()


async def resume_raw(raw: RawClient, token: str, ticket: str | None = None) -> list[Any]:
    """Say Hello with ``token``; the Welcome and the next frame (Joined or Error)."""
    await raw.send(Hello(PROTOCOL_VERSION, ticket, token, "raw-test"))
    return [await raw.recv(), await raw.recv()]


# -- backoff -----------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    backoff = Backoff(base=0.1, factor=2.0, cap=2.0, jitter=0.5)
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(2.0, 0.1 * 2 ** (attempt - 1))
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jitter spreads clients out
    assert Backoff(jitter=0.0).delay(3, rng) == 0.4
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)


# -- reconnect within the grace period -----------------------------------------------------


async def test_a_dropped_client_reconnects_to_the_same_seat_and_state(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(tmp_path, transport, tick_rate=50, reconnect_grace=5.0)
    async with start(config) as r, trio.open_nursery() as nursery:
        proxy = Proxy(r.port)
        await nursery.start(proxy.run)
        async with connect(proxy.url, reconnect=POLICY) as a, connect(r.url) as b:
            code = await a.create("arena")
            await b.join(code)
            seq = await a.send_input({"x": 5.0, "y": 6.0})
            await b.wait_for(lambda b: b.state["players"][a.player_id]["seq"] == seq)
            pid, seat, token = a.player_id, a.seat, a.resume_token
            assert token is not None and token.startswith("rw1.")
            room = r.relay.registry.get(code).room
            proxy.cut()
            await a.wait_for(lambda a: a.stats.reconnects == 1, timeout=5)
            await a.wait_for(lambda a: a.code == code and not a.reconnecting)
            assert (a.player_id, a.seat, a.closed) == (pid, seat, None)
            assert a.resume_token != token  # each Joined brings a fresh one
            members = room.members()
            assert [m.player_id for m in members] == [pid, b.player_id]  # no duplicate
            assert all(m.connected for m in members)
            # the state survived, and the mirror is whole again (a keyframe)
            assert room.public_state["players"][pid]["x"] == 5.0
            await a.wait_for(lambda a: a.state == room.public_state)
            assert a.stats.desyncs == 0
            seq = await a.send_input({"x": 7.0})
            await b.wait_for(lambda b: b.state["players"][pid]["seq"] == seq)
            assert b.state["players"][pid]["x"] == 7.0
            assert r.relay.resume.resumed == 1
        nursery.cancel_scope.cancel()


async def test_after_the_grace_period_the_seat_is_released(tmp_path: Path, transport: str) -> None:
    config = fast_config(tmp_path, transport, tick_rate=50, reconnect_grace=1.0)
    async with start(config) as r, trio.open_nursery() as nursery:
        proxy = Proxy(r.port)
        await nursery.start(proxy.run)
        async with connect(proxy.url, reconnect=POLICY) as a, connect(r.url) as b:
            code = await b.create("quiz8")
            await a.join(code)
            pid, token = a.player_id, a.resume_token
            assert token is not None

            def quiz_players() -> dict[str, bool]:
                game = r.public_state(code)["game"]
                return {p["id"]: p["connected"] for p in game["players"]}

            assert quiz_players()[pid] is True
            proxy.accepting = False
            dropped_at = trio.current_time()
            proxy.cut()
            # held: the seat is kept, shown disconnected, and the phase machine knows
            await eventually(lambda: quiz_players().get(pid) is False)
            assert r.public_state(code)["room"]["members"][pid]["connected"] is False
            # released: the phase machine sees the player leave
            await eventually(lambda: pid not in quiz_players(), timeout=5)
            assert trio.current_time() - dropped_at >= 0.95
            assert pid not in r.public_state(code)["room"]["members"]
            await b.wait_for(lambda b: pid not in b.state["players"])
            # the client tried, with growing pauses between attempts, then gave up
            await eventually(lambda: a.closed is not None, timeout=5)
            assert a.closed[0] == 1006 and a.stats.reconnect_attempts >= 3
            attempts = proxy.accepted[1:]
            gaps = [t2 - t1 for t1, t2 in itertools.pairwise(attempts)]
            assert len(gaps) >= 2
            for k, gap in enumerate(gaps, start=1):
                assert gap >= 0.5 * 0.05 * 2**k * 0.9, gaps  # the jittered floor doubles
            # the token is no good any more: the seat is gone
            async with open_raw(r.port) as raw:
                welcome, error = await resume_raw(raw, token)
                assert type(welcome) is Welcome and welcome.player_id == pid
                assert type(error) is Error and error.code == "not_a_member"
        nursery.cancel_scope.cancel()


# -- half-open and duplicate reconnects -----------------------------------------------------


async def test_a_half_open_connection_is_replaced_by_the_reconnect(
    tmp_path: Path, transport: str
) -> None:
    # The relay does not notice the silent connection (its heartbeat is slow);
    # the client does (its own heartbeat), reconnects, and the seat moves over.
    config = fast_config(
        tmp_path, transport, tick_rate=50, reconnect_grace=5.0, heartbeat_interval=30.0
    )
    policy = ReconnectPolicy(backoff=Backoff(base=0.05), seed=3, heartbeat_interval=0.2)
    async with start(config) as r, trio.open_nursery() as nursery:
        proxy = Proxy(r.port)
        await nursery.start(proxy.run)
        async with connect(proxy.url, reconnect=policy) as a, connect(r.url) as b:
            code = await a.create("arena")
            await b.join(code)
            room = r.relay.registry.get(code).room
            old_link = next(link for link in r.relay.connections if link.player_id == a.player_id)
            proxy.freeze()
            await a.wait_for(lambda a: a.stats.reconnects == 1, timeout=5)
            assert a.stats.heartbeat_timeouts == 1
            await eventually(lambda: old_link.closed or old_link._close_request is not None)
            assert old_link._close_request[0] == CloseCode.REPLACED
            assert [m.player_id for m in room.members()] == [a.player_id, b.player_id]
            assert all(m.connected for m in room.members())
            seq = await a.send_input({"angle": 1.0})
            await b.wait_for(lambda b: b.state["players"][a.player_id]["seq"] == seq)
            await a.wait_for(lambda a: a.state == room.public_state)
        nursery.cancel_scope.cancel()


async def _outcome(raw: RawClient) -> str:
    """Read a resuming raw connection for a while: "replaced", "error:<code>" then
    replaced, or "seated" (it holds the seat and keeps receiving)."""
    seen: list[str] = []
    try:
        with trio.move_on_after(1.0):
            while True:
                frame = await raw.recv(timeout=2.0)
                if type(frame) is Error:
                    seen.append(f"error:{frame.code}")
                elif type(frame) is Joined:
                    seen.append("joined")
    except Exception as exc:  # the relay closed it
        reason = getattr(exc, "reason", None)
        code = reason.code if reason is not None else None
        return "replaced" if code == CloseCode.REPLACED else f"closed:{code}"
    return "seated" if "joined" in seen else "+".join(seen) or "nothing"


async def test_duplicate_reconnects_with_one_token_resolve_to_one_seat(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(tmp_path, transport, tick_rate=50, reconnect_grace=5.0)
    async with start(config) as r, connect(r.url) as host:
        code = await host.create("arena")
        room = r.relay.registry.get(code).room
        async with (
            open_raw(r.port) as first,
            open_raw(r.port) as second,
            open_raw(r.port) as third,
        ):
            await first.hello()
            await first.send(Join(1, code))
            joined = await first.recv()
            assert type(joined) is Joined and joined.resume
            pid = joined.player_id
            # `first` goes quiet but stays open (half-open); two reconnects race
            outcomes: dict[str, str] = {}

            async def resume(name: str, raw: RawClient) -> None:
                await raw.send(Hello(PROTOCOL_VERSION, None, joined.resume, "raw-test"))
                welcome = await raw.recv()
                assert type(welcome) is Welcome and welcome.player_id == pid
                outcomes[name] = await _outcome(raw)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(resume, "second", second)
                nursery.start_soon(resume, "third", third)
            assert sorted(outcomes.values()) == ["replaced", "seated"], outcomes
            assert await _outcome(first) == "replaced"
            members = [m for m in room.members() if m.player_id == pid]
            assert len(members) == 1 and members[0].connected
            assert len(room.members()) == 2
            winner = second if outcomes["second"] == "seated" else third
            await winner.send(Input(1, {"x": 9.0}))
            await host.wait_for(lambda h: h.state["players"][pid]["x"] == 9.0)


async def test_a_connection_replaced_on_purpose_does_not_reconnect(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(tmp_path, transport, tick_rate=50, reconnect_grace=5.0)
    async with start(config) as r, connect(r.url, reconnect=POLICY) as a:
        await a.create("arena")
        async with open_raw(r.port) as raw:
            _, joined = await resume_raw(raw, a.resume_token)
            assert type(joined) is Joined and joined.player_id == a.player_id
            await eventually(lambda: a.closed is not None)
            assert a.closed[0] == CloseCode.REPLACED
            await trio.sleep(0.2)
            assert a.stats.reconnect_attempts == 0


# -- tokens the relay refuses ---------------------------------------------------------------


async def test_bad_tokens_are_refused_and_the_client_stays_in_the_lobby(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(tmp_path, transport, tick_rate=50, reconnect_grace=5.0)
    async with start(config) as r, connect(r.url) as a:
        await a.create("arena")
        token = a.resume_token
        assert token is not None
        sealer = r.relay.resume.sealer
        now = time.time()
        expired = sealer.seal(
            room=a.code, player_id=a.player_id, seat=0, issued=now - 60, expires=now - 1
        )
        i = len("rw1.") + 10
        forged = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        cases = {
            "resume_malformed": "not a token",
            "resume_forged": forged,
            "resume_expired": expired,
        }
        for code, bad in cases.items():
            async with open_raw(r.port) as raw:
                welcome, error = await resume_raw(raw, bad)
                assert type(welcome) is Welcome and welcome.player_id != a.player_id
                assert type(error) is Error and error.code == code and error.ref is None
                await raw.send(Join(5, a.code))  # still served, in the lobby
                assert type(await raw.recv()) is Joined
        assert r.relay.resume.refused == 3
        assert r.relay.registry.get(a.code).members()[0].player_id == a.player_id


async def test_a_token_cannot_be_used_with_another_players_ticket(
    tmp_path: Path, transport: str
) -> None:
    keys = TicketKeys()
    config = fast_config(tmp_path, transport, allow_anonymous=False, reconnect_grace=5.0)
    async with start(config, keys=keys) as r, connect(r.url, ticket=keys.mint("p-1")) as a:
        await a.create("arena")
        async with open_raw(r.port) as raw:
            welcome, error = await resume_raw(raw, a.resume_token, keys.mint("p-2"))
            assert type(welcome) is Welcome and welcome.player_id == "p-2"
            assert type(error) is Error and error.code == "resume_wrong_player"
        async with open_raw(r.port) as raw:  # the owner's own ticket works
            welcome, joined = await resume_raw(raw, a.resume_token, keys.mint("p-1"))
            assert type(joined) is Joined and joined.player_id == "p-1"


async def test_a_shared_key_file_lets_another_process_open_the_tokens(
    tmp_path: Path, transport: str
) -> None:
    key_file = tmp_path / "resume.key"

    def config(name: str, **changes: Any) -> Any:
        # each relay its own store, so the room cannot come back from a checkpoint
        return fast_config(tmp_path, transport, data_dir=str(tmp_path / name), **changes)

    async with start(config("one", resume_key_file=str(key_file))) as r, connect(r.url) as a:
        await a.create("arena")
        token = a.resume_token
    assert key_file.exists()
    async with (
        start(config("two", resume_key_file=str(key_file))) as r2,
        open_raw(r2.port) as raw,
    ):
        # another process with the same key reads the token; the room is not there
        _, error = await resume_raw(raw, token)
        assert error.code == "room_not_found"
    async with start(config("three")) as r3, open_raw(r3.port) as raw:
        _, error = await resume_raw(raw, token)
        assert error.code == "resume_forged"


def test_an_unreadable_key_file_stops_the_relay_from_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    with pytest.raises(RelayStartupError) as refused:
        Relay(fast_config(tmp_path, "websocket", resume_key_file=str(bad)))
    assert "resume key" in str(refused.value)


async def test_without_a_grace_period_a_client_does_not_reconnect(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(tmp_path, transport, tick_rate=50, reconnect_grace=0.0)
    async with start(config) as r, trio.open_nursery() as nursery:
        proxy = Proxy(r.port)
        await nursery.start(proxy.run)
        async with connect(proxy.url, reconnect=POLICY) as a:
            code = await a.create("arena")
            proxy.cut()
            await eventually(lambda: a.closed is not None)
            assert a.stats.reconnect_attempts == 0
            await eventually(
                lambda: r.relay.registry.rooms() == [] or not r.public_state(code)["players"]
            )
        nursery.cancel_scope.cancel()
