"""The roomwire client SDK for Trio: connect, join, mirror the room state, send inputs, call RPCs.

    async with relay.client.connect("ws://127.0.0.1:7350", ticket=ticket) as client:
        await client.create("quiz8")
        await client.rpc("room", "start_game")
        await client.wait_for(lambda c: c.state["game"]["phase"] == "final", timeout=600)

The client keeps ``state``, a mirror of the room's public state, by applying
each state frame's delta to it; ``tick`` is the tick the mirror is at. It is
the reference for writing a client in another language (docs/client.md).
"""

from __future__ import annotations

import functools
import itertools
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from protocol import (
    CODECS,
    PROTOCOL_VERSION,
    Codec,
    Create,
    Error,
    Event,
    Frame,
    Hello,
    Input,
    Join,
    Joined,
    Leave,
    Ping,
    Pong,
    ProtocolError,
    QuickJoin,
    Rpc,
    RpcResult,
    Signal,
    State,
    Welcome,
    apply,
)

from ._client_reconnect import (
    Backoff,
    ReconnectPolicy,
    heartbeat,
    keep_connected,
    wants_reconnect,
)

__all__ = ["Backoff", "ClientError", "ReconnectPolicy", "RelayClient", "RpcError", "connect"]

log = logging.getLogger("relay.client")

_FIRST_REQUEST_ID = 1 << 32


_RPC_LOCAL_WAIT = 75.0  # longer than a relay's default cap on RPC timeouts (60 s)


