"""The client SDK's automatic reconnection: backoff with jitter, resume tokens, heartbeat.

When a client's connection drops while it holds a seat (it is in a room and
has the resume token of its last ``Joined``), ``keep_connected`` opens a new
connection and sends ``Hello(ticket, resume=token)``; the relay gives the
seat back with ``Joined`` (a keyframe) or answers an ``Error`` (the seat is
gone), and the client's mirror, ``code`` and ``seat`` follow. Attempts are
spaced by exponential backoff with jitter (``Backoff``) and stop after
``ReconnectPolicy.attempts`` tries or once the relay's reconnect grace has
passed since the drop (the seat is released then anyway).

Only a drop is retried: closes the relay made on purpose (normal, going
away, policy, replaced by a newer connection, room closed...) are final.
``RETRYABLE_CLOSES`` lists the ones that are not. A heartbeat (a WebSocket
ping every ``heartbeat_interval``) notices a connection that went silent
(half-open) and drops it, which starts a reconnect.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from protocol import PROTOCOL_VERSION, Hello

if TYPE_CHECKING:
    from .client import RelayClient

__all__ = [
    "RETRYABLE_CLOSES",
    "Backoff",
    "ReconnectPolicy",
    "heartbeat",
    "keep_connected",
    "open_connection",
]

log = logging.getLogger("relay.client")

#: close codes after which a client reconnects: abnormal closure (no close frame:
#: the network), internal error, service restart, try again later, bad gateway,
#: heartbeat timeout
RETRYABLE_CLOSES = frozenset({1006, 1011, 1012, 1013, 1014, 4006})
#: what a failed attempt raises (inside exception groups, from the connection's nursery)
_ATTEMPT_ERRORS = (
    OSError,
    HandshakeError,
    ConnectionClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt ``n`` (from 1) waits
    ``uniform(1 - jitter, 1) * min(cap, base * factor ** (n - 1))`` seconds.

    The jitter spreads the reconnects of many clients dropped at once (a relay
    restart) so they do not come back in one burst.
    """

    base: float = 0.1
    factor: float = 2.0
    cap: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.factor >= 1 and self.cap >= self.base):
            raise ValueError("backoff needs base > 0, factor >= 1 and cap >= base")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction in [0, 1]")

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * self.factor ** (attempt - 1))
        return ceiling * (1 - self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """When and how a client reconnects (``connect(reconnect=...)``).

    ``attempts``: tries per drop. ``grace``: give up this long after the drop
    (None: the relay's ``reconnect_grace`` from ``Welcome.server``).
    ``heartbeat_interval``: seconds between the client's pings, and how long
    it waits for each pong (None: no heartbeat). ``attempt_timeout``: how long
    one attempt may take to be welcomed. ``seed``: of the jitter (tests).
    """

    attempts: int = 20
    attempt_timeout: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)
    grace: float | None = None
    heartbeat_interval: float | None = 10.0
    seed: int | None = None


