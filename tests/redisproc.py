"""A real redis-server for tests: started on a free port in a temporary directory.

``RedisProcess`` starts, stops, restarts (same port), kills, pauses and resumes its own
server; the ``redis_server`` fixture yields one per test. When redis-server cannot start,
the test fails loudly with the reason and the server's log: Redis tests never skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisProcess", "RedisStartError", "redis_server"]


class RedisStartError(RuntimeError):
    """redis-server did not start or did not answer PING in time."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """One redis-server on 127.0.0.1, without persistence (``--save "" --appendonly no``).

    Args:
        binary: the redis-server executable (looked up on PATH).
        port: the port, or None for a free one (kept across ``stop``/``start``).
        start_timeout: seconds to wait for PING after starting.
    """

    def __init__(
        self, *, binary: str = "redis-server", port: int | None = None, start_timeout: float = 10.0
    ) -> None:
        self.binary = binary
        self.port = port or _free_port()
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="redisproc-"))
        self.logfile = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return "(no log file)"

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        Raises:
            RedisStartError: it is already running, the binary is missing, it exited, or
                it did not answer within ``start_timeout`` (the message has the log).
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RedisStartError("redis-server is already running")
        path = shutil.which(self.binary)
        if path is None:
            raise RedisStartError(f"{self.binary!r} not found on PATH ({os.environ.get('PATH')})")
        args = [
            path,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                stderr = (
                    self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                )
                self.proc = None
                raise RedisStartError(
                    f"redis-server exited at start (port {self.port}):\n{stderr}\n{self.log()}"
                )
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.kill()
        raise RedisStartError(
            f"redis-server did not answer PING within {self.start_timeout} s:\n{self.log()}"
        )

    def stop(self) -> None:
        """Shut the server down gracefully (SIGTERM) and wait for it; data is lost."""
        if self.proc is None:
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), like a crash."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self._reap()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open but nothing is answered."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause`` (SIGCONT)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, **kwargs: object):  # -> redis.Redis
        """A plain sync redis-py client on this server (for the tests' own checks)."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5, **kwargs)


@contextlib.contextmanager
def running_redis(**kwargs: object) -> Iterator[RedisProcess]:
    """A started ``RedisProcess``, closed on exit; fails the test if it cannot start."""
    server = RedisProcess(**kwargs)  # type: ignore[arg-type]
    try:
        server.start()
    except RedisStartError as exc:
        server.close()
        pytest.fail(f"cannot start redis-server for this test: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    """A fresh redis-server for one test (fails, never skips, if it cannot start)."""
    with running_redis() as server:
        yield server
