"""roomwire's relay: the process a game studio runs, and the client SDK.

``Relay(Config(...)).run`` serves rooms over WebSocket (the tick-polled
``fast`` transport, or trio-websocket for in-process TLS) with join tickets,
durable checkpoints, metrics and the ``relay`` command line. The client SDK is
``relay.client``. Everything here is I/O; rooms live in ``actors`` and the
wire format in ``protocol``.
"""

from ._checkpointer import Checkpointer, CheckpointerStatistics
from ._config import TRANSPORTS, Config, ConfigError
from ._resume import ResumeClaims, ResumeError, ResumeSealer
from ._server import Addresses, Relay, RelayStartupError, RelayStatistics
from ._store import (
    GameRecord,
    LeaderboardEntry,
    MemoryStore,
    RoomRecord,
    Store,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    open_store,
)
from ._store_redis import RedisStore
from ._store_sqlite import SQLiteStore
from ._tickets import (
    KeyFileError,
    SigningKeyPair,
    Ticket,
    TicketError,
    TicketVerifier,
    load_signing_key,
    load_verify_keys,
    mint_ticket,
    write_keypair,
)

__all__ = [
    "TRANSPORTS",
    "Addresses",
    "Checkpointer",
    "CheckpointerStatistics",
    "Config",
    "ConfigError",
    "GameRecord",
    "KeyFileError",
    "LeaderboardEntry",
    "MemoryStore",
    "RedisStore",
    "Relay",
    "RelayStartupError",
    "RelayStatistics",
    "ResumeClaims",
    "ResumeError",
    "ResumeSealer",
    "RoomRecord",
    "SQLiteStore",
    "SigningKeyPair",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreUnavailable",
    "Ticket",
    "TicketError",
    "TicketVerifier",
    "load_signing_key",
    "load_verify_keys",
    "mint_ticket",
    "open_store",
    "write_keypair",
]
