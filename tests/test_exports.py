"""The public surface is explicit: each package's ``__all__`` is pinned here, so
adding or removing a public name is a deliberate change to this file."""

from __future__ import annotations

import importlib

import pytest

import protocol

PUBLIC = {
    "protocol": {
        # frames
        "FRAME_TYPES",
        "PROTOCOL_VERSION",
        "Frame",
        "Hello",
        "Welcome",
        "Create",
        "Join",
        "QuickJoin",
        "Leave",
        "Joined",
        "Input",
        "State",
        "Rpc",
        "RpcResult",
        "Signal",
        "Error",
        "Ping",
        "Pong",
        "Event",
        # codecs
        "CODECS",
        "SUBPROTOCOLS",
        "Codec",
        "MsgpackCodec",
        "CborCodec",
        "codec_for_subprotocol",
        # deltas
        "DELETE",
        "Replace",
        "apply",
        "diff",
        "f32",
        "quantize",
        # limits
        "DEFAULT_LIMITS",
        "Limits",
        # errors
        "CloseCode",
        "ProtocolError",
        "RemoteProtocolError",
        "LocalProtocolError",
        "MalformedFrame",
        "UnknownFrameType",
        "InvalidField",
        "InvalidDelta",
        "LimitExceeded",
        "UnsupportedVersion",
    },
    "actors": {
        "ARENA_MAX_PLAYERS",
        "Action",
        "ArenaRules",
        "ArenaState",
        "Broadcast",
        "CODE_ALPHABET",
        "CancelTimer",
        "Checkpoint",
        "CheckpointSink",
        "Clock",
        "Event",
        "GameOver",
        "GameRecordSink",
        "InvalidSnapshot",
        "InvalidTransition",
        "JoinRequest",
        "JoinResult",
        "LeaveRequest",
        "Link",
        "MAX_NAME",
        "Mailbox",
        "MailboxFull",
        "MemberInfo",
        "PhaseMachine",
        "PlayerDisconnected",
        "PlayerJoined",
        "PlayerLeft",
        "PlayerReconnected",
        "ReconnectRequest",
        "RegistryStatistics",
        "Reply",
        "Restart",
        "RetiredTotals",
        "Room",
        "RoomClosed",
        "RoomConfig",
        "RoomError",
        "RoomFull",
        "RoomHandle",
        "RoomNotFound",
        "RoomRegistry",
        "RoomStatistics",
        "RuleViolation",
        "Rules",
        "SNAPSHOT_VERSION",
        "SendTo",
        "StartTimer",
        "Stop",
        "StopRoom",
        "Supervised",
        "Supervisor",
        "SupervisorStatistics",
        "TICK_HISTOGRAM_BOUNDS",
        "TimerExpired",
        "Timers",
        "TransitionTable",
        "mermaid",
        "normalize_code",
    },
    "relay": {
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
        "TRANSPORTS",
        "Ticket",
        "TicketError",
        "TicketVerifier",
        "load_signing_key",
        "load_verify_keys",
        "mint_ticket",
        "open_store",
        "write_keypair",
    },
}

# The private modules whose ``__all__`` the package re-exports in full.
REEXPORTED = {
    "protocol": ["_codec", "_delta", "_errors", "_frames", "_limits"],
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_all_is_pinned(package):
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    assert set(module.__all__) == PUBLIC[package]


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_every_exported_name_exists(package):
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_no_private_name_is_exported(package):
    module = importlib.import_module(package)
    assert [name for name in module.__all__ if name.startswith("_")] == []


@pytest.mark.parametrize("package", sorted(REEXPORTED))
def test_private_modules_are_reexported(package):
    module = importlib.import_module(package)
    for private in REEXPORTED[package]:
        submodule = importlib.import_module(f"{package}.{private}")
        for name in submodule.__all__:
            assert name in module.__all__, f"{package}.{private}.{name} is not re-exported"
            assert getattr(module, name) is getattr(submodule, name)


def test_star_import_gives_exactly_the_public_names():
    namespace: dict[str, object] = {}
    exec("from protocol import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == PUBLIC["protocol"]
    assert namespace["Frame"] is protocol.Frame
