"""``relay serve`` killed with SIGKILL mid-game and started again on the same store (Redis,
then the embedded SQLite file): the room comes back, the clients reconnect with their
resume tokens into their seats, and no input acknowledged before the last flush is lost."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from redisproc import RedisProcess, redis_server  # noqa: F401  (redis_server: fixture)

from relay.client import Backoff, ReconnectPolicy, RelayClient, connect

ROOT = Path(__file__).resolve().parent.parent
PLAYERS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RelayServer:
    """``relay serve`` in a child process, on fixed ports so that a restart reuses them."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.http_port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "relay",
            "serve",
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--allow-anonymous",
            *args,
        ]
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait for its "listening" line (blocking: run it in a thread)."""
        self.proc = subprocess.Popen(
            self.args,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("relay listening on"):
                return
        self.proc.wait(timeout)
        raise AssertionError(f"relay serve did not start: {self.proc.stderr.read()}")

    def kill(self) -> str:
        """SIGKILL (like a crash or an OOM kill); returns what it wrote on stderr."""
        if self.proc is None:
            return ""
        self.proc.kill()
        self.proc.wait(10)
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        self.proc = None
        return stderr

    async def get(self, path: str) -> str:
        stream = await trio.open_tcp_stream("127.0.0.1", self.http_port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
        return data.partition(b"\r\n\r\n")[2].decode()

    async def metric(self, name: str) -> float:
        text = await self.get("/metrics")
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        assert match is not None, name
        return float(match.group(1))


@pytest.fixture
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'relay.sqlite3'}"
    else:
        server: RedisProcess = request.getfixturevalue("redis_server")
        yield server.url


POLICY = ReconnectPolicy(
    attempts=100, backoff=Backoff(base=0.05, cap=0.25), grace=30.0, heartbeat_interval=None
)


def own_seq(client: RelayClient) -> int:
    return client.state["players"][client.player_id]["seq"]


@pytest.mark.parametrize(
    "store_url", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)], indirect=True
)
async def test_sigkill_mid_game_then_restart_on_the_same_store(tmp_path, store_url):
    server = RelayServer("--store", store_url, "--resume-key-file", str(tmp_path / "resume.key"))
    await trio.to_thread.run_sync(server.start)
    try:
        await _play_through_a_crash(server)
    finally:
        server.kill()


async def _play_through_a_crash(server: RelayServer) -> None:
    async with trio.open_nursery() as nursery:
        clients: list[RelayClient] = []
        for _ in range(PLAYERS):
            clients.append(await nursery.start(_client, server.url))
        code = await clients[0].create("arena")
        for c in clients[1:]:
            await c.join(code)
        seats = [c.seat for c in clients]
        players = [c.player_id for c in clients]
        stop, gate = trio.Event(), {"open": True}
        nursery.start_soon(_inputs, clients, stop, gate)
        await trio.sleep(1.0)

        # every input acknowledged by now is in a flush that starts after now...
        acked = [own_seq(c) for c in clients]
        assert min(acked) > 5
        flushes = await server.metric("relay_store_flushes_total")
        with trio.fail_after(5):
            while await server.metric("relay_store_flushes_total") < flushes + 2:
                await trio.sleep(0.02)
        # ...which has completed: kill the relay while the inputs keep coming
        server.kill()
        gate["open"] = False  # hold new inputs until the restored state is checked
        await trio.sleep(0.3)
        assert all(c.reconnecting for c in clients)
        await trio.to_thread.run_sync(server.start)

        with trio.fail_after(20):
            for c in clients:
                await c.wait_for(lambda c: not c.reconnecting and c.code == code, timeout=20)
        assert [c.seat for c in clients] == seats  # each got its own seat back
        assert [c.player_id for c in clients] == players
        health = await server.get("/healthz")
        assert '"restored_rooms": 1' in health
        for c in clients:  # the restored room has every acknowledged input, for everyone
            seqs = [c.state["players"][pid]["seq"] for pid in players]
            assert all(s >= a for s, a in zip(seqs, acked, strict=True)), (seqs, acked)
        gate["open"] = True
        for c, before in zip(clients, acked, strict=True):
            await c.wait_for(lambda c, before=before: own_seq(c) > before + 20, timeout=5)

        stop.set()
        await trio.sleep(0.5)
        states = [c.state for c in clients]
        assert all(s == states[0] for s in states)  # every mirror agrees
        members = states[0]["room"]["members"]
        assert len(members) == PLAYERS and all(m["connected"] for m in members.values())
        nursery.cancel_scope.cancel()


async def _client(url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with connect(url, reconnect=POLICY) as client:
        task_status.started(client)
        await trio.sleep_forever()


async def _inputs(clients: list[RelayClient], stop: trio.Event, gate: dict[str, bool]) -> None:
    """Every client moves at 20 Hz, except while it is reconnecting or the gate is shut."""
    step = 0
    while not stop.is_set():
        step += 1
        for c in clients:
            if c.reconnecting or c.code is None or not gate["open"]:
                continue
            try:
                await c.send_input({"x": float(step % 90), "y": float(step % 13)})
            except Exception:  # the connection went between the check and the send
                pass
        await trio.sleep(0.05)
