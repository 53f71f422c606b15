"""A room's bounded mailbox and the control messages connection tasks post to it.

The mailbox carries control traffic only (joins, leaves, reconnects, stop):
game data (inputs, RPCs) is read by the room's tick straight from each
member's link. Posting never blocks and never wakes the room: the room drains
the whole mailbox at the start of its next tick, so a burst of requests costs
one wake-up per tick, not one per message.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from ._errors import MailboxFull, RoomClosed, RoomError
from ._link import Link

__all__ = [
    "DEFAULT_MAILBOX_SIZE",
    "JoinRequest",
    "LeaveRequest",
    "Mailbox",
    "MailboxStatistics",
    "Message",
    "ReconnectRequest",
    "Reply",
    "Stop",
]

DEFAULT_MAILBOX_SIZE = 256

T = TypeVar("T")


class Reply(Generic[T]):
    """A one-shot result: the room sets it once, one connection task waits for it.

    ``set``/``fail`` are called by the room; ``wait`` by the task that made the
    request. A waiter that gives up (timeout or cancellation) marks the reply
    ``abandoned``, and the room then drops the request instead of acting on it:
    a join whose connection task already gave up must not take a seat.
    """

    __slots__ = ("_error", "_event", "_value", "abandoned")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self.abandoned = False

    @property
    def done(self) -> bool:
        return self._event.is_set()

    def set(self, value: T) -> None:
        """Deliver ``value``. Raises ``RuntimeError`` if the reply was already given."""
        if self._event.is_set():
            raise RuntimeError("a reply can be given only once")
        self._value = value
        self._event.set()

    def fail(self, error: RoomError) -> None:
        """Deliver an error; ``wait`` raises it in the waiting task."""
        if self._event.is_set():
            raise RuntimeError("a reply can be given only once")
        self._error = error
        self._event.set()

    def result(self) -> T:
        """The value, or raise the error. Only valid once ``done``."""
        if not self._event.is_set():
            raise RuntimeError("the reply has not been given yet")
        if self._error is not None:
            raise self._error
        return self._value

    async def wait(self, timeout: float) -> T:
        """Wait up to ``timeout`` seconds for the value.

        Raises the error the room gave, or ``RoomError`` code ``room_timeout``
        when the room did not answer in time (the request is then abandoned
        and the room will not act on it).
        """
        try:
            with trio.move_on_after(timeout):
                await self._event.wait()
        finally:
            if not self._event.is_set():
                self.abandoned = True
        if not self._event.is_set():
            raise RoomError("the room did not answer in time", code="room_timeout")
        return self.result()


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every mailbox message."""


@dataclass(frozen=True, slots=True)
class JoinRequest(Message):
    """Take a seat. ``frame_id`` is the id of the client's Join/Create/QuickJoin frame,
    echoed in ``Joined``; ``resume`` (a sealed token from the relay) goes into it too."""

    player_id: str
    name: str
    link: Link
    frame_id: int
    role: str = "player"
    resume: str | None = None
    reply: Reply[Any] = field(default_factory=Reply, compare=False)


@dataclass(frozen=True, slots=True)
class ReconnectRequest(Message):
    """Take an existing seat back on a new connection (the resume feature's entry point)."""

    player_id: str
    link: Link
    frame_id: int
    resume: str | None = None
    reply: Reply[Any] = field(default_factory=Reply, compare=False)


@dataclass(frozen=True, slots=True)
class LeaveRequest(Message):
    """Release a player's seat (kicked, or its connection task saw it leave)."""

    player_id: str
    reason: str = "left"


@dataclass(frozen=True, slots=True)
class Stop(Message):
    """Close the room at its next tick; every member is told ``reason``."""

    reason: str = "closed"


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    depth: int
    capacity: int
    posted: int
    refused: int
    closed: bool


class Mailbox:
    """A bounded FIFO of ``Message``; ``send_nowait`` never blocks the sender.

    Errors: ``send_nowait`` raises ``MailboxFull`` (code ``room_busy``) when
    ``capacity`` messages wait, and ``RoomClosed`` once the room has closed.
    """

    __slots__ = ("_closed", "_posted", "_queue", "_refused", "capacity", "name")

    def __init__(self, capacity: int = DEFAULT_MAILBOX_SIZE, *, name: str = "") -> None:
        if type(capacity) is not int or capacity < 1:
            raise ValueError("the mailbox capacity must be a positive integer")
        self.capacity = capacity
        self.name = name
        self._queue: deque[Message] = deque()
        self._closed = False
        self._posted = 0
        self._refused = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def send_nowait(self, message: Message) -> None:
        """Post ``message``; raises ``MailboxFull`` or ``RoomClosed``, never blocks."""
        if self._closed:
            self._refused += 1
            raise RoomClosed(f"room {self.name} is closed")
        if len(self._queue) >= self.capacity:
            self._refused += 1
            raise MailboxFull(f"room {self.name} is busy, try again")
        self._queue.append(message)
        self._posted += 1

    def drain(self) -> list[Message]:
        """Take every waiting message, oldest first (the room does this once per tick)."""
        if not self._queue:
            return []
        messages = list(self._queue)
        self._queue.clear()
        return messages

    def count(self, kind: type[Message]) -> int:
        """How many waiting messages are of type ``kind``."""
        return sum(1 for message in self._queue if type(message) is kind)

    def close(self) -> list[Message]:
        """Refuse all further messages and return the ones still waiting."""
        self._closed = True
        return self.drain()

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            depth=len(self._queue),
            capacity=self.capacity,
            posted=self._posted,
            refused=self._refused,
            closed=self._closed,
        )

    def __repr__(self) -> str:
        return f"Mailbox({self.name!r}, {len(self._queue)}/{self.capacity})"
