"""roomwire's room runtime and game logic.

Rooms are actors: one trio task each, fed by a bounded mailbox and by their
members' links, ticking at a fixed rate under a one_for_one supervisor. Game
logic is pure (``Rules.step(state, event, now) -> (state, actions)``); the
built-in rule sets are the party quiz (``actors.quiz``) and the free-movement
arena (``ArenaRules``). Nothing here imports relay/, redis or a WebSocket library.
"""

from ._arena import ARENA_MAX_PLAYERS, ArenaRules, ArenaState
from ._clock import Clock
from ._diagram import mermaid
from ._errors import (
    InvalidTransition,
    MailboxFull,
    RoomClosed,
    RoomError,
    RoomFull,
    RoomNotFound,
    RuleViolation,
)
from ._link import Link
from ._logic import (
    Action,
    Broadcast,
    CancelTimer,
    Checkpoint,
    Event,
    GameOver,
    PlayerDisconnected,
    PlayerJoined,
    PlayerLeft,
    PlayerReconnected,
    Rules,
    SendTo,
    StartTimer,
    StopRoom,
    TimerExpired,
)
from ._mailbox import JoinRequest, LeaveRequest, Mailbox, ReconnectRequest, Reply, Stop
from ._phase import PhaseMachine, TransitionTable
from ._registry import (
    CODE_ALPHABET,
    RegistryStatistics,
    RetiredTotals,
    RoomHandle,
    RoomRegistry,
    normalize_code,
)
from ._room import (
    MAX_NAME,
    SNAPSHOT_VERSION,
    TICK_HISTOGRAM_BOUNDS,
    CheckpointSink,
    GameRecordSink,
    InvalidSnapshot,
    JoinResult,
    MemberInfo,
    Room,
    RoomConfig,
    RoomStatistics,
)
from ._supervisor import Restart, Supervised, Supervisor, SupervisorStatistics
from ._timers import Timers

__all__ = [
    "ARENA_MAX_PLAYERS",
    "CODE_ALPHABET",
    "MAX_NAME",
    "SNAPSHOT_VERSION",
    "TICK_HISTOGRAM_BOUNDS",
    "Action",
    "ArenaRules",
    "ArenaState",
    "Broadcast",
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
    "SendTo",
    "StartTimer",
    "Stop",
    "StopRoom",
    "Supervised",
    "Supervisor",
    "SupervisorStatistics",
    "TimerExpired",
    "Timers",
    "TransitionTable",
    "mermaid",
    "normalize_code",
]
