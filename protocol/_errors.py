"""The one exception family of the wire protocol, split by whose fault it is.

Every malformed or oversized input raises a ``ProtocolError`` and nothing else.
Each error carries a stable ``code`` (sent in error frames), a ``close_code``
hint (the WebSocket close code to use when the connection cannot go on) and,
where known, ``frame_id``: the id of the offending frame. The tree::

    ProtocolError                    code             close_code
    ├── RemoteProtocolError          (the peer sent something wrong)
    │   ├── MalformedFrame           malformed_frame  1007  undecodable bytes, trailing garbage
    │   ├── UnknownFrameType         unknown_frame    1003  type id not in the registry
    │   ├── InvalidField             invalid_field    1007  a field has the wrong type or value
    │   ├── InvalidDelta             invalid_delta    1007  a delta that cannot apply to its base
    │   ├── LimitExceeded            limit_exceeded   1009  size, depth, length or count limits
    │   └── UnsupportedVersion       unsupported_version 4002
    └── LocalProtocolError           local_error      1011  we tried to send something invalid

A remote error is the client's fault: the relay answers with an error frame
(or closes with ``close_code`` when the stream cannot be trusted any more) and
keeps serving everyone else. A local error is a bug on our side.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CloseCode",
    "InvalidDelta",
    "InvalidField",
    "LimitExceeded",
    "LocalProtocolError",
    "MalformedFrame",
    "ProtocolError",
    "RemoteProtocolError",
    "UnknownFrameType",
    "UnsupportedVersion",
]


class CloseCode(IntEnum):
    """WebSocket close codes the relay uses (RFC 6455 section 7.4 and 4000-4999)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    PROTOCOL_ERROR = 1002  # broken WebSocket framing
    UNSUPPORTED_DATA = 1003  # text frames, unknown frame types
    INVALID_PAYLOAD = 1007  # undecodable frame
    POLICY_VIOLATION = 1008  # rate limits exceeded
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # server full
    UNAUTHORIZED = 4001  # no valid ticket
    UNSUPPORTED_VERSION = 4002
    SLOW_CLIENT = 4003  # stayed behind past the outbox bound
    ROOM_CLOSED = 4004  # the room closed (crashed past its restart intensity, expired)
    HEARTBEAT_TIMEOUT = 4006  # no pong within the heartbeat timeout
    REPLACED = 4007  # the seat was taken over by a newer connection (resume)
    WRONG_NODE = 4009  # the room lives on another relay process


class ProtocolError(Exception):
    """Base of every error the protocol package raises on bad input."""

    code = "protocol_error"
    close_code = CloseCode.PROTOCOL_ERROR

    def __init__(self, message: str, *, frame_id: int | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id

    @property
    def message(self) -> str:
        return str(self)


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes or values that break the protocol."""


class MalformedFrame(RemoteProtocolError):
    code = "malformed_frame"
    close_code = CloseCode.INVALID_PAYLOAD


class UnknownFrameType(RemoteProtocolError):
    code = "unknown_frame"
    close_code = CloseCode.UNSUPPORTED_DATA


class InvalidField(RemoteProtocolError):
    code = "invalid_field"
    close_code = CloseCode.INVALID_PAYLOAD


class InvalidDelta(RemoteProtocolError):
    code = "invalid_delta"
    close_code = CloseCode.INVALID_PAYLOAD


class LimitExceeded(RemoteProtocolError):
    code = "limit_exceeded"
    close_code = CloseCode.MESSAGE_TOO_BIG


class UnsupportedVersion(RemoteProtocolError):
    code = "unsupported_version"
    close_code = CloseCode.UNSUPPORTED_VERSION


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol does not allow (a bug here)."""

    code = "local_error"
    close_code = CloseCode.INTERNAL_ERROR
