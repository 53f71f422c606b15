"""Voice channels of a room and the WebRTC signalling relay between their members.

Theory of operation
-------------------
A player takes part in voice by joining one channel of its room (the
``"room"`` channel when it names none: the whole room). The relay never
carries audio: it only relays the WebRTC signalling (offer, answer, ICE
candidates, bye) between two members of the same channel, and publishes who
is in which channel, muted by themselves or by the host, and each player's
optional public key (clients may encrypt their signals end to end with it;
payloads are opaque bytes here and are never looked into).

``VoiceState`` is an immutable value: every change returns a new one, so a
room's tick can build the next state in its working set and drop it if the
tick fails. Its ``view`` is the ``"voice"`` map of the room's public state::

    {pid: {"channel": str | None, "muted": bool, "muted_by_host": bool, "key": str | None}}

A player has an entry once it joined a channel or published a key; the
entry goes when it leaves the room. A host mute is per player and channel: it
shows (``muted_by_host``) while the player is in that channel, and the
player's offers are refused there.

Errors are ``VoiceError`` with a stable code; the room answers a voice room
RPC with ``RpcResult(ok=False)`` and a refused signal with an ``Error``
frame. Codes: ``invalid_args``, ``invalid_channel``, ``invalid_key``,
``invalid_signal``, ``payload_too_large``, ``no_such_player``,
``player_disconnected``, ``not_in_channel``, ``muted``, ``not_host``,
``no_such_method``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from protocol import Error, Signal

__all__ = [
    "DEFAULT_CHANNEL",
    "DEFAULT_MAX_SIGNAL_BYTES",
    "MAX_KEY_CHARS",
    "SIGNAL_KINDS",
    "VOICE_METHODS",
    "VoiceError",
    "VoiceState",
    "call_voice",
    "check_signal",
    "relay_signal",
]

#: the channel a player joins when it names none: the whole room
DEFAULT_CHANNEL = "room"
#: payload cap of a signal; below the decoder's byte-string limit (16 KiB), so an
#: oversized signal gets a clear error instead of closing the connection
DEFAULT_MAX_SIGNAL_BYTES = 8192
SIGNAL_KINDS = frozenset({"offer", "answer", "ice", "bye"})
#: longest public key; keys are printable ASCII without spaces (base64, hex, JWK...)
MAX_KEY_CHARS = 512
_CHANNEL_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,32}")
_KEY_RE = re.compile(r"[\x21-\x7e]+")
VOICE_METHODS = frozenset(
    {"voice.join", "voice.leave", "voice.mute", "voice.host_mute", "voice.set_key"}
)


class VoiceError(Exception):
    """A voice request or signal refused; the client that sent it is at fault."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True, slots=True)
class _Entry:
    channel: str | None = None
    muted: bool = False
    key: str | None = None


