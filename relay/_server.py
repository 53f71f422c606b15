"""The relay process: rooms, the WebSocket transport, the HTTP port, and shutdown.

``Relay(config).run`` is a trio service (``await nursery.start(relay.run)``)
that reports the bound addresses when it is accepting clients. ``shutdown``
stops accepting, tells every client with a going-away close (1001) and lets
every room finish the tick it is in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from actors import TICK_HISTOGRAM_BOUNDS, ArenaRules, RoomConfig, RoomRegistry, Rules
from actors.quiz import QuizRules
from protocol import CloseCode, Codec, Limits

from ._config import Config
from ._durability import Durability
from ._http import serve_http
from ._limits import RelayLimits
from ._reconnect import ResumeService
from ._store import StoreError
from ._tickets import KeyFileError, TicketError, TicketVerifier, load_verify_keys
from ._transport_ws import serve_websocket_transport

__all__ = ["Addresses", "Relay", "RelayStartupError", "RelayStatistics"]

log = logging.getLogger("relay.server")

__version__ = "0.1.0"


class RelayStartupError(Exception):
    """The relay cannot start (a key file, a port in use...); the message says which."""


@dataclass(frozen=True, slots=True)
class Addresses:
    port: int
    http_port: int | None


@dataclass(slots=True)
class RelayStatistics:
    """Plain counters the transports bump (no locks; read at scrape time)."""

    connections_total: int = 0
    frames_received: int = 0
    frames_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    protocol_errors: int = 0
    errors_sent: int = 0
    auth_failures: int = 0
    handshake_rejects: int = 0
    heartbeat_timeouts: int = 0
    handler_crashes: int = 0


class _NoTickets:
    """The verifier of a relay with no keys: every ticket is refused."""

    def verify(self, token: str, *, room: str | None = None, now: float | None = None) -> Any:
        raise TicketError(
            "this relay has no ticket keys configured (start it with --keys)",
            code="ticket_unknown_key",
        )


def default_rules() -> list[Rules]:
    return [QuizRules(), ArenaRules()]


class Relay:
    """One relay process. Construct, then ``await nursery.start(relay.run)``."""

    def __init__(
        self,
        config: Config,
        *,
        rules: list[Rules] | None = None,
        verifier: Any = None,
        checkpoint_sink: Any = None,
        game_record_sink: Any = None,
    ) -> None:
        self.config = config
        self.stats = RelayStatistics()
        self.connections: set[Any] = set()
        self.http_routes: dict[str, Any] = {}
        self.handler_nursery: trio.Nursery | None = None
        self._limits = Limits(max_frame_bytes=config.max_frame_bytes)
        self._codecs: dict[type[Codec], Codec] = {}
        self._started = time.monotonic()
        self._listener_scope: trio.CancelScope | None = None
        self._stopping = False
        if verifier is None:
            verifier = self._load_verifier(config)
        self.verifier = verifier
        self.limits = RelayLimits(config)
        try:
            self.resume = ResumeService(config)
        except (KeyFileError, OSError) as exc:
            raise RelayStartupError(f"cannot load the resume key: {exc}") from None
        room_config = RoomConfig(
            tick_rate=float(config.tick_rate),
            empty_grace=config.empty_room_grace,
            max_lifetime=config.max_room_lifetime,
            reconnect_grace=config.reconnect_grace,
            rpc_timeout=config.rpc_timeout,
            rpc_timeout_max=config.rpc_timeout_max,
            max_signal_bytes=config.max_signal_bytes,
            resume_issuer=self.resume.issue,
            snapshot_interval=config.snapshot_interval,
            # A checkpoint outlives its room by at most the room's lifetime (docs/durability.md).
            checkpoint_ttl=config.max_room_lifetime,
        )
        self.durability: Durability | None = None
        if checkpoint_sink is None and game_record_sink is None and config.store != "none":
            try:
                self.durability = Durability(config)
            except StoreError as exc:
                raise RelayStartupError(f"cannot open the store: {exc}") from None
            checkpoint_sink = self.durability.room_sink
            game_record_sink = self.durability.recorder
            self.http_routes["/leaderboard"] = self.durability.leaderboard_route
        self.registry = RoomRegistry(
            rules or default_rules(),
            config=room_config,
            max_rooms=config.max_rooms,
            checkpoint_sink=checkpoint_sink,
            game_record_sink=game_record_sink,
        )

    @staticmethod
    def _load_verifier(config: Config) -> Any:
        if not config.keys:
            return _NoTickets()
        try:
            return TicketVerifier(load_verify_keys(config.keys))
        except (KeyFileError, ValueError, OSError) as exc:
            raise RelayStartupError(f"cannot load ticket keys: {exc}") from None

    def codec(self, cls: type[Codec]) -> Codec:
        codec = self._codecs.get(cls)
        if codec is None:
            codec = self._codecs[cls] = cls(self._limits)
        return codec

    def server_info(self) -> dict[str, Any]:
        return {
            "name": "roomwire",
            "version": __version__,
            "tick_rate": self.config.tick_rate,
            "max_frame_bytes": self.config.max_frame_bytes,
            "modes": sorted(self.registry.modes()),
            "reconnect_grace": self.config.reconnect_grace,
            "rpc_timeout": self.config.rpc_timeout,
            "max_signal_bytes": self.config.max_signal_bytes,
            "rate_limits": self.limits.info(),
        }

    # -- lifecycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Addresses] = trio.TASK_STATUS_IGNORED):
        """Serve until cancelled. Raises ``RelayStartupError`` if a port cannot be bound."""
        async with trio.open_nursery() as nursery:
            self.handler_nursery = nursery
            await nursery.start(self.registry.run)
            if self.durability is not None:
                try:  # before listening: restored rooms are there for the first client
                    await nursery.start(self.durability.run, self.registry)
                except StoreError as exc:
                    raise RelayStartupError(f"cannot open the store: {exc}") from None
            try:
                with trio.CancelScope() as self._listener_scope:
                    port = await nursery.start(self._listen)
                http_port = None
                if self.config.http_port is not None:
                    http_port = await nursery.start(serve_http, self)
            except OSError as exc:
                raise RelayStartupError(f"cannot listen: {exc}") from None
            log.info("relay listening on %s:%s", self.config.host, port)
            task_status.started(Addresses(port, http_port))

    async def _listen(self, *, task_status: trio.TaskStatus[int]) -> None:
        with trio.CancelScope() as scope:
            self._listener_scope = scope
            if self.config.transport == "fast":
                from ._transport_fast import serve_fast_transport

                await serve_fast_transport(self, task_status=task_status)
            else:
                await serve_websocket_transport(self, task_status=task_status)

    async def shutdown(self, *, timeout: float = 5.0) -> None:
        """Stop accepting, close every client with 1001, let rooms finish their tick."""
        if self._stopping:
            return
        self._stopping = True
        if self.durability is not None:
            connected = {getattr(link, "player_id", None) for link in self.connections}
            self.durability.begin_shutdown({pid for pid in connected if pid})
        if self._listener_scope is not None:
            self._listener_scope.cancel()
        for link in list(self.connections):
            link.close_nowait(CloseCode.GOING_AWAY, "server shutting down")
        with trio.move_on_after(timeout):
            while self.connections:
                await trio.sleep(0.01)
        # rooms stop at their next tick boundary: the tick in progress completes
        for handle in self.registry.rooms():
            handle.stop_nowait("server shutting down")
        with trio.move_on_after(2.0 / self.config.tick_rate + 0.5):
            while self.registry.rooms():
                await trio.sleep(0.01)

    # -- observability ----------------------------------------------------------

    def health(self) -> dict[str, Any]:
        reg = self.registry.statistics()
        return {
            "status": "down" if self._stopping else "ok",
            "uptime": round(time.monotonic() - self._started, 3),
            "rooms": reg.rooms,
            "connections": len(self.connections),
            "members": reg.members,
            "store": self.store_health(),
        }

    def store_health(self) -> dict[str, Any]:
        if self.durability is not None:
            return self.durability.health()
        return {"kind": "sink", "reachable": True, "degraded": False, "backlog": 0}

    def metrics(self) -> dict[str, Any]:
        s = self.stats
        reg = self.registry.statistics()
        retired = reg.retired
        buckets = list(retired.tick_histogram) or [0] * (len(TICK_HISTOGRAM_BOUNDS) + 1)
        tick_sum = retired.tick_seconds
        overruns = retired.overruns
        for handle in self.registry.rooms():
            rs = handle.statistics()
            for i, n in enumerate(rs.tick_histogram):
                buckets[i] += n
            tick_sum += rs.tick_seconds_total
            overruns += rs.overruns
        cumulative = []
        running = 0
        for bound, n in zip((*TICK_HISTOGRAM_BOUNDS, float("inf")), buckets, strict=True):
            running += n
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        limit_gauges, limit_counters = self.limits.metrics()
        metrics: dict[str, Any] = {
            "gauges": [
                ("relay_connections", "open client connections", len(self.connections)),
                ("relay_rooms", "live rooms", reg.rooms),
                ("relay_members", "players seated in rooms", reg.members),
                *limit_gauges,
            ],
            "counters": [
                ("relay_connections_total", "connections accepted", s.connections_total),
                ("relay_frames_sent_total", "WebSocket messages sent", s.frames_sent),
                ("relay_frames_received_total", "WebSocket messages received", s.frames_received),
                ("relay_bytes_sent_total", "payload bytes sent", s.bytes_sent),
                ("relay_bytes_received_total", "payload bytes received", s.bytes_received),
                ("relay_protocol_errors_total", "undecodable or invalid frames", s.protocol_errors),
                ("relay_auth_failures_total", "tickets refused", s.auth_failures),
                (
                    "relay_heartbeat_timeouts_total",
                    "peers closed for no pong",
                    s.heartbeat_timeouts,
                ),
                ("relay_room_restarts_total", "rooms restarted after a crash", reg.restarts),
                ("relay_room_crashes_total", "room crashes", reg.crashes),
                ("relay_rooms_created_total", "rooms created", reg.created),
                ("relay_tick_overruns_total", "ticks that overran their deadline", overruns),
                *limit_counters,
                ("relay_resumes_total", "seats taken back by resume", self.resume.resumed),
                ("relay_resumes_refused_total", "resume attempts refused", self.resume.refused),
            ],
            "histograms": [
                ("relay_tick_duration_seconds", "room tick duration", cumulative, tick_sum),
            ],
        }
        if self.durability is not None:
            self.durability.add_metrics(metrics)
        return metrics
