"""End-to-end tests of the relay over real loopback sockets, on the real clock.

Every test runs a real ``Relay`` in-process on port 0 and talks to it with the
client SDK (``relay.client``) or with raw trio-websocket connections; nothing
stands in for the transport. The suite runs once per server transport in
``TRANSPORTS`` (the ``transport`` fixture). Rooms tick fast (50-100 Hz) so the
tests take seconds; waits are bounded by ``fail_after`` and poll loosely.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from relay_fixtures import CBOR, MSGPACK, TRANSPORTS, TicketKeys, fast_config, open_raw
from relay_fixtures import start_relay as start
from trio_websocket import ConnectionRejected

from actors import CODE_ALPHABET
from protocol import (
    PROTOCOL_VERSION,
    CloseCode,
    Error,
    Hello,
    Input,
    Join,
    Joined,
    Ping,
    Pong,
    Rpc,
    RpcResult,
    State,
    Welcome,
    f32,
)
from relay._tickets import HEADER
from relay.client import ClientError, RelayClient, RpcError, connect


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


async def eventually(predicate: Callable[[], bool], *, timeout: float = 3.0) -> None:
    """Poll ``predicate`` on the real clock until it holds; fails the test after ``timeout``."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def mirrors_converge(clients: list[RelayClient], server: Callable[[], Any]) -> None:
    """Every client's mirror becomes equal to the server's committed public state."""
    for client in clients:
        await client.wait_for(lambda c: c.state == server(), timeout=3)
        assert client.stats.desyncs == 0


def unused_code(running: Any) -> str:
    live = {h.code for h in running.relay.registry.rooms()}
    return next(c * 4 for c in CODE_ALPHABET if c * 4 not in live)


# -- handshake and codecs --------------------------------------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "cbor"])
async def test_each_codec_works_end_to_end(tmp_path: Path, transport: str, codec: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url, codec=codec) as c,
    ):
        assert c.ws.subprotocol == f"roomwire.v1.{codec}"
        assert c.server["tick_rate"] == 50
        assert "arena" in c.server["modes"]
        code = await c.create("arena")
        seq = await c.send_input({"x": 12.3, "y": 45.6, "angle": 0.1})
        await c.wait_for(lambda c: c.state["players"][c.player_id]["seq"] == seq)
        me = c.state["players"][c.player_id]
        assert (me["x"], me["y"], me["angle"]) == (f32(12.3), f32(45.6), f32(0.1))
        await mirrors_converge([c], lambda: r.public_state(code))
        assert await c.ping() < 1.0


@pytest.mark.parametrize("offered", [[], ["chat", "roomwire.v2.msgpack"]])
async def test_handshake_without_a_roomwire_subprotocol_is_refused(
    tmp_path: Path, transport: str, offered: list[str]
) -> None:
    async with start(fast_config(tmp_path, transport)) as r:
        with pytest.raises(ConnectionRejected) as refused:
            async with open_raw(r.port, subprotocols=offered):
                pass  # pragma: no cover - the handshake fails first
        assert refused.value.status_code == 400
        body = (refused.value.body or b"").decode()
        assert MSGPACK in body and CBOR in body
        # the relay keeps serving properly negotiated clients
        async with connect(r.url, codec="cbor") as c:
            await c.quick_join("arena")


async def test_the_first_offered_known_subprotocol_wins(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport)) as r,
        open_raw(r.port, subprotocols=["chat", CBOR, MSGPACK]) as raw,
    ):
        assert raw.ws.subprotocol == CBOR
        welcome = await raw.hello()
        assert type(welcome) is Welcome and welcome.codec == "cbor"


# -- tickets ---------------------------------------------------------------------------


def _tampered(token: str) -> str:
    # change one character inside the signed body; the base64 stays canonical
    i = len(HEADER) + 20
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


_BAD_TICKETS: dict[str, Callable[[TicketKeys], str | None]] = {
    "ticket_expired": lambda k: k.mint("p-1", ttl=60, now=time.time() - 3600),
    "ticket_not_yet_valid": lambda k: k.mint("p-1", not_before=time.time() + 3600, ttl=7200),
    "ticket_bad_signature": lambda k: _tampered(k.mint("p-1")),
    "ticket_unknown_key": lambda k: TicketKeys().mint("p-1"),
    "ticket_malformed": lambda k: "v4.public.not-a-ticket",
    "ticket_required": lambda k: None,
}