@asynccontextmanager
async def open_connection(
    url: str,
    subprotocols: list[str],
    *,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket to ``url`` (ws or wss) whose TCP stream is always closed at
    the end, also when the handshake fails or times out (``open_websocket_url`` of
    trio-websocket 0.12 leaves it open then). Raises ``ValueError`` for a bad URL,
    ``trio.TooSlowError`` after ``timeout``, and what the connection raises."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname if port in (80, 443) else f"{parts.hostname}:{port}"
    stream: trio.abc.Stream | None = None
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(timeout):
                if secure:
                    stream = await trio.open_ssl_over_tcp_stream(
                        parts.hostname,
                        port,
                        ssl_context=ssl_context or ssl.create_default_context(),
                        https_compatible=True,
                    )
                else:
                    stream = await trio.open_tcp_stream(parts.hostname, port)
                ws = await wrap_client_stream(
                    nursery,
                    stream,  # type: ignore[arg-type]
                    host,
                    resource,
                    subprotocols=subprotocols,
                    message_queue_size=256,
                    receive_buffer_size=None,
                )
            try:
                yield ws
            finally:
                with trio.move_on_after(1.0) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


def wants_reconnect(client: RelayClient, lost: tuple[int, str]) -> bool:
    """Whether a connection that ended with ``lost`` (close code, reason) is retried:
    a drop (``RETRYABLE_CLOSES``) of a client that holds a seat and is not closing."""
    return (
        not client._stopping
        and lost[0] in RETRYABLE_CLOSES
        and client.code is not None
        and client.resume_token is not None
        and _grace(client) > 0
    )


def _grace(client: RelayClient) -> float:
    policy = client._policy
    if policy is not None and policy.grace is not None:
        return policy.grace
    value = client.server.get("reconnect_grace", 0)
    return float(value) if isinstance(value, (int, float)) else 0.0


async def heartbeat(client: RelayClient, ws: WebSocketConnection, interval: float) -> None:
    """Ping every ``interval`` seconds; a pong that does not come within ``interval``
    means the connection went silent: drop it (the reader then sees 1006)."""
    while True:
        await trio.sleep(interval)
        with trio.move_on_after(interval) as scope:
            try:
                await ws.ping()
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                return
        if scope.cancelled_caught:
            log.info("no pong from the relay within %s s: dropping the connection", interval)
            client.stats.heartbeat_timeouts += 1
            await trio.aclose_forcefully(ws._stream)  # the reader ends with 1006
            return


async def keep_connected(
    client: RelayClient,
    url: str,
    *,
    ticket: str | None,
    client_name: str,
    connect_timeout: float,
) -> None:
    """Reconnect ``client`` after every retryable drop, for as long as it lives.

    Runs in the client's nursery. The reader signals a drop (``client._dropped``,
    see ``RelayClient._ended``); this task then tries new connections until one
    is welcomed, or the relay refuses for good, or the policy gives up, in which
    case ``client.closed`` is set (what ``wait_for`` and friends watch).
    """
    policy = client._policy
    assert policy is not None
    rng = random.Random(policy.seed)
    while client.closed is None:
        await client._dropped.wait()
        client._dropped = trio.Event()
        lost = client.connection_lost or (1006, "")
        deadline = trio.current_time() + _grace(client)
        attempt = 0
        while True:
            attempt += 1
            if attempt > policy.attempts or trio.current_time() >= deadline:
                client._give_up(lost)
                break
            await trio.sleep(policy.backoff.delay(attempt, rng))
            client.stats.reconnect_attempts += 1
            timeout = min(connect_timeout, policy.attempt_timeout)
            outcome = await _attempt(client, url, ticket, client_name, timeout)
            if outcome == "retry":
                continue
            if outcome == "final":
                client._give_up(client.connection_lost or lost)
            break  # "ended": a welcomed connection served and ended (the reader decided)


async def _attempt(
    client: RelayClient, url: str, ticket: str | None, client_name: str, timeout: float
) -> str:
    """One reconnect: "retry" when no connection was welcomed, "final" when the relay
    refused it for good (a close that is not a drop), "ended" once a welcomed
    connection has ended."""
    outcome = "retry"
    client._attempting = True  # until welcomed, the reader's end is not a new drop
    try:
        async with open_connection(
            url, [client.codec.subprotocol], timeout=timeout, ssl_context=client.ssl_context
        ) as ws:
            outcome = await _serve(client, ws, ticket, client_name, timeout)
    except* _ATTEMPT_ERRORS as group:
        log.info("reconnect attempt failed: %r", group.exceptions[0])
    finally:
        client._attempting = False
    return outcome


async def _serve(
    client: RelayClient,
    ws: WebSocketConnection,
    ticket: str | None,
    client_name: str,
    connect_timeout: float,
) -> str:
    client._attach(ws)
    policy = client._policy
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._reader)
        if policy is not None and policy.heartbeat_interval:
            nursery.start_soon(heartbeat, client, ws, policy.heartbeat_interval)
        client._resuming = True
        await client.send(Hello(PROTOCOL_VERSION, ticket, client.resume_token, client_name))
        with trio.move_on_after(connect_timeout):
            while not client._welcome.is_set() and not client._reader_done:
                await client._changed.wait()
        if not client._welcome.is_set():
            client._resuming = False
            nursery.cancel_scope.cancel()
            lost = client.connection_lost
            return "final" if lost is not None and lost[0] not in RETRYABLE_CLOSES else "retry"
        client._attempting = False
        while client._resuming and not client._reader_done:
            await client._changed.wait()  # Joined (the seat is back) or Error (it is gone)
        client.reconnecting = False
        client.stats.reconnects += 1
        client._notify()
        while not client._reader_done:
            await client._changed.wait()
        nursery.cancel_scope.cancel()
    return "ended"
