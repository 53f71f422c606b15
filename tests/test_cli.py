"""The ``relay`` command run as a real process: serve, keygen, ticket, flags, HTTP port.

Each test starts ``python -m relay`` in a subprocess, talks to it over loopback
with the client SDK or plain HTTP, and stops it with SIGTERM, as an operator
or a process supervisor would.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from protocol import CloseCode
from relay.client import ClientError, connect

RELAY = [sys.executable, "-m", "relay"]
_LISTENING = re.compile(r"relay listening on ws://127\.0\.0\.1:(\d+)")
_HTTP = re.compile(r"relay http on http://127\.0\.0\.1:(\d+)")


@dataclass(slots=True)
class Served:
    process: trio.Process
    port: int
    http_port: int | None
    stdout: list[str] = field(default_factory=list)
    terminated: bool = False

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def terminate(self) -> None:
        """SIGTERM, once: a second one during shutdown would kill the process outright."""
        if not self.terminated:
            self.terminated = True
            self.process.send_signal(signal.SIGTERM)


class _Lines:
    """Lines of a subprocess pipe, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(4096)
            if not chunk:
                raise EOFError(f"the process closed its output; so far: {self.buffer!r}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


@asynccontextmanager
async def serve(tmp_path: Path, *flags: str, http: bool = False) -> AsyncIterator[Served]:
    """``relay serve --port 0 FLAGS`` until the body ends; then SIGTERM, and exit 0 expected."""
    args = [*RELAY, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), *flags]
    if http:
        args += ["--http-port", "0"]
    process = await trio.lowlevel.open_process(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        lines = _Lines(process.stdout)
        with trio.fail_after(15):
            first = await lines.next()
            listening = _LISTENING.fullmatch(first)
            assert listening, first
            http_port = None
            if http:
                second = await lines.next()
                found = _HTTP.match(second)
                assert found, second
                http_port = int(found.group(1))
        served = Served(process, int(listening.group(1)), http_port, [first])
        yield served
        served.terminate()
        with trio.fail_after(10):
            while True:
                try:
                    served.stdout.append(await lines.next())
                except EOFError:
                    break
            code = await process.wait()
            stderr = await _read_all(process.stderr)
        assert "Traceback" not in stderr, stderr
        assert code == 0, stderr
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5):
                await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()


async def _read_all(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data.decode()


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET; the status, the headers and the body."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n".encode())
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# -- serve ---------------------------------------------------------------------------------


async def test_serve_prints_its_address_and_sigterm_closes_clients_with_1001(
    tmp_path: Path,
) -> None:
    async with (
        serve(tmp_path, "--allow-anonymous", "--tick-rate", "50") as served,
        connect(served.url) as client,
    ):
        code = await client.create("arena")
        assert len(code) == 4
        assert client.server["tick_rate"] == 50
        served.terminate()
        with trio.fail_after(10):
            while client.closed is None:
                await trio.sleep(0.01)
        assert client.closed[0] == CloseCode.GOING_AWAY
    assert any("SIGTERM" in line for line in served.stdout), served.stdout


async def test_healthz_and_metrics(tmp_path: Path) -> None:
    async with serve(tmp_path, "--allow-anonymous", http=True) as served:
        assert served.http_port is not None
        async with connect(served.url) as client:
            await client.create("arena")
            seq = await client.send_input({"x": 1.0})
            # a tick-polled transport counts the input when the room's tick reads it
            await client.wait_for(lambda c: c.state["players"][c.player_id]["seq"] >= seq)
            status, headers, body = await http_get(served.http_port, "/healthz")
            assert status == 200
            assert headers["content-type"] == "application/json"
            health = json.loads(body)
            assert health["status"] == "ok"
            assert health["uptime"] >= 0
            assert health["rooms"] == 1
            assert health["connections"] == 1
            assert isinstance(health["store"], dict)

            status, headers, body = await http_get(served.http_port, "/metrics")
            assert status == 200
            assert headers["content-type"].startswith("text/plain")
            text = body.decode()
            for name in (
                "relay_connections",
                "relay_rooms",
                "relay_tick_duration_seconds_bucket",
                "relay_tick_duration_seconds_count",
                "relay_tick_overruns_total",
                "relay_frames_sent_total",
                "relay_frames_received_total",
                "relay_bytes_sent_total",
                "relay_bytes_received_total",
                "relay_protocol_errors_total",
                "relay_room_restarts_total",
            ):
                assert re.search(rf"^{name}(\{{[^}}]*\}})? [0-9.e+]+$", text, re.M), name
            assert re.search(r"^relay_connections 1(\.0)?$", text, re.M)
            assert re.search(r"^relay_rooms 1(\.0)?$", text, re.M)
            received = re.search(r"^relay_frames_received_total ([0-9.e+]+)$", text, re.M)
            assert received is not None and float(received.group(1)) >= 3

            status, _, _ = await http_get(served.http_port, "/nowhere")
            assert status == 404


# -- keys and tickets ----------------------------------------------------------------------


async def test_keygen_and_ticket_make_a_ticket_that_serve_accepts(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = await trio.run_process(
        [*RELAY, "keygen", "--out", str(keys), "--name", "main"], capture_stdout=True
    )
    assert (keys / "main.secret").exists() and (keys / "main.public").exists()
    assert b"main.secret" in made.stdout
    minted = await trio.run_process(
        [
            *RELAY,
            "ticket",
            "--key",
            str(keys / "main.secret"),
            "--player",
            "p-7",
            "--name",
            "Grace",
            "--ttl",
            "600",
        ],
        capture_stdout=True,
    )
    ticket = minted.stdout.decode().strip()
    assert ticket.startswith("v4.public.") and "\n" not in ticket
    async with serve(tmp_path, "--keys", str(keys / "main.public")) as served:
        async with connect(served.url, ticket=ticket) as client:
            assert client.player_id == "p-7"
            await client.create("arena")
            assert client.state["room"]["members"]["p-7"]["name"] == "Grace"
        with pytest.raises(ClientError) as refused:
            async with connect(served.url):
                pass  # pragma: no cover - no ticket, no anonymous play
        assert refused.value.code == "ticket_required"


# -- bad flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--port", "abc"], "port"),
        (["--tick-rate", "0"], "tick_rate"),
        (["--tls-cert", "cert.pem"], "--tls-key"),
        (["--keys", "missing.public"], "missing.public"),
        (["--heartbeat-interval", "-1"], "heartbeat_interval"),
        (["--transport", "carrier-pigeon"], "carrier-pigeon"),
    ],
)
def test_a_bad_flag_exits_nonzero_with_one_line(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    done = subprocess.run(
        [*RELAY, "serve", "--port", "0", *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("relay") and says in lines[0].lower(), lines[0]
    assert "listening" not in done.stdout


def test_python_m_relay_help() -> None:
    done = subprocess.run([*RELAY, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for command in ("serve", "keygen", "ticket"):
        assert command in done.stdout
    done = subprocess.run([*RELAY, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "--allow-anonymous" in done.stdout and "RELAY_TICK_RATE" in done.stdout