@pytest.mark.parametrize("expected", sorted(_BAD_TICKETS))
async def test_a_refused_ticket_gets_its_error_code_and_close_4001(
    tmp_path: Path, transport: str, expected: str
) -> None:
    keys = TicketKeys()
    config = fast_config(tmp_path, transport, allow_anonymous=False)
    async with (
        start(config, keys=keys) as r,
        open_raw(r.port) as raw,
    ):
        answer = await raw.hello(_BAD_TICKETS[expected](keys))
        assert type(answer) is Error
        assert answer.code == expected
        code, _ = await raw.wait_closed()
        assert code == CloseCode.UNAUTHORIZED
        assert r.relay.stats.auth_failures == 1
        # a good ticket still gets in
        async with connect(r.url, ticket=keys.mint("p-2", "Bea")) as c:
            assert c.player_id == "p-2"


async def test_a_valid_ticket_is_welcomed_with_its_player_id(
    tmp_path: Path, transport: str
) -> None:
    keys = TicketKeys()
    config = fast_config(tmp_path, transport, allow_anonymous=False)
    async with (
        start(config, keys=keys) as r,
        connect(r.url, ticket=keys.mint("p-42", "Ada")) as c,
    ):
        assert c.player_id == "p-42"
        code = await c.create("arena")
        assert c.player_id == "p-42"
        assert c.state["room"]["members"]["p-42"]["name"] == "Ada"
        assert c.state["room"]["host"] == "p-42"
        assert [m.player_id for m in r.relay.registry.get(code).members()] == ["p-42"]


async def test_anonymous_play_only_where_allowed(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, allow_anonymous=True)) as r,
        connect(r.url) as c,
    ):
        assert c.player_id is not None and c.player_id.startswith("anon-")
    async with start(fast_config(tmp_path, transport, allow_anonymous=False)) as r:
        with pytest.raises(ClientError) as refused:
            async with connect(r.url):
                pass  # pragma: no cover - refused at Hello
        assert refused.value.code == "ticket_required"


async def test_a_ticket_bound_to_one_room_cannot_join_another(
    tmp_path: Path, transport: str
) -> None:
    keys = TicketKeys()
    config = fast_config(tmp_path, transport, allow_anonymous=False)
    async with (
        start(config, keys=keys) as r,
        connect(r.url, ticket=keys.mint("host-a")) as a,
        connect(r.url, ticket=keys.mint("host-b")) as b,
    ):
        room_a = await a.create("arena")
        room_b = await b.create("arena")
        bound = keys.mint("guest", room=room_a)
        async with connect(r.url, ticket=bound) as guest:
            with pytest.raises(ClientError) as refused:
                await guest.join(room_b)
            assert refused.value.code == "ticket_wrong_room"
            with pytest.raises(ClientError) as refused:
                await guest.create("arena")
            assert refused.value.code == "ticket_wrong_room"
            assert "guest" not in r.public_state(room_b)["players"]
            # the ticket is still good for its own room
            await guest.join(room_a)
            assert guest.code == room_a


# -- rooms: create, join, quick-join, leave --------------------------------------------


async def test_quick_join_fills_an_open_room_before_creating_another(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
        connect(r.url) as c,
    ):
        first = await a.create("arena", max_players=2)
        assert await b.quick_join("arena") == first
        second = await c.quick_join("arena")
        assert second != first
        assert {h.code for h in r.relay.registry.rooms()} == {first, second}
        await b.wait_for(lambda b: set(b.state["room"]["members"]) == {a.player_id, b.player_id})


async def test_join_of_an_unknown_code_is_room_not_found(tmp_path: Path, transport: str) -> None:
    async with start(fast_config(tmp_path, transport)) as r, connect(r.url) as c:
        for code in (unused_code(r), "no such room", ""):
            with pytest.raises(ClientError) as refused:
                await c.join(code)
            assert refused.value.code == "room_not_found"
        await c.create("arena")  # still in the lobby, still served


