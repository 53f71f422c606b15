"""What a room needs from a member's connection: the seam between actors/ and relay/.

The room's tick owns a member's data I/O once the member has joined: at each
tick it asks the link for the frames that arrived since the last tick and
hands it at most one outgoing message, without ever waiting. Each server
transport in relay/ implements this protocol (a reader/writer-task transport
on trio-websocket, and the tick-polled one); the room does not know which.
"""

from __future__ import annotations

from typing import Protocol

from protocol import Codec, Frame

__all__ = ["Link"]


class Link(Protocol):
    """A member's connection, as the room's tick sees it.

    Every method is synchronous and never blocks: the room calls them from its
    tick, and one slow client must never stall the room.
    """

    #: the codec this connection negotiated; the room encodes once per codec
    codec: Codec
    #: the authenticated player id (from the ticket), set before the link joins
    player_id: str

    @property
    def closed(self) -> bool:
        """True once the connection is gone (peer closed, heartbeat timeout, error)."""
        ...

    def receive_nowait(self) -> list[Frame]:
        """The frames that arrived since the last call, decoded, in arrival order.

        Malformed frames never show up here: the transport answers them itself
        (error frame or close) and counts them.
        """
        ...

    def ready(self) -> bool:
        """True when a message handed to ``send_nowait`` now goes out at once.

        False while an earlier message is still being written (slow reader):
        the room then skips this member and later sends one coalesced delta.
        """
        ...

    def send_nowait(self, data: bytes) -> None:
        """Hand one whole WebSocket message to the transport; never blocks.

        What the socket does not take at once is finished by the connection's
        writer task, and ``ready()`` stays False until it is done.
        """
        ...

    def close_nowait(self, code: int, reason: str) -> None:
        """Start closing the connection with this close code; never blocks."""
        ...

    def detach(self, reason: str) -> None:
        """The member left the room (on purpose, kicked, or the room closed) but the
        connection stays open: the transport takes the connection's frames back."""
        ...
