"""Errors of the room runtime and the game logic.

Every error a client can cause carries a stable ``code`` string that the relay
turns into an error frame. The tree::

    RoomError                      (code)
    ├── RoomNotFound               room_not_found
    ├── RoomFull                   room_full
    ├── RoomClosed                 room_closed
    ├── MailboxFull                room_busy       the room's bounded mailbox is full
    ├── InvalidTransition          invalid_event   no (phase, event) entry in the table
    └── RuleViolation              rule_violation  a guard failed; ``code`` is specific
                                                   (not_host, already_answered, ...)
"""

from __future__ import annotations

__all__ = [
    "InvalidTransition",
    "MailboxFull",
    "RoomClosed",
    "RoomError",
    "RoomFull",
    "RoomNotFound",
    "RuleViolation",
]


class RoomError(Exception):
    """Base of the errors a room reports back to the client that caused them."""

    code = "room_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class RoomNotFound(RoomError):
    code = "room_not_found"


class RoomFull(RoomError):
    code = "room_full"


class RoomClosed(RoomError):
    code = "room_closed"


class MailboxFull(RoomError):
    code = "room_busy"


class InvalidTransition(RoomError):
    """The current phase has no transition for this event."""

    code = "invalid_event"

    def __init__(self, phase: str, event: str, message: str = "") -> None:
        super().__init__(message or f"event {event!r} is not accepted in phase {phase!r}")
        self.phase = phase
        self.event = event


class RuleViolation(RoomError):
    """A guard refused the event (not the host, already answered, ...)."""

    code = "rule_violation"
