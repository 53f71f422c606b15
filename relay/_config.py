"""The relay's configuration: one frozen ``Config`` that CLI flags and ``RELAY_*`` map onto.

Every field has a CLI flag ``--field-name`` and an environment variable
``RELAY_FIELD_NAME``; a flag given on the command line wins over the
environment, which wins over the default.
"""

from __future__ import annotations

import dataclasses
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
        metadata={"help": "redis://HOST:PORT/DB or sqlite:PATH (default: embedded SQLite)"},
    )
    data_dir: str = field(default="relay-data", metadata={"help": "where the embedded store lives"})
    transport: str = field(default="websocket", metadata={"help": "server transport"})
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

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ConfigError(f"http_port must be 0..65535, got {self.http_port}")
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
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error: {self.log_level}")

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
        raise ConfigError(f"RELAY_{f.name.upper()}: cannot read {raw!r} as {kind}") from None
    return raw
