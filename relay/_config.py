"""The relay's configuration: one frozen ``Config`` that CLI flags and ``RELAY_*`` map onto.

Every field has a CLI flag ``--field-name`` and an environment variable
``RELAY_FIELD_NAME``; a flag given on the command line wins over the
environment, which wins over the default.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["TRANSPORTS", "Config", "ConfigError"]

#: server transports: "websocket" (trio-websocket, reader/writer tasks, TLS) and
#: "fast" (tick-polled: the room's tick reads and writes member sockets itself)
TRANSPORTS = ("websocket", "fast")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the setting."""


def default_data_dir() -> str:
    """The per-user data directory (``$XDG_DATA_HOME/roomwire``, else
    ``~/.local/share/roomwire``): never the working directory, so a relay started
    from a source tree leaves nothing in it."""
    base = os.environ.get("XDG_DATA_HOME") or ""
    if not os.path.isabs(base):
        home = os.path.expanduser("~")
        base = os.path.join(home, ".local", "share") if os.path.isabs(home) else "/tmp"
    return os.path.join(base, "roomwire")


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of one relay process. See docs/operations.md for each one."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=7350, metadata={"help": "WebSocket port (0 picks a free one)"})
    http_port: int | None = field(
        default=None, metadata={"help": "port of /healthz and /metrics (0: free; unset: off)"}
    )
    store: str | None = field(
        default=None,
        metadata={
            "help": "redis://HOST:PORT/DB, sqlite:PATH, memory: or none (default: embedded SQLite)"
        },
    )
    data_dir: str = field(
        default=default_data_dir(), metadata={"help": "where the embedded store lives"}
    )
    snapshot_interval: float = field(
        default=5.0, metadata={"help": "seconds between snapshots of a busy room (0: phases only)"}
    )
    store_flush_interval: float = field(
        default=0.05, metadata={"help": "seconds between store writes (one batch, all rooms)"}
    )
    transport: str = field(
        default="",
        metadata={"help": "fast or websocket (default: fast; websocket with --tls-cert)"},
    )
    tls_cert: str | None = field(default=None, metadata={"help": "PEM certificate (enables TLS)"})
    tls_key: str | None = field(default=None, metadata={"help": "PEM private key for --tls-cert"})
    keys: tuple[str, ...] = field(
        default=(), metadata={"help": "ticket verify key files (k4.public), comma-separated"}
    )
    allow_anonymous: bool = field(
        default=False, metadata={"help": "accept clients without a ticket"}
    )
    tick_rate: int = field(default=20, metadata={"help": "room ticks per second"})
    max_rooms: int = field(default=2000, metadata={"help": "rooms per process"})
    max_connections: int = field(default=10000, metadata={"help": "connections per process"})
    max_frame_bytes: int = field(default=65536, metadata={"help": "largest accepted frame"})
    heartbeat_interval: float = field(default=10.0, metadata={"help": "seconds between pings"})
    heartbeat_timeout: float = field(default=10.0, metadata={"help": "seconds to wait for a pong"})
    hello_timeout: float = field(default=10.0, metadata={"help": "seconds to send Hello"})
    empty_room_grace: float = field(default=30.0, metadata={"help": "seconds an empty room lives"})
    max_room_lifetime: float = field(default=4 * 3600.0, metadata={"help": "room lifetime, s"})
    log_level: str = field(default="warning", metadata={"help": "debug, info, warning, error"})
    gc_interval: float = field(
        default=300.0,
        metadata={"help": "seconds between full garbage collections (0: Python's automatic)"},
    )
    reconnect_grace: float = field(
        default=30.0, metadata={"help": "seconds a dropped player keeps its seat (0: none)"}
    )
    resume_key_file: str | None = field(
        default=None,
        metadata={"help": "resume token key file, shared by restarts (default: per process)"},
    )
    rpc_timeout: float = field(default=10.0, metadata={"help": "seconds a relayed RPC waits"})
    rpc_timeout_max: float = field(default=60.0, metadata={"help": "cap of an RPC's timeout, s"})
    max_signal_bytes: int = field(default=8192, metadata={"help": "voice signal payload cap"})
    rate_limit_frames: float = field(
        default=200.0, metadata={"help": "messages per second per connection (0: off)"}
    )
    rate_limit_bytes: float = field(
        default=262144.0, metadata={"help": "bytes per second per connection (0: off)"}
    )
    rate_limit_burst: float = field(
        default=2.0, metadata={"help": "seconds of those rates a connection may burst"}
    )
    rate_limit_sustain: float = field(
        default=2.0, metadata={"help": "seconds of excess before a 1008 close"}
    )
    ip_connect_rate: float = field(
        default=50.0, metadata={"help": "new connections per second per IP (0: off)"}
    )
    ip_connect_burst: int = field(default=200, metadata={"help": "burst of new connections per IP"})

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ConfigError(f"http_port must be 0..65535, got {self.http_port}")
        if not self.transport:
            # the tick-polled transport is the default; in-process TLS is the
            # websocket transport's (see docs/operations.md)
            object.__setattr__(self, "transport", "websocket" if self.tls_cert else "fast")
        if self.transport not in TRANSPORTS:
            known = ", ".join(TRANSPORTS)
            raise ConfigError(f"unknown transport {self.transport!r} (known: {known})")
        if self.transport == "fast" and self.tls_cert:
            raise ConfigError("TLS runs on the websocket transport: use --transport websocket")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if not 1 <= self.tick_rate <= 120:
            raise ConfigError(f"tick_rate must be 1..120, got {self.tick_rate}")
        for name in ("max_rooms", "max_connections", "max_frame_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        for name in ("heartbeat_interval", "heartbeat_timeout", "hello_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        self._check_limits()
        if not (math.isfinite(self.gc_interval) and self.gc_interval >= 0):
            raise ConfigError(f"gc_interval must be 0 or more seconds, got {self.gc_interval}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error: {self.log_level}")

    def _check_limits(self) -> None:
        """The settings of reconnection, RPCs, voice and rate limits."""
        for name in (
            "reconnect_grace",
            "rate_limit_frames",
            "rate_limit_bytes",
            "ip_connect_rate",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a non-negative number, got {value}")
        if not (math.isfinite(self.snapshot_interval) and self.snapshot_interval >= 0):
            raise ConfigError(f"snapshot_interval must be >= 0, got {self.snapshot_interval}")
        for name in (
            "rpc_timeout",
            "rate_limit_burst",
            "rate_limit_sustain",
            "store_flush_interval",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(self.rpc_timeout_max) and self.rpc_timeout_max >= self.rpc_timeout):
            raise ConfigError("rpc_timeout_max must be at least rpc_timeout")
        if not 1 <= self.max_signal_bytes <= 16384:
            raise ConfigError("max_signal_bytes must be 1..16384 (the byte-string limit)")
        if self.ip_connect_burst < 1:
            raise ConfigError("ip_connect_burst must be positive")
        if 0 < self.rate_limit_bytes * self.rate_limit_burst < self.max_frame_bytes:
            raise ConfigError(
                "rate_limit_bytes * rate_limit_burst must hold one frame of max_frame_bytes"
            )

    @classmethod
    def from_sources(
        cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Build a Config from parsed flags (None = not given) over ``RELAY_*`` variables."""
        environ = os.environ if environ is None else environ
        flags = flags or {}
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = flags.get(f.name)
            if raw is None:
                env = environ.get("RELAY_" + f.name.upper())
                if env is None or env == "":
                    continue
                raw = env
            values[f.name] = _convert(f, raw)
        return cls(**values)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _convert(f: dataclasses.Field[Any], raw: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if not isinstance(raw, str):
        return tuple(raw) if kind.startswith("tuple") and isinstance(raw, list) else raw
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        flag = "--" + f.name.replace("_", "-")
        raise ConfigError(
            f"{flag} (RELAY_{f.name.upper()}): cannot read {raw!r} as {kind}"
        ) from None
    return raw