class VoiceState:
    """The voice part of one room: immutable; every change returns a new state.

    ``entries`` maps player ids to their channel, self-mute and key;
    ``host_mutes`` holds ``(player, channel)`` pairs; ``view`` is the public
    ``"voice"`` map (built once per state, shared while nothing changes).
    """

    __slots__ = ("entries", "host_mutes", "view")

    def __init__(
        self,
        entries: Mapping[str, _Entry] | None = None,
        host_mutes: frozenset[tuple[str, str]] = frozenset(),
        *,
        _old: VoiceState | None = None,
    ) -> None:
        self.entries: dict[str, _Entry] = dict(entries or {})
        self.host_mutes = host_mutes
        old_view = _old.view if _old is not None else {}
        view: dict[str, Any] = {}
        for pid in sorted(self.entries):
            e = self.entries[pid]
            entry = {
                "channel": e.channel,
                "muted": e.muted,
                "muted_by_host": e.channel is not None and (pid, e.channel) in host_mutes,
                "key": e.key,
            }
            before = old_view.get(pid)
            view[pid] = before if before == entry else entry  # share unchanged entries
        self.view = view

    def channel_of(self, player_id: str) -> str | None:
        entry = self.entries.get(player_id)
        return None if entry is None else entry.channel

    def members(self, channel: str) -> list[str]:
        """The players in ``channel``, sorted."""
        return sorted(p for p, e in self.entries.items() if e.channel == channel)

    def _with(self, player_id: str, entry: _Entry | None) -> VoiceState:
        entries = dict(self.entries)
        if entry is None or entry == _Entry():
            entries.pop(player_id, None)
        else:
            entries[player_id] = entry
        return VoiceState(entries, self.host_mutes, _old=self)

    # -- changes --------------------------------------------------------------

    def join(self, player_id: str, channel: str = DEFAULT_CHANNEL) -> VoiceState:
        """``player_id`` in ``channel`` (leaving the one it was in). Raises
        ``VoiceError`` ``invalid_channel`` for a bad name."""
        _check_channel(channel)
        entry = self.entries.get(player_id, _Entry())
        if entry.channel == channel:
            return self
        return self._with(player_id, replace(entry, channel=channel))

    def leave(self, player_id: str) -> VoiceState:
        entry = self.entries.get(player_id)
        if entry is None or entry.channel is None:
            return self
        return self._with(player_id, replace(entry, channel=None, muted=False))

    def set_muted(self, player_id: str, muted: bool) -> VoiceState:
        """A player mutes itself; ``not_in_channel`` when it is in no channel."""
        entry = self.entries.get(player_id)
        if entry is None or entry.channel is None:
            raise VoiceError("not_in_channel", "join a voice channel first")
        if entry.muted == muted:
            return self
        return self._with(player_id, replace(entry, muted=muted))

    def host_mute(self, player_id: str, channel: str, muted: bool) -> VoiceState:
        _check_channel(channel)
        pair = (player_id, channel)
        if (pair in self.host_mutes) == muted:
            return self
        mutes = self.host_mutes | {pair} if muted else self.host_mutes - {pair}
        return VoiceState(self.entries, frozenset(mutes), _old=self)

    def set_key(self, player_id: str, key: str | None) -> VoiceState:
        """Publish (or with None withdraw) a player's public key. Raises ``invalid_key``."""
        if key is not None and (
            type(key) is not str or len(key) > MAX_KEY_CHARS or not _KEY_RE.fullmatch(key)
        ):
            raise VoiceError(
                "invalid_key",
                f"a public key is printable ASCII without spaces, at most {MAX_KEY_CHARS} chars",
            )
        entry = self.entries.get(player_id, _Entry())
        if entry.key == key:
            return self
        return self._with(player_id, replace(entry, key=key))

    def drop(self, player_id: str) -> VoiceState:
        """The player left the room: its entry and its host mutes go."""
        mutes = frozenset(p for p in self.host_mutes if p[0] != player_id)
        if player_id not in self.entries and mutes == self.host_mutes:
            return self
        entries = {p: e for p, e in self.entries.items() if p != player_id}
        return VoiceState(entries, mutes, _old=self)

    # -- durability ------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """Plain data for a snapshot; ``VoiceState.load`` reads it back."""
        return {
            "entries": {p: [e.channel, e.muted, e.key] for p, e in self.entries.items()},
            "host_mutes": sorted([list(p) for p in self.host_mutes]),
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> VoiceState:
        """The state ``dump`` wrote. Raises ``ValueError`` for anything else."""
        try:
            entries = {
                str(p): _Entry(c, bool(m), k) for p, (c, m, k) in dict(data["entries"]).items()
            }
            mutes = frozenset((str(p), str(c)) for p, c in data["host_mutes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a voice state: {exc}") from None
        return cls(entries, mutes)

    def __repr__(self) -> str:
        return f"<VoiceState {len(self.entries)} entries, {len(self.host_mutes)} host mutes>"


def _check_channel(channel: Any) -> None:
    if type(channel) is not str or not _CHANNEL_RE.fullmatch(channel):
        raise VoiceError(
            "invalid_channel",
            "a channel name is 1-32 letters, digits or _ . : -",
        )


def _args(args: Any) -> Mapping[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise VoiceError("invalid_args", "the arguments of a voice call are a map")
    return args


def _flag(args: Mapping[str, Any], name: str) -> bool:
    value = args.get(name, True)
    if type(value) is not bool:
        raise VoiceError("invalid_args", f"{name!r} is a boolean")
    return value


def call_voice(
    state: VoiceState,
    player_id: str,
    method: str,
    args: Any,
    *,
    host: str | None,
    members: Mapping[str, Any],
) -> tuple[VoiceState, Any]:
    """Carry out the voice room RPC ``method`` of ``player_id``: the new state and the
    call's result value. Pure. Raises ``VoiceError``.

    ``voice.join {channel?}`` (default ``"room"``), ``voice.leave``,
    ``voice.mute {muted?}`` (self; default True), ``voice.host_mute {player,
    muted?, channel?}`` (the host only; the channel defaults to the player's
    current one), ``voice.set_key {key}`` (None withdraws it).
    """
    a = _args(args)
    if method == "voice.join":
        channel = a.get("channel", DEFAULT_CHANNEL)
        new = state.join(player_id, channel)
        return new, {"channel": channel, "members": new.members(channel)}
    if method == "voice.leave":
        return state.leave(player_id), None
    if method == "voice.mute":
        return state.set_muted(player_id, _flag(a, "muted")), None
    if method == "voice.host_mute":
        if player_id != host:
            raise VoiceError("not_host", "only the host mutes other players")
        target = a.get("player")
        if type(target) is not str or target not in members:
            raise VoiceError("no_such_player", f"no player {target!r} in this room")
        channel = a.get("channel", state.channel_of(target))
        if channel is None:
            raise VoiceError("not_in_channel", f"{target} is in no voice channel; name one")
        return state.host_mute(target, channel, _flag(a, "muted")), None
    if method == "voice.set_key":
        if "key" not in a:
            raise VoiceError("invalid_args", "voice.set_key takes {'key': str or None}")
        return state.set_key(player_id, a["key"]), None
    raise VoiceError("no_such_method", f"no voice method {method!r}")


def check_signal(
    state: VoiceState,
    sender: str,
    frame: Signal,
    *,
    members: Mapping[str, Any],
    max_bytes: int = DEFAULT_MAX_SIGNAL_BYTES,
) -> Signal:
    """The frame to deliver to ``frame.peer`` for ``sender``'s signal: ``peer`` rewritten
    to the sender, ``channel`` to their channel, the payload untouched.

    Raises ``VoiceError``: ``invalid_signal`` (unknown kind),
    ``payload_too_large``, ``no_such_player`` (the peer is not in the room),
    ``player_disconnected`` (its seat is held for a reconnect),
    ``not_in_channel`` (the sender or the peer is not in the channel, or
    ``frame.channel`` names another), ``muted`` (an offer of a player the
    host muted in this channel). ``members`` maps player ids to objects with
    a ``link`` (None while disconnected).
    """
    if frame.kind not in SIGNAL_KINDS:
        raise VoiceError("invalid_signal", f"a signal is one of {sorted(SIGNAL_KINDS)}")
    if len(frame.payload) > max_bytes:
        raise VoiceError(
            "payload_too_large",
            f"a signal payload is at most {max_bytes} bytes, got {len(frame.payload)}",
        )
    peer = frame.peer
    member = members.get(peer)
    if member is None:
        raise VoiceError("no_such_player", f"no player {peer!r} in this room")
    channel = state.channel_of(sender)
    if channel is None:
        raise VoiceError("not_in_channel", "join a voice channel before signalling")
    if frame.channel and frame.channel != channel:
        raise VoiceError("not_in_channel", f"you are in voice channel {channel!r}")
    if state.channel_of(peer) != channel:
        raise VoiceError("not_in_channel", f"{peer} is not in voice channel {channel!r}")
    if getattr(member, "link", None) is None:
        raise VoiceError("player_disconnected", f"{peer} is disconnected")
    if frame.kind == "offer" and (sender, channel) in state.host_mutes:
        raise VoiceError("muted", f"the host muted you in voice channel {channel!r}")
    return Signal(frame.kind, sender, frame.payload, channel)


def relay_signal(w: Any, m: Any, frame: Signal, max_bytes: int) -> None:
    """Relay member ``m``'s signal within the room's tick: the peer gets it in its frame
    of this tick; a refused one comes back to ``m`` as an ``Error`` frame (a signal has
    no id, so the error has no ``ref``). ``w`` is the tick's working set."""
    try:
        out = check_signal(w.voice, m.player_id, frame, members=w.members, max_bytes=max_bytes)
    except VoiceError as exc:
        w.queue(m.player_id, Error(exc.code, exc.message))
        return
    w.queue(frame.peer, out)