class ClientError(Exception):
    """The relay answered a request with an error frame. ``code`` is the error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RpcError(ClientError):
    """An RPC came back with ``ok=False`` (or timed out: code ``rpc_timeout``)."""


@dataclass(slots=True)
class _Pending:
    done: trio.Event
    result: Frame | None = None


@dataclass(slots=True)
class ClientStatistics:
    frames_received: int = 0
    bytes_received: int = 0
    state_frames: int = 0
    keyframes: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    desyncs: int = 0
    reconnects: int = 0  # connections that took the seat back (or tried to) after a drop
    reconnect_attempts: int = 0
    heartbeat_timeouts: int = 0


class RelayClient:
    """A connected client. Create it with ``connect``; one task drives its reader."""

    def __init__(self, ws: WebSocketConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.ssl_context: ssl.SSLContext | None = None  # for wss reconnects
        self.player_id: str | None = None
        self.server: Mapping[str, Any] = {}
        self.code: str | None = None
        self.seat: int | None = None
        self.resume_token: str | None = None
        self.state: dict[str, Any] = {}
        self.tick = -1
        self.closed: tuple[int, str] | None = None
        self.errors: deque[Error] = deque(maxlen=256)
        self.events: deque[Event] = deque(maxlen=1024)
        self.signals: deque[Signal] = deque(maxlen=1024)
        self.stats = ClientStatistics()
        self.rpc_handlers: dict[str, Callable[[str | None, Any], Any]] = {}
        # Error.ref names a request id or an input seq (which counts 1, 2, 3...):
        # request ids start far above any seq so an input's error never
        # resolves a pending request.
        self._ids = itertools.count(_FIRST_REQUEST_ID)
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._changed = trio.Event()
        self._welcome = trio.Event()
        # reconnection (relay._client_reconnect): set by connect()
        self._policy: ReconnectPolicy | None = None
        self._nursery: trio.Nursery | None = None  # runs async RPC handlers (connect())
        self._stopping = False  # connect() is exiting: no drop is retried
        self._dropped = trio.Event()  # the reader saw a drop worth a reconnect
        self._reader_done = False
        self._attempting = False  # a reconnect's handshake is under way
        self._resuming = False  # Hello carried a resume token; Joined or Error answers it
        #: True between a drop and the reconnect that took the seat back
        self.reconnecting = False
        #: how the last connection ended (close code, reason), while reconnecting
        self.connection_lost: tuple[int, str] | None = None

    # -- requests -----------------------------------------------------------

    async def send(self, frame: Frame) -> None:
        data = self.codec.encode(frame)
        self.stats.frames_sent += 1
        self.stats.bytes_sent += len(data)
        await self.ws.send_message(data)

    async def _request(self, frame: Frame, timeout: float) -> Frame:
        frame_id = frame.frame_id()
        assert frame_id is not None
        pending = _Pending(trio.Event())
        self._pending[frame_id] = pending
        try:
            await self.send(frame)
            with trio.fail_after(timeout):
                await pending.done.wait()
        finally:
            self._pending.pop(frame_id, None)
        result = pending.result
        if result is None:  # the reader stopped: the connection is gone
            raise ClientError("closed", f"connection closed: {self.closed}")
        if type(result) is Error:
            raise ClientError(result.code, result.message)
        return result

    async def create(self, mode: str, *, timeout: float = 10.0, **options: Any) -> str:
        """Create a room of ``mode``, join it, and return its code."""
        await self._request(Create(next(self._ids), mode, options), timeout)
        assert self.code is not None
        return self.code

    async def join(self, code: str, *, timeout: float = 10.0) -> None:
        await self._request(Join(next(self._ids), code), timeout)

    async def quick_join(self, mode: str, *, timeout: float = 10.0) -> str:
        await self._request(QuickJoin(next(self._ids), mode), timeout)
        assert self.code is not None
        return self.code

    async def leave(self, *, timeout: float = 10.0) -> None:
        """Leave the room; returns once the relay has put this client back in the lobby
        (its ``Event("left")``), so a ``create`` or ``join`` right after is taken."""
        await self.send(Leave(next(self._ids)))
        if self.code is not None:
            await self.wait_for(lambda c: c.code is None, timeout=timeout)

    async def send_input(self, changes: Mapping[str, Any]) -> int:
        """Send a delta of this player's own entity; returns its sequence number."""
        self._seq += 1
        await self.send(Input(self._seq, dict(changes)))
        return self._seq

    async def rpc(
        self,
        target: str | list[str],
        method: str,
        args: Any = None,
        *,
        timeout: float | None = None,
        buffered: bool = False,
    ) -> Any:
        """Call ``method`` on ``target`` ("room", "host", a player id...) and return its value.

        A list of ids, "others" or "all" return ``{pid: {"ok", "value"}}``, one
        entry per callee. ``buffered`` (with "others" or "all"): the room also
        replays the call to players who join later (``unbuffer`` stops that).
        Raises ``RpcError`` when the callee (or the room) answers with an error,
        or with code ``rpc_timeout`` when no answer comes within ``timeout``
        (seconds; the relay caps it). Without ``timeout`` the relay's default
        applies and this call waits for the relay's answer.
        """
        timeout_ms = None if timeout is None else max(1, int(timeout * 1000))
        try:
            call = Rpc(next(self._ids), target, method, args, buffered, None, timeout_ms)
            # the relay answers rpc_timeout itself; the local bound only covers a lost relay
            local = _RPC_LOCAL_WAIT if timeout is None else timeout + 1.0
            result = await self._request(call, local)
        except trio.TooSlowError:
            raise RpcError("rpc_timeout", f"no answer to {method!r} within {timeout} s") from None
        except ClientError as exc:
            raise RpcError(exc.code, exc.message) from None
        assert type(result) is RpcResult
        if not result.ok:
            value = result.value if isinstance(result.value, Mapping) else {}
            raise RpcError(str(value.get("code", "rpc_error")), str(value.get("message", "")))
        return result.value

    async def ping(self, *, timeout: float = 10.0) -> float:
        """Round-trip time to the relay, in seconds; ``ClientError`` ``closed`` if the
        connection goes first."""
        start = trio.current_time()
        nonce = next(self._ids)
        pending = _Pending(trio.Event())
        self._pending[nonce] = pending
        try:
            await self.send(Ping(nonce))
            with trio.fail_after(timeout):
                await pending.done.wait()
        finally:
            self._pending.pop(nonce, None)
        if pending.result is None:
            raise ClientError("closed", f"connection closed: {self.closed}")
        return trio.current_time() - start

    # -- RPCs from others, voice ----------------------------------------------

    def register(self, method: str, handler: Callable[[str | None, Any], Any]) -> None:
        """Answer relayed calls of ``method`` with ``handler(caller, args)`` (sync or
        async); its return value is the result, an exception becomes an error
        (code ``rpc_failed``). Same as setting ``rpc_handlers[method]``."""
        self.rpc_handlers[method] = handler

    async def unbuffer(
        self, *, call_id: int | None = None, method: str | None = None, timeout: float = 10.0
    ) -> int:
        """Stop replaying this client's buffered calls (all, or those of ``method``, or the
        one whose call id was ``call_id``) to players who join later; returns how many."""
        args: dict[str, Any] = {}
        if call_id is not None:
            args["id"] = call_id
        if method is not None:
            args["method"] = method
        result = await self.rpc("room", "rpc.unbuffer", args, timeout=timeout)
        return int(result["removed"])

    async def join_voice(self, channel: str = "room", *, timeout: float = 10.0) -> list[str]:
        """Join voice ``channel`` (leaving any other); returns who is in it now."""
        result = await self.rpc("room", "voice.join", {"channel": channel}, timeout=timeout)
        return list(result["members"])

    async def leave_voice(self, *, timeout: float = 10.0) -> None:
        await self.rpc("room", "voice.leave", timeout=timeout)

    async def mute(self, muted: bool = True, *, timeout: float = 10.0) -> None:
        """Show yourself muted (or not) in your voice channel."""
        await self.rpc("room", "voice.mute", {"muted": muted}, timeout=timeout)

    async def host_mute(
        self,
        player_id: str,
        muted: bool = True,
        *,
        channel: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        """(The host only) mute a player in a voice channel (default: the one it is in):
        its offers there are refused (``muted``)."""
        args: dict[str, Any] = {"player": player_id, "muted": muted}
        if channel is not None:
            args["channel"] = channel
        await self.rpc("room", "voice.host_mute", args, timeout=timeout)

    async def set_voice_key(self, key: str | None, *, timeout: float = 10.0) -> None:
        """Publish a public key in the room state (``voice.<you>.key``) so peers can
        encrypt signals to you end to end; None withdraws it."""
        await self.rpc("room", "voice.set_key", {"key": key}, timeout=timeout)

    async def signal(self, kind: str, peer: str, payload: bytes) -> None:
        """Send a WebRTC signal (``offer``, ``answer``, ``ice``, ``bye``) to ``peer`` in your
        voice channel. The payload is opaque to the relay. A refusal comes back as
        an ``Error`` in ``errors`` (``not_in_channel``, ``muted``...)."""
        await self.send(Signal(kind, peer, payload))

    async def next_signal(self, *, peer: str | None = None, timeout: float = 10.0) -> Signal:
        """The next signal received (from ``peer``, if given), in arrival order."""
        with trio.fail_after(timeout):
            while True:
                for i, sig in enumerate(self.signals):
                    if peer is None or sig.peer == peer:
                        del self.signals[i]
                        return sig
                if self.closed is not None:
                    raise ConnectionClosed(None)
                await self._changed.wait()

    # -- waiting ------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[RelayClient], bool], *, timeout: float = 10.0
    ) -> None:
        """Wait until ``predicate(self)`` is true; checked after every frame received."""
        with trio.fail_after(timeout):
            while not predicate(self):
                if self.closed is not None:
                    raise ConnectionClosed(None)
                await self._changed.wait()

    async def next_event(self, name: str | None = None, *, timeout: float = 10.0) -> Event:
        """The next event (of ``name``, if given) received from now on, or already queued."""
        with trio.fail_after(timeout):
            while True:
                for i, ev in enumerate(self.events):
                    if name is None or ev.name == name:
                        del self.events[i]
                        return ev
                if self.closed is not None:
                    raise ConnectionClosed(None)
                await self._changed.wait()

    # -- reader ---------------------------------------------------------------

    async def _reader(self) -> None:
        lost = (1006, "reader stopped")
        try:
            while True:
                message = await self.ws.get_message()
                self.stats.frames_received += 1
                self.stats.bytes_received += len(message)
                if isinstance(message, str):
                    continue
                try:
                    frame = self.codec.decode(message)
                except ProtocolError as exc:
                    log.warning("undecodable frame from the relay: %s", exc)
                    continue
                await self._dispatch(frame)
                self._notify()
        except ConnectionClosed as exc:
            reason = exc.reason
            lost = (reason.code, reason.reason or "") if reason else (1006, "")
        finally:
            self._ended(lost)

    def _ended(self, lost: tuple[int, str]) -> None:
        """The connection is gone: fail what waits on it, then reconnect or close."""
        self._reader_done = True
        self.connection_lost = lost
        for pending in self._pending.values():
            pending.done.set()
        if self._attempting:
            pass  # a reconnect's handshake failed: keep_connected decides what next
        elif self._policy is not None and wants_reconnect(self, lost):
            self.reconnecting = True
            self._dropped.set()
        elif self.closed is None:
            self.closed = lost
        self._notify()

    def _attach(self, ws: WebSocketConnection) -> None:
        """Make ``ws`` (a new connection, not yet welcomed) this client's connection."""
        self.ws = ws
        self._welcome = trio.Event()
        self._reader_done = False

    def _give_up(self, lost: tuple[int, str]) -> None:
        self.reconnecting = False
        if self.closed is None:
            self.closed = lost
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _resolve(self, frame_id: int | None, frame: Frame) -> bool:
        pending = self._pending.get(frame_id) if frame_id is not None else None
        if pending is None:
            return False
        pending.result = frame
        pending.done.set()
        return True

    async def _dispatch(self, frame: Frame) -> None:
        t = type(frame)
        if t is State:
            self._apply_state(frame)
            for msg in frame.msgs:
                await self._dispatch(msg)
        elif t is Joined:
            self.code = frame.code
            self.seat = frame.seat
            self.player_id = frame.player_id
            self.state = dict(frame.state)
            self.tick = frame.tick
            if frame.resume:
                self.resume_token = frame.resume
            self._resuming = False
            self._resolve(frame.id, frame)
        elif t is RpcResult:
            self._resolve(frame.id, frame)
        elif t is Error:
            if self._resuming and frame.ref is None:
                # the relay could not give the seat back (it is gone): back in the lobby
                self._resuming = False
                self.code = None
            if not self._resolve(frame.ref, frame):
                self.errors.append(frame)
        elif t is Event:
            if frame.name == "left":
                self.code = None
            self.events.append(frame)
        elif t is Rpc:
            await self._answer_rpc(frame)
        elif t is Signal:
            self.signals.append(frame)
        elif t is Pong:
            self._resolve(frame.nonce, frame)
        elif t is Ping:
            await self.send(Pong(frame.nonce))
        elif t is Welcome:
            self.player_id = frame.player_id
            self.server = frame.server
            self._welcome.set()

    def _apply_state(self, frame: State) -> None:
        self.stats.state_frames += 1
        if frame.back == 0:
            self.stats.keyframes += 1
            self.state = dict(frame.delta)
        elif frame.tick - frame.back != self.tick:
            # the relay coalesces from the state it last sent us; a gap means
            # our mirror cannot be trusted until the next keyframe
            self.stats.desyncs += 1
            log.warning("state base %d != mirror tick %d", frame.tick - frame.back, self.tick)
            return
        else:
            self.state = apply(self.state, frame.delta)
        self.tick = frame.tick

    async def _answer_rpc(self, call: Rpc) -> None:
        handler = self.rpc_handlers.get(call.method)
        if handler is None:
            result = RpcResult(
                call.id, False, {"code": "no_such_method", "message": f"no handler {call.method}"}
            )
        else:
            try:
                value = handler(call.caller, call.args)
                if hasattr(value, "__await__"):
                    if self._nursery is not None:
                        # an async handler runs on its own: it may itself await an RPC,
                        # whose answer only this reader can receive
                        self._nursery.start_soon(self._finish_rpc, call, value)
                        return
                    value = await value
                result = RpcResult(call.id, True, value)
            except Exception as exc:
                result = RpcResult(call.id, False, {"code": "rpc_failed", "message": str(exc)})
        await self.send(result)

    async def _finish_rpc(self, call: Rpc, pending: Any) -> None:
        try:
            result = RpcResult(call.id, True, await pending)
        except Exception as exc:
            result = RpcResult(call.id, False, {"code": "rpc_failed", "message": str(exc)})
        try:
            await self.send(result)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection went while the handler ran: nobody to answer