async def test_join_of_a_full_room_is_room_full(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
    ):
        code = await a.create("arena", max_players=1)
        with pytest.raises(ClientError) as refused:
            await b.join(code.lower())
        assert refused.value.code == "room_full"
        assert list(r.public_state(code)["players"]) == [a.player_id]


async def test_leave_returns_the_client_to_the_lobby(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
    ):
        first = await a.create("arena")
        await b.join(first)
        await b.leave()
        assert b.code is None
        left = await b.next_event("left")
        assert left.data["code"] == first
        await eventually(lambda: b.player_id not in r.public_state(first)["players"])
        await a.wait_for(lambda a: b.player_id not in a.state["room"]["members"])
        # back in the lobby: it may create (or join) another room at once
        second = await b.create("arena")
        assert second != first
        await b.leave()
        await b.join(first)
        await a.wait_for(lambda a: b.player_id in a.state["players"])


async def test_a_closing_room_tells_its_members_and_returns_them_to_the_lobby(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url, codec="cbor") as b,
    ):
        code = await a.create("arena")
        await b.join(code)
        r.relay.registry.close(code, "maintenance")
        for c in (a, b):
            closed = await c.next_event("room_closed")
            assert closed.data == {"reason": "maintenance"}
            left = await c.next_event("left")
            assert left.data == {"code": code, "reason": "maintenance"}
            assert c.code is None
        await eventually(lambda: r.relay.registry.rooms() == [])
        await b.create("arena")  # back in the lobby: free to start over


async def test_a_lobby_frame_inside_a_room_is_refused(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
    ):
        room_a = await a.create("arena")
        room_b = await b.create("arena")
        with pytest.raises(ClientError) as refused:
            await a.join(room_b)
        assert refused.value.code == "in_room"
        assert a.code == room_a
        assert a.player_id not in r.public_state(room_b)["players"]


# -- the quiz: eight players, a whole game ---------------------------------------------

_QUIZ_OPTIONS = {
    "question_seconds": 10,
    "elimination_seconds": 5,
    "voting_seconds": 5,
    "results_seconds": 3,
}


async def _play_quiz(client: RelayClient, *, host: bool, players: int) -> list[str]:
    """Play from the client's own mirror until the final phase; returns the phases seen."""
    seen: list[str] = []
    done: set[tuple[int, str]] = set()

    def key(c: RelayClient) -> tuple[int, str]:
        game = c.state.get("game", {})
        return game.get("round", 0), game.get("phase", "")

    if host:
        await client.wait_for(lambda c: len(c.state["room"]["members"]) == players, timeout=10)
        await client.rpc("room", "start_game")
    while True:
        await client.wait_for(lambda c: key(c) not in done and key(c)[1] != "lobby", timeout=10)
        game = client.state["game"]
        rnd, phase = key(client)
        done.add((rnd, phase))
        seen.append(phase)
        mine = f"bluff {client.player_id} {rnd}"
        others = [a for a in game.get("answers", []) if a["text"] != mine]
        if phase == "question":
            await client.rpc("room", "submit_answer", {"text": mine})
        elif phase == "elimination":
            await client.rpc("room", "vote_eliminate", {"answer": others[0]["id"]})
        elif phase == "voting":
            choice = next(a for a in others if a["id"] != game["eliminated"])
            await client.rpc("room", "vote_final", {"answer": choice["id"]})
        elif phase == "results" and host:
            await client.rpc("room", "next_round")
        elif phase == "final":
            return seen


