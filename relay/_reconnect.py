"""Reconnection: resume tokens issued at join, and taking a held seat back with one.

Every ``Joined`` carries a resume token (``relay._resume``: sealed with a
key only relay processes hold, so a client can neither read nor forge it)
naming the room, the player and the seat. A client whose connection dropped
opens a new one and sends it in ``Hello.resume``. Within the room's
reconnect grace the seat is still held: the relay welcomes the client as
that player and re-attaches the seat to the new connection, which receives
``Joined`` (id 0, with a keyframe and a fresh token). A connection still
attached to the seat (half-open: the client gave up on it, the relay has not
noticed yet) is closed with 4007 REPLACED; of several reconnects with the
same token, the last one holds the seat and the others are closed with 4007
too, so there is never a second player.

A resume that cannot be honoured still gets the ``Welcome`` (the connection
is in the lobby), then an ``Error`` with no ``ref``: ``resume_malformed``,
``resume_forged``, ``resume_expired``, ``resume_wrong_player`` (a ticket for
another player), ``ticket_wrong_room``, ``room_not_found`` (the room is
gone), ``not_a_member`` (the grace ran out: the seat was released),
``room_closed``.

The key is random per process unless ``resume_key_file`` names a file that
processes (and restarts) share.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors import RoomError

from ._resume import ResumeClaims, ResumeError, ResumeSealer, load_or_create_key

if TYPE_CHECKING:
    from ._session import Session

__all__ = ["ResumeAttempt", "ResumeService", "resume_seat"]

log = logging.getLogger("relay.session")


@dataclass(frozen=True, slots=True)
class ResumeAttempt:
    """The outcome of checking a ``Hello.resume``: claims to act on, or the error to send."""

    claims: ResumeClaims | None
    code: str = ""
    message: str = ""


class ResumeService:
    """Seals resume tokens for rooms and opens the ones clients bring back.

    ``config`` is the relay's ``Config``: ``resume_key_file`` (None: a random
    key for this process), ``max_room_lifetime`` and ``reconnect_grace`` (a
    token lives as long as a seat can). Raises ``KeyFileError`` for a key
    file that cannot be read or created (the operator's fault).
    """

    def __init__(self, config: Any) -> None:
        key = load_or_create_key(config.resume_key_file) if config.resume_key_file else None
        self.sealer = ResumeSealer(key)
        self.lifetime = float(config.max_room_lifetime) + float(config.reconnect_grace)
        self.issued = 0
        self.resumed = 0
        self.refused = 0

    def issue(self, code: str, player_id: str, seat: int) -> str | None:
        """A token for this seat (``RoomConfig.resume_issuer``); None for ids too long
        to seal (such a player cannot resume, but plays on)."""
        now = time.time()
        try:
            token = self.sealer.seal(
                room=code, player_id=player_id, seat=seat, issued=now, expires=now + self.lifetime
            )
        except ValueError:
            return None
        self.issued += 1
        return token

    def check(self, token: str, *, ticket_player: str | None) -> ResumeAttempt:
        """Open ``token``. ``ticket_player``: the player id of the Hello's ticket, if
        any: a ticket for another player cannot take this seat."""
        try:
            claims = self.sealer.open(token, now=time.time())
        except ResumeError as exc:
            self.refused += 1
            return ResumeAttempt(None, exc.code, exc.message)
        if ticket_player is not None and ticket_player != claims.player_id:
            self.refused += 1
            return ResumeAttempt(
                None, "resume_wrong_player", "this resume token is another player's"
            )
        return ResumeAttempt(claims)


async def resume_seat(session: Session, attempt: ResumeAttempt) -> None:
    """Re-attach the seat of ``attempt`` to ``session``'s connection (already welcomed).

    On success the room has sent ``Joined`` and the session is in the room.
    Otherwise the client gets an ``Error`` and stays in the lobby.
    """
    service = session.relay.resume
    claims = attempt.claims
    if claims is None:
        session._error(attempt.code, attempt.message, None)
        return
    identity = session.identity
    assert identity is not None
    if identity.room is not None and identity.room.upper() != claims.room:
        service.refused += 1
        session._error(
            "ticket_wrong_room", f"this ticket is for room {identity.room}, not {claims.room}", None
        )
        return
    try:
        handle = session.relay.registry.get(claims.room)
        result = await handle.reconnect(claims.player_id, session.link, 0)
    except RoomError as exc:
        service.refused += 1
        session._error(exc.code, exc.message, None)
        return
    service.resumed += 1
    session.room_code = result.code
    session.phase = "room"