@asynccontextmanager
async def connect(
    url: str,
    *,
    ticket: str | None = None,
    codec: str = "msgpack",
    client_name: str = "roomwire-py",
    connect_timeout: float = 10.0,
    reconnect: ReconnectPolicy | bool = True,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RelayClient]:
    """Connect to a relay, say Hello, and yield a client that has been welcomed.

    Raises ``ClientError`` when the relay refuses the ticket (or closes before its
    Welcome), ``trio.TooSlowError`` when no Welcome comes within
    ``connect_timeout``, and ``trio_websocket.HandshakeError`` when the WebSocket
    handshake itself fails.

    ``reconnect``: after a drop (not a close the relay made on purpose) a client
    that holds a seat reconnects with its resume token, with exponential
    backoff and jitter (``ReconnectPolicy``; True: the defaults; False: never).

    ``ssl_context``: for ``wss://`` URLs (default: the system's trust store).
    """
    codec_obj = CODECS[codec]()
    policy = ReconnectPolicy() if reconnect is True else (reconnect or None)

    async with open_websocket_url(
        url,
        subprotocols=[codec_obj.subprotocol],
        connect_timeout=connect_timeout,
        message_queue_size=256,
        receive_buffer_size=None,
        ssl_context=ssl_context,
    ) as ws:
        client = RelayClient(ws, codec_obj)
        client.ssl_context = ssl_context
        client._policy = policy
        # a refusal is raised outside the nursery, so the caller gets the
        # ClientError itself rather than an exception group around it
        refused: Exception | None = None
        try:
            async with trio.open_nursery() as nursery:
                client._nursery = nursery
                nursery.start_soon(client._reader)
                if policy is not None and policy.heartbeat_interval:
                    nursery.start_soon(heartbeat, client, ws, policy.heartbeat_interval)
                await client.send(Hello(PROTOCOL_VERSION, ticket, None, client_name))
                with trio.move_on_after(connect_timeout):
                    while not client._welcome.is_set() and client.closed is None:
                        await client._changed.wait()
                if not client._welcome.is_set():
                    nursery.cancel_scope.cancel()
                    err = client.errors[-1] if client.errors else None
                    if err is not None:
                        refused = ClientError(err.code, err.message)
                    elif client.closed is not None:
                        refused = ClientError("closed", f"connection closed: {client.closed}")
                    else:
                        refused = trio.TooSlowError(f"no Welcome within {connect_timeout} s")
                else:
                    if policy is not None:
                        nursery.start_soon(
                            functools.partial(
                                keep_connected,
                                client,
                                url,
                                ticket=ticket,
                                client_name=client_name,
                                connect_timeout=connect_timeout,
                            )
                        )
                    try:
                        yield client
                    finally:
                        client._stopping = True
                        nursery.cancel_scope.cancel()
            if refused is not None:
                raise refused
        finally:
            # trio-websocket 0.12 never closes the TCP stream of a client whose peer
            # closed first (its aclose returns early): close it here, or the socket
            # lingers until garbage collection.
            if ws.closed is not None:
                await trio.aclose_forcefully(ws._stream)