async def test_eight_players_play_a_whole_quiz_and_mirror_the_server(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=60)) as r,
        trio.open_nursery() as nursery,
    ):
        clients: list[RelayClient] = []
        seen: dict[str, list[str]] = {}
        finished: list[str] = []
        code = ""
        created = trio.Event()
        all_done = trio.Event()

        async def player(i: int) -> None:
            nonlocal code
            # half the room speaks msgpack, half CBOR: one body per codec per tick
            async with connect(r.url, codec="cbor" if i % 2 else "msgpack") as c:
                if i == 0:
                    code = await c.create("quiz8", **_QUIZ_OPTIONS)
                    created.set()
                else:
                    await created.wait()
                    await c.join(code)
                clients.append(c)
                seen[c.player_id] = await _play_quiz(c, host=i == 0, players=8)
                await c.wait_for(lambda c: c.state == r.public_state(code), timeout=3)
                over = await c.next_event("game_over")
                assert over.data["reason"] == "completed"
                finished.append(c.player_id)
                await all_done.wait()

        with trio.fail_after(40):
            for i in range(8):
                nursery.start_soon(player, i)
            await eventually(lambda: len(finished) == 8, timeout=40)
            server = r.public_state(code)
            game = server["game"]
            assert game["phase"] == "final"
            assert game["end_reason"] == "completed"
            assert game["round"] == game["rounds"] == 8
            assert len(game["standings"]) == 8
            host = server["room"]["host"]
            for c in clients:
                assert c.state == server
                assert c.stats.desyncs == 0
                phases = seen[c.player_id]
                # each player acted in every round's three timed phases
                for phase in ("question", "elimination", "voting"):
                    assert phases.count(phase) == 8, phases
            # the host also saw (and ended) every round's results
            assert seen[host] == ["question", "elimination", "voting", "results"] * 8 + ["final"]
            all_done.set()


# -- the arena: inputs, authority, isolation -------------------------------------------


async def test_arena_inputs_move_the_sender_and_every_mirror_converges(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url, codec="cbor") as b,
        connect(r.url) as c,
    ):
        code = await a.create("arena")
        await b.join(code)
        await c.join(code)
        clients = [a, b, c]
        last: dict[str, tuple[int, float]] = {}
        for step in range(1, 6):
            for i, client in enumerate(clients):
                x = 10.0 * i + step / 3
                seq = await client.send_input({"x": x, "y": 100 - x, "angle": step * 0.7})
                last[client.player_id] = (seq, x)
            await trio.sleep(0.01)
        for pid, (seq, x) in last.items():
            await eventually(
                lambda pid=pid, seq=seq: r.public_state(code)["players"][pid]["seq"] == seq
            )
            entity = r.public_state(code)["players"][pid]
            assert entity["x"] == f32(x) and entity["y"] == f32(100 - x)
            assert entity["angle"] == f32(5 * 0.7)
            assert entity["hp"] == 100
        # nothing moves any more: a few idle ticks, then one last input
        await trio.sleep(0.1)
        seq = await b.send_input({"angle": 1.25})
        await eventually(lambda: r.public_state(code)["players"][b.player_id]["seq"] == seq)
        await mirrors_converge(clients, lambda: r.public_state(code))


async def test_arena_authority_violations_are_refused_and_change_nothing(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
    ):
        code = await a.create("arena")
        await b.join(code)
        await a.wait_for(lambda a: b.player_id in a.state["players"])
        before = r.public_state(code)["players"]
        attempts: list[tuple[Any, str]] = [
            ({"hp": 1000}, "forbidden_field"),
            ({"seq": 99}, "forbidden_field"),
            ({b.player_id: {"x": 1.0}}, "forbidden_field"),
            ({"players": {b.player_id: {"hp": 0}}}, "forbidden_field"),
            ({"x": "left"}, "invalid_input"),
            ({"x": True}, "invalid_input"),
            ({"x": math.inf}, "invalid_input"),
            ({"x": 1.0, "hp": 1}, "forbidden_field"),  # all or nothing
            ([1 << 10, 5.0], "invalid_input"),  # a dense patch of keys it has not
            ("teleport", "invalid_input"),
        ]
        for seq, (delta, _) in enumerate(attempts, start=1):
            await a.send(Input(seq, delta))
        await a.wait_for(lambda a: len(a.errors) == len(attempts))
        got = [(e.ref, e.code) for e in a.errors]
        assert got == [(i, want) for i, (_, want) in enumerate(attempts, start=1)]
        assert r.public_state(code)["players"] == before
        # nothing changed for the others either, and the connection still works
        seq = len(attempts) + 1
        await a.send(Input(seq, {"x": 3.0}))
        await b.wait_for(lambda b: b.state["players"][a.player_id]["seq"] == seq)
        assert b.state["players"][a.player_id]["x"] == 3.0
        assert b.state["players"][b.player_id] == before[b.player_id]
        assert b.state["players"][a.player_id]["hp"] == 100


async def test_an_input_error_never_answers_a_pending_request(
    tmp_path: Path, transport: str
) -> None:
    # Error.ref holds an input's seq or a request's id: the SDK keeps them apart
    async with start(fast_config(tmp_path, transport, tick_rate=50)) as r, connect(r.url) as a:
        await a.create("arena")
        for _ in range(4):
            await a.send_input({"hp": 0})
        with pytest.raises(RpcError) as refused:
            await a.rpc("room", "dance")
        assert refused.value.code == "invalid_event"
        await a.wait_for(lambda a: len(a.errors) == 4)
        assert {e.code for e in a.errors} == {"forbidden_field"}


async def test_arena_rooms_do_not_reach_each_other(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as a,
        connect(r.url) as b,
    ):
        room_a = await a.create("arena")
        room_b = await b.create("arena")
        before_b = r.public_state(room_b)
        seq = 0
        for step in range(5):
            seq = await a.send_input({"x": float(step), "y": float(step)})
        await eventually(lambda: r.public_state(room_a)["players"][a.player_id]["seq"] == seq)
        # room B saw none of it, and B's client was sent nothing about it
        assert r.public_state(room_b) == before_b
        assert set(b.state["players"]) == {b.player_id}
        assert set(b.state["room"]["members"]) == {b.player_id}
        assert b.state == r.public_state(room_b)
        # an RPC addressed to a player of another room reaches nobody
        with pytest.raises(RpcError):
            await a.rpc(b.player_id, "hello")
        assert [e for e in b.events if e.name != "private"] == []


# -- a slow client ---------------------------------------------------------------------


async def test_a_client_that_stops_reading_delays_nobody_and_is_closed(
    tmp_path: Path, transport: str
) -> None:
    rate = 100
    config = fast_config(tmp_path, transport, tick_rate=rate, heartbeat_interval=30.0)
    async with start(config, room={"max_lag_ticks": 10}) as r:
        gaps: dict[str, float] = {}
        frames: dict[str, int] = {}
        moving = trio.Event()
        stop = trio.Event()
        code = ""

        async def mover(i: int, *, task_status: trio.TaskStatus[None]) -> None:
            nonlocal code
            async with connect(r.url) as c:
                if i == 0:
                    code = await c.create("arena", max_players=8)
                else:
                    await c.join(code)
                task_status.started()
                await moving.wait()
                last_tick, last_at, worst, n = c.tick, time.monotonic(), 0.0, 0
                k = 0
                while not stop.is_set():
                    k += 1
                    await c.send_input({"x": float(k % 97), "y": float(k % 89), "angle": k / 7})
                    seen = last_tick
                    with trio.move_on_after(1 / rate):
                        await c.wait_for(lambda c, seen=seen: c.tick != seen, timeout=5)
                    now = time.monotonic()
                    if c.tick != last_tick:
                        worst = max(worst, now - last_at)
                        last_tick, last_at, n = c.tick, now, n + 1
                gaps[c.player_id] = max(worst, time.monotonic() - last_at)
                frames[c.player_id] = n

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(7):
                    await nursery.start(mover, i)
                room = r.relay.registry.get(code)
                # the slow one: a tiny receive buffer, and it reads nothing after Joined
                async with open_raw(r.port, message_queue_size=0, receive_buffer=1024) as slow:
                    assert type(await slow.hello()) is Welcome
                    await slow.send(Join(1, code))
                    moving.set()
                    started = time.monotonic()
                    await eventually(lambda: room.statistics().slow_closed == 1, timeout=20)
                    closed_after = time.monotonic() - started
                    # reading again, it finds the state frames it let pile up, then the close
                    close_code, reason = await slow.wait_closed(timeout=5)
                    assert close_code == CloseCode.SLOW_CLIENT, reason
                    await eventually(lambda: len(room.members()) == 7)
                    await trio.sleep(0.3)  # the others carry on after the close
                stop.set()
        assert len(gaps) == 7
        for pid, gap in gaps.items():
            assert gap < 0.5, f"{pid} went {gap:.2f} s without a state frame"
            # loosely: the others kept receiving at the tick rate all along
            assert frames[pid] > (closed_after + 0.3) * rate / 4, frames


# -- garbage -----------------------------------------------------------------------------

_GARBAGE: dict[str, tuple[bytes | str, str | None, int | None]] = {
    # name: (message, error code sent, close code (None: the connection stays))
    "random_bytes": (
        b"\xc1\x07\xfe\x00\x13\x37garbage" + bytes(range(40)),
        "malformed_frame",
        None,
    ),
    "unknown_frame_type": (msgpack.packb([99, 1, "x"]), "unknown_frame", None),
    "invalid_field": (msgpack.packb([8, "seq?", {}]), "invalid_field", None),
    "text_message": ("hello, relay", "text_frame", CloseCode.UNSUPPORTED_DATA),
    "oversized": (b"\x00" * 5000, None, CloseCode.MESSAGE_TOO_BIG),
}


@pytest.mark.parametrize("kind", sorted(_GARBAGE))
async def test_garbage_in_a_room_is_answered_and_others_keep_being_served(
    tmp_path: Path, transport: str, kind: str
) -> None:
    message, error_code, close_code = _GARBAGE[kind]
    config = fast_config(tmp_path, transport, tick_rate=50, max_frame_bytes=4096)
    async with start(config) as r, connect(r.url) as good:
        code = await good.create("arena")
        async with open_raw(r.port) as raw:
            await raw.hello()
            await raw.send(Join(7, code))
            joined = await raw.recv()
            assert type(joined) is Joined
            await raw.send_raw(message)
            if error_code is not None:
                error = await raw.recv_match(lambda f: type(f) is Error)
                assert error.code == error_code
            if close_code is None:
                # the connection still works: a ping is answered, state keeps coming
                await raw.send(Ping(12345))
                pong = await raw.recv_match(lambda f: type(f) is Pong)
                assert pong.nonce == 12345
                await raw.send(Input(1, {"x": 42.0}))
                await good.wait_for(
                    lambda g: g.state["players"][raw_id(r, code, good)]["x"] == 42.0
                )
            else:
                got, _ = await raw.wait_closed()
                assert got == close_code
        # the well-behaved client was served throughout, and still is
        seq = await good.send_input({"y": 7.0})
        await good.wait_for(lambda g: g.state["players"][g.player_id]["seq"] == seq)
        if error_code is not None:
            assert r.relay.stats.protocol_errors == 1


def raw_id(r: Any, code: str, good: RelayClient) -> str:
    """The player id of the one member of room ``code`` that is not ``good``."""
    return next(p for p in r.public_state(code)["players"] if p != good.player_id)


async def test_a_first_frame_other_than_hello_is_closed_with_1002(
    tmp_path: Path, transport: str
) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as good,
    ):
        await good.create("arena")
        async with open_raw(r.port) as raw:
            await raw.send(Ping(1))
            error = await raw.recv()
            assert type(error) is Error and error.code == "hello_required"
            code, _ = await raw.wait_closed()
            assert code == CloseCode.PROTOCOL_ERROR
        seq = await good.send_input({"x": 1.0})
        await good.wait_for(lambda g: g.state["players"][g.player_id]["seq"] == seq)


async def test_an_unsupported_protocol_version_is_closed_with_4002(
    tmp_path: Path, transport: str
) -> None:
    async with start(fast_config(tmp_path, transport)) as r, open_raw(r.port) as raw:
        await raw.send(Hello(PROTOCOL_VERSION + 1))
        error = await raw.recv()
        assert type(error) is Error and error.code == "unsupported_version"
        code, _ = await raw.wait_closed()
        assert code == CloseCode.UNSUPPORTED_VERSION


async def test_garbage_in_the_lobby_keeps_the_connection(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport)) as r,
        open_raw(r.port, subprotocols=[CBOR]) as raw,
    ):
        await raw.hello()
        await raw.send_raw(b"\xff\xff\xff")
        error = await raw.recv()
        assert type(error) is Error and error.code == "malformed_frame"
        await raw.send(Input(1, {"x": 1.0}))
        error = await raw.recv()
        assert type(error) is Error and error.code == "not_in_room" and error.ref == 1
        await raw.send(Ping(9))
        assert await raw.recv() == Pong(9)


# -- one frame per tick ------------------------------------------------------------------


async def test_at_most_one_frame_per_client_per_tick(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as mover,
    ):
        code = await mover.create("arena")
        async with open_raw(r.port) as raw:
            await raw.hello()
            await raw.send(Join(1, code))
            assert type(await raw.recv()) is Joined
            ticks: list[int] = []
            results = 0
            calls = 0

            async def flood() -> None:
                nonlocal calls
                # several inputs and RPCs per tick from both clients
                for k in range(1, 101):
                    await mover.send_input({"x": float(k)})
                    await raw.send(Input(k, {"y": float(k)}))
                    calls += 1
                    await raw.send(Rpc(1000 + k, "room", "dance"))
                    if k % 4 == 0:
                        await trio.sleep(0.005)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    while results < 100:
                        frame = await raw.recv()
                        # everything for this client travels inside its one State frame
                        assert type(frame) is State, frame
                        ticks.append(frame.tick)
                        results += sum(type(m) is RpcResult for m in frame.msgs)
            assert calls == 100
            assert ticks == sorted(set(ticks)), "two frames in one tick"
            assert len(ticks) <= ticks[-1] - ticks[0] + 1
            assert len(ticks) > 1


# -- heartbeat and hello timeout ---------------------------------------------------------


async def test_a_client_that_sends_no_hello_is_closed_with_4001(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(tmp_path, transport, hello_timeout=0.3)
    async with start(config) as r, open_raw(r.port) as raw:
        started = time.monotonic()
        error = await raw.recv()
        assert type(error) is Error and error.code == "hello_timeout"
        code, _ = await raw.wait_closed()
        assert code == CloseCode.UNAUTHORIZED
        assert 0.25 < time.monotonic() - started < 3


async def test_a_client_that_answers_no_pings_is_closed_with_4006(
    tmp_path: Path, transport: str
) -> None:
    config = fast_config(
        tmp_path, transport, hello_timeout=0.3, heartbeat_interval=0.2, heartbeat_timeout=0.3
    )
    async with start(config) as r, connect(r.url) as alive:
        # a message queue of 0: once an unread message waits, this client stops
        # reading its socket, so the relay's WebSocket pings go unanswered
        async with open_raw(r.port, message_queue_size=0) as deaf:
            assert type(await deaf.hello()) is Welcome
            await deaf.send(Ping(1))
            await eventually(lambda: r.relay.stats.heartbeat_timeouts >= 1, timeout=5)
            assert await deaf.recv() == Pong(1)
            code, _ = await deaf.wait_closed()
            assert code == CloseCode.HEARTBEAT_TIMEOUT
        # the SDK client answers pings: it outlived several heartbeats
        assert alive.closed is None
        assert await alive.ping() < 1.0
        assert r.relay.stats.heartbeat_timeouts == 1


# -- shutdown ------------------------------------------------------------------------------


async def test_shutdown_closes_every_client_with_1001(tmp_path: Path, transport: str) -> None:
    async with (
        start(fast_config(tmp_path, transport, tick_rate=50)) as r,
        connect(r.url) as in_room,
        connect(r.url, codec="cbor") as in_lobby,
    ):
        await in_room.create("arena")
        async with open_raw(r.port) as raw:
            await raw.hello()
            with trio.fail_after(5):
                await r.relay.shutdown()
            assert r.relay.connections == set()
            assert r.relay.registry.rooms() == []
            got, _ = await raw.wait_closed()
            assert got == CloseCode.GOING_AWAY
        for c in (in_room, in_lobby):
            await eventually(lambda c=c: c.closed is not None)
            assert c.closed[0] == CloseCode.GOING_AWAY
        assert r.relay.health()["status"] == "down"
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", r.port)
